"""The repair pipeline shared by ``hwf fix --apply`` and ``hwf fix --undo``: records in batches of 100, read
in bulk, backed up in one transaction, written by concurrent PUTs within the Alma client's one pacing,
confirmed in bulk. Only the calling thread opens transactions; worker threads only send PUTs."""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from orchestrator.domain import dc
from orchestrator.domain.wording import plural
from orchestrator.errors import (
    AlmaBadReplyError,
    AlmaError,
    AlmaUnreachableError,
    DailyQuotaError,
    HwfError,
    UnsafeXmlError,
)
from orchestrator.service.context import Context
from orchestrator.store.ledger import Ledger
from orchestrator.store.models import AlmaSet, Backup, Record

if TYPE_CHECKING:
    from orchestrator.alma.types import Bib

BATCH = 100
MAX_IN_FLIGHT = 32
# Errors that concern every record (Alma unreachable, quota spent): stop starting new work.
FATAL = (AlmaUnreachableError, DailyQuotaError)

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
    follow_up: str = ""  # what became of the set's records attention (cleared, or what still stops the set)

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
            "attention": self.follow_up or None,
        }


@dataclass
class Write:
    """One record to PUT: its backup row, the bytes read (the backup), and the bytes to write."""

    mms_id: str
    backup_id: int | None
    original: bytes
    target: bytes
    summary: str = ""
    error: str | None = None  # the PUT's failure, once it ran
    refused: bool = False  # Alma answered the PUT with a 4xx: it was not applied


@dataclass
class Batch:
    writes: list[Write] = field(default_factory=list)
    futures: list[Future[None]] = field(default_factory=list)
    settled: dict[int, tuple[str, str | None]] = field(default_factory=dict)  # backup id -> (state, detail)
    records: dict[str, tuple[str, str]] = field(default_factory=dict)  # MMS -> (preflight class, detail)


def in_flight_for(requests_per_second: float) -> int:
    """PUTs in flight: enough to keep the rate cap busy at a round trip of up to one second."""
    if math.isinf(requests_per_second):
        return MAX_IN_FLIGHT
    return max(2, min(MAX_IN_FLIGHT, math.ceil(requests_per_second)))


def chunks(items: Sequence[str], size: int = BATCH) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class Engine:
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
        except FATAL:
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
        self, ids: Sequence[str], prepare: Callable[[Sequence[str]], Batch], confirm: Callable[[Batch], None]
    ) -> None:
        """Prepare batch k+1 while batch k's PUTs run; confirm and settle each batch after its PUTs."""
        self._total = len(ids)
        if self._progress is not None:
            self._progress(0, self._total)
        pending: deque[Batch] = deque()
        self._pool = ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix="hwf-fix")
        try:
            for chunk in chunks(ids):
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

    def _put(self, write: Write) -> None:
        if self._fatal is not None:
            write.error = "not sent: the run stopped"
            return
        try:
            self.ctx.alma.put_bib_xml(write.mms_id, write.target)
        except FATAL as exc:
            self._fatal = exc
            write.error = str(exc)
        except AlmaError as exc:
            write.refused = exc.status is not None and exc.status < 500
            write.error = f"PUT refused: {exc}" if write.refused else f"PUT failed: {exc}"
        except ValueError as exc:  # the document is not a <bib> of this record: never sent
            write.refused = True
            write.error = f"not sent: {exc}"
        self.advance()

    def _finish(self, batch: Batch, confirm: Callable[[Batch], None]) -> None:
        for future in batch.futures:
            future.result()
        confirm(batch)

    def settle(self, batch: Batch) -> None:
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


def run_event(
    book: Ledger,
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
    book.event(
        row,
        kind,
        f"{what}: {plural(len(report.changed), 'record')} {done}, {len(report.refused)} refused, "
        f"{len(report.failed)} failed{stopped}",
        refused=report.refused,
        failed=report.failed,
        **data,
    )


def same(a: bytes, b: bytes) -> bool:
    """``dc.same_record``, with an unreadable document counting as different."""
    if a == b:  # the usual case, and no parse at all
        return True
    try:
        return dc.same_record(a, b)
    except UnsafeXmlError:
        return False
