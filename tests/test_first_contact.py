"""First contact with a real Alma, on the in-process simulator with a fake clock: logical sets are snapshotted,
a set whose members changed is stopped before any job (drift, `hwf sync`), a step Alma will not run by API
becomes a step run by hand and bound by the set's name, and manual integration runs in batches of one click.

The invariant every test here ends on: no Alma job ever ran on a record hwf had not seen pass every earlier step.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from orchestrator.config import parse_config
from orchestrator.errors import AlmaError, BadInputError, NeedsAttentionError
from orchestrator.service import adoption, batches, membership, overview, repair, verification, views, workflow
from orchestrator.service.actions import confirm as confirming
from orchestrator.service.context import Context
from orchestrator.simulator import Scenario, Simulator
from orchestrator.store.models import AlmaSet, Attempt, IntegrationBatch, Record
from tests.conftest import API_KEY, FakeClock, config_dict, make_context

STEP_OF = {"copy": "copy_identifiers", "migration": "migrate", "integration": "integrate"}
MIGRATION_JOB = "M2234567890000561"
COPY_JOB = "M1234567890000561"


@pytest.fixture
def api(tmp_path: Path, sim: Simulator, clock: FakeClock) -> Context:
    """Integration by API (an institution whose sandbox proved op=run of the integration job)."""
    ctx = _ctx(tmp_path, sim, clock, handle_integration_mode="api")
    yield ctx
    ctx.close()


@pytest.fixture
def manual(tmp_path: Path, sim: Simulator, clock: FakeClock) -> Context:
    """The default: a person presses Run on the Handle integration profile, once per integration batch."""
    ctx = _ctx(tmp_path, sim, clock)
    assert ctx.config.alma.jobs["handle_integration"].manual, "manual integration is the default"
    yield ctx
    ctx.close()


def _ctx(tmp_path: Path, sim: Simulator, clock: FakeClock, **jobs: Any) -> Context:
    data = config_dict(db=f"sqlite:///{tmp_path / 'hwf.db'}")
    del data["alma"]["jobs"]["handle_integration_mode"]  # the default, unless a test says otherwise
    data["alma"]["jobs"].update(jobs)
    return make_context(parse_config(data, tmp_path / "hwf.toml", environ={"HWF_ALMA_API_KEY": API_KEY}), sim, clock)


def clean_set(sim: Simulator, name: str, n: int = 20, seed: int = 1) -> str:
    return sim.create_set(name, sim.generate_records(n, profile="clean", seed=seed))


def drive(ctx: Context, sim: Simulator, clock: FakeClock, set_ids: list[str], *, press: bool = True) -> None:
    """Advance every set until each is verified; when an integration batch waits for a person, press Run."""
    pressed: set[int] = set()
    for _ in range(400):
        done = 0
        for set_id in set_ids:
            result = workflow.advance(ctx, set_id, wait=False)
            done += result.outcome is workflow.Outcome.VERIFIED
        if done == len(set_ids):
            return
        for batch in overview.batches(ctx):
            if press and batch.needs_person and batch.number not in pressed:
                pressed.add(batch.number)
                sim.press_integration_run(batch.name)
        clock.advance(5)
    raise AssertionError("the sets did not reach verified")


def assert_no_job_ran_unseen(ctx: Context, sim: Simulator) -> None:
    """Every member of every run was a record hwf had (not taken out of its Alma set) in a set that had passed the
    steps before the run's step."""
    with ctx.sessions() as session:
        known = {
            (s.alma_set_id, r.mms_id)
            for s, r in session.execute(select(AlmaSet, Record).join(Record, Record.set_id == AlmaSet.id))
            if not r.removed_from_alma_set
        }
        batch_sets = {b.alma_set_id: b.id for b in session.scalars(select(IntegrationBatch))}
        batch_members = {
            batch_id: {
                m
                for set_id in session.scalars(select(Attempt.set_id).where(Attempt.batch_id == batch_id))
                for m in session.scalars(select(Record.mms_id).where(Record.set_id == set_id, ~Record.excluded))
            }
            for batch_id in batch_sets.values()
        }
    registered = {set_id for set_id, _ in known}
    for run in sim.job_runs:
        if run.set_id not in registered and run.set_id not in batch_sets:
            continue  # a person's run on a set hwf has nothing to do with
        if run.set_id in batch_sets:
            assert set(run.members) <= batch_members[batch_sets[run.set_id]], run
        else:
            assert all((run.set_id, m) in known for m in run.members), (run.set_id, run.kind, run.members)


