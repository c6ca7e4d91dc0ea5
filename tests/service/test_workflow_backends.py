"""The key workflow scenarios on both database backends (SQLite and PostgreSQL), with the in-process
simulator and the fake clock of tests/service/test_workflow.py: the same code and migrations must hold on each."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, event, select, update

from orchestrator.config import parse_config
from orchestrator.domain.machine import Step
from orchestrator.errors import LeaseHeldError, NeedsAttentionError
from orchestrator.service import preflight, repair, scheduler, verification, views, workflow
from orchestrator.service.actions import Action, Plan
from orchestrator.service.actions.submit import Submit
from orchestrator.service.context import Context
from orchestrator.simulator import Simulator
from orchestrator.store import leases
from orchestrator.store.models import AlmaSet, Attempt, AttemptState
from tests.support import API_KEY, FakeClock, close_context, config_dict, make_context, make_set


def kinds(sim: Simulator, set_id: str) -> list[str]:
    return [r.kind for r in sim.runs_for(set_id)]


def event_kinds(ctx: Context, set_id: str) -> list[str]:
    return [e.kind for e in views.history(ctx, set_id)]


def test_full_demo_run_copy_fix_migrate_integrate_verify(bctx: Context, sim: Simulator) -> None:
    set_id = make_set(sim, 40, profile="demo", name="Backend titles", seed=3)
    workflow.add_set(bctx, set_id)
    with pytest.raises(NeedsAttentionError, match="NEEDS_FIX"):
        workflow.advance(bctx, set_id)
    report = repair.fix(bctx, set_id, apply=True)
    assert report.changed and not report.failed
    assert workflow.advance(bctx, set_id).outcome is workflow.Outcome.VERIFIED
    assert kinds(sim, set_id) == ["copy", "migration", "integration"]
    transitions = [(e.data or {})["to"] for e in views.history(bctx, set_id) if e.kind == "transition"]
    assert transitions == ["identifiers_copied", "migrated", "integrated", "verified"]
    assert all(r.verdict == "OK" for r in verification.report(bctx, set_id))


def test_lost_reply_is_reconciled_not_resubmitted(bctx: Context, sim: Simulator) -> None:
    set_id = make_set(sim, 30, name="Backend titles", seed=3)
    workflow.add_set(bctx, set_id)
    sim.faults.drop_run_reply = 2  # both jobs lose their reply
    assert workflow.advance(bctx, set_id).outcome is workflow.Outcome.VERIFIED
    assert kinds(sim, set_id) == ["migration", "integration"]
    assert event_kinds(bctx, set_id).count("reconciled") == 2


def test_crash_before_post_resumes_with_one_submission(bctx: Context, sim: Simulator) -> None:
    set_id = make_set(sim, 30, name="Backend titles", seed=3)
    workflow.add_set(bctx, set_id)
    real_run = bctx.alma.run_job

    def killed(*args: object, **kwargs: object) -> object:
        raise KeyboardInterrupt("killed between the attempt commit and the POST")

    bctx.alma.run_job = killed  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        workflow.advance(bctx, set_id)
    bctx.alma.run_job = real_run  # type: ignore[method-assign]
    with bctx.sessions.begin() as session:
        attempt = session.scalars(select(Attempt).where(Attempt.step == "migrate")).one()
        assert attempt.state is AttemptState.SUBMITTING and attempt.instance_id is None
        # The killed process left its lease behind (the finally: release did not run in a real kill).
        session.execute(
            update(AlmaSet).values(lease_owner="gone-host:77", lease_expires_at=bctx.clock() - timedelta(seconds=1))
        )
    summary = scheduler.resume_all(bctx)
    assert [r.outcome for r in summary.results] == [workflow.Outcome.VERIFIED]
    assert kinds(sim, set_id) == ["migration", "integration"]
    assert "abandoned" in event_kinds(bctx, set_id)


def test_lease_held_refuses_then_expires_and_is_taken_over(bctx: Context, sim: Simulator, clock: FakeClock) -> None:
    set_id = make_set(sim, 30, name="Backend titles", seed=3)
    workflow.add_set(bctx, set_id)
    with bctx.sessions.begin() as session:
        row = session.scalars(select(AlmaSet)).one()
        assert leases.try_claim(session, row.id, "other-host:4242", clock(), 60)
    with pytest.raises(LeaseHeldError, match="other-host:4242"):
        workflow.advance(bctx, set_id)
    summary = scheduler.resume_all(bctx, wait=False)
    assert summary.skipped and "another hwf process" in summary.skipped[0][1]
    assert kinds(sim, set_id) == []
    clock.advance(61)
    assert workflow.advance(bctx, set_id).outcome is workflow.Outcome.VERIFIED
    assert kinds(sim, set_id) == ["migration", "integration"]
    assert views.status(bctx, set_id)[0].lease_owner is None  # released on the way out


def test_a_process_that_lost_its_lease_does_not_submit(bctx: Context, sim: Simulator, clock: FakeClock) -> None:
    """Suspended past its lease (a laptop asleep), a process must not POST once another took the set over."""
    set_id = make_set(sim, 5, name="Backend titles", seed=3)
    workflow.add_set(bctx, set_id)
    with bctx.sessions.begin() as session:
        row_id = session.scalars(select(AlmaSet.id)).one()
        assert leases.try_claim(session, row_id, bctx.owner, clock(), 60)
    clock.advance(61)
    with bctx.sessions.begin() as session:
        assert leases.try_claim(session, row_id, "other-host:7", clock(), 60)
    with pytest.raises(LeaseHeldError, match="other-host:7"):
        Submit().run(bctx, row_id, Plan(Action.SUBMIT, step=Step.MIGRATE))
    assert views.attempts(bctx, set_id) == [] and sim.runs_for(set_id) == []


def test_exclude_problem_records_then_fix(bctx: Context, sim: Simulator) -> None:
    """Also the workflow's test of excluding problem records (it was in test_workflow.py too, on SQLite only)."""
    set_id = make_set(sim, 60, profile="problems", name="Backend titles", seed=3)
    workflow.add_set(bctx, set_id)
    summary = preflight.check_set(bctx, set_id)
    bad = [p["mms_id"] for p in summary.problems if p["class"] not in ("READY", "NEEDS_COPY", "NEEDS_FIX")]
    assert bad
    preflight.exclude(bctx, set_id, [m for m in bad if m], "not part of this batch")
    with pytest.raises(NeedsAttentionError, match="NEEDS_FIX"):
        workflow.advance(bctx, set_id)
    repair.fix(bctx, set_id, apply=True)
    assert workflow.advance(bctx, set_id).outcome is workflow.Outcome.VERIFIED
    rows = {r.mms_id: r for r in verification.report(bctx, set_id)}
    assert all(rows[m].excluded and rows[m].verdict is None for m in bad if m)


