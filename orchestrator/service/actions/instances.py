"""What the rooms that look for a job instance share: the instances already adopted, listing a job's
instances over a window, and adopting one instance for an attempt (the run hwf then polls)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.orm import Session

from orchestrator.domain.jobrules import instance_window
from orchestrator.service.actions.base import PlannedRequest, Scene
from orchestrator.store.models import AlmaSet, Attempt, AttemptState

if TYPE_CHECKING:
    from orchestrator.service.context import Context

_ADOPTED = {
    "submitted": "{step}: job {job} submitted, instance {instance}",
    "reconciled": "{step}: found the lost submission: job {job} instance {instance} carries token {token}; adopted, "
    "not resubmitted",
    "fallback": "{step}: adopted job {job} instance {instance} (submitted by the API after this attempt, for this "
    "set; the token was not echoed)",
    "operator": "{step}: adopted the operator's run, job {job} instance {instance}",
}


def taken_instances(session: Session, job_id: str | None = None) -> set[str]:
    """The instance ids attempts have adopted (of ``job_id``, or of any job): one run never counts twice."""
    query = select(Attempt.instance_id).where(Attempt.instance_id.is_not(None))
    if job_id is not None:
        query = query.where(Attempt.job_id == job_id)
    return {i for i in session.scalars(query) if i}


def adopted_by(session: Session, instance_id: str) -> str | None:
    """Which set and step already adopted ``instance_id`` (``"set 123's migrate attempt 1"``), or None."""
    found = session.execute(
        select(AlmaSet.alma_set_id, Attempt.step, Attempt.number)
        .join(AlmaSet, AlmaSet.id == Attempt.set_id)
        .where(Attempt.instance_id == instance_id)
    ).first()
    if found is None:
        return None
    return f"set {found[0]}'s {found[1]} attempt {found[2]}"


def adopt_instance(
    ctx: Context, set_id: int, attempt_id: int, instance_id: str, *, how: str, alma_submitted: datetime | None
) -> None:
    """Record that ``attempt`` is Alma's instance ``instance_id`` (``how``: submitted, reconciled, fallback,
    operator): from now on hwf polls it, and no other attempt may take it."""
    with ctx.ledger() as book:
        row, attempt = book.set(set_id), book.attempt(attempt_id)
        attempt.instance_id = instance_id
        attempt.state = AttemptState.SUBMITTED
        attempt.submitted_at = book.now
        attempt.alma_submitted_at = alma_submitted
        attempt.poll_interval = ctx.config.alma.poll_interval_seconds
        attempt.next_poll_at = book.now + timedelta(seconds=ctx.config.alma.poll_interval_seconds)
        book.stop_waiting(row)
        detail = _ADOPTED[how].format(step=attempt.step, job=attempt.job_id, instance=instance_id, token=attempt.token)
        book.event(
            row,
            "submitted" if how == "submitted" else "reconciled",
            detail,
            job_id=attempt.job_id,
            instance_id=instance_id,
            token=attempt.token,
            attempt=attempt.number,
        )


def listing_request(scene: Scene, job_id: str, since: datetime) -> PlannedRequest:
    """The first request of a look through ``job_id``'s instances submitted since ``since``."""
    date_from, date_to = instance_window(since, scene.now)
    return PlannedRequest.of(
        scene.alma.instances_request(job_id, date_from=date_from, date_to=date_to),
        note="more pages follow while Alma has more instances",
    )
