"""The service layer: add, advance, resume, status, history, report. Only the service modules open
transactions, and none is open during a remote call (STYLE.md §9).

``advance`` is a loop: in a short transaction, look at the set and decide the next action (``_plan``);
outside any transaction, do it (talk to Alma or the handle proxy); in another short transaction,
record what happened. A crash between any two lines leaves the database describing what is known,
and the next ``advance`` or ``resume`` picks up from there (DESIGN.md §3).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeAlias

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from orchestrator.domain.handles import VERIFIED_VALUES
from orchestrator.domain.jobrules import settle_until
from orchestrator.domain.machine import Stage, Step, StepFacts, next_step
from orchestrator.domain.wording import plural
from orchestrator.errors import (
    AlmaError,
    BadInputError,
    DailyQuotaError,
    NeedsAttentionError,
)
from orchestrator.service import jobs
from orchestrator.service.context import Context, add_event, find_set, format_utc, set_attention
from orchestrator.service.steps import fire_step, holding_lease, latest_attempt
from orchestrator.service.views import SetSummary, status
from orchestrator.store.leases import LeaseKeeper
from orchestrator.store.models import AlmaSet, AttemptState, Record

# ---------------------------------------------------------------------------------------------
# add


_SET_ID = re.compile(r"^\d{1,40}$")
UNKNOWN_SET_CODES = frozenset({"60107", "402264", "60100"})


def add_set(ctx: Context, alma_set_id: str, name: str | None = None) -> SetSummary:
    """Register an existing Alma set: read its name and members from Alma, store them in one transaction.

    :raises BadInputError: not a set id, or already registered. :raises AlmaError: Alma refused or failed.
    """
    alma_set_id = alma_set_id.strip()
    if not _SET_ID.match(alma_set_id):
        raise BadInputError(f"{alma_set_id!r} is not an Alma set id (digits only)")
    if name is not None:
        name = name.strip()
        if not name:
            raise BadInputError("--name must not be empty")
    with ctx.sessions.begin() as session:
        if session.scalar(select(AlmaSet).where(AlmaSet.alma_set_id == alma_set_id)) is not None:
            raise BadInputError(f"set {alma_set_id} is already registered (see `hwf status {alma_set_id}`)")
        if name and session.scalar(select(AlmaSet).where(AlmaSet.name == name)) is not None:
            raise BadInputError(f"the name {name!r} is already used by another set; choose another --name")
        if name and _SET_ID.match(name):
            raise BadInputError(f"--name {name!r} must not be all digits (it would look like a set id)")
    try:
        info = ctx.alma.get_set(alma_set_id)
    except AlmaError as exc:
        if exc.status == 400 and exc.code in UNKNOWN_SET_CODES:
            raise BadInputError(f"Alma has no set {alma_set_id}: {exc.alma_message or exc}") from None
        raise
    members = list(ctx.alma.iter_set_members(alma_set_id))
    seen: set[str] = set()
    unique = [m for m in members if not (m.id in seen or seen.add(m.id))]  # type: ignore[func-returns-value]
    now = ctx.clock()
    try:
        with ctx.sessions.begin() as session:
            row = AlmaSet(alma_set_id=alma_set_id, name=name or info.name, stage=Stage.CREATED)
            row.record_count = len(unique)
            row.created_at = now
            session.add(row)
            session.flush()
            session.add_all(Record(set_id=row.id, mms_id=m.id, title=m.description) for m in unique)
            add_event(
                session,
                row,
                "added",
                f"registered Alma set {alma_set_id} {info.name!r} with {plural(len(unique), 'member')}",
                at=now,
                actor=ctx.owner,
                alma_name=info.name,
                content=info.content,
                members=len(unique),
            )
            if info.content and info.content not in ("BIB_MMS", "IED"):
                add_event(
                    session,
                    row,
                    "warning",
                    f"set content is {info.content}; the Handle Migration job expects title sets (BIB_MMS)",
                    at=now,
                )
    except IntegrityError:
        raise BadInputError(f"set {alma_set_id} or name {name or info.name!r} is already registered") from None
    ctx.reporter.note(name or info.name, f"registered with {plural(len(unique), 'member')}")
    return status(ctx, alma_set_id)[0]


# ---------------------------------------------------------------------------------------------
# advance


class Outcome(enum.Enum):
    VERIFIED = "verified"
    WAITING = "waiting"


@dataclass(frozen=True)
class AdvanceResult:
    set: str
    name: str
    outcome: Outcome
    state: str
    message: str
    wait_until: datetime | None = None


class Action(enum.Enum):
    DONE = "done"
    ATTENTION = "attention"
    PRECHECK = "precheck"  # fresh preflight before submitting the copy or migration job
    SUBMIT = "submit"
    RECONCILE = "reconcile"
    POLL = "poll"
    WAIT = "wait"
    FIRE = "fire"
    VERIFY = "verify"
    MANUAL = "manual"  # manual integration mode: find the operator's run


@dataclass(frozen=True)
class Plan:
    action: Action
    step: Step | None = None
    attempt_id: int | None = None
    wake_at: datetime | None = None
    reason: str = ""


def plan_step(ctx: Context, session: Session, row: AlmaSet, now: datetime, prechecked: set[Step]) -> Plan:
    if row.stage is Stage.VERIFIED:
        return Plan(Action.DONE)
    if row.attention:
        return Plan(Action.ATTENTION, reason=row.attention)
    step = next_step(row.stage)
    assert step is not None
    if row.wait_until is not None and row.wait_until > now and row.waiting:
        return Plan(Action.WAIT, step=step, wake_at=row.wait_until, reason=row.waiting)
    if step is Step.VERIFY:
        integration = latest_attempt(session, row.id, Step.INTEGRATE)
        ended = integration.finished_at if integration and integration.finished_at else row.updated_at
        settle_at = settle_until(ended, ctx.config.handles.settle_minutes)
        if settle_at > now:
            return Plan(
                Action.WAIT,
                step=step,
                wake_at=settle_at,
                reason=f"settling: verification starts at {format_utc(settle_at)} "
                f"({ctx.config.handles.settle_minutes:g} min after the integration run)",
            )
        return Plan(Action.VERIFY, step=step)
    attempt = latest_attempt(session, row.id, step)
    if (
        attempt is None
        or attempt.state is AttemptState.ABANDONED
        or (attempt.state is AttemptState.FINISHED and not jobs.finished_ok(attempt))
    ):
        # A failed attempt reaches here only after `hwf retry` cleared the attention.
        if step in (Step.COPY_IDENTIFIERS, Step.MIGRATE) and step not in prechecked:
            return Plan(Action.PRECHECK, step=step)
        if step is Step.INTEGRATE and ctx.config.alma.handle_integration_mode == "manual":
            return Plan(Action.MANUAL, step=step)
        return Plan(Action.SUBMIT, step=step)
    if attempt.state is AttemptState.SUBMITTING:
        return Plan(Action.RECONCILE, step=step, attempt_id=attempt.id)
    if attempt.state is AttemptState.WAITING_OPERATOR:
        return Plan(Action.MANUAL, step=step, attempt_id=attempt.id)
    if attempt.state is AttemptState.SUBMITTED:
        due = jobs.poll_due_at(attempt, now)
        if due > now:
            return Plan(
                Action.WAIT,
                step=step,
                attempt_id=attempt.id,
                wake_at=due,
                reason=f"{step.value} job {attempt.job_id} instance {attempt.instance_id} is "
                f"{(attempt.status or 'submitted').lower()}",
            )
        return Plan(Action.POLL, step=step, attempt_id=attempt.id)
    return Plan(Action.FIRE, step=step, attempt_id=attempt.id)


def step_facts(ctx: Context, session: Session, row: AlmaSet, step: Step, now: datetime) -> StepFacts:
    if step is Step.VERIFY:
        integration = latest_attempt(session, row.id, Step.INTEGRATE)
        ended = integration.finished_at if integration and integration.finished_at else now
        settled = settle_until(ended, ctx.config.handles.settle_minutes) <= now
        not_ok = session.scalar(
            select(func.count())
            .select_from(Record)
            .where(Record.set_id == row.id, Record.excluded.is_(False))
            .where((Record.verdict.is_(None)) | (Record.verdict.not_in(VERIFIED_VALUES)))
        )
        return StepFacts(settled=settled, all_verified=not not_ok)
    attempt = latest_attempt(session, row.id, step)
    job_ok = attempt is not None and (
        attempt.state is AttemptState.NOT_NEEDED
        or (attempt.state is AttemptState.FINISHED and jobs.finished_ok(attempt))
    )
    from orchestrator.service import preflight  # imported when needed: read-only commands stay quick to start

    return StepFacts(job_ok=job_ok, records_ready=preflight.records_ready(session, row, step))


def _fire(ctx: Context, set_id: int, step: Step) -> str:
    """Fire the step's trigger; the transition and its event commit together."""
    now = ctx.clock()
    with ctx.sessions.begin() as session:
        row = session.get_one(AlmaSet, set_id)
        facts = step_facts(ctx, session, row, step, now)
        before = row.stage
        if not fire_step(ctx, session, row, step, facts, now):
            reason = (
                f"{step.value}: guard not met ({facts}); see `hwf check {row.alma_set_id}` and "
                f"`hwf history {row.alma_set_id}`"
            )
            set_attention(session, row, "guard", reason, now)
            return reason
        return f"{before.value} -> {row.stage.value}"


