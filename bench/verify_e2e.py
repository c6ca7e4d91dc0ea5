"""End-to-end benchmark of ``hwf verify SET --all`` (issue 12): the real CLI, as a user runs it, against
an independent stdlib handle proxy (``bench/handle_server.py``, not the project's simulator).

Run: ``.venv/bin/python -m bench.verify_e2e`` (``--help`` for sizes). Set-up: N clean records in a set on
the simulator (for Alma only), registered and checked with ``hwf add`` and ``hwf check``; their handles
written into the independent server's table, each pointing at its own record's Primo URL. Then, ``--runs``
times each, alternating: ``hwf verify SET --all`` (concurrency 16, rate cap 1000/s; wall time of the
process, start-up included), ``python -m bench.verify_script`` (16 threads of ``urllib``, its start-up
included) and ``bench/verify_floor.py`` (16 bare kept-alive ``http.client`` connections: what no client beats
against this server). Also ``hwf version`` (start-up alone).

Targets: hwf's best run within 1.15x of the bound latency * N / concurrency, and no slower than the
script's best run.
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
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

import orchestrator
from orchestrator.simulator import SimServer

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
                # One request per handle, as the script and the bound count: the authoritative check alone
                # (the public-cache comparison is a second request per correct handle).
                'public_cache_check = "off"',
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


def start_server(handles: Path, latency_ms: float) -> tuple[subprocess.Popen[str], str]:
    """``bench/handle_server.py`` in a process of its own; returns it and its URL."""
    server = subprocess.Popen(
        [
            sys.executable,
            str(Path(__file__).with_name("handle_server.py")),
            str(handles),
            "--latency-ms",
            str(latency_ms),
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=3000)
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
        f"hwf verify SET --all, {args.n:,} handles, {args.latency_ms:g} ms latency, "
        f"concurrency {args.concurrency}, cap {args.rps:g}/s, independent stdlib server"
    )
    sim = make_simulator()
    set_id = sim.create_set("Verify e2e", sim.generate_records(args.n, profile="clean", seed=4))
    with tempfile.TemporaryDirectory(prefix="hwf-verify-e2e-") as tmp, SimServer(sim) as alma:
        workdir = Path(tmp)
        handles = workdir / "handles.json"
        handles.write_text("{}")
        server, resolver = start_server(handles, args.latency_ms)
        try:
            config = write_config(workdir, alma.url, resolver, args.concurrency, args.rps)
            hwf = [args.hwf, "--config", str(config)]
            for step in (["add", set_id], ["check", set_id]):
                took, done = timed([*hwf, *step])
                if done.returncode != 0:
                    raise RuntimeError(f"hwf {step[0]}: {done.stderr}")
            engine = create_engine(f"sqlite:///{workdir / 'hwf.db'}", poolclass=NullPool)
            with engine.connect() as conn:
                rows = conn.execute(text("SELECT mms_id, handle FROM records WHERE handle IS NOT NULL")).all()
            engine.dispose()
            table = {handle: sim.primo_url(mms) for mms, handle in rows}
            stop_server(server)
            handles.write_text(json.dumps(table))
            server, resolver = start_server(handles, args.latency_ms)
            config = write_config(workdir, alma.url, resolver, args.concurrency, args.rps)
            script = [sys.executable, str(Path(__file__).with_name("verify_script.py")), str(handles), resolver]
            script.append("--threads")
            script.append(str(args.concurrency))
            floor = [sys.executable, str(Path(__file__).with_name("verify_floor.py")), str(handles), resolver]
            floor += ["--threads", str(args.concurrency)]
            floor_times: list[float] = []
            startup = min(timed([args.hwf, "version"])[0] for _ in range(3))
            hwf_times: list[float] = []
            script_times: list[float] = []
            for _ in range(args.runs):
                took, done = timed([*hwf, "verify", set_id, "--all"])
                if done.returncode != 0 or f"OK {len(table)}" not in done.stdout:
                    raise RuntimeError(f"hwf verify: exit {done.returncode}: {done.stdout} {done.stderr[-500:]}")
                hwf_times.append(took)
                took, done = timed(script)
                if f"ok {len(table)}" not in done.stdout:
                    raise RuntimeError(f"script: {done.stdout} {done.stderr[-500:]}")
                script_times.append(took)
                took, done = timed(floor)
                if f"ok {len(table)}" not in done.stdout:
                    raise RuntimeError(f"floor: {done.stdout} {done.stderr[-500:]}")
                floor_times.append(took)
        finally:
            stop_server(server)
    n = len(table)
    bound = args.latency_ms / 1000 * n / args.concurrency
    best, best_script = min(hwf_times), min(script_times)
    res.measure("startup", round(startup, 3), f"hwf version (start-up alone): {startup:.2f} s")
    res.measure(
        "hwf",
        [round(t, 2) for t in hwf_times],
        f"hwf verify --all: best {best:.2f} s, median {statistics.median(hwf_times):.2f} s "
        f"({', '.join(f'{t:.2f}' for t in hwf_times)})",
    )
    res.measure(
        "script",
        [round(t, 2) for t in script_times],
        f"16-thread urllib script: best {best_script:.2f} s, median {statistics.median(script_times):.2f} s "
        f"({', '.join(f'{t:.2f}' for t in script_times)})",
    )
    res.measure(
        "floor",
        [round(t, 2) for t in floor_times],
        f"bare keep-alive http.client, 16 threads (the server's floor): best {min(floor_times):.2f} s "
        f"({', '.join(f'{t:.2f}' for t in floor_times)})",
    )
    res.measure("bound", round(bound, 2), f"bound latency * N / concurrency = {bound:.2f} s")
    res.measure(
        "ratio", round(best / bound, 3), f"hwf / bound = {best / bound:.3f}; script / bound = {best_script / bound:.3f}"
    )
    res.target("hwf within 1.15x of the bound", best <= 1.15 * bound, f"{best:.2f} s vs {bound:.2f} s")
    res.target("hwf no slower than the script", best <= best_script, f"{best:.2f} s vs {best_script:.2f} s")
    res.summary()
    if args.json:
        args.json.write_text(json.dumps(res.values, indent=2, default=str))
    return 0 if res.all_met else 1


if __name__ == "__main__":
    sys.exit(main())
