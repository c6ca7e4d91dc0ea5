"""``hwf add --from-csv``: itemized Alma sets from a list of MMS IDs, created crash-safely, then registered.

The CSV is streamed (one column, or Alma's export with an "MMS Id" column; BOM, blank lines and
duplicates handled). Every planned set is recorded in ``set_creations`` *before* it is created in
Alma, under a deterministic name ``NAME (batch k/K)``; a re-run finds the sets a crashed run created
by that name and never creates twins. Members go in ≤ 1000 per call and are never re-sent blindly:
after an unknown outcome the set's members are listed and only the missing ones are added.
"""

from __future__ import annotations

import csv
import re
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path

from sqlalchemy import select

from orchestrator.alma.types import AlmaSetInfo
from orchestrator.domain.wording import plural, verb
from orchestrator.errors import AlmaError, AlmaUnreachableError, BadInputError
from orchestrator.service import views, workflow
from orchestrator.service.context import Context
from orchestrator.store.models import AlmaSet, Record, SetCreation

MAX_MEMBERS_PER_CALL = 1000
MAX_REPORTED = 20
MAX_NAME = 255
_MMS_ID = re.compile(r"^[0-9]{1,40}$")
_HEADER_WORD = re.compile(r"[\s_\-.]+")
_REJECTED_CODES = frozenset({"60116", "60120"})  # member not valid for the content (and identifier type)
_ALREADY_IN_SET = "60115"


@dataclass
class IdList:
    """The MMS IDs of a CSV in file order, each with the line it came from; what was dropped and why."""

    ids: list[str] = field(default_factory=list)
    lines: array[int] = field(default_factory=lambda: array("l"))
    duplicates: list[tuple[int, str, int]] = field(default_factory=list)  # (line, id, line of first use)
    bad: list[tuple[int, str]] = field(default_factory=list)  # (line, value as found)
    column: str | None = None  # the header of the column read, if there was a header


def _delimiter(first_line: str) -> str:
    """Comma unless the first line plainly uses tabs or semicolons (spreadsheet exports in some locales)."""
    if "," in first_line:
        return ","
    if "\t" in first_line:
        return "\t"
    if ";" in first_line:
        return ";"
    return ","


def _is_id_header(cell: str) -> bool:
    return _HEADER_WORD.sub("", cell).lower() in ("mmsid", "mmsids")


def _looks_like_header(cells: Sequence[str]) -> bool:
    """A first row with an "MMS Id" cell, or with no digit anywhere (a header in some other words)."""
    return any(_is_id_header(c) for c in cells) or not any(ch.isdigit() for c in cells for ch in c)


def _problem(value: str) -> str:
    if re.fullmatch(r"\d(\.\d+)?[eE]\+\d+", value):
        return f"{value!r} (a spreadsheet turned the id into a number: export the column as text)"
    return repr(value) if value else "(empty)"


