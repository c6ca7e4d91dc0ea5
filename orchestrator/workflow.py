"""The service layer: add, advance, resume, status, history, report. Only the service modules open
transactions, and none is open during a remote call (STYLE.md §9).

``advance`` is a loop: in a short transaction, look at the set and decide the next action (``_plan``);
outside any transaction, do it (talk to Alma or the handle proxy); in another short transaction,
record what happened. A crash between any two lines leaves the database describing what is known,
and the next ``advance`` or ``resume`` picks up from there (DESIGN.md §3).
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from json.encoder import encode_basestring as _quote
from typing import Any

from sqlalchemy import String, Text, cast, func, select, type_coerce
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from . import jobs
from .errors import (
    AlmaError,
    BadInputError,
    DailyQuotaError,
    LeaseHeldError,
    NeedsAttentionError,
)
from .leases import LeaseKeeper, candidate_ids, claim, holder, release
from .machine import Stage, Step, StepFacts, fire, next_step
from .models import AlmaSet, Attempt, AttemptState, Event, Record
from .service import Context, add_event, find_set, set_attention

# ---------------------------------------------------------------------------------------------
# add


_SET_ID = re.compile(r"^\d{1,40}$")
UNKNOWN_SET_CODES = frozenset({"60107", "402264", "60100"})


@dataclass(frozen=True)
class SetSummary:
    set: str
    name: str
    state: str
    attention: str | None
    records: int
    waiting: str | None = None
    wait_until: datetime | None = None
    excluded: int = 0
    lease_owner: str | None = None
    step: str | None = None
    instance_id: str | None = None
    job_status: str | None = None
    progress: float | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "set": self.set,
            "name": self.name,
            "state": self.state,
            "attention": self.attention,
            "records": self.records,
            "excluded": self.excluded,
            "waiting": self.waiting,
            "wait_until": self.wait_until.isoformat().replace("+00:00", "Z") if self.wait_until else None,
            "lease_owner": self.lease_owner,
            "step": self.step,
            "instance_id": self.instance_id,
            "job_status": self.job_status,
            "progress": self.progress,
        }


def add_set(ctx: Context, alma_set_id: str, name: str | None = None) -> SetSummary:
    """Register an existing Alma set: read its name and members from Alma, store them in one transaction.

    :raises BadInputError: not a set id, or already registered. :raises AlmaError: Alma refused or failed.
    """
    alma_set_id = alma_set_id.strip()
    if not _SET_ID.match(alma_set_id):
        raise BadInputError(f"{alma_set_id!r} is not an Alma set id (digits only)")
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
                f"registered Alma set {alma_set_id} {info.name!r} with {len(unique)} members",
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
    ctx.reporter.note(name or info.name, f"registered with {len(unique)} members")
    return status(ctx, alma_set_id)[0]


# ---------------------------------------------------------------------------------------------
# status, history


def _summaries(session: Session, only: int | None = None) -> list[SetSummary]:
    """Plain column reads (no ORM objects) and one grouped query per table: 10,000 sets in a blink."""
    sets = select(
        AlmaSet.id,
        AlmaSet.alma_set_id,
        AlmaSet.name,
        AlmaSet.stage,
        AlmaSet.attention,
        AlmaSet.record_count,
        AlmaSet.waiting,
        AlmaSet.wait_until,
        AlmaSet.lease_owner,
    ).order_by(AlmaSet.created_at, AlmaSet.id)
    excluded_q = select(Record.set_id, func.count()).where(Record.excluded).group_by(Record.set_id)
    newest = select(func.max(Attempt.id)).group_by(Attempt.set_id)
    if only is not None:
        sets = sets.where(AlmaSet.id == only)
        excluded_q = excluded_q.where(Record.set_id == only)
        newest = newest.where(Attempt.set_id == only)
    excluded: dict[int, int] = {row[0]: row[1] for row in session.execute(excluded_q)}
    active = {
        row.set_id: row
        for row in session.execute(
            select(Attempt.set_id, Attempt.step, Attempt.instance_id, Attempt.status, Attempt.progress).where(
                Attempt.id.in_(newest.scalar_subquery()),
                Attempt.state.in_([AttemptState.SUBMITTING, AttemptState.SUBMITTED]),
            )
        )
    }
    out = []
    for r in session.execute(sets):
        a = active.get(r.id)
        out.append(
            SetSummary(
                set=r.alma_set_id,
                name=r.name,
                state=r.stage.value,
                attention=r.attention,
                records=r.record_count,
                waiting=r.waiting,
                wait_until=r.wait_until,
                excluded=excluded.get(r.id, 0),
                lease_owner=r.lease_owner,
                step=a.step if a else None,
                instance_id=a.instance_id if a else None,
                job_status=a.status if a else None,
                progress=a.progress if a else None,
            )
        )
    return out


def status(ctx: Context, ref: str | None = None) -> list[SetSummary]:
    """Where each set stands (or one set)."""
    with ctx.sessions() as session:
        only = find_set(session, ref).id if ref is not None else None
        return _summaries(session, only)


@dataclass(frozen=True)
class EventView:
    """One audit event; ``raw_data`` is the stored JSON text, decoded only when asked for; ``at`` is UTC
    (text from SQLite, a datetime from PostgreSQL: use ``at_utc``)."""

    at: datetime | str
    kind: str
    detail: str
    actor: str | None
    raw_data: str | None = None

    @property
    def data(self) -> dict[str, Any] | None:
        value = json.loads(self.raw_data) if self.raw_data else None
        return value if isinstance(value, dict) else None

    @property
    def at_utc(self) -> datetime:
        at = datetime.fromisoformat(self.at) if isinstance(self.at, str) else self.at
        return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)

    def _base(self) -> dict[str, Any]:
        out: dict[str, Any] = {"at": self.at_text(), "kind": self.kind}
        out["detail"] = self.detail
        if self.actor:
            out["actor"] = self.actor
        return out

    def as_json(self) -> dict[str, Any]:
        out = self._base()
        for key, value in (self.data or {}).items():
            out.setdefault(key, value)
        return out

    def at_text(self) -> str:
        """ISO-8601 UTC with Z; from SQLite's stored text without parsing it."""
        if isinstance(self.at, str) and "+" not in self.at[10:]:
            return self.at.replace(" ", "T", 1) + "Z"
        return self.at_utc.isoformat().replace("+00:00", "Z")

    def json_text(self) -> str:
        """``as_json`` serialised, without decoding the stored data: its members are spliced in (the
        event's own keys, at/kind/detail/actor, are never data keys: ``add_event`` takes them apart)."""
        text = f'{{"at": "{self.at_text()}", "kind": {_quote(self.kind)}, "detail": {_quote(self.detail)}'
        if self.actor:
            text += f', "actor": {_quote(self.actor)}'
        raw = (self.raw_data or "").strip()
        if len(raw) > 2 and raw.startswith("{"):
            return text + ", " + raw[1:]
        return text + "}"


