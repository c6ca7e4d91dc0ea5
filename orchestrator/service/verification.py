"""Verification as a service step, and the per-record report.

Results stream from the verifier into the database in small transactions (never one list of every
record), so 100,000 records keep memory flat and a crash loses at most one batch of results.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import cast

from sqlalchemy import ColumnElement, Table, and_, bindparam, func, or_, select, update
from sqlalchemy.orm import Session

from orchestrator.config import Config
from orchestrator.display import iso_z
from orchestrator.domain.attention import Attention
from orchestrator.domain.handles import VERIFIED_VALUES, Verdict
from orchestrator.domain.jobrules import settle_until
from orchestrator.domain.steps import Stage, Step, StepFacts
from orchestrator.domain.wording import plural
from orchestrator.resolver.results import VerifyItem, VerifyResult
from orchestrator.service.context import Context, find_set
from orchestrator.store.ledger import Ledger, latest_attempt
from orchestrator.store.models import AlmaSet, Record

FLUSH_EVERY = 250
# Progress is drawn every this many results (and at the end): a redraw per result costs the verifier threads
# the interpreter lock for nothing anyone can see.
REPORT_EVERY = 25
PAGE = 1000


def _todo(set_id: int, only_problems: bool, only_stale: bool = False) -> ColumnElement[bool]:
    todo = and_(Record.set_id == set_id, Record.excluded.is_(False))
    if only_stale:  # the records the public proxy still served from its cache
        return and_(todo, Record.stale_until.is_not(None))
    if only_problems:
        todo = and_(todo, or_(Record.verdict.is_(None), Record.verdict != Verdict.OK.value))
    return todo


def _items(ctx: Context, set_id: int, only_problems: bool, only_stale: bool = False) -> Iterator[VerifyItem]:
    """The records to verify, read in keyset pages of short transactions: a long-lived read would
    hold SQLite's lock (hwf begins every transaction IMMEDIATE) while results are being written."""
    last = 0
    while True:
        with ctx.sessions() as session:
            stmt = select(Record.id, Record.mms_id, Record.handle, Record.handle_raw).where(
                _todo(set_id, only_problems, only_stale), Record.id > last
            )
            rows = session.execute(stmt.order_by(Record.id).limit(PAGE)).all()
        if not rows:
            return
        for row in rows:
            # A malformed handle has no normalised form: hand the raw text over so the verdict says
            # BAD_HANDLE (with the reason), not NO_HANDLE.
            yield VerifyItem(mms_id=row.mms_id, handle=row.handle or row.handle_raw)
        last = rows[-1].id


def _paced(items: Iterator[VerifyItem], pace: Callable[[], None]) -> Iterator[VerifyItem]:
    for item in items:
        pace()
        yield item


def _count(ctx: Context, set_id: int, only_problems: bool, only_stale: bool = False) -> int:
    with ctx.sessions() as session:
        return session.scalar(select(func.count(Record.id)).where(_todo(set_id, only_problems, only_stale))) or 0


_RECORDS = cast(Table, Record.__table__)
_STORE = (
    update(_RECORDS)
    .where(_RECORDS.c.set_id == bindparam("b_set"), _RECORDS.c.mms_id == bindparam("b_mms"))
    .values(
        verdict=bindparam("b_verdict"),
        verdict_detail=bindparam("b_detail"),
        resolved_url=bindparam("b_url"),
        verified_at=bindparam("b_at"),
        stale_until=bindparam("b_stale"),
    )
)


def _flush(ctx: Context, set_id: int, results: list[VerifyResult]) -> None:
    if not results:
        return
    # One executemany per batch (one transaction), not one UPDATE statement per record.
    params = [
        {
            "b_set": set_id,
            "b_mms": r.mms_id,
            "b_verdict": r.verdict.value,
            "b_detail": r.detail,
            "b_url": r.resolved_url,
            "b_at": r.checked_at,
            "b_stale": r.stale_until if r.verdict is Verdict.STALE_CACHE else None,
        }
        for r in results
    ]
    with ctx.sessions.begin() as session:
        session.execute(_STORE, params)
    results.clear()


