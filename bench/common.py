"""Shared set-up for the benchmarks: the simulator over real HTTP, a config and a Context wired by the
CLI's own ``build_context``, sets registered through ``workflow.add_set``, and result printing.

Nothing here is a shortcut around hwf: every Alma and handle-proxy call goes through ``AlmaClient`` /
``Verifier`` over a socket to a ``SimServer`` on 127.0.0.1, and every record lands in a real SQLite
database opened (and migrated) by ``db.open_database``.
"""

from __future__ import annotations

import os
import platform
import resource
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from orchestrator.config import Config, parse_config
from orchestrator.service import workflow
from orchestrator.service.context import Context, find_set
from orchestrator.service.reporting import NullReporter
from orchestrator.simulator import Scenario, SimServer, Simulator
from orchestrator.store.models import AlmaSet, Record
from orchestrator.wiring import build_context

API_KEY = "l7xx-bench-key-0123456789abcdef"
COPY_JOB = "M1234567890000561"
MIGRATION_JOB = "M2234567890000561"
INTEGRATION_JOB = "M50700"


def make_simulator(*, per_second_limit: float = 0.0, job_seconds: float = 0.2, seed: int = 0) -> Simulator:
    """A simulator on the real clock; jobs last ``job_seconds`` so the workflow can run in a benchmark."""
    scenario = Scenario(
        job_seconds=dict.fromkeys(("copy", "migration", "integration", "other"), job_seconds),
        per_second_limit=per_second_limit,
        daily_quota=50_000_000,
        seed=seed,
    )
    return Simulator(scenario)


@contextmanager
def served(sim: Simulator) -> Iterator[SimServer]:
    """Serve ``sim`` over real HTTP on 127.0.0.1 (a free port) for the duration of the block."""
    server = SimServer(sim).start()
    try:
        yield server
    finally:
        server.stop()


def make_config(
    workdir: Path,
    url: str,
    *,
    resolver: str | None = None,
    database: str | None = None,
    alma_rps: float = 25.0,
    concurrency: int = 16,
    handles_rps: float = 1000.0,
    retries: int = 4,
    settle_minutes: float = 0.0,
    alma_format: str = "json",
    public_cache_check: bool = True,
    integration: str = "api",
) -> Config:
    """A config like ``hwf init`` writes, pointed at the simulator (both Alma and the handle proxy); the
    integration job runs by API unless ``integration="manual"``."""
    data: dict[str, Any] = {
        "database": {"url": database or f"sqlite:///{workdir / 'hwf.db'}"},
        "alma": {
            "base_url": url,
            "institution_code": "01GCL_INST",
            "poll_interval_seconds": 0.05,
            "poll_max_interval_seconds": 0.2,
            "reconcile_grace_seconds": 5,
            "requests_per_second": alma_rps,
            "format": alma_format,
            "daily_call_floor": 0,
            "threshold_wait_seconds": 1,
            "jobs": {
                "copy_identifiers": COPY_JOB,
                "handle_migration": MIGRATION_JOB,
                "handle_integration": INTEGRATION_JOB,
                "handle_integration_mode": integration,
            },
        },
        "handles": {
            "prefix": "11084",
            "resolver_url": resolver or url,
            "settle_minutes": settle_minutes,
            "concurrency": concurrency,
            "requests_per_second": handles_rps,
            "retries": retries,
            "timeout_seconds": 15,
            "public_cache_check": "on" if public_cache_check else "off",
        },
        "primo": {"domain": "grinnell.primo.exlibrisgroup.com", "view": "01GCL_INST:GCL"},
        "workflow": {"lease_seconds": 120},
    }
    return parse_config(data, workdir / "hwf.toml", environ={"HWF_ALMA_API_KEY": API_KEY})


def make_context(config: Config) -> Context:
    """The Context the ``hwf`` CLI would build (real clock, real sleep), with a silent reporter."""
    return build_context(config, reporter=NullReporter())


def new_set(sim: Simulator, n: int, *, profile: str, name: str, seed: int = 0) -> str:
    """Create ``n`` fresh simulator records of ``profile`` in a new itemized set; returns the set id."""
    ids = sim.generate_records(n, profile=profile, seed=seed)
    return sim.create_set(name, ids)