def history(ctx: Context, ref: str, page: int = 5000) -> Iterator[EventView]:
    """The audit trail of a set, oldest first, streamed in keyset pages of short transactions."""
    with ctx.sessions() as session:
        set_id = find_set(session, ref).id
    raw = cast(Event.data, Text)
    # SQLite keeps the time as text: hand it over as is (EventView.at_utc parses it when used); typed
    # conversion of every row would cost more than the query. PostgreSQL's driver gives datetimes.
    at: Any = type_coerce(Event.at, String) if ctx.sessions.kw["bind"].dialect.name == "sqlite" else Event.at
    last = 0
    while True:
        with ctx.sessions() as session:
            rows = session.execute(
                select(Event.id, at, Event.kind, Event.detail, Event.actor, raw)
                .where(Event.set_id == set_id, Event.id > last)
                .order_by(Event.id)
                .limit(page)
            ).all()
        if not rows:
            return
        last = rows[-1][0]
        for e in rows:
            yield EventView(at=e[1], kind=e[2], detail=e[3], actor=e[4], raw_data=e[5])


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


class _Action(enum.Enum):
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
class _Plan:
    action: _Action
    step: Step | None = None
    attempt_id: int | None = None
    wake_at: datetime | None = None
    reason: str = ""


def _latest_attempt(session: Session, set_id: int, step: Step) -> Attempt | None:
    return session.scalar(
        select(Attempt).where(Attempt.set_id == set_id, Attempt.step == step.value).order_by(Attempt.number.desc())
    )


