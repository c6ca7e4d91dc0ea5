"""End-to-end benchmark of ``hwf verify SET --all`` (issues 12, 21): the real CLI in its default verification
configuration (the public proxy first; ``auth=true`` only for a handle whose public answer is wrong), as a user
runs it, against an independent stdlib handle proxy (``bench/handle_server.py``, not the project's simulator).

Run: ``.venv/bin/python -m bench.verify_e2e`` (``--help`` for sizes). Set-up: N clean records in a set on
the simulator (for Alma only), registered and checked with ``hwf add`` and ``hwf check``; their handles
written into the independent server's table, each pointing at its own record's Primo URL. Then, ``--runs``
times each, alternating: ``hwf verify SET --all`` (concurrency 16 and a rate cap of 1000/s, to match the script;
everything else as ``hwf init`` writes it; wall time of the process, start-up included),
``python -m bench.verify_script`` (16 threads of ``urllib``, its start-up included) and ``bench/verify_floor.py``
(16 bare kept-alive ``http.client`` connections: what no client beats against this server). Also ``hwf version``
(start-up alone). The server counts the requests it answers.

Targets: hwf's best run within 1.15x of the one-request bound latency * N / concurrency and within 1.10x of the
script's best run; one request per handle. ``--stale K``: K of the handles answer "not registered" without
``auth=true`` (a public cache filled before the integration): hwf alone, requests sent <= N + K + retries (hwf's
failed exchanges, from its log), K STALE_CACHE verdicts.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

import orchestrator
from orchestrator.simulator import SimServer, Simulator

from .common import API_KEY, COPY_JOB, INTEGRATION_JOB, MIGRATION_JOB, Results, header, machine, make_simulator

DEFAULT_HWF = shutil.which("hwf", path=str(Path(sys.executable).parent)) or "hwf"


def write_config(workdir: Path, alma: str, resolver: str, concurrency: int, rps: float) -> Path:
    path = workdir / "hwf.toml"
    path.write_text(
        "\n".join(
            [
                "[database]",
                f'url = "sqlite:///{workdir / "hwf.db"}"',
                "[alma]",
                f'base_url = "{alma}"',
                'institution_code = "01GCL_INST"',
                "requests_per_second = 25",
                "daily_call_floor = 0",
                "[alma.jobs]",
                f'copy_identifiers = "{COPY_JOB}"',
                f'handle_migration = "{MIGRATION_JOB}"',
                f'handle_integration = "{INTEGRATION_JOB}"',
                "[handles]",
                'prefix = "11084"',
                f'resolver_url = "{resolver}"',
                f"concurrency = {concurrency}",
                f"requests_per_second = {rps}",
                # Nothing else under [handles]: the default verification (the public proxy first).
                "[primo]",
                'domain = "grinnell.primo.exlibrisgroup.com"',
                'view = "01GCL_INST:GCL"',
                "",
            ]
        )
    )
    return path


def compile_bytecode() -> None:
    """Byte-compile hwf's own modules first, as ``pip install`` does: an editable checkout run with
    PYTHONDONTWRITEBYTECODE set (this sandbox sets it) would otherwise compile every module on every start."""
    package = Path(orchestrator.__file__).parent
    environment = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(package)], check=True, env=environment)


def env() -> dict[str, str]:
    out = {**os.environ, "HWF_ALMA_API_KEY": API_KEY}
    for proxy in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        out.pop(proxy, None)
    return out


def timed(cmd: list[str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env(), timeout=600)
    return time.perf_counter() - start, done


def start_server(handles: Path, latency_ms: float, stale: Path | None = None) -> tuple[subprocess.Popen[str], str]:
    """``bench/handle_server.py`` in a process of its own; returns it and its URL."""
    server = subprocess.Popen(
        [
            sys.executable,
            str(Path(__file__).with_name("handle_server.py")),
            str(handles),
            "--latency-ms",
            str(latency_ms),
            *(["--stale", str(stale)] if stale else []),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert server.stdout is not None
    return server, server.stdout.readline().strip()


def stop_server(server: subprocess.Popen[str]) -> None:
    server.terminate()
    server.wait(timeout=10)
    if server.stdout is not None:
        server.stdout.close()


def server_requests(resolver: str) -> int:
    """Requests the independent server has answered so far."""
    with urllib.request.urlopen(f"{resolver}/_stats", timeout=10) as reply:
        return int(json.loads(reply.read())["requests"])


def failed_exchanges(log: Path) -> int:
    """hwf's exchanges with the resolver that failed (each retried at most once): from its structured log."""
    failed = 0
    for line in log.read_text(encoding="utf-8").splitlines() if log.exists() else []:
        entry = json.loads(line)
        if entry.get("remote") == "resolver" and (
            entry.get("error") or (entry.get("status") or 0) in (429, 500, 502, 503, 504)
        ):
            failed += 1
    return failed


