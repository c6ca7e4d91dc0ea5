"""Tests for orchestrator.pacing: the rate gate (token bucket), backoff and the Retry-After parser."""

from __future__ import annotations

import pytest

from orchestrator import pacing as alma_throttle
from orchestrator.pacing import TokenBucket
from orchestrator.pacing import retry_after_seconds as _retry_after
from tests.support.clock import MonotonicClock as Clock


def test_retry_after_parsing() -> None:
    assert _retry_after("7") == 7.0
    assert _retry_after(" 1.5 ") == 1.5
    assert _retry_after(None) is None
    assert _retry_after("soon") is None
    assert _retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past


# ---------------------------------------------------------------------------------------------
# Rate limiter


def test_rate_limiter_spaces_requests_and_holds() -> None:
    now = [100.0]
    limiter = TokenBucket(20.0, lambda: now[0], lambda s: None, pacing=1.0)
    waits = [limiter.reserve() for _ in range(5)]
    assert waits == pytest.approx([0.0, 0.05, 0.10, 0.15, 0.20])
    now[0] += 10.0
    assert limiter.reserve() == 0.0
    limiter.hold(3.0)
    assert limiter.reserve() == pytest.approx(3.0)


def test_rate_limiter_without_rate_never_waits() -> None:
    limiter = TokenBucket(None, lambda: 0.0, lambda s: None)
    assert [limiter.acquire() for _ in range(100)] == [0.0] * 100


def test_backoff_is_full_jitter_and_capped():
    assert alma_throttle.backoff_delay(0, 1.0) == 1.0
    assert alma_throttle.backoff_delay(3, 1.0) == 8.0
    assert alma_throttle.backoff_delay(10, 1.0) == 30.0
    assert alma_throttle.backoff_delay(2, 0.5) == 2.0
    assert alma_throttle.backoff_delay(10_000, 0.0) == 0.0


def test_rate_is_halved_on_429_and_recovers_slowly():
    clock = Clock()
    bucket = alma_throttle.TokenBucket(10.0, clock.monotonic, clock.sleep)
    full = 10.0 * alma_throttle.PACING
    bucket.slow_down()
    assert bucket.current_rate() == pytest.approx(full / 2)
    bucket.slow_down()  # the same burst of 429s: one cut per window
    assert bucket.current_rate() == pytest.approx(full / 2)
    clock.now += alma_throttle.CUT_WINDOW_SECONDS
    bucket.slow_down()
    assert bucket.current_rate() == pytest.approx(full / 4, abs=0.1)
    clock.now += alma_throttle.RECOVERY_SECONDS / 10
    assert bucket.current_rate() == pytest.approx(full / 4 + full / 10, abs=0.1)
    clock.now += alma_throttle.RECOVERY_SECONDS
    assert bucket.current_rate() == pytest.approx(full)


def test_rate_never_falls_below_an_eighth():
    clock = Clock()
    bucket = alma_throttle.TokenBucket(10.0, clock.monotonic, clock.sleep)
    for _ in range(20):
        bucket.slow_down()
        clock.now += alma_throttle.CUT_WINDOW_SECONDS
    assert bucket.current_rate() >= 10.0 / 8
