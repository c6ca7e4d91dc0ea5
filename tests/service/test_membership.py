"""Membership on first contact with a real Alma (service/membership.py): a logical set is registered as an itemized
snapshot that no job runs on, and a set whose members changed in Alma is stopped before any job (drift), until
`hwf sync` takes the new membership or takes late records out. Every test ends on: no Alma job ever ran on a
record hwf had not seen pass every earlier step."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.config import parse_config
from orchestrator.errors import AlmaError, BadInputError, NeedsAttentionError
from orchestrator.service import adoption, batches, membership, overview, repair, verification, views, workflow
from orchestrator.service.context import Context
from orchestrator.simulator import Scenario, Simulator
from tests.support import API_KEY, FakeClock, config_dict, make_context
from tests.support.people import (
    assert_no_job_ran_unseen,
    clean_set,
    drive,
    first_contact_context,
)

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
    ctx = first_contact_context(tmp_path, sim, clock)
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