# ---------------------------------------------------------------------------------------------
# logical sets


@pytest.fixture
def scenario() -> Scenario:
    return Scenario(
        job_seconds={"copy": 30, "migration": 60, "integration": 45, "other": 10},
        per_second_limit=0,
        from_logical_set_seconds=20,
    )


def test_a_logical_set_is_registered_as_an_itemized_snapshot_and_never_run_on(
    api: Context, sim: Simulator, clock: FakeClock
) -> None:
    sim.generate_records(12, profile="clean", seed=4, title_prefix="Snapshot me ")
    logical = sim.create_logical_set("All digital titles in DCAP01", {"title_contains": "snapshot me"})
    before = sim.set_members(logical)
    summary = workflow.add_set(api, logical)
    assert summary.set != logical and summary.records == len(before) == 12
    assert summary.name.startswith("All digital titles in DCAP01 (hwf snapshot 2026-02-02")
    assert sorted(sim.set_members(summary.set)) == sorted(before)
    added = next(e for e in views.history(api, summary.set) if e.kind == "added")
    assert f"a snapshot of logical set {logical}" in added.detail and (added.data or {})["from_logical_set"] == logical
    # A record matching the query after the snapshot changes the logical set, not the registered snapshot.
    sim.generate_records(1, profile="clean", seed=5, title_prefix="Snapshot me ")
    drive(api, sim, clock, [summary.set])
    assert sim.runs_for(logical) == []
    assert [r.kind for r in sim.runs_for(summary.set)] == ["migration", "integration"]
    assert len(sim.set_members(logical)) == 13
    assert_no_job_ran_unseen(api, sim)


def test_a_snapshot_that_does_not_fill_in_time_is_one_line_and_found_again(
    tmp_path: Path, sim: Simulator, clock: FakeClock
) -> None:
    ctx = _ctx(tmp_path, sim, clock)
    sim.generate_records(5, profile="clean", seed=4, title_prefix="Slow ")
    logical = sim.create_logical_set("Slow logical", "slow ")
    data = config_dict(db=f"sqlite:///{tmp_path / 'hwf.db'}", snapshot_wait_seconds=5)
    hasty = make_context(parse_config(data, tmp_path / "hwf.toml", environ={"HWF_ALMA_API_KEY": API_KEY}), sim, clock)
    with pytest.raises(AlmaError, match=r"holds \d of the logical set's 5 members after 5 s.*run `hwf add`"):
        workflow.add_set(hasty, logical)
    clock.advance(30)
    summary = workflow.add_set(ctx, logical)  # finds the snapshot it made, no twin
    assert summary.records == 5
    assert len([name for name in sim.set_ids() if name.startswith("Slow logical (hwf snapshot")]) == 1
    ctx.close()
    hasty.close()


def test_adopting_a_logical_set_is_refused(api: Context, sim: Simulator) -> None:
    sim.generate_records(3, profile="clean", seed=4, title_prefix="Adopt ")
    logical = sim.create_logical_set("Adopt me", "adopt ")
    with pytest.raises(BadInputError, match="LOGICAL .* hwf never runs jobs on a logical set"):
        adoption.adopt(api, logical)


# ---------------------------------------------------------------------------------------------
# drift


def test_a_member_added_before_the_copy_job_stops_the_set_until_sync_takes_it(
    api: Context, sim: Simulator, clock: FakeClock
) -> None:
    set_id = clean_set(sim, "Drifting", 10)
    workflow.add_set(api, set_id)
    extra = sim.generate_records(1, profile="clean", seed=9)[0]
    sim._state.sets[set_id].add([extra])  # a colleague adds a title in Alma
    with pytest.raises(
        NeedsAttentionError, match=rf"drift: .*1 added \({extra}\); nothing was sent.*hwf sync {set_id}"
    ):
        workflow.advance(api, set_id)
    assert sim.runs_for(set_id) == []
    status = views.status(api, set_id)[0]
    assert status.attention is not None and overview.overview(api).attention[0].command == f"hwf sync {set_id}"
    report = membership.sync(api, set_id)
    assert report.joined == [extra] and f"`hwf advance {set_id}` goes on" in report.message
    drive(api, sim, clock, [set_id])
    assert views.status(api, set_id)[0].records == 11
    assert extra in sim.runs_for(set_id)[-1].members
    assert_no_job_ran_unseen(api, sim)


