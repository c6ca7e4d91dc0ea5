"""``hwf resume --all``: the scheduler that advances every set that can move, within Alma's limits.

Alma runs at most 3 API-started jobs at once and 5 runs of one job an hour; the scheduler counts both
across every set in the database, submits a job only when Alma would accept it, and sleeps until the
earliest moment something can move (a poll, a settle time, a free slot).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from orchestrator.domain.machine import Stage, Step, next_step
from orchestrator.errors import AlmaError, LeaseHeldError, NeedsAttentionError
from orchestrator.service import jobs
from orchestrator.service.context import Context, add_event, format_utc, require_match, set_attention
from orchestrator.service.workflow import Action, AdvanceResult, Outcome, Plan, drive_leased, plan_step
from orchestrator.store.leases import candidate_ids
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
_TRANSIENT_PASSES = 10  # passes in a row where Alma failed every set before resume gives up
SLOT_WAIT = "waiting for a job slot"
_NEEDS_SLOT = (Action.PRECHECK, Action.SUBMIT)


log = logging.getLogger(__name__)
FAULT = "fault"  # the attention kind: an error on this set alone (a bad reply, a 4xx, a bug in hwf)


class _QuotaSpentError(NeedsAttentionError):
    """Alma's daily quota is spent: the scheduler starts no more work on any set."""


@dataclass
class _Slots:
    """Alma's job limits as ``jobs.submit`` counts them (across every set in the database), with a
    cap on running jobs that may be lower than Alma's (``--max-running``)."""

    max_running: int
    per_hour: int
    running: int = 0
    recent: dict[str, list[datetime]] = field(default_factory=dict)  # job id -> starts in the last hour
    next_poll: datetime | None = None  # the soonest poll of a running job (when a slot may free)

    def load(self, session: Session, now: datetime) -> _Slots:
        self.running = int(
            session.scalar(
                select(func.count())
                .select_from(Attempt)
                .where(
                    Attempt.state.in_([AttemptState.SUBMITTING, AttemptState.SUBMITTED]), Attempt.job_id.is_not(None)
                )
            )
            or 0
        )
        self.next_poll = session.scalar(
            select(func.min(Attempt.next_poll_at)).where(
                Attempt.state == AttemptState.SUBMITTED, Attempt.job_id.is_not(None)
            )
        )
        self.recent = {}
        for job_id, started in session.execute(
            select(Attempt.job_id, Attempt.started_at)
            .where(
                Attempt.job_id.is_not(None),
                Attempt.started_at >= now - timedelta(hours=1),
                Attempt.state.not_in([AttemptState.ABANDONED, AttemptState.NOT_NEEDED]),
            )
            .order_by(Attempt.started_at)
        ):
            self.recent.setdefault(job_id or "", []).append(started)
        return self

    def refusal(self, ctx: Context, step: Step, now: datetime) -> tuple[str, datetime | None] | None:
        """Why ``step``'s job cannot start now, and when it can (None: when a running job ends)."""
        key = step.job_key
        assert key is not None
        job_id = ctx.config.alma.jobs[key].id
        if self.running >= self.max_running:
            return f"{SLOT_WAIT}: {self.running} Alma jobs running (at most {self.max_running} at once)", None
        starts = self.recent.get(job_id, [])
        if len(starts) >= self.per_hour:
            # jobs.submit counts starts at or after now - 1 h: the slot frees just after the hour.
            free = starts[len(starts) - self.per_hour] + timedelta(hours=1, seconds=1)
            return (
                f"{SLOT_WAIT}: job {job_id} ({step.value}) started {len(starts)} times in the last hour "
                f"(Alma allows {self.per_hour}); next slot at {format_utc(free)}",
                free,
            )
        return None

    def slot_may_free(self, now: datetime) -> datetime:
        """When to look again for a running-job slot: just after the soonest poll of a running job (whoever
        drives it, maybe another process), at most a rescan away."""
        latest = now + timedelta(seconds=_RESCAN_SECONDS)
        if self.next_poll is None:
            return latest
        return min(max(self.next_poll + timedelta(seconds=0.5), now + timedelta(seconds=0.5)), latest)

    def take(self, ctx: Context, step: Step, now: datetime) -> None:
        key = step.job_key
        assert key is not None
        self.running += 1
        self.recent.setdefault(ctx.config.alma.jobs[key].id, []).append(now)


