"""``hwf resume --all``: the scheduler that advances every set that can move, within Alma's limits.

Alma runs at most 3 API-started jobs at once and 5 runs of one job an hour; the scheduler counts both
across every set in the database, submits a job only when Alma would accept it, and sleeps until the
earliest moment something can move (a poll, a settle time, a free slot).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from orchestrator.display import utc_stamp
from orchestrator.domain.attention import GO_ON, Attention, stops
from orchestrator.domain.steps import Stage, next_step
from orchestrator.errors import (
    AlmaError,
    AlmaUnreachableError,
    DailyQuotaError,
    DatabaseContentionError,
    DatabaseError,
    HwfError,
    LeaseHeldError,
    NeedsAttentionError,
    RateLimitedError,
)
from orchestrator.pacing import LONGEST_SET_WAIT_SECONDS
from orchestrator.service import attend, preflight
from orchestrator.service.actions import Action, Plan
from orchestrator.service.actions.gate import SLOT_WAIT, JobSlots
from orchestrator.service.actions.plan import plan_step, poll_due_at, waits_for_a_person
from orchestrator.service.context import Context, only_pattern, require_match
from orchestrator.service.workflow import AdvanceResult, Outcome, drive_leased
from orchestrator.store.db import CONTENTION_STATES
from orchestrator.store.leases import candidate_ids
from orchestrator.store.ledger import Ledger
from orchestrator.store.models import AlmaSet, Attempt, AttemptState


@dataclass
class ResumeSummary:
    results: list[AdvanceResult] = field(default_factory=list)
    attention: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


_log = logging.getLogger(__name__)
_decided: dict[tuple[str, str], str] = {}  # (database, set) -> the last decision logged (a line when it changes)
_RESCAN_SECONDS = 60.0  # the longest the scheduler sleeps: sets added, retried or fixed meanwhile move soon
_TRANSIENT_WAIT_SECONDS = 60.0
_CONTENTION_RETRY_SECONDS = 1.0  # a step the database undid for another process's is tried again this soon
_CONTENTION_PASSES = 30  # passes in a row undone by the database before hwf says so and stops
_TRANSIENT_PASSES = 10  # passes in a row where Alma failed every set before resume gives up
_NEEDS_SLOT = (Action.PRECHECK, Action.SUBMIT)


class _QuotaSpentError(NeedsAttentionError):
    """Alma's daily quota is spent: the scheduler starts no more work on any set."""


def _asleep_until(row: AlmaSet, latest: Attempt | None, now: datetime) -> datetime | None:
    """When a set that is plainly waiting (a threshold, a poll not due yet) needs looking at again."""
    if row.waiting and row.wait_until is not None and row.wait_until > now:
        return row.wait_until
    step = next_step(row.stage)
    if (
        latest is not None
        and step is not None
        and latest.step == step.value
        and latest.state is AttemptState.SUBMITTED
        and poll_due_at(latest, now) > now
    ):
        return poll_due_at(latest, now)
    return None


def resume_all(
    ctx: Context,
    *,
    wait: bool = True,
    only: str | None = None,
    max_rounds: int | None = None,
    max_running: int | None = None,
    on_outage: Callable[[str | None, datetime | None], None] | None = None,
) -> ResumeSummary:
    """The scheduler: advance every set that can move, oldest first, as many at once as Alma allows (its
    running-job and runs-per-job-per-hour limits, counted across every set; ``max_running`` caps running
    jobs lower), sleeping until the earliest wake time, until every set is verified, needs attention,
    or is held by another process. ``wait=False``: one pass. Sets held by another process are left to it.
    """
    pattern = only_pattern(only)
    cfg = ctx.config.alma
    cap = min(max_running, cfg.max_running_jobs) if max_running else cfg.max_running_jobs
    with ctx.sessions() as session:
        require_match(session, pattern, only)
    outcomes = _Outcomes()
    rounds = failing = crossed = 0
    while True:
        rounds += 1
        try:
            current = _scan(ctx, pattern, cap, outcomes)
            if not _drive_admitted(ctx, current, cap, outcomes) or not _check_early(ctx, current, outcomes):
                return outcomes.summary()  # the daily quota is spent: nothing more today
        except Exception as exc:
            # Another process's transaction crossed this pass's own bookkeeping (the scan, a wait written): the
            # database undid it whole, so the pass runs again in a second; a set's own step is handled per set.
            crossed += 1
            if not contention(exc) or crossed > _CONTENTION_PASSES:
                raise
            _log.info("the database undid a pass for another process's; trying again (%s)", exc)
            ctx.sleep(_CONTENTION_RETRY_SECONDS)
            continue
        crossed = 0
        failing = failing + 1 if current.transient and not current.moved else 0
        if failing >= _TRANSIENT_PASSES:
            raise AlmaUnreachableError(
                f"Alma failed every set for {failing} passes in a row; stopping (run `hwf resume --all` again later)"
            )
        if not wait or not current.wakes or (max_rounds is not None and rounds >= max_rounds):
            return outcomes.summary()
        if current.gated and current.moved:
            continue  # a set driven in this pass may have seen its job end: a slot may be free now
        delay = (min(min(current.wakes), _soonest_recorded(ctx)) - ctx.clock()).total_seconds()
        if on_outage is not None:  # the worker's row says so while Alma fails every set, and when it ends
            down = failing > 0 and current.last_transient is not None
            wake = ctx.clock() + timedelta(seconds=min(max(delay, 0.0), _RESCAN_SECONDS))
            on_outage(f"Alma outage: {current.last_transient}" if down else None, wake if down else None)
        if delay > 0:
            ctx.sleep(min(delay, _RESCAN_SECONDS))


