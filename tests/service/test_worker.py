"""``hwf resume --all --follow``: the unattended worker, on the simulator and a fake clock.

It drives every set to verified, rides out an Alma outage (saying so in the workers table that
``hwf status`` shows), goes on by itself after the daily quota resets, stops on request with its
leases released, and re-verifies verified sets (a handle that breaks later is a regression).
"""

from __future__ import annotations

import dataclasses
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from orchestrator.config import Config
from orchestrator.errors import ConfigError
from orchestrator.service import preflight, views, worker, workflow
from orchestrator.service.context import Context
from orchestrator.simulator import Scenario, Simulator
from orchestrator.store.models import AlmaSet, Event, Record, Worker
from tests.support import FakeClock, alma_limits, make_context, make_set, parsed_config


@pytest.fixture
def scenario() -> Scenario:
    return alma_limits()


def _config(tmp_path: Path, handles: dict[str, Any] | None = None, **alma: Any) -> Config:
    handles = handles or {"recheck_days": 0}
    return parsed_config(tmp_path, poll_interval_seconds=15, handles=handles, **alma)


def _sets(ctx: Context, sim: Simulator, n: int, size: int = 3) -> list[str]:
    ids = []
    for i in range(n):
        alma_id = make_set(sim, size, name=f"Worker {i}", seed=i + 1)
        workflow.add_set(ctx, alma_id)
        ids.append(alma_id)
    return ids


def _states(ctx: Context) -> dict[str, str]:
    return {s.set: s.state for s in views.status(ctx)}


def _events(ctx: Context, kind: str) -> list[Event]:
    with ctx.sessions() as session:
        return list(session.scalars(select(Event).where(Event.kind == kind)))


def test_follow_drives_every_set_to_verified_and_leaves_a_stopped_worker(
    tmp_path: Path, sim: Simulator, clock: FakeClock
) -> None:
    ctx = make_context(_config(tmp_path), sim, clock)
    ids = _sets(ctx, sim, 4)
    summary = worker.follow(ctx, worker.StopFlag(), until_idle=True)
    assert set(_states(ctx).values()) == {"verified"}, _states(ctx)
    assert summary.verified == 4 and summary.attention == [] and summary.stopped is None
    assert all(len(sim.runs_for(i)) == 2 for i in ids)  # every step ran once
    [w] = worker.workers(ctx)
    assert w.state == "stopped" and "4 verified" in (w.reason or "")
    with ctx.sessions() as session:
        assert session.scalars(select(AlmaSet.lease_owner).where(AlmaSet.lease_owner.is_not(None))).all() == []


def test_stop_request_ends_the_worker_with_leases_released_and_a_summary(
    tmp_path: Path, sim: Simulator, clock: FakeClock
) -> None:
    stop = worker.StopFlag()
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        clock.sleep(seconds)
        if len(sleeps) == 3:
            stop.set("SIGTERM")

    ctx = make_context(_config(tmp_path), sim, clock, sleep=sleep)
    _sets(ctx, sim, 3)
    summary = worker.follow(ctx, stop)
    assert summary.stopped == "SIGTERM"
    assert "stopped: SIGTERM" in worker.describe(summary)
    assert "verified" not in set(_states(ctx).values())  # it stopped mid-run
    with ctx.sessions() as session:
        assert session.scalars(select(AlmaSet.lease_owner).where(AlmaSet.lease_owner.is_not(None))).all() == []
        assert session.get_one(Worker, "test-host:1").state == "stopped"
    # Started again, it finishes (each step still submitted once).
    again = worker.follow(make_context(_config(tmp_path), sim, clock), worker.StopFlag(), until_idle=True)
    assert again.verified == 3
    assert all(len(sim.runs_for(s)) == 2 for s in _states(ctx))


def test_an_alma_outage_is_ridden_out_and_shown_as_the_workers_waiting_reason(
    tmp_path: Path, sim: Simulator, clock: FakeClock
) -> None:
    ctx0 = make_context(_config(tmp_path), sim, clock)
    _sets(ctx0, sim, 2)
    sim.faults.alma_get_500_rate = 1.0  # Alma answers 500 to every GET: an outage
    outage_ends = clock() + timedelta(hours=1)
    seen: list[str] = []

    def sleep(seconds: float) -> None:
        clock.sleep(seconds)
        if clock() >= outage_ends:
            sim.faults.alma_get_500_rate = 0.0
        seen.extend(w.reason or "" for w in worker.workers(ctx0) if w.state == "waiting")

    ctx = make_context(_config(tmp_path, max_retries=1), sim, clock, sleep=sleep)
    summary = worker.follow(ctx, worker.StopFlag(), until_idle=True)
    assert set(_states(ctx).values()) == {"verified"}
    assert summary.outages >= 1
    assert any(r.startswith("Alma outage:") and "trying again at" in r for r in seen), seen


