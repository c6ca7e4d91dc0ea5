"""Steps run by hand (service/actions/manual.py): a job Alma will not run through the API (402231) becomes a step a
person runs in Admin > Run a Job, bound by the set's name; a step configured to run by hand asks first; 60347
means wait and submit once later."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from orchestrator.service import views, workflow
from orchestrator.service.context import Context
from orchestrator.simulator import Scenario, Simulator
from tests.support import FakeClock
from tests.support.people import (
    COPY_JOB,
    MIGRATION_JOB,
    assert_no_job_ran_unseen,
    clean_set,
    drive,
    first_contact_context,
)

# ---------------------------------------------------------------------------------------------
# a step Alma will not run by API


def test_402231_on_the_migration_becomes_a_step_run_by_hand_bound_by_the_set_name(
    tmp_path: Path, scenario: Scenario, clock: FakeClock
) -> None:
    sim = Simulator(dataclasses.replace(scenario, multi_task_jobs=("migration",)), clock=clock)
    api = first_contact_context(tmp_path, sim, clock, handle_integration_mode="api")
    set_id = clean_set(sim, "Several tasks", 5)
    other = clean_set(sim, "Several tasks - Old", 4, seed=2)
    workflow.add_set(api, set_id)
    result = workflow.advance(api, set_id, wait=False)
    status = views.status(api, set_id)[0]
    assert result.outcome is workflow.Outcome.WAITING and status.state == "identifiers_copied"
    assert status.attention is not None and "402231" in status.attention and "Admin > Run a Job" in status.attention
    assert 'mode = "manual"' in status.attention
    posts = [r for r in sim.job_runs if r.set_id == set_id]
    assert posts == []  # refused: nothing ran, and nothing is sent again
    # A person runs the wrong job on the set, and the right one on a set whose name holds this one's: no binding.
    sim.run_job_by_hand(COPY_JOB, set_id)
    sim.run_job_by_hand(MIGRATION_JOB, other)
    clock.advance(60)
    workflow.advance(api, set_id, wait=False)
    assert views.status(api, set_id)[0].attention is not None
    mine = sim.run_job_by_hand(MIGRATION_JOB, set_id)
    clock.advance(60)
    drive(api, sim, clock, [set_id])
    migration = next(a for a in views.attempts(api, set_id) if a.step == "migrate" and a.instance_id)
    assert migration.instance_id == mine
    assert [e.kind for e in views.history(api, set_id)].count("attention_cleared") >= 1
    assert [r.kind for r in sim.runs_for(set_id)].count("migration") == 1  # the person's run only
    assert_no_job_ran_unseen(api, sim)
    api.close()


def test_a_step_configured_to_run_by_hand_asks_first_and_binds_the_run(
    tmp_path: Path, sim: Simulator, clock: FakeClock
) -> None:
    ctx = first_contact_context(
        tmp_path,
        sim,
        clock,
        handle_integration_mode="api",
        handle_migration={"id": MIGRATION_JOB, "mode": "manual"},
    )
    set_id = clean_set(sim, "By hand", 5)
    workflow.add_set(ctx, set_id)
    result = workflow.advance(ctx, set_id, wait=False)
    assert result.outcome is workflow.Outcome.WAITING
    assert "needs a person: run the migrate job" in result.message
    assert views.status(ctx, set_id)[0].attention is None  # asked for, not a problem
    sim.run_job_by_hand(MIGRATION_JOB, set_id)
    clock.advance(60)
    drive(ctx, sim, clock, [set_id])
    assert [r.origin for r in sim.runs_for(set_id)] == ["run_a_job", "api"]
    ctx.close()


def test_60347_means_wait_and_submit_once_later(api: Context, sim: Simulator, clock: FakeClock) -> None:
    set_id = clean_set(sim, "Overlap", 5)
    workflow.add_set(api, set_id)
    sim.faults.refuse_run_overlap = 1
    result = workflow.advance(api, set_id, wait=False)
    assert result.outcome is workflow.Outcome.WAITING and "60347" in result.message
    drive(api, sim, clock, [set_id])
    assert [r.kind for r in sim.runs_for(set_id)] == ["migration", "integration"]