def _soonest_recorded(ctx: Context) -> datetime:
    """The earliest wake any set or attempt has recorded now: a set driven late in a pass may have changed what
    others wait for (an integration batch formed under queued sets), so the wakes seen earlier may be stale."""
    now = ctx.clock()
    far = now + timedelta(seconds=_RESCAN_SECONDS)
    with ctx.sessions() as session:
        wait = session.scalar(
            select(func.min(AlmaSet.wait_until)).where(
                AlmaSet.stage != Stage.VERIFIED, AlmaSet.attention.is_(None), AlmaSet.wait_until > now
            )
        )
        poll = session.scalar(
            select(func.min(Attempt.next_poll_at)).where(
                Attempt.state.in_([AttemptState.SUBMITTED, AttemptState.WAITING_OPERATOR, AttemptState.QUEUED]),
                Attempt.next_poll_at > now,
            )
        )
    return min(t for t in (wait, poll, far) if t is not None)


@dataclass
class _Outcomes:
    """What became of each set so far (the last word wins), in the order the sets were first seen."""

    order: list[str] = field(default_factory=list)
    outcome: dict[str, tuple[str, Any]] = field(default_factory=dict)  # id -> ("result"|"attention"|"skipped", what)

    def put(self, alma_id: str, kind: str, what: Any) -> None:
        if alma_id not in self.outcome:
            self.order.append(alma_id)
        self.outcome[alma_id] = (kind, what)

    def summary(self) -> ResumeSummary:
        summary = ResumeSummary()
        for alma_id in self.order:
            kind, what = self.outcome[alma_id]
            if kind == "result":
                summary.results.append(what)
            elif kind == "attention":
                summary.attention.append((alma_id, what))
            else:
                summary.skipped.append((alma_id, what))
        return summary


@dataclass
class _Pass:
    """One pass of the scheduler: the sets admitted to run, the wake times of the others, and counts."""

    admitted: list[tuple[int, str]] = field(default_factory=list)
    wakes: list[datetime] = field(default_factory=list)
    # When sets that wait for a person's run in Alma are looked at again: they do not keep a pass going (nothing
    # moves until the person acts); the worker looks again by itself.
    person_wakes: list[datetime] = field(default_factory=list)
    early: list[tuple[int, str]] = field(default_factory=list)  # sets whose records to read before their turn
    gated: bool = False
    moved: int = 0
    transient: int = 0
    last_transient: str | None = None  # what Alma (or the way to it) said when it last failed a set


