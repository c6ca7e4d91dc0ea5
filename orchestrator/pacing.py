"""Pacing requests, for Alma and for the handle resolver alike: one rate gate (request starts spaced
``1/rate`` apart, the rate halved when the server says 429 and recovering slowly: AIMD; every caller
paused at once by ``hold``; optionally a cap on the requests any one-second window at the server can see,
however threads or the network delay them: see WINDOW_SECONDS), the one full-jitter exponential backoff,
and the one ``Retry-After`` parser.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Protocol, runtime_checkable

import httpx

# The longest a set waits when Alma's Retry-After asks for more than hwf waits in place: a hostile or
# mistaken ``Retry-After: 86400`` puts one set off for an hour at most, never the process.
LONGEST_SET_WAIT_SECONDS = 3600.0
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
# With ``window=True``, a request also holds one of ``floor(requests_per_second)`` places from its turn until
# one second after its reply: however it was delayed, the server saw it inside that span, so no one-second
# window there can hold more requests than there are places.
WINDOW_SECONDS = 1.0


@runtime_checkable
class RateGate(Protocol):
    """What a client needs of a rate gate: ``TokenBucket`` here, or ``store.budget.SharedGate`` (one
    budget for every process sharing an Alma key)."""

    def current_rate(self, now: float | None = None) -> float: ...

    def reserve(self) -> float: ...

    def acquire(self) -> float: ...

    def release(self) -> None: ...

    def slow_down(self) -> None: ...

    def hold(self, seconds: float) -> None: ...


@runtime_checkable
class SharesRemaining(Protocol):
    """A gate that also shares the daily quota count (X-Exl-Api-Remaining) between processes."""

    def note_remaining(self, remaining: int) -> None: ...

    def shared_remaining(self) -> int | None: ...


def backoff_delay(attempt: int, jitter: float, *, base: float = BACKOFF_BASE, cap: float = BACKOFF_CAP) -> float:
    """Full-jitter exponential backoff: ``jitter`` (0..1) times min(cap, base * 2**attempt)."""
    return jitter * min(cap, base * 2.0 ** min(attempt, 32))


class TokenBucket:
    """A thread-safe rate gate of capacity one (a virtual schedule of request starts).

    Each caller reserves the next start under a lock and sleeps outside it, so there is no busy wait.
    ``slow_down`` halves the rate (recovering linearly, AIMD); ``hold`` lets no request start for a while.
    A rate of ``inf`` (or ``None``) never waits, except for a hold.
    """

    def __init__(
        self,
        rate: float | None,
        monotonic: Callable[[], float],
        sleep: Callable[[float], None],
        *,
        pacing: float = PACING,
        window: bool = False,
    ) -> None:
        rate = math.inf if rate is None else rate
        if not rate > 0:
            raise ValueError(f"requests_per_second must be positive, not {rate!r}")
        self._unlimited = math.isinf(rate)
        rate = rate if self._unlimited else rate * pacing
        self._base = rate
        self._floor = min(rate, max(rate / 8, 0.5))
        self._monotonic, self._sleep = monotonic, sleep
        self._lock = threading.Lock()
        self._next = float("-inf")
        self._hold_until = float("-inf")
        self._cut_rate = rate
        self._cut_at: float | None = None
        self._places = max(1, math.floor(rate / pacing + 1e-9)) if window and not self._unlimited else 0
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

    def reserve(self) -> float:
        """Reserve the next start; return how long the caller must wait for it (no sleeping)."""
        with self._lock:
            now = self._monotonic()
            start = max(now, self._next, self._hold_until)
            if not self._unlimited:
                self._next = start + 1.0 / self.current_rate(start)
        return start - now

    def acquire(self) -> float:
        """Wait (outside the lock) until the caller may start a request; return the time waited.

        With ``window=True`` every ``acquire`` must be followed by one ``release`` once the request's reply
        (or failure) is in.
        """
        if self._unlimited and self._hold_until == float("-inf"):
            return 0.0
        wait = self.reserve()
        if wait > 0:
            self._sleep(wait)
        return max(wait, 0.0) + self._take_place()

    def _take_place(self) -> float:
        waited = 0.0
        while self._places:
            with self._lock:
                now = self._monotonic()
                while self._ended and now - self._ended[0] >= WINDOW_SECONDS:
                    self._ended.popleft()
                if self._in_flight + len(self._ended) < self._places:
                    self._in_flight += 1
                    return waited
                # Every place is taken by a request in flight or answered less than a second ago.
                wait = self._ended[0] + WINDOW_SECONDS - now if self._ended else 1.0 / self._base
            wait = max(wait, 0.001)
            self._sleep(wait)
            waited += wait
        return waited

    def release(self) -> None:
        """The request of the last ``acquire`` has its reply (or failed): its place frees in a second."""
        if not self._places:
            return
        with self._lock:
            self._in_flight = max(0, self._in_flight - 1)
            self._ended.append(self._monotonic())

    def slow_down(self) -> None:
        """The server said we are too fast: halve the current rate and drop any saved-up start."""
        if self._unlimited:
            return
        with self._lock:
            now = self._monotonic()
            rate = self.current_rate(now)
            if self._cut_at is not None and now - self._cut_at < CUT_WINDOW_SECONDS:
                return
            self._cut_rate = max(self._floor, rate / 2)
            self._cut_at = now
            self._next = max(self._next, now + 1.0 / self._cut_rate)

    def hold(self, seconds: float) -> None:
        """Let no request start for ``seconds`` from now (after a Retry-After, or an outage)."""
        with self._lock:
            self._hold_until = max(self._hold_until, self._monotonic() + seconds)


def retry_after_seconds(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` value (delta-seconds or an HTTP date), or None when absent or unreadable."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def retry_after(response: httpx.Response) -> float | None:
    """Seconds the server asks us to wait before the next request, if it says."""
    return retry_after_seconds(response.headers.get("retry-after"))