def _plan(ctx: Context, session: Session, row: AlmaSet, now: datetime, prechecked: set[Step]) -> _Plan:
    if row.stage is Stage.VERIFIED:
        return _Plan(_Action.DONE)
    if row.attention:
        return _Plan(_Action.ATTENTION, reason=row.attention)
    step = next_step(row.stage)
    assert step is not None
    if row.wait_until is not None and row.wait_until > now and row.waiting:
        return _Plan(_Action.WAIT, step=step, wake_at=row.wait_until, reason=row.waiting)
    if step is Step.VERIFY:
        integration = _latest_attempt(session, row.id, Step.INTEGRATE)
        ended = integration.finished_at if integration and integration.finished_at else row.updated_at
        settle_until = ended + timedelta(minutes=ctx.config.handles.settle_minutes)
        if settle_until > now:
            return _Plan(
                _Action.WAIT,
                step=step,
                wake_at=settle_until,
                reason=f"settling: verification starts at {_hhmm(settle_until)} "
                f"({ctx.config.handles.settle_minutes:g} min after the integration run)",
            )
        return _Plan(_Action.VERIFY, step=step)
    attempt = _latest_attempt(session, row.id, step)
    if (
        attempt is None
        or attempt.state is AttemptState.ABANDONED
        or (attempt.state is AttemptState.FINISHED and not jobs.finished_ok(attempt))
    ):
        # A failed attempt reaches here only after `hwf retry` cleared the attention.
        if step in (Step.COPY_IDENTIFIERS, Step.MIGRATE) and step not in prechecked:
            return _Plan(_Action.PRECHECK, step=step)
        if step is Step.INTEGRATE and ctx.config.alma.handle_integration_mode == "manual":
            return _Plan(_Action.MANUAL, step=step)
        return _Plan(_Action.SUBMIT, step=step)
    if attempt.state is AttemptState.SUBMITTING:
        return _Plan(_Action.RECONCILE, step=step, attempt_id=attempt.id)
    if attempt.state is AttemptState.WAITING_OPERATOR:
        return _Plan(_Action.MANUAL, step=step, attempt_id=attempt.id)
    if attempt.state is AttemptState.SUBMITTED:
        due = jobs.poll_due_at(attempt, now)
        if due > now:
            return _Plan(
                _Action.WAIT,
                step=step,
                attempt_id=attempt.id,
                wake_at=due,
                reason=f"{step.value} job {attempt.job_id} instance {attempt.instance_id} is "
                f"{(attempt.status or 'submitted').lower()}",
            )
        return _Plan(_Action.POLL, step=step, attempt_id=attempt.id)
    return _Plan(_Action.FIRE, step=step, attempt_id=attempt.id)


