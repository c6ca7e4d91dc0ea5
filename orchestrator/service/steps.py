"""Moving one set: holding its lease while working on it, and firing a step with its transition event.

Every place that advances a set (``advance``, ``hwf verify``, adoption from Alma's history) goes
through these two, so the lease rules and the shape of a ``transition`` event live here only.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from orchestrator.domain.machine import Step, StepFacts, fire
from orchestrator.errors import LeaseHeldError
from orchestrator.service.context import Context, add_event, format_utc
from orchestrator.store.leases import LeaseKeeper, claim, holder, release
from orchestrator.store.models import AlmaSet, Attempt


@contextmanager
def holding_lease(ctx: Context, set_id: int) -> Iterator[LeaseKeeper]:
    """Claim the set's lease, keep it renewed while the caller works, release it afterwards.

    :raises LeaseHeldError: another live hwf process holds the set.
    """
    now = ctx.clock()
    with ctx.sessions.begin() as session:
        if not claim(session, set_id, ctx.owner, now, ctx.config.lease_seconds):
            owner, expires = holder(session, set_id)
            until = f" until {format_utc(expires)}" if expires else ""
            raise LeaseHeldError(f"another hwf process ({owner}) holds this set{until}; try again later")
    try:
        with LeaseKeeper(ctx.sessions, set_id, ctx.owner, ctx.config.lease_seconds, ctx.clock) as keeper:
            yield keeper
    finally:
        with ctx.sessions.begin() as session:
            release(session, set_id, ctx.owner)


def fire_step(
    ctx: Context,
    session: Session,
    row: AlmaSet,
    step: Step,
    facts: StepFacts,
    now: datetime,
    *,
    how: str = "",
    **data: Any,
) -> bool:
    """Fire ``step``'s trigger on ``row`` and, if it moved, write its ``transition`` event in the same
    transaction (the caller's). ``how`` is added to the event's text (", adopted from ...")."""
    before = row.stage
    if not fire(row, step, facts):
        return False
    row.waiting = None
    row.wait_until = None
    add_event(
        session,
        row,
        "transition",
        f"{before.value} -> {row.stage.value} ({step.value}{how})",
        at=now,
        actor=ctx.owner,
        **{"from": before.value, "to": row.stage.value, "trigger": step.value},
        **data,
    )
    return True


def latest_attempt(session: Session, set_id: int, step: Step) -> Attempt | None:
    """The set's newest attempt at ``step``, if any."""
    return session.scalar(
        select(Attempt).where(Attempt.set_id == set_id, Attempt.step == step.value).order_by(Attempt.number.desc())
    )
