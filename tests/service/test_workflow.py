"""The service end to end on the in-process simulator, with a fake clock: no real time passes."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from orchestrator.errors import BadInputError, LeaseHeldError, NeedsAttentionError
from orchestrator.service import preflight, repair, scheduler, verification, views, workflow
from orchestrator.service.actions.confirm import confirm
from orchestrator.service.context import Context
from orchestrator.simulator import Simulator
from orchestrator.store.models import AlmaSet, Attempt, AttemptState
from tests.support import FakeClock, make_set


def kinds(sim: Simulator, set_id: str) -> list[str]:
    return [r.kind for r in sim.runs_for(set_id)]


def event_kinds(ctx: Context, set_id: str) -> list[str]:
    return [e.kind for e in views.history(ctx, set_id)]


def test_add_reads_name_and_members(ctx: Context, sim: Simulator) -> None:
    set_id = make_set(sim, 130, profile="demo", seed=3)
    summary = workflow.add_set(ctx, set_id)
    assert summary.set == set_id
    assert summary.name == "Test titles"
    assert summary.records == 130
    assert summary.state == "created"
    with pytest.raises(BadInputError, match="already registered"):
        workflow.add_set(ctx, set_id)


def test_add_rejects_non_numeric_set_id(ctx: Context) -> None:
    with pytest.raises(BadInputError, match="not an Alma set id"):
        workflow.add_set(ctx, "12ab")


def test_demo_profile_goes_through_copy_fix_migrate_integrate_verify(ctx: Context, sim: Simulator) -> None:
    set_id = make_set(sim, 40, profile="demo", seed=3)
    workflow.add_set(ctx, set_id)
    with pytest.raises(NeedsAttentionError, match="NEEDS_FIX"):
        workflow.advance(ctx, set_id)
    assert views.status(ctx, set_id)[0].state == "identifiers_copied"
    assert kinds(sim, set_id) == ["copy"]
    report = repair.fix(ctx, set_id, apply=True)
    assert report.changed and not report.failed
    result = workflow.advance(ctx, set_id)
    assert result.outcome is workflow.Outcome.VERIFIED
    assert kinds(sim, set_id) == ["copy", "migration", "integration"]
    transitions = [e for e in views.history(ctx, set_id) if e.kind == "transition"]
    assert [(e.data or {})["to"] for e in transitions] == [
        "identifiers_copied",
        "migrated",
        "integrated",
        "verified",
    ]
    rows = list(verification.report(ctx, set_id))
    assert rows and all(r.verdict == "OK" for r in rows)


def test_clean_set_skips_the_copy_job_and_says_so(ctx: Context, sim: Simulator) -> None:
    set_id = make_set(sim, 40, seed=3)
    workflow.add_set(ctx, set_id)
    assert workflow.advance(ctx, set_id).outcome is workflow.Outcome.VERIFIED
    assert kinds(sim, set_id) == ["migration", "integration"]
    assert "step_skipped" in event_kinds(ctx, set_id)


def test_advance_on_verified_set_is_a_no_op(ctx: Context, sim: Simulator) -> None:
    set_id = make_set(sim, 40, seed=3)
    workflow.add_set(ctx, set_id)
    workflow.advance(ctx, set_id)
    result = workflow.advance(ctx, set_id)
    assert result.outcome is workflow.Outcome.VERIFIED
    assert "already verified" in result.message
    assert kinds(sim, set_id) == ["migration", "integration"]


def test_problem_records_stop_the_copy_job(ctx: Context, sim: Simulator) -> None:
    set_id = make_set(sim, 60, profile="problems", seed=3)
    workflow.add_set(ctx, set_id)
    with pytest.raises(NeedsAttentionError, match="cannot go through the workflow"):
        workflow.advance(ctx, set_id)
    assert kinds(sim, set_id) == []
    status = views.status(ctx, set_id)[0]
    assert status.state == "created" and status.attention


def test_lost_reply_is_reconciled_not_resubmitted(ctx: Context, sim: Simulator) -> None:
    set_id = make_set(sim, 40, seed=3)
    workflow.add_set(ctx, set_id)
    sim.faults.drop_run_reply = 1
    assert workflow.advance(ctx, set_id).outcome is workflow.Outcome.VERIFIED
    assert kinds(sim, set_id) == ["migration", "integration"]
    assert "submit_unknown" in event_kinds(ctx, set_id)
    assert "reconciled" in event_kinds(ctx, set_id)


def test_post_that_never_arrived_is_resubmitted_after_grace(ctx: Context, sim: Simulator, clock: FakeClock) -> None:
    set_id = make_set(sim, 40, seed=3)
    workflow.add_set(ctx, set_id)
    sim.faults.reject_run_before_create = 1
    assert workflow.advance(ctx, set_id).outcome is workflow.Outcome.VERIFIED
    assert kinds(sim, set_id) == ["migration", "integration"]
    assert "abandoned" in event_kinds(ctx, set_id)


def test_crash_after_attempt_commit_before_post_resumes_once(ctx: Context, sim: Simulator, clock: FakeClock) -> None:
    set_id = make_set(sim, 40, seed=3)
    workflow.add_set(ctx, set_id)
    real_run = ctx.alma.run_job

    def crash(*args: object, **kwargs: object) -> object:
        raise KeyboardInterrupt("simulated kill")

    ctx.alma.run_job = crash  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        workflow.advance(ctx, set_id)
    ctx.alma.run_job = real_run  # type: ignore[method-assign]
    with ctx.sessions() as session:
        attempt = session.scalars(select(Attempt).where(Attempt.step == "migrate")).one()
        assert attempt.state is AttemptState.SUBMITTING
        session.execute(AlmaSet.__table__.update().values(lease_owner=None))  # the killed process's lease
        session.commit()
    summary = scheduler.resume_all(ctx)
    assert [r.outcome for r in summary.results] == [workflow.Outcome.VERIFIED]
    assert kinds(sim, set_id) == ["migration", "integration"]


def test_lease_held_by_live_process_refuses(ctx: Context, sim: Simulator, clock: FakeClock) -> None:
    set_id = make_set(sim, 40, seed=3)
    workflow.add_set(ctx, set_id)
    with ctx.sessions.begin() as session:
        row = session.scalars(select(AlmaSet)).one()
        row.lease_owner = "other-host:4242"
        row.lease_expires_at = clock() + __import__("datetime").timedelta(seconds=60)
    with pytest.raises(LeaseHeldError, match="other-host:4242"):
        workflow.advance(ctx, set_id)
    clock.advance(61)
    assert workflow.advance(ctx, set_id).outcome is workflow.Outcome.VERIFIED


def test_no_wait_returns_while_job_runs(ctx: Context, sim: Simulator, clock: FakeClock) -> None:
    set_id = make_set(sim, 40, seed=3)
    workflow.add_set(ctx, set_id)
    result = workflow.advance(ctx, set_id, wait=False)
    assert result.outcome is workflow.Outcome.WAITING
    assert "migrate job" in result.message
    status = views.status(ctx, set_id)[0]
    assert status.instance_id and status.step == "migrate"
    clock.advance(600)
    assert workflow.advance(ctx, set_id).outcome is workflow.Outcome.VERIFIED
    assert kinds(sim, set_id) == ["migration", "integration"]


def test_retry_needs_something_to_retry(ctx: Context, sim: Simulator) -> None:
    set_id = make_set(sim, 40, seed=3)
    workflow.add_set(ctx, set_id)
    with pytest.raises(BadInputError, match="needs nothing"):
        workflow.retry(ctx, set_id, reason="why not")


def test_unknown_set_is_bad_input(ctx: Context) -> None:
    with pytest.raises(BadInputError, match="unknown set"):
        workflow.advance(ctx, "999")
    with pytest.raises(BadInputError):
        list(views.history(ctx, "nope"))


def test_confirm_requires_a_waiting_step(ctx: Context, sim: Simulator) -> None:
    set_id = make_set(sim, 40, seed=3)
    workflow.add_set(ctx, set_id)
    with pytest.raises(BadInputError, match="not waiting"):
        confirm(ctx, set_id, "123")


def test_verify_by_hand_names_bad_and_missing_handles(ctx: Context, sim: Simulator) -> None:
    set_id = make_set(sim, 60, profile="problems", seed=3)
    workflow.add_set(ctx, set_id)
    summary = preflight.check_set(ctx, set_id)
    classes = {p["mms_id"]: p["class"] for p in summary.problems}
    verdicts = verification.verify_set(ctx, set_id, recheck_all=True)
    assert sum(verdicts.values()) == 60
    rows = {r.mms_id: r for r in verification.report(ctx, set_id)}
    bad = [m for m, c in classes.items() if c == "BAD_HANDLE"]
    none = [m for m, c in classes.items() if c == "NO_HANDLE"]
    assert bad and none
    assert {rows[m].verdict for m in none} == {"NO_HANDLE"}
    assert {rows[m].verdict for m in bad} <= {"BAD_HANDLE", "NOT_REGISTERED"}
    assert "BAD_HANDLE" in {rows[m].verdict for m in bad}
    assert views.status(ctx, set_id)[0].state == "created"  # verification by hand never skips steps


def test_a_padded_name_is_stored_stripped(ctx: Context, sim: Simulator) -> None:
    set_id = sim.create_set("Theses", sim.generate_records(3, profile="clean"))
    assert workflow.add_set(ctx, set_id, "  Padded name \t").name == "Padded name"
    assert views.status(ctx, set_id)[0].name == "Padded name"
    other = sim.create_set("Other", sim.generate_records(3, profile="clean", seed=9))
    with pytest.raises(BadInputError, match="already used"):
        workflow.add_set(ctx, other, " Padded name ")
    with pytest.raises(BadInputError, match="--name must not be empty"):
        workflow.add_set(ctx, other, "   ")