def _hhmm(at: datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M:%S UTC")


def _facts(ctx: Context, session: Session, row: AlmaSet, step: Step, now: datetime) -> StepFacts:
    if step is Step.VERIFY:
        integration = _latest_attempt(session, row.id, Step.INTEGRATE)
        ended = integration.finished_at if integration and integration.finished_at else now
        settled = ended + timedelta(minutes=ctx.config.handles.settle_minutes) <= now
        not_ok = session.scalar(
            select(func.count())
            .select_from(Record)
            .where(Record.set_id == row.id, Record.excluded.is_(False))
            .where((Record.verdict.is_(None)) | (Record.verdict != "OK"))
        )
        return StepFacts(settled=settled, all_verified=not not_ok)
    attempt = _latest_attempt(session, row.id, step)
    job_ok = attempt is not None and (
        attempt.state is AttemptState.NOT_NEEDED
        or (attempt.state is AttemptState.FINISHED and jobs.finished_ok(attempt))
    )
    from . import preflight  # imported when needed: read-only commands stay quick to start

    return StepFacts(job_ok=job_ok, records_ready=preflight.records_ready(session, row, step))


def _fire(ctx: Context, set_id: int, step: Step) -> str:
    """Fire the step's trigger; the transition and its event commit together."""
    now = ctx.clock()
    with ctx.sessions.begin() as session:
        row = session.get_one(AlmaSet, set_id)
        facts = _facts(ctx, session, row, step, now)
        before = row.stage
        if not fire(row, step, facts):
            reason = f"{step.value}: guard not met ({facts}); see `hwf check` and `hwf history`"
            set_attention(session, row, "guard", reason, now)
            return reason
        row.waiting = None
        row.wait_until = None
        add_event(
            session,
            row,
            "transition",
            f"{before.value} -> {row.stage.value} ({step.value})",
            at=now,
            actor=ctx.owner,
            **{"from": before.value, "to": row.stage.value, "trigger": step.value},
        )
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
    _claim_or_raise(ctx, set_id)
    try:
        with LeaseKeeper(ctx.sessions, set_id, ctx.owner, ctx.config.lease_seconds, ctx.clock) as keeper:
            return _drive(ctx, set_id, keeper, wait=wait)
    finally:
        with ctx.sessions.begin() as session:
            release(session, set_id, ctx.owner)


def _claim_or_raise(ctx: Context, set_id: int) -> None:
    now = ctx.clock()
    with ctx.sessions.begin() as session:
        if claim(session, set_id, ctx.owner, now, ctx.config.lease_seconds):
            return
        owner, expires = holder(session, set_id)
    until = f" until {_hhmm(expires)}" if expires else ""
    raise LeaseHeldError(f"another hwf process ({owner}) holds this set{until}; try again later")


def _drive(ctx: Context, set_id: int, keeper: LeaseKeeper, *, wait: bool) -> AdvanceResult:
    prechecked: set[Step] = set()
    while True:
        keeper.check()
        now = ctx.clock()
        with ctx.sessions.begin() as session:
            row = session.get_one(AlmaSet, set_id)
            plan = _plan(ctx, session, row, now, prechecked)
            name, alma_id, state = row.name, row.alma_set_id, row.stage.value
        if plan.action is _Action.DONE:
            return AdvanceResult(alma_id, name, Outcome.VERIFIED, state, "verified")
        if plan.action is _Action.ATTENTION:
            raise NeedsAttentionError(f"set {alma_id} ({name}) needs attention: {plan.reason}")
        assert plan.step is not None
        if plan.action is _Action.WAIT:
            assert plan.wake_at is not None
            with ctx.sessions.begin() as session:
                row = session.get_one(AlmaSet, set_id)
                if row.waiting != plan.reason:
                    row.waiting = plan.reason
            if not wait:
                return AdvanceResult(alma_id, name, Outcome.WAITING, state, plan.reason, plan.wake_at)
            _sleep_until(ctx, keeper, plan.wake_at)
            continue
        try:
            _execute(ctx, set_id, plan, prechecked)
        except DailyQuotaError as exc:
            _quota_pause(ctx, set_id, exc)
            raise NeedsAttentionError(f"set {alma_id} ({name}): {exc}") from None


def _execute(ctx: Context, set_id: int, plan: _Plan, prechecked: set[Step]) -> None:
    step = plan.step
    from . import preflight, verification  # imported when needed: read-only commands stay quick to start

    assert step is not None
    if plan.action is _Action.PRECHECK:
        preflight.precheck_step(ctx, set_id, step)
        prechecked.add(step)
    elif plan.action is _Action.SUBMIT:
        jobs.submit(ctx, set_id, step)
    elif plan.action is _Action.RECONCILE:
        assert plan.attempt_id is not None
        jobs.reconcile(ctx, set_id, plan.attempt_id)
    elif plan.action is _Action.POLL:
        assert plan.attempt_id is not None
        jobs.poll(ctx, set_id, plan.attempt_id)
    elif plan.action is _Action.MANUAL:
        jobs.manual_integration(ctx, set_id, plan.attempt_id)
    elif plan.action is _Action.FIRE:
        message = _fire(ctx, set_id, step)
        with ctx.sessions() as session:
            ctx.reporter.note(session.get_one(AlmaSet, set_id).name, message)
    elif plan.action is _Action.VERIFY:
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
            f"It can go on after Alma's midnight reset (about {_hhmm(tomorrow)}): run `hwf retry {row.alma_set_id}`",
            now,
        )


