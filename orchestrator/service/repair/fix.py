"""``hwf fix`` (dry run) and ``hwf fix --apply``: remove ``xsi:type`` from the handle ``dc:identifier`` of every
NEEDS_FIX record, a backup of each record committed before its PUT."""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import nullcontext
from functools import partial
from typing import TYPE_CHECKING

from sqlalchemy import select

from orchestrator.domain import dc
from orchestrator.domain.attention import Attention
from orchestrator.domain.dc import Preflight
from orchestrator.errors import (
    HwfError,
    UnsafeXmlError,
)
from orchestrator.service.attend import refresh
from orchestrator.service.context import Context, find_set
from orchestrator.service.repair.engine import FATAL, Batch, Engine, FixReport, Progress, Write, run_event, same
from orchestrator.store.models import Backup, Record

if TYPE_CHECKING:
    from orchestrator.alma.types import Bib


def fix(
    ctx: Context, ref: str, *, apply: bool = False, diff: bool = False, progress: Progress | None = None
) -> FixReport:
    """Remove ``xsi:type`` from the handle ``dc:identifier`` of every NEEDS_FIX record of a set.

    Dry run by default (a summary line per record; unified diffs with ``diff``). With ``apply``: back up,
    re-read, PUT, confirm, batch by batch; a record that changed in Alma since it was read is refused.
    ``progress(done, total)`` may be called from worker threads.
    :raises AlmaUnreachableError, DailyQuotaError: the run stopped; the next ``--apply`` finishes it.
    """
    with ctx.sessions.begin() as session:
        row = find_set(session, ref)
        set_id, alma_id = row.id, row.alma_set_id
        targets = set(
            session.scalars(
                select(Record.mms_id).where(
                    Record.set_id == set_id,
                    Record.preflight == Preflight.NEEDS_FIX.value,
                    Record.excluded.is_(False),
                )
            )
        )
        pending = {
            b.mms_id: (b.id, b.original_xml, b.new_xml)
            for b in session.scalars(
                select(Backup).where(Backup.set_id == set_id, Backup.state == "pending").order_by(Backup.id)
            )
        }
    report = FixReport(set=alma_id, mode="apply" if apply else "dry-run")
    engine = Engine(ctx, set_id, report, progress)
    started = time.monotonic()
    ids = sorted(targets | set(pending))
    report.total = len(ids)
    fatal: HwfError | None = None
    # Writing takes the set's lease, as every step does: no two repairs of one set at once, and none while
    # another hwf process works on the set (a job over these records). The dry run only reads.
    with ctx.lease(set_id) if apply else nullcontext():
        try:
            engine.run(
                ids,
                partial(_prepare_fix, engine, pending=pending, apply=apply, diff=diff),
                partial(_confirm_fix, engine),
            )
        except FATAL as exc:
            fatal = exc
        report.seconds = time.monotonic() - started
        if apply:
            _record_fix(ctx, set_id, report, fatal)
    if fatal is not None:
        raise fatal
    return report


def _prepare_fix(
    engine: Engine, chunk: Sequence[str], *, pending: dict[str, tuple[int, bytes, bytes]], apply: bool, diff: bool
) -> Batch:
    """Read a chunk, decide per record (repair, finish an interrupted one, settle, refuse), commit the new
    backups in one transaction, and read the records to write once more."""
    report = engine.report
    batch = Batch()
    read = engine.read(chunk)
    new: list[Write] = []
    finished = 0
    for mms in chunk:
        bib = read.get(mms, "Alma returned no bib for this MMS ID")
        if isinstance(bib, str):
            report.failed[mms] = bib
            finished += 1
        elif mms in pending:
            finished += _pending_one(engine, batch, mms, bib, pending[mms], apply)
        else:
            finished += _new_one(engine, batch, new, mms, bib, apply, diff)
    if new:
        _back_up(engine, new)
        batch.writes.extend(new)
    if batch.writes:
        finished += _read_again(engine, batch)
    engine.advance(finished)
    return batch


def _pending_one(
    engine: Engine, batch: Batch, mms: str, bib: Bib, pending: tuple[int, bytes, bytes], apply: bool
) -> int:
    """A backup a crash left without its PUT: settle it, or queue its write. 1 when the record is done."""
    report = engine.report
    backup_id, original, repaired = pending
    try:
        if bib.xml == repaired or dc.same_record(bib.xml, repaired):
            report.summaries[mms] = f"{mms}: repaired by an earlier run (its PUT had reached Alma)"
            if apply:
                batch.settled[backup_id] = ("applied", None)
                batch.records[mms] = (Preflight.READY.value, "repaired by hwf fix")
                report.changed.append(mms)
            return 1
        if bib.xml != original and not dc.same_record(bib.xml, original):
            report.refused[mms] = "changed in Alma since hwf read it; not written"
            if apply:
                batch.settled[backup_id] = ("conflict", "record changed in Alma since hwf read it")
            return 1
    except UnsafeXmlError as exc:
        report.failed[mms] = str(exc)
        return 1
    if not apply:
        report.summaries[mms] = f"{mms}: an interrupted repair; `--apply` finishes it"
        return 1
    # Still the original: the earlier run was stopped before its PUT. Write it now, same backup.
    write = Write(mms, backup_id, original, repaired, f"{mms}: finishing an interrupted repair")
    report.summaries[mms] = write.summary
    batch.writes.append(write)
    return 0


