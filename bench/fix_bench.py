"""Benchmark of ``hwf fix --apply`` (issue 12): the real CLI against the simulator over real HTTP.

Run: ``.venv/bin/python -m bench.fix_bench`` (``--help`` for sizes). For each case, N NEEDS_FIX records
(``dc:identifier xsi:type="dcterms:URI"``) in one set, registered and checked with ``hwf add`` and
``hwf check``; then ``hwf fix SET --apply`` is timed as a user runs it (start-up included), with every Alma
call answered after ``--latency-ms`` and the simulator enforcing the same per-second cap as hwf's
``requests_per_second`` (it answers 429 PER_SECOND_THRESHOLD above it).

Targets (issue 12): wall time within 1.2x of the bound (N + 2 * ceil(N / 100)) / R; at most
N + 3 * ceil(N / 100) + 10 Alma calls; the simulator never sees more than R requests in any one-second
window (the peak covers ``add`` and ``check`` too: they run under the same cap); every record repaired,
backed up and confirmed. Cases: 12,000 at 25/s, 300 at the default cap (10/s).

``--hwf PATH`` times another build of hwf (e.g. the one before issue 12) on the same cases.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from orchestrator.simulator import SimServer, Simulator
from orchestrator.simulator.records import NEEDS_FIX, RecordFactory

from .common import API_KEY, COPY_JOB, INTEGRATION_JOB, MIGRATION_JOB, Results, header, machine, make_simulator

DEFAULT_HWF = shutil.which("hwf", path=str(Path(sys.executable).parent)) or "hwf"


def write_config(workdir: Path, url: str, rps: float) -> Path:
    path = workdir / "hwf.toml"
    path.write_text(
        "\n".join(
            [
                "[database]",
                f'url = "sqlite:///{workdir / "hwf.db"}"',
                "[alma]",
                f'base_url = "{url}"',
                'institution_code = "01GCL_INST"',
                f"requests_per_second = {rps}",
                "daily_call_floor = 0",
                "[alma.jobs]",
                f'copy_identifiers = "{COPY_JOB}"',
                f'handle_migration = "{MIGRATION_JOB}"',
                f'handle_integration = "{INTEGRATION_JOB}"',
                "[handles]",
                'prefix = "11084"',
                f'resolver_url = "{url}"',
                "[primo]",
                'domain = "grinnell.primo.exlibrisgroup.com"',
                'view = "01GCL_INST:GCL"',
                "",
            ]
        )
    )
    return path


def needs_fix_set(sim: Simulator, n: int, name: str) -> str:
    """``n`` records whose handle ``dc:identifier`` carries xsi:type, in one new itemized set."""
    scenario = sim.scenario
    factory = RecordFactory(scenario.institution_code, scenario.id_suffix, scenario.handle_prefix)
    rng = random.Random(12)
    start = len(sim.records)
    ids = sim.add_records(factory.make(start + i, NEEDS_FIX, rng)[0] for i in range(n))
    return sim.create_set(name, ids)


def run_hwf(
    hwf: str, config: Path, *args: str, timeout: float = 7200
) -> tuple[float, subprocess.CompletedProcess[str]]:
    env = {**os.environ, "HWF_ALMA_API_KEY": API_KEY}
    for proxy in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        env.pop(proxy, None)
    start = time.perf_counter()
    done = subprocess.run(
        [hwf, "--config", str(config), *args], capture_output=True, text=True, env=env, timeout=timeout
    )
    return time.perf_counter() - start, done


def alma_calls(sim: Simulator) -> int:
    return sum(v for k, v in sim.stats["requests"].items() if k not in ("admin",) and not k.startswith("handle"))


def bench_case(res: Results, hwf: str, n: int, rps: float, latency_ms: float, label: str) -> None:
    header(f"{label}: hwf fix --apply, {n:,} NEEDS_FIX records, cap {rps:g}/s, {latency_ms:g} ms per Alma call")
    sim = make_simulator(per_second_limit=rps)
    set_id = needs_fix_set(sim, n, f"Fix bench {n}")
    with tempfile.TemporaryDirectory(prefix="hwf-fix-bench-") as tmp, SimServer(sim) as server:
        workdir = Path(tmp)
        config = write_config(workdir, server.url, rps)
        for args in (("add", set_id), ("check", set_id)):
            took, done = run_hwf(hwf, config, *args)
            # `hwf check` exits 0 or 3 (NEEDS_FIX stops the migration job, not the copy): what this bench repairs.
            if done.returncode not in ((0, 3) if args[0] == "check" else (0,)):
                raise RuntimeError(f"hwf {' '.join(args)} failed: {done.stderr}")
            res.note(f"hwf {args[0]}: {took:.1f} s")
        sim.faults.alma_latency_ms = latency_ms
        before = alma_calls(sim)
        took, done = run_hwf(hwf, config, "fix", set_id, "--apply")
        calls = alma_calls(sim) - before
        stats = sim.stats
        url = f"sqlite:///{workdir / 'hwf.db'}"
        engine = create_engine(url, poolclass=NullPool)
        with engine.connect() as conn:
            backups = dict(conn.execute(text("SELECT state, count(*) FROM backups GROUP BY state")).all())
            classes = dict(conn.execute(text("SELECT preflight, count(*) FROM records GROUP BY preflight")).all())
        engine.dispose()
        still = sum(1 for r in sim.records.values() if b'<dc:identifier xsi:type="dcterms:URI"' in r.xml)
    if done.returncode != 0:
        res.note(f"hwf fix exited {done.returncode}: {done.stdout[-400:]} {done.stderr[-400:]}")
    bound = (n + 2 * math.ceil(n / 100)) / rps
    max_calls = n + 3 * math.ceil(n / 100) + 10
    peak = max(stats["max_per_second"].values(), default=0)
    res.measure(f"{label}.seconds", round(took, 2), f"hwf fix --apply: {took:.1f} s ({n / took:.1f} records/s)")
    res.measure(f"{label}.calls", calls, f"Alma calls: {calls:,} (bound {n + 2 * math.ceil(n / 100):,})")
    res.measure(f"{label}.bound", round(bound, 1), f"bound (N + 2*ceil(N/100)) / R = {bound:.1f} s")
    res.measure(f"{label}.ratio", round(took / bound, 3), f"wall / bound = {took / bound:.3f}")
    res.measure(f"{label}.peak", peak, f"peak requests in any one second at the simulator: {peak} (cap {rps:g})")
    res.measure(f"{label}.429", stats["sent_429"], f"429s sent: {stats['sent_429']}")
    res.note(f"backups: {backups}; records: {classes}; still carrying xsi:type in Alma: {still}")
    res.target(f"{label}: within 1.2x of the bound", took <= 1.2 * bound, f"{took:.1f} s vs {bound:.1f} s")
    res.target(f"{label}: Alma calls", calls <= max_calls, f"{calls:,} <= {max_calls:,}")
    res.target(f"{label}: never above the cap", peak <= rps, f"peak {peak} <= {rps:g}")
    res.target(
        f"{label}: every record repaired",
        done.returncode == 0 and still == 0 and backups == {"applied": n} and classes.get("READY") == n,
        f"exit {done.returncode}, {still} left, backups {backups}",
    )


def run(cases: list[tuple[int, float]], *, latency_ms: float, hwf: str = DEFAULT_HWF) -> Results:
    """Each (N, rate cap) case in turn; the figures and target verdicts."""
    res = Results("fix_bench")
    print(f"machine: {machine()}; hwf: {hwf}", flush=True)
    for n, rps in cases:
        bench_case(res, hwf, n, rps, latency_ms, f"{n}@{rps:g}")
    return res


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=12_000)
    parser.add_argument("--rps", type=float, default=25.0)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--small-n", type=int, default=300, help="the case at the default cap (0 skips it)")
    parser.add_argument("--small-rps", type=float, default=10.0)
    parser.add_argument("--hwf", default=DEFAULT_HWF, help="the hwf executable to time")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    cases = [(args.small_n, args.small_rps), (args.n, args.rps)]
    res = run([(n, rps) for n, rps in cases if n], latency_ms=args.latency_ms, hwf=args.hwf)
    res.summary()
    if args.json:
        args.json.write_text(json.dumps(res.values, indent=2, default=str))
    return 0 if res.all_met else 1


if __name__ == "__main__":
    sys.exit(main())
