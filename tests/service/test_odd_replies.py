"""Odd replies to and about a job submission never lead to a second run: a 200 whose instance link cannot be read
is an unknown outcome (reconciled by token), a listed run carrying this attempt's own token but another set's id is
contradictory evidence (attention), and one unreadable entry of Alma's shared instance list stops no other set."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from orchestrator.domain.attention import Attention
from orchestrator.errors import AlmaUnreachableError, NeedsAttentionError
from orchestrator.service import scheduler, views, workflow
from orchestrator.service.context import Context
from orchestrator.simulator import Simulator
from orchestrator.store.models import AlmaSet
from tests.support import API_KEY, make_set


def kinds(sim: Simulator, set_id: str) -> list[str]:
    return [r.kind for r in sim.runs_for(set_id)]


def test_a_200_whose_instance_link_cannot_be_read_is_reconciled_never_refused(ctx: Context, sim: Simulator) -> None:
    set_id = make_set(sim, 20, seed=3)
    workflow.add_set(ctx, set_id)
    sim.faults.unreadable_run_reply = 1  # Alma starts the run, but its reply does not say which
    assert workflow.advance(ctx, set_id).outcome is workflow.Outcome.VERIFIED
    assert kinds(sim, set_id) == ["migration", "integration"]  # one run each: never submitted twice
    events = [e.kind for e in views.history(ctx, set_id)]
    assert "submit_unknown" in events and "reconciled" in events
    assert not any("refused" in (e.detail or "") for e in views.history(ctx, set_id))


def _lose_the_run_reply(ctx: Context, sim: Simulator, then: Callable[[Any], None]) -> None:
    """The next job run reaches Alma and its reply is lost; ``then`` changes the run Alma made before hwf looks
    for it."""
    sim.faults.drop_run_reply = 1
    real_run = ctx.alma.run_job

    def run_then(*args: object, **kwargs: object) -> object:
        try:
            return real_run(*args, **kwargs)  # type: ignore[arg-type]
        except AlmaUnreachableError:
            then(sim._state.instance_order[-1])
            raise

    ctx.alma.run_job = run_then  # type: ignore[method-assign]


def test_a_listed_run_with_this_attempts_token_but_another_sets_id_is_attention_not_a_resubmission(
    ctx: Context, sim: Simulator
) -> None:
    set_id = make_set(sim, 20, seed=3)
    other = make_set(sim, 5, name="Another set", seed=4)
    workflow.add_set(ctx, set_id)

    def tamper(run: Any) -> None:  # Alma lists it under another set's id, with this token
        run.name = run.name.replace(f"set {set_id} ", f"set {other} ")

    _lose_the_run_reply(ctx, sim, tamper)
    with pytest.raises(NeedsAttentionError, match="carries attempt 1's own token"):
        workflow.advance(ctx, set_id)
    assert kinds(sim, set_id) == ["migration"]  # one run: the attempt was not called unsent
    with ctx.sessions() as session:
        row = session.scalars(select(AlmaSet).where(AlmaSet.alma_set_id == set_id)).one()
        assert row.attention_kind == Attention.RECONCILE
    assert "abandoned" not in [e.kind for e in views.history(ctx, set_id)]


def test_one_unreadable_entry_in_alma_s_instance_list_stops_no_other_set(
    ctx: Context, sim: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    first = make_set(sim, 10, name="H", seed=3)
    workflow.add_set(ctx, first)
    assert workflow.advance(ctx, first).outcome is workflow.Outcome.VERIFIED
    sim.faults.unreadable_listed = [r.instance_id for r in sim.runs_for(first)]  # H's runs: listed without status
    others = [make_set(sim, 10, name=f"H-ok{n}", seed=10 + n) for n in (1, 2)]
    for set_id in others:
        workflow.add_set(ctx, set_id)
    with caplog.at_level(logging.WARNING, logger="orchestrator.alma.parse"):
        summary = scheduler.resume_all(ctx)
    assert summary.attention == []
    assert [r.outcome for r in summary.results] == [workflow.Outcome.VERIFIED] * 2
    for set_id in others:
        assert kinds(sim, set_id) == ["migration", "integration"]
    assert "status is missing" in caplog.text and "skipped" in caplog.text


def test_an_unreadable_entry_that_may_be_the_run_looked_for_is_not_skipped(ctx: Context, sim: Simulator) -> None:
    set_id = make_set(sim, 20, seed=3)
    workflow.add_set(ctx, set_id)
    _lose_the_run_reply(ctx, sim, lambda run: setattr(sim.faults, "unreadable_listed", [run.id]))  # the lost run
    [(_, reason)] = scheduler.resume_all(ctx).attention
    assert "status is missing" in reason
    assert kinds(sim, set_id) == ["migration"]  # never called unsent, never submitted again


def test_a_key_alma_echoes_is_redacted_as_the_reply_arrives(ctx: Context, sim: Simulator, tmp_path: Path) -> None:
    """A set named with the key (a colleague pasted it): the key never reaches the database (the sets, events,
    the notification outbox), ``hwf status`` or the history; the dashboard and notifications read those."""
    set_id = sim.create_set(f"Titles {API_KEY}", sim.generate_records(8, profile="clean", seed=3))
    workflow.add_set(ctx, set_id)
    assert workflow.advance(ctx, set_id).outcome is workflow.Outcome.VERIFIED
    [row] = views.status(ctx, set_id)
    assert row.name == "Titles ***"
    assert not any(API_KEY in (e.detail or "") + json.dumps(e.data or {}) for e in views.history(ctx, set_id))
    for path in tmp_path.glob("hwf.db*"):
        assert API_KEY.encode() not in path.read_bytes(), path.name
