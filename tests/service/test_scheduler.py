"""``hwf resume --all`` as a scheduler within Alma's job limits, on the simulator and a virtual clock.

A small version of ``bench/schedule.py`` (6 sets, 2 jobs each) keeps the benchmark from rotting.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from bench.schedule import max_per_hour, max_running, schedule_bound
from orchestrator.cli import app
from orchestrator.config import Config, parse_config
from orchestrator.service import scheduler, views, workflow
from orchestrator.service.context import Context
from orchestrator.simulator import Scenario, Simulator
from orchestrator.store.models import AlmaSet
from tests.support import (
    API_KEY,
    FakeClock,
    alma_limits,
    config_dict,
    make_context,
    make_set,
    parsed_config,
    write_config,
)

JOB_SECONDS = 30.0


@pytest.fixture
def scenario() -> Scenario:
    return alma_limits(job_seconds=JOB_SECONDS)


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return parsed_config(tmp_path, poll_interval_seconds=15, poll_max_interval_seconds=300)


class Sleeps:
    """Records every sleep of the scheduler, then lets the fake clock move."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)
        self.clock.sleep(seconds)


@pytest.fixture
def sleeps(clock: FakeClock) -> Sleeps:
    return Sleeps(clock)


@pytest.fixture
def ctx(config: Config, sim: Simulator, clock: FakeClock, sleeps: Sleeps) -> Context:
    context = make_context(config, sim, clock, sleep=sleeps)
    yield context  # type: ignore[misc]
    context.close()


def add_sets(ctx: Context, sim: Simulator, count: int, profile: str = "clean") -> list[str]:
    ids = []
    for k in range(count):
        set_id = make_set(sim, 12, profile=profile, name=f"Batch {k + 1}", seed=k)
        workflow.add_set(ctx, set_id)
        ids.append(set_id)
    return ids


def test_six_sets_within_alma_limits_near_the_bound(
    ctx: Context, sim: Simulator, clock: FakeClock, sleeps: Sleeps
) -> None:
    add_sets(ctx, sim, 6)
    start = clock()
    summary = scheduler.resume_all(ctx)
    elapsed = (clock() - start).total_seconds()
    assert [r.outcome for r in summary.results] == [workflow.Outcome.VERIFIED] * 6
    assert summary.attention == [] and summary.skipped == []
    runs = sim.job_runs
    assert sorted(r.kind for r in runs) == ["integration"] * 6 + ["migration"] * 6
    assert max_running(runs, JOB_SECONDS) <= 3
    assert all(n <= 5 for n in max_per_hour(runs).values())
    bound = schedule_bound(6, 2, JOB_SECONDS, 3, 5)
    assert bound <= elapsed <= 1.2 * bound, (elapsed, bound)
    # It slept until something was due, never in a tight loop.
    assert all(s > 0 for s in sleeps.calls) and len(sleeps.calls) < 150


def test_max_running_caps_jobs_below_alma(ctx: Context, sim: Simulator) -> None:
    add_sets(ctx, sim, 4)
    summary = scheduler.resume_all(ctx, max_running=1)
    assert [r.state for r in summary.results] == ["verified"] * 4
    assert max_running(sim.job_runs, JOB_SECONDS) == 1


def test_oldest_first_and_each_waiting_set_says_what_it_waits_for(
    ctx: Context, sim: Simulator, clock: FakeClock
) -> None:
    ids = add_sets(ctx, sim, 7)
    summary = scheduler.resume_all(ctx, wait=False)
    assert [r.outcome for r in summary.results] == [workflow.Outcome.WAITING] * 7
    assert [r.set_id for r in sim.job_runs] == ids[:3]
    status = {s.set: s for s in views.status(ctx)}
    running = status[ids[0]]
    assert running.step == "migrate" and running.instance_id and "instance" in (running.waiting or "")
    slot = status[ids[3]]
    assert slot.waiting == "waiting for a job slot: 3 Alma jobs running (at most 3 at once)"
    # Later, once the first five migrations have run, the others wait for the hour to pass.
    waits: dict[str, str] = {}
    for _ in range(30):
        clock.advance(20)
        scheduler.resume_all(ctx, wait=False)
        waits = {s.set: s.waiting or "" for s in views.status(ctx)}
        if "started 5 times" in waits[ids[6]]:
            break
    assert sum(1 for r in sim.job_runs if r.kind == "migration") == 5
    assert (
        "job M2234567890000561 (migrate) started 5 times in the last hour (Alma allows 5); next slot at"
        in (waits[ids[6]])
    )
    assert views.status(ctx, ids[6])[0].wait_until is not None
    events = [e for e in views.history(ctx, ids[6]) if e.kind == "waiting"]
    assert 1 <= len(events) <= 2  # a new kind of wait is recorded once, not at every pass


def test_quota_spent_stops_every_set(ctx: Context, sim: Simulator) -> None:
    ids = add_sets(ctx, sim, 3)
    sim.faults.daily_remaining = 0
    summary = scheduler.resume_all(ctx)
    assert [s for s, _ in summary.attention] == [ids[0]]
    assert "daily" in summary.attention[0][1].lower()
    assert summary.skipped == [
        (ids[1], "not started: Alma's daily API quota is spent"),
        (ids[2], summary.skipped[1][1]),
    ]
    assert sim.job_runs == []