def prepare(sim: Simulator, alma: str, workdir: Path, args: argparse.Namespace) -> tuple[str, dict[str, str]]:
    """The set registered and checked by hwf; its handle table (handle -> the record's Primo URL)."""
    set_id = sim.create_set("Verify e2e", sim.generate_records(args.n, profile="clean", seed=4))
    handles = workdir / "handles.json"
    handles.write_text("{}")
    server, resolver = start_server(handles, args.latency_ms)
    try:
        config = write_config(workdir, alma, resolver, args.concurrency, args.rps)
        for step in (["add", set_id], ["check", set_id]):
            _took, done = timed([args.hwf, "--config", str(config), *step])
            if done.returncode != 0:
                raise RuntimeError(f"hwf {step[0]}: {done.stderr}")
    finally:
        stop_server(server)
    engine = create_engine(f"sqlite:///{workdir / 'hwf.db'}", poolclass=NullPool)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT mms_id, handle FROM records WHERE handle IS NOT NULL")).all()
    engine.dispose()
    table = {handle: sim.primo_url(mms) for mms, handle in rows}
    handles.write_text(json.dumps(table))
    return set_id, table


def side_by_side(res: Results, hwf: list[str], resolver: str, handles: Path, n: int, args: argparse.Namespace) -> None:
    """hwf, the script and the floor, alternating; the one-request bound; requests hwf sent."""
    threads = ["--threads", str(args.concurrency)]
    script = [sys.executable, str(Path(__file__).with_name("verify_script.py")), str(handles), resolver, *threads]
    floor = [sys.executable, str(Path(__file__).with_name("verify_floor.py")), str(handles), resolver, *threads]
    startup = min(timed([args.hwf, "version"])[0] for _ in range(3))
    times: dict[str, list[float]] = {"hwf": [], "script": [], "floor": []}
    sent: list[int] = []
    for _ in range(args.runs):
        before = server_requests(resolver)
        took, done = timed([*hwf, "--all"])
        if done.returncode != 0 or f"OK {n}" not in done.stdout:
            raise RuntimeError(f"hwf verify: exit {done.returncode}: {done.stdout} {done.stderr[-500:]}")
        sent.append(server_requests(resolver) - before)
        times["hwf"].append(took)
        for name, cmd in (("script", script), ("floor", floor)):
            took, done = timed(cmd)
            if f"ok {n}" not in done.stdout:
                raise RuntimeError(f"{name}: {done.stdout} {done.stderr[-500:]}")
            times[name].append(took)
    bound = args.latency_ms / 1000 * n / args.concurrency
    best, best_script = min(times["hwf"]), min(times["script"])
    res.measure("startup", round(startup, 3), f"hwf version (start-up alone): {startup:.2f} s")
    labels = {
        "hwf": "hwf verify --all (default configuration)",
        "script": f"{args.concurrency}-thread urllib script",
        "floor": f"bare keep-alive http.client, {args.concurrency} threads (the server's floor)",
    }
    for name, label in labels.items():
        runs = times[name]
        res.measure(
            name,
            [round(t, 2) for t in runs],
            f"{label}: best {min(runs):.2f} s, median {statistics.median(runs):.2f} s "
            f"({', '.join(f'{t:.2f}' for t in runs)})",
        )
    res.measure("bound", round(bound, 2), f"one-request bound latency * N / concurrency = {bound:.2f} s")
    res.measure("requests", sent, f"requests hwf sent per run, counted at the server: {sent} for {n:,} handles")
    res.measure(
        "ratio",
        round(best / bound, 3),
        f"hwf / bound = {best / bound:.3f}; hwf / script = {best / best_script:.3f}; "
        f"script / bound = {best_script / bound:.3f}",
    )
    res.target("hwf within 1.15x of the one-request bound", best <= 1.15 * bound, f"{best:.2f} s vs {bound:.2f} s")
    res.target("hwf within 1.10x of the script", best <= 1.10 * best_script, f"{best:.2f} s vs {best_script:.2f} s")
    res.target("one request per handle", max(sent) <= n, f"at most {max(sent):,} for {n:,} handles")


