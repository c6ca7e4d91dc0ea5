"""Binding the person's run to an integration batch, and following it to its end (``actions.batch`` forms and
announces the batches; see there for the whole story).

A run binds when it is new since the batch was formed, not submitted through the API, adopted by no other batch
or set, and ran on as many records as the batch holds, once its counters say so. When it ends, its end is each
set's: each set is then fired, settled and verified on its own.
"""

from __future__ import annotations

import shlex
from dataclasses import asdict
from datetime import timedelta
from typing import TYPE_CHECKING

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from orchestrator.alma.types import JobInstance
from orchestrator.display import duration, utc_stamp
from orchestrator.domain.attention import Attention
from orchestrator.domain.jobrules import (
    UNKNOWN_INSTANCE_CODES,
    describe_counters,
    exception_count,
    handles_created,
    instance_window,
    next_poll_interval,
    records_processed,
    run_ok,
    submitted_by_api,
)
from orchestrator.domain.steps import Step
from orchestrator.domain.wording import plural
from orchestrator.errors import AlmaError, BadInputError
from orchestrator.service.actions.instances import taken_instances
from orchestrator.store.models import RAW_REPLY_CAP, AlmaSet, Attempt, AttemptState, Event, IntegrationBatch

if TYPE_CHECKING:
    from orchestrator.service.context import Context

_INTEGRATION = Step.INTEGRATE.job_key or ""
OPEN = ("creating", "announced", "bound")  # integration batches not finished


def batch_members(session: Session, batch_id: int) -> list[tuple[int, int]]:
    """(attempt id, set id) of the batch's sets."""
    rows = session.execute(select(Attempt.id, Attempt.set_id).where(Attempt.batch_id == batch_id).order_by(Attempt.id))
    return [(attempt_id, set_id) for attempt_id, set_id in rows]


def look_for_run(ctx: Context, batch_id: int) -> None:
    """Find the person's run of the integration profile for an announced batch."""
    job_id = ctx.config.alma.jobs[_INTEGRATION].id
    with ctx.sessions() as session:
        batch = session.get_one(IntegrationBatch, batch_id)
        since, records, seen = batch.announced_at or batch.created_at, batch.records, set(batch.seen_before or ())
        taken = (
            taken_instances(session) | seen | {i for i in session.scalars(select(IntegrationBatch.instance_id)) if i}
        )
    date_from, date_to = instance_window(since, ctx.clock())
    candidates = [
        _with_counters(ctx, i)
        # Any run by a person may be the batch's (its counters tell): no entry of the list is skipped unread.
        for i in ctx.alma.list_instances(job_id, date_from=date_from, date_to=date_to, wanted=lambda _name: True)
        if i.id not in taken and not submitted_by_api(i.submitted_by)
    ]
    # a run that minted new handles did not run on the batch (its records have their handles from the migration)
    minted = [i for i in candidates if i.terminal and (handles_created(i.counters) or 0) > 0]
    candidates = [i for i in candidates if i not in minted]
    fitting = [i for i in candidates if records_processed(i.counters) == records]
    # a run still going whose counters do not (yet) say it ran on the batch's records: watched until they do
    undecided = [i for i in candidates if i not in fitting and not i.terminal]
    silent = [i for i in candidates if i.terminal and records_processed(i.counters) is None]
    if len(fitting) == 1 and not undecided:
        try:
            bind(ctx, batch_id, fitting[0], how="found")
        except BadInputError:
            return  # the operator's `hwf confirm` bound a run meanwhile: that binding stands
    elif len(fitting) > 1 or (not fitting and silent and not undecided):
        _cannot_tell(ctx, batch_id, fitting or silent, several=len(fitting) > 1)
    else:
        _look_again(ctx, batch_id, undecided, minted)


def _with_counters(ctx: Context, inst: JobInstance) -> JobInstance:
    """The instance with its counters: a listing may leave them out, its own reply has them."""
    if inst.counters or not inst.id:
        return inst
    try:
        return ctx.alma.get_instance(inst.job_id, inst.id)
    except AlmaError:
        return inst


