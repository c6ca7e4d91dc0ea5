"""Manual integration: one click of Run a day, bound to the right sets by hwf.

Ex Libris documents no API run of the handle integration profile: a person presses Run in Configuration >
Integration Profiles, on a set they name. So that a migration of a hundred sets does not need a hundred visits
to that page, sets that reach ``migrated`` wait in one queue, and hwf makes one itemized Alma set, an
*integration batch*, of the included records of every queued set (their members compared with hwf's records
just before). It closes a batch at once when every set not needing attention has reached ``migrated``; else
when it is full (``[alma.jobs] integration_batch_max_records``), or when no further set can reach ``migrated``
within ``integration_batch_wait_minutes``. A batch's membership is frozen once announced.

The announcement (terminal, ``hwf status``, ``hwf overview``, the dashboard, a notification) gives the exact
clicks. hwf then reads the integration job's runs: the one that binds is new since the batch was formed, not
submitted through the API, adopted by no other batch or set, and ran on as many records as the batch holds,
once its counters say so (a run still going is watched until they do). One such run: every set of the batch
records it and goes on when it ends well; none yet: hwf looks again; several, or a run that never says how many
records it ran on: attention, and ``hwf confirm SET --instance ID`` (SET: any set of the batch, or the batch's
own name). When the run ends, each set is fired, settled and verified on its own.

Crash safety: a batch and its members are committed before its Alma set is created, under a name Alma keeps
unique, so a crash finds the set again by name (no twin); the runs Alma had before the batch formed are recorded
with it, so a person's run after it is found however long hwf was away; an instance is bound to one batch only
(a unique column), and to no set's own attempt.
"""

from __future__ import annotations

import shlex
from dataclasses import asdict
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from orchestrator.alma.types import JobInstance
from orchestrator.display import duration, utc_stamp
from orchestrator.domain.attention import WAITS_FOR_A_RUN, Attention
from orchestrator.domain.clicks import profile_clicks
from orchestrator.domain.jobrules import (
    UNKNOWN_INSTANCE_CODES,
    describe_counters,
    exception_count,
    history_window,
    instance_window,
    next_poll_interval,
    records_processed,
    run_ok,
    submitted_by_api,
)
from orchestrator.domain.steps import Stage, Step
from orchestrator.domain.wording import plural
from orchestrator.errors import AlmaError
from orchestrator.service.actions.base import Plan, PlannedAction, PlannedRequest, Preview, Scene, arrow
from orchestrator.service.actions.instances import listing_request, taken_instances
from orchestrator.service.almasets import create_named, fill_set
from orchestrator.service.eta import OnTheWay, mean_durations, soonest_migrated
from orchestrator.service.membership import stop_on_drift
from orchestrator.store.ledger import Ledger
from orchestrator.store.models import RAW_REPLY_CAP, AlmaSet, Attempt, AttemptState, IntegrationBatch, Record

if TYPE_CHECKING:
    from orchestrator.service.context import Context

_INTEGRATION = Step.INTEGRATE.job_key or ""
_OPEN = ("creating", "announced", "bound")
_QUEUE_LOOK_SECONDS = 60.0  # how often a non-empty queue is looked at again while it cannot close
_LEASE_SECONDS = 120.0


class Batch:
    """The integration batches' work: join the queue, then whatever the batches need now."""

    def run(self, ctx: Context, set_id: int, plan: Plan) -> None:
        if plan.attempt_id is None:
            join(ctx, set_id)
        tick(ctx)

    def describe(self, scene: Scene, plan: Plan, when: str) -> Preview:
        cfg = scene.ctx.config.alma
        attempt = scene.session.get(Attempt, plan.attempt_id) if plan.attempt_id is not None else None
        batch = scene.session.get(IntegrationBatch, attempt.batch_id) if attempt and attempt.batch_id else None
        job_id = cfg.jobs[_INTEGRATION].id
        transition = (
            f"{arrow(Step.INTEGRATE)} (integrate) once the batch's run ends well; any other end: attention (job)"
        )
        if batch is None:
            summary = (
                "manual integration: queue the set for the next integration batch; the batch closes when every "
                f"set not needing attention has reached migrated, at {cfg.integration_batch_max_records:,} records, "
                f"or when no set can reach migrated within {cfg.integration_batch_wait_minutes:g} min; then hwf "
                "makes its itemized Alma set and asks you to press Run on the Handle integration profile for it"
            )
            return Preview((PlannedAction(when, "batch", summary),), transition)
        if batch.state == "bound" and batch.instance_id:
            request = PlannedRequest.of(
                scene.alma.instance_request(job_id, batch.instance_id),
                note="repeated with a growing interval until the run ends",
            )
            summary = f"poll integration batch {batch.number}'s run {batch.instance_id} (last seen: {batch.status})"
            return Preview((PlannedAction(when, "batch", summary, (request,)),), transition)
        summary = (
            f"look for your run of the Handle integration profile on {batch.name!r} among job {job_id}'s runs "
            f"(or take `hwf confirm {scene.row.alma_set_id} --instance ID`)"
        )
        since = batch.announced_at or batch.created_at
        return Preview((PlannedAction(when, "batch", summary, (listing_request(scene, job_id, since),)),), transition)


