"""One request budget for every hwf process that shares an Alma API key.

Alma's per-second limit and its daily quota belong to the institution's key, not to a process: four
``hwf resume --all --follow`` workers (on one host or several) must together stay under
``[alma] requests_per_second``. Each request therefore claims the next start in a schedule kept where
every process sees it:

- PostgreSQL: one row per key in ``rate_budget``, claimed by a single atomic ``UPDATE ... RETURNING``
  (the row lock serialises concurrent claims) against the database's own clock, so hosts whose clocks
  differ still agree.
- SQLite (one host): a small file beside the database, read and rewritten under an exclusive
  ``flock``; no write to the database itself, so a claim never waits on an hwf transaction. Its times are
  the host's monotonic clock (shared by every process on the host), so a step of the wall clock moves
  nothing.

No claim waits longer than ``LONGEST_WAIT_SECONDS``: a schedule further ahead than that was written by another
clock (a reboot, the database server's clock stepped back) and is started afresh, with a warning in the log.

:class:`SharedGate` has the ``pacing.TokenBucket`` interface (``reserve``/``acquire``/``slow_down``/
``hold``), so the Alma client uses it unchanged: the process's own bucket still does the AIMD slow-down
after a 429, and the shared schedule spaces the starts of all processes together. A ``hold`` (after a
``Retry-After``) is shared: every process pauses. The last ``X-Exl-Api-Remaining`` any process saw is
shared too (``note_remaining``/``shared_remaining``), so a worker that starts after another spent the
quota down to the floor does not spend a call to learn it. The key is named by a SHA-256 hash of it,
never stored.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import math
import os
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from orchestrator.errors import DatabaseError
from orchestrator.pacing import PACING, TokenBucket

# A shared X-Exl-Api-Remaining older than this is not trusted (Alma resets the quota at midnight: a
# reading from before then would keep every worker stopped). A live worker refreshes it constantly.
REMAINING_TTL_SECONDS = 300.0
# How often one process writes the remaining count it sees (always when under twice the floor).
REMAINING_WRITE_SECONDS = 5.0
# The longest any claim waits: a hold is a Retry-After hwf waits in place (at most 300 s), and the starts queued
# by every process are a few intervals. A schedule further ahead was written by another clock.
LONGEST_WAIT_SECONDS = 300.0
_log = logging.getLogger(__name__)


def key_hash(api_key: str) -> str:
    """How the budget names a key: SHA-256 of it, hex (the key itself is never stored)."""
    return hashlib.sha256(("hwf-budget:" + api_key).encode("utf-8")).hexdigest()


class Schedule(Protocol):
    """Where the processes' common schedule of request starts lives."""

    def claim(self, interval: float) -> float:
        """Claim the next start ``interval`` after the previous one; return seconds to wait for it."""

    def hold(self, seconds: float) -> None:
        """No process starts a request for ``seconds`` from now."""

    def restart(self) -> None:
        """Forget starts and holds ahead of now (they were written by another clock)."""

    def note_remaining(self, remaining: int) -> None: ...

    def remaining(self) -> int | None:
        """The last X-Exl-Api-Remaining any process saw in the last ``REMAINING_TTL_SECONDS``."""