def bind(ctx: Context, batch_id: int, inst: JobInstance, *, how: str) -> None:
    """Record ``inst`` as the batch's run, on the batch and on each of its sets (``how``: found, confirmed)."""
    cfg = ctx.config.alma
    with ctx.ledger() as book:
        claimed = book.session.execute(  # bound once: a concurrent binding (hwf's own, or confirm) loses here
            update(IntegrationBatch)
            .where(IntegrationBatch.id == batch_id, IntegrationBatch.state == "announced")
            .values(state="bound", instance_id=inst.id, job_id=inst.job_id, bound_at=book.now, watching=None)
            .execution_options(synchronize_session=False)
        )
        if getattr(claimed, "rowcount", 0) != 1:
            raise BadInputError(f"integration batch {batch_id} is no longer waiting for its run; nothing bound")
        batch = book.session.get_one(IntegrationBatch, batch_id)
        book.session.refresh(batch)
        batch.submitted_by, batch.alma_submitted_at, batch.status = inst.submitted_by, inst.submit_time, inst.status
        batch.progress, batch.counters = inst.progress, [asdict(c) for c in inst.counters]
        batch.poll_interval, batch.next_check_at = cfg.poll_interval_seconds, book.now
        who = f"submitted by {inst.submitted_by or 'a person'}"
        when = f" at {utc_stamp(inst.submit_time)}" if inst.submit_time else ""
        n = records_processed(inst.counters)
        counted = f", {n:,} records" if n is not None else ""
        detail = (
            f"integrate: bound run {inst.id} of job {inst.job_id} ({who}{when}{counted}) to integration batch "
            f"{batch.number}"
        )
        if how == "confirmed":
            detail += " (confirmed by the operator)"
        for attempt_id, set_id in batch_members(book.session, batch_id):
            attempt = book.attempt(attempt_id)
            attempt.state, attempt.submitted_at, attempt.alma_submitted_at = (
                AttemptState.SUBMITTED,
                book.now,
                inst.submit_time,
            )
            attempt.next_poll_at = book.now
            row = book.set(set_id)
            if row.attention_kind == Attention.RECONCILE:
                book.clear_attention(row)
            book.stop_waiting(row)
            book.event(
                row,
                "reconciled",
                detail,
                job_id=inst.job_id,
                instance_id=inst.id,
                batch=batch.number,
                submitted_by=inst.submitted_by,
            )
        name = batch.name
    ctx.reporter.note(name, f"found the run {inst.id} ({who}{when}); following it")


def _cannot_tell(ctx: Context, batch_id: int, runs: list[JobInstance], *, several: bool) -> None:
    with ctx.ledger() as book:
        batch = book.session.get_one(IntegrationBatch, batch_id)
        listed = ", ".join(f"{i.id} ({i.status}, by {i.submitted_by or '?'})" for i in runs)
        if several:
            what = f"{len(runs)} runs of the Handle integration profile ran on {batch.records:,} records ({listed})"
        else:
            what = (
                f"runs of the Handle integration profile ended without saying how many records they ran on ({listed})"
            )
        reason = (
            f"integration batch {batch.number} ({batch.name!r}): {what}; hwf will not guess. Check them in Alma "
            f"(Monitor Jobs), then `hwf confirm {shlex.quote(batch.name)} --instance ID` binds the one that ran on "
            "the batch"
        )
        for _, set_id in batch_members(book.session, batch_id):
            book.attention(book.set(set_id), Attention.RECONCILE, reason)
        batch.watching = None
        batch.next_check_at = book.now + timedelta(seconds=ctx.config.alma.poll_max_interval_seconds)


def _look_again(ctx: Context, batch_id: int, going: list[JobInstance], minted: list[JobInstance]) -> None:
    """No run to bind yet: look again later. ``going``: a person's runs still going whose counters do not yet say
    how many records they ran on; while there are some, the batch waits for hwf, not for a person. ``minted``:
    runs passed over because they created new handles (said once in each set's history, and in the wait)."""
    cfg = ctx.config.alma
    with ctx.ledger() as book:
        batch = book.session.get_one(IntegrationBatch, batch_id)
        batch.poll_interval = next_poll_interval(batch.poll_interval, cfg.poll_max_interval_seconds)
        batch.next_check_at = book.now + timedelta(seconds=batch.poll_interval)
        batch.watching = ", ".join(i.id for i in going) or None
        waited = duration((book.now - (batch.announced_at or book.now)).total_seconds())
        if going:
            text = (
                f"integration batch {batch.number}: watching {plural(len(going), 'run')} of the Handle integration "
                f"profile started by a person ({batch.watching}) until its counters say it ran on the batch's "
                f"{batch.records:,} records"
            )
        else:
            text = (
                f"needs a person: press Run on the Handle integration profile for Alma set {batch.name!r} "
                f"(integration batch {batch.number}; announced {utc_stamp(batch.announced_at or book.now)}, "
                f"waiting {waited})"
            )
        passed_over = _passed_over(minted, batch.number)
        if passed_over:
            text += f"; {passed_over}"
        for attempt_id, set_id in batch_members(book.session, batch_id):
            book.attempt(attempt_id).next_poll_at = batch.next_check_at
            row = book.set(set_id)
            if not row.attention:
                book.wait(row, text, batch.next_check_at, same_as=None if going else "needs a person: press Run")
            for inst in minted:
                if not book.session.scalar(
                    select(Event.id).where(
                        Event.set_id == set_id, Event.kind == "passed_over", Event.detail.contains(inst.id)
                    )
                ):
                    book.event(row, "passed_over", _passed_over([inst], batch.number), instance_id=inst.id)


def _passed_over(minted: list[JobInstance], number: int) -> str:
    if not minted:
        return ""
    listed = ", ".join(
        f"{i.id} (by {i.submitted_by or '?'}, {handles_created(i.counters) or 0:,} new handles)" for i in minted
    )
    return (
        f"passed over {listed}: a run on integration batch {number} creates no new handle (its records have theirs "
        "from the migration job), so it ran on other records"
    )


# ---------------------------------------------------------------------------------------------
# following the run


