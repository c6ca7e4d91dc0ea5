"""Re-verification of verified sets: handles that break later are noticed.

The reference institution found 20-30 % of its handles broken months after the jobs said "Completed
Successfully". The worker re-verifies each verified set every ``[handles] recheck_days`` (0: never):
spread out (at most one set per ``recheck_days / number of verified sets``) and at a low rate
(``[handles] recheck_requests_per_second``). A handle that no longer resolves to its own record is a
regression: the set gets attention (kind ``regression``) naming the records, and ONE ``regression`` event
(the notification hook listens for that kind); its state stays ``verified``. When a later check (or
``hwf verify SET``) finds every handle resolving again, a ``regression-repaired`` event clears it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy import func, or_, select

from orchestrator.domain.attention import Attention
from orchestrator.domain.handles import VERIFIED_VALUES
from orchestrator.domain.steps import Stage
from orchestrator.errors import LeaseHeldError
from orchestrator.service import verification
from orchestrator.service.context import Context
from orchestrator.service.stale import StaleRecheck, stale_rechecks
from orchestrator.store.models import AlmaSet, Event, Record

NAMED = 5  # MMS IDs named in the attention reason; the rest are counted
RECHECK = "recheck"
STALE_RECHECK = "stale-recheck"
STALE_RETRY = timedelta(minutes=1)  # a stale re-check whose set another process holds: looked at again after this


class _Stop(Protocol):
    def is_set(self) -> bool: ...


def _due_at(last: datetime | None, created: datetime, days: float) -> datetime:
    return (last or created) + timedelta(days=days)


def due_sets(ctx: Context, stop: _Stop) -> tuple[int, int, datetime | None]:
    """Re-verify at most one due set (the one checked longest ago), if the spacing allows now.
    Returns (sets checked, regressions found, when the next one is due; None when off or none)."""
    days = ctx.config.handles.recheck_days
    if days <= 0:
        return 0, 0, None
    now = ctx.clock()
    with ctx.sessions() as session:
        rows = session.execute(
            select(AlmaSet.id, AlmaSet.last_checked, AlmaSet.updated_at)
            .where(AlmaSet.stage == Stage.VERIFIED)
            .order_by(AlmaSet.last_checked.is_not(None), AlmaSet.last_checked, AlmaSet.id)
        ).all()
        last_recheck = session.scalar(select(func.max(Event.at)).where(Event.kind == RECHECK))
    if not rows:
        return 0, 0, None
    spacing = timedelta(days=days) / len(rows)
    earliest = last_recheck + spacing if last_recheck is not None else now
    due = min(_due_at(r.last_checked, r.updated_at, days) for r in rows)
    when = max(due, earliest)
    if when > now:
        return 0, 0, when
    first = min(rows, key=lambda r: _due_at(r.last_checked, r.updated_at, days))
    try:
        regressed = recheck_set(ctx, first.id, stop)
    except LeaseHeldError:
        return 0, 0, now + spacing
    return 1, int(regressed), None


def stale_due(ctx: Context, stop: _Stop) -> tuple[int, int, StaleRecheck | None]:
    """Verify again the stale handles of at most one verified set whose public cache has expired (the one
    due first). Returns (sets checked, regressions found, the next such re-check: None when there is none)."""
    now = ctx.clock()
    with ctx.sessions() as session:
        pending = sorted(stale_rechecks(session).values(), key=lambda r: (r.at, r.set_id))
    later = [r for r in pending if r.at > now]
    for due in (r for r in pending if r.at <= now):
        try:
            regressed = recheck_set(ctx, due.set_id, stop, only_stale=True)
        except LeaseHeldError:  # another process holds the set now: look again soon
            later.append(dataclasses.replace(due, at=now + STALE_RETRY))
            continue
        return 1, int(regressed), None
    return 0, 0, min(later, key=lambda r: r.at, default=None)


def recheck_set(ctx: Context, set_id: int, stop: _Stop, *, only_stale: bool = False) -> bool:
    """Re-verify every included record of a verified set (``only_stale``: those the public proxy served from
    its cache) under its lease, at the low rate. True when this check found a new regression."""
    rate = ctx.config.handles.recheck_requests_per_second
    pace = _pacer(1.0 / rate, ctx.clock, ctx.sleep, stop)
    with ctx.lease(set_id):
        all_ok = verification.run(ctx, set_id, only_problems=False, pace=pace, only_stale=only_stale)
        with ctx.ledger() as book:
            row = book.set(set_id)
            bad = book.session.scalars(
                select(Record.mms_id)
                .where(
                    Record.set_id == set_id,
                    Record.excluded.is_(False),
                    or_(Record.verdict.is_(None), Record.verdict.not_in(VERIFIED_VALUES)),
                )
                .order_by(Record.id)
            ).all()
            if only_stale:
                still = book.session.scalar(
                    select(func.count()).where(Record.set_id == set_id, Record.stale_until.is_not(None))
                )
                book.event(
                    row,
                    STALE_RECHECK,
                    "re-check of the handles stale in the public proxy's cache: "
                    + (f"{still} still stale" if still else "the public proxy serves them right now")
                    + (f", {len(bad)} do not resolve" if not all_ok else ""),
                    bad=len(bad),
                    stale=still,
                )
            else:
                book.event(
                    row,
                    RECHECK,
                    f"re-verification: {'every handle resolves' if all_ok else f'{len(bad)} handles do not resolve'}",
                    bad=len(bad),
                )
            if all_ok:
                if row.attention_kind == Attention.REGRESSION:
                    verification.repaired(book, row, "re-verification")
                return False
            if row.attention_kind == Attention.REGRESSION:
                return False  # already reported: one notification per regression, not one per check
            named = ", ".join(bad[:NAMED]) + (f" +{len(bad) - NAMED} more" if len(bad) > NAMED else "")
            reason = (
                f"regression: {len(bad)} handles no longer resolve to their own record ({named}); "
                f"see `hwf report {row.alma_set_id} --problems`; after the fix `hwf verify {row.alma_set_id}`"
            )
            book.attention(row, Attention.REGRESSION, reason)
            book.event(row, "regression", reason, mms_ids=list(bad[:100]))
            return True


def _pacer(
    gap: float, clock: Callable[[], datetime], sleep: Callable[[float], None], stop: _Stop
) -> Callable[[], None]:
    """One record every ``gap`` seconds (by the context's clock, so a test's fake clock works too)."""
    last: list[datetime | None] = [None]

    def pace() -> None:
        if stop.is_set():
            sleep(0)  # the worker's sleep raises its Stopped: the results so far are kept
        now = clock()
        if last[0] is not None:
            wait = (last[0] + timedelta(seconds=gap) - now).total_seconds()
            if wait > 0:
                sleep(wait)
        last[0] = clock()

    return pace