def join(ctx: Context, set_id: int) -> None:
    """Put the set's integration in the queue for the next integration batch."""
    with ctx.ledger() as book:
        row = book.set(set_id)
        book.new_attempt(row, Step.INTEGRATE, AttemptState.QUEUED, origin="operator", next_poll_at=book.now)
        book.event(row, "queued", "integrate: queued for the next integration batch")


def tick(ctx: Context) -> None:
    """Do what the integration batches need now: close the queue into a batch, make and announce a batch's Alma
    set, look for a person's run, poll a bound run. Each batch is worked on by one hwf process at a time."""
    _form(ctx)
    now = ctx.clock()
    with ctx.sessions() as session:
        due = session.scalars(
            select(IntegrationBatch.id)
            .where(IntegrationBatch.state.in_(_OPEN))
            .where(or_(IntegrationBatch.next_check_at.is_(None), IntegrationBatch.next_check_at <= now))
            .order_by(IntegrationBatch.number)
        ).all()
    for batch_id in due:
        if not _claim(ctx, batch_id):
            continue
        try:
            with ctx.sessions() as session:
                state = session.get_one(IntegrationBatch, batch_id).state
            {"creating": _make, "announced": _look, "bound": _poll}[state](ctx, batch_id)
        finally:
            _release(ctx, batch_id)


# ---------------------------------------------------------------------------------------------
# forming a batch


def _form(ctx: Context) -> None:
    """Close the queue into a new batch when one of the closing rules holds; else tell the queued sets when."""
    cfg = ctx.config.alma
    now = ctx.clock()
    with ctx.sessions() as session:
        queued = _queued(session)
        if not queued:
            return
        on_the_way = _on_the_way(session, now)
        durations = mean_durations(list(session.execute(_timing_query()).all()))
    total = sum(records for _, _, records in queued)
    soonest = soonest_migrated(now, on_the_way, durations)
    wait = timedelta(minutes=cfg.integration_batch_wait_minutes)
    if not on_the_way:
        why = "every set not needing attention has reached migrated"
    elif total >= cfg.integration_batch_max_records:
        why = f"it is full ({total:,} records; at most {cfg.integration_batch_max_records:,})"
    elif soonest is not None and soonest > now + wait:
        why = f"no other set can reach migrated within {cfg.integration_batch_wait_minutes:g} min"
    else:
        _still_queued(ctx, queued, total, soonest, now + wait)
        return
    chosen: list[tuple[int, int]] = []
    records = 0
    for attempt_id, set_id, count in queued:
        if chosen and records + count > cfg.integration_batch_max_records:
            break
        chosen.append((attempt_id, set_id))
        records += count
    date_from, date_to = history_window(now)
    seen = sorted(
        {i.id for i in ctx.alma.list_instances(cfg.jobs[_INTEGRATION].id, date_from=date_from, date_to=date_to)}
    )
    try:
        with ctx.ledger() as book:
            _open_batch(book, chosen, records, why, seen)
    except IntegrityError:
        return  # another hwf process formed a batch at the same moment: the next look sees it


