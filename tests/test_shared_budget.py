"""One request budget for every process sharing an Alma key (``store.budget``).

The proof: four ``hwf resume --all --follow`` processes on one PostgreSQL database, against the simulator
(which counts the most requests per key in any one-second window), never exceed ``[alma]
requests_per_second`` together, and every step of every set still runs once. Without the shared budget
each process would pace itself alone: about four times the cap. The same holds on SQLite (a file lock),
and the schedule itself is checked with threads.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool

from orchestrator.store import budget
from orchestrator.store.db import upgrade
from tests.crashkit import add_sets, check, kill, query, serve, start, write_config
from tests.e2e import E2E_KEY, Served

CAP = 4  # requests per second, for the key, all processes together
PROCESSES = 4
SETS = 6


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    server = serve(tmp_path, job_seconds=0.5)  # no per-second cap in the simulator: it only measures
    yield server
    server.stop()


def _run_workers(config: Path, tmp_path: Path) -> list[int | None]:
    logs = [(tmp_path / f"worker-{n}.err").open("w") for n in range(PROCESSES)]
    procs = [start(config, "resume", "--all", "--follow", "--until-idle", stderr=log) for log in logs]
    try:
        for p in procs:
            p.wait(timeout=240)
    except subprocess.TimeoutExpired:
        pass
    finally:
        codes = [kill(p) for p in procs]
        for log in logs:
            log.close()
    return codes


def _check_shared(served: Served, config: Path, tmp_path: Path, db_url: str) -> None:
    sets = add_sets(config, served, ["clean"] * SETS, records=4, prefix="Budget")
    before = served.state()["stats"]
    codes = _run_workers(config, tmp_path)
    errors = [(tmp_path / f"worker-{n}.err").read_text()[-2000:] for n, c in enumerate(codes) if c]
    assert codes == [0] * PROCESSES, errors
    stats = served.state()["stats"]
    peaks = stats["max_per_second"]
    assert peaks, stats
    assert max(peaks.values()) <= CAP, f"peak {peaks} requests in one second, cap {CAP}; before: {before}"
    verdict = check(config, served, sets)
    assert verdict.ok, str(verdict)
    assert verdict.runs == 2 * SETS  # each step of each set submitted once
    actors = query(db_url, "SELECT actor, count(*) FROM events WHERE kind = 'submitting' GROUP BY actor")
    print(f"\n{PROCESSES} workers, {SETS} sets: peak {max(peaks.values())}/s at a cap of {CAP}/s; submissions {actors}")


@pytest.mark.postgres
def test_four_workers_on_postgresql_stay_under_the_cap_together(served: Served, pg_url: str, tmp_path: Path) -> None:
    config = write_config(tmp_path, served.url, db=pg_url, requests_per_second=CAP)
    _check_shared(served, config, tmp_path, pg_url)
    hashes = query(pg_url, "SELECT key_hash FROM rate_budget")
    assert hashes == [(budget.key_hash(E2E_KEY),)]
    assert E2E_KEY not in str(query(pg_url, "SELECT * FROM rate_budget"))


def test_four_workers_on_sqlite_stay_under_the_cap_together(served: Served, tmp_path: Path) -> None:
    config = write_config(tmp_path, served.url, requests_per_second=CAP)
    _check_shared(served, config, tmp_path, f"sqlite:///{tmp_path / 'hwf.db'}")
    files = list(tmp_path.glob("hwf.db.budget-*"))
    assert len(files) == 1 and E2E_KEY.encode() not in files[0].read_bytes()


def test_without_the_shared_budget_four_workers_do_exceed_the_cap(served: Served, tmp_path: Path) -> None:
    """The control: each process pacing itself alone goes over the cap (so the tests above can fail)."""
    config = write_config(tmp_path, served.url, requests_per_second=CAP, shared_budget=False)
    add_sets(config, served, ["clean"] * SETS, records=4, prefix="Alone")
    assert _run_workers(config, tmp_path) == [0] * PROCESSES
    assert max(served.state()["stats"]["max_per_second"].values()) > CAP


def _spacing(path: Path, rate: float) -> float:
    """Eight threads, 10 claims each, sharing one file schedule: the smallest gap between claimed starts.

    Each start is the schedule's own clock reading (recorded per thread as the schedule reads it) plus the
    wait it returned, so a thread preempted after its claim cannot make two slots look like one."""
    seen = threading.local()

    def wall() -> float:
        seen.now = time.time()
        return float(seen.now)

    schedule = budget.FileSchedule(path, wall=wall)
    gate_starts: list[float] = []
    lock = threading.Lock()

    def claim() -> None:
        for _ in range(10):
            wait = schedule.claim(1.0 / rate)
            with lock:
                gate_starts.append(seen.now + wait)

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    starts = sorted(gate_starts)
    return min(b - a for a, b in zip(starts, starts[1:], strict=False))


def test_the_file_schedule_spaces_claims_from_many_threads(tmp_path: Path) -> None:
    rate = 50.0  # 20 ms apart, every claim its own slot
    assert _spacing(tmp_path / "budget", rate) >= 0.999 / rate


@pytest.mark.postgres
def test_the_database_schedule_gives_every_claim_its_own_slot(pg_url: str) -> None:
    """80 claims from 8 threads at once, 0.5 s apart: the schedule ends 40 s ahead (no claim lost or shared)."""
    engine = create_engine(pg_url, poolclass=NullPool)
    try:
        upgrade(engine)
        schedule = budget.DatabaseSchedule(engine, budget.key_hash("k"))
        waits: list[float] = []
        lock = threading.Lock()

        def claim() -> None:
            for _ in range(10):
                wait = schedule.claim(0.5)
                with lock:
                    waits.append(wait)

        threads = [threading.Thread(target=claim) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        [(ahead,)] = query(
            pg_url,
            "SELECT next_start - EXTRACT(EPOCH FROM clock_timestamp()) FROM rate_budget WHERE key_hash = :k",
            k=budget.key_hash("k"),
        )
        assert 38.0 < float(ahead) <= 40.0
        assert max(waits) > 38.0 and min(waits) < 1.0
    finally:
        engine.dispose()


def test_a_shared_hold_and_the_shared_remaining_reach_every_gate(tmp_path: Path) -> None:
    path = tmp_path / "budget"
    first = budget.SharedGate(budget.FileSchedule(path), 100.0, sleep=lambda s: None, floor=10)
    second = budget.SharedGate(budget.FileSchedule(path), 100.0, sleep=lambda s: None, floor=10)
    first.hold(5.0)
    assert second.reserve() > 4.0  # the other process waits out the Retry-After too
    first.note_remaining(7)
    assert second.shared_remaining() == 7