def _scan(ctx: Context, pattern: re.Pattern[str] | None, cap: int, outcomes: _Outcomes) -> _Pass:
    """Look at every unfinished set in one short transaction: which can run now, which wait until when."""
    now = ctx.clock()
    current = _Pass()
    with ctx.ledger() as book:
        session = book.session
        rows = [
            r
            for r in session.scalars(
                select(AlmaSet).where(AlmaSet.stage != Stage.VERIFIED).order_by(AlmaSet.created_at, AlmaSet.id)
            )
            if not pattern or pattern.search(r.name)
        ]
        ids = [r.id for r in rows]
        free = set(candidate_ids(session, ids, now)) if ids else set()
        newest = select(func.max(Attempt.id)).where(Attempt.set_id.in_(ids)).group_by(Attempt.set_id)
        latest = {a.set_id: a for a in session.scalars(select(Attempt).where(Attempt.id.in_(newest.scalar_subquery())))}
        slots = JobSlots.load(session, now, max_running=cap, per_hour=ctx.config.alma.max_runs_per_job_hour)
        for row in rows:
            if row.attention and stops(row.attention_kind):
                outcomes.put(
                    row.alma_set_id, "attention", f"set {row.alma_set_id} ({row.name}) needs attention: {row.attention}"
                )
            elif row.id not in free:
                outcomes.put(row.alma_set_id, "skipped", "held by another hwf process")
            else:
                _triage(ctx, book, row, latest.get(row.id), slots, now, current, outcomes)
                if (row.id, row.alma_set_id) not in current.admitted and attend.needs_early_check(session, row):
                    current.early.append((row.id, row.alma_set_id))
    return current


def _triage(
    ctx: Context,
    book: Ledger,
    row: AlmaSet,
    latest: Attempt | None,
    slots: JobSlots,
    now: datetime,
    current: _Pass,
    outcomes: _Outcomes,
) -> None:
    """Admit a free set to run in this pass, or record why it waits and when to look again."""
    alma_id = row.alma_set_id

    def waiting(reason: str, until: datetime | None, person: bool = False) -> None:
        _log_decision(ctx, row, "wait", reason, until)
        result = AdvanceResult(alma_id, row.name, Outcome.WAITING, row.stage.value, reason, until, person)
        outcomes.put(alma_id, "result", result)
        if until is not None:
            (current.person_wakes if person else current.wakes).append(until)

    if row.waiting and row.waiting.startswith(SLOT_WAIT) and row.wait_until is not None and row.wait_until > now:
        # A wait for the hourly window written under another max_runs_per_job_hour (its reason names the limit)
        # is counted again: the gate below says again whether and until when it waits.
        if f"(Alma allows {slots.per_hour})" not in row.waiting:
            book.wait(row, row.waiting, None, same_as=SLOT_WAIT)
    asleep = _asleep_until(row, latest, now)
    if asleep is not None:
        step = next_step(row.stage)
        waiting(row.waiting or "", asleep, step is not None and waits_for_a_person(book.session, row, step))
        return
    plan = plan_step(ctx.config, book.session, row, now, set())
    if plan.action is Action.WAIT:
        assert plan.wake_at is not None
        book.show_waiting(row, plan.reason)
        waiting(plan.reason, plan.wake_at, plan.person)
        return
    job_id = _job_id(ctx, plan)
    if job_id is not None:
        assert plan.step is not None
        refused = slots.refusal(plan.step, job_id, now)
        if refused is not None:
            current.gated = True
            reason, until = refused
            book.wait(row, reason, until, same_as=SLOT_WAIT)
            if until is None:
                current.wakes.append(slots.slot_may_free(now))  # when a running job may end
            waiting(reason, until)
            return
        slots.take(job_id, now)
    _log_decision(ctx, row, "run", f"{plan.action.value} {plan.step.value if plan.step else ''}".strip(), None)
    current.admitted.append((row.id, alma_id))


def _job_id(ctx: Context, plan: Plan) -> str | None:
    """The Alma job the plan would start (a precheck leads straight to its submission), if any."""
    if plan.action not in _NEEDS_SLOT or plan.step is None or plan.step.job_key is None:
        return None
    return ctx.config.alma.jobs[plan.step.job_key].id


def _log_decision(ctx: Context, row: AlmaSet, decision: str, reason: str, until: datetime | None) -> None:
    """One log line per set each time the scheduler's decision about it changes (not one per pass)."""
    key = (str(ctx.sessions.kw.get("bind")), row.alma_set_id)
    said = f"{decision}: {reason}"
    if _decided.get(key) == said:
        return
    _decided[key] = said
    fields: dict[str, str | None] = {"event": "schedule", "set": row.alma_set_id, "decision": decision}
    fields["reason"] = reason
    fields["until"] = until.isoformat() if until else None
    _log.info("%s %s: %s", row.alma_set_id, decision, reason, extra={"hwf": fields})