class DatabaseSchedule:
    """The schedule in PostgreSQL's ``rate_budget`` table, claimed atomically by the database's clock."""

    _CLAIM = text(
        "UPDATE rate_budget SET next_start = GREATEST(next_start, hold_until, "
        "EXTRACT(EPOCH FROM clock_timestamp())) + :interval WHERE key_hash = :key "
        "RETURNING next_start - :interval - EXTRACT(EPOCH FROM clock_timestamp())"
    )
    _CREATE = text(
        "INSERT INTO rate_budget (key_hash, next_start, hold_until) VALUES (:key, 0, 0) "
        "ON CONFLICT (key_hash) DO NOTHING"
    )
    _HOLD = text(
        "UPDATE rate_budget SET hold_until = GREATEST(hold_until, EXTRACT(EPOCH FROM clock_timestamp()) + :s) "
        "WHERE key_hash = :key"
    )
    _RESTART = text(
        "UPDATE rate_budget SET next_start = LEAST(next_start, EXTRACT(EPOCH FROM clock_timestamp())), "
        "hold_until = LEAST(hold_until, EXTRACT(EPOCH FROM clock_timestamp())) WHERE key_hash = :key"
    )
    _NOTE = text("UPDATE rate_budget SET remaining = :r, remaining_at = clock_timestamp() WHERE key_hash = :key")
    _READ = text(
        "SELECT remaining FROM rate_budget WHERE key_hash = :key AND remaining_at > clock_timestamp() - "
        "make_interval(secs => :ttl)"
    )

    def __init__(self, engine: Engine, key: str) -> None:
        self._engine, self._key = engine, key
        self._run(self._CREATE, {})

    def _run(self, statement: object, params: dict[str, object]) -> object:
        try:
            with self._engine.begin() as conn:
                result = conn.execute(statement, {"key": self._key, **params})  # type: ignore[call-overload]
                return result.scalar() if result.returns_rows else None
        except SQLAlchemyError as exc:
            raise DatabaseError(f"the shared request budget (table rate_budget) is not usable: {exc}") from None

    def claim(self, interval: float) -> float:
        wait = self._run(self._CLAIM, {"interval": interval})
        if wait is None:  # the row was removed under us: make it again
            self._run(self._CREATE, {})
            wait = self._run(self._CLAIM, {"interval": interval})
        return float(wait or 0.0)  # type: ignore[arg-type]

    def hold(self, seconds: float) -> None:
        self._run(self._HOLD, {"s": seconds})

    def restart(self) -> None:
        self._run(self._RESTART, {})

    def note_remaining(self, remaining: int) -> None:
        self._run(self._NOTE, {"r": remaining})

    def remaining(self) -> int | None:
        value = self._run(self._READ, {"ttl": REMAINING_TTL_SECONDS})
        return None if value is None else int(value)  # type: ignore[call-overload]


class FileSchedule:
    """The schedule in a 32-byte file beside a SQLite database, rewritten under an exclusive flock:
    next start, hold until, remaining, remaining seen at (doubles, seconds of the host's monotonic clock, which
    every process on the host shares and no wall-clock step moves)."""

    _FORMAT = "<dddd"

    def __init__(self, path: Path, clock: Callable[[], float] = time.monotonic) -> None:
        self._path, self._clock = path, clock
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise DatabaseError(f"cannot open the shared request budget file {path}: {exc.strerror}") from None
        os.close(fd)

    def _update(self, change: Callable[[list[float], float], float]) -> float:
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            raw = os.pread(fd, struct.calcsize(self._FORMAT), 0)
            values = list(struct.unpack(self._FORMAT, raw)) if len(raw) == 32 else [0.0, 0.0, -1.0, 0.0]
            result = change(values, self._clock())
            os.pwrite(fd, struct.pack(self._FORMAT, *values), 0)
            return result
        finally:
            os.close(fd)  # closing releases the lock

    def claim(self, interval: float) -> float:
        def change(v: list[float], now: float) -> float:
            start = max(v[0], v[1], now)
            v[0] = start + interval
            return start - now

        return self._update(change)

    def hold(self, seconds: float) -> None:
        def change(v: list[float], now: float) -> float:
            v[1] = max(v[1], now + seconds)
            return 0.0

        self._update(change)

    def restart(self) -> None:
        def change(v: list[float], now: float) -> float:
            v[0], v[1] = min(v[0], now), min(v[1], now)
            return 0.0

        self._update(change)

    def note_remaining(self, remaining: int) -> None:
        def change(v: list[float], now: float) -> float:
            v[2], v[3] = float(remaining), now
            return 0.0

        self._update(change)

    def remaining(self) -> int | None:
        seen: list[float] = []

        def change(v: list[float], now: float) -> float:
            seen.extend([v[2], now - v[3]])
            return 0.0

        self._update(change)
        value, age = seen
        # A negative age is a reading from before a reboot (another run of the monotonic clock): not trusted.
        return int(value) if value >= 0 and 0 <= age < REMAINING_TTL_SECONDS else None


