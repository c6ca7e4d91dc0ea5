"""A set stopped by problem records names them: up to 5 MMS IDs in its description, then "+N more", and one
command to go on, `hwf exclude SET MMS...` naming every one, that works as printed."""

from __future__ import annotations

import re

import pytest

from orchestrator.domain.dc import BLOCKING
from orchestrator.errors import NeedsAttentionError
from orchestrator.service import preflight, views, workflow
from orchestrator.service.context import Context
from orchestrator.simulator import Simulator


def problems_of(ctx: Context, set_id: str) -> list[str]:
    summary = preflight.check_set(ctx, set_id)
    return sorted(p["mms_id"] for p in summary.problems if p["class"] in {b.value for b in BLOCKING})


def test_one_problem_record_is_named(ctx: Context, sim: Simulator) -> None:
    pool = sim.create_set("Pool", sim.generate_records(30, profile="problems", seed=2))
    workflow.add_set(ctx, pool)
    blocked = problems_of(ctx, pool)[:1]
    set_id = sim.create_set("One bad", sim.generate_records(9, profile="clean", seed=1) + blocked)
    workflow.add_set(ctx, set_id)
    with pytest.raises(NeedsAttentionError) as raised:
        workflow.advance(ctx, set_id)
    reason = str(raised.value)
    assert re.search(
        rf"{len(blocked)} of 10 records cannot go through the workflow: \d+ [A-Z_]+ \({blocked[0]}", reason
    )
    assert f"`hwf exclude {set_id} {' '.join(blocked)} --reason TEXT`" in reason
    assert "more:" not in reason


def test_many_problem_records_the_exclude_hint_names_every_one(ctx: Context, sim: Simulator) -> None:
    set_id = sim.create_set("Many bad", sim.generate_records(60, profile="problems", seed=3))
    workflow.add_set(ctx, set_id)
    blocked = problems_of(ctx, set_id)
    assert len(blocked) > 5
    with pytest.raises(NeedsAttentionError) as raised:
        workflow.advance(ctx, set_id)
    reason = str(raised.value)
    # The description names five, then counts the rest; the command to go on names every one.
    assert f"; +{len(blocked) - 5} more." in reason
    named = re.search(rf"To go on: `hwf exclude {set_id} ([\d ]+) --reason TEXT`", reason)
    assert named is not None
    assert sorted(named.group(1).split()) == blocked
    assert views.status(ctx, set_id)[0].attention == reason.split("needs attention: ", 1)[1]
    # The hint works as printed: the attention is cleared, and the set goes on.
    message = preflight.exclude(ctx, set_id, named.group(1).split(), reason="named by the attention")
    assert f"attention cleared, run `hwf advance {set_id}` again" in message
    assert views.status(ctx, set_id)[0].attention is None


def test_include_of_a_record_never_excluded_says_so(ctx: Context, sim: Simulator) -> None:
    ids = sim.generate_records(3, profile="clean")
    set_id = sim.create_set("Theses", ids)
    workflow.add_set(ctx, set_id)
    message = preflight.include(ctx, set_id, [ids[0]], reason="oops")
    assert "nothing included" in message and f"1 not excluded (left as they are): {ids[0]}" in message
    assert "included again" not in message
    assert [e.kind for e in views.history(ctx, set_id) if e.kind == "include"] == []

    preflight.exclude(ctx, set_id, [ids[1]], reason="MARC record")
    message = preflight.include(ctx, set_id, [ids[0], ids[1]], reason="fixed in Alma")
    assert (
        message.startswith(f"1 record included again in set {set_id}")
        and f"not excluded (left as they are): {ids[0]}" in message
    )
    event = [e for e in views.history(ctx, set_id) if e.kind == "include"][-1]
    assert ids[1] in event.detail and ids[0] not in event.detail
