"""A hand-driven clock for tests and rehearsals: the simulator's notion of now, advanced on demand."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta


class ManualClock:
    """Call it for an aware UTC now; ``advance`` moves it. ``monotonic`` follows it, for rate limits."""

    def __init__(self, start: datetime | None = None) -> None:
        self._start = start or datetime(2025, 10, 5, 9, 11, 32, 592000, tzinfo=UTC)
        if self._start.tzinfo is None:
            raise ValueError("ManualClock needs an aware start time")
        self._now = self._start
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> datetime:
        """Move forward by ``seconds``; returns the new now."""
        with self._lock:
            self._now += timedelta(seconds=seconds)
            return self._now

    def set(self, moment: datetime) -> None:
        """Jump to ``moment`` (aware)."""
        with self._lock:
            self._now = moment.astimezone(UTC)

    def monotonic(self) -> float:
        """Seconds since the start, for ``Simulator(monotonic=...)``."""
        with self._lock:
            return (self._now - self._start).total_seconds()

    def sleep(self, seconds: float) -> None:
        """For ``Simulator(sleep=...)``: injected latency advances this clock instead of blocking."""
        self.advance(seconds)
