"""What every service module shares: the ``Context`` a command runs in and the audit helpers.

Service modules (``workflow``, ``jobs``, ``preflight``, ``verification``) are the only ones that
open transactions.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from orchestrator.config import Config
from orchestrator.errors import BadInputError
from orchestrator.service.reporting import NullReporter, Reporter
from orchestrator.store.leases import default_owner
from orchestrator.store.models import AlmaSet, Event, utcnow

if TYPE_CHECKING:
    from orchestrator.alma.client import AlmaClient
    from orchestrator.resolver import Verifier


@dataclass
class Context:
    """Everything a service call needs, built once by the CLI (or a test)."""

    config: Config
    sessions: sessionmaker[Session]
    alma_factory: Callable[[], AlmaClient]
    verifier_factory: Callable[[bool], Verifier]
    reporter: Reporter = field(default_factory=NullReporter)
    clock: Callable[[], datetime] = utcnow
    sleep: Callable[[float], None] = time.sleep
    owner: str = field(default_factory=default_owner)
    _alma: AlmaClient | None = None

    @property
    def alma(self) -> AlmaClient:
        if self._alma is None:
            self._alma = self.alma_factory()
        return self._alma

    def close(self) -> None:
        """Close the Alma client and release the database connections (a later use reconnects)."""
        if self._alma is not None:
            self._alma.close()
            self._alma = None
        bind = self.sessions.kw.get("bind")
        if bind is not None:
            bind.dispose()


# ---------------------------------------------------------------------------------------------
# Small helpers used by every service module


def add_event(
    session: Session,
    set_row: AlmaSet,
    kind: str,
    detail: str,
    *,
    at: datetime,
    actor: str | None = None,
    **data: Any,
) -> None:
    """Append one audit event (inside the caller's transaction)."""
    session.add(Event(set_id=set_row.id, at=at, kind=kind, detail=detail, data=data or None, actor=actor))


def find_set(session: Session, ref: str) -> AlmaSet:
    """The set named by an Alma set id (digits) or local name. :raises BadInputError: unknown."""
    ref = ref.strip()
    row = session.scalar(select(AlmaSet).where(AlmaSet.alma_set_id == ref))
    if row is None:
        row = session.scalar(select(AlmaSet).where(AlmaSet.name == ref))
    if row is None:
        raise BadInputError(f"unknown set {ref!r}: not registered (see `hwf status`, or `hwf add ALMA_SET_ID`)")
    return row


def require_match(session: Session, pattern: re.Pattern[str] | None, only: str | None) -> None:
    """``--only PATTERN`` must name at least one registered set. :raises BadInputError: none matches."""
    if pattern is None:
        return
    if not any(pattern.search(name) for name in session.scalars(select(AlmaSet.name))):
        raise BadInputError(f"no registered set's name matches --only {only!r} (see `hwf status`)")


def set_attention(session: Session, set_row: AlmaSet, kind: str, reason: str, now: datetime) -> None:
    set_row.attention = reason
    set_row.attention_kind = kind
    set_row.waiting = None
    set_row.wait_until = None
    add_event(session, set_row, "attention", reason, at=now, attention_kind=kind)


def format_utc(at: datetime) -> str:
    """A moment for messages: ``2026-02-02 15:04:05 UTC``."""
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