def _drive_admitted(ctx: Context, current: _Pass, cap: int, outcomes: _Outcomes) -> bool:
    """Drive each admitted set until it must wait. False when Alma's daily quota is spent (stop all)."""
    for position, (set_id, alma_id) in enumerate(current.admitted):
        try:
            result = _advance_once(ctx, set_id, cap)
        except LeaseHeldError as exc:
            outcomes.put(alma_id, "skipped", str(exc))
            continue
        except _QuotaSpentError as exc:
            # The quota is the institution's: no other set can go on today either.
            outcomes.put(alma_id, "attention", str(exc))
            for _, later in current.admitted[position + 1 :]:
                outcomes.put(later, "skipped", "not started: Alma's daily API quota is spent")
            return False
        except NeedsAttentionError as exc:
            outcomes.put(alma_id, "attention", str(exc))
            continue
        except (AlmaUnreachableError, RateLimitedError) as exc:
            if exc.retry_after is not None:
                _told_to_wait(ctx, set_id, alma_id, exc, exc.retry_after, current, outcomes)
                continue
            _transient(ctx, current, outcomes, alma_id, exc)
            continue
        except AlmaError as exc:
            if concerns_everyone(exc):
                raise
            if exc.retry_after is not None:
                _told_to_wait(ctx, set_id, alma_id, exc, exc.retry_after, current, outcomes)
                continue
            if exc.status is not None and exc.status >= 500:
                _transient(ctx, current, outcomes, alma_id, exc)
                continue
            outcomes.put(alma_id, "attention", _isolate(ctx, set_id, alma_id, exc))
            continue
        except Exception as exc:
            if contention(exc):  # another process's transaction crossed this one's: rolled back, tried again soon
                outcomes.put(alma_id, "skipped", "the database undid this step for another process's; trying again")
                current.wakes.append(ctx.clock() + timedelta(seconds=_CONTENTION_RETRY_SECONDS))
                continue
            if concerns_everyone(exc):
                raise
            outcomes.put(alma_id, "attention", _isolate(ctx, set_id, alma_id, exc))
            continue
        current.moved += 1
        outcomes.put(alma_id, "result", result)
        if result.outcome is Outcome.WAITING:
            wake = result.wait_until or ctx.clock() + timedelta(seconds=_RESCAN_SECONDS)
            (current.person_wakes if result.person else current.wakes).append(wake)
    return True


def _check_early(ctx: Context, current: _Pass, outcomes: _Outcomes) -> bool:
    """Read the records of sets that wait (for a job slot, for their turn) while nothing else is due: a problem
    shows on the day it can be seen, not when the set's job could start. Reads only, after this pass's
    submissions, and only until the pass's earliest wake (a poll, a free slot) is due. False when Alma's
    daily quota is spent (stop all)."""
    for set_id, alma_id in current.early:
        if current.wakes and ctx.clock() >= min(current.wakes):
            return True  # the rest wait for a quieter pass
        try:
            with ctx.lease(set_id):
                summary = preflight.check_records(ctx, set_id)
        except LeaseHeldError:
            continue
        except DailyQuotaError as exc:
            outcomes.put(alma_id, "skipped", f"records not read: {exc}")
            return False
        except (AlmaUnreachableError, RateLimitedError) as exc:
            _transient(ctx, current, outcomes, alma_id, exc)  # Alma is not answering: the reads wait for it
            return True
        except (AlmaError, HwfError) as exc:
            if contention(exc):
                current.wakes.append(ctx.clock() + timedelta(seconds=_CONTENTION_RETRY_SECONDS))
                continue
            if concerns_everyone(exc):
                raise
            if isinstance(exc, AlmaError) and exc.status is not None and exc.status >= 500:
                _transient(ctx, current, outcomes, alma_id, exc)
                return True
            _log.warning("set %s: early check of the records failed: %s", alma_id, exc, extra={"hwf": {}})
            continue
        fields = {"event": "schedule", "set": alma_id, "decision": "check", "counts": summary.counts}
        _log.info("%s check: preflight %s", alma_id, _counts(summary.counts), extra={"hwf": fields})
        if summary.attention is not None:
            outcomes.put(alma_id, "attention", f"set {alma_id} ({summary.name}) needs attention: {summary.attention}")
    return True


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {c}" for c, n in sorted(counts.items()))


def _transient(ctx: Context, current: _Pass, outcomes: _Outcomes, alma_id: str, exc: Exception) -> None:
    current.transient += 1
    current.last_transient = " ".join(str(exc).split())[:300] or type(exc).__name__
    later_at = ctx.clock() + timedelta(seconds=_TRANSIENT_WAIT_SECONDS)
    outcomes.put(alma_id, "skipped", f"Alma did not answer ({exc}); trying again at {utc_stamp(later_at)}")
    current.wakes.append(later_at)


