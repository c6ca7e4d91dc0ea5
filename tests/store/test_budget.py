"""The request budget shared by every process using a key (orchestrator.store.budget): the file schedule and the
database schedule give every claim its own slot when many threads claim at once, and a hold or the remaining
calls one process learns reach every gate. The four-process proof is tests/system/test_shared_budget.py."""

from __future__ import annotations

import struct
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from orchestrator.store import budget
from orchestrator.store.db import upgrade
from tests.support.crash import query


def _spacing(path: Path, rate: float) -> float:
    """Eight threads, 10 claims each, sharing one file schedule: the smallest gap between claimed starts.

    Each start is the schedule's own clock reading (recorded per thread as the schedule reads it) plus the
    wait it returned, so a thread preempted after its claim cannot make two slots look like one."""
    seen = threading.local()

    def clock() -> float:
        seen.now = time.monotonic()
        return float(seen.now)

    schedule = budget.FileSchedule(path, clock=clock)
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
@pytest.mark.serial  # it reads the schedule 40 s ahead within 2 s: a loaded machine could take longer
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


def test_the_file_schedule_keeps_the_hosts_monotonic_clock_not_the_wall_clock(tmp_path: Path) -> None:
    """A step of the wall clock (NTP, a person) must move nothing: the file holds monotonic seconds."""
    path = tmp_path / "budget"
    budget.FileSchedule(path).claim(0.1)
    next_start = struct.unpack("<dddd", path.read_bytes())[0]
    assert abs(next_start - time.monotonic()) < 5.0, (next_start, time.monotonic(), time.time())


def test_a_schedule_an_hour_ahead_of_the_clock_makes_no_process_wait_the_hour(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The clock the schedule was written by stepped back an hour (or the host rebooted): the next claim would
    wait the hour. Every wait is capped: the schedule starts afresh, with a warning."""
    now = [100_000.0]
    path = tmp_path / "budget"
    slept: list[float] = []
    gate = budget.SharedGate(budget.FileSchedule(path, lambda: now[0]), 10.0, sleep=slept.append)
    gate.acquire()
    gate.release()
    now[0] -= 3600.0  # the clock goes back an hour
    other = budget.SharedGate(budget.FileSchedule(path, lambda: now[0]), 10.0, sleep=slept.append)
    with caplog.at_level("WARNING", logger="orchestrator.store.budget"):
        other.acquire()
    other.release()
    assert max(slept, default=0.0) < 1.0, slept
    assert "started afresh" in caplog.text
    gate.hold(86_400.0)  # a hold is capped too
    assert other.reserve() <= budget.LONGEST_WAIT_SECONDS + 1.0


@pytest.mark.postgres
def test_the_database_schedule_an_hour_ahead_starts_afresh(pg_url: str) -> None:
    """The database server's clock stepped back an hour: the row's next start is an hour ahead. No process
    waits the hour: the claim sees it, the schedule starts afresh."""
    engine = create_engine(pg_url, poolclass=NullPool)
    try:
        upgrade(engine)
        key = budget.key_hash("stepped")
        slept: list[float] = []
        gate = budget.SharedGate(budget.DatabaseSchedule(engine, key), 10.0, sleep=slept.append)
        with engine.begin() as conn:
            conn.execute(
                text(
                    "UPDATE rate_budget SET next_start = EXTRACT(EPOCH FROM clock_timestamp()) + 3600 "
                    "WHERE key_hash = :k"
                ),
                {"k": key},
            )
        gate.acquire()
        gate.release()
        assert max(slept, default=0.0) < 1.0, slept
    finally:
        engine.dispose()
