"""Which records a set has, and keeping them the records Alma's jobs process.

- A LOGICAL Alma set is a saved search, evaluated again by every job run on it: hwf never runs a job on one. ``hwf
  add`` makes an itemized snapshot of it instead (``POST /conf/sets?from_logical_set=``), waits until Alma has
  populated it whole, and registers the snapshot. The logical set is only read.
- Between ``hwf add`` and the last job a day or more can pass, and colleagues edit sets. Before every job
  submission and before a person is asked to run a step, the Alma set's members are read in full and compared
  with hwf's records: any difference stops that set (attention ``drift``) before anything is sent, so no job
  ever runs on a record that did not pass every earlier step. ``hwf sync`` takes the new membership: before the
  copy job, new records join (and are checked like the rest); after it, records that joined late are taken out
  of the Alma set (when hwf made that set; else the operator removes them) and listed for a later set, and
  records that left are marked so in the report.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from orchestrator.alma.types import AlmaSetInfo, SetMember
from orchestrator.display import utc_stamp
from orchestrator.domain.attention import Attention
from orchestrator.domain.steps import Stage, Step
from orchestrator.domain.wording import plural
from orchestrator.errors import AlmaError, BadInputError
from orchestrator.service.almasets import create_named, exact_sets
from orchestrator.service.context import Context, find_set
from orchestrator.store.ledger import Ledger
from orchestrator.store.models import AlmaSet, Attempt, AttemptState, Record, SetCreation

NAMED = 5  # MMS IDs an attention names of each kind, then "+N more"
MAX_NAME = 255
_SENT = (AttemptState.SUBMITTING, AttemptState.SUBMITTED, AttemptState.FINISHED)


# ---------------------------------------------------------------------------------------------
# drift


@dataclass(frozen=True)
class Drift:
    """How the Alma set's members differ from hwf's records."""

    added: tuple[str, ...] = ()  # in the Alma set, not among the records hwf checked
    removed: tuple[str, ...] = ()  # records hwf checked that the Alma set no longer holds
    titles: dict[str, str | None] = field(default_factory=dict)  # added MMS ID -> title, as Alma lists it

    def __bool__(self) -> bool:
        return bool(self.added or self.removed)

    def describe(self) -> str:
        parts = []
        if self.added:
            parts.append(f"{len(self.added)} added ({_named(self.added)})")
        if self.removed:
            parts.append(f"{len(self.removed)} removed ({_named(self.removed)})")
        return "; ".join(parts)


def _named(ids: tuple[str, ...]) -> str:
    more = f" +{len(ids) - NAMED} more" if len(ids) > NAMED else ""
    return ", ".join(ids[:NAMED]) + more


def expected_members(session: Session, set_id: int) -> set[str]:
    """The MMS IDs the Alma set should hold: every record of the set, but those hwf took out of it."""
    return set(
        session.scalars(select(Record.mms_id).where(Record.set_id == set_id, Record.removed_from_alma_set.is_(False)))
    )


def compare(ctx: Context, set_id: int) -> Drift:
    """Read the Alma set's members in full (⌈N/100⌉ calls: a count alone misses a swap) and compare."""
    with ctx.sessions() as session:
        alma_set_id = session.get_one(AlmaSet, set_id).alma_set_id
        expected = expected_members(session, set_id)
    members = list(ctx.alma.iter_set_members(alma_set_id))
    present = {m.id for m in members}
    added = tuple(sorted(present - expected))
    return Drift(
        added=added,
        removed=tuple(sorted(expected - present)),
        titles={m.id: m.description for m in members if m.id in set(added)},
    )


