"""What every service module shares: the ``Context`` a command runs in and the audit helpers.

Service modules (``workflow``, ``jobs``, ``preflight``, ``verification``) are the only ones that
open transactions.
"""

from __future__ import annotations

import getpass
import logging
import os
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import event as sa_event
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from orchestrator.config import Config
from orchestrator.errors import BadInputError
from orchestrator.service.notify import NOTIFY, OUTBOX, queue_attention, queue_for_event, send_pending
from orchestrator.service.reporting import NullReporter, Reporter
from orchestrator.store.leases import default_owner
from orchestrator.store.models import AlmaSet, Event, utcnow

if TYPE_CHECKING:
    from orchestrator.alma.client import AlmaClient
    from orchestrator.resolver import Verifier

_events_log = logging.getLogger("orchestrator.events")
IDENTITY = "hwf_identity"  # Session.info key: the Identity that add_event stamps on every event


@dataclass(frozen=True)
class Identity:
    """Who acts (the operator's name, else the OS user) and the process acting: every event carries all three."""

    actor: str
    host: str
    pid: int | None

    @classmethod
    def of(cls, actor: str | None, owner: str | None = None) -> Identity:
        """``actor`` (else the OS user) on the process named by a lease ``owner`` (``host:pid``; default this one)."""
        host: str = socket.gethostname()
        pid: int | None = os.getpid()
        if owner:
            name, _, number = owner.rpartition(":")
            host, pid = (name, int(number)) if name and number.isdigit() else (owner, None)
        return cls(actor=actor or os_user(), host=host, pid=pid)


def os_user() -> str:
    """The OS user running hwf (``unknown`` when the system cannot say)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


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

    def __post_init__(self) -> None:
        # A session factory of this context's own (same engine), so every session it opens knows who acts:
        # add_event stamps actor, host and pid from it, and commits that queued a notification send it.
        kw = {k: v for k, v in self.sessions.kw.items() if k != "info"}
        info = {IDENTITY: self.identity, NOTIFY: self.config.notify}
        self.sessions = sessionmaker(class_=self.sessions.class_, info=info, **kw)
        sa_event.listen(self.sessions, "after_commit", self._after_commit)

    @property
    def identity(self) -> Identity:
        return Identity.of(self.config.operator, self.owner)

    def _after_commit(self, session: Session) -> None:
        if session.info.pop(OUTBOX, False):
            send_pending(self)

    @property
    def alma(self) -> AlmaClient:
        if self._alma is None:
            self._alma = self.alma_factory()
        return self._alma

    def close(self) -> None:
        """Send notifications still due, close the Alma client and release the database connections (a
        later use reconnects)."""
        if self.config.notify.urls:
            send_pending(self)
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
    """Append one audit event (inside the caller's transaction), stamped with who acts and where: the
    session's Identity (see Context), else this process and OS user. An ``actor`` given that is only the
    lease owner (``host:pid``, as older callers passed) does not replace the operator's name."""
    who = session.info.get(IDENTITY)
    if not isinstance(who, Identity):
        who = Identity.of(None)
    name = actor if actor and actor != f"{who.host}:{who.pid}" else who.actor
    session.add(
        Event(
            set_id=set_row.id,
            at=at,
            kind=kind,
            detail=detail,
            data=data or None,
            actor=name,
            host=who.host,
            pid=who.pid,
        )
    )
    fields = {"event": "audit", "kind": kind, "set": set_row.alma_set_id, "actor": name, "detail": detail}
    _events_log.info("%s %s: %s", set_row.alma_set_id, kind, detail, extra={"hwf": fields | _loggable(data)})
    queue_for_event(session, set_row, kind, detail, at, data)


def _loggable(data: dict[str, Any]) -> dict[str, Any]:
    """The event's data fields for the log line, without bulky lists (counters, alerts, record lists)."""
    return {k: v for k, v in data.items() if isinstance(v, str | int | float | bool) or v is None}


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
    if set_row.attention != reason or set_row.attention_kind != kind:
        queue_attention(session, set_row, kind, reason, now)  # one message per attention, not one per poll
    set_row.attention = reason
    set_row.attention_kind = kind
    set_row.waiting = None
    set_row.wait_until = None
    add_event(session, set_row, "attention", reason, at=now, attention_kind=kind)


def format_utc(at: datetime) -> str:
    """A moment for messages: ``2026-02-02 15:04:05 UTC``."""
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