def _new_one(engine: Engine, batch: Batch, new: list[Write], mms: str, bib: Bib, apply: bool, diff: bool) -> int:
    """A record to repair: its summary (and diff), and with ``apply`` a write to back up. 1 when done."""
    report = engine.report
    try:
        repair = dc.remove_handle_xsi_type(bib.xml, engine.prefix, mms, with_diff=diff)
    except (HwfError, ValueError) as exc:
        report.failed[mms] = str(exc)
        return 1
    if repair is None:
        report.unchanged.append(mms)
        if apply and dc.classify_bib(bib, engine.prefix).preflight is Preflight.READY:
            batch.records[mms] = (Preflight.READY.value, "found repaired in Alma by hwf fix")
        return 1
    report.summaries[mms] = repair.summary()
    if diff:
        report.diffs[mms] = repair.diff
    if not apply:
        return 1
    new.append(Write(mms, None, repair.original, repair.repaired, repair.summary()))
    return 0


def _back_up(engine: Engine, new: list[Write]) -> None:
    """Every backup of the batch in one transaction, committed before any of their PUTs is sent."""
    with engine.ctx.sessions.begin() as session:
        rows = [
            Backup(set_id=engine.set_id, mms_id=w.mms_id, original_xml=w.original, new_xml=w.target, state="pending")
            for w in new
        ]
        session.add_all(rows)
        session.flush()
        for write, backup in zip(new, rows, strict=True):
            write.backup_id = backup.id


def _read_again(engine: Engine, batch: Batch) -> int:
    """Read again right before writing: a record someone changed since the first read is not overwritten.
    Returns how many records this settles (failed or refused)."""
    report = engine.report
    again = engine.read([w.mms_id for w in batch.writes])
    keep = []
    settled = 0
    for write in batch.writes:
        now = again.get(write.mms_id)
        assert write.backup_id is not None
        if isinstance(now, str) or now is None:
            report.failed[write.mms_id] = f"{now or 'not read again'}; not written, the backup is kept"
            batch.settled[write.backup_id] = ("failed", now)
        elif not same(now.xml, write.original):
            report.refused[write.mms_id] = "changed in Alma between hwf's read and write; not written"
            batch.settled[write.backup_id] = ("conflict", "record changed in Alma between hwf's read and write")
        else:
            keep.append(write)
            continue
        settled += 1
    batch.writes = keep
    return settled


def _confirm_fix(engine: Engine, batch: Batch) -> None:
    report = engine.report
    written = [w for w in batch.writes if w.error is None]
    after = engine.read([w.mms_id for w in written]) if written else {}
    for write in batch.writes:
        assert write.backup_id is not None
        if write.error is not None and write.refused:
            report.failed[write.mms_id] = f"{write.error}; the backup is kept"
            batch.settled[write.backup_id] = ("failed", write.error)
            continue
        if write.error is not None:
            # Not sent, or its outcome is unknown: the backup stays pending and the next --apply reads
            # the record to finish (still the original) or settle (already repaired) it.
            report.failed[write.mms_id] = f"{write.error}; `hwf fix --apply` again finishes it"
            continue
        now = after.get(write.mms_id)
        if isinstance(now, str) or now is None:
            # The PUT was accepted but the confirmation could not be read: left pending, the next
            # --apply reads the record and settles it.
            report.failed[write.mms_id] = f"written, but not confirmed ({now}); `hwf fix --apply` again settles it"
            continue
        check = dc.classify_bib(now, engine.prefix)
        if check.preflight is not Preflight.READY:
            detail = f"after the PUT the record is {check.preflight.value}: {check.detail}"
            report.failed[write.mms_id] = f"after the PUT the record is {check.preflight.value}"
            batch.settled[write.backup_id] = ("failed", detail)
            continue
        batch.settled[write.backup_id] = ("applied", None)
        batch.records[write.mms_id] = (Preflight.READY.value, "repaired by hwf fix")
        report.changed.append(write.mms_id)
    engine.settle(batch)


def _record_fix(ctx: Context, set_id: int, report: FixReport, fatal: HwfError | None) -> None:
    with ctx.ledger() as book:
        row = book.set(set_id)
        run_event(book, row, "fix", "fix --apply", "repaired", report, fatal, changed=report.changed)
        if report.changed and row.attention_kind == Attention.RECORDS:
            # Rewritten to the records that still stop the set (those the fix could not repair, and any other
            # problem), or cleared: the next command it names is true again.
            report.follow_up = refresh(book, row, fresh=False, why="`hwf fix --apply`")