def stop_on_drift(ctx: Context, set_id: int, before: str) -> bool:
    """Compare the members right before ``before`` (a job submission, a person's step). True when they differ:
    the set then has the ``drift`` attention and nothing may be sent for it."""
    drift = compare(ctx, set_id)
    if not drift:
        return False
    with ctx.ledger() as book:
        row = book.set(set_id)
        book.attention(
            row,
            Attention.DRIFT,
            f"drift: Alma set {row.alma_set_id}'s members are not the records hwf checked: {drift.describe()}; "
            f"nothing was sent ({before}). Run `hwf sync {row.alma_set_id}`",
        )
        book.event(row, "drift", drift.describe(), added=list(drift.added), removed=list(drift.removed))
    ctx.reporter.note(row.name, f"the Alma set changed ({drift.describe()}): stopped before {before}")
    return True


# ---------------------------------------------------------------------------------------------
# sync


@dataclass
class SyncReport:
    """What ``hwf sync`` did to a set."""

    set: str
    name: str
    joined: list[str] = field(default_factory=list)  # records taken in (before the copy job)
    left: list[str] = field(default_factory=list)  # records marked as gone from the Alma set
    late: list[str] = field(default_factory=list)  # joined after the copy job: taken out of the Alma set
    to_remove: list[str] = field(default_factory=list)  # joined late, in a set hwf did not make: remove by hand
    message: str = ""

    def as_json(self) -> dict[str, object]:
        return {
            "set": self.set,
            "name": self.name,
            "joined": self.joined,
            "left": self.left,
            "late": self.late,
            "to_remove": self.to_remove,
            "message": self.message,
        }


def sync(ctx: Context, ref: str) -> SyncReport:
    """``hwf sync SET``: take the Alma set's members as they are now, as far as the set's state allows.

    :raises BadInputError: unknown set. :raises LeaseHeldError: another hwf process works on the set.
    """
    with ctx.sessions() as session:
        row = find_set(session, ref)
        set_id, report = row.id, SyncReport(set=row.alma_set_id, name=row.name)
    with ctx.lease(set_id):
        drift = compare(ctx, set_id)
        with ctx.sessions() as session:
            row = session.get_one(AlmaSet, set_id)
            before_copy = row.stage is Stage.CREATED and not _copy_sent(session, set_id)
            made_by_hwf, alma_set_id, stage = row.made_by_hwf, row.alma_set_id, row.stage
        late: list[str] = []
        if drift.added and not before_copy and stage in (Stage.IDENTIFIERS_COPIED, Stage.MIGRATED, Stage.CREATED):
            late = list(drift.added)
            if made_by_hwf:
                info = ctx.alma.get_set(alma_set_id)
                ctx.alma.remove_members(info, late)
        with ctx.ledger() as book:
            _record_sync(book, set_id, drift, before_copy, made_by_hwf, late, report)
    return report


def _copy_sent(session: Session, set_id: int) -> bool:
    """Whether the copy job was sent to Alma for the set (or is known to have run)."""
    states = session.scalars(
        select(Attempt.state).where(Attempt.set_id == set_id, Attempt.step == Step.COPY_IDENTIFIERS.value)
    )
    return any(state in _SENT for state in states)


def _record_sync(
    book: Ledger,
    set_id: int,
    drift: Drift,
    before_copy: bool,
    made_by_hwf: bool,
    late: list[str],
    report: SyncReport,
) -> None:
    row = book.set(set_id)
    stamp = utc_stamp(book.now)
    if drift.removed:
        when = "before the copy job" if before_copy else f"at {row.stage.value}"
        reason = f"left Alma set {row.alma_set_id} ({when}; found by `hwf sync` at {stamp}): not verified"
        for rec in book.session.scalars(
            select(Record).where(Record.set_id == set_id, Record.mms_id.in_(drift.removed))
        ):
            rec.excluded, rec.removed_from_alma_set, rec.exclude_reason = True, True, reason
        report.left = list(drift.removed)
    if drift.added and before_copy:
        book.session.add_all(Record(set_id=set_id, mms_id=m, title=drift.titles.get(m)) for m in drift.added)
        row.record_count += len(drift.added)
        report.joined = list(drift.added)
        _check_again(book, row)
    elif late and made_by_hwf:
        report.late = late
    elif late:
        report.to_remove = late
    _sync_event(book, row, report)
    if report.to_remove:
        book.attention(
            row,
            Attention.DRIFT,
            f"drift: {plural(len(late), 'record')} joined Alma set {row.alma_set_id} after the copy job and cannot "
            f"go through the remaining steps in order ({_named(tuple(late))}); hwf did not make this set: remove "
            f"them from it in Alma (Manage Sets > the set > Members), then run `hwf sync {row.alma_set_id}` again",
        )
        report.message = (
            f"set {row.alma_set_id}: {plural(len(late), 'record')} to remove by hand from the Alma set: "
            f"{', '.join(late)}; then `hwf sync {row.alma_set_id}` again"
        )
        return
    if row.attention_kind == Attention.DRIFT:
        book.event(row, "attention_cleared", f"cleared by `hwf sync`: {book.clear_attention(row)}")
    report.message = _summary(row, report, drift)


