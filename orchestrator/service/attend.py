"""The records attention: which records stop a set's next job, one reason that names them, and one command to go
on, rewritten whenever what hwf knows of the records changes.

A set's next job is the copy job (records that would fail or be skipped by it stop the set: NO_HANDLE,
BAD_HANDLE, DUPLICATE_HANDLE, NOT_DC, BAD_XML, MISSING) or the Handle Migration job (any record not READY stops
the set: the job would skip it silently). The precheck right before the job, ``hwf check``, the early check of
the worker, ``hwf exclude``, ``hwf include`` and ``hwf fix`` all end in :func:`refresh`, so the reason a set
shows always lists the records that stop it now, and its command is the one that gets it going.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from orchestrator.domain.attention import GO_ON, Attention, next_command
from orchestrator.domain.dc import BLOCKING, Preflight
from orchestrator.domain.jobrules import run_ok
from orchestrator.domain.steps import Step, next_step
from orchestrator.domain.wording import plural, verb
from orchestrator.store.ledger import Ledger, latest_attempt
from orchestrator.store.models import AlmaSet, AttemptState, Record

UNCHECKED = "UNCHECKED"  # a record no check has read yet

_ADVICE = {
    "NEEDS_FIX": "dc:identifier carries xsi:type; `hwf fix` removes it",
    "NEEDS_COPY": "handle only in dcterms:identifier",
    "NO_HANDLE": "no handle in the metadata",
    "BAD_HANDLE": "malformed handle",
    "DUPLICATE_HANDLE": "handle shared with another record",
    "NOT_DC": "not a Dublin Core record (fails its whole bulk of 100)",
    "BAD_XML": "record XML unreadable or unsafe",
    "MISSING": "Alma returned no bib",
}

NAMED_MMS_IDS = 5  # the description of the problems names this many MMS IDs, then "+N more"


def included_classes(session: Session, set_id: int) -> Counter[str]:
    """The preflight classes of the set's included records (``UNCHECKED`` for a record never read)."""
    rows = session.scalars(select(Record.preflight).where(Record.set_id == set_id, Record.excluded.is_(False)))
    return Counter(r or UNCHECKED for r in rows)


def problem_ids(session: Session, set_id: int, keep: Iterable[str]) -> dict[str, list[str]]:
    """The included records' MMS IDs per problem class in ``keep``, in MMS ID order."""
    wanted = set(keep)
    found: dict[str, list[str]] = {}
    rows = session.execute(
        select(Record.preflight, Record.mms_id)
        .where(Record.set_id == set_id, Record.excluded.is_(False))
        .order_by(Record.mms_id)
    )
    for cls, mms in rows:
        if (cls or UNCHECKED) in wanted:
            found.setdefault(cls or UNCHECKED, []).append(mms)
    return found


def describe_problems(by_class: dict[str, list[str]], set_id: str) -> tuple[str, str]:
    """("1 NOT_DC (991011597314004641: not a Dublin Core record ...)", "991011597314004641"): each class
    with its first MMS IDs (at most :data:`NAMED_MMS_IDS` in all, then "+N more"), and the named IDs."""
    shown: dict[str, list[str]] = {cls: [] for cls in sorted(by_class)}
    named: list[str] = []
    depth = 0
    while len(named) < NAMED_MMS_IDS and any(len(ids) > depth for ids in by_class.values()):
        for cls in shown:  # one of each class first, so that every class is named
            if len(by_class[cls]) > depth and len(named) < NAMED_MMS_IDS:
                shown[cls].append(by_class[cls][depth])
                named.append(by_class[cls][depth])
        depth += 1
    parts = []
    for cls in shown:
        ids = by_class[cls]
        advice = _ADVICE.get(cls, "")
        inside = "; ".join(x for x in (", ".join(shown[cls]), advice) if x)
        parts.append(f"{len(ids)} {cls} ({inside})" if inside else f"{len(ids)} {cls}")
    hidden = sum(len(ids) for ids in by_class.values()) - len(named)
    text = "; ".join(parts) + (f"; +{hidden} more" if hidden else "")
    return text, " ".join(named)


def stopping_classes(step: Step | None, classes: Iterable[str]) -> set[str]:
    """The classes among ``classes`` that stop ``step``'s job (records never read stop nothing yet: the
    precheck reads them right before the job)."""
    present = set(classes) - {UNCHECKED}
    if step is Step.COPY_IDENTIFIERS:
        return present & {p.value for p in BLOCKING}
    if step is Step.MIGRATE:
        return present - {Preflight.READY.value}
    return set()