def _verdicts(session: Session, set_id: int) -> Counter[str]:
    rows = session.execute(
        select(Record.verdict, func.count(Record.id))
        .where(Record.set_id == set_id, Record.excluded.is_(False))
        .group_by(Record.verdict)
    )
    tally: Counter[str] = Counter()
    for verdict, count in rows:
        tally[verdict or "UNCHECKED"] += count
    return tally


def run(
    ctx: Context,
    set_id: int,
    *,
    only_problems: bool = True,
    follow: bool = False,
    pace: Callable[[], None] | None = None,
    authoritative: bool = False,
    only_stale: bool = False,
) -> bool:
    """Verify the set's included records (by default only those not yet OK; ``only_stale``: those the public
    proxy served from its cache). True if all are OK (the set's ``last_checked`` is then now); otherwise an
    integrated set gets a ``verify`` attention reason with the counts per verdict. ``pace`` is called before
    each record is handed to the verifier (the worker's re-verification runs at a low rate).
    ``authoritative``: ask the primary handle server for every handle (``hwf verify --authoritative``)."""
    with ctx.sessions() as session:
        name = session.get_one(AlmaSet, set_id).name
    total = _count(ctx, set_id, only_problems, only_stale)
    tally: Counter[str] = Counter()
    pending: list[VerifyResult] = []
    done = 0
    verifier = ctx.verifier_factory(follow)
    if authoritative:
        verifier.authoritative = True
    try:
        items = _items(ctx, set_id, only_problems, only_stale)
        for result in verifier.verify(_paced(items, pace) if pace is not None else items):
            pending.append(result)
            tally[result.verdict.value] += 1
            done += 1
            if len(pending) >= FLUSH_EVERY:
                _flush(ctx, set_id, pending)
            if done % REPORT_EVERY == 0 or done == total:
                ctx.reporter.verify_progress(name, done, total, tally)
    finally:
        _flush(ctx, set_id, pending)
        verifier.close()
    with ctx.ledger() as book:
        row = book.set(set_id)
        verdicts = _verdicts(book.session, set_id)
        included = sum(verdicts.values())
        ok = sum(verdicts.get(v, 0) for v in VERIFIED_VALUES)  # STALE_CACHE: right at the primary server
        counts = ", ".join(f"{v} {k}" for k, v in sorted(verdicts.items()) if k != Verdict.OK.value)
        book.event(
            row,
            "verification",
            f"verification: {ok} of {plural(included, 'handle')} resolve to their own record"
            + (f"; {counts}" if counts else "")
            + f" ({done} checked now)",
            verdicts=dict(verdicts),
            checked=done,
        )
        if ok == included:
            row.last_checked = book.now
            return True
        if row.stage is Stage.INTEGRATED:
            book.attention(
                row,
                Attention.VERIFY,
                f"{included - ok} of {plural(included, 'handle')} do not resolve to their own record ({counts}); "
                f"see `hwf report {row.alma_set_id} --problems`; fix the cause (or wait for the proxy's cache), "
                f"then `hwf verify {row.alma_set_id}` re-checks only those",
            )
        return False


def verify_set(
    ctx: Context, ref: str, *, recheck_all: bool = False, follow: bool = False, authoritative: bool = False
) -> dict[str, int]:
    """``hwf verify``: verify by hand, under the set's lease; if the set is integrated, settled and
    every record is OK, record the ``verify`` transition."""
    with ctx.sessions.begin() as session:
        set_id = find_set(session, ref).id
    with ctx.lease(set_id):
        with ctx.ledger() as book:
            row = book.set(set_id)
            if row.attention_kind == Attention.VERIFY:
                book.clear_attention(row)
        all_ok = run(ctx, set_id, only_problems=not recheck_all, follow=follow, authoritative=authoritative)
        with ctx.ledger() as book:
            row = book.set(set_id)
            if all_ok and row.attention_kind == Attention.REGRESSION:
                repaired(book, row, "`hwf verify`")
            if all_ok and row.stage is Stage.INTEGRATED:
                settled = settle_at(book.session, row, ctx.config, book.now) <= book.now
                book.fire(row, Step.VERIFY, StepFacts(settled=settled, all_verified=True))
            return dict(_verdicts(book.session, set_id))


