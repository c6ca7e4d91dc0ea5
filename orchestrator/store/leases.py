"""Leases: one owner per set (and per integration batch) at a time, renewed while a process works, taken
over once expired, or at once from a process on this host that has died.

A claim is one conditional UPDATE, atomic on SQLite and PostgreSQL alike (on PostgreSQL a concurrent
claim waits for the row and re-checks the condition, so exactly one wins); several hosts split the sets.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from orchestrator.errors import LeaseHeldError
from orchestrator.store.models import AlmaSet, IntegrationBatch

# The rows a process can hold: a set, and an integration batch (its Alma set is made, and its run looked for,
# by one process at a time). Both carry ``lease_owner`` and ``lease_expires_at``.
Leased = type[AlmaSet] | type[IntegrationBatch]


def default_owner() -> str:
    """``host:pid``, so an operator can tell whose lease it is."""
    return f"{socket.gethostname()}:{os.getpid()}"


def try_claim(
    session: Session, set_id: int, owner: str, now: datetime, seconds: float, *, table: Leased = AlmaSet
) -> bool:
    """Take or renew the lease on a set (or another leased row). True if ``owner`` now holds it."""
    result = session.execute(
        update(table)
        .where(table.id == set_id)
        .where(
            or_(
                table.lease_owner.is_(None),
                table.lease_owner == owner,
                table.lease_expires_at.is_(None),
                table.lease_expires_at < now,
            )
        )
        .values(lease_owner=owner, lease_expires_at=now + timedelta(seconds=seconds))
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0) == 1)


def dead_local_owner(owner: str | None) -> bool:
    """True if ``owner`` ("host:pid") names a process on this host that no longer exists."""
    if not owner or ":" not in owner:
        return False
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def claim(session: Session, set_id: int, owner: str, now: datetime, seconds: float, *, table: Leased = AlmaSet) -> bool:
    """Like ``try_claim``, but also takes over at once from a process on this host that has died
    (a killed ``hwf``), instead of waiting for its lease to expire."""
    if try_claim(session, set_id, owner, now, seconds, table=table):
        return True
    current, _ = holder(session, set_id, table=table)
    if current == owner or not dead_local_owner(current):
        return False
    result = session.execute(
        update(table)
        .where(table.id == set_id, table.lease_owner == current)
        .values(lease_owner=owner, lease_expires_at=now + timedelta(seconds=seconds))
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0) == 1)


def release(session: Session, set_id: int, owner: str, *, table: Leased = AlmaSet) -> None:
    """Give the lease back if ``owner`` holds it."""
    session.execute(
        update(table)
        .where(table.id == set_id, table.lease_owner == owner)
        .values(lease_owner=None, lease_expires_at=None)
        .execution_options(synchronize_session=False)
    )


def holder(session: Session, set_id: int, *, table: Leased = AlmaSet) -> tuple[str | None, datetime | None]:
    row = session.execute(select(table.lease_owner, table.lease_expires_at).where(table.id == set_id)).one()
    return row[0], row[1]


def _free(row: AlmaSet, now: datetime) -> bool:
    return (
        row.lease_owner is None
        or row.lease_expires_at is None
        or row.lease_expires_at < now
        or dead_local_owner(row.lease_owner)
    )


def candidate_ids(session: Session, ids: list[int], now: datetime) -> list[int]:
    """The sets among ``ids`` whose lease is free (or held by a dead process on this host), oldest first.

    On PostgreSQL the rows stay locked (``FOR UPDATE``, in id order) for the rest of the caller's short
    transaction, so two schedulers never plan the same set at once. Not ``SKIP LOCKED``: a row another
    scheduler is planning at this instant is not held by anyone, and skipping it would make this process
    believe the set is held and leave it. Taking a set is the atomic conditional UPDATE of ``try_claim``.
    """
    stmt = select(AlmaSet).where(AlmaSet.id.in_(ids))
    if session.get_bind().dialect.name == "postgresql":
        # Re-read into the session (populate_existing): a row object the caller loaded before the lock may
        # be older than the row now locked, and writing it back would fail the version check.
        stmt = stmt.order_by(AlmaSet.id).with_for_update().execution_options(populate_existing=True)
    rows = sorted(session.scalars(stmt), key=lambda row: (row.created_at, row.id))
    return [row.id for row in rows if _free(row, now)]


class LeaseKeeper:
    """Renews a lease from a background thread while the main thread talks to Alma.

    If a renewal finds the lease taken (this process slept past its expiry), ``lost`` is set and the
    main loop stops before its next remote call.
    """

    def __init__(
        self,
        factory: sessionmaker[Session],
        set_id: int,
        owner: str,
        seconds: float,
        clock: Callable[[], datetime],
        *,
        table: Leased = AlmaSet,
    ) -> None:
        self._factory, self._set_id, self._owner, self._table = factory, set_id, owner, table
        self._seconds, self._clock = seconds, clock
        self._stop = threading.Event()
        self.lost = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{set_id}", daemon=True)

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def renew(self) -> None:
        """Renew now. :raises LeaseHeldError: the lease was lost."""
        with self._factory.begin() as session:
            if not try_claim(session, self._set_id, self._owner, self._clock(), self._seconds, table=self._table):
                owner, _ = holder(session, self._set_id, table=self._table)
                self.lost.set()
                raise LeaseHeldError(f"lost the lease on the {self._what} to {owner}; stopping")

    def check(self) -> None:
        """:raises LeaseHeldError: if a renewal found the lease taken."""
        if self.lost.is_set():
            raise LeaseHeldError(f"lost the lease on the {self._what} to another hwf process; stopping")

    @property
    def _what(self) -> str:
        return "set" if self._table is AlmaSet else "integration batch"

    def _run(self) -> None:
        interval = max(self._seconds / 3.0, 0.5)
        while not self._stop.wait(interval):
            try:
                self.renew()
            except LeaseHeldError:
                return
            except Exception:  # a transient database error: try again next interval
                continue
