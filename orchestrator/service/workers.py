"""What ``hwf status`` shows of the workers (``service.worker``): running ones, and the last word of those that
stopped. The read side alone, so that ``hwf status`` does not load the worker's scheduler, the Alma client and
the verifier."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select

from orchestrator.display import utc_stamp
from orchestrator.service.context import Context
from orchestrator.store.models import Worker

STALE_WORKER = timedelta(minutes=10)  # a worker row not updated for this long is shown as gone


@dataclass(frozen=True)
class WorkerView:
    owner: str
    state: str
    reason: str | None
    wake_at: datetime | None
    heartbeat_at: datetime
    started_at: datetime
    gone: bool

    def text(self) -> str:
        if self.gone and self.state != "stopped":
            return f"Worker {self.owner}: not seen since {utc_stamp(self.heartbeat_at)} (stopped without saying)"
        what = self.state + (f": {self.reason}" if self.reason else "")
        if self.reason and self.reason.startswith(f"{self.state}:"):  # "stopped: SIGTERM ...", said once
            what = self.reason
        return f"Worker {self.owner} (since {utc_stamp(self.started_at)}): {what}"


def workers(ctx: Context) -> list[WorkerView]:
    """The workers ``hwf status`` shows: running ones, and the last word of those that stopped."""
    now = ctx.clock()
    with ctx.sessions() as session:
        rows = session.scalars(select(Worker).order_by(Worker.started_at)).all()
        return [
            WorkerView(
                w.owner,
                w.state,
                w.reason,
                w.wake_at,
                w.heartbeat_at,
                w.started_at,
                gone=w.heartbeat_at < now - STALE_WORKER - _longest_sleep(w, now),
            )
            for w in rows
        ]


def _longest_sleep(w: Worker, now: datetime) -> timedelta:
    if w.wake_at is None or w.state != "waiting":
        return timedelta(0)
    return max(w.wake_at - w.heartbeat_at, timedelta(0))
