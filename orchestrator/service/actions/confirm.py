"""``hwf confirm SET --instance ID``: the operator names the run that counts.

For a set's own step (a step run by hand, an ambiguous reconciliation, an instance Alma no longer knows, several
earlier runs of a step hwf has no attempt for) the instance must be a run of the step's job, on this set (its
name or parameters say so; ``--force`` for a reply that names no set), adopted by no other set. For a set in an
integration batch (SET may also be the batch's own name), it must be a run of the handle integration job that
a person started, adopted by no other batch or set, and, when its counters say how many records it ran on, on
as many as the batch holds (``--force`` when they do not say).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.orm import Session

from orchestrator.domain.attention import Attention
from orchestrator.domain.jobrules import (
    UNKNOWN_INSTANCE_CODES,
    SetMatch,
    handles_created,
    match_instance,
    records_processed,
    submitted_by_api,
)
from orchestrator.domain.steps import Stage, Step, next_step
from orchestrator.errors import AlmaError, BadInputError
from orchestrator.service.actions.batchrun import batch_named, bind
from orchestrator.service.actions.instances import adopt_instance, adopted_by
from orchestrator.service.context import find_set
from orchestrator.store.ledger import Ledger
from orchestrator.store.models import AlmaSet, Attempt, AttemptState, IntegrationBatch

if TYPE_CHECKING:
    from orchestrator.alma.types import JobInstance
    from orchestrator.service.context import Context


def confirm(ctx: Context, ref: str, instance_id: str, *, force: bool = False) -> str:
    """Adopt an instance the operator names for the set's waiting step (manual integration, an
    ambiguous reconciliation, an instance Alma no longer knows). The instance must be a run of the
    step's job, on this set, and not adopted by any other attempt; ``force`` adopts one whose reply
    names no set at all (recorded in the event).

    :raises BadInputError: no step is waiting, or the instance does not fit (what does not match is named).
    """
    instance_id = instance_id.strip()
    with ctx.sessions() as session:
        batch = batch_named(session, ref)
        if batch is not None and batch.state in ("bound", "finished") and batch.instance_id:
            raise BadInputError(
                f"integration batch {batch.number} ({batch.name!r}) is already bound to run {batch.instance_id}; "
                "a batch's run is bound once"
            )
        batch_id = batch.id if batch is not None and batch.state == "announced" else None
    if batch_id is not None:
        return _confirm_batch(ctx, batch_id, instance_id, force=force)
    with ctx.ledger() as book:
        row = find_set(book.session, ref)
        step, attempt = _waiting_step(ctx, book, row)
        set_id, attempt_id, job_id, job_name = row.id, attempt.id, attempt.job_id, attempt.job_name
        alma_set_id, set_name = row.alma_set_id, row.name
        taken = adopted_by(book.session, instance_id)
        if taken is not None:
            raise BadInputError(f"instance {instance_id} is already adopted by {taken}; it cannot be this set's too")
        taken = _batch_of(book.session, instance_id)
        if taken is not None:
            raise BadInputError(f"instance {instance_id} is already adopted by {taken}; it cannot be this set's too")
    assert job_id is not None
    inst = _instance(ctx, job_id, instance_id, f"the {step.value}")
    match, why = match_instance(inst, job_id, step, alma_set_id, set_name, None if _hwf_named(job_name) else job_name)
    if match is SetMatch.OTHER:
        raise BadInputError(f"instance {inst.id} is not set {alma_set_id}'s {step.value} run: {why}")
    forced = match is SetMatch.UNKNOWN
    if forced and not force:
        raise BadInputError(
            f"nothing ties instance {inst.id} to set {alma_set_id}: {why}. Check in Alma (Monitor Jobs) that "
            f"it ran on set {set_name!r}, then add --force"
        )
    with ctx.ledger() as book:
        row = book.set(set_id)
        book.clear_attention(row)
        text = f"operator confirmed instance {inst.id} of job {job_id} for {step.value}: " + (
            f"forced (--force): {why}" if forced else why
        )
        book.event(row, "confirm", text, instance_id=inst.id, forced=forced)
    adopt_instance(ctx, set_id, attempt_id, inst.id, how="operator", alma_submitted=inst.submit_time)
    return f"adopted job {job_id} instance {inst.id} ({inst.status}) for set {ref}" + (" (forced)" if forced else "")


def _waiting_step(ctx: Context, book: Ledger, row: AlmaSet) -> tuple[Step, Attempt]:
    """The step whose job instance the set waits to have confirmed, and its attempt.

    :raises BadInputError: the set waits for no instance."""
    step = next_step(row.stage)
    attempt = book.latest_attempt(row.id, step) if step is not None and step.job_key is not None else None
    if attempt is None and step is not None and step.job_key and row.attention_kind == Attention.EARLIER_RUNS:
        # Several earlier runs and no attempt: the operator's pick is recorded on a new one (nothing is submitted).
        job_id = ctx.config.alma.jobs[step.job_key].id
        attempt = book.new_attempt(row, step, AttemptState.WAITING_OPERATOR, job_id=job_id, origin="operator")
    waiting = attempt is not None and (
        attempt.state in (AttemptState.WAITING_OPERATOR, AttemptState.SUBMITTING)
        or (attempt.state is AttemptState.SUBMITTED and row.attention_kind == Attention.INSTANCE_UNKNOWN)
    )
    if step is None or attempt is None or not waiting or row.stage not in _CONFIRMABLE:
        raise BadInputError(f"set {row.alma_set_id} is not waiting for a job instance to be confirmed")
    return step, attempt


_CONFIRMABLE = frozenset(s for s in Stage if (n := next_step(s)) is not None and n.job_key is not None)


def _batch_of(session: Session, instance_id: str) -> str | None:
    """Which integration batch already bound ``instance_id``, or None."""
    found = session.scalar(select(IntegrationBatch).where(IntegrationBatch.instance_id == instance_id))
    return f"integration batch {found.number} ({found.name!r})" if found is not None else None


def _confirm_batch(ctx: Context, batch_id: int, instance_id: str, *, force: bool) -> str:
    job_id = ctx.config.alma.jobs[Step.INTEGRATE.job_key or ""].id
    with ctx.sessions() as session:
        batch = session.get_one(IntegrationBatch, batch_id)
        name, records = batch.name, batch.records
        taken = adopted_by(session, instance_id) or _batch_of(session, instance_id)
    if taken is not None:
        raise BadInputError(f"instance {instance_id} is already adopted by {taken}; it cannot be this batch's too")
    inst = _instance(ctx, job_id, instance_id, "the handle integration")
    if inst.job_id != job_id:
        raise BadInputError(f"instance {inst.id} is a run of job {inst.job_id}, not of the integration job {job_id}")
    if submitted_by_api(inst.submitted_by):
        raise BadInputError(
            f"instance {inst.id} was submitted through the API ({inst.submitted_by}), not by a person pressing Run "
            "on the Handle integration profile"
        )
    minted = handles_created(inst.counters)
    if minted and not force:
        raise BadInputError(
            f"instance {inst.id} created {minted:,} new handles, and a run on integration batch {name!r} creates none "
            "(its records have their handles from the migration job): check in Alma (Monitor Jobs) that it ran on "
            "that set, then add --force"
        )
    counted = records_processed(inst.counters)
    if counted is not None and counted != records:
        raise BadInputError(
            f"instance {inst.id} ran on {counted:,} records; integration batch {name!r} holds {records:,}"
        )
    if counted is None and not force:
        raise BadInputError(
            f"nothing in Alma's reply says how many records instance {inst.id} ran on: check in Alma (Monitor Jobs) "
            f"that it ran on the set {name!r}, then add --force"
        )
    bind(ctx, batch_id, inst, how="confirmed")
    with ctx.ledger() as book:
        for set_id in book.session.scalars(select(Attempt.set_id).where(Attempt.batch_id == batch_id)):
            book.event(
                book.set(set_id),
                "confirm",
                f"operator confirmed instance {inst.id} as integration batch {name!r}'s run"
                + (" (forced: its reply does not say how many records it ran on)" if counted is None else ""),
                instance_id=inst.id,
                forced=counted is None,
            )
    return f"bound instance {inst.id} ({inst.status}) to integration batch {name!r}" + (
        " (forced)" if counted is None else ""
    )


def _hwf_named(job_name: str | None) -> bool:
    """The attempt's job name is the one hwf gave its own submission (not Alma's name of the job)."""
    return bool(job_name) and str(job_name).startswith("hwf ")


def _instance(ctx: Context, job_id: str, instance_id: str, what: str) -> JobInstance:
    try:
        return ctx.alma.get_instance(job_id, instance_id)
    except AlmaError as exc:
        if exc.status == 400 and exc.code in UNKNOWN_INSTANCE_CODES:
            raise BadInputError(
                f"Alma knows no instance {instance_id} of {what} job {job_id} ({exc.code}): check the Job ID in "
                "Monitor Jobs"
            ) from None
        raise