def _check_again(book: Ledger, row: AlmaSet) -> None:
    """New records joined before the copy job: a copy step recorded as not needed is decided again."""
    for attempt in book.session.scalars(
        select(Attempt).where(
            Attempt.set_id == row.id,
            Attempt.step == Step.COPY_IDENTIFIERS.value,
            Attempt.state == AttemptState.NOT_NEEDED,
        )
    ):
        attempt.state = AttemptState.ABANDONED
        attempt.note = "new records joined the set: whether the copy job is needed is checked again"


def _sync_event(book: Ledger, row: AlmaSet, report: SyncReport) -> None:
    parts = []
    if report.joined:
        parts.append(f"{plural(len(report.joined), 'record')} joined (checked before the copy job)")
    if report.left:
        parts.append(f"{plural(len(report.left), 'record')} left the Alma set (marked in the report)")
    if report.late:
        parts.append(
            f"{plural(len(report.late), 'record')} joined after the copy job: taken out of the Alma set; "
            f"put them in a later set ({', '.join(report.late[:20])})"
        )
    if report.to_remove:
        parts.append(f"{plural(len(report.to_remove), 'record')} joined after the copy job: to remove by hand")
    book.event(
        row,
        "sync",
        "; ".join(parts) or "the Alma set's members are hwf's records: nothing to do",
        joined=report.joined,
        left=report.left,
        late=report.late,
        to_remove=report.to_remove,
    )


def _summary(row: AlmaSet, report: SyncReport, drift: Drift) -> str:
    if not drift:
        return f"set {row.alma_set_id}: the Alma set's members are hwf's records; nothing to do"
    done = []
    if report.joined:
        done.append(f"{plural(len(report.joined), 'record')} joined (they are checked before the copy job)")
    if report.left:
        done.append(f"{plural(len(report.left), 'record')} marked as gone from the Alma set")
    if report.late:
        done.append(
            f"{plural(len(report.late), 'record')} taken out of the Alma set (joined after the copy job; "
            f"put them in a later set: {', '.join(report.late)})"
        )
    return f"set {row.alma_set_id}: " + "; ".join(done) + f"; `hwf advance {row.alma_set_id}` goes on"


# ---------------------------------------------------------------------------------------------
# logical sets


def snapshot_of_logical(ctx: Context, logical: AlmaSetInfo) -> AlmaSetInfo:
    """The itemized snapshot of the logical set ``logical``: made now (or found again after a crash) and whole.

    :raises AlmaError: Alma refused, or the snapshot did not fill within ``[alma] snapshot_wait_seconds``.
    """
    name, state = _plan_snapshot(ctx, logical)
    expected = ctx.alma.count_set_members(logical.id)  # read just before: the logical set as it is now
    if state in ("creating", "planned"):
        info = create_named(
            ctx,
            name,
            description=f"snapshot made by hwf of logical set {logical.id} ({logical.name}); hwf runs its jobs on it",
            maybe_made=state == "creating",
            from_logical=logical.id,
        )
        _save(ctx, name, state="created", alma_set_id=info.id)
    else:
        with ctx.sessions() as session:
            known = session.scalars(select(SetCreation.alma_set_id).where(SetCreation.name == name)).one()
        assert known is not None
        info = ctx.alma.get_set(known)
    info = _wait_whole(ctx, info, expected)
    _save(ctx, name, state="populated")
    return info


