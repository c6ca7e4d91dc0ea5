"""Every adoption path checks the instance: a run of the step's job, on this set, adopted by no other
set or step (issue 13 item 1); and before a step's first submission hwf looks for an earlier run a lost
database forgot (item 12)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from orchestrator.cli import app
from orchestrator.config import parse_config
from orchestrator.errors import BadInputError, NeedsAttentionError
from orchestrator.service import adoption, overview, views, workflow
from orchestrator.service.actions.confirm import confirm
from orchestrator.service.context import Context
from orchestrator.simulator import Scenario, Simulator
from orchestrator.store.models import AlmaSet, Attempt, AttemptState
from tests.support import API_KEY, FakeClock, config_dict, make_context, make_set

MIGRATION = "M2234567890000561"
INTEGRATION = "M50700"


def lost_migration(ctx: Context, sim: Simulator, name: str = "Set one") -> str:
    """A set whose migration instance Alma no longer knows (attention ``instance_unknown``)."""
    set_id = make_set(sim, name=name, seed=5)
    workflow.add_set(ctx, set_id)
    assert workflow.advance(ctx, set_id, wait=False).outcome is workflow.Outcome.WAITING
    with ctx.sessions.begin() as session:
        session.execute(update(Attempt).where(Attempt.step == "migrate").values(instance_id="1234567890004641"))
    with pytest.raises(NeedsAttentionError, match="no longer knows"):
        workflow.advance(ctx, set_id)
    return set_id


def stage(ctx: Context, set_id: str) -> str:
    return views.status(ctx, set_id)[0].state


def test_confirm_refuses_another_sets_finished_migration(ctx: Context, sim: Simulator) -> None:
    s1 = lost_migration(ctx, sim)
    s2 = make_set(sim, name="Set two", seed=6)
    workflow.add_set(ctx, s2)
    assert workflow.advance(ctx, s2).outcome is workflow.Outcome.VERIFIED
    theirs = next(r.instance_id for r in sim.runs_for(s2) if r.kind == "migration")

    with pytest.raises(BadInputError, match=f"already adopted by set {s2}'s migrate attempt 1"):
        confirm(ctx, s1, theirs)
    # A run of S2 that hwf does not know (another database, a colleague): its name names S2.
    stray = ctx.alma.run_job(MIGRATION, [("set_id", s2), ("job_name", f"hwf migrate set {s2} hwf-0123456789ab")])
    with pytest.raises(BadInputError, match=f"names set {s2}, not {s1}"):
        confirm(ctx, s1, stray.instance_id)
    # An integration run is not the migration job's.
    other_job = ctx.alma.run_job(INTEGRATION, [("set_id", s1), ("job_name", f"hwf integrate set {s1} hwf-00aa")])
    with pytest.raises(BadInputError, match="Alma knows no instance"):
        confirm(ctx, s1, other_job.instance_id)

    with pytest.raises(NeedsAttentionError):
        workflow.advance(ctx, s1)
    assert stage(ctx, s1) == "identifiers_copied"  # never `migrated` on another set's run
    assert [r.kind for r in sim.runs_for(s1)] == ["migration", "integration"]  # nothing more submitted


def test_confirm_of_a_run_that_names_no_set_needs_force_and_records_it(ctx: Context, sim: Simulator) -> None:
    s1 = lost_migration(ctx, sim)
    bare = ctx.alma.run_job(MIGRATION, [("set_id", s1)])  # no job_name: "DG Handle Migration - <time>"
    with pytest.raises(BadInputError, match="nothing ties instance .* add --force"):
        confirm(ctx, s1, bare.instance_id)
    assert stage(ctx, s1) == "identifiers_copied"

    assert "(forced)" in confirm(ctx, s1, bare.instance_id, force=True)
    event = [e for e in views.history(ctx, s1) if e.kind == "confirm"][-1]
    assert "forced (--force)" in event.detail and (event.data or {})["forced"] is True
    assert workflow.advance(ctx, s1).outcome is workflow.Outcome.VERIFIED


def test_confirm_adopts_this_sets_own_run_unforced(ctx: Context, sim: Simulator) -> None:
    s1 = lost_migration(ctx, sim)
    real = next(r.instance_id for r in sim.runs_for(s1) if r.kind == "migration")
    confirm(ctx, s1, real)
    event = [e for e in views.history(ctx, s1) if e.kind == "confirm"][-1]
    assert (event.data or {})["forced"] is False and "carries hwf's name" in event.detail


def test_manual_integration_refuses_another_sets_run(manual: Context, sim: Simulator, clock: FakeClock) -> None:
    s1, s2 = make_set(sim, name="Set one", seed=5), make_set(sim, name="Set two", seed=6)
    for set_id in (s1, s2):
        workflow.add_set(manual, set_id)
    for _ in range(20):
        for set_id in (s1, s2):
            workflow.advance(manual, set_id, wait=False)
        clock.advance(30)
    assert {stage(manual, s1), stage(manual, s2)} == {"migrated"}  # both in integration batch 1 (20 records)
    # The operator runs the profile on "Set two" itself: hwf must not take it for the batch's run ...
    theirs = sim.press_integration_run("Set two")
    clock.advance(120)
    workflow.advance(manual, s1, wait=False)
    assert stage(manual, s1) == "migrated"
    for force in (False, True):  # ... and neither `hwf confirm` nor --force can: it ran on 10 records, not 20
        with pytest.raises(BadInputError, match="ran on 10 records; integration batch .* holds 20"):
            confirm(manual, s1, theirs, force=force)
    batch = overview.batches(manual)[0]
    sim.press_integration_run(batch.name)
    clock.advance(120)
    workflow.advance(manual, s1, wait=False)  # the batch's own run is bound ...
    with pytest.raises(BadInputError, match="already bound to run"):
        confirm(manual, batch.name, theirs, force=True)  # ... and nothing else can be bound to it afterwards
    with pytest.raises(BadInputError, match="not waiting for a job instance"):
        confirm(manual, s1, theirs, force=True)
    assert sum(1 for r in sim.job_runs if r.kind == "integration") == 2


def test_add_adopt_refuses_a_run_another_set_adopted(ctx: Context, sim: Simulator, clock: FakeClock) -> None:
    s1, s2 = make_set(sim, name="Set one", seed=5), make_set(sim, name="Set two", seed=6)
    run = ctx.alma.run_job(MIGRATION, [("set_id", s1), ("job_name", f"hwf migrate set {s1} hwf-00ab")])
    clock.advance(600)
    workflow.add_set(ctx, s2)
    with ctx.sessions.begin() as session:  # S2 adopted that run (an operator's --force, say)
        set_row = session.scalars(select(AlmaSet).where(AlmaSet.alma_set_id == s2)).one()
        session.add(
            Attempt(
                set_id=set_row.id,
                step="migrate",
                number=1,
                token="hwf-00ab",
                job_id=MIGRATION,
                instance_id=run.instance_id,
                state=AttemptState.FINISHED,
                status="COMPLETED_SUCCESS",
                begun_at=clock(),
            )
        )
    with pytest.raises(BadInputError, match=f"already adopted by set {s2}'s migrate attempt 1"):
        adoption.adopt(ctx, s1)
    assert [s.set for s in views.status(ctx)] == [s2]


def fresh_database(tmp_path: Path, sim: Simulator, clock: FakeClock, name: str) -> Context:
    data = config_dict(db=f"sqlite:///{tmp_path / name}")
    return make_context(parse_config(data, tmp_path / "hwf.toml", environ={"HWF_ALMA_API_KEY": API_KEY}), sim, clock)


def test_a_lost_database_does_not_run_a_step_twice(tmp_path: Path, sim: Simulator, clock: FakeClock) -> None:
    first = fresh_database(tmp_path, sim, clock, "hwf.db")
    set_id = make_set(sim, name="Set one", seed=5)
    workflow.add_set(first, set_id)
    for _ in range(10):  # through the migration, not further
        workflow.advance(first, set_id, wait=False)
        clock.advance(30)
        if stage(first, set_id) == "migrated":
            break
    assert stage(first, set_id) == "migrated"
    first.close()
    (tmp_path / "hwf.db").unlink()  # the database is lost and re-created

    second = fresh_database(tmp_path, sim, clock, "hwf.db")
    try:
        workflow.add_set(second, set_id)
        assert workflow.advance(second, set_id).outcome is workflow.Outcome.VERIFIED
        assert [r.kind for r in sim.runs_for(set_id)] == ["migration", "integration"]
        found = [e for e in views.history(second, set_id) if e.kind == "reconciled"]
        assert found and "already ran on this set" in found[0].detail
    finally:
        second.close()


def test_alma_thirty_hours_behind_still_finds_the_run(tmp_path: Path, scenario: Scenario, clock: FakeClock) -> None:
    behind = Simulator(scenario, clock=lambda: clock() - timedelta(hours=30))
    ctx = fresh_database(tmp_path, behind, clock, "one.db")
    set_id = make_set(behind, name="Set one", seed=5)
    workflow.add_set(ctx, set_id)
    assert workflow.advance(ctx, set_id).outcome is workflow.Outcome.VERIFIED
    ctx.close()
    clock.advance(20 * 3600)  # the database is lost the next day
    again = fresh_database(tmp_path, behind, clock, "two.db")
    try:
        workflow.add_set(again, set_id)
        assert workflow.advance(again, set_id).outcome is workflow.Outcome.VERIFIED
        assert [r.kind for r in behind.runs_for(set_id)] == ["migration", "integration"]
    finally:
        again.close()


def test_several_earlier_runs_stop_with_attention_and_confirm_picks_one(ctx: Context, sim: Simulator) -> None:
    set_id = make_set(sim, name="Set one", seed=5)
    runs = [
        ctx.alma.run_job(MIGRATION, [("set_id", set_id), ("job_name", f"hwf migrate set {set_id} hwf-0{n}")])
        for n in (1, 2)
    ]
    workflow.add_set(ctx, set_id)
    with pytest.raises(NeedsAttentionError, match="already ran job .* 2 times"):
        workflow.advance(ctx, set_id)
    assert [r.kind for r in sim.runs_for(set_id)] == ["migration", "migration"]
    confirm(ctx, set_id, runs[1].instance_id)
    assert workflow.advance(ctx, set_id).outcome is workflow.Outcome.VERIFIED
    assert [r.kind for r in sim.runs_for(set_id)] == ["migration", "migration", "integration"]


def test_cli_confirm_refuses_in_one_line_and_forces(tmp_path: Path, sim: Simulator, clock: FakeClock) -> None:
    from tests.support import WiredRunner, sim_wiring, write_config

    data = config_dict(f"sqlite:///{tmp_path / 'hwf.db'}", preset="cli", requests_per_second=None)
    path = write_config(tmp_path / "hwf.toml", data=data)
    ctx = make_context(parse_config(data, path, environ={"HWF_ALMA_API_KEY": API_KEY}), sim, clock)
    runner = WiredRunner()
    runner.wiring = sim_wiring(sim, clock)
    try:
        s1 = lost_migration(ctx, sim)
        s2 = make_set(sim, name="Set two", seed=6)
        stray = ctx.alma.run_job(MIGRATION, [("set_id", s2), ("job_name", f"hwf migrate set {s2} hwf-0123456789ab")])
        bare = ctx.alma.run_job(MIGRATION, [("set_id", s1)])
        env = {"HWF_ALMA_API_KEY": API_KEY}
        args = ["--config", str(path), "confirm", s1, "--instance"]
        refused = runner.invoke(app, [*args, stray.instance_id], env=env)
        assert refused.exit_code == 2
        assert refused.stderr.startswith("Error: instance ") and refused.stderr.count("\n") == 1
        assert f"names set {s2}, not {s1}" in refused.stderr
        unforced = runner.invoke(app, [*args, bare.instance_id], env=env)
        assert unforced.exit_code == 2 and "--force" in unforced.stderr
        forced = runner.invoke(app, [*args, bare.instance_id, "--force"], env=env)
        assert forced.exit_code == 0, forced.output
        assert "(forced)" in forced.stdout
    finally:
        ctx.close()


def test_dry_run_says_it_looks_before_a_first_submission(ctx: Context, sim: Simulator) -> None:
    from orchestrator.service import dryrun
    from tests.support import dry_context

    fresh = make_set(sim, name="Set two", seed=6)
    workflow.add_set(ctx, fresh)
    plan = dryrun.describe_advance(dry_context(ctx), fresh)
    submit = next(a for a in plan.actions if a.action == "submit")
    looks = "first, as hwf has no attempt for this step yet, GET /almaws/v1/conf/jobs/M1234567890000561/instances?"
    assert any(n.startswith(looks) for n in submit.notes)