# ---------------------------------------------------------------------------------------------
# resume --all: a round-robin scheduler over every set that can move


@dataclass
class ResumeSummary:
    results: list[AdvanceResult] = field(default_factory=list)
    attention: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


_RESCAN_SECONDS = 60.0  # the longest the scheduler sleeps: sets added, retried or fixed meanwhile move soon
_TRANSIENT_WAIT_SECONDS = 60.0
_TRANSIENT_PASSES = 10  # passes in a row where Alma failed every set before resume gives up
SLOT_WAIT = "waiting for a job slot"
_NEEDS_SLOT = (_Action.PRECHECK, _Action.SUBMIT)


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
                f"(Alma allows {self.per_hour}); next slot at {_hhmm(free)}",
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
    from .errors import AlmaUnreachableError, RateLimitedError

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
                plan = _plan(ctx, session, row, now, set())
                if plan.action is _Action.WAIT:
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
                outcome[alma_id] = ("skipped", f"Alma did not answer ({exc}); trying again at {_hhmm(later_at)}")
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
    _claim_or_raise(ctx, set_id)
    try:
        with LeaseKeeper(ctx.sessions, set_id, ctx.owner, ctx.config.lease_seconds, ctx.clock) as keeper:
            prechecked: set[Step] = set()
            while True:
                keeper.check()
                now = ctx.clock()
                refused: tuple[str, datetime | None] | None = None
                with ctx.sessions.begin() as session:
                    row = session.get_one(AlmaSet, set_id)
                    plan = _plan(ctx, session, row, now, prechecked)
                    name, alma_id, state = row.name, row.alma_set_id, row.stage.value
                    if (
                        max_running is not None
                        and plan.action in _NEEDS_SLOT
                        and plan.step is not None
                        and plan.step.job_key is not None
                    ):
                        slots = _Slots(max_running, ctx.config.alma.max_runs_per_job_hour).load(session, now)
                        refused = slots.refusal(ctx, plan.step, now)
                        if refused is not None:
                            _wait_for_slot(session, row, refused[0], refused[1], now)
                    elif plan.action is _Action.WAIT and row.waiting != plan.reason:
                        row.waiting = plan.reason
                if refused is not None:
                    return AdvanceResult(alma_id, name, Outcome.WAITING, state, refused[0], refused[1])
                if plan.action is _Action.DONE:
                    return AdvanceResult(alma_id, name, Outcome.VERIFIED, state, "verified")
                if plan.action is _Action.ATTENTION:
                    raise NeedsAttentionError(f"set {alma_id} ({name}) needs attention: {plan.reason}")
                if plan.action is _Action.WAIT:
                    return AdvanceResult(alma_id, name, Outcome.WAITING, state, plan.reason, plan.wake_at)
                try:
                    _execute(ctx, set_id, plan, prechecked)
                except DailyQuotaError as exc:
                    _quota_pause(ctx, set_id, exc)
                    raise _QuotaSpentError(f"set {alma_id} ({name}): {exc}") from None
    finally:
        with ctx.sessions.begin() as session:
            release(session, set_id, ctx.owner)


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
            lost = _latest_attempt(session, row.id, current)
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


@dataclass(frozen=True)
class AttemptView:
    step: str
    number: int
    state: str
    job_id: str | None
    instance_id: str | None
    status: str | None
    counters: list[Any] | None
    started_at: datetime
    finished_at: datetime | None
    note: str | None


def attempts(ctx: Context, ref: str) -> list[AttemptView]:
    """Every submission of every step of a set, in order."""
    with ctx.sessions() as session:
        set_id = find_set(session, ref).id
        return [
            AttemptView(
                step=a.step,
                number=a.number,
                state=a.state.value,
                job_id=a.job_id,
                instance_id=a.instance_id,
                status=a.status,
                counters=a.counters,
                started_at=a.started_at,
                finished_at=a.finished_at,
                note=a.note,
            )
            for a in session.scalars(select(Attempt).where(Attempt.set_id == set_id).order_by(Attempt.id))
        ]