def settle_at(session: Session, row: AlmaSet, config: Config, fallback: datetime) -> datetime:
    """When verification may start: the settle time after the integration run's end (as hwf read it; the
    ``fallback`` moment when no end is recorded)."""
    integration = latest_attempt(session, row.id, Step.INTEGRATE)
    ended = integration.ended_at if integration and integration.ended_at else fallback
    return settle_until(ended, config.handles.settle_minutes)


def repaired(book: Ledger, row: AlmaSet, how: str) -> None:
    """Every handle of a set in regression resolves again: clear its attention, say so in the history."""
    previous = book.clear_attention(row)
    book.event(row, "regression-repaired", f"every handle resolves to its record again ({how}); was: {previous}")


@dataclass(frozen=True)
class ReportRow:
    mms_id: str
    title: str | None
    handle: str | None
    preflight: str | None
    verdict: str | None
    resolved_url: str | None
    expected_url: str
    checked_at: datetime | None
    detail: str | None
    excluded: bool

    @property
    def correct_mms(self) -> bool | None:
        if self.resolved_url is None:
            return None
        return f"alma{self.mms_id}/" in self.resolved_url

    def as_json(self) -> dict[str, object]:
        return {
            "mms_id": self.mms_id,
            "title": self.title,
            "handle": self.handle,
            "handle_url": f"http://hdl.handle.net/{self.handle}" if self.handle else None,
            "preflight": self.preflight,
            "verdict": self.verdict,
            "resolved_url": self.resolved_url,
            "expected_url": self.expected_url,
            "returned_correct_mms_id": self.correct_mms,
            "checked_at": iso_z(self.checked_at),
            "detail": self.detail,
            "excluded": self.excluded,
        }


CSV_COLUMNS = [
    "MMS ID",
    "Handle URL",
    "dc:title",
    "Preflight",
    "Verdict",
    "Resolved URL",
    "Expected URL",
    "Returned Correct MMS ID",
    "Checked At",
    "Detail",
    "Excluded",
]


def csv_row(r: ReportRow) -> list[str]:
    data = r.as_json()
    correct = data["returned_correct_mms_id"]
    return [
        r.mms_id,
        str(data["handle_url"] or ""),
        r.title or "",
        r.preflight or "",
        r.verdict or "",
        r.resolved_url or "",
        r.expected_url,
        "" if correct is None else ("TRUE" if correct else "FALSE"),
        str(data["checked_at"] or ""),
        r.detail or "",
        "TRUE" if r.excluded else "FALSE",
    ]


def report(ctx: Context, ref: str, *, problems_only: bool = False) -> Iterator[ReportRow]:
    """One row per record: preflight class, verdict, resolved and expected URL (streamed in pages)."""
    with ctx.sessions() as session:
        set_id = find_set(session, ref).id
    last = 0
    while True:
        with ctx.sessions() as session:
            page = session.scalars(
                select(Record).where(Record.set_id == set_id, Record.id > last).order_by(Record.id).limit(PAGE)
            ).all()
        if not page:
            return
        last = page[-1].id
        for rec in page:
            problem = rec.excluded or rec.verdict not in VERIFIED_VALUES
            if problems_only and not problem:
                continue
            yield ReportRow(
                mms_id=rec.mms_id,
                title=rec.title,
                handle=rec.handle,
                preflight=rec.preflight,
                verdict=rec.verdict,
                resolved_url=rec.resolved_url,
                expected_url=ctx.config.primo.record_url(rec.mms_id),
                checked_at=rec.verified_at,
                detail=(
                    f"excluded: {rec.exclude_reason}"
                    if rec.excluded and rec.exclude_reason
                    else rec.verdict_detail or (rec.preflight_detail if rec.preflight != "READY" else None)
                ),
                excluded=rec.excluded,
            )
