"""Pacing requests to Alma: a token bucket that halves its rate when Alma says 429 and recovers slowly
(AIMD), with a cap on the requests any one-second window at Alma can see however threads or the network delay
them (see WINDOW_SECONDS), the full-jitter exponential backoff between retries, and reading ``Retry-After``.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx

BACKOFF_BASE = 1.0
BACKOFF_CAP = 30.0
# After a 429 the rate is halved, then climbs back linearly: from 0 to the full rate in this many seconds.
RECOVERY_SECONDS = 120.0
# A burst of 429s answers requests that were already on their way: one cut per window, not one per reply,
# and never below an eighth of the configured rate (a 0.1 request/s crawl helps nobody).
CUT_WINDOW_SECONDS = 1.0
# Pace a little under the configured rate, one request at a time (no saved-up burst): a sliding one-second
# window then never sees more than ``requests_per_second`` (a bucket of capacity `rate` allowed twice that).
PACING = 0.95
# Threads sharing the bucket can be held up between their turn and their send (the GIL, a busy core), and a
# server can be held up before it counts what arrived: either way requests bunch where Alma counts them.
# Besides the bucket, a request holds one of ``floor(requests_per_second)`` places from its turn until one
# second after its reply: however it was delayed, Alma saw it inside that span, so no one-second window at
# Alma can hold more requests than there are places.
WINDOW_SECONDS = 1.0


def backoff_delay(attempt: int, jitter: float) -> float:
    """Full-jitter exponential backoff: ``jitter`` (0..1) times min(cap, base * 2**attempt)."""
    return jitter * min(BACKOFF_CAP, BACKOFF_BASE * 2.0 ** min(attempt, 32))


class TokenBucket:
    """A thread-safe token bucket whose rate is halved on demand and recovers linearly (AIMD)."""

    def __init__(self, rate: float, monotonic: Callable[[], float], sleep: Callable[[float], None]) -> None:
        if not rate > 0:
            raise ValueError(f"requests_per_second must be positive, not {rate!r}")
        self._unlimited = math.isinf(rate)
        rate = rate if self._unlimited else rate * PACING
        self._base = rate
        self._capacity = 1.0
        self._floor = min(rate, max(rate / 8, 0.5))
        self._monotonic, self._sleep = monotonic, sleep
        self._lock = threading.Lock()
        self._tokens = self._capacity
        self._last = monotonic()
        self._cut_rate = rate
        self._cut_at: float | None = None
        self._places = 0 if self._unlimited else max(1, math.floor(rate / PACING + 1e-9))
        self._in_flight = 0
        self._ended: deque[float] = deque()  # when each recent request's reply came, oldest first

    def current_rate(self, now: float | None = None) -> float:
        """The rate in force now: the base rate, or a cut rate on its way back up."""
        if self._cut_at is None:
            return self._base
        now = self._monotonic() if now is None else now
        rate = self._cut_rate + max(0.0, now - self._cut_at) * self._base / RECOVERY_SECONDS
        if rate >= self._base:
            self._cut_at = None
            return self._base
        return rate

    def _refill(self, now: float) -> float:
        rate = self.current_rate(now)
        self._tokens = min(self._capacity, self._tokens + max(0.0, now - self._last) * rate)
        self._last = now
        return rate

    def acquire(self) -> None:
        """Take one token, sleeping (outside the lock) until it is due, then a place (see WINDOW_SECONDS).

        Every ``acquire`` must be followed by one ``release`` once the request's reply (or failure) is in.
        """
        if self._unlimited:
            return
        with self._lock:
            rate = self._refill(self._monotonic())
            self._tokens -= 1.0
            wait = -self._tokens / rate if self._tokens < 0 else 0.0
        if wait > 0:
            self._sleep(wait)
        while True:
            with self._lock:
                now = self._monotonic()
                while self._ended and now - self._ended[0] >= WINDOW_SECONDS:
                    self._ended.popleft()
                if self._in_flight + len(self._ended) < self._places:
                    self._in_flight += 1
                    return
                # Every place is taken by a request in flight or answered less than a second ago.
                wait = self._ended[0] + WINDOW_SECONDS - now if self._ended else 1.0 / self._base
            self._sleep(max(wait, 0.001))

    def release(self) -> None:
        """The request of the last ``acquire`` has its reply (or failed): its place frees in a second."""
        if self._unlimited:
            return
        with self._lock:
            self._in_flight = max(0, self._in_flight - 1)
            self._ended.append(self._monotonic())

    def slow_down(self) -> None:
        """Alma said we are too fast: halve the current rate and drop any saved-up burst."""
        if self._unlimited:
            return
        with self._lock:
            now = self._monotonic()
            rate = self._refill(now)
            if self._cut_at is not None and now - self._cut_at < CUT_WINDOW_SECONDS:
                return
            self._cut_rate = max(self._floor, rate / 2)
            self._cut_at = now
            self._tokens = min(self._tokens, 0.0)


def retry_after(response: httpx.Response) -> float | None:
    """Seconds the server asks us to wait (``Retry-After`` as seconds or an HTTP date), if it says."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
