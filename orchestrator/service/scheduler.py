"""``hwf resume --all``: the scheduler that advances every set that can move, within Alma's limits.

Alma runs at most 3 API-started jobs at once and 5 runs of one job an hour; the scheduler counts both
across every set in the database, submits a job only when Alma would accept it, and sleeps until the
earliest moment something can move (a poll, a settle time, a free slot).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from orchestrator.domain.machine import Stage, Step, next_step
from orchestrator.errors import LeaseHeldError, NeedsAttentionError
from orchestrator.service import jobs
from orchestrator.service.context import Context, add_event, format_utc
from orchestrator.service.workflow import Action, AdvanceResult, Outcome, Plan, drive_leased, plan_step
from orchestrator.store.leases import candidate_ids
from orchestrator.store.models import AlmaSet, Attempt, AttemptState


@dataclass
class ResumeSummary:
    results: list[AdvanceResult] = field(default_factory=list)
    attention: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


_RESCAN_SECONDS = 60.0  # the longest the scheduler sleeps: sets added, retried or fixed meanwhile move soon
_TRANSIENT_WAIT_SECONDS = 60.0
_TRANSIENT_PASSES = 10  # passes in a row where Alma failed every set before resume gives up
SLOT_WAIT = "waiting for a job slot"
_NEEDS_SLOT = (Action.PRECHECK, Action.SUBMIT)


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
    from orchestrator.errors import AlmaUnreachableError, RateLimitedError

    pattern = re.compile(only.replace("*", ".*"), re.IGNORECASE) if only else None
    cfg = ctx.config.alma
    cap = min(max_running, cfg.max_running_jobs) if max_running else cfg.max_running_jobs
    outcome: dict[str, tuple[str, Any]] = {}  # Alma set id -> ("result" | "attention" | "skipped", what)
    order: list[str] = []
    rounds = failing = 0
    while True:
        rounds += 1
        now = ctx.clock()
        wakes: list[datetime] = []
        admitted: list[tuple[int, str]] = []
        gated = False
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
            latest = {
                a.set_id: a for a in session.scalars(select(Attempt).where(Attempt.id.in_(newest.scalar_subquery())))
            }
            slots = _Slots(cap, cfg.max_runs_per_job_hour).load(session, now)
            for row in rows:
                alma_id = row.alma_set_id
                if alma_id not in outcome:
                    order.append(alma_id)
                if row.attention:
                    outcome[alma_id] = ("attention", f"set {alma_id} ({row.name}) needs attention: {row.attention}")
                    continue
                if row.id not in free:
                    outcome[alma_id] = ("skipped", "held by another hwf process")
                    continue
                asleep = _asleep_until(row, latest.get(row.id), now)
                if asleep is not None:
                    wakes.append(asleep)
                    waiting = AdvanceResult(
                        alma_id, row.name, Outcome.WAITING, row.stage.value, row.waiting or "", asleep
                    )
                    outcome[alma_id] = ("result", waiting)
                    continue
                plan = plan_step(ctx, session, row, now, set())
                if plan.action is Action.WAIT:
                    assert plan.wake_at is not None
                    if row.waiting != plan.reason:
                        row.waiting = plan.reason
                    wakes.append(plan.wake_at)
                    outcome[alma_id] = (
                        "result",
                        AdvanceResult(alma_id, row.name, Outcome.WAITING, row.stage.value, plan.reason, plan.wake_at),
                    )
                    continue
                if plan.action in _NEEDS_SLOT and plan.step is not None and plan.step.job_key is not None:
                    refused = slots.refusal(ctx, plan.step, now)
                    if refused is not None:
                        gated = True
                        reason, until = refused
                        _wait_for_slot(session, row, reason, until, now)
                        wakes.append(until or now + timedelta(seconds=_RESCAN_SECONDS))
                        outcome[alma_id] = (
                            "result",
                            AdvanceResult(alma_id, row.name, Outcome.WAITING, row.stage.value, reason, until),
                        )
                        continue
                    slots.take(ctx, plan.step, now)
                admitted.append((row.id, alma_id))
        moved = transient = 0
        for position, (set_id, alma_id) in enumerate(admitted):
            try:
                result = _advance_once(ctx, set_id, cap)
            except LeaseHeldError as exc:
                outcome[alma_id] = ("skipped", str(exc))
                continue
            except _QuotaSpentError as exc:
                # The quota is the institution's: no other set can go on today either.
                outcome[alma_id] = ("attention", str(exc))
                for _, later in admitted[position + 1 :]:
                    outcome[later] = ("skipped", "not started: Alma's daily API quota is spent")
                return _resume_summary(order, outcome)
            except NeedsAttentionError as exc:
                outcome[alma_id] = ("attention", str(exc))
                continue
            except (AlmaUnreachableError, RateLimitedError) as exc:
                transient += 1
                later_at = ctx.clock() + timedelta(seconds=_TRANSIENT_WAIT_SECONDS)
                outcome[alma_id] = ("skipped", f"Alma did not answer ({exc}); trying again at {format_utc(later_at)}")
                wakes.append(later_at)
                continue
            moved += 1
            outcome[alma_id] = ("result", result)
            if result.outcome is Outcome.WAITING:
                wakes.append(result.wait_until or ctx.clock() + timedelta(seconds=_RESCAN_SECONDS))
        failing = failing + 1 if transient and not moved else 0
        if failing >= _TRANSIENT_PASSES:
            raise AlmaUnreachableError(
                f"Alma failed every set for {failing} passes in a row; stopping (run `hwf resume --all` again later)"
            )
        if not wait or not wakes or (max_rounds is not None and rounds >= max_rounds):
            return _resume_summary(order, outcome)
        if gated and moved:
            continue  # a set driven in this pass may have seen its job end: a slot may be free now
        delay = (min(wakes) - ctx.clock()).total_seconds()
        if delay > 0:
            ctx.sleep(min(delay, _RESCAN_SECONDS))


def _resume_summary(order: list[str], outcome: dict[str, tuple[str, Any]]) -> ResumeSummary:
    summary = ResumeSummary()
    for alma_id in order:
        kind, what = outcome[alma_id]
        if kind == "result":
            summary.results.append(what)
        elif kind == "attention":
            summary.attention.append((alma_id, what))
        else:
            summary.skipped.append((alma_id, what))
    return summary


def _advance_once(ctx: Context, set_id: int, max_running: int | None = None) -> AdvanceResult:
    """Drive one set, under its lease, until it must wait (a running job, a settle time, or, when
    ``max_running`` is given, a job slot the scheduler's limits do not allow yet)."""

    def gate(session: Session, row: AlmaSet, plan: Plan, now: datetime) -> tuple[str, datetime | None] | None:
        if max_running is None or plan.action not in _NEEDS_SLOT or plan.step is None or plan.step.job_key is None:
            return None
        refused = (
            _Slots(max_running, ctx.config.alma.max_runs_per_job_hour).load(session, now).refusal(ctx, plan.step, now)
        )
        if refused is not None:
            _wait_for_slot(session, row, refused[0], refused[1], now)
        return refused

    return drive_leased(ctx, set_id, wait=False, gate=gate, quota_error=_QuotaSpentError)