def test_resume_all_drives_several_sets_each_once(bctx: Context, sim: Simulator) -> None:
    sets = [make_set(sim, 12, name=f"Batch {i}", seed=i) for i in range(5)]
    for set_id in sets:
        workflow.add_set(bctx, set_id)
    summary = scheduler.resume_all(bctx)
    assert not summary.attention and not summary.skipped
    assert {r.set for r in summary.results} == set(sets)
    assert all(r.outcome is workflow.Outcome.VERIFIED for r in summary.results)
    for set_id in sets:
        assert kinds(sim, set_id) == ["migration", "integration"]
    running = [r for r in sim.job_runs if r.status not in ("COMPLETED_SUCCESS",)]
    assert running == []


def test_clock_going_back_keeps_polling_and_leases_working(
    db_url: str, scenario: object, tmp_path: Path, clock: FakeClock
) -> None:
    """hwf's clock jumps an hour back while a job runs (Alma's clock does not): polls stay due, the lease
    renews, and the set finishes without an hour's wait."""
    alma_clock = clock
    laptop = _SkewedClock(alma_clock)
    sim = Simulator(scenario, clock=alma_clock)  # type: ignore[arg-type]
    config = parse_config(config_dict(db=db_url), tmp_path / "hwf.toml", environ={"HWF_ALMA_API_KEY": API_KEY})
    ctx = make_context(config, sim, laptop)  # type: ignore[arg-type]
    try:
        set_id = make_set(sim, 10, name="Backend titles", seed=3)
        workflow.add_set(ctx, set_id)
        waiting = workflow.advance(ctx, set_id, wait=False)
        assert waiting.outcome is workflow.Outcome.WAITING and "migrate job" in waiting.message
        laptop.skew = timedelta(hours=-1)
        with ctx.sessions.begin() as session:
            row_id = session.scalars(select(AlmaSet.id)).one()
            assert leases.try_claim(session, row_id, ctx.owner, laptop(), 60)  # own lease, earlier expiry
            leases.release(session, row_id, ctx.owner)
        before = alma_clock.slept
        assert workflow.advance(ctx, set_id).outcome is workflow.Outcome.VERIFIED
        assert alma_clock.slept - before < 600, "hwf waited for its clock to catch up"
        assert kinds(sim, set_id) == ["migration", "integration"]
    finally:
        close_context(ctx)


class _NoConnectionDuringRemoteCalls:
    """Wraps the simulator's handler: every Alma or proxy request must arrive while the calling thread holds
    no database connection (no transaction or session open across a remote call: SQLite has one writer)."""

    def __init__(self, sim: Simulator) -> None:
        self.sim, self.held, self.violations, self.requests = sim, Counter[int](), list[str](), 0

    def watch(self, engine: Engine) -> None:
        event.listen(engine, "checkout", lambda *a: self.held.update([threading.get_ident()]))
        event.listen(engine, "checkin", lambda *a: self.held.subtract([threading.get_ident()]))

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        if self.held[threading.get_ident()] > 0:
            self.violations.append(f"{request.method} {request.url.path}")
        return self.sim.handle(request)


def test_no_connection_is_held_during_a_remote_call(
    db_url: str, sim: Simulator, clock: FakeClock, tmp_path: Path
) -> None:
    config = parse_config(config_dict(db=db_url), tmp_path / "hwf.toml", environ={"HWF_ALMA_API_KEY": API_KEY})
    guard = _NoConnectionDuringRemoteCalls(sim)
    ctx = make_context(config, guard, clock)  # type: ignore[arg-type]
    guard.watch(ctx.sessions.kw["bind"])
    try:
        demo = make_set(sim, 30, profile="demo", name="Guarded demo", seed=3)
        clean = make_set(sim, 20, name="Guarded clean", seed=4)
        for set_id in (demo, clean):
            workflow.add_set(ctx, set_id)
        sim.faults.drop_run_reply = 1
        summary = scheduler.resume_all(ctx)
        assert summary.attention and "NEEDS_FIX" in summary.attention[0][1]
        repair.fix(ctx, demo, apply=True)
        scheduler.resume_all(ctx)
        assert [s.state for s in views.status(ctx)] == ["verified", "verified"]
        assert guard.requests > 50 and guard.violations == []
    finally:
        close_context(ctx)


class _SkewedClock:
    """hwf's own clock: Alma's time plus a skew the test can change (e.g. NTP stepping it back)."""

    def __init__(self, base: FakeClock) -> None:
        self.base, self.skew = base, timedelta(0)

    def __call__(self) -> datetime:
        return self.base() + self.skew

    def sleep(self, seconds: float) -> None:
        self.base.sleep(seconds)
