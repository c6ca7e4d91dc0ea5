"""Issue 15 (logs): how big the structured log grows per set, and what writing it costs.

Runs the real ``hwf add`` + ``hwf resume --all`` (typer's CliRunner on the real app, the in-process simulator and a
virtual clock through a Wiring) over ``--sets`` clean sets of ``--records`` records, once with ``[log]`` on and
once off, and prints the log's size per set and both wall times. Not a test: no PASS/MISS target.

    .venv/bin/python -m bench.logsize [--sets 5] [--records 100]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.simulator import Scenario, Simulator
from orchestrator.wiring import Wiring

KEY = "l7xx-bench-key-0123456789abcdef"


class _Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 2, 2, 15, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += timedelta(seconds=max(seconds, 0.0))


def _config(folder: Path, enabled: bool) -> Path:
    jobs = (
        'copy_identifiers = "M1234567890000561"\nhandle_migration = "M2234567890000561"\nhandle_integration = "M50700"'
        '\nhandle_integration_mode = "api"'
    )
    text = f"""[database]\nurl = "sqlite:///{folder / "hwf.db"}"\n[alma]\nbase_url = "http://alma.test"
institution_code = "01GCL_INST"\npoll_interval_seconds = 2\nrequests_per_second = 1000\n[alma.jobs]\n{jobs}
[handles]\nprefix = "11084"\nresolver_url = "http://alma.test"\nsettle_minutes = 0
[primo]\ndomain = "grinnell.primo.exlibrisgroup.com"\nview = "01GCL_INST:GCL"
[log]\nenabled = {json.dumps(enabled)}\n"""
    path = folder / "hwf.toml"
    path.write_text(text, encoding="utf-8")
    return path


def measure(sets: int, records: int, enabled: bool) -> tuple[float, int, int]:
    folder = Path(tempfile.mkdtemp(prefix="hwf-logsize-"))
    clock = _Clock()
    sim = Simulator(Scenario(job_seconds={"copy": 30, "migration": 60, "integration": 45}), clock=clock)
    transport = httpx.MockTransport(sim.handle)
    wiring = Wiring(transport, transport, clock, clock.sleep, lambda s: None)
    runner = CliRunner()
    config = _config(folder, enabled)
    env = {"HWF_ALMA_API_KEY": KEY}
    for i in range(sets):
        set_id = sim.create_set(f"Bench {i}", sim.generate_records(records, profile="clean", seed=i))
        assert runner.invoke(app, ["--config", str(config), "add", set_id], obj=wiring, env=env).exit_code == 0
    started = time.perf_counter()
    result = runner.invoke(app, ["--config", str(config), "resume", "--all"], obj=wiring, env=env)
    elapsed = time.perf_counter() - started
    assert result.exit_code == 0, result.output
    log = folder / "hwf.log"
    text = log.read_text(encoding="utf-8") if log.exists() else ""
    assert KEY not in text
    return elapsed, len(text.encode()), len(text.splitlines())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", type=int, default=5)
    parser.add_argument("--records", type=int, default=100)
    args = parser.parse_args()
    on, size, lines = measure(args.sets, args.records, True)
    off, _, _ = measure(args.sets, args.records, False)
    print(f"{args.sets} sets x {args.records} records, add + resume --all, in-process simulator, virtual clock")
    print(f"log: {size:,} bytes, {lines:,} lines: {size / args.sets / 1024:.1f} KiB per set (add included)")
    print(f"resume --all wall time: {on:.2f} s with the log, {off:.2f} s without ({(on / off - 1) * 100:+.0f} %)")


if __name__ == "__main__":
    main()
