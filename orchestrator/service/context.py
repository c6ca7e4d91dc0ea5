"""What every service module shares: the ``Context`` a command runs in, and finding a set by name or id.

The service modules are the only code that opens transactions, and none is open during a remote call (a slow
reply would hold SQLite's one write lock from every other hwf). Writes go through ``Context.ledger()``: it
opens the transaction, hands out the one writer of a set's state (``store.ledger.Ledger``), commits, then
sends the notifications the work queued.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from orchestrator.config import Config
from orchestrator.display import utc_stamp
from orchestrator.errors import BadInputError, LeaseHeldError
from orchestrator.service.notify import send_pending
from orchestrator.service.reporting import NullReporter, Reporter
from orchestrator.store.leases import LeaseKeeper, claim, default_owner, holder, release
from orchestrator.store.ledger import Identity, Ledger
from orchestrator.store.models import AlmaSet, utcnow

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
    def identity(self) -> Identity:
        """Who acts (``[operator] name`` or ``$HWF_OPERATOR``, else the OS user) on this process."""
        return Identity.of(self.config.operator, self.owner)

    @contextmanager
    def ledger(self) -> Iterator[Ledger]:
        """One write transaction and the writer of sets' state inside it; after the commit, the notifications
        the work queued are sent (outside any transaction)."""
        with self.sessions.begin() as session:
            book = Ledger(session, identity=self.identity, notify=self.config.notify, now=self.clock())
            yield book
        if book.queued:
            send_pending(self)

    @contextmanager
    def lease(self, set_id: int) -> Iterator[LeaseKeeper]:
        """Claim the set's lease, keep it renewed while the caller works, release it afterwards: one hwf
        process per set at a time.

        :raises LeaseHeldError: another live hwf process holds the set.
        """
        now = self.clock()
        with self.sessions.begin() as session:
            if not claim(session, set_id, self.owner, now, self.config.lease_seconds):
                owner, expires = holder(session, set_id)
                until = f" until {utc_stamp(expires)}" if expires else ""
                raise LeaseHeldError(f"another hwf process ({owner}) holds this set{until}; try again later")
        try:
            with LeaseKeeper(self.sessions, set_id, self.owner, self.config.lease_seconds, self.clock) as keeper:
                yield keeper
        finally:
            with self.sessions.begin() as session:
                release(session, set_id, self.owner)

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


def find_set(session: Session, ref: str) -> AlmaSet:
    """The set named by an Alma set id (digits) or local name. :raises BadInputError: unknown."""
    ref = ref.strip()
    row = session.scalar(select(AlmaSet).where(AlmaSet.alma_set_id == ref))
    if row is None:
        row = session.scalar(select(AlmaSet).where(AlmaSet.name == ref))
    if row is None:
        raise BadInputError(f"unknown set {ref!r}: not registered (see `hwf status`, or `hwf add ALMA_SET_ID`)")
    return row


def only_pattern(only: str | None) -> re.Pattern[str] | None:
    """The pattern of ``--only`` (a regular expression, ``*`` standing for any text, any case).

    :raises BadInputError: not a valid pattern (one line naming it)."""
    if not only:
        return None
    try:
        return re.compile(only.replace("*", ".*"), re.IGNORECASE)
    except re.error as exc:
        raise BadInputError(f"--only {only!r} is not a valid pattern: {exc}") from None


def require_match(session: Session, pattern: re.Pattern[str] | None, only: str | None) -> None:
    """``--only PATTERN`` must name at least one registered set. :raises BadInputError: none matches."""
    if pattern is None:
        return
    if not any(pattern.search(name) for name in session.scalars(select(AlmaSet.name))):
        raise BadInputError(f"no registered set's name matches --only {only!r} (see `hwf status`)")
