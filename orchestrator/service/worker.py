"""``hwf resume --all --follow``: the unattended worker.

It runs the scheduler (``scheduler.resume_all``) again and again: every set is driven until it is
verified or needs a person; between passes it sleeps until the next thing can happen (a poll, a free
job slot, a set added meanwhile: at most a minute). It rides out Alma or network outages with a
growing pause, clears the quota attention by itself once Alma's daily quota has reset
(``[alma] quota_reset`` in ``[alma] timezone``), re-verifies verified sets every
``[handles] recheck_days`` (``service.recheck``), and stops cleanly when asked: the set in hand
finishes its step, its lease is released, and the caller gets a summary. What it is doing or
waiting for is kept in the ``workers`` table, which ``hwf status`` shows.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from orchestrator.display import utc_stamp
from orchestrator.domain.attention import Attention, next_command
from orchestrator.domain.steps import Stage
from orchestrator.errors import AlmaError, AlmaUnreachableError, RateLimitedError
from orchestrator.service import nextstep, recheck, scheduler
from orchestrator.service.actions.plan import clicks_awaited
from orchestrator.service.context import Context, only_pattern
from orchestrator.service.nextstep import Next
from orchestrator.service.workers import STALE_WORKER as STALE_WORKER
from orchestrator.service.workers import WorkerView as WorkerView
from orchestrator.service.workers import workers as workers
from orchestrator.store.models import AlmaSet, Attempt, AttemptState, Event, IntegrationBatch, Worker

if TYPE_CHECKING:
    from orchestrator.alma.client import AlmaClient

RESCAN_SECONDS = 60.0  # the longest the worker sleeps: sets added, retried or fixed meanwhile move soon
MIN_SLEEP_SECONDS = 1.0  # the shortest: a pass that found nothing to do never runs again at once
OUTAGE_FIRST_SECONDS = 60.0  # after Alma failed every set: the first pause, doubling up to the longest
OUTAGE_MAX_SECONDS = 900.0
QUOTA_MARGIN = timedelta(minutes=5)  # go on this long after the configured reset time
QUOTA_LOOK = timedelta(hours=1)  # while the quota is spent, the longest sleep (nothing can call Alma meanwhile)
# Attempts hwf looks at again by itself: a running job's poll, a person's run looked for, a queue to close.
_LOOKED_AT = (AttemptState.SUBMITTED, AttemptState.WAITING_OPERATOR, AttemptState.QUEUED)


class Stopped(BaseException):
    """The worker was asked to stop (SIGTERM/SIGINT): raised from its sleeps only (between steps, or an Alma
    call's wait before a retry), never mid-request. Not an ``Exception``: no handler that stops one set for an
    error (``except Exception``) takes it for that set's fault."""


class StopFlag:
    """Set by a signal handler; the worker's sleeps wake at once when it is set (with the real clock)."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.why: str | None = None

    def set(self, why: str = "asked to stop") -> None:
        self.why = self.why or why
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def sleeper(self, sleep: Callable[[float], None]) -> Callable[[float], None]:
        """A sleep that raises ``Stopped`` when the flag is (or becomes) set."""

        def interruptible(seconds: float) -> None:
            if self.is_set():
                raise Stopped()
            if sleep is time.sleep:
                self._event.wait(seconds)
            else:
                sleep(seconds)  # a test's fake clock
            if self.is_set():
                raise Stopped()

        return interruptible

    def stoppable(self, alma_factory: Callable[[], AlmaClient]) -> Callable[[], AlmaClient]:
        return lambda: alma_factory().sleeping_with(self.sleeper)  # a stop ends an Alma retry's wait too


@dataclass
class WorkerSummary:
    passes: int = 0
    verified: int = 0
    attention: list[tuple[str, str]] = field(default_factory=list)
    waiting: int = 0
    quota_resets: int = 0
    outages: int = 0
    rechecked: int = 0
    stale_rechecked: int = 0  # sets whose handles stale in the public proxy's cache were checked again
    regressions: int = 0
    stopped: str | None = None  # why it stopped (a signal), None when it ran out of work (--until-idle)


def next_quota_reset(after: datetime, reset: str, zone: str) -> datetime:
    """The first moment after ``after`` at which the daily quota resets: ``reset`` (HH:MM) in ``zone``."""
    tz = ZoneInfo(zone)
    local = after.astimezone(tz)
    hour, minute = (int(p) for p in reset.split(":"))
    candidate = local.replace(hour=hour, minute=minute, second=0, microsecond=0)
    if candidate <= local:
        candidate = (local + timedelta(days=1)).replace(hour=hour, minute=minute, second=0, microsecond=0)
        candidate = candidate.replace(tzinfo=tz)  # re-resolve the offset across a DST change
    return candidate.astimezone(after.tzinfo)


def quota_resets_due(ctx: Context) -> tuple[int, datetime | None]:
    """Clear the quota attention of every set whose quota stop was before the last reset (audited).
    Returns how many were cleared and when the next still-stopped set can go on."""
    cfg = ctx.config.alma
    cleared, later = 0, None
    with ctx.ledger() as book:
        rows = list(book.session.scalars(select(AlmaSet).where(AlmaSet.attention_kind == Attention.QUOTA)))
        for row in rows:
            since = _attention_since(book.session, row)
            resume_at = next_quota_reset(since, cfg.quota_reset, cfg.timezone) + QUOTA_MARGIN
            if book.now < resume_at:
                later = resume_at if later is None else min(later, resume_at)
                continue
            previous = book.resume(row)
            book.event(
                row,
                "quota-reset",
                f"Alma's daily quota has reset ({cfg.quota_reset} {cfg.timezone}); the worker goes on "
                f"(was: {previous})",
            )
            cleared += 1
    return cleared, later


def _attention_since(session: Session, row: AlmaSet) -> datetime:
    at = (
        session.scalar(select(func.max(Event.at)).where(Event.set_id == row.id, Event.kind == "attention"))
        or row.updated_at
    )
    return at


def _report(ctx: Context, state: str, reason: str | None, wake_at: datetime | None) -> None:
    now = ctx.clock()
    with ctx.sessions.begin() as session:
        worker = session.get(Worker, ctx.owner)
        if worker is None:
            worker = Worker(owner=ctx.owner, started_at=now, state=state)
            session.add(worker)
        worker.state, worker.reason, worker.wake_at, worker.heartbeat_at = state, reason, wake_at, now


def _heartbeat(ctx: Context) -> None:
    with ctx.sessions.begin() as session:
        worker = session.get(Worker, ctx.owner)
        if worker is not None:
            worker.heartbeat_at = ctx.clock()


def _forget(ctx: Context, summary: WorkerSummary) -> None:
    """A worker that stopped leaves a row saying so (with its summary) and removes stale ones."""
    now = ctx.clock()
    _report(ctx, "stopped", describe(summary), None)
    with ctx.sessions.begin() as session:
        session.execute(delete(Worker).where(Worker.heartbeat_at < now - timedelta(days=7)))


def describe(summary: WorkerSummary) -> str:
    """The one-line summary the worker prints when it stops."""
    parts = [
        f"{summary.verified} verified",
        f"{len(summary.attention)} need attention",
        f"{summary.waiting} waiting",
    ]
    if summary.quota_resets:
        parts.append(f"{summary.quota_resets} resumed after the quota reset")
    if summary.outages:
        parts.append(f"{summary.outages} Alma outages ridden out")
    if summary.rechecked:
        parts.append(f"{summary.rechecked} re-verified ({summary.regressions} regressions)")
    if summary.stale_rechecked:
        parts.append(f"{summary.stale_rechecked} re-checked after the public cache expired")
    why = f"stopped: {summary.stopped}" if summary.stopped else "nothing left to do"
    return f"{why} after {summary.passes} passes; " + ", ".join(parts)


def _tally(ctx: Context, summary: WorkerSummary) -> WorkerSummary:
    """The summary with the sets counted as they stand now: verified, needing attention, waiting."""
    with ctx.sessions() as session:
        counts = dict(
            session.execute(
                select(AlmaSet.stage, func.count()).where(AlmaSet.attention.is_(None)).group_by(AlmaSet.stage)
            ).all()
        )
        attention = [
            (a, r or "")
            for a, r in session.execute(
                select(AlmaSet.alma_set_id, AlmaSet.attention).where(AlmaSet.attention.is_not(None))
            )
        ]
    verified = int(counts.pop(Stage.VERIFIED, 0))
    return dataclasses.replace(summary, verified=verified, attention=attention, waiting=int(sum(counts.values())))


SAY_AGAIN = timedelta(minutes=10)  # while it waits for the same thing, the worker says so at least this often
# How often, at most, the worker looks at what it waits for (a read of every set: a second for 10,000 sets).
_LOOK_EVERY = timedelta(seconds=30)


class Voice:
    """What the worker says in its output: one line per set in attention when it starts, one when a set enters
    attention (with the command that gets it going), and, while it waits, one when what it waits for changes
    and at least every ``SAY_AGAIN``. Each line is a :class:`~orchestrator.service.nextstep.Next`; the terminal
    writes it (and its time, in the reader's zone). It also keeps the worker's status row saying what it waits for.
    """

    def __init__(self, ctx: Context, speak: Callable[[Next], None] | None, only: str | None) -> None:
        self.ctx, self.speak = ctx, speak
        self.only = only_pattern(only)
        self.attention: dict[str, str] = {}  # set id -> the attention said
        self.waiting: tuple[str, ...] | None = None  # what the last wait line was about
        self.said_at: datetime | None = None
        self.looked_at: datetime | None = None
        self.held: Next | None = None  # what the worker itself waits for (an outage, the quota), not a set
        self.reported: str | None = None  # what the status row says it waits for

    def hold(self, what: Next | None) -> None:
        """The worker itself waits for ``what`` (None: it waits for what the sets wait for)."""
        self.held = what
        self.looked_at = None  # say it at the next look

    def look(self, seconds: float) -> None:
        """Before a sleep of ``seconds``: say what changed, and keep the status row saying what is waited for."""
        now = self.ctx.clock()
        if self.looked_at is not None and now - self.looked_at < _LOOK_EVERY:
            return
        self.looked_at = now
        with self.ctx.sessions() as session:
            self._attention(session)
            whole = self.held or nextstep.migration(session, self.ctx.config, now, self.only)
        if whole.at is None or whole.at <= now:
            return
        if self.held is None:  # the worker's own waits report themselves
            text = f"{whole.what}; {whole.when} {utc_stamp(whole.at)}" if whole.when else whole.what
            if text != self.reported:  # the heartbeat keeps the row fresh meanwhile
                self.reported = text
                _report(self.ctx, "waiting", text, now + timedelta(seconds=seconds))
        key = (whole.kind,) if whole.kind in ("poll", "slots") else (whole.kind, whole.what)
        if key != self.waiting or self.said_at is None or now - self.said_at >= SAY_AGAIN:
            self.waiting, self.said_at = key, now
            if self.speak is not None:
                self.speak(dataclasses.replace(whole, what=f"waiting: {whole.what}"))

    def outage(self, reason: str | None, wake: datetime | None) -> None:
        """After each scheduler pass: while Alma fails every set, the row (and the voice) say "Alma outage", not
        "running"; once a set moves again, "running"."""
        down = self.held is not None and self.held.kind == "outage"
        if reason is not None:
            _report(self.ctx, "waiting", f"{reason}; trying again at {utc_stamp(wake)}" if wake else reason, wake)
            if not down:
                self.hold(Next(wake, reason, "trying again", kind="outage"))
        elif down:
            _report(self.ctx, "running", None, None)
            self.hold(None)

    def _attention(self, session: Session) -> None:
        rows = session.execute(
            select(AlmaSet.alma_set_id, AlmaSet.name, AlmaSet.attention, AlmaSet.attention_kind).where(
                AlmaSet.attention.is_not(None)
            )
        ).all()
        now_in = {r.alma_set_id: r.attention or "" for r in rows if self.only is None or self.only.search(r.name)}
        for r in rows:
            if r.alma_set_id in now_in and self.attention.get(r.alma_set_id) != now_in[r.alma_set_id]:
                command = next_command(r.attention_kind, r.alma_set_id, r.attention)
                line = f"needs attention: set {r.alma_set_id} ({r.name}): {r.attention}; to go on: {command}"
                if self.speak is not None:
                    self.speak(Next(None, line, kind="attention", person=True))
        self.attention = now_in


def follow(
    ctx: Context,
    stop: StopFlag,
    *,
    only: str | None = None,
    max_running: int | None = None,
    until_idle: bool = False,
    speak: Callable[[Next], None] | None = None,
) -> WorkerSummary:
    """Drive every set until verified or needing a person, for as long as the worker runs. ``until_idle``: stop
    once no set can move without a person (and no quota reset or re-verification is due). ``speak``: where the
    worker's lines go (:class:`Voice`). Never raises for Alma's outages (it waits them out) nor for a stop."""
    summary = WorkerSummary()
    interruptible = stop.sleeper(ctx.sleep)

    def sleep(seconds: float) -> None:
        _heartbeat(worker_ctx)  # also while the scheduler sleeps between its passes
        voice.look(seconds)
        interruptible(seconds)

    worker_ctx = dataclasses.replace(ctx, sleep=sleep, _alma=None, alma_factory=stop.stoppable(ctx.alma_factory))
    voice = Voice(worker_ctx, speak, only)
    outage = 0
    try:
        _report(worker_ctx, "running", None, None)
        voice.look(0.0)  # the sets already in attention, at once
        while True:
            summary.passes += 1
            _report(worker_ctx, "running", None, None)
            voice.reported = None
            _, quota_wake = _quota(worker_ctx, voice, summary)
            try:
                if quota_wake is None:  # the quota is the institution's: while spent, no set calls Alma
                    scheduler.resume_all(worker_ctx, only=only, max_running=max_running, on_outage=voice.outage)
                outage = 0
            except (AlmaUnreachableError, RateLimitedError, AlmaError) as exc:
                if not _outage(exc):
                    raise
                outage += 1
                summary.outages += 1
                _outage_pause(worker_ctx, voice, exc, outage)
                continue
            rechecked, recheck_wake, stale_wake = _rechecks(worker_ctx, stop, summary)
            if rechecked:
                continue
            if quota_wake is None:
                # This pass may have found the quota spent: its reset is what the worker waits for (and says so).
                cleared, quota_wake = _quota(worker_ctx, voice, summary)
                if cleared:
                    continue
            if until_idle and _idle(worker_ctx, only) and quota_wake is None:
                break
            wake, reason = _next_wake(worker_ctx, quota_wake, recheck_wake, only)
            if stale_wake is not None and stale_wake.at <= wake:
                wake, reason = stale_wake.at, f"{stale_wake.phrase()} (when the public proxy's cache expires)"
            _report(worker_ctx, "waiting", reason, wake)
            voice.reported = None
            delay = (wake - worker_ctx.clock()).total_seconds()
            worker_ctx.sleep(max(delay, MIN_SLEEP_SECONDS))
    except Stopped:
        summary.stopped = stop.why or "asked to stop"
    except BaseException:
        # Something the worker cannot wait out (the database, a bug): say so if the database still
        # answers, but let the original error through.
        with contextlib.suppress(Exception):
            _report(worker_ctx, "stopped", "stopped by an error (see the worker's output)", None)
        worker_ctx.close()
        raise
    summary = _tally(worker_ctx, summary)
    _forget(worker_ctx, summary)
    worker_ctx.close()
    return summary


def _quota(ctx: Context, voice: Voice, summary: WorkerSummary) -> tuple[int, datetime | None]:
    """Clear the quota stops whose reset has come (a fresh Alma client then: the old one remembers the spent
    quota). Returns how many, and the next reset still waited for, if any (the worker waits for it and says so)."""
    cleared, wake = quota_resets_due(ctx)
    voice.hold(Next(wake, "Alma's daily quota is spent", "it resets", kind="quota") if wake else None)
    if cleared:
        summary.quota_resets += cleared
        ctx.close()
    return cleared, wake


def _outage_pause(ctx: Context, voice: Voice, exc: AlmaError, outage: int) -> None:
    """Alma is down: wait (longer after each failed pass, up to a cap), saying until when."""
    delay = min(OUTAGE_FIRST_SECONDS * 2 ** (outage - 1), OUTAGE_MAX_SECONDS)
    wake = ctx.clock() + timedelta(seconds=delay)
    _report(ctx, "waiting", f"Alma outage: {exc}; trying again at {utc_stamp(wake)}", wake)
    voice.hold(Next(wake, f"Alma outage: {exc}", "trying again", kind="outage"))
    ctx.sleep(delay)


def _rechecks(ctx: Context, stop: StopFlag, summary: WorkerSummary) -> tuple[bool, datetime | None, Any]:
    """The re-verifications that are due (the periodic one, then handles stale in the public cache): whether any
    ran, and when the next of each is due."""
    checked, regressed, recheck_wake = recheck.due_sets(ctx, stop)
    stale, stale_regressed, stale_wake = recheck.stale_due(ctx, stop)
    summary.rechecked += checked
    summary.stale_rechecked += stale
    summary.regressions += regressed + stale_regressed
    return bool(checked or stale), recheck_wake, stale_wake


def _outage(exc: AlmaError) -> bool:
    """Alma (or the way to it) is down, not refusing this request: wait and try again."""
    if isinstance(exc, AlmaUnreachableError | RateLimitedError):
        return True
    return exc.status is not None and exc.status >= 500


def _next_wake(
    ctx: Context, quota: datetime | None, recheck_at: datetime | None, only: str | None = None
) -> tuple[datetime, str]:
    """When to look again, and why: the soonest thing the worker can act on (see ``_driven_times``); while the
    quota is spent nothing may call Alma: until the reset, at most ``QUOTA_LOOK``."""
    now = ctx.clock()
    if quota is not None:
        quota = max(quota, now)  # never a reset time already past
        wake, reason = min(quota, now + QUOTA_LOOK), f"Alma's daily quota is spent; it resets about {utc_stamp(quota)}"
        if recheck_at is not None and recheck_at < wake:
            wake, reason = max(recheck_at, now), "the next re-verification"
        return wake, f"{reason}; looking again at {utc_stamp(wake)}"
    wake, reason = now + timedelta(seconds=RESCAN_SECONDS), "nothing can move now; looking again"
    soonest, held, poll, unfinished = _driven_times(ctx, only, now)
    if unfinished:  # others drive them (between two of their steps no lease shows): look again soon
        lease = now + timedelta(seconds=ctx.config.lease_seconds)
        if lease < wake:
            wake, reason = lease, "other hwf processes drive the sets"
        if poll is not None and poll < wake:
            wake, reason = poll, "a running job's next poll"
    if soonest is not None and soonest < wake:
        wake, reason = soonest, "a set waits"
    if held is not None and held < wake:
        # Another worker drives it: look again when its lease would run out (renewed while it lives).
        wake, reason = held, "another hwf process drives a set"
    if recheck_at is not None and recheck_at < wake:
        wake, reason = max(recheck_at, now), "the next re-verification"
    return wake, f"{reason} at {utc_stamp(wake)}"


def _driven_times(
    ctx: Context, only: str | None, now: datetime
) -> tuple[datetime | None, datetime | None, datetime | None, int]:
    """Of the sets this worker drives (not verified nor in attention, matching ``--only``): the soonest future wait,
    other process's lease expiry and poll (a time already past was just looked at), and how many there are."""
    pattern = only_pattern(only)
    with ctx.sessions() as session:
        rows = session.execute(
            select(AlmaSet.id, AlmaSet.name, AlmaSet.wait_until, AlmaSet.lease_owner, AlmaSet.lease_expires_at).where(
                AlmaSet.stage != Stage.VERIFIED, AlmaSet.attention.is_(None)
            )
        ).all()
        rows = [r for r in rows if pattern is None or pattern.search(r.name)]
        polls = session.execute(
            select(Attempt.set_id, Attempt.next_poll_at).where(
                Attempt.state.in_(_LOOKED_AT), Attempt.next_poll_at > now, Attempt.set_id.in_([r.id for r in rows])
            )
        ).all()
    waits = [r.wait_until for r in rows if r.wait_until is not None and r.wait_until > now]
    leases = [r.lease_expires_at for r in rows if r.lease_owner not in (None, ctx.owner) and r.lease_expires_at]
    poll = min((t for _, t in polls if t is not None), default=None)
    return min(waits, default=None), min((t for t in leases if t > now), default=None), poll, len(rows)


def _idle(ctx: Context, only: str | None) -> bool:
    """No set can move without a person: each is verified, needs attention, or waits for a person's run in Alma
    (a step run by hand, an integration batch to press Run on)."""
    with ctx.sessions() as session:
        rows = session.execute(
            select(AlmaSet.id, AlmaSet.name, AlmaSet.attention, AlmaSet.attention_kind).where(
                AlmaSet.stage != Stage.VERIFIED
            )
        ).all()
        person = set(  # waiting for a person's run (not one hwf already watches)
            session.scalars(
                select(Attempt.set_id)
                .outerjoin(IntegrationBatch, IntegrationBatch.id == Attempt.batch_id)
                .where(
                    Attempt.state == AttemptState.WAITING_OPERATOR,
                    Attempt.set_id.in_([r.id for r in rows]),
                    IntegrationBatch.watching.is_(None),
                )
            )
        )
        if clicks_awaited(session):  # the sets queued behind that batch wait for its click too
            person |= set(
                session.scalars(
                    select(Attempt.set_id).where(
                        Attempt.state == AttemptState.QUEUED, Attempt.set_id.in_([r.id for r in rows])
                    )
                )
            )
    names = [r.name for r in rows if not r.attention and r.id not in person]
    if only:
        pattern = only_pattern(only)
        assert pattern is not None
        names = [n for n in names if pattern.search(n)]
    return not names