def test_a_short_alma_outage_shows_in_the_workers_row_not_running(
    tmp_path: Path, sim: Simulator, clock: FakeClock
) -> None:
    """40 s of 500s: too short for the scheduler to give up on Alma, long enough to show. The row says
    "Alma outage" while every set fails, and no longer once they move."""
    ctx0 = make_context(_config(tmp_path), sim, clock)
    _sets(ctx0, sim, 2)
    sim.faults.alma_get_500_rate = 1.0
    outage_ends = clock() + timedelta(seconds=40)
    seen: list[tuple[str, str]] = []

    def sleep(seconds: float) -> None:
        seen.extend((w.state, w.reason or "") for w in worker.workers(ctx0))
        clock.sleep(seconds)
        if clock() >= outage_ends:
            sim.faults.alma_get_500_rate = 0.0

    ctx = make_context(_config(tmp_path, max_retries=1), sim, clock, sleep=sleep)
    summary = worker.follow(ctx, worker.StopFlag(), until_idle=True)
    assert set(_states(ctx).values()) == {"verified"}
    assert summary.outages == 0  # ridden out inside the scheduler's passes
    during = [i for i, (state, reason) in enumerate(seen) if state == "waiting" and reason.startswith("Alma outage:")]
    assert during, seen
    assert "trying again at" in seen[during[0]][1] and "500" in seen[during[0]][1], seen[during[0]]
    after = seen[during[-1] + 1 :]
    assert after and not any(reason.startswith("Alma outage:") for _, reason in after), seen  # it said so once over


def test_a_stopped_workers_row_says_stopped_once(tmp_path: Path, sim: Simulator, clock: FakeClock) -> None:
    ctx = make_context(_config(tmp_path), sim, clock)
    _sets(ctx, sim, 1)
    stop = worker.StopFlag()
    stop.set("SIGTERM")
    worker.follow(ctx, stop)
    [row] = worker.workers(ctx)
    assert row.text().count("stopped") == 1 and "stopped: SIGTERM after" in row.text(), row.text()


def test_the_worker_goes_on_by_itself_after_the_daily_quota_resets(
    tmp_path: Path, sim: Simulator, clock: FakeClock
) -> None:
    config = _config(tmp_path, daily_call_floor=10, quota_reset="00:00", timezone="UTC")
    ctx = make_context(config, sim, clock)
    _sets(ctx, sim, 2)
    sim.faults.daily_remaining = 5  # under the floor: hwf stops new work until Alma's reset
    summary = worker.follow(ctx, worker.StopFlag(), until_idle=True)
    assert set(_states(ctx).values()) == {"verified"}
    assert summary.quota_resets >= 1
    [reset, *_] = _events(ctx, "quota-reset")
    assert reset.at >= datetime(2026, 2, 3, 0, 5, tzinfo=UTC)  # after the reset, plus the margin
    assert "00:00 UTC" in reset.detail and reset.actor  # who acted: the operator (here the OS user)


def test_next_quota_reset_in_the_institution_time_zone() -> None:
    at = datetime(2026, 3, 7, 12, 0, tzinfo=UTC)  # Chicago: 06:00 CST; DST starts on 8 March
    assert worker.next_quota_reset(at, "00:00", "America/Chicago") == datetime(2026, 3, 8, 6, 0, tzinfo=UTC)
    at = datetime(2026, 3, 8, 12, 0, tzinfo=UTC)  # now CDT (UTC-5)
    assert worker.next_quota_reset(at, "00:00", "America/Chicago") == datetime(2026, 3, 9, 5, 0, tzinfo=UTC)
    assert worker.next_quota_reset(at, "13:30", "UTC") == datetime(2026, 3, 8, 13, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("timezone", "Mars/Olympus", "unknown time zone 'Mars/Olympus'"),
        ("quota_reset", "25:00", "HH:MM"),
        ("quota_reset", "midnight", "HH:MM"),
        ("shared_budget", "yes", "true or false"),
    ],
)
def test_bad_quota_reset_and_time_zone_are_named(tmp_path: Path, key: str, value: str, words: str) -> None:
    with pytest.raises(ConfigError) as raised:
        _config(tmp_path, **{key: value})
    assert f"alma.{key}" in str(raised.value) and words in str(raised.value)