def integrate(ctx: Context, ref: str, *, timeout: float = 600.0) -> float:
    """Drive a set through preflight, the migration and the integration job with ``workflow.advance``
    (``settle_minutes`` keeps it from verifying); returns the seconds it took."""
    start = time.perf_counter()
    while True:
        result = workflow.advance(ctx, ref, wait=False)
        if result.state == "integrated":
            return time.perf_counter() - start
        if time.perf_counter() - start > timeout:
            raise RuntimeError(f"set {ref} did not reach integrated in {timeout:.0f} s: {result.message}")
        if result.wait_until is not None:
            delay = (result.wait_until - ctx.clock()).total_seconds()
            time.sleep(min(max(delay, 0.01), 1.0))


def register_handles_at_proxy(ctx: Context, sim: Simulator, ref: str) -> int:
    """Write every checked record's metadata handle at the simulated proxy, pointing at its own Primo
    URL (what a correct integration run leaves behind); returns how many."""
    with ctx.sessions() as session:
        set_id = find_set(session, ref).id
        rows = session.execute(
            select(Record.mms_id, Record.handle).where(Record.set_id == set_id, Record.handle.is_not(None))
        ).all()
    for mms, handle in rows:
        if handle is not None:
            sim.register_handle(handle, sim.primo_url(mms))
    return len(rows)


def verdict_counts(ctx: Context, set_id: int) -> dict[str, int]:
    """Included records per stored verdict (``UNCHECKED`` for none)."""
    with ctx.sessions() as session:
        rows = session.execute(
            select(Record.verdict, func.count())
            .where(Record.set_id == set_id, Record.excluded.is_(False))
            .group_by(Record.verdict)
        ).all()
    return {(verdict or "UNCHECKED"): count for verdict, count in rows}


def set_id_of(ctx: Context, ref: str) -> int:
    """The database id of a registered set."""
    with ctx.sessions() as session:
        return session.scalars(select(AlmaSet.id).where(AlmaSet.alma_set_id == ref)).one()


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MB (Linux reports ru_maxrss in KiB)."""
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / 1024 if sys.platform != "darwin" else kib / (1024 * 1024)


def vm_hwm_mb() -> float:
    """Peak RSS of this process's current image from /proc (Linux; NaN elsewhere), as a cross-check."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return float("nan")
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def machine() -> str:
    """One line about where the numbers come from."""
    return (
        f"{os.cpu_count()} cores (nproc {len(os.sched_getaffinity(0))}), Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()} {platform.machine()}"
    )


@dataclass
class Results:
    """Measurements and target verdicts of one benchmark run, printed as aligned lines."""

    title: str
    lines: list[str] = field(default_factory=list)
    targets: list[tuple[str, bool]] = field(default_factory=list)
    limits: list[str] = field(default_factory=list)
    values: dict[str, Any] = field(default_factory=dict)

    def note(self, text: str) -> None:
        self.lines.append(text)
        print(f"  {text}", flush=True)

    def measure(self, key: str, value: Any, text: str) -> None:
        self.values[key] = value
        self.note(text)

    def target(self, name: str, ok: bool, detail: str) -> None:
        self.targets.append((name, ok))
        print(f"  [{'PASS' if ok else 'MISS'}] {name}: {detail}", flush=True)

    def limit(self, name: str, detail: str) -> None:
        """A measured case outside what a target can hold (explained in bench/README.md)."""
        self.limits.append(name)
        print(f"  [LIMIT] {name}: {detail}", flush=True)

    @property
    def all_met(self) -> bool:
        return all(ok for _, ok in self.targets)

    def summary(self) -> None:
        met = sum(ok for _, ok in self.targets)
        print(f"\n{self.title}: {met} of {len(self.targets)} targets met", flush=True)
        for name, ok in self.targets:
            print(f"  {'PASS' if ok else 'MISS'}  {name}", flush=True)
        for name in self.limits:
            print(f"  LIMIT {name} (known limit, see bench/README.md)", flush=True)


def header(title: str) -> None:
    print(f"\n=== {title} ===", flush=True)