def test_only_pattern_and_sets_held_elsewhere(ctx: Context, sim: Simulator, clock: FakeClock) -> None:
    ids = add_sets(ctx, sim, 3)
    with ctx.sessions.begin() as session:
        row = session.scalars(select(AlmaSet).where(AlmaSet.alma_set_id == ids[2])).one()
        row.lease_owner = "other-host:4242"
        row.lease_expires_at = clock() + timedelta(hours=5)
    summary = scheduler.resume_all(ctx, only="batch [23]")
    assert [r.set for r in summary.results] == [ids[1]]
    assert summary.skipped == [(ids[2], "held by another hwf process")]
    assert {r.set_id for r in sim.job_runs} == {ids[1]}


def test_sets_needing_attention_do_not_stop_the_others(ctx: Context, sim: Simulator) -> None:
    good = add_sets(ctx, sim, 2)
    bad = sim.create_set("Problems", sim.generate_records(20, profile="problems", seed=9))
    workflow.add_set(ctx, bad)
    summary = scheduler.resume_all(ctx)
    assert [r.set for r in summary.results if r.state == "verified"] == good
    assert [s for s, _ in summary.attention] == [bad]


def test_cli_retry_on_a_set_that_needs_nothing_says_so(
    ctx: Context, sim: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (set_id,) = add_sets(ctx, sim, 1)
    config = write_config(tmp_path / "cli.toml", db=ctx.config.database_url, preset="minimal")
    monkeypatch.setenv("HWF_ALMA_API_KEY", API_KEY)
    result = CliRunner().invoke(app, ["--config", str(config), "retry", set_id, "--reason", "checking"])
    assert result.exit_code == 2, result.output
    assert f"set {set_id} needs nothing" in result.stderr
    result = CliRunner().invoke(app, ["--config", str(config), "resume", "--all", "--max-running", "0"])
    assert result.exit_code == 2


def test_a_skipped_copy_step_holds_no_slot_for_the_hour(
    tmp_path: Path, sim: Simulator, clock: FakeClock, sleeps: Sleeps
) -> None:
    """Two runs of a job an hour: two clean sets skip the copy job (no record needs it) in the pass that also
    looks at two sets that need it. Only runs Alma started count: the latter copy at once, not an hour later."""
    data = config_dict(db=f"sqlite:///{tmp_path / 'hwf.db'}", poll_interval_seconds=15, max_runs_per_job_hour=2)
    config = parse_config(data, tmp_path / "hwf.toml", environ={"HWF_ALMA_API_KEY": API_KEY})
    ctx = make_context(config, sim, clock, sleep=sleeps)
    start = clock()
    needing = []
    for k, profile in enumerate(["clean", "clean", "demo", "demo"]):  # clean: the copy step is skipped
        set_id = make_set(sim, 12, profile=profile, name=f"Copy {k + 1}", seed=k)
        workflow.add_set(ctx, set_id)
        if profile == "demo":
            needing.append(set_id)  # these need their copy job
    scheduler.resume_all(ctx)
    copies = [r for s in needing for r in sim.runs_for(s) if r.kind == "copy"]
    assert len(copies) == 2
    # (a running-job slot may hold one back a few minutes; the hour's count held them back an hour)
    assert all(r.submitted_at - start < timedelta(minutes=15) for r in copies), [r.submitted_at for r in copies]
    waits = [e.detail or "" for s in needing for e in views.history(ctx, s) if e.kind == "waiting"]
    assert not any("(copy_identifiers) started" in w for w in waits), waits
    ctx.close()


def test_a_set_waiting_for_a_slot_takes_a_new_limit_at_once(
    tmp_path: Path, sim: Simulator, clock: FakeClock, sleeps: Sleeps
) -> None:
    """A slot wait is looked at again at every pass, under the limit configured now: raising
    max_runs_per_job_hour lets a set waiting for the hour go at once, not at the old slot's time."""

    def context(per_hour: int) -> Context:
        data = config_dict(
            db=f"sqlite:///{tmp_path / 'hwf.db'}",
            poll_interval_seconds=15,
            poll_max_interval_seconds=300,
            max_runs_per_job_hour=per_hour,
        )
        return make_context(
            parse_config(data, tmp_path / "hwf.toml", environ={"HWF_ALMA_API_KEY": API_KEY}), sim, clock
        )

    ctx = context(2)
    ids = add_sets(ctx, sim, 3)
    for _ in range(30):
        scheduler.resume_all(ctx, wait=False)
        waits = {s.set: s.waiting or "" for s in views.status(ctx)}
        if "started 2 times in the last hour" in waits[ids[2]]:
            break
        clock.advance(20)
    assert "started 2 times in the last hour" in waits[ids[2]], waits
    ctx.close()
    runs = len(sim.job_runs)
    clock.advance(20)
    ctx = context(5)
    try:
        scheduler.resume_all(ctx, wait=False)
        [row] = views.status(ctx, ids[2])
    finally:
        ctx.close()
    assert len(sim.job_runs) == runs + 1 and sim.job_runs[-1].set_id == ids[2], (row, sim.job_runs[-1].set_id)
    assert not (row.waiting or "").startswith("waiting for a job slot"), row.waiting