def _queued(session: Session) -> list[tuple[int, int, int]]:
    """(attempt id, set id, included records) of the sets waiting for a batch, oldest first (a set that needs
    attention waits out of the queue)."""
    included = (
        select(Record.set_id, func.count().label("n"))
        .where(Record.excluded.is_(False))
        .group_by(Record.set_id)
        .subquery()
    )
    rows = session.execute(
        select(Attempt.id, Attempt.set_id, func.coalesce(included.c.n, 0), AlmaSet.attention, AlmaSet.attention_kind)
        .join(AlmaSet, AlmaSet.id == Attempt.set_id)
        .outerjoin(included, included.c.set_id == Attempt.set_id)
        .where(Attempt.state == AttemptState.QUEUED, Attempt.batch_id.is_(None), AlmaSet.stage == Stage.MIGRATED)
        .order_by(Attempt.begun_at, Attempt.id)
    ).all()
    return [(a, s, int(n)) for a, s, n, attention, kind in rows if not attention or kind in WAITS_FOR_A_RUN]


def _on_the_way(session: Session, now: datetime) -> list[OnTheWay]:
    """The sets that may still reach ``migrated`` without a person (no attention that stops them)."""
    rows = session.execute(
        select(AlmaSet.id, AlmaSet.stage, AlmaSet.attention, AlmaSet.attention_kind).where(
            AlmaSet.stage.in_([Stage.CREATED, Stage.IDENTIFIERS_COPIED])
        )
    ).all()
    moving = {r.id: r.stage for r in rows if not r.attention or r.attention_kind in WAITS_FOR_A_RUN}
    running: dict[int, tuple[str, float]] = {}
    if moving:
        for set_id, step, begun in session.execute(
            select(Attempt.set_id, Attempt.step, Attempt.begun_at).where(
                Attempt.set_id.in_(list(moving)),
                Attempt.state.in_([AttemptState.SUBMITTING, AttemptState.SUBMITTED]),
            )
        ):
            running[set_id] = (step, max((now - begun).total_seconds(), 0.0))
    return [
        OnTheWay(stage, *(running[set_id] if set_id in running else (None, 0.0))) for set_id, stage in moving.items()
    ]


def _timing_query() -> Any:
    return select(
        Attempt.step,
        Attempt.state,
        Attempt.begun_at,
        Attempt.submitted_at,
        Attempt.ended_at,
        Attempt.alma_submitted_at,
        Attempt.alma_ended_at,
    ).where(Attempt.state == AttemptState.FINISHED, Attempt.origin.in_(["hwf", "found", "operator"]))


def _still_queued(
    ctx: Context, queued: list[tuple[int, int, int]], total: int, soonest: datetime | None, latest: datetime
) -> None:
    """The queue cannot close yet: say so on each queued set, and when it is looked at again."""
    cfg = ctx.config.alma
    with ctx.ledger() as book:
        look = book.now + timedelta(seconds=_QUEUE_LOOK_SECONDS)
        text = (
            f"integration: queued for the next integration batch ({plural(len(queued), 'set')}, {total:,} records "
            f"so far); it closes when every set has reached migrated, at {cfg.integration_batch_max_records:,} "
            f"records, or when no set can reach migrated within {cfg.integration_batch_wait_minutes:g} min"
        )
        if soonest is not None:
            text += f" (the next set can reach migrated about {utc_stamp(soonest)})"
        for attempt_id, set_id, _ in queued:
            book.attempt(attempt_id).next_poll_at = look
            book.wait(book.set(set_id), text, look, same_as="integration: queued")


def _open_batch(book: Ledger, chosen: list[tuple[int, int]], records: int, why: str, seen: list[str]) -> None:
    number = int(book.session.scalar(select(func.max(IntegrationBatch.number))) or 0) + 1
    day = book.now.date().isoformat()
    name = f"hwf integration batch {number} – {day} – {plural(len(chosen), 'set')}, {records:,} records"
    batch = IntegrationBatch(
        number=number,
        name=name,
        state="creating",
        records=records,
        sets=len(chosen),
        closed_because=why,
        seen_before=seen,
        created_at=book.now,
    )
    book.session.add(batch)
    book.session.flush()
    taken = book.session.execute(
        update(Attempt)
        .where(Attempt.id.in_([a for a, _ in chosen]), Attempt.batch_id.is_(None))
        .values(batch_id=batch.id)
        .execution_options(synchronize_session=False)
    )
    if getattr(taken, "rowcount", 0) != len(chosen):
        raise IntegrityError("the queue changed while the batch formed", None, Exception())
    for _, set_id in chosen:
        book.event(
            book.set(set_id), "integration_batch", f"integrate: in integration batch {number} ({why})", batch=number
        )


