"""The repair engine behind ``hwf fix`` (dry run), ``hwf fix --apply`` and ``hwf fix --undo``.

Records go through in batches of 100. For each batch: one ``GET /bibs?mms_id=`` for the diff, one
transaction committing every backup of the batch, one more bulk GET right before the writes (a record
that changed since the first read is refused, not overwritten), the PUTs (concurrent, a bounded number in
flight, all paced by the Alma client's one token bucket, so a 429 slows every worker), then one bulk GET
to confirm and one transaction settling the batch. The next batch is read and backed up while this one's
PUTs are on their way: the rate cap, not the round trips, sets the pace. So N records cost N PUTs and
3 * ceil(N / 100) reads (undo: 2 reads, nothing to back up).

No transaction is open during an Alma call (worker threads only talk HTTP; the calling thread alone
touches the database), and a PUT is never sent for a record whose backup is not committed.

A crash at any moment leaves each backup of the batches in flight ``pending``. The next ``--apply`` reads
every pending record again: still the original -> written now; already the repaired record -> ``applied``
(its PUT reached Alma; not sent again); anything else -> ``conflict`` (changed in Alma since; not written).
An undo interrupted after its PUT is recognised the same way (the record is the original again).
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from orchestrator.domain import dc
from orchestrator.domain.dc import Preflight
from orchestrator.domain.wording import plural
from orchestrator.errors import (
    AlmaBadReplyError,
    AlmaError,
    AlmaUnreachableError,
    DailyQuotaError,
    HwfError,
    UnsafeXmlError,
)
from orchestrator.service.context import Context, add_event, find_set
from orchestrator.service.steps import holding_lease
from orchestrator.store.models import AlmaSet, Backup, Record

if TYPE_CHECKING:
    from orchestrator.alma.types import Bib

BATCH = 100
MAX_IN_FLIGHT = 32
# Errors that concern every record (Alma unreachable, quota spent): stop starting new work.
_FATAL = (AlmaUnreachableError, DailyQuotaError)

Progress = Callable[[int, int], None]


@dataclass
class FixReport:
    """What ``hwf fix`` did (or, for a dry run, would do), per record."""

    set: str
    mode: str  # dry-run, apply, undo
    changed: list[str] = field(default_factory=list)
    summaries: dict[str, str] = field(default_factory=dict)  # MMS -> one line: what the repair removes
    diffs: dict[str, str] = field(default_factory=dict)  # MMS -> unified diff (only when asked for)
    refused: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    unchanged: list[str] = field(default_factory=list)
    total: int = 0
    seconds: float = 0.0

    def as_json(self) -> dict[str, object]:
        return {
            "set": self.set,
            "mode": self.mode,
            "total": self.total,
            "changed": self.changed,
            "refused": self.refused,
            "failed": self.failed,
            "unchanged": self.unchanged,
            "summaries": self.summaries,
            "diffs": self.diffs,
        }


@dataclass
class _Write:
    """One record to PUT: its backup row, the bytes read (the backup), and the bytes to write."""

    mms_id: str
    backup_id: int | None
    original: bytes
    target: bytes
    summary: str = ""
    error: str | None = None  # the PUT's failure, once it ran
    refused: bool = False  # Alma answered the PUT with a 4xx: it was not applied


@dataclass
class _Batch:
    writes: list[_Write] = field(default_factory=list)
    futures: list[Future[None]] = field(default_factory=list)
    settled: dict[int, tuple[str, str | None]] = field(default_factory=dict)  # backup id -> (state, detail)
    records: dict[str, tuple[str, str]] = field(default_factory=dict)  # MMS -> (preflight class, detail)


def in_flight_for(requests_per_second: float) -> int:
    """PUTs in flight: enough to keep the rate cap busy at a round trip of up to one second."""
    if math.isinf(requests_per_second):
        return MAX_IN_FLIGHT
    return max(2, min(MAX_IN_FLIGHT, math.ceil(requests_per_second)))


def _chunks(items: Sequence[str], size: int = BATCH) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class _Engine:
    """One run over one set. Only the calling thread opens transactions; workers only send PUTs."""

    def __init__(self, ctx: Context, set_id: int, report: FixReport, progress: Progress | None) -> None:
        self.ctx = ctx
        self.set_id = set_id
        self.report = report
        self.prefix = ctx.config.handles.prefix
        self._progress = progress
        self._lock = threading.Lock()
        self._done = 0
        self._total = 0
        self._workers = in_flight_for(ctx.config.alma.requests_per_second)
        self._pool: ThreadPoolExecutor | None = None
        self._fatal: HwfError | None = None

    # -- reading ---------------------------------------------------------------------------

    def read(self, ids: Sequence[str]) -> dict[str, Bib | str]:
        """MMS -> the bib as Alma sent it, or why it could not be read. Bulk; an unreadable reply is halved
        until the unreadable record stands alone (as ``hwf check`` does)."""
        try:
            batch = self.ctx.alma.get_bibs_xml(list(ids))
        except (AlmaBadReplyError, UnsafeXmlError) as exc:
            if len(ids) == 1:
                return {ids[0]: str(exc)}
            half = len(ids) // 2
            return {**self.read(ids[:half]), **self.read(ids[half:])}
        except _FATAL:
            raise
        except AlmaError as exc:
            return dict.fromkeys(ids, str(exc))
        found: dict[str, Bib | str] = {bib.mms_id: bib for bib in batch.bibs}
        for mms in batch.missing:
            found[mms] = "Alma returned no bib for this MMS ID"
        return found

    # -- progress --------------------------------------------------------------------------

    def advance(self, count: int = 1) -> None:
        with self._lock:
            self._done += count
            if self._progress is not None:
                self._progress(self._done, self._total)

    # -- the pipeline ----------------------------------------------------------------------

    def run(
        self, ids: Sequence[str], prepare: Callable[[Sequence[str]], _Batch], confirm: Callable[[_Batch], None]
    ) -> None:
        """Prepare batch k+1 while batch k's PUTs run; confirm and settle each batch after its PUTs."""
        self._total = len(ids)
        if self._progress is not None:
            self._progress(0, self._total)
        pending: deque[_Batch] = deque()
        self._pool = ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix="hwf-fix")
        try:
            for chunk in _chunks(ids):
                if self._fatal is not None:
                    break
                batch = prepare(chunk)
                batch.futures = [self._pool.submit(self._put, w) for w in batch.writes]
                pending.append(batch)
                while len(pending) > 1:
                    self._finish(pending.popleft(), confirm)
            while pending:
                self._finish(pending.popleft(), confirm)
        finally:
            # Never leave PUTs running behind the caller's back (an exception, a KeyboardInterrupt).
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        if self._fatal is not None:
            raise self._fatal

    def _put(self, write: _Write) -> None:
        if self._fatal is not None:
            write.error = "not sent: the run stopped"
            return
        try:
            self.ctx.alma.put_bib_xml(write.mms_id, write.target)
        except _FATAL as exc:
            self._fatal = exc
            write.error = str(exc)
        except AlmaError as exc:
            write.refused = exc.status is not None and exc.status < 500
            write.error = f"PUT refused: {exc}" if write.refused else f"PUT failed: {exc}"
        except ValueError as exc:  # the document is not a <bib> of this record: never sent
            write.refused = True
            write.error = f"not sent: {exc}"
        self.advance()

    def _finish(self, batch: _Batch, confirm: Callable[[_Batch], None]) -> None:
        for future in batch.futures:
            future.result()
        confirm(batch)

    def settle(self, batch: _Batch) -> None:
        """One transaction: every backup state of the batch, and the records' preflight class."""
        records = batch.records
        if not batch.settled and not records:
            return
        with self.ctx.sessions.begin() as session:
            if batch.settled:
                for backup in session.scalars(select(Backup).where(Backup.id.in_(list(batch.settled)))):
                    backup.state, backup.detail = batch.settled[backup.id]
            if records:
                rows = session.scalars(
                    select(Record).where(Record.set_id == self.set_id, Record.mms_id.in_(list(records)))
                )
                for rec in rows:
                    rec.preflight, rec.preflight_detail = records[rec.mms_id]


