"""Verification asks the public proxy first and the primary handle server (auth=true) only when the public
answer is not right: a handle right at the primary but stale in the proxy's cache is STALE_CACHE with the time
the cache expires, not WRONG_TARGET, and the set is verified; a right handle costs one request."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from orchestrator.cli import base as cli
from orchestrator.config import PrimoConfig
from orchestrator.domain.handles import VERIFIED, Verdict, stale_cache_detail, stale_cache_expiry
from orchestrator.resolver import Verifier, VerifyItem
from orchestrator.simulator import Scenario, Simulator
from tests.support import API_KEY, FakeClock, WiredRunner, make_set, sim_wiring, write_config

RESOLVER = "http://alma.test"
PRIMO = PrimoConfig(domain="grinnell.primo.exlibrisgroup.com", view="01GCL_INST:GCL")
HANDLE, MMS = "11084/1", "991011546573204641"


def _public(sim: Simulator, handle: str) -> None:
    with httpx.Client(transport=httpx.MockTransport(sim.handle)) as http:
        http.get(f"{RESOLVER}/api/handles/{handle}", params={"type": "URL"})


def _verify(sim: Simulator, **kwargs: object):
    requests: list[httpx.Request] = []

    def proxy(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return sim.handle(request)

    with Verifier(RESOLVER, PRIMO, transport=httpx.MockTransport(proxy), requests_per_second=None, **kwargs) as v:  # type: ignore[arg-type]
        (result,) = list(v.verify([VerifyItem(MMS, HANDLE)]))
    return result, requests


def _no_sleep(seconds: float) -> None:
    """No real backoff in a unit test."""


@pytest.fixture
def cached_sim(clock: FakeClock) -> Simulator:
    sim = Simulator(Scenario(proxy_cache_ttl=3600, per_second_limit=0, primo_domain=PRIMO.domain), clock=clock)
    sim.register_handle(HANDLE, "https://legacy.example.org/islandora/object/grinnell:1")
    _public(sim, HANDLE)  # the proxy caches the legacy URL
    clock.advance(60)
    sim.register_handle(HANDLE, PRIMO.record_url(MMS))  # the integration writes the right one
    return sim


def test_stale_cache_is_its_own_verdict_with_its_expiry(cached_sim: Simulator, clock: FakeClock) -> None:
    result, requests = _verify(cached_sim)
    assert result.verdict is Verdict.STALE_CACHE and result.verdict in VERIFIED
    assert result.resolved_url == PRIMO.record_url(MMS)  # what the primary server holds
    assert [r.url.params.get("auth") for r in requests] == [None, "true"]  # public, then authoritative
    assert "legacy.example.org" in (result.detail or "")
    # The cache was filled before the value changed (clock() now), and the value's TTL is 24 h.
    expires = clock() + timedelta(hours=24)
    assert f"until {expires.strftime('%Y-%m-%d %H:%M UTC')} at the latest" in (result.detail or "")
    assert result.stale_until is not None and abs((result.stale_until - expires).total_seconds()) < 60


def test_a_right_public_answer_is_ok_after_one_request(cached_sim: Simulator, clock: FakeClock) -> None:
    clock.advance(3601)  # the proxy's cached value has expired: it serves the new one
    result, requests = _verify(cached_sim)
    assert result.verdict is Verdict.OK and result.detail is None and result.stale_until is None
    assert [r.url.params.get("auth") for r in requests] == [None]


def test_wrong_at_the_primary_gives_the_primary_verdict(clock: FakeClock) -> None:
    sim = Simulator(Scenario(proxy_cache_ttl=3600, per_second_limit=0), clock=clock)
    sim.register_handle(HANDLE, "https://legacy.example.org/x")
    result, requests = _verify(sim)
    assert result.verdict is Verdict.WRONG_TARGET and result.stale_until is None
    assert [r.url.params.get("auth") for r in requests] == [None, "true"]


def test_authoritative_asks_the_primary_for_every_handle(cached_sim: Simulator, clock: FakeClock) -> None:
    result, requests = _verify(cached_sim, authoritative=True)
    assert result.verdict is Verdict.STALE_CACHE
    assert [r.url.params.get("auth") for r in requests] == ["true", None]  # primary, then what the public sees
    clock.advance(3601)
    result, requests = _verify(cached_sim, authoritative=True)
    assert result.verdict is Verdict.OK and [r.url.params.get("auth") for r in requests] == ["true", None]


def test_authoritative_sees_a_wrong_primary_the_public_cache_hides(clock: FakeClock) -> None:
    sim = Simulator(Scenario(proxy_cache_ttl=3600, per_second_limit=0, primo_domain=PRIMO.domain), clock=clock)
    sim.register_handle(HANDLE, PRIMO.record_url(MMS))
    _public(sim, HANDLE)  # the proxy caches the right URL
    sim.register_handle(HANDLE, "https://legacy.example.org/x")  # then the value is overwritten
    assert _verify(sim)[0].verdict is Verdict.OK  # the public answer: what a patron sees for the next hour
    result, requests = _verify(sim, authoritative=True)
    assert result.verdict is Verdict.WRONG_TARGET and len(requests) == 1


def test_public_check_off_asks_only_the_primary(cached_sim: Simulator) -> None:
    result, requests = _verify(cached_sim, check_public=False)
    assert result.verdict is Verdict.OK and [r.url.params.get("auth") for r in requests] == ["true"]


def test_a_public_proxy_that_fails_leaves_the_primary_verdict(clock: FakeClock) -> None:
    sim = Simulator(Scenario(per_second_limit=0, primo_domain=PRIMO.domain), clock=clock)
    sim.register_handle(HANDLE, PRIMO.record_url(MMS))

    def flaky(request: httpx.Request) -> httpx.Response:
        if request.url.params.get("auth") != "true":
            return httpx.Response(503, json={"responseCode": 3})
        return sim.handle(request)

    transport = httpx.MockTransport(flaky)
    with Verifier(RESOLVER, PRIMO, transport=transport, requests_per_second=None, retries=1, sleep=_no_sleep) as v:
        (result,) = list(v.verify([VerifyItem(MMS, HANDLE)]))
    assert result.verdict is Verdict.OK and "public proxy not checked" in (result.detail or "")
    assert result.attempts == 3  # two public attempts, one authoritative


@pytest.mark.parametrize(
    ("ttl", "timestamp", "hours"),
    [(3600, None, 1), (None, None, 24), ("soon", "not a time", 24), (-5, "", 24), (7200, "2026-02-02T14:00:00Z", 1)],
)
def test_expiry_from_a_tolerantly_read_reply(clock: FakeClock, ttl: object, timestamp: object, hours: float) -> None:
    """The public proxy's cached value is wrong, the primary's is right: the expiry comes from the value's ttl
    (seconds) from its timestamp, 24 hours when either is missing or unreadable."""

    def proxy(request: httpx.Request) -> httpx.Response:
        right = request.url.params.get("auth") == "true"
        value: dict[str, object] = {
            "index": 1,
            "type": "URL",
            "data": {"format": "string", "value": PRIMO.record_url(MMS) if right else "https://legacy.example.org/"},
        }
        if ttl is not None:
            value["ttl"] = ttl
        if timestamp is not None and right:
            value["timestamp"] = timestamp
        return httpx.Response(200, json={"responseCode": 1, "handle": HANDLE, "values": [value]})

    with Verifier(RESOLVER, PRIMO, transport=httpx.MockTransport(proxy), requests_per_second=None) as v:
        started = datetime.now(UTC)
        (result,) = list(v.verify([VerifyItem(MMS, HANDLE)]))
    assert result.verdict is Verdict.STALE_CACHE and result.stale_until is not None
    if isinstance(timestamp, str) and timestamp.startswith("2026-02-02"):  # in the past: ttl from the timestamp
        assert result.stale_until == datetime(2026, 2, 2, 16, 0, tzinfo=UTC)
    else:
        assert abs((result.stale_until - started).total_seconds() - hours * 3600) < 60


def test_expiry_rule() -> None:
    now = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    changed = now - timedelta(hours=2)
    assert stale_cache_expiry(now, changed, 3600) == changed + timedelta(hours=1)
    assert stale_cache_expiry(now, None, 3600) == now + timedelta(hours=1)
    assert stale_cache_expiry(now, now + timedelta(hours=5), None) == now + timedelta(hours=24)
    assert "NOT_REGISTERED" in stale_cache_detail(Verdict.NOT_REGISTERED, None, now)


def test_set_is_verified_and_the_report_says_which_wait_for_the_cache(
    tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim = Simulator(
        Scenario(
            proxy_cache_ttl=86400,
            per_second_limit=0,
            job_seconds={"copy": 30, "migration": 60, "integration": 45, "other": 10},
        ),
        clock=clock,
    )
    path = write_config(tmp_path, RESOLVER, preset="cli")
    monkeypatch.setenv("HWF_ALMA_API_KEY", API_KEY)
    runner = WiredRunner()
    seen: list[httpx.Request] = []  # what the handle proxy was asked

    def proxy(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return sim.handle(request)

    runner.wiring = sim_wiring(sim, clock, resolver_transport=httpx.MockTransport(proxy))
    set_id = make_set(sim, 6, name="Cached", seed=5)
    assert runner.invoke(cli.app, ["--config", str(path), "add", set_id]).exit_code == 0
    assert runner.invoke(cli.app, ["--config", str(path), "check", set_id]).exit_code == 0
    with sqlite3.connect(tmp_path / "hwf.db") as db:
        handles = [row[0] for row in db.execute("SELECT handle FROM records ORDER BY id")]
    assert all(handles)
    for handle in handles[:2]:  # someone looked these up before the integration: the proxy cached "unknown"
        _public(sim, handle)
    result = runner.invoke(cli.app, ["--config", str(path), "advance", set_id])
    assert result.exit_code == 0, result.output
    status = json.loads(runner.invoke(cli.app, ["--config", str(path), "status", set_id, "--json"]).stdout)
    assert status[0]["state"] == "verified"
    rows = json.loads(runner.invoke(cli.app, ["--config", str(path), "report", set_id, "--format", "json"]).stdout)
    stale = {r["handle"] for r in rows if r["verdict"] == "STALE_CACHE"}
    assert stale == set(handles[:2]) and all(r["verdict"] == "OK" for r in rows if r["handle"] not in stale)
    assert all("until" in r["detail"] and "NOT_REGISTERED" in r["detail"] for r in rows if r["handle"] in stale)
    problems = runner.invoke(cli.app, ["--config", str(path), "report", set_id, "--problems", "--format", "json"])
    assert json.loads(problems.stdout) == []
    for flags, public, primary in (([], 6, 2), (["--authoritative"], 6, 6)):
        seen.clear()  # by default the two stale ones are asked again; --authoritative asks the primary for all six
        assert runner.invoke(cli.app, ["--config", str(path), "verify", set_id, "--all", *flags]).exit_code == 0
        asked = [r.url.params.get("auth") for r in seen]
        assert (asked.count(None), asked.count("true")) == (public, primary), flags
