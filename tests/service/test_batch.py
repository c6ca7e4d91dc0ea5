"""Manual integration (service/actions/batch.py, batchrun.py, confirm.py): sets that reached `migrated` wait in
one integration batch, one click of Run on the Handle integration profile binds every set of it, and a run that
does not fit is never bound."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from orchestrator.errors import BadInputError, NeedsAttentionError
from orchestrator.service import overview, repair, views, workflow
from orchestrator.service.actions import confirm as confirming
from orchestrator.service.context import Context
from orchestrator.simulator import Simulator
from orchestrator.store.models import IntegrationBatch
from tests.support import FakeClock
from tests.support.people import (
    COPY_JOB,
    assert_no_job_ran_unseen,
    clean_set,
    drive,
    drive_until_announced,
)

# ---------------------------------------------------------------------------------------------
# integration batches


def test_three_sets_one_batch_one_click(manual: Context, sim: Simulator, clock: FakeClock) -> None:
    ids = [clean_set(sim, f"Batch me {k}", 5 + k, seed=k) for k in range(3)]
    for set_id in ids:
        workflow.add_set(manual, set_id)
    drive(manual, sim, clock, ids)
    with manual.sessions() as session:
        batch = session.scalars(select(IntegrationBatch)).one()
        assert (batch.sets, batch.records, batch.state) == (3, 18, "finished")
        assert batch.closed_because == "every set not needing attention has reached migrated"
    integrations = [r for r in sim.job_runs if r.kind == "integration"]
    assert len(integrations) == 1 and integrations[0].origin == "integration_profile"
    for set_id in ids:
        kinds = [e.kind for e in views.history(manual, set_id)]
        assert "integration_batch" in kinds and "reconciled" in kinds
        assert views.status(manual, set_id)[0].state == "verified"
    assert_no_job_ran_unseen(manual, sim)


def test_two_candidate_runs_are_attention_then_confirm_binds_one(
    manual: Context, sim: Simulator, clock: FakeClock
) -> None:
    ids = [clean_set(sim, f"Twice {k}", 4, seed=k) for k in range(2)]
    for set_id in ids:
        workflow.add_set(manual, set_id)
    drive_until_announced(manual, clock, ids)
    batch = overview.batches(manual)[0]
    first = sim.press_integration_run(batch.name)
    second = sim.press_integration_run(batch.name)
    clock.advance(300)
    with pytest.raises(NeedsAttentionError, match="2 runs of the Handle integration profile") as raised:
        workflow.advance(manual, ids[0], wait=False)
    assert first in str(raised.value) and second in str(raised.value)
    assert f"`hwf confirm '{batch.name}' --instance ID`" in str(raised.value)
    with pytest.raises(BadInputError, match="Alma knows no instance .* of the handle integration job"):
        confirming.confirm(manual, batch.name, sim.run_job_by_hand(COPY_JOB, ids[0]))  # a run of another job
    message = confirming.confirm(manual, batch.name, second)
    assert f"bound instance {second}" in message
    with pytest.raises(BadInputError, match="already"):
        confirming.confirm(manual, ids[1], second)
    drive(manual, sim, clock, ids, press=False)
    assert_no_job_ran_unseen(manual, sim)


def test_a_run_on_another_set_is_never_bound(manual: Context, sim: Simulator, clock: FakeClock) -> None:
    set_id = clean_set(sim, "Mine", 5)
    decoy = clean_set(sim, "Someone else's", 7, seed=5)
    workflow.add_set(manual, set_id)
    drive_until_announced(manual, clock, [set_id])
    sim.press_integration_run("Someone else's")  # a person runs the profile on another set (7 records)
    clock.advance(300)
    result = workflow.advance(manual, set_id, wait=False)
    assert result.outcome is workflow.Outcome.WAITING and "needs a person" in result.message
    assert [r.set_id for r in sim.job_runs if r.kind == "integration"] == [decoy]
    drive(manual, sim, clock, [set_id])
    assert views.status(manual, set_id)[0].state == "verified"


def test_the_queue_waits_while_another_set_can_reach_migrated_soon(
    manual: Context, sim: Simulator, clock: FakeClock
) -> None:
    early = clean_set(sim, "Early", 5)
    late = sim.create_set("Late", sim.generate_records(6, profile="demo", seed=3))  # needs a copy job and a fix
    workflow.add_set(manual, early)
    workflow.add_set(manual, late)
    for _ in range(30):
        workflow.advance(manual, early, wait=False)
        try:
            workflow.advance(manual, late, wait=False)
        except NeedsAttentionError:
            repair.fix(manual, late, apply=True)
        if overview.batches(manual):
            break
        clock.advance(10)
    batch = overview.batches(manual)[0]
    assert batch.sets == 2, "the batch closed before the late set could reach migrated"


def test_until_idle_is_idle_when_only_a_click_is_missing(manual: Context, sim: Simulator, clock: FakeClock) -> None:
    from orchestrator.service import worker

    set_id = clean_set(sim, "Idle", 4)
    workflow.add_set(manual, set_id)
    summary = worker.follow(manual, worker.StopFlag(), until_idle=True)
    assert summary.stopped is None
    assert overview.batches(manual)[0].needs_person
    assert views.status(manual, set_id)[0].state == "migrated"


def test_the_overview_counts_the_sets_a_click_waits_for_and_makes_no_estimate_of_a_persons_time(
    manual: Context, sim: Simulator, clock: FakeClock
) -> None:
    from orchestrator.service import worker

    for n in range(2):
        workflow.add_set(manual, clean_set(sim, f"Click {n}", 4, seed=n))
    worker.follow(manual, worker.StopFlag(), until_idle=True)
    ov = overview.overview(manual)
    assert (ov.waiting_for_person, ov.waiting) == (2, 0)
    assert ov.eta is None and "2 sets wait for a person's run in Alma" in ov.eta_note
    assert ov.as_json()["waiting_for_person"] == 2