def read_ids(path: Path) -> IdList:
    """Stream the MMS IDs out of a CSV file; duplicates are dropped (and listed), bad values listed.

    :raises BadInputError: the file cannot be read, is not UTF-8, or has a header without an MMS Id column.
    """
    found = IdList()
    first: dict[str, int] = {}
    reader = None
    try:
        with path.open("r", encoding="utf-8-sig", newline="") as handle:
            head = handle.readline()
            reader = csv.reader(chain([head], handle), delimiter=_delimiter(head))
            column: int | None = None
            for cells in reader:
                if not any(c.strip() for c in cells):
                    continue
                line = reader.line_num
                if column is None:
                    if _looks_like_header(cells):
                        named = [i for i, c in enumerate(cells) if _is_id_header(c)]
                        if named:
                            column = named[0]
                        elif len(cells) == 1:
                            column = 0
                        else:
                            shown = ", ".join(repr(c.strip()) for c in cells[:8])
                            raise BadInputError(
                                f"{path}: line {line}: the header has no 'MMS Id' column (it has {shown}); "
                                "give one column of MMS IDs, or Alma's export with its 'MMS Id' column"
                            )
                        found.column = cells[column].strip()
                        continue
                    column = 0
                value = cells[column].strip() if column < len(cells) else ""
                if not _MMS_ID.match(value):
                    found.bad.append((line, value))
                    continue
                if value in first:
                    found.duplicates.append((line, value, first[value]))
                    continue
                first[value] = line
                found.ids.append(value)
                found.lines.append(line)
    except OSError as exc:
        raise BadInputError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise BadInputError(f"{path} is not UTF-8 text (save the CSV as UTF-8)") from None
    except csv.Error as exc:
        where = f" line {reader.line_num}:" if reader is not None else ""
        if "field larger than field limit" in str(exc):
            raise BadInputError(
                f"{path}:{where} a cell is longer than {csv.field_size_limit():,} characters: "
                "not a CSV of MMS IDs (is a quote left open?)"
            ) from None
        raise BadInputError(f"{path}:{where} not a readable CSV: {exc}") from None
    return found


def _bad_input_message(path: Path, ids: IdList) -> str:
    shown = "; ".join(f"line {line}: {_problem(value)}" for line, value in ids.bad[:MAX_REPORTED])
    more = f"; and {len(ids.bad) - MAX_REPORTED} more" if len(ids.bad) > MAX_REPORTED else ""
    return (
        f"{path}: {plural(len(ids.bad), 'value')} {verb(len(ids.bad), 'is')} not "
        f"{'an MMS ID' if len(ids.bad) == 1 else 'MMS IDs'} (digits only): {shown}{more}. "
        "Nothing was created; correct the file and run again"
    )


def batch_names(name: str, count: int) -> list[str]:
    """The deterministic Alma set names of ``count`` batches."""
    return [f"{name} (batch {k}/{count})" for k in range(1, count + 1)]


@dataclass(frozen=True)
class _Batch:
    number: int
    name: str
    start: int  # index into IdList.ids
    ids: list[str]


def _plan(name: str, ids: list[str], batch_size: int) -> list[_Batch]:
    count = (len(ids) + batch_size - 1) // batch_size
    names = batch_names(name, count)
    return [_Batch(k + 1, names[k], k * batch_size, ids[k * batch_size : (k + 1) * batch_size]) for k in range(count)]


def _exact(ctx: Context, name: str) -> list[AlmaSetInfo]:
    """Alma sets whose name is exactly ``name`` (Alma's ``q=name~`` search matches words, not names)."""
    return [s for s in ctx.alma.find_sets(name) if s.name == name]


DEFAULT_BATCH_SIZE = 100  # Grinnell's CABB guidance: Alma handle jobs in bulks of 100 records