# ---------------------------------------------------------------------------------------------
# making and announcing its Alma set


def _members(session: Session, batch_id: int) -> list[tuple[int, int]]:
    """(attempt id, set id) of the batch's sets."""
    rows = session.execute(select(Attempt.id, Attempt.set_id).where(Attempt.batch_id == batch_id).order_by(Attempt.id))
    return [(attempt_id, set_id) for attempt_id, set_id in rows]


def _make(ctx: Context, batch_id: int) -> None:
    """Compare each set's members once more, make the batch's Alma set of their included records, announce it."""
    with ctx.sessions() as session:
        batch = session.get_one(IntegrationBatch, batch_id)
        name, number = batch.name, batch.number
        members = _members(session, batch_id)
    kept = [(a, s) for a, s in members if not stop_on_drift(ctx, s, f"forming integration batch {number}")]
    if len(kept) < len(members):
        _leave(ctx, batch_id, [(a, s) for a, s in members if (a, s) not in kept])
    if not kept:
        _drop(ctx, batch_id)
        return
    with ctx.sessions() as session:
        ids = list(
            session.scalars(
                select(Record.mms_id)
                .where(Record.set_id.in_([s for _, s in kept]), Record.excluded.is_(False))
                .order_by(Record.set_id, Record.id)
            )
        )
    info = create_named(
        ctx,
        name,
        description=f"hwf integration batch {number}: run the Handle integration profile on it",
        maybe_made=True,
    )
    fill_set(ctx, info, ids)
    count = ctx.alma.count_set_members(info.id)
    _announce(ctx, batch_id, info.id, count, [s for _, s in kept])


def _leave(ctx: Context, batch_id: int, gone: list[tuple[int, int]]) -> None:
    """Sets whose Alma set changed leave the batch before it is announced (they wait for `hwf sync`)."""
    with ctx.ledger() as book:
        batch = book.session.get_one(IntegrationBatch, batch_id)
        for attempt_id, _ in gone:
            attempt = book.attempt(attempt_id)
            attempt.batch_id = None
            attempt.state = AttemptState.QUEUED
        batch.sets -= len(gone)


def _drop(ctx: Context, batch_id: int) -> None:
    with ctx.sessions.begin() as session:
        session.delete(session.get_one(IntegrationBatch, batch_id))


def _announce(ctx: Context, batch_id: int, alma_set_id: str, count: int, set_ids: list[int]) -> None:
    cfg = ctx.config.alma
    with ctx.ledger() as book:
        batch = book.session.get_one(IntegrationBatch, batch_id)
        batch.alma_set_id, batch.records, batch.sets = alma_set_id, count, len(set_ids)
        batch.state, batch.announced_at = "announced", book.now
        batch.poll_interval = cfg.poll_interval_seconds
        batch.next_check_at = book.now + timedelta(seconds=cfg.poll_interval_seconds)
        clicks = profile_clicks(batch.name)
        text = (
            f"needs a person: press Run on the Handle integration profile for Alma set {batch.name!r} (integration "
            f"batch {batch.number}, {plural(len(set_ids), 'set')}, {count:,} records; announced {utc_stamp(book.now)})"
        )
        for attempt_id, set_id in _members(book.session, batch_id):
            attempt = book.attempt(attempt_id)
            attempt.state, attempt.next_poll_at = AttemptState.WAITING_OPERATOR, batch.next_check_at
            row = book.set(set_id)
            book.event(row, "operator_action", f"integration batch {batch.number}: {clicks}", batch=batch.number)
            book.wait(row, text, batch.next_check_at)
        book.person_needed(
            f"batch:{batch.id}",
            f"hwf: integration batch {batch.number} is ready: press Run in Alma",
            f"{clicks}\n\nThe batch holds {plural(len(set_ids), 'set')} and {count:,} records. hwf finds your run "
            "by itself and goes on; `hwf status` shows the batch.",
        )
        name = batch.name
    ctx.reporter.note(name, f"ready for the Handle integration profile: {clicks}")


# ---------------------------------------------------------------------------------------------
# binding the person's run


