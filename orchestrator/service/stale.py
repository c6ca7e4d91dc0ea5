"""When the worker verifies again the handles of verified sets that the public proxy still served from its cache.

A record verified STALE_CACHE is right at the primary handle server while the public proxy (what a patron's
browser asks) still serves an older cached value, until ``records.stale_until``. Such a set is verified but not
done: the worker (``service.recheck.stale_due``) verifies those records again just after the last of them
expires. This module only reads when that will be (``hwf status``, ``hwf overview`` and the dashboard show it);
it stays light, so that the read commands do not load the verifier.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from orchestrator.display import iso_z, utc_stamp
from orchestrator.domain.steps import Stage
from orchestrator.domain.wording import plural
from orchestrator.store.models import AlmaSet, Record

# Just after the expiry the proxy gave: its cached value is gone by then.
MARGIN = timedelta(minutes=1)
# A handle still stale after the expiry its reply implied (a proxy keeping values longer than their TTL) is asked
# again no sooner than this after its last check: never a re-check on every pass of the worker.
MIN_GAP = timedelta(hours=1)


@dataclass(frozen=True)
class StaleRecheck:
    """A verified set's handles stale in the public cache: how many, and when the worker checks them again."""

    set_id: int
    set: str  # the Alma set id, as people name the set
    handles: int
    at: datetime

    def phrase(self) -> str:
        """``re-check of 12 stale handles at 2026-03-01 14:05 UTC``."""
        return f"re-check of {plural(self.handles, 'stale handle')} at {utc_stamp(self.at, seconds=False)}"

    def as_json(self) -> dict[str, Any]:
        return {"set": self.set, "handles": self.handles, "at": iso_z(self.at), "phrase": self.phrase()}


def stale_rechecks(session: Session, set_id: int | None = None) -> dict[int, StaleRecheck]:
    """The pending re-checks of stale handles, per verified set (by its database id): one set's when
        ``set_id`` is given. The time is just after the latest expiry among the set's stale records (and at least
    ``MIN_GAP`` after their last check)."""
    stmt = (
        select(
            Record.set_id, AlmaSet.alma_set_id, func.count(), func.max(Record.stale_until), func.max(Record.verified_at)
        )
        .join(AlmaSet, AlmaSet.id == Record.set_id)
        .where(Record.stale_until.is_not(None), Record.excluded.is_(False), AlmaSet.stage == Stage.VERIFIED)
        .group_by(Record.set_id, AlmaSet.alma_set_id)
    )
    if set_id is not None:
        stmt = stmt.where(Record.set_id == set_id)
    return {
        sid: StaleRecheck(sid, alma_id, count, max(until, checked + MIN_GAP if checked else until) + MARGIN)
        for sid, alma_id, count, until, checked in session.execute(stmt)
        if until is not None
    }