# ---------------------------------------------------------------------------------------------
# fix (dry run and --apply)


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
    engine = _Engine(ctx, set_id, report, progress)
    started = time.monotonic()
    ids = sorted(targets | set(pending))
    report.total = len(ids)
    fatal: HwfError | None = None
    # Writing takes the set's lease, as every step does: no two repairs of one set at once, and none while
    # another hwf process works on the set (a job over these records). The dry run only reads.
    with holding_lease(ctx, set_id) if apply else nullcontext():
        try:
            engine.run(
                ids,
                partial(_prepare_fix, engine, pending=pending, apply=apply, diff=diff),
                partial(_confirm_fix, engine),
            )
        except _FATAL as exc:
            fatal = exc
        report.seconds = time.monotonic() - started
        if apply:
            _record_fix(ctx, set_id, report, fatal)
    if fatal is not None:
        raise fatal
    return report


def _prepare_fix(
    engine: _Engine, chunk: Sequence[str], *, pending: dict[str, tuple[int, bytes, bytes]], apply: bool, diff: bool
) -> _Batch:
    """Read a chunk, decide per record (repair, finish an interrupted one, settle, refuse), commit the new
    backups in one transaction, and read the records to write once more."""
    report = engine.report
    batch = _Batch()
    read = engine.read(chunk)
    new: list[_Write] = []
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
    engine: _Engine, batch: _Batch, mms: str, bib: Bib, pending: tuple[int, bytes, bytes], apply: bool
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
    write = _Write(mms, backup_id, original, repaired, f"{mms}: finishing an interrupted repair")
    report.summaries[mms] = write.summary
    batch.writes.append(write)
    return 0