def test_reverification_reports_a_regression_once_keeps_verified_and_records_the_repair(
    tmp_path: Path, sim: Simulator, clock: FakeClock
) -> None:
    config = _config(tmp_path, handles={"recheck_days": 0.01, "recheck_requests_per_second": 5})  # 14.4 minutes
    ctx = make_context(config, sim, clock)
    [alma_id] = _sets(ctx, sim, 1, size=8)
    worker.follow(ctx, worker.StopFlag(), until_idle=True)
    [row] = [s for s in views.status(ctx) if s.set == alma_id]
    assert row.state == "verified" and row.last_checked is not None
    assert row.as_json()["last_checked"].endswith("Z")
    with ctx.sessions() as session:
        records = session.execute(select(Record.mms_id, Record.handle).order_by(Record.id)).all()
    broken = records[:6]
    for _mms_id, handle in broken:  # six handles now land on another record
        sim.misregister(handle, records[7].mms_id)

    def follow_for(days: float) -> worker.WorkerSummary:
        stop = worker.StopFlag()
        end = clock() + timedelta(days=days)

        def sleep(seconds: float) -> None:
            clock.sleep(seconds)
            if clock() >= end:
                stop.set("test")

        return worker.follow(make_context(config, sim, clock, sleep=sleep), stop)

    first = follow_for(0.025)  # two recheck periods: the regression is reported once
    assert first.rechecked >= 2 and first.regressions == 1
    [row] = [s for s in views.status(ctx) if s.set == alma_id]
    assert row.state == "verified"
    assert row.attention is not None and row.attention.startswith("regression: 6 handles")
    assert all(m in row.attention for m, _ in broken[:5]) and broken[5][0] not in row.attention
    assert "+1 more" in row.attention
    assert len(_events(ctx, "regression")) == 1
    for mms_id, handle in broken:
        sim.register_handle(handle, sim.primo_url(mms_id))
    follow_for(0.012)
    [row] = [s for s in views.status(ctx) if s.set == alma_id]
    assert row.state == "verified" and row.attention is None
    assert len(_events(ctx, "regression-repaired")) == 1 and len(_events(ctx, "regression")) == 1


def test_stale_handles_are_checked_again_by_the_worker_just_after_the_public_cache_expires(
    tmp_path: Path, scenario: Scenario, clock: FakeClock
) -> None:
    sim = Simulator(dataclasses.replace(scenario, proxy_cache_ttl=3600), clock=clock)
    config = _config(tmp_path)  # the periodic re-verification is off: only the stale re-check runs
    ctx = make_context(config, sim, clock)
    [alma_id] = _sets(ctx, sim, 1, size=6)
    preflight.check_set(ctx, alma_id)  # the records' handles, as the integration will register them
    with ctx.sessions() as session:
        handles = list(session.scalars(select(Record.handle).order_by(Record.id)))
    with httpx.Client(transport=httpx.MockTransport(sim.handle)) as http:
        for handle in handles[:2]:  # looked up before the integration: the public proxy caches "not registered"
            http.get(f"{config.handles.resolver_url}/api/handles/{handle}", params={"type": "URL"})
    first = worker.follow(ctx, worker.StopFlag(), until_idle=True)  # verified; the re-check is a day away
    assert first.stale_rechecked == 0
    [row] = views.status(ctx)
    assert row.state == "verified" and row.wait_until is not None
    assert row.waiting == f"re-check of 2 stale handles at {row.wait_until.strftime('%Y-%m-%d %H:%M UTC')}"
    expiry = row.wait_until
    assert timedelta(hours=23) < expiry - clock() <= timedelta(hours=24, minutes=1)  # no TTL in a 404: 24 h

    reasons: list[str | None] = []

    def follow_until(end: datetime) -> worker.WorkerSummary:
        stop = worker.StopFlag()

        def sleep(seconds: float) -> None:
            reasons.append(worker.workers(ctx)[-1].reason)
            clock.sleep(seconds)
            if clock() >= end:
                stop.set("test")

        return worker.follow(make_context(config, sim, clock, sleep=sleep), stop)  # a new worker each time

    clock.advance((expiry - clock()).total_seconds() - 300)  # a day passes (the worker looks every minute)
    assert follow_until(expiry - timedelta(seconds=30)).stale_rechecked == 0  # not before the expiry
    requests = sim.stats["requests"].get("handles_api", 0)
    later = follow_until(expiry + timedelta(minutes=5))
    assert later.stale_rechecked == 1
    assert f"{row.waiting} (when the public proxy's cache expires)" in reasons  # the worker says why it waits
    assert sim.stats["requests"].get("handles_api", 0) - requests == 2  # one public request per handle
    with ctx.sessions() as session:
        assert set(session.scalars(select(Record.verdict))) == {"OK"}
        assert set(session.scalars(select(Record.stale_until))) == {None}
    [event] = _events(ctx, "stale-recheck")
    assert expiry <= event.at.replace(tzinfo=UTC) < expiry + timedelta(minutes=2)
    [row] = views.status(ctx)
    assert row.waiting is None and row.attention is None


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--until-idle"], "--until-idle goes with --follow"),
        (["--follow", "--no-wait"], "cannot be combined"),
        (["--follow", "--dry-run"], "cannot be combined"),
    ],
)
def test_follow_options_that_do_not_go_together_exit_2(args: list[str], words: str) -> None:
    from typer.testing import CliRunner

    from orchestrator.cli import app

    result = CliRunner().invoke(app, ["resume", "--all", *args])
    assert result.exit_code == 2 and words in result.output
    assert "Traceback" not in result.output


