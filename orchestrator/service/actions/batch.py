"""Manual integration: one click of Run a day, bound to the right sets by hwf.

Ex Libris documents no API run of the handle integration profile: a person presses Run in Configuration >
Integration Profiles, on a set they name. So that a migration of a hundred sets does not need a hundred visits
to that page, sets that reach ``migrated`` wait in one queue, and hwf makes one itemized Alma set, an
*integration batch*, of the included records of every queued set (their members compared with hwf's records
just before). It closes a batch at once when every set not needing attention has reached ``migrated``; else
when it is full (``[alma.jobs] integration_batch_max_records``), or when no further set can reach ``migrated``
within ``integration_batch_wait_minutes``. A batch's membership is frozen once announced, and one batch waits
for a click at a time (the next forms once its run is found), so that a click can only be that batch's.

The announcement (terminal, ``hwf status``, ``hwf overview``, the dashboard, a notification) gives the exact
clicks. hwf then reads the integration job's runs: the one that binds is new since the batch was formed, not
submitted through the API, adopted by no other batch or set, minted no new handle (the batch's records have
theirs from the migration job: a run that created handles ran on other records), and ran on as many records
as the batch holds, once its counters say so (a run still going is watched until they do). One such run: every
set of the batch records it and goes on when it ends well; none yet: hwf looks again; several, or a run that never
says how many records it ran on: attention, and ``hwf confirm SET --instance ID`` (SET: any set of the batch, or
the batch's own name). When the run ends, each set is fired, settled and verified on its own.

Crash safety: a batch and its members are committed before its Alma set is created, under a name Alma keeps
unique, so a crash finds the set again by name (no twin); the runs Alma had before the batch formed are recorded
with it, so a person's run after it is found however long hwf was away; an instance is bound to one batch only
(a unique column), and to no set's own attempt.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from orchestrator.display import utc_stamp
from orchestrator.domain.attention import WAITS_FOR_A_RUN
from orchestrator.domain.clicks import profile_clicks
from orchestrator.domain.jobrules import (
    history_window,
)
from orchestrator.domain.steps import Stage, Step
from orchestrator.domain.wording import plural
from orchestrator.service.actions.base import Plan, PlannedAction, PlannedRequest, Preview, Scene, arrow
from orchestrator.service.actions.batchrun import OPEN, batch_members, look_for_run, poll_run
from orchestrator.service.actions.instances import listing_request
from orchestrator.service.almasets import create_named, fill_set
from orchestrator.service.eta import OnTheWay, mean_durations, soonest_migrated
from orchestrator.service.membership import stop_on_drift
from orchestrator.store.leases import LeaseKeeper, claim, release
from orchestrator.store.ledger import Ledger
from orchestrator.store.models import AlmaSet, Attempt, AttemptState, Event, IntegrationBatch, Record

if TYPE_CHECKING:
    from orchestrator.service.context import Context

_INTEGRATION = Step.INTEGRATE.job_key or ""
_QUEUE_LOOK_SECONDS = 60.0  # how often a non-empty queue is looked at again while it cannot close


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
            .where(IntegrationBatch.state.in_(OPEN))
            .where(or_(IntegrationBatch.next_check_at.is_(None), IntegrationBatch.next_check_at <= now))
            .order_by(IntegrationBatch.number)
        ).all()
    seconds = ctx.config.lease_seconds
    for batch_id in due:
        with ctx.sessions.begin() as session:
            if not claim(session, batch_id, ctx.owner, ctx.clock(), seconds, table=IntegrationBatch):
                continue  # another live process works on it
        try:
            # Renewed while this process works (making a batch's Alma set of thousands of records takes a while).
            with LeaseKeeper(ctx.sessions, batch_id, ctx.owner, seconds, ctx.clock, table=IntegrationBatch):
                with ctx.sessions() as session:
                    state = session.get_one(IntegrationBatch, batch_id).state
                {"creating": _make, "announced": look_for_run, "bound": poll_run}[state](ctx, batch_id)
        finally:
            with ctx.sessions.begin() as session:
                release(session, batch_id, ctx.owner, table=IntegrationBatch)


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
        waiting = session.scalar(
            select(IntegrationBatch.number)
            .where(IntegrationBatch.state.in_(("creating", "announced")))
            .order_by(IntegrationBatch.number)
        )
    if waiting is not None:
        _queued_behind(ctx, queued, waiting)
        return
    with ctx.sessions() as session:
        on_the_way = _on_the_way(session, now, timedelta(minutes=cfg.integration_batch_wait_minutes))
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


def _queued_behind(ctx: Context, queued: list[tuple[int, int, int]], number: int) -> None:
    """One batch waits for a click at a time, so that a click can only be that batch's: the queue forms the next
    batch once batch ``number``'s run is found."""
    with ctx.ledger() as book:
        look = book.now + timedelta(seconds=_QUEUE_LOOK_SECONDS)
        text = (
            f"integration: queued for the next integration batch; it forms once integration batch {number}'s run "
            "is found (one batch waits for a click at a time, so that each click binds to its own batch)"
        )
        for attempt_id, set_id, _ in queued:
            book.attempt(attempt_id).next_poll_at = look
            book.wait(book.set(set_id), text, look, same_as="integration: queued")


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