def advance(ctx: Context, ref: str, *, wait: bool = True) -> AdvanceResult:
    """Run a set forward until verified, or until it must wait (``wait=False``) or needs attention.

    :raises NeedsAttentionError: the set needs an operator. :raises LeaseHeldError: another process
        holds the set.
    """
    with ctx.sessions.begin() as session:
        row = find_set(session, ref)
        set_id, name, alma_id = row.id, row.name, row.alma_set_id
        if row.stage is Stage.VERIFIED:
            return AdvanceResult(alma_id, name, Outcome.VERIFIED, row.stage.value, "already verified; nothing to do")
    return drive_leased(ctx, set_id, wait=wait)


Gate: TypeAlias = Callable[[Session, AlmaSet, "Plan", datetime], "tuple[str, datetime | None] | None"]


def drive_leased(
    ctx: Context,
    set_id: int,
    *,
    wait: bool,
    gate: Gate | None = None,
    quota_error: type[NeedsAttentionError] = NeedsAttentionError,
) -> AdvanceResult:
    """Claim the set's lease, drive it, release the lease. :raises LeaseHeldError: another holds it."""
    with holding_lease(ctx, set_id) as keeper:
        return _drive(ctx, set_id, keeper, wait=wait, gate=gate, quota_error=quota_error)