def test_a_member_added_after_the_copy_job_never_meets_a_later_job(
    tmp_path: Path, api: Context, sim: Simulator, clock: FakeClock
) -> None:
    ids = sim.generate_records(8, profile="demo", seed=3)  # they need the copy job, then `hwf fix`
    (tmp_path / "ids.csv").write_text("mms_id\n" + "\n".join(ids) + "\n")
    set_id = batches.add_from_csv(api, tmp_path / "ids.csv", "From CSV")[0].set
    with pytest.raises(NeedsAttentionError, match="NEEDS_FIX"):
        workflow.advance(api, set_id)
    assert views.status(api, set_id)[0].state == "identifiers_copied"
    repair.fix(api, set_id, apply=True)
    late = sim.generate_records(1, profile="clean", seed=11)[0]
    sim._state.sets[set_id].add([late])  # joins after the copy job
    with pytest.raises(NeedsAttentionError, match=rf"drift: .*1 added \({late}\)"):
        workflow.advance(api, set_id)
    assert [r.kind for r in sim.runs_for(set_id)] == ["copy"]  # no migration was submitted
    report = membership.sync(api, set_id)  # hwf made this set: it takes the late record out itself
    assert report.late == [late] and late not in sim.set_members(set_id)
    assert "put them in a later set" in report.message and late in report.message
    drive(api, sim, clock, [set_id])
    assert all(late not in run.members for run in sim.runs_for(set_id))
    assert_no_job_ran_unseen(api, sim)


def test_a_late_member_of_a_set_hwf_did_not_make_is_removed_by_the_operator(
    api: Context, sim: Simulator, clock: FakeClock
) -> None:
    set_id = sim.create_set("Theirs", sim.generate_records(6, profile="demo", seed=3))
    workflow.add_set(api, set_id)
    with pytest.raises(NeedsAttentionError, match="NEEDS_FIX"):
        workflow.advance(api, set_id)  # the copy job ran
    repair.fix(api, set_id, apply=True)
    late = sim.generate_records(1, profile="clean", seed=12)[0]
    sim._state.sets[set_id].add([late])
    with pytest.raises(NeedsAttentionError, match="drift"):
        workflow.advance(api, set_id)
    report = membership.sync(api, set_id)
    assert report.to_remove == [late] and late in sim.set_members(set_id)  # not touched: not hwf's set
    assert "remove them from it in Alma" in (views.status(api, set_id)[0].attention or "")
    sim._state.sets[set_id].remove([late])
    assert membership.sync(api, set_id).to_remove == []
    drive(api, sim, clock, [set_id])
    assert_no_job_ran_unseen(api, sim)


def test_a_member_removed_is_marked_in_the_report(api: Context, sim: Simulator, clock: FakeClock) -> None:
    set_id = clean_set(sim, "Shrinking", 6)
    workflow.add_set(api, set_id)
    gone = sim.set_members(set_id)[0]
    sim._state.sets[set_id].remove([gone])
    with pytest.raises(NeedsAttentionError, match=rf"1 removed \({gone}\)"):
        workflow.advance(api, set_id)
    report = membership.sync(api, set_id)
    assert report.left == [gone]
    drive(api, sim, clock, [set_id])
    rows = {r.mms_id: r for r in verification.report(api, set_id)}
    assert rows[gone].excluded and (rows[gone].detail or "").startswith(f"excluded: left Alma set {set_id}")


# ---------------------------------------------------------------------------------------------
# a step Alma will not run by API


def test_402231_on_the_migration_becomes_a_step_run_by_hand_bound_by_the_set_name(
    tmp_path: Path, scenario: Scenario, clock: FakeClock
) -> None:
    sim = Simulator(dataclasses.replace(scenario, multi_task_jobs=("migration",)), clock=clock)
    api = _ctx(tmp_path, sim, clock, handle_integration_mode="api")
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
    ctx = _ctx(
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


def drive_until_announced(ctx: Context, clock: FakeClock, set_ids: list[str]) -> None:
    for _ in range(100):
        for set_id in set_ids:
            workflow.advance(ctx, set_id, wait=False)
        if any(b.needs_person for b in overview.batches(ctx)):
            return
        clock.advance(5)
    raise AssertionError("no batch was announced")