def add_from_csv(
    ctx: Context, path: Path, name: str, *, batch_size: int = DEFAULT_BATCH_SIZE
) -> list[views.SetSummary]:
    """Create itemized Alma sets ``NAME (batch k/K)`` of at most ``batch_size`` MMS IDs from a CSV and
    register each; a re-run after a crash resumes without creating twins.

    :raises BadInputError: bad CSV, bad name or size, or a set name Alma already has that hwf did not create.
    :raises AlmaError: Alma refused or failed (a re-run resumes where this one stopped).
    """
    name = name.strip()
    if not name:
        raise BadInputError("--name must not be empty")
    if _MMS_ID.match(name):
        raise BadInputError(f"--name {name!r} must not be all digits (it would look like a set id)")
    if batch_size < 1:
        raise BadInputError(f"--batch-size must be at least 1, not {batch_size}")
    ids = read_ids(path)
    if ids.bad:
        raise BadInputError(_bad_input_message(path, ids))
    if not ids.ids:
        raise BadInputError(f"{path} has no MMS IDs (an empty file, or only a header and blank lines)")
    batches = _plan(name, ids.ids, batch_size)
    longest = batches[-1].name
    if len(longest) > MAX_NAME:
        raise BadInputError(f"--name is too long: set names such as {longest!r} must fit in {MAX_NAME} characters")
    if ids.duplicates:
        shown = ", ".join(f"line {line} repeats line {was} ({mms})" for line, mms, was in ids.duplicates[:5])
        more = f" and {len(ids.duplicates) - 5} more" if len(ids.duplicates) > 5 else ""
        ctx.reporter.note(name, f"dropped {len(ids.duplicates)} duplicate MMS IDs: {shown}{more}")
    rows = _record_plan(ctx, name, batches)
    summaries = []
    for batch in batches:
        alma_set_id = _create(ctx, batch, rows[batch.name])
        info = _populate(ctx, batch, alma_set_id, rows[batch.name])
        summary = _register(ctx, path, batch, len(batches), info, ids)
        if summary is not None:
            summaries.append(summary)
    if not summaries:
        raise BadInputError(
            f"Alma rejected every one of the {len(ids.ids)} MMS IDs in {path} (are they titles of this "
            "institution, in this environment?); no set was registered and the empty Alma sets were deleted"
        )
    return summaries


def _record_plan(ctx: Context, name: str, batches: list[_Batch]) -> dict[str, str]:
    """Check the plan against earlier runs and Alma, then record every planned set (one transaction).

    Returns set name -> the state of its ``set_creations`` row ("planned" for rows this run recorded).
    """
    names = [b.name for b in batches]
    with ctx.sessions.begin() as session:
        earlier = {
            r.name: r
            for r in session.scalars(
                select(SetCreation).where(SetCreation.name.startswith(f"{name} (batch ", autoescape=True))
            )
        }
        other_plan = sorted(set(earlier) - set(names))
        if other_plan:
            was = earlier[other_plan[0]]
            raise BadInputError(
                f"an earlier `hwf add --from-csv --name {name!r}` planned {was.batches} batches "
                f"(e.g. {other_plan[0]!r}), not {len(batches)}: run it again with the same file and "
                "--batch-size to finish it, or choose another --name"
            )
        for batch in batches:
            row = earlier.get(batch.name)
            if row is not None and list(row.mms_ids) != batch.ids:
                raise BadInputError(
                    f"an earlier run planned {batch.name!r} with other MMS IDs: run it again with the same "
                    "file and --batch-size, or choose another --name"
                )
        registered: dict[str, str] = {}
        for n, alma_id in session.execute(select(AlmaSet.name, AlmaSet.alma_set_id).where(AlmaSet.name.in_(names))):
            registered[n] = alma_id
        for n, alma_id in registered.items():
            row = earlier.get(n)
            if row is None or row.alma_set_id != alma_id:
                raise BadInputError(f"hwf already has a set named {n!r} (Alma set {alma_id}); choose another --name")
        new = [b for b in batches if b.name not in earlier]
    taken = [(b.name, s.id) for b in new for s in _exact(ctx, b.name)]
    if taken:
        shown = ", ".join(f"{n!r} (set {set_id})" for n, set_id in taken[:MAX_REPORTED])
        raise BadInputError(
            f"Alma already has a set named {shown}, which hwf did not create: choose another --name. "
            "Nothing was created"
        )
    now = ctx.clock()
    with ctx.sessions.begin() as session:
        for batch in new:
            session.add(
                SetCreation(
                    name=batch.name,
                    batch=batch.number,
                    batches=len(batches),
                    mms_ids=batch.ids,
                    state="creating",
                    created_at=now,
                    updated_at=now,
                )
            )
        states = {r.name: r.state for r in session.scalars(select(SetCreation).where(SetCreation.name.in_(names)))}
    # "planned": recorded by this run, just after Alma was seen to have no set of that name.
    return {**states, **{b.name: "planned" for b in new}}


