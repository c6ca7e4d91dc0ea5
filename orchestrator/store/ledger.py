"""The one owner of a set's state.

A :class:`Ledger` is the only code that writes a set's status fields (``attention`` and its kind, what the
set waits for and until when), builds attempts (one token rule), fires a step's transition, and writes the
audit events and the notifications they call for. It works inside the caller's transaction and never
commits: the service opens the transaction (``Context.ledger()``), does its work through the ledger, and
after the commit sends what the ledger queued.

Every event carries who acted (the operator's name, else the OS user) and the process that wrote it
(host and pid), from the :class:`Identity` the ledger was given.
"""

from __future__ import annotations

import getpass
import logging
import os
import secrets
import socket
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from orchestrator.config import NotifyConfig
from orchestrator.domain.attention import Attention
from orchestrator.domain.machine import fire
from orchestrator.domain.steps import Stage, Step, StepFacts
from orchestrator.logs import event_level
from orchestrator.store.models import AlmaSet, Attempt, AttemptState, Event
from orchestrator.store.outbox import queue_attention, queue_person_needed, queue_verified

_events_log = logging.getLogger("orchestrator.events")


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


def new_token(kind: str = "hwf") -> str:
    """A unique attempt token: ``hwf-<12 hex>`` for a submission (it travels in the job's name so a lost
    reply can be found again), other kinds for attempts nothing is submitted for (``found``, ``adopted``,
    ``not-needed``, ``operator``)."""
    return f"{kind}-{secrets.token_hex(6)}"


class Ledger:
    """The writer of sets' status fields, attempts and events, inside one transaction (the caller's)."""

    def __init__(self, session: Session, *, identity: Identity, notify: NotifyConfig, now: datetime) -> None:
        self.session = session
        self.identity = identity
        self.notify = notify
        self.now = now
        self.queued = False  # a notification was queued: send it once the transaction has committed

    # -- reading what is written here -------------------------------------------------------------------

    def set(self, set_id: int) -> AlmaSet:
        """The set's row (it must exist)."""
        return self.session.get_one(AlmaSet, set_id)

    def attempt(self, attempt_id: int) -> Attempt:
        return self.session.get_one(Attempt, attempt_id)

    def latest_attempt(self, set_id: int, step: Step) -> Attempt | None:
        """The set's newest attempt at ``step``, if any."""
        return latest_attempt(self.session, set_id, step)

    # -- events -------------------------------------------------------------------------------------------

    def event(self, row: AlmaSet, kind: str, detail: str, *, at: datetime | None = None, **data: Any) -> None:
        """Append one audit event, stamped with who acts and where, and log it."""
        who = self.identity
        self.session.add(
            Event(
                set_id=row.id,
                at=at or self.now,
                kind=kind,
                detail=detail,
                data=data or None,
                actor=who.actor,
                host=who.host,
                pid=who.pid,
            )
        )
        fields = {"event": "audit", "kind": kind, "set": row.alma_set_id, "actor": who.actor, "detail": detail}
        level = event_level(kind, data.get("attention_kind"))
        _events_log.log(level, "%s %s: %s", row.alma_set_id, kind, detail, extra={"hwf": fields | _loggable(data)})

    # -- the status fields --------------------------------------------------------------------------------

    def attention(self, row: AlmaSet, kind: Attention, reason: str, *, at: datetime | None = None) -> None:
        """Stop the set: it needs a person (one message per attention, not one per poll)."""
        when = at or self.now
        if row.attention != reason or row.attention_kind != kind:
            self.queued |= queue_attention(self.session, self.notify, row, kind, reason, when)
        row.attention = reason
        row.attention_kind = kind.value
        row.waiting = None
        row.wait_until = None
        self.event(row, "attention", reason, at=when, attention_kind=kind.value)

    def clear_attention(self, row: AlmaSet) -> str | None:
        """Let the set go on (the caller writes the event saying why); returns the reason it had."""
        previous = row.attention
        row.attention = None
        row.attention_kind = None
        return previous

    def wait(
        self,
        row: AlmaSet,
        reason: str,
        until: datetime | None,
        *,
        same_as: str | None = None,
        at: datetime | None = None,
    ) -> None:
        """The set waits for ``reason`` until ``until``; a ``waiting`` event when what it waits for changes
        (``same_as``: a prefix that counts as the same wait, e.g. every "waiting for a job slot")."""
        known = row.waiting or ""
        if not (known.startswith(same_as) if same_as else known == reason):
            self.event(row, "waiting", reason, at=at)
        row.waiting = reason
        row.wait_until = until

    def show_waiting(self, row: AlmaSet, reason: str) -> None:
        """Say what the set waits for (a running job, a settle time), without a new wake time or event."""
        if row.waiting != reason:
            row.waiting = reason

    def stop_waiting(self, row: AlmaSet) -> None:
        row.waiting = None
        row.wait_until = None

    def resume(self, row: AlmaSet) -> str | None:
        """Clear attention and waiting alike (``hwf retry``, a quota reset); returns what the set had."""
        previous = row.attention or row.waiting
        self.clear_attention(row)
        self.stop_waiting(row)
        return previous

    def person_needed(self, key: str, title: str, body: str) -> None:
        """Tell the operator, once per ``key``, that a step waits for them in Alma (a notification)."""
        self.queued |= queue_person_needed(self.session, self.notify, key, title, body, self.now)

    # -- attempts -----------------------------------------------------------------------------------------

    def new_attempt(
        self, row: AlmaSet, step: Step, state: AttemptState, *, token: str | None = None, **fields: Any
    ) -> Attempt:
        """The set's next attempt at ``step`` (numbered after the last), flushed so it has an id."""
        attempt = Attempt(
            set_id=row.id,
            step=step.value,
            number=next_attempt_number(self.session, row.id, step),
            token=token or new_token(),
            state=state,
            **({"begun_at": self.now} | fields),
        )
        self.session.add(attempt)
        self.session.flush()
        return attempt

    # -- transitions --------------------------------------------------------------------------------------

    def fire(self, row: AlmaSet, step: Step, facts: StepFacts, *, how: str = "", **data: Any) -> bool:
        """Fire ``step``'s trigger on the set and, if it moved, write its ``transition`` event in this
        transaction (and the notifications a verified set calls for). ``how`` is added to the event's text."""
        before = row.stage
        if not fire(row, step, facts):
            return False
        self.stop_waiting(row)
        moved: dict[str, Any] = {"from": before.value, "to": row.stage.value, "trigger": step.value}
        self.event(row, "transition", f"{before.value} -> {row.stage.value} ({step.value}{how})", **moved, **data)
        if row.stage is Stage.VERIFIED:
            self.queued |= queue_verified(self.session, self.notify, row, self.now)
        return True


def latest_attempt(session: Session, set_id: int, step: Step) -> Attempt | None:
    """The set's newest attempt at ``step``, if any."""
    return session.scalar(
        select(Attempt).where(Attempt.set_id == set_id, Attempt.step == step.value).order_by(Attempt.number.desc())
    )


def next_attempt_number(session: Session, set_id: int, step: Step) -> int:
    """The number the set's next attempt at ``step`` gets (1 for the first)."""
    latest = session.scalar(
        select(func.max(Attempt.number)).where(Attempt.set_id == set_id, Attempt.step == step.value)
    )
    return int(latest or 0) + 1


def _loggable(data: dict[str, Any]) -> dict[str, Any]:
    """The event's data fields for the log line, without bulky lists (counters, alerts, record lists)."""
    return {k: v for k, v in data.items() if isinstance(v, str | int | float | bool) or v is None}