def _on_the_way(session: Session, now: datetime, window: timedelta) -> list[OnTheWay]:
    """The sets that may still reach ``migrated`` without a person: no attention that stops them, no step
    waiting for a person's run, and someone drives them (a live lease, a job running in Alma, a wait hwf ends by
    itself, or a step taken within ``window``). A set nobody has moved for longer does not hold a batch back."""
    rows = session.execute(
        select(
            AlmaSet.id,
            AlmaSet.stage,
            AlmaSet.attention,
            AlmaSet.attention_kind,
            AlmaSet.wait_until,
            AlmaSet.lease_owner,
            AlmaSet.lease_expires_at,
        ).where(AlmaSet.stage.in_([Stage.CREATED, Stage.IDENTIFIERS_COPIED]))
    ).all()
    candidates = {r.id: r for r in rows if not r.attention or r.attention_kind in WAITS_FOR_A_RUN}
    if not candidates:
        return []
    running: dict[int, tuple[str, float]] = {}
    for set_id, step, state, begun in session.execute(
        select(Attempt.set_id, Attempt.step, Attempt.state, Attempt.begun_at).where(
            Attempt.set_id.in_(list(candidates)),
            Attempt.state.in_([AttemptState.SUBMITTING, AttemptState.SUBMITTED, AttemptState.WAITING_OPERATOR]),
        )
    ):
        if state is AttemptState.WAITING_OPERATOR:
            candidates.pop(set_id, None)  # its step waits for a person's run in Alma
        else:
            running[set_id] = (step, max((now - begun).total_seconds(), 0.0))
    recent = set(
        session.scalars(
            select(Event.set_id).where(Event.set_id.in_(list(candidates)), Event.at >= now - window).distinct()
        )
    )
    moving = []
    for set_id, r in candidates.items():
        leased = r.lease_owner is not None and r.lease_expires_at is not None and r.lease_expires_at > now
        if not (leased or set_id in running or r.wait_until is not None or set_id in recent):
            continue  # nobody drives it
        if set_id in running:
            moving.append(OnTheWay(r.stage, *running[set_id]))
        else:
            moving.append(OnTheWay(r.stage, not_before=r.wait_until))
    return moving


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


def _make(ctx: Context, batch_id: int) -> None:
    """Compare each set's members once more, make the batch's Alma set of their included records, announce it."""
    with ctx.sessions() as session:
        batch = session.get_one(IntegrationBatch, batch_id)
        name, number = batch.name, batch.number
        members = batch_members(session, batch_id)
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
        for attempt_id, set_id in batch_members(book.session, batch_id):
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