def _count_passes(ctx: Context, config: Config, sim: Simulator, clock: FakeClock, hours: float, **follow: Any) -> Any:
    """Run the worker for ``hours`` of the fake clock (or until it has slept 500 times: a spin), noting, at every
    sleep, the worker's waiting reason and each set's attention; returns its summary and what was shown when."""
    stop = worker.StopFlag()
    end = clock() + timedelta(hours=hours)
    sleeps: list[float] = []
    shown: list[tuple[datetime, str]] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        clock.sleep(seconds)
        shown.extend((clock(), w.reason or "") for w in worker.workers(ctx) if w.state == "waiting")
        shown.extend((clock(), s.attention) for s in views.status(ctx) if s.attention)
        if clock() >= end or len(sleeps) >= 500:
            stop.set("test")

    summary = worker.follow(make_context(config, sim, clock, sleep=sleep), stop, **follow)
    return summary, shown


_MOMENT = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}(:\d{2})? UTC")


def test_an_idle_worker_over_a_spent_quota_wakes_a_handful_of_times_and_never_shows_a_past_reset(
    tmp_path: Path, sim: Simulator, clock: FakeClock
) -> None:
    # The reset is midnight in Chicago: 06:00 UTC, 15 hours after the fake clock's 15:00 UTC.
    config = _config(tmp_path, daily_call_floor=10, quota_reset="00:00", timezone="America/Chicago")
    ctx = make_context(config, sim, clock)
    first, _second = _sets(ctx, sim, 2)
    workflow.advance(ctx, first, wait=False)  # its job runs: a poll falls due while the quota is spent
    sim.faults.daily_remaining = 5  # under the floor: no set may call Alma until the reset
    summary, shown = _count_passes(ctx, config, sim, clock, hours=14)  # 15:00 to 05:00 UTC: before the reset
    assert summary.passes <= 20, f"{summary.passes} passes over a 14-hour quota wait"
    assert any("quota is spent" in text for _, text in shown), shown[-3:]
    for at, text in shown:  # the worker's line and the sets' attention: never a reset time already past
        for moment in _MOMENT.finditer(text):
            when = datetime.strptime(moment.group(0)[:16], "%Y-%m-%d %H:%M").replace(tzinfo=UTC)
            assert when >= at - timedelta(minutes=1), (at, text)


def test_the_pass_that_finds_the_quota_spent_says_so_and_sleeps_to_the_reset(
    tmp_path: Path, sim: Simulator, clock: FakeClock
) -> None:
    """The first wait after the pass that met the spent quota is the quota's, not "nothing can move now" for a
    minute (one set: nothing else to look at)."""
    config = _config(tmp_path, daily_call_floor=10, quota_reset="00:00", timezone="America/Chicago")
    ctx = make_context(config, sim, clock)
    (only,) = _sets(ctx, sim, 1)
    workflow.advance(ctx, only, wait=False)
    sim.faults.daily_remaining = 5
    summary, shown = _count_passes(ctx, config, sim, clock, hours=0.01)
    waits = [text for _, text in shown if "looking again" in text]
    assert waits and waits[0].startswith("Alma's daily quota is spent; it resets about 2026-"), waits[:2]
    assert summary.passes == 1


def test_a_worker_with_only_is_not_woken_by_another_sets_poll(tmp_path: Path, sim: Simulator, clock: FakeClock) -> None:
    config = _config(tmp_path)
    ctx = make_context(config, sim, clock)
    outside, mine = _sets(ctx, sim, 2)
    workflow.advance(ctx, outside, wait=False)  # another set's job: its polls fall due, but not for this worker
    summary, _ = _count_passes(ctx, config, sim, clock, hours=1, only="Worker 1")
    assert _states(ctx)[mine] == "verified" and _states(ctx)[outside] != "verified"
    assert summary.passes <= 70, f"{summary.passes} passes in an hour"  # one a minute at most, when idle