def _wait_for_slot(session: Session, row: AlmaSet, reason: str, until: datetime | None, now: datetime) -> None:
    if not (row.waiting or "").startswith(SLOT_WAIT):
        add_event(session, row, "waiting", reason, at=now)
    row.waiting = reason
    row.wait_until = until


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
        and jobs.poll_due_at(latest, now) > now
    ):
        return jobs.poll_due_at(latest, now)
    return None


def resume_all(
    ctx: Context,
    *,
    wait: bool = True,
    only: str | None = None,
    max_rounds: int | None = None,
    max_running: int | None = None,
) -> ResumeSummary:
    """The scheduler: advance every set that can move, oldest first, as many at once as Alma allows (its
    running-job and runs-per-job-per-hour limits, counted across every set; ``max_running`` caps running
    jobs lower), sleeping until the earliest wake time, until every set is verified, needs attention,
    or is held by another process. ``wait=False``: one pass. Sets held by another process are left to it.
    """
    from orchestrator.errors import AlmaUnreachableError

    pattern = re.compile(only.replace("*", ".*"), re.IGNORECASE) if only else None
    cfg = ctx.config.alma
    cap = min(max_running, cfg.max_running_jobs) if max_running else cfg.max_running_jobs
    with ctx.sessions() as session:
        require_match(session, pattern, only)
    outcomes = _Outcomes()
    rounds = failing = 0
    while True:
        rounds += 1
        current = _scan(ctx, pattern, cap, outcomes)
        if not _drive_admitted(ctx, current, cap, outcomes):
            return outcomes.summary()  # the daily quota is spent: nothing more today
        failing = failing + 1 if current.transient and not current.moved else 0
        if failing >= _TRANSIENT_PASSES:
            raise AlmaUnreachableError(
                f"Alma failed every set for {failing} passes in a row; stopping (run `hwf resume --all` again later)"
            )
        if not wait or not current.wakes or (max_rounds is not None and rounds >= max_rounds):
            return outcomes.summary()
        if current.gated and current.moved:
            continue  # a set driven in this pass may have seen its job end: a slot may be free now
        delay = (min(current.wakes) - ctx.clock()).total_seconds()
        if delay > 0:
            ctx.sleep(min(delay, _RESCAN_SECONDS))


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
    gated: bool = False
    moved: int = 0
    transient: int = 0


def _scan(ctx: Context, pattern: re.Pattern[str] | None, cap: int, outcomes: _Outcomes) -> _Pass:
    """Look at every unfinished set in one short transaction: which can run now, which wait until when."""
    now = ctx.clock()
    current = _Pass()
    with ctx.sessions.begin() as session:
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
        slots = _Slots(cap, ctx.config.alma.max_runs_per_job_hour).load(session, now)
        for row in rows:
            if row.attention:
                outcomes.put(
                    row.alma_set_id, "attention", f"set {row.alma_set_id} ({row.name}) needs attention: {row.attention}"
                )
            elif row.id not in free:
                outcomes.put(row.alma_set_id, "skipped", "held by another hwf process")
            else:
                _triage(ctx, session, row, latest.get(row.id), slots, now, current, outcomes)
    return current


def _triage(
    ctx: Context,
    session: Session,
    row: AlmaSet,
    latest: Attempt | None,
    slots: _Slots,
    now: datetime,
    current: _Pass,
    outcomes: _Outcomes,
) -> None:
    """Admit a free set to run in this pass, or record why it waits and when to look again."""
    alma_id = row.alma_set_id

    def waiting(reason: str, until: datetime | None) -> None:
        _log_decision(ctx, row, "wait", reason, until)
        outcomes.put(
            alma_id, "result", AdvanceResult(alma_id, row.name, Outcome.WAITING, row.stage.value, reason, until)
        )

    asleep = _asleep_until(row, latest, now)
    if asleep is not None:
        current.wakes.append(asleep)
        waiting(row.waiting or "", asleep)
        return
    plan = plan_step(ctx, session, row, now, set())
    if plan.action is Action.WAIT:
        assert plan.wake_at is not None
        if row.waiting != plan.reason:
            row.waiting = plan.reason
        current.wakes.append(plan.wake_at)
        waiting(plan.reason, plan.wake_at)
        return
    if plan.action in _NEEDS_SLOT and plan.step is not None and plan.step.job_key is not None:
        refused = slots.refusal(ctx, plan.step, now)
        if refused is not None:
            current.gated = True
            reason, until = refused
            _wait_for_slot(session, row, reason, until, now)
            current.wakes.append(until or slots.slot_may_free(now))
            waiting(reason, until)
            return
        slots.take(ctx, plan.step, now)
    _log_decision(ctx, row, "run", f"{plan.action.value} {plan.step.value if plan.step else ''}".strip(), None)
    current.admitted.append((row.id, alma_id))


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
    from orchestrator.errors import AlmaUnreachableError, RateLimitedError

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
            _transient(ctx, current, outcomes, alma_id, exc)
            continue
        except AlmaError as exc:
            if concerns_everyone(exc):
                raise
            if exc.status is not None and exc.status >= 500:
                _transient(ctx, current, outcomes, alma_id, exc)
                continue
            outcomes.put(alma_id, "attention", _isolate(ctx, set_id, alma_id, exc))
            continue
        except Exception as exc:
            if concerns_everyone(exc):
                raise
            outcomes.put(alma_id, "attention", _isolate(ctx, set_id, alma_id, exc))
            continue
        current.moved += 1
        outcomes.put(alma_id, "result", result)
        if result.outcome is Outcome.WAITING:
            current.wakes.append(result.wait_until or ctx.clock() + timedelta(seconds=_RESCAN_SECONDS))
    return True