def go_on_command(set_id: str, by_class: dict[str, list[str]]) -> str:
    """The one command that gets a set whose records stop it going: ``hwf fix`` when some only need the fix
    (the fix rewrites the attention to what remains), else ``hwf exclude`` naming every record concerned."""
    if Preflight.NEEDS_FIX.value in by_class:
        return f"hwf fix {set_id} --apply"
    every = " ".join(sorted(m for ids in by_class.values() for m in ids))
    return f"hwf exclude {set_id} {every} --reason TEXT"


def records_reason(session: Session, row: AlmaSet, step: Step) -> str | None:
    """The records attention the set's ``step`` calls for, from the stored classes; None when no record
    stops it. The reason ends with the command to go on (``GO_ON`` marks it)."""
    classes = included_classes(session, row.id)
    stopping = stopping_classes(step, classes)
    if not stopping:
        return None
    total = sum(classes.values())
    bad = sum(classes[c] for c in stopping)
    by_class = problem_ids(session, row.id, stopping)
    text = describe_problems(by_class, row.alma_set_id)[0]
    command = go_on_command(row.alma_set_id, by_class)
    alternative = "" if command.startswith("hwf fix") else f" (or fix them in Alma, then `hwf check {row.alma_set_id}`)"
    if step is Step.COPY_IDENTIFIERS:
        head = f"{bad} of {plural(total, 'record')} cannot go through the workflow: {text}"
    else:
        head = (
            f"{bad} of {plural(total, 'record')} {verb(bad, 'is')} not ready for the Handle Migration job: {text}. "
            "The migration would skip them silently"
        )
    return f"{head}. {GO_ON}`{command}`{alternative}"


def step_open(session: Session, row: AlmaSet, step: Step) -> bool:
    """No run of ``step``'s job is going on or counts: its records still decide whether it may start."""
    attempt = latest_attempt(session, row.id, step)
    return (
        attempt is None
        or attempt.state is AttemptState.ABANDONED
        or (attempt.state is AttemptState.FINISHED and not run_ok(attempt.status, attempt.counters))
    )


def refresh(book: Ledger, row: AlmaSet, *, fresh: bool, why: str) -> str:
    """Bring the set's records attention up to date with the stored classes (``why``: what changed them, for the
    audit trail): rewrite it to the records that stop the next job now, or clear it when none does; with
    ``fresh`` (the records were just read), also raise it on a set that had none. Returns a note for the
    person who acted ("" when nothing changed)."""
    book.session.flush()
    step = next_step(row.stage)
    has = row.attention is not None and row.attention_kind == Attention.RECORDS.value
    if row.attention is not None and not has:
        return ""  # another attention: the person deals with that one first
    if step is None or not step_open(book.session, row, step):
        return ""
    reason = records_reason(book.session, row, step)
    if reason is None:
        if has:
            book.event(row, "attention_cleared", f"cleared by {why}: {book.clear_attention(row)}")
            return f"attention cleared, run `hwf advance {row.alma_set_id}` again"
        return ""
    if reason != row.attention:
        book.attention(row, Attention.RECORDS, reason)
    command = next_command(Attention.RECORDS.value, row.alma_set_id, reason)
    return f"the set {'still ' if has else ''}needs attention; {GO_ON.lower()}`{command}`"


def needs_early_check(session: Session, row: AlmaSet) -> bool:
    """Whether the worker should read the set's records now, before its turn: its next job is the copy or the
    migration job, no run of it started, no attention, and some included record was not read since the last
    job that could change it ended (never read, or read before the copy job's end)."""
    step = next_step(row.stage)
    if row.attention is not None or step not in (Step.COPY_IDENTIFIERS, Step.MIGRATE):
        return False
    if not step_open(session, row, step):
        return False
    oldest = session.execute(
        select(func.count(), func.count(Record.checked_at), func.min(Record.checked_at)).where(
            Record.set_id == row.id, Record.excluded.is_(False)
        )
    ).one()
    members, checked, first = oldest
    if members == 0:
        return False
    if checked < members:
        return True
    return step is Step.MIGRATE and first is not None and first < _copy_ended(session, row, first)


def _copy_ended(session: Session, row: AlmaSet, otherwise: datetime) -> datetime:
    """When the set's copy job ended (when its step was recorded as not needed), as far as hwf knows."""
    copy = latest_attempt(session, row.id, Step.COPY_IDENTIFIERS)
    if copy is None or copy.state is AttemptState.NOT_NEEDED:
        return otherwise  # skipped right after the precheck read every record
    return copy.ended_at or copy.alma_ended_at or copy.begun_at or otherwise