def _told_to_wait(
    ctx: Context, set_id: int, alma_id: str, exc: AlmaError, seconds: float, current: _Pass, outcomes: _Outcomes
) -> None:
    """Alma asked (``Retry-After``) for a longer wait than hwf takes in place: this set waits (at most
    ``LONGEST_SET_WAIT_SECONDS``), and the process goes on with the others."""
    with ctx.ledger() as book:
        row = book.set(set_id)
        until = book.now + timedelta(seconds=min(seconds, LONGEST_SET_WAIT_SECONDS))
        reason = f"Alma asked to wait {seconds:.0f} s ({exc.status or 'no reply'} with Retry-After); trying again"
        book.wait(row, f"{reason} at {utc_stamp(until)}", until)
        _log.warning("set %s: %s", alma_id, exc)
    outcomes.put(alma_id, "skipped", f"{reason} at {utc_stamp(until)}")
    current.wakes.append(until)


def contention(exc: BaseException) -> bool:
    """Whether ``exc`` is the database undoing this transaction for another's sake (a deadlock, a
    serialization failure): nothing of it was written; this set's step is tried again soon, the others go on.
    Seen raw (SQLAlchemy's error) or as hwf's one-line error that a session's ``with`` block made of it."""
    if isinstance(exc, DatabaseContentionError):
        return True
    orig = getattr(exc, "orig", None)
    state = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    return isinstance(exc, SQLAlchemyError) and state in CONTENTION_STATES


def concerns_everyone(exc: BaseException) -> bool:
    """An error that stops every set, not just the one it happened on: the key refused (401, 403,
    400 UNAUTHORIZED), or the database gone (hwf's DatabaseError, SQLAlchemy's)."""
    if isinstance(exc, DailyQuotaError):
        return True
    if isinstance(exc, AlmaError):
        return exc.status in (401, 403) or exc.code == "UNAUTHORIZED"
    return isinstance(exc, DatabaseError | SQLAlchemyError | KeyboardInterrupt | MemoryError)


def _isolate(ctx: Context, set_id: int, alma_id: str, exc: Exception) -> str:
    """Stop this set alone with a one-line reason (the traceback goes to the log); the others go on."""
    bug = not isinstance(exc, HwfError)
    what = f"{type(exc).__name__}: {exc}" if bug else str(exc)
    what = " ".join(what.split())[:500] or type(exc).__name__
    if bug:
        reason = (
            f"an unexpected error in hwf stopped this set ({what}); the traceback is in hwf's log. "
            f"Report it. {GO_ON}`hwf retry {alma_id} --reason TEXT` (tries again)"
        )
    elif isinstance(exc, AlmaError):
        reason = (
            f"Alma's reply stopped this set: {what}. {GO_ON}`hwf retry {alma_id} --reason TEXT` once the cause is fixed"
        )
    else:
        reason = f"this set stopped: {what}. {GO_ON}`hwf retry {alma_id} --reason TEXT` once the cause is fixed"
    _log.error("set %s: %s", alma_id, reason, exc_info=exc)
    with ctx.ledger() as book:
        row = book.set(set_id)
        book.attention(row, Attention.FAULT, reason)
        return f"set {alma_id} ({row.name}) needs attention: {reason}"


def _advance_once(ctx: Context, set_id: int, max_running: int | None = None) -> AdvanceResult:
    """Drive one set, under its lease, until it must wait (a running job, a settle time, or, when
    ``max_running`` is given, a job slot the scheduler's limits do not allow yet)."""

    def gate(book: Ledger, row: AlmaSet, plan: Plan) -> tuple[str, datetime | None] | None:
        job_id = _job_id(ctx, plan)
        if max_running is None or job_id is None or plan.step is None:
            return None
        per_hour = ctx.config.alma.max_runs_per_job_hour
        slots = JobSlots.load(book.session, book.now, max_running=max_running, per_hour=per_hour)
        refused = slots.refusal(plan.step, job_id, book.now)
        if refused is not None:
            book.wait(row, refused[0], refused[1], same_as=SLOT_WAIT)
            return refused[0], refused[1] or slots.slot_may_free(book.now)  # the scheduler looks again then
        return None

    return drive_leased(ctx, set_id, wait=False, gate=gate, quota_error=_QuotaSpentError)