class SharedGate:
    """A ``TokenBucket``-compatible gate: this process's bucket (AIMD after a 429) plus the schedule
    shared by every process using the key."""

    def __init__(
        self,
        schedule: Schedule,
        rate: float,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        *,
        floor: int = 0,
    ) -> None:
        if not rate > 0 or math.isinf(rate):
            raise ValueError(f"a shared budget needs a finite positive rate, not {rate!r}")
        self.schedule = schedule
        self._local = TokenBucket(rate, monotonic, sleep, window=True)
        self._interval = 1.0 / (rate * PACING)
        self._sleep, self._monotonic = sleep, monotonic
        self._floor = floor
        self._noted_at = -math.inf
        self._lock = threading.Lock()

    def current_rate(self, now: float | None = None) -> float:
        return self._local.current_rate(now)

    def reserve(self) -> float:
        return max(self._local.reserve(), 0.0) + self._claim()

    def acquire(self) -> float:
        waited = self._local.acquire()
        shared = self._claim()
        if shared > 0:
            self._sleep(shared)
        return waited + shared

    def _claim(self) -> float:
        """The next shared start: seconds to wait for it, never more than ``LONGEST_WAIT_SECONDS``."""
        wait = self.schedule.claim(self._interval)
        if wait > LONGEST_WAIT_SECONDS:
            _log.warning(
                "the shared request budget was %.0f s ahead of this clock (written by another clock: a reboot, a "
                "clock stepped back); started afresh",
                wait,
            )
            self.schedule.restart()
            wait = self.schedule.claim(self._interval)
        return min(max(wait, 0.0), LONGEST_WAIT_SECONDS)

    def release(self) -> None:
        self._local.release()

    def slow_down(self) -> None:
        self._local.slow_down()
        self.schedule.hold(self._interval)  # every process skips one start: the key was too fast

    def hold(self, seconds: float) -> None:
        seconds = min(seconds, LONGEST_WAIT_SECONDS)
        self._local.hold(seconds)
        self.schedule.hold(seconds)

    def note_remaining(self, remaining: int) -> None:
        """Share the X-Exl-Api-Remaining this process saw (at most every few seconds, always near the floor)."""
        now = self._monotonic()
        with self._lock:
            due = now - self._noted_at >= REMAINING_WRITE_SECONDS or remaining < 2 * self._floor
            if due:
                self._noted_at = now
        if due:
            self.schedule.note_remaining(remaining)

    def shared_remaining(self) -> int | None:
        return self.schedule.remaining()


def shared_gate(
    database_url: str,
    engine: Engine | None,
    api_key: str,
    rate: float,
    *,
    floor: int = 0,
    sleep: Callable[[float], None] = time.sleep,
) -> SharedGate | None:
    """The shared gate for a database: PostgreSQL's table, or a file beside a SQLite database (None for
    an in-memory database: nobody else can share it)."""
    url = make_url(database_url)
    key = key_hash(api_key)
    schedule: Schedule
    if url.get_backend_name() == "sqlite":
        if not url.database or url.database == ":memory:":
            return None
        path = Path(url.database).expanduser().resolve()
        schedule = FileSchedule(path.with_name(f"{path.name}.budget-{key[:16]}"))
    elif url.get_backend_name() == "postgresql" and engine is not None:
        schedule = DatabaseSchedule(engine, key)
    else:
        return None
    return SharedGate(schedule, rate, sleep=sleep, floor=floor)
