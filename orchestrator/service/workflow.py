"""Moving one set: ``hwf add`` (register an Alma set), ``hwf advance`` (drive it until verified, or until it
must wait or needs a person) and ``hwf retry``.

``advance`` is a loop: in a short transaction, look at the set and plan its next action
(``actions.plan_step``); outside any transaction, run that action's room (talk to Alma or the handle
proxy); the room records what happened in another short transaction. A crash between any two lines leaves
the database describing what is known, and the next ``advance`` or ``resume`` picks up from there.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeAlias

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from orchestrator.alma.types import AlmaSetInfo, SetMember
from orchestrator.display import utc_stamp
from orchestrator.domain.attention import Attention
from orchestrator.domain.steps import Stage, Step, next_step
from orchestrator.domain.wording import plural
from orchestrator.errors import AlmaError, BadInputError, DailyQuotaError, NeedsAttentionError
from orchestrator.service import membership
from orchestrator.service.actions import Action, Plan
from orchestrator.service.actions.plan import plan_step
from orchestrator.service.actions.rooms import ROOMS
from orchestrator.service.context import Context, find_set
from orchestrator.service.views import SetSummary, status
from orchestrator.store.leases import LeaseKeeper
from orchestrator.store.ledger import Ledger
from orchestrator.store.models import AlmaSet, AttemptState, Record, SetCreation

# ---------------------------------------------------------------------------------------------
# add


_SET_ID = re.compile(r"^\d{1,40}$")
UNKNOWN_SET_CODES = frozenset({"60107", "402264", "60100"})


def add_set(ctx: Context, alma_set_id: str, name: str | None = None) -> SetSummary:
    """Register an existing Alma set: read its name and members from Alma, store them in one transaction. A
    LOGICAL set (a saved search) is never registered itself: an itemized snapshot of it is made and registered.

    :raises BadInputError: not a set id, or already registered. :raises AlmaError: Alma refused or failed.
    """
    alma_set_id = alma_set_id.strip()
    if not _SET_ID.match(alma_set_id):
        raise BadInputError(f"{alma_set_id!r} is not an Alma set id (digits only)")
    if name is not None:
        name = name.strip()
        if not name:
            raise BadInputError("--name must not be empty")
    _check_free(ctx, alma_set_id, name)
    info = _read_set(ctx, alma_set_id)
    logical = None
    if (info.type or "").upper() == "LOGICAL":
        ctx.reporter.note(
            info.name,
            f"Alma set {alma_set_id} is LOGICAL (a saved search, evaluated again by every job run on it): hwf "
            "registers an itemized snapshot of it instead, and leaves the logical set as it is",
        )
        logical, info = info, membership.snapshot_of_logical(ctx, info)
        _check_free(ctx, info.id, name)
    unique = membership.members_of(ctx, info.id)
    return _register(ctx, info, name, unique, logical)


def _check_free(ctx: Context, alma_set_id: str, name: str | None) -> None:
    """:raises BadInputError: the set or the name is registered already, or the name looks like a set id."""
    with ctx.sessions() as session:
        if session.scalar(select(AlmaSet).where(AlmaSet.alma_set_id == alma_set_id)) is not None:
            raise BadInputError(f"set {alma_set_id} is already registered (see `hwf status {alma_set_id}`)")
        if name and session.scalar(select(AlmaSet).where(AlmaSet.name == name)) is not None:
            raise BadInputError(f"the name {name!r} is already used by another set; choose another --name")
        if name and _SET_ID.match(name):
            raise BadInputError(f"--name {name!r} must not be all digits (it would look like a set id)")


def _read_set(ctx: Context, alma_set_id: str) -> AlmaSetInfo:
    try:
        return ctx.alma.get_set(alma_set_id)
    except AlmaError as exc:
        if exc.status == 400 and exc.code in UNKNOWN_SET_CODES:
            raise BadInputError(f"Alma has no set {alma_set_id}: {exc.alma_message or exc}") from None
        raise


def _register(
    ctx: Context, info: AlmaSetInfo, name: str | None, members: list[SetMember], logical: AlmaSetInfo | None
) -> SetSummary:
    made_by_hwf = logical is not None or _made_by_hwf(ctx, info.id)
    try:
        with ctx.ledger() as book:
            row = AlmaSet(alma_set_id=info.id, name=name or info.name, stage=Stage.CREATED)
            row.record_count = len(members)
            row.created_at = book.now
            row.alma_type = (info.type or "ITEMIZED").upper()
            row.source_set = logical.id if logical is not None else None
            row.made_by_hwf = made_by_hwf
            book.session.add(row)
            book.session.flush()
            book.session.add_all(Record(set_id=row.id, mms_id=m.id, title=m.description) for m in members)
            source = f", a snapshot of logical set {logical.id} {logical.name!r}" if logical is not None else ""
            book.event(
                row,
                "added",
                f"registered Alma set {info.id} {info.name!r} with {plural(len(members), 'member')}{source}",
                alma_name=info.name,
                content=info.content,
                members=len(members),
                from_logical_set=logical.id if logical is not None else None,
            )
            if info.content and info.content not in ("BIB_MMS", "IED"):
                book.event(
                    row,
                    "warning",
                    f"set content is {info.content}; the Handle Migration job expects title sets (BIB_MMS)",
                )
            membership.registered_snapshot(book.session, info.id)
    except IntegrityError:
        raise BadInputError(f"set {info.id} or name {name or info.name!r} is already registered") from None
    ctx.reporter.note(name or info.name, f"registered with {plural(len(members), 'member')}")
    return status(ctx, info.id)[0]


def _made_by_hwf(ctx: Context, alma_set_id: str) -> bool:
    """hwf created this Alma set (``hwf add --from-csv``), so it may take members out of it."""
    with ctx.sessions() as session:
        return session.scalar(select(SetCreation.id).where(SetCreation.alma_set_id == alma_set_id)) is not None


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
    person: bool = False  # it waits for a person's run in Alma: nothing moves until they act


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


# The scheduler's job-slot check: it may hold a planned action back, inside the planning transaction, by
# returning (reason, until) to make the set wait.
Gate: TypeAlias = Callable[[Ledger, AlmaSet, Plan], "tuple[str, datetime | None] | None"]


def drive_leased(
    ctx: Context,
    set_id: int,
    *,
    wait: bool,
    gate: Gate | None = None,
    quota_error: type[NeedsAttentionError] = NeedsAttentionError,
) -> AdvanceResult:
    """Claim the set's lease, drive it, release the lease. :raises LeaseHeldError: another holds it."""
    with ctx.lease(set_id) as keeper:
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
    """The advance loop: plan, then run the plan's room, until the set is done, must wait or needs a person."""
    prechecked: set[Step] = set()
    while True:
        keeper.check()
        with ctx.ledger() as book:
            row = book.set(set_id)
            plan = plan_step(ctx.config, book.session, row, book.now, prechecked)
            name, alma_id, state = row.name, row.alma_set_id, row.stage.value
            refused = gate(book, row, plan) if gate is not None else None
            if refused is None and plan.action is Action.WAIT:
                book.show_waiting(row, plan.reason)
        if refused is not None:
            return AdvanceResult(alma_id, name, Outcome.WAITING, state, refused[0], refused[1])
        if plan.action is Action.DONE:
            return AdvanceResult(alma_id, name, Outcome.VERIFIED, state, "verified")
        if plan.action is Action.ATTENTION:
            raise NeedsAttentionError(f"set {alma_id} ({name}) needs attention: {plan.reason}")
        if plan.action is Action.WAIT:
            assert plan.wake_at is not None
            if not wait:
                return AdvanceResult(alma_id, name, Outcome.WAITING, state, plan.reason, plan.wake_at, plan.person)
            _sleep_until(ctx, keeper, plan.wake_at)
            continue
        try:
            ROOMS[plan.action].run(ctx, set_id, plan)
        except DailyQuotaError as exc:
            _quota_pause(ctx, set_id, exc)
            raise quota_error(f"set {alma_id} ({name}): {exc}") from None
        if plan.action is Action.PRECHECK and plan.step is not None:
            prechecked.add(plan.step)