def _drive(
    ctx: Context,
    set_id: int,
    keeper: LeaseKeeper,
    *,
    wait: bool,
    gate: Gate | None = None,
    quota_error: type[NeedsAttentionError] = NeedsAttentionError,
) -> AdvanceResult:
    """The advance loop. ``gate`` (the scheduler's job-slot check) may hold a planned action back: it
    runs in the planning transaction and returns (reason, until) to make the set wait."""
    prechecked: set[Step] = set()
    while True:
        keeper.check()
        now = ctx.clock()
        with ctx.sessions.begin() as session:
            row = session.get_one(AlmaSet, set_id)
            plan = plan_step(ctx, session, row, now, prechecked)
            name, alma_id, state = row.name, row.alma_set_id, row.stage.value
            refused = gate(session, row, plan, now) if gate is not None else None
            if refused is None and plan.action is Action.WAIT and row.waiting != plan.reason:
                row.waiting = plan.reason
        if refused is not None:
            return AdvanceResult(alma_id, name, Outcome.WAITING, state, refused[0], refused[1])
        if plan.action is Action.DONE:
            return AdvanceResult(alma_id, name, Outcome.VERIFIED, state, "verified")
        if plan.action is Action.ATTENTION:
            raise NeedsAttentionError(f"set {alma_id} ({name}) needs attention: {plan.reason}")
        assert plan.step is not None
        if plan.action is Action.WAIT:
            assert plan.wake_at is not None
            if not wait:
                return AdvanceResult(alma_id, name, Outcome.WAITING, state, plan.reason, plan.wake_at)
            _sleep_until(ctx, keeper, plan.wake_at)
            continue
        try:
            _execute(ctx, set_id, plan, prechecked)
        except DailyQuotaError as exc:
            _quota_pause(ctx, set_id, exc)
            raise quota_error(f"set {alma_id} ({name}): {exc}") from None