def _look(ctx: Context, batch_id: int) -> None:
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
        for i in ctx.alma.list_instances(job_id, date_from=date_from, date_to=date_to)
        if i.id not in taken and not submitted_by_api(i.submitted_by)
    ]
    fitting = [i for i in candidates if records_processed(i.counters) == records]
    undecided = [i for i in candidates if i not in fitting and not i.terminal and records_processed(i.counters) is None]
    silent = [i for i in candidates if i.terminal and records_processed(i.counters) is None]
    if len(fitting) == 1 and not undecided:
        bind(ctx, batch_id, fitting[0], how="found")
    elif len(fitting) > 1 or (not fitting and silent and not undecided):
        _cannot_tell(ctx, batch_id, fitting or silent, several=len(fitting) > 1)
    else:
        _look_again(ctx, batch_id)


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
        batch = book.session.get_one(IntegrationBatch, batch_id)
        batch.state, batch.instance_id, batch.job_id, batch.bound_at = "bound", inst.id, inst.job_id, book.now
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
        for attempt_id, set_id in _members(book.session, batch_id):
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
        for _, set_id in _members(book.session, batch_id):
            book.attention(book.set(set_id), Attention.RECONCILE, reason)
        batch.next_check_at = book.now + timedelta(seconds=ctx.config.alma.poll_max_interval_seconds)


def _look_again(ctx: Context, batch_id: int) -> None:
    cfg = ctx.config.alma
    with ctx.ledger() as book:
        batch = book.session.get_one(IntegrationBatch, batch_id)
        batch.poll_interval = next_poll_interval(batch.poll_interval, cfg.poll_max_interval_seconds)
        batch.next_check_at = book.now + timedelta(seconds=batch.poll_interval)
        waited = duration((book.now - (batch.announced_at or book.now)).total_seconds())
        text = (
            f"needs a person: press Run on the Handle integration profile for Alma set {batch.name!r} (integration "
            f"batch {batch.number}; announced {utc_stamp(batch.announced_at or book.now)}, waiting {waited})"
        )
        for attempt_id, set_id in _members(book.session, batch_id):
            book.attempt(attempt_id).next_poll_at = batch.next_check_at
            row = book.set(set_id)
            if not row.attention:
                book.wait(row, text, batch.next_check_at, same_as="needs a person: press Run")


# ---------------------------------------------------------------------------------------------
# following the run


def _poll(ctx: Context, batch_id: int) -> None:
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
        for attempt_id, _ in _members(book.session, batch_id):
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
        for attempt_id, set_id in _members(book.session, batch_id):
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
        for _, set_id in _members(book.session, batch_id):
            row = book.set(set_id)
            book.attention(
                row,
                Attention.INSTANCE_UNKNOWN,
                f"integrate: Alma no longer knows integration batch {batch.number}'s run {batch.instance_id} "
                f"({exc.code}); look for it in Monitor Jobs, then "
                f"`hwf confirm {shlex.quote(batch.name)} --instance ID`",
            )
        batch.next_check_at = book.now + timedelta(seconds=ctx.config.alma.poll_max_interval_seconds)


# ---------------------------------------------------------------------------------------------
# one process per batch


def _claim(ctx: Context, batch_id: int) -> bool:
    now = ctx.clock()
    with ctx.sessions.begin() as session:
        result = session.execute(
            update(IntegrationBatch)
            .where(IntegrationBatch.id == batch_id)
            .where(
                or_(
                    IntegrationBatch.lease_owner.is_(None),
                    IntegrationBatch.lease_owner == ctx.owner,
                    IntegrationBatch.lease_expires_at < now,
                )
            )
            .values(lease_owner=ctx.owner, lease_expires_at=now + timedelta(seconds=_LEASE_SECONDS))
            .execution_options(synchronize_session=False)
        )
        return getattr(result, "rowcount", 0) == 1


def _release(ctx: Context, batch_id: int) -> None:
    with ctx.sessions.begin() as session:
        session.execute(
            update(IntegrationBatch)
            .where(IntegrationBatch.id == batch_id, IntegrationBatch.lease_owner == ctx.owner)
            .values(lease_owner=None, lease_expires_at=None)
            .execution_options(synchronize_session=False)
        )


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
        .where(Attempt.set_id == row.id, IntegrationBatch.state.in_(_OPEN))
        .order_by(IntegrationBatch.number.desc())
    )