def _transient(ctx: Context, current: _Pass, outcomes: _Outcomes, alma_id: str, exc: Exception) -> None:
    current.transient += 1
    later_at = ctx.clock() + timedelta(seconds=_TRANSIENT_WAIT_SECONDS)
    outcomes.put(alma_id, "skipped", f"Alma did not answer ({exc}); trying again at {format_utc(later_at)}")
    current.wakes.append(later_at)


def concerns_everyone(exc: BaseException) -> bool:
    """An error that stops every set, not just the one it happened on: the key refused (401, 403,
    400 UNAUTHORIZED), or the database gone (hwf's DatabaseError, SQLAlchemy's)."""
    from sqlalchemy.exc import SQLAlchemyError

    from orchestrator.errors import DailyQuotaError, DatabaseError

    if isinstance(exc, DailyQuotaError):
        return True
    if isinstance(exc, AlmaError):
        return exc.status in (401, 403) or exc.code == "UNAUTHORIZED"
    return isinstance(exc, DatabaseError | SQLAlchemyError | KeyboardInterrupt | MemoryError)


def _isolate(ctx: Context, set_id: int, alma_id: str, exc: Exception) -> str:
    """Stop this set alone with a one-line reason (the traceback goes to the log); the others go on."""
    from orchestrator.errors import HwfError

    bug = not isinstance(exc, HwfError)
    what = f"{type(exc).__name__}: {exc}" if bug else str(exc)
    what = " ".join(what.split())[:500] or type(exc).__name__
    if bug:
        reason = (
            f"an unexpected error in hwf stopped this set ({what}); the traceback is in hwf's log. "
            f"Report it; `hwf retry {alma_id}` tries again"
        )
    elif isinstance(exc, AlmaError):
        reason = f"Alma's reply stopped this set: {what}; `hwf retry {alma_id}` once the cause is fixed"
    else:
        reason = f"this set stopped: {what}; `hwf retry {alma_id}` once the cause is fixed"
    log.error("set %s: %s", alma_id, reason, exc_info=exc)
    with ctx.sessions.begin() as session:
        row = session.get_one(AlmaSet, set_id)
        set_attention(session, row, FAULT, reason, ctx.clock())
        return f"set {alma_id} ({row.name}) needs attention: {reason}"


def _advance_once(ctx: Context, set_id: int, max_running: int | None = None) -> AdvanceResult:
    """Drive one set, under its lease, until it must wait (a running job, a settle time, or, when
    ``max_running`` is given, a job slot the scheduler's limits do not allow yet)."""

    def gate(session: Session, row: AlmaSet, plan: Plan, now: datetime) -> tuple[str, datetime | None] | None:
        if max_running is None or plan.action not in _NEEDS_SLOT or plan.step is None or plan.step.job_key is None:
            return None
        slots = _Slots(max_running, ctx.config.alma.max_runs_per_job_hour).load(session, now)
        refused = slots.refusal(ctx, plan.step, now)
        if refused is not None:
            _wait_for_slot(session, row, refused[0], refused[1], now)
            return refused[0], refused[1] or slots.slot_may_free(now)  # the scheduler looks again then
        return None

    return drive_leased(ctx, set_id, wait=False, gate=gate, quota_error=_QuotaSpentError)