def _save(ctx: Context, set_name: str, *, state: str, alma_set_id: str | None = None) -> None:
    with ctx.sessions.begin() as session:
        row = session.scalars(select(SetCreation).where(SetCreation.name == set_name)).one()
        row.state = state
        row.updated_at = ctx.clock()
        if alma_set_id is not None:
            row.alma_set_id = alma_set_id


def _create(ctx: Context, batch: _Batch, state: str) -> str:
    """The Alma set id of a planned batch: found (a run before us created it) or created now."""
    if state not in ("creating", "planned"):
        with ctx.sessions() as session:
            known = session.scalars(select(SetCreation.alma_set_id).where(SetCreation.name == batch.name)).one()
        assert known is not None
        return known
    # The row was recorded only after Alma was seen to have no set of this name, so one found now is ours
    # (a crashed run created it).
    found = _exact(ctx, batch.name) if state == "creating" else []
    if not found:
        try:
            created = ctx.alma.create_set(batch.name, description=f"created by hwf: batch {batch.number}")
        except AlmaUnreachableError:
            found = _exact(ctx, batch.name)
            if not found:
                raise
        except AlmaError as exc:
            if exc.code != "402263":
                raise
            found = _exact(ctx, batch.name)
            if not found:
                raise
        else:
            found = [created]
    if len(found) > 1:
        raise AlmaError(f"Alma has {len(found)} sets named {batch.name!r}; delete the extra ones and run again")
    _save(ctx, batch.name, state="created", alma_set_id=found[0].id)
    ctx.reporter.note(batch.name, f"Alma set {found[0].id}")
    return found[0].id


def _populate(ctx: Context, batch: _Batch, alma_set_id: str, state: str) -> AlmaSetInfo:
    """Add the batch's ids that are not in the Alma set yet, ≤ 1000 a call; ids Alma rejects are skipped."""
    info = ctx.alma.get_set(alma_set_id)
    if state in ("populated", "registered"):
        return info
    # "empty" too is re-populated: whatever Alma refused before may be valid now.
    if info.member_count:
        present = {m.id for m in ctx.alma.iter_set_members(alma_set_id)}
        missing = [m for m in batch.ids if m not in present]
    else:
        missing = list(batch.ids)
    for start in range(0, len(missing), MAX_MEMBERS_PER_CALL):
        chunk = missing[start : start + MAX_MEMBERS_PER_CALL]
        try:
            _add(ctx, info, chunk)
        except AlmaUnreachableError:
            # Never re-send blindly: Alma may have added some or all of the chunk.
            present = {m.id for m in ctx.alma.iter_set_members(alma_set_id)}
            rest = [m for m in chunk if m not in present]
            if rest:
                _add(ctx, info, rest)
    _save(ctx, batch.name, state="populated")
    return info


def _add(ctx: Context, info: AlmaSetInfo, ids: list[str]) -> None:
    """``add_members`` ignoring invalid ids; if Alma refuses the call for an invalid id anyway, halve the
    chunk until the refused ids stand alone (and stay out)."""
    try:
        ctx.alma.add_members(info, ids, fail_on_invalid_id=False)
    except AlmaUnreachableError:
        raise
    except AlmaError as exc:
        if exc.code == _ALREADY_IN_SET:
            present = {m.id for m in ctx.alma.iter_set_members(info.id)}
            rest = [m for m in ids if m not in present]
            if len(rest) == len(ids):
                raise
            if rest:
                _add(ctx, info, rest)
            return
        if exc.code not in _REJECTED_CODES:
            raise
        if len(ids) > 1:
            half = len(ids) // 2
            _add(ctx, info, ids[:half])
            _add(ctx, info, ids[half:])


