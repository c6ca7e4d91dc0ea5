"""The outbox of notifications: the messages an event calls for, written in the event's own transaction.

An event that deserves a message (a set needs attention, Alma's daily quota is spent, a set is verified when
``[notify] on_verified``, every set is verified) adds one ``notifications`` row per configured URL in the same
transaction as the event, so the message exists exactly when the event does. Sending them, after the commit,
is ``service.notify``'s work. The quota message is keyed by day and the "done" message by the sets it covers,
so many sets or many polls give one message.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from orchestrator.config import NotifyConfig
from orchestrator.domain.attention import Attention
from orchestrator.domain.steps import Stage
from orchestrator.store.models import AlmaSet, Event, Notification


def queue_attention(session: Session, notify: NotifyConfig, row: AlmaSet, kind: str, reason: str, at: datetime) -> bool:
    """A set entered attention (not: was told the same reason again): queue one message. True if queued."""
    if not notify.urls:
        return False
    if kind == Attention.QUOTA:
        if not notify.on_quota:
            return False
        title = "hwf: Alma's daily API quota is spent"
        body = f"{reason}\n\nNo new work starts until the quota resets. First seen on set {row.alma_set_id}."
        return _queue(session, notify, f"quota:{at.date().isoformat()}", "quota", None, title, body, at)
    if not notify.on_attention:
        return False
    title = f"hwf: set {row.alma_set_id} ({_short(row.name)}) needs attention"
    body = f"{reason}\n\nState: {row.stage.value}. Details: hwf status {row.alma_set_id}{_page(notify, row)}"
    if _told_already(session, row.id, title, body):
        return False
    return _queue(session, notify, f"attention:{row.id}:{uuid.uuid4().hex}", "attention", row.id, title, body, at)


def _told_already(session: Session, set_id: int, title: str, body: str) -> bool:
    """The set's last attention message said exactly this, and the set has not moved since: it is the same
    attention raised again (``hwf verify`` clears a failed verification and raises it again when the same
    handles still fail), not a new one. One message per attention, however often it is raised again."""
    last = session.execute(
        select(Notification.title, Notification.body, Notification.created_at)
        .where(Notification.set_id == set_id, Notification.kind == "attention")
        .order_by(Notification.id.desc())
        .limit(1)
    ).first()
    if last is None or (last.title, last.body) != (title, body):
        return False
    moved = session.scalar(
        select(Event.id).where(Event.set_id == set_id, Event.kind == "transition", Event.at > last.created_at).limit(1)
    )
    return moved is None


def _page(notify: NotifyConfig, row: AlmaSet | None) -> str:
    """The link to the set's dashboard page (or the overview), on a line of its own, when ``[serve] public_url``
    says where the dashboard is."""
    if not notify.public_url:
        return ""
    return f"\nDashboard: {notify.public_url}" + (f"/sets/{row.alma_set_id}" if row is not None else "/")


def queue_verified(session: Session, notify: NotifyConfig, row: AlmaSet, at: datetime) -> bool:
    """A set was verified: its own message (``on_verified``) and, if it was the last, the migration's."""
    if not notify.urls:
        return False
    queued = False
    if notify.on_verified:
        title = f"hwf: set {row.alma_set_id} ({_short(row.name)}) is verified"
        body = f"Every included record's handle resolves to its own Primo page ({row.record_count} records)." + _page(
            notify, row
        )
        queued |= _queue(session, notify, f"verified:{row.id}:{uuid.uuid4().hex}", "verified", row.id, title, body, at)
    if notify.on_done:
        left = session.scalar(
            select(func.count()).select_from(AlmaSet).where(AlmaSet.stage != Stage.VERIFIED, AlmaSet.id != row.id)
        )
        if left == 0:
            total, newest = session.execute(select(func.count(), func.max(AlmaSet.id)).select_from(AlmaSet)).one()
            title = f"hwf: the migration is done: all {total} sets are verified"
            body = f"The last set verified was {row.alma_set_id} ({row.name}). See hwf status.{_page(notify, None)}"
            queued |= _queue(session, notify, f"done:{total}:{newest}", "done", None, title, body, at)
    return queued


def queue_person_needed(session: Session, notify: NotifyConfig, key: str, title: str, body: str, at: datetime) -> bool:
    """A step waits for a person in Alma (an integration batch to run, ``on_batch``): one message per ``key``."""
    if not notify.urls or not notify.on_batch:
        return False
    return _queue(session, notify, key, "batch", None, title, body, at)


def _short(name: str, width: int = 60) -> str:
    return name if len(name) <= width else name[: width - 1] + "…"


def _queue(
    session: Session,
    notify: NotifyConfig,
    key: str,
    kind: str,
    set_id: int | None,
    title: str,
    body: str,
    at: datetime,
) -> bool:
    if session.scalar(select(Notification.id).where(Notification.key == key).limit(1)) is not None:
        return False  # already queued (the quota of one day, one "done")
    for target in range(len(notify.urls)):
        session.add(
            Notification(key=key, target=target, kind=kind, set_id=set_id, title=title, body=body, created_at=at)
        )
    return True