def _execute(ctx: Context, set_id: int, plan: Plan, prechecked: set[Step]) -> None:
    step = plan.step
    from orchestrator.service import (
        preflight,
        verification,  # imported when needed: read-only commands stay quick to start
    )

    assert step is not None
    if plan.action is Action.PRECHECK:
        preflight.precheck_step(ctx, set_id, step)
        prechecked.add(step)
    elif plan.action is Action.SUBMIT:
        jobs.submit(ctx, set_id, step)
    elif plan.action is Action.RECONCILE:
        assert plan.attempt_id is not None
        jobs.reconcile(ctx, set_id, plan.attempt_id)
    elif plan.action is Action.POLL:
        assert plan.attempt_id is not None
        jobs.poll(ctx, set_id, plan.attempt_id)
    elif plan.action is Action.MANUAL:
        jobs.manual_integration(ctx, set_id, plan.attempt_id)
    elif plan.action is Action.FIRE:
        message = _fire(ctx, set_id, step)
        with ctx.sessions() as session:
            ctx.reporter.note(session.get_one(AlmaSet, set_id).name, message)
    elif plan.action is Action.VERIFY:
        if verification.run(ctx, set_id, only_problems=True):
            message = _fire(ctx, set_id, Step.VERIFY)
            with ctx.sessions() as session:
                ctx.reporter.note(session.get_one(AlmaSet, set_id).name, message)


def _sleep_until(ctx: Context, keeper: LeaseKeeper, wake_at: datetime) -> None:
    while True:
        keeper.check()
        remaining = (wake_at - ctx.clock()).total_seconds()
        if remaining <= 0:
            return
        ctx.sleep(min(remaining, 5.0))


def _quota_pause(ctx: Context, set_id: int, exc: AlmaError) -> None:
    now = ctx.clock()
    tomorrow = (now + timedelta(days=1)).replace(hour=0, minute=5, second=0, microsecond=0)
    with ctx.sessions.begin() as session:
        row = session.get_one(AlmaSet, set_id)
        set_attention(
            session,
            row,
            "quota",
            f"Alma's daily API quota is spent or under the floor ({exc}); new work stops. "
            f"It can go on after Alma's midnight reset (about {format_utc(tomorrow)}): "
            f"run `hwf retry {row.alma_set_id} --reason TEXT`",
            now,
        )


# ---------------------------------------------------------------------------------------------
# retry


def retry(ctx: Context, ref: str, *, reason: str, step: str | None = None) -> str:
    """Clear a set's attention so the next ``advance`` re-runs the step that stopped (audited).

    :raises BadInputError: nothing to retry, or a step that is not the set's current one.
    """
    now = ctx.clock()
    with ctx.sessions.begin() as session:
        row = find_set(session, ref)
        current = next_step(row.stage)
        if step is not None and (current is None or step != current.value):
            raise BadInputError(
                f"set {row.alma_set_id} is at {row.stage.value}: only its next step "
                f"({current.value if current else 'none'}) can be retried, not {step!r}"
            )
        if row.attention is None and row.waiting is None:
            raise BadInputError(f"set {row.alma_set_id} needs nothing: it is at {row.stage.value} with no attention")
        previous = row.attention or row.waiting
        if row.attention_kind == jobs.INSTANCE_UNKNOWN and current is not None:
            # Alma does not know the instance the step waited on: the operator says it never ran.
            lost = latest_attempt(session, row.id, current)
            if lost is not None and lost.state is AttemptState.SUBMITTED:
                lost.state = AttemptState.ABANDONED
                lost.note = f"instance {lost.instance_id} unknown to Alma; abandoned by `hwf retry`: {reason}"
        row.attention = None
        row.attention_kind = None
        row.waiting = None
        row.wait_until = None
        add_event(
            session,
            row,
            "retry",
            f"operator cleared: {previous}; reason: {reason}",
            at=now,
            actor=ctx.owner,
            reason=reason,
            step=current.value if current else None,
        )
        again = current.value if current else "nothing"
        return f"set {row.alma_set_id}: cleared; `hwf advance {row.alma_set_id}` re-runs {again}"