def stale_run(res: Results, hwf: list[str], resolver: str, workdir: Path, n: int, stale: int) -> None:
    """hwf alone with ``stale`` handles stale in the public cache: the requests it sends, counted at the server."""
    log = workdir / "hwf.log"
    failed_before = failed_exchanges(log)
    before = server_requests(resolver)
    took, done = timed([*hwf, "--all", "--json"])
    sent = server_requests(resolver) - before
    retries = failed_exchanges(log) - failed_before
    counts = json.loads(done.stdout) if done.returncode == 0 else {}
    res.measure(
        "stale_seconds", round(took, 2), f"hwf verify --all, {n:,} handles of which {stale:,} stale: {took:.2f} s"
    )
    res.measure(
        "stale_requests", sent, f"requests counted at the server: {sent:,} (retries {retries}); verdicts {counts}"
    )
    limit = n + stale + retries
    res.target("requests <= handles + stale + retries", sent <= limit, f"{sent:,} <= {limit:,}")
    res.target(
        f"{stale:,} STALE_CACHE, the rest OK",
        counts == {"OK": n - stale, "STALE_CACHE": stale} or not stale,
        f"{counts}",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--stale", type=int, default=0, help="handles stale in the public cache (hwf alone)")
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rps", type=float, default=1000.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--hwf", default=DEFAULT_HWF)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    res = Results("verify_e2e")
    print(f"machine: {machine()}; hwf: {args.hwf}", flush=True)
    compile_bytecode()
    header(
        f"hwf verify SET --all in the default verification configuration (the public proxy first), "
        f"{args.n:,} handles{f' ({args.stale:,} stale in the public cache)' if args.stale else ''}, "
        f"{args.latency_ms:g} ms latency, concurrency {args.concurrency}, cap {args.rps:g}/s, independent stdlib server"
    )
    sim = make_simulator()
    with tempfile.TemporaryDirectory(prefix="hwf-verify-e2e-") as tmp, SimServer(sim) as alma:
        workdir = Path(tmp)
        set_id, table = prepare(sim, alma.url, workdir, args)
        stale = workdir / "stale.json"
        stale.write_text(json.dumps(dict.fromkeys(sorted(table)[: args.stale])))  # "not registered" when cached
        server, resolver = start_server(workdir / "handles.json", args.latency_ms, stale)
        try:
            config = write_config(workdir, alma.url, resolver, args.concurrency, args.rps)
            hwf = [args.hwf, "--config", str(config), "verify", set_id]
            if args.stale:
                stale_run(res, hwf, resolver, workdir, len(table), args.stale)
            else:
                side_by_side(res, hwf, resolver, workdir / "handles.json", len(table), args)
        finally:
            stop_server(server)
    res.summary()
    if args.json:
        args.json.write_text(json.dumps(res.values, indent=2, default=str))
    return 0 if res.all_met else 1


if __name__ == "__main__":
    sys.exit(main())
