"""Notifications through apprise, sent from the outbox table after the commit of the event they announce.

The messages are written by the ledger (``store.outbox``), in the transaction of the event itself, so a message
exists exactly when its event does. After that transaction commits, :func:`send_pending` sends it:

1. claim the row (a conditional UPDATE of ``sending_at``) and commit;
2. send it with apprise, outside any transaction;
3. commit ``sent_at`` (or, on failure, the error and a later retry, up to :data:`MAX_TRIES` sends).

A crash before 3 leaves a claimed row; any later hwf command sends it once :data:`STALE_SECONDS` have
passed, saying that an earlier send was interrupted (it may then arrive twice: never zero times). A failed
send is logged and never stops the work.

A target that takes the message and never answers never holds a command: one call waits at most
:data:`SEND_SECONDS` for its sends. A send still going then goes on in the background (the worker records it
when it ends; a command that ends first leaves it claimed, and a later hwf sends it again as above), and until
it ends this process sends nothing more: the rest waits in the outbox for a later call or a later hwf.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy import or_, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from orchestrator.config import Config, load_apprise
from orchestrator.store.models import Notification

_log = logging.getLogger(__name__)
MAX_TRIES = 5
STALE_SECONDS = 300.0
BATCH = 50
SEND_SECONDS = 5.0  # the longest one call waits for its sends

# Per database (its URL), in this process: the sends that outlived their call's wait and are still going.
_in_flight: dict[str, list[threading.Thread]] = {}


class Context(Protocol):
    """What sending needs of the service Context (kept structural: the context module imports this one)."""

    config: Config
    owner: str

    @property
    def sessions(self) -> sessionmaker[Session]: ...

    @property
    def clock(self) -> Callable[[], datetime]: ...


def send_pending(ctx: Context) -> int:
    """Send every message due (after its commit); return how many went out. Never raises for a failed send
    or a database problem: both are logged, and the rows stay for a later hwf."""
    urls = ctx.config.notify.urls
    if not urls:
        return 0
    going = _in_flight.setdefault(ctx.config.database_url, [])
    going[:] = [t for t in going if t.is_alive()]
    if going:
        return 0  # a target is still answering an earlier send: the rest waits for a later call
    deadline = time.monotonic() + SEND_SECONDS
    sent = 0
    try:
        for note_id in _due(ctx):
            if time.monotonic() >= deadline:
                break
            claimed = _claim(ctx, note_id)
            if claimed is None:
                continue
            went = _send_by(ctx, claimed, urls, deadline)
            if went is None:
                break
            sent += went
    except SQLAlchemyError as exc:
        _log.warning("notifications not sent now: database error %s", type(exc).__name__, extra={"hwf": {}})
    return sent


def _send_by(
    ctx: Context, claimed: tuple[int, int, str, str, str, bool], urls: tuple[str, ...], deadline: float
) -> int | None:
    """Send one claimed message, waiting for it until ``deadline``: 1 sent, 0 not, None still going (it
    goes on in the background; see the module doc)."""
    outcome: list[int] = []

    def work() -> None:
        try:
            outcome.append(_send(ctx, claimed, urls))
        except SQLAlchemyError as exc:  # the claim stays: a later hwf sends it again
            _log.warning("notification not recorded: database error %s", type(exc).__name__, extra={"hwf": {}})
            outcome.append(0)

    thread = threading.Thread(target=work, name=f"hwf-notify-{claimed[0]}", daemon=True)
    thread.start()
    thread.join(max(deadline - time.monotonic(), 0.0))
    if thread.is_alive():
        _in_flight.setdefault(ctx.config.database_url, []).append(thread)
        fields = {"event": "notify", "kind": claimed[2], "target": claimed[1], "ok": None, "error": "slow"}
        _log.warning(
            "notification still sending after %.0f s: left to finish in the background",
            SEND_SECONDS,
            extra={"hwf": fields},
        )
        return None
    return outcome[0] if outcome else 0


def _due(ctx: Context) -> list[int]:
    now = ctx.clock()
    stale = now - timedelta(seconds=STALE_SECONDS)
    with ctx.sessions() as session:
        return list(
            session.scalars(
                select(Notification.id)
                .where(Notification.sent_at.is_(None), Notification.tries < MAX_TRIES)
                .where(or_(Notification.sending_at.is_(None), Notification.sending_at < stale))
                .order_by(Notification.id)
                .limit(BATCH)
            )
        )


def _claim(ctx: Context, note_id: int) -> tuple[int, int, str, str, str, bool] | None:
    """Take one row for this process (one conditional UPDATE): (id, target, kind, title, body, resent)."""
    now = ctx.clock()
    stale = now - timedelta(seconds=STALE_SECONDS)
    with ctx.sessions.begin() as session:
        note = session.get(Notification, note_id)
        if note is None or note.sent_at is not None:
            return None
        resent = note.sending_at is not None
        taken = session.execute(
            update(Notification)
            .where(Notification.id == note_id, Notification.sent_at.is_(None))
            .where(or_(Notification.sending_at.is_(None), Notification.sending_at < stale))
            .values(sending_at=now, sending_by=ctx.owner, tries=Notification.tries + 1)
        )
        if taken.rowcount != 1:  # type: ignore[attr-defined]
            return None
        return note.id, note.target, note.kind, note.title, note.body, resent


def _send(ctx: Context, claimed: tuple[int, int, str, str, str, bool], urls: tuple[str, ...]) -> int:
    note_id, target, kind, title, body, resent = claimed
    if resent:
        body += "\n\n(Sent again: an earlier attempt to send this was interrupted; it may have arrived already.)"
    error = None
    if target >= len(urls):
        error = f"[notify] urls has no entry {target} any more"
    else:
        error = deliver(urls[target], title, body, kind)
    now = ctx.clock()
    with ctx.sessions.begin() as session:
        note = session.get_one(Notification, note_id)
        if error is None:
            note.sent_at = now
            note.last_error = None
        else:
            note.sending_at = None  # a later hwf tries again, up to MAX_TRIES sends
            note.last_error = error
    fields = {"event": "notify", "kind": kind, "target": target, "ok": error is None, "error": error}
    if error is None:
        _log.info("notification sent: %s", title, extra={"hwf": fields})
        return 1
    _log.warning("notification not sent (%s): %s", error, title, extra={"hwf": fields})
    return 0


def deliver(url: str, title: str, body: str, kind: str) -> str | None:
    """Send one message to one apprise URL; None when it went, else why not (never the URL: it may hold a
    token or a password)."""
    apprise = load_apprise()
    scheme = url.split(":", 1)[0]
    sender = apprise.Apprise()
    if not sender.add(url):
        return f"{scheme}:// URL not usable"
    notify_type = apprise.NotifyType.WARNING if kind in ("attention", "quota") else apprise.NotifyType.SUCCESS
    try:
        result = sender.notify(body=body, title=title, notify_type=notify_type, body_format=apprise.NotifyFormat.TEXT)
    except Exception as exc:  # a plugin's bug must not stop the work: the message is retried later
        return f"{scheme}:// {type(exc).__name__}"
    return None if result else f"{scheme}:// send failed"