def _register(
    ctx: Context, path: Path, batch: _Batch, count: int, info: AlmaSetInfo, ids: IdList
) -> views.SetSummary | None:
    """Register the populated set in hwf (as ``hwf add`` does), then record what the CSV run dropped.

    None when Alma accepted none of the batch's ids (nothing to register; said through the reporter).
    """
    first, last = ids.lines[batch.start], ids.lines[batch.start + len(batch.ids) - 1]
    with ctx.sessions() as session:
        done = session.scalar(select(AlmaSet.id).where(AlmaSet.alma_set_id == info.id))
    if done is None:
        if ctx.alma.count_set_members(info.id) == 0:
            _drop_empty(ctx, batch, info.id)
            ctx.reporter.note(
                batch.name,
                f"not registered: Alma rejected all {len(batch.ids)} MMS IDs (lines {first}-{last} of {path}); "
                f"are they titles of this institution? The empty Alma set {info.id} was deleted",
            )
            return None
        workflow.add_set(ctx, info.id, batch.name)
    with ctx.ledger() as book:
        session, now = book.session, book.now
        row = session.scalars(select(AlmaSet).where(AlmaSet.alma_set_id == info.id)).one()
        creation = session.scalars(select(SetCreation).where(SetCreation.name == batch.name)).one()
        if creation.state != "registered":
            members = set(session.scalars(select(Record.mms_id).where(Record.set_id == row.id)))
            rejected = [(ids.lines[batch.start + i], m) for i, m in enumerate(batch.ids) if m not in members]
            mine = set(batch.ids)
            dups = [(line, m, was) for line, m, was in ids.duplicates if m in mine]
            detail = (
                f"created by `hwf add --from-csv {path.name}` as batch {batch.number} of {count}: "
                f"{len(batch.ids)} MMS IDs from lines {first}-{last}"
            )
            if rejected:
                detail += f"; Alma rejected {_lines(rejected)}"
                ctx.reporter.note(batch.name, f"Alma rejected {_lines(rejected)}; the other ids went in")
            if dups:
                detail += f"; {len(dups)} duplicates dropped"
            book.event(
                row,
                "batch",
                detail,
                csv=str(path),
                batch=batch.number,
                batches=count,
                planned=len(batch.ids),
                rejected=[{"line": line, "mms_id": m} for line, m in rejected[:1000]],
                duplicates=[{"line": line, "mms_id": m, "first_line": was} for line, m, was in dups[:1000]],
            )
            creation.state = "registered"
            creation.updated_at = now
        alma_set_id = row.alma_set_id
    return views.status(ctx, alma_set_id)[0]


def _drop_empty(ctx: Context, batch: _Batch, alma_set_id: str) -> None:
    """Delete the Alma set a batch created when Alma took none of its ids, and forget the plan's row,
    so that nothing empty is left behind and a re-run plans the batch afresh."""
    try:
        ctx.alma.delete_set(alma_set_id)
    except AlmaError as exc:
        _save(ctx, batch.name, state="empty")
        ctx.reporter.note(batch.name, f"the empty Alma set {alma_set_id} could not be deleted ({exc}); delete it")
        return
    with ctx.sessions.begin() as session:
        row = session.scalars(select(SetCreation).where(SetCreation.name == batch.name)).one()
        session.delete(row)


def _lines(rejected: list[tuple[int, str]]) -> str:
    shown = ", ".join(f"line {line} ({m})" for line, m in rejected[:MAX_REPORTED])
    more = f" and {len(rejected) - MAX_REPORTED} more" if len(rejected) > MAX_REPORTED else ""
    return f"{len(rejected)} MMS IDs: {shown}{more}"


def iter_batches(ctx: Context, name: str) -> Iterator[tuple[str, str, str | None]]:
    """(set name, state, Alma set id) of every set an ``add --from-csv --name NAME`` run planned."""
    with ctx.sessions() as session:
        for row in session.scalars(
            select(SetCreation)
            .where(SetCreation.name.startswith(f"{name} (batch ", autoescape=True))
            .order_by(SetCreation.batch)
        ):
            yield row.name, row.state, row.alma_set_id
