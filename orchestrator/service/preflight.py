"""Preflight of every Dublin Core record (``hwf check``), and leaving records out or taking them back in
(``hwf exclude``, ``hwf include``).

Reads bibs 100 at a time, classifies each with ``dc.classify_bib``, stores results per batch (a failure
half-way keeps what was checked), and marks handles shared within the set or with another registered set.
The repair of the records the check finds (``hwf fix``) is ``service.repair``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from orchestrator.domain import dc
from orchestrator.domain.attention import RECORD_KINDS, Attention, kind_of, next_command
from orchestrator.domain.dc import BLOCKING, Preflight, RecordCheck
from orchestrator.domain.steps import Stage, Step, next_step
from orchestrator.domain.wording import plural
from orchestrator.errors import AlmaBadReplyError, AlmaError, BadInputError, DailyQuotaError, UnsafeXmlError
from orchestrator.service import attend
from orchestrator.service.attend import included_classes
from orchestrator.service.context import Context, find_set
from orchestrator.store.models import AlmaSet, Record

BATCH = 100


@dataclass(frozen=True)
class CheckSummary:
    set: str
    name: str
    counts: dict[str, int]
    problems: list[dict[str, str | None]]
    excluded: int
    total: int
    step: str | None = None  # the set's next step: what the records are checked for
    attention: str | None = None  # the set's attention after the check, if any
    command: str | None = None  # its command to go on

    def blocking(self) -> dict[str, int]:
        """The classes of included records that stop the set's next job (the copy job: NO_HANDLE, BAD_HANDLE,
        DUPLICATE_HANDLE, NOT_DC, BAD_XML, MISSING; the migration job: all but READY), the same the set's
        attention counts: ``hwf check`` exits 3 when there is any. After the migration, nothing stops the set."""
        if self.step is None:  # a verified set: every class but READY and NEEDS_COPY, as before any job
            stopping = set(self.counts) - _CAN_GO_ON
        else:
            stopping = attend.stopping_classes(Step(self.step), self.counts)
        return {c: n for c, n in sorted(self.counts.items()) if n and c in stopping}

    def later(self) -> dict[str, int]:
        """Classes that do not stop the next job but will stop a later one (NEEDS_FIX before the copy job)."""
        if self.step != Step.COPY_IDENTIFIERS.value:
            return {}
        later = attend.stopping_classes(Step.MIGRATE, self.counts) - set(self.blocking()) - {"NEEDS_COPY"}
        return {c: n for c, n in sorted(self.counts.items()) if n and c in later}

    def as_json(self) -> dict[str, object]:
        return {
            "set": self.set,
            "name": self.name,
            "step": self.step,
            "total": self.total,
            "excluded": self.excluded,
            "counts": self.counts,
            "can_go_on": not self.blocking(),
            "blocking": self.blocking(),
            "later": self.later(),
            "attention": self.attention,
            "command": self.command,
            "problems": self.problems,
        }


_CAN_GO_ON = frozenset({Preflight.READY.value, Preflight.NEEDS_COPY.value})


def _chunks(items: Sequence[str], size: int) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _store(session: Session, set_id: int, checks: Iterable[RecordCheck], now: datetime) -> None:
    by_mms = {c.mms_id: c for c in checks}
    for rec in session.scalars(select(Record).where(Record.set_id == set_id, Record.mms_id.in_(list(by_mms)))):
        c = by_mms[rec.mms_id]
        rec.preflight = c.preflight.value
        rec.preflight_detail = c.detail
        rec.handle = c.handle
        rec.handle_raw = c.handle_raw
        rec.record_format = c.record_format
        rec.checked_at = now
        if c.title and not rec.title:
            rec.title = c.title


def check_records(ctx: Context, set_id: int, *, attend_to: bool = True) -> CheckSummary:
    """Read and classify every member of the set; mark duplicate handles (within the set and against
    every other registered set). Stores results, brings the set's records attention up to date
    (:func:`attend.refresh`; not with ``attend_to=False``: the caller is about to change the set's stage); returns
    the counts and the problem records."""
    with ctx.sessions.begin() as session:
        row = session.get_one(AlmaSet, set_id)
        mms_ids = list(session.scalars(select(Record.mms_id).where(Record.set_id == set_id).order_by(Record.id)))
        excluded = set(session.scalars(select(Record.mms_id).where(Record.set_id == set_id, Record.excluded)))
        known = {
            h: m
            for h, m in session.execute(
                select(Record.handle, Record.mms_id).where(
                    Record.set_id != set_id, Record.handle.is_not(None), Record.excluded.is_(False)
                )
            )
            if h
        }
        prefix = ctx.config.handles.prefix

    def read(chunk: Sequence[str]) -> list[RecordCheck]:
        # An unreadable record makes a whole XML reply unreadable. Halving the batch until the bad
        # records stand alone costs about 2 * log2(100) calls per bad record, not one call per member.
        try:
            batch = ctx.alma.get_bibs(list(chunk))
        except (AlmaBadReplyError, UnsafeXmlError) as exc:
            if len(chunk) == 1:
                return [RecordCheck(chunk[0], None, None, Preflight.BAD_XML, None, None, str(exc))]
            half = len(chunk) // 2
            return read(chunk[:half]) + read(chunk[half:])
        return [dc.classify_bib(b, prefix) for b in batch.bibs] + [dc.missing_check(m) for m in batch.missing]

    checks: list[RecordCheck] = []
    for chunk in _chunks(mms_ids, BATCH):
        results = read(chunk)
        with ctx.sessions.begin() as session:
            _store(session, set_id, results, ctx.clock())
        checks.extend(results)
    included = [c for c in checks if c.mms_id not in excluded]
    dups = dc.find_duplicates([c for c in included if c.handle], known)
    with ctx.ledger() as book:
        session, row = book.session, book.set(set_id)
        if dups:
            session.execute(
                update(Record)
                .where(Record.set_id == set_id, Record.mms_id.in_(list(dups)))
                .values(preflight=Preflight.DUPLICATE_HANDLE.value)
                .execution_options(synchronize_session=False)
            )
            for mms, why in dups.items():
                session.execute(
                    update(Record)
                    .where(Record.set_id == set_id, Record.mms_id == mms)
                    .values(preflight_detail=why)
                    .execution_options(synchronize_session=False)
                )
        counts = included_classes(session, set_id)
        book.event(
            row,
            "check",
            "preflight: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())),
            counts=dict(counts),
        )
        # The set's records attention follows what was just read: raised, rewritten or cleared.
        if attend_to:
            attend.refresh(book, row, fresh=True, why="a check of the records")
        return _summary(session, row)


def _check_one(ctx: Context, mms: str, prefix: str) -> RecordCheck:
    """A batch reply was unreadable: read its records one by one, so one bad record sinks only itself."""
    try:
        return dc.classify_bib(ctx.alma.get_bib_xml(mms), prefix)
    except (AlmaBadReplyError, UnsafeXmlError) as exc:
        return RecordCheck(mms, None, None, Preflight.BAD_XML, None, None, str(exc))


def _summary(session: Session, row: AlmaSet) -> CheckSummary:
    records = session.execute(
        select(
            Record.mms_id,
            Record.preflight,
            Record.preflight_detail,
            Record.title,
            Record.excluded,
            Record.handle,
        )
        .where(Record.set_id == row.id)
        .order_by(Record.id)
    ).all()
    counts = Counter(r.preflight or "UNCHECKED" for r in records if not r.excluded)
    step = next_step(row.stage)
    # Records that need something: NEEDS_COPY needs only the copy job, until that job has run.
    fine = {Preflight.READY.value} | ({Preflight.NEEDS_COPY.value} if row.stage is Stage.CREATED else set())
    problems = [
        {
            "mms_id": r.mms_id,
            "class": r.preflight,
            "detail": r.preflight_detail,
            "title": r.title,
            "handle": r.handle,
        }
        for r in records
        if not r.excluded and r.preflight not in fine
    ]
    return CheckSummary(
        set=row.alma_set_id,
        name=row.name,
        counts=dict(counts),
        problems=problems,
        excluded=sum(1 for r in records if r.excluded),
        total=len(records),
        step=step.value if step else None,
        attention=row.attention,
        command=next_command(row.attention_kind, row.alma_set_id, row.attention) if row.attention else None,
    )


def check_set(ctx: Context, ref: str) -> CheckSummary:
    """``hwf check``: classify every record of a set now."""
    with ctx.sessions.begin() as session:
        set_id = find_set(session, ref).id
    return check_records(ctx, set_id)


def check_all(ctx: Context) -> list[CheckSummary]:
    """``hwf check --all``: classify the records of every set whose records can still stop it (not yet migrated),
    oldest first."""
    with ctx.sessions() as session:
        ids = list(
            session.scalars(
                select(AlmaSet.id)
                .where(AlmaSet.stage.in_([Stage.CREATED, Stage.IDENTIFIERS_COPIED]))
                .order_by(AlmaSet.created_at, AlmaSet.id)
            )
        )
    return [check_records(ctx, set_id) for set_id in ids]


def check_new(ctx: Context, alma_set_id: str) -> CheckSummary | None:
    """The first check of a set ``hwf add`` just registered, so its problems show on the day it is added (the
    check raises the set's records attention). A check Alma cannot answer now is left to the worker (it reads
    every set never checked): None then, and a note says so."""
    try:
        return check_set(ctx, alma_set_id)
    except AlmaError as exc:
        if isinstance(exc, DailyQuotaError) or exc.status in (401, 403):
            raise  # no other call of this key would go through either
        ctx.reporter.note(
            alma_set_id, f"records not checked now ({exc}); `hwf check {alma_set_id}` or the worker reads them"
        )
        return None


def records_ready(session: Session, row: AlmaSet, step: Step) -> bool:
    """The record guard of a step, from the stored check results of the included records."""
    classes = included_classes(session, row.id)
    if step is Step.COPY_IDENTIFIERS:
        return not any(c in classes for c in [*(p.value for p in BLOCKING), "UNCHECKED"])
    if step is Step.MIGRATE:
        return set(classes) <= {Preflight.READY.value}
    return True


# ---------------------------------------------------------------------------------------------
# exclude / include


def _follow_in_alma(
    ctx: Context,
    alma_id: str,
    mms_ids: Sequence[str],
    records: dict[str, tuple[bool, bool]],
    excluded: bool,
    keep_in_alma_set: bool,
) -> list[str]:
    """Remove excluded records from the Alma set (or add included ones back); the ids changed in Alma."""
    changed_in_alma: list[str] = []
    if excluded and not keep_in_alma_set:
        info = ctx.alma.get_set(alma_id)
        if (info.type or "ITEMIZED").upper() != "ITEMIZED":
            raise BadInputError(
                f"Alma set {alma_id} is {info.type}: hwf cannot remove members from it; "
                "remove the records from its query in Alma, or pass --keep-in-alma-set"
            )
        present = {m.id for m in ctx.alma.iter_set_members(alma_id)}
        changed_in_alma = [m for m in mms_ids if m in present]
        if changed_in_alma:
            ctx.alma.remove_members(info, changed_in_alma)
    elif not excluded:
        back = [m for m in mms_ids if records[m][1]]
        if back:
            info = ctx.alma.get_set(alma_id)
            present = {m.id for m in ctx.alma.iter_set_members(alma_id)}
            changed_in_alma = [m for m in back if m not in present]
            if changed_in_alma:
                ctx.alma.add_members(info, changed_in_alma)
    return changed_in_alma


def _set_excluded(
    ctx: Context, ref: str, mms_ids: Sequence[str], reason: str, excluded: bool, keep_in_alma_set: bool
) -> str:
    if not mms_ids:
        raise BadInputError("name at least one MMS ID")
    if not reason.strip():
        raise BadInputError("--reason must say why (it goes into the audit trail)")
    with ctx.sessions.begin() as session:
        row = find_set(session, ref)
        if row.stage is not Stage.CREATED and row.stage is not Stage.IDENTIFIERS_COPIED and excluded:
            raise BadInputError(
                f"set {row.alma_set_id} is at {row.stage.value}: its jobs have run on every member; "
                "exclude records before the migration job"
            )
        if row.stage is Stage.VERIFIED:
            raise BadInputError(f"set {row.alma_set_id} is already verified; its records can no longer change")
        set_id, alma_id = row.id, row.alma_set_id
        records = {
            r.mms_id: (r.excluded, r.removed_from_alma_set)
            for r in session.scalars(select(Record).where(Record.set_id == set_id, Record.mms_id.in_(list(mms_ids))))
        }
    unknown = [m for m in mms_ids if m not in records]
    if unknown:
        raise BadInputError(f"not members of set {alma_id}: {', '.join(unknown[:10])}")
    never = "" if excluded else _not_excluded(records)
    if never:
        records = {m: state for m, state in records.items() if state[0]}
        mms_ids = [m for m in mms_ids if m in records]
        if not records:
            return f"nothing included in set {alma_id}: {never}"
    # The jobs run on the Alma set, not on hwf's list: an excluded record left in the set still goes
    # through them (a MARC record fails its whole bulk of 100). So the Alma set follows, first.
    changed_in_alma = _follow_in_alma(ctx, alma_id, mms_ids, records, excluded, keep_in_alma_set)
    with ctx.ledger() as book:
        session, row = book.session, book.set(set_id)
        for rec in session.scalars(select(Record).where(Record.set_id == set_id, Record.mms_id.in_(list(mms_ids)))):
            rec.excluded = excluded
            rec.exclude_reason = reason if excluded else None
            if excluded and not keep_in_alma_set:
                rec.removed_from_alma_set = True
            if not excluded:
                rec.removed_from_alma_set = False
        done = "excluded" if excluded else "included again"
        alma_note = ""
        if changed_in_alma:
            alma_note = (
                f"; {'removed from' if excluded else 'added back to'} Alma set {alma_id}: {len(changed_in_alma)}"
            )
        book.event(
            row,
            "exclude" if excluded else "include",
            f"{plural(len(records), 'record')} {done}: {', '.join(sorted(records)[:20])}; reason: {reason}{alma_note}",
            mms_ids=sorted(records),
            reason=reason,
            alma_set_changed=changed_in_alma,
        )
        cleared = ""
        if row.attention_kind == Attention.RECORDS.value:
            # Rewritten to the records that still stop the set (or cleared): never the list just left out.
            note = attend.refresh(book, row, fresh=False, why=f"`hwf {'exclude' if excluded else 'include'}`")
            cleared = f"; {note}" if note else ""
        elif row.attention and kind_of(row.attention_kind) in RECORD_KINDS and _resolves(session, row, excluded):
            book.event(row, "attention_cleared", f"cleared by {done}: {book.clear_attention(row)}")
            cleared = f"; attention cleared, run `hwf advance {alma_id}` again"
        elif row.attention:
            cleared = f"; the set still needs attention (`hwf status {alma_id}`)"
        never_note = f"; {never}" if never else ""
        return f"{plural(len(records), 'record')} {done} in set {alma_id}{alma_note}{cleared}{never_note}"


def _resolves(session: Session, row: AlmaSet, excluded: bool) -> bool:
    """Whether leaving records out has resolved the set's records attention: the included records now
    meet the record guard of the set's next step. Taking records back in never resolves one."""
    session.flush()
    step = next_step(row.stage)
    return excluded and step is not None and records_ready(session, row, step)


def _not_excluded(records: dict[str, tuple[bool, bool]]) -> str:
    """ "not excluded (left as they are): 991..., 991..." for the records an include names that were
    never excluded, or ""."""
    never = sorted(m for m, (was_excluded, _) in records.items() if not was_excluded)
    if not never:
        return ""
    more = f" and {len(never) - 10} more" if len(never) > 10 else ""
    return f"{len(never)} not excluded (left as they are): {', '.join(never[:10])}{more}"


def exclude(ctx: Context, ref: str, mms_ids: Sequence[str], reason: str, *, keep_in_alma_set: bool = False) -> str:
    """Leave records out of every later guard and verification, and (by default) out of the Alma set
    the jobs run on (audited)."""
    return _set_excluded(ctx, ref, mms_ids, reason, True, keep_in_alma_set)


def include(ctx: Context, ref: str, mms_ids: Sequence[str], reason: str) -> str:
    """Undo ``exclude``, putting the records back into the Alma set if hwf removed them (audited)."""
    return _set_excluded(ctx, ref, mms_ids, reason, False, False)
