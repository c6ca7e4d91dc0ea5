"""Clocks for tests: no real time passes."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta


class FakeClock:
    """A clock that only moves when someone sleeps (or a test advances it). Thread-safe."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 2, 2, 15, 0, 0, tzinfo=UTC)
        self._lock = threading.Lock()
        self.slept = 0.0

    def __call__(self) -> datetime:
        with self._lock:
            return self._now

    def sleep(self, seconds: float) -> None:
        self.advance(max(seconds, 0.0))
        self.slept += max(seconds, 0.0)

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += timedelta(seconds=seconds)


class MonotonicClock:
    """A fake ``time.monotonic`` with its ``sleep``: sleeping advances time at once and is recorded."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
