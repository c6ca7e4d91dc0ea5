"""``hwf fix --undo``: restore every record hwf changed from its backup, unless it changed again since."""

from __future__ import annotations

import time
from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING

from sqlalchemy import select

from orchestrator.domain.dc import Preflight
from orchestrator.errors import (
    HwfError,
)
from orchestrator.service.context import Context, find_set
from orchestrator.store.models import Backup

if TYPE_CHECKING:
    pass

from orchestrator.service.repair.engine import FATAL, Batch, Engine, FixReport, Progress, Write, run_event, same


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
    with ctx.lease(set_id):
        try:
            for layer in rounds:
                engine = Engine(ctx, set_id, report, progress)
                ids = sorted(layer)
                engine.run(ids, partial(_prepare_undo, engine, backups=layer), partial(_confirm_undo, engine))
        except FATAL as exc:
            fatal = exc
        report.total = len(applied)
        report.seconds = time.monotonic() - started
        with ctx.ledger() as book:
            row = book.set(set_id)
            run_event(book, row, "fix_undo", "fix --undo", "restored", report, fatal, restored=report.changed)
    if fatal is not None:
        raise fatal
    return report


def _prepare_undo(engine: Engine, chunk: Sequence[str], *, backups: dict[str, int]) -> Batch:
    report, batch = engine.report, Batch()
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
        elif same(bib.xml, repaired):
            batch.writes.append(Write(mms, backup_id, repaired, original, f"{mms}: restore the original"))
            continue
        elif same(bib.xml, original):
            # An earlier undo's PUT reached Alma before that run could record it.
            batch.settled[backup_id] = ("restored", None)
            batch.records[mms] = (Preflight.NEEDS_FIX.value, "restored by hwf fix --undo")
            report.changed.append(mms)
        else:
            report.refused[mms] = "changed in Alma since hwf fixed it; not restored"
        finished += 1
    engine.advance(finished)
    return batch


def _confirm_undo(engine: Engine, batch: Batch) -> None:
    report = engine.report
    written = [w for w in batch.writes if w.error is None]
    after = engine.read([w.mms_id for w in written]) if written else {}
    for write in batch.writes:
        assert write.backup_id is not None
        if write.error is not None:
            report.failed[write.mms_id] = write.error
            continue
        now = after.get(write.mms_id)
        if isinstance(now, str) or now is None or not same(now.xml, write.target):
            # Left applied: the next --undo reads it again (already the original: settled then).
            report.failed[write.mms_id] = f"restored, but not confirmed ({now if isinstance(now, str) else 'differs'})"
            continue
        batch.settled[write.backup_id] = ("restored", None)
        batch.records[write.mms_id] = (Preflight.NEEDS_FIX.value, "restored by hwf fix --undo")
        report.changed.append(write.mms_id)
    engine.settle(batch)