def _plan_snapshot(ctx: Context, logical: AlmaSetInfo) -> tuple[str, str]:
    """The snapshot's name and how far an earlier run got ("planned": recorded now)."""
    with ctx.sessions() as session:
        earlier = session.scalar(
            select(SetCreation).where(SetCreation.source_set == logical.id, SetCreation.state != "registered")
        )
        if earlier is not None:
            return earlier.name, earlier.state
    day = ctx.clock().date().isoformat()
    base = f"{logical.name} (hwf snapshot {day})"
    name, n = base[:MAX_NAME], 1
    while exact_sets(ctx, name):
        n += 1
        suffix = f" #{n}"
        name = base[: MAX_NAME - len(suffix)] + suffix
    with ctx.sessions.begin() as session:
        session.add(
            SetCreation(
                name=name,
                batch=1,
                batches=1,
                mms_ids=[],
                source_set=logical.id,
                state="creating",
                created_at=ctx.clock(),
                updated_at=ctx.clock(),
            )
        )
    return name, "planned"


def _save(ctx: Context, name: str, *, state: str, alma_set_id: str | None = None) -> None:
    with ctx.sessions.begin() as session:
        row = session.scalars(select(SetCreation).where(SetCreation.name == name)).one()
        row.state = state
        row.updated_at = ctx.clock()
        if alma_set_id is not None:
            row.alma_set_id = alma_set_id


def registered_snapshot(session: Session, alma_set_id: str) -> None:
    """Mark the snapshot's creation row as done once the set is registered (a set made from a CSV is marked by
    ``hwf add --from-csv`` itself, after it recorded what Alma rejected)."""
    for row in session.scalars(
        select(SetCreation).where(SetCreation.alma_set_id == alma_set_id, SetCreation.source_set.is_not(None))
    ):
        row.state = "registered"


def _wait_whole(ctx: Context, info: AlmaSetInfo, expected: int) -> AlmaSetInfo:
    """Read the snapshot's member count until it equals ``expected`` on two reads in a row (Alma populates it
    after the create returns), at most ``[alma] snapshot_wait_seconds``."""
    limit = ctx.config.alma.snapshot_wait_seconds
    pause, agreed, waited = 1.0, 0, 0.0
    while True:
        count = ctx.alma.count_set_members(info.id)
        agreed = agreed + 1 if count == expected else 0
        if agreed >= 2:
            return info
        if waited >= limit:
            raise AlmaError(
                f"the snapshot {info.name!r} (Alma set {info.id}) holds {count} of the logical set's {expected} "
                f"members after {limit:g} s (alma.snapshot_wait_seconds); run `hwf add` with the logical set's id "
                "again later: it finds the snapshot and waits again"
            )
        ctx.sleep(pause)
        waited += pause
        pause = min(pause * 2, 15.0)


def members_of(ctx: Context, alma_set_id: str) -> list[SetMember]:
    """Every member of an Alma set, de-duplicated in Alma's order."""
    seen: set[str] = set()
    out = []
    for member in ctx.alma.iter_set_members(alma_set_id):
        if member.id not in seen:
            seen.add(member.id)
            out.append(member)
    return out


def refuse_logical_adoption(info: AlmaSetInfo) -> None:
    """``hwf add --adopt`` of a logical set would run hwf's remaining jobs on a saved search.

    :raises BadInputError: always, saying what to do instead."""
    raise BadInputError(
        f"Alma set {info.id} is LOGICAL (a saved search, evaluated again by every job): hwf never runs jobs on a "
        f"logical set, so it cannot adopt one. Finish its steps by hand, or `hwf add {info.id}` to start over on "
        "an itemized snapshot of it"
    )