def poll_run(ctx: Context, batch_id: int) -> None:
    with ctx.sessions() as session:
        batch = session.get_one(IntegrationBatch, batch_id)
        job_id, instance_id = batch.job_id, batch.instance_id
    assert job_id is not None and instance_id is not None
    try:
        inst, body = ctx.alma.get_instance_reply(job_id, instance_id)
    except AlmaError as exc:
        if exc.status != 400 or exc.code not in UNKNOWN_INSTANCE_CODES:
            raise
        _unknown(ctx, batch_id, exc)
        return
    if inst.terminal:
        _finished(ctx, batch_id, inst, body)
        return
    cfg = ctx.config.alma
    with ctx.ledger() as book:
        batch = book.session.get_one(IntegrationBatch, batch_id)
        batch.status, batch.progress, batch.counters = inst.status, inst.progress, [asdict(c) for c in inst.counters]
        batch.poll_interval = next_poll_interval(batch.poll_interval, cfg.poll_max_interval_seconds)
        batch.next_check_at = book.now + timedelta(seconds=batch.poll_interval)
        for attempt_id, _ in batch_members(book.session, batch_id):
            attempt = book.attempt(attempt_id)
            attempt.status, attempt.progress, attempt.next_poll_at = inst.status, inst.progress, batch.next_check_at


def _finished(ctx: Context, batch_id: int, inst: JobInstance, body: bytes | None) -> None:
    """The run ended: its end is each set's; a run that did not end well stops each set (attention job)."""
    counters = [asdict(c) for c in inst.counters]
    alerts = [asdict(a) for a in inst.alerts]
    ok = run_ok(inst.status, counters)
    with ctx.ledger() as book:
        batch = book.session.get_one(IntegrationBatch, batch_id)
        batch.state, batch.status, batch.progress, batch.ended_at = "finished", inst.status, inst.progress, book.now
        batch.counters, batch.alerts, batch.alma_ended_at = counters, alerts, inst.end_time
        batch.raw_reply = body[:RAW_REPLY_CAP] if body is not None else None
        desc = f" ({inst.status_desc})" if inst.status_desc else ""
        text = (
            f"integrate: integration batch {batch.number}'s run {inst.id} ended {inst.status}{desc}; "
            f"{describe_counters(counters)}"
        )
        for attempt_id, set_id in batch_members(book.session, batch_id):
            attempt = book.attempt(attempt_id)
            attempt.state, attempt.status, attempt.progress = AttemptState.FINISHED, inst.status, inst.progress
            attempt.counters, attempt.alerts, attempt.ended_at = counters, alerts, book.now
            attempt.alma_started_at, attempt.alma_ended_at = inst.start_time, inst.end_time
            attempt.next_poll_at = None
            row = book.set(set_id)
            book.stop_waiting(row)
            book.event(
                row,
                "job_finished",
                text,
                job_id=inst.job_id,
                instance_id=inst.id,
                status=inst.status,
                counters=counters,
                alerts=alerts,
                batch=batch.number,
            )
            if not ok:
                why = f"ended {inst.status}{desc}" if exception_count(counters) == 0 else "had records with exceptions"
                book.attention(
                    row,
                    Attention.JOB,
                    f"integration batch {batch.number}'s run {inst.id} {why} ({describe_counters(counters)}); see "
                    f"the job report in Alma, fix the cause, then `hwf retry {row.alma_set_id} --reason TEXT` (the "
                    "set joins a new batch)",
                )
        name = batch.name
    ctx.reporter.note(name, f"the run {inst.id} ended {inst.status}")


def _unknown(ctx: Context, batch_id: int, exc: AlmaError) -> None:
    with ctx.ledger() as book:
        batch = book.session.get_one(IntegrationBatch, batch_id)
        for _, set_id in batch_members(book.session, batch_id):
            row = book.set(set_id)
            book.attention(
                row,
                Attention.INSTANCE_UNKNOWN,
                f"integrate: Alma no longer knows integration batch {batch.number}'s run {batch.instance_id} "
                f"({exc.code}); look for it in Monitor Jobs, then "
                f"`hwf confirm {shlex.quote(batch.name)} --instance ID`",
            )
        batch.next_check_at = book.now + timedelta(seconds=ctx.config.alma.poll_max_interval_seconds)


def batch_named(session: Session, ref: str) -> IntegrationBatch | None:
    """The batch named ``ref`` (its Alma set's name or id, or its number), or the open batch of the set ``ref``."""
    ref = ref.strip()
    found = session.scalar(
        select(IntegrationBatch).where(or_(IntegrationBatch.name == ref, IntegrationBatch.alma_set_id == ref))
    )
    if found is not None:
        return found
    row = session.scalar(select(AlmaSet).where(or_(AlmaSet.alma_set_id == ref, AlmaSet.name == ref)))
    if row is None:
        return None
    return session.scalar(
        select(IntegrationBatch)
        .join(Attempt, Attempt.batch_id == IntegrationBatch.id)
        .where(Attempt.set_id == row.id, IntegrationBatch.state.in_(OPEN))
        .order_by(IntegrationBatch.number.desc())
    )