def _new_one(engine: _Engine, batch: _Batch, new: list[_Write], mms: str, bib: Bib, apply: bool, diff: bool) -> int:
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
    new.append(_Write(mms, None, repair.original, repair.repaired, repair.summary()))
    return 0


def _back_up(engine: _Engine, new: list[_Write]) -> None:
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


def _read_again(engine: _Engine, batch: _Batch) -> int:
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
        elif not _same(now.xml, write.original):
            report.refused[write.mms_id] = "changed in Alma between hwf's read and write; not written"
            batch.settled[write.backup_id] = ("conflict", "record changed in Alma between hwf's read and write")
        else:
            keep.append(write)
            continue
        settled += 1
    batch.writes = keep
    return settled


def _same(a: bytes, b: bytes) -> bool:
    """``dc.same_record``, with an unreadable document counting as different."""
    if a == b:  # the usual case, and no parse at all
        return True
    try:
        return dc.same_record(a, b)
    except UnsafeXmlError:
        return False


def _confirm_fix(engine: _Engine, batch: _Batch) -> None:
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


def _run_event(
    ctx: Context,
    session: Any,
    row: AlmaSet,
    kind: str,
    what: str,
    done: str,
    report: FixReport,
    fatal: HwfError | None,
    **data: Any,
) -> None:
    """The audit event of one ``fix --apply`` or ``--undo`` run: counts, refusals and failures."""
    stopped = f"; stopped: {fatal}" if fatal is not None else ""
    add_event(
        session,
        row,
        kind,
        f"{what}: {plural(len(report.changed), 'record')} {done}, {len(report.refused)} refused, "
        f"{len(report.failed)} failed{stopped}",
        at=ctx.clock(),
        actor=ctx.owner,
        refused=report.refused,
        failed=report.failed,
        **data,
    )


def _record_fix(ctx: Context, set_id: int, report: FixReport, fatal: HwfError | None) -> None:
    with ctx.sessions.begin() as session:
        row = session.get_one(AlmaSet, set_id)
        _run_event(ctx, session, row, "fix", "fix --apply", "repaired", report, fatal, changed=report.changed)
        clean = fatal is None and not report.failed and not report.refused
        if report.changed and clean and row.attention_kind == "records":
            row.attention = None
            row.attention_kind = None