def _sleep_until(ctx: Context, keeper: LeaseKeeper, wake_at: datetime) -> None:
    while True:
        keeper.check()
        remaining = (wake_at - ctx.clock()).total_seconds()
        if remaining <= 0:
            return
        ctx.sleep(min(remaining, 5.0))


def _quota_pause(ctx: Context, set_id: int, exc: AlmaError) -> None:
    with ctx.ledger() as book:
        row = book.set(set_id)
        tomorrow = (book.now + timedelta(days=1)).replace(hour=0, minute=5, second=0, microsecond=0)
        book.attention(
            row,
            Attention.QUOTA,
            f"Alma's daily API quota is spent or under the floor ({exc}); new work stops. "
            f"It can go on after Alma's midnight reset (about {utc_stamp(tomorrow)}): "
            f"run `hwf retry {row.alma_set_id} --reason TEXT`",
        )


# ---------------------------------------------------------------------------------------------
# retry


def retry(ctx: Context, ref: str, *, reason: str, step: str | None = None) -> str:
    """Clear a set's attention so the next ``advance`` re-runs the step that stopped (audited).

    :raises BadInputError: nothing to retry, or a step that is not the set's current one.
    """
    with ctx.ledger() as book:
        row = find_set(book.session, ref)
        current = next_step(row.stage)
        if step is not None and (current is None or step != current.value):
            raise BadInputError(
                f"set {row.alma_set_id} is at {row.stage.value}: only its next step "
                f"({current.value if current else 'none'}) can be retried, not {step!r}"
            )
        if row.attention is None and row.waiting is None:
            raise BadInputError(f"set {row.alma_set_id} needs nothing: it is at {row.stage.value} with no attention")
        if row.attention_kind == Attention.INSTANCE_UNKNOWN and current is not None:
            # Alma does not know the instance the step waited on: the operator says it never ran.
            lost = book.latest_attempt(row.id, current)
            if lost is not None and lost.state is AttemptState.SUBMITTED:
                lost.state = AttemptState.ABANDONED
                lost.note = f"instance {lost.instance_id} unknown to Alma; abandoned by `hwf retry`: {reason}"
        previous = book.resume(row)
        book.event(
            row,
            "retry",
            f"operator cleared: {previous}; reason: {reason}",
            reason=reason,
            step=current.value if current else None,
        )
        again = current.value if current else "nothing"
        return f"set {row.alma_set_id}: cleared; `hwf advance {row.alma_set_id}` re-runs {again}"