# ---------------------------------------------------------------------------------------------
# undo


def undo(ctx: Context, ref: str, *, progress: Progress | None = None) -> FixReport:
    """Restore every record hwf changed from its backup, unless it changed again since (refused).

    The same pipeline as ``fix``: bulk read, concurrent PUTs of the originals, bulk confirm. A record that
    is already the original again (an undo stopped after its PUT) is settled without a PUT.
    """
    with ctx.sessions.begin() as session:
        row = find_set(session, ref)
        set_id, alma_id = row.id, row.alma_set_id
        applied = [
            (b.id, b.mms_id)
            for b in session.scalars(
                select(Backup).where(Backup.set_id == set_id, Backup.state == "applied").order_by(Backup.id.desc())
            )
        ]
    report = FixReport(set=alma_id, mode="undo")
    started = time.monotonic()
    fatal: HwfError | None = None
    # A record repaired more than once has several applied backups: newest first, one per record a round.
    rounds: list[dict[str, int]] = []
    for backup_id, mms in applied:
        for layer in rounds:
            if mms not in layer:
                layer[mms] = backup_id
                break
        else:
            rounds.append({mms: backup_id})
    with holding_lease(ctx, set_id):
        try:
            for layer in rounds:
                engine = _Engine(ctx, set_id, report, progress)
                ids = sorted(layer)
                engine.run(ids, partial(_prepare_undo, engine, backups=layer), partial(_confirm_undo, engine))
        except _FATAL as exc:
            fatal = exc
        report.total = len(applied)
        report.seconds = time.monotonic() - started
        with ctx.sessions.begin() as session:
            row = session.get_one(AlmaSet, set_id)
            _run_event(ctx, session, row, "fix_undo", "fix --undo", "restored", report, fatal, restored=report.changed)
    if fatal is not None:
        raise fatal
    return report


def _prepare_undo(engine: _Engine, chunk: Sequence[str], *, backups: dict[str, int]) -> _Batch:
    report, batch = engine.report, _Batch()
    with engine.ctx.sessions() as session:
        stored = {
            b.mms_id: (b.id, b.original_xml, b.new_xml)
            for b in session.scalars(select(Backup).where(Backup.id.in_([backups[m] for m in chunk])))
        }
    read = engine.read(chunk)
    finished = 0
    for mms in chunk:
        backup_id, original, repaired = stored[mms]
        bib = read.get(mms, "Alma returned no bib for this MMS ID")
        if isinstance(bib, str):
            report.failed[mms] = bib
        elif _same(bib.xml, repaired):
            batch.writes.append(_Write(mms, backup_id, repaired, original, f"{mms}: restore the original"))
            continue
        elif _same(bib.xml, original):
            # An earlier undo's PUT reached Alma before that run could record it.
            batch.settled[backup_id] = ("restored", None)
            batch.records[mms] = (Preflight.NEEDS_FIX.value, "restored by hwf fix --undo")
            report.changed.append(mms)
        else:
            report.refused[mms] = "changed in Alma since hwf fixed it; not restored"
        finished += 1
    engine.advance(finished)
    return batch


def _confirm_undo(engine: _Engine, batch: _Batch) -> None:
    report = engine.report
    written = [w for w in batch.writes if w.error is None]
    after = engine.read([w.mms_id for w in written]) if written else {}
    for write in batch.writes:
        assert write.backup_id is not None
        if write.error is not None:
            report.failed[write.mms_id] = write.error
            continue
        now = after.get(write.mms_id)
        if isinstance(now, str) or now is None or not _same(now.xml, write.target):
            # Left applied: the next --undo reads it again (already the original: settled then).
            report.failed[write.mms_id] = f"restored, but not confirmed ({now if isinstance(now, str) else 'differs'})"
            continue
        batch.settled[write.backup_id] = ("restored", None)
        batch.records[write.mms_id] = (Preflight.NEEDS_FIX.value, "restored by hwf fix --undo")
        report.changed.append(write.mms_id)
    engine.settle(batch)
