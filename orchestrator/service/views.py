"""The read side: where sets stand, their audit trail and their attempts, read in plain columns and
short keyset-paged transactions (10,000 sets or 100,000 events stay well under a second)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from json.encoder import encode_basestring as _quote
from typing import Any, Protocol

from sqlalchemy import String, Text, cast, func, select, type_coerce
from sqlalchemy.orm import Session

from orchestrator.display import iso_z
from orchestrator.service.context import Context, find_set
from orchestrator.service.stale import stale_rechecks
from orchestrator.store.models import AlmaSet, Attempt, AttemptState, Event, IntegrationBatch, Record


class Timed(Protocol):
    """What happens next to a set and when (``nextstep.Next``)."""

    @property
    def at(self) -> datetime | None: ...

    @property
    def what(self) -> str: ...

    @property
    def when(self) -> str: ...

    def as_json(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class SetSummary:
    set: str
    name: str
    state: str
    attention: str | None
    records: int
    waiting: str | None = None
    wait_until: datetime | None = None
    excluded: int = 0
    lease_owner: str | None = None
    step: str | None = None
    instance_id: str | None = None
    job_status: str | None = None
    progress: float | None = None
    last_checked: datetime | None = None  # when every handle was last verified OK
    next: Timed | None = None  # what happens next and when (``nextstep``; filled by ``overview.status``)

    def as_json(self) -> dict[str, Any]:
        return {
            "set": self.set,
            "name": self.name,
            "state": self.state,
            "attention": self.attention,
            "records": self.records,
            "excluded": self.excluded,
            "waiting": self.waiting,
            "wait_until": iso_z(self.wait_until),
            "lease_owner": self.lease_owner,
            "step": self.step,
            "instance_id": self.instance_id,
            "job_status": self.job_status,
            "progress": self.progress,
            "last_checked": iso_z(self.last_checked),
            "next": self.next.as_json() if self.next is not None else None,
        }


# ---------------------------------------------------------------------------------------------
# status, history


def _summaries(session: Session, only: int | None = None, nexts: Mapping[str, Timed] | None = None) -> list[SetSummary]:
    """Plain column reads (no ORM objects) and one grouped query per table: 10,000 sets in a blink."""
    sets = select(
        AlmaSet.id,
        AlmaSet.alma_set_id,
        AlmaSet.name,
        AlmaSet.stage,
        AlmaSet.attention,
        AlmaSet.record_count,
        AlmaSet.waiting,
        AlmaSet.wait_until,
        AlmaSet.lease_owner,
        AlmaSet.last_checked,
    ).order_by(AlmaSet.created_at, AlmaSet.id)
    excluded_q = select(Record.set_id, func.count()).where(Record.excluded).group_by(Record.set_id)
    newest = select(func.max(Attempt.id)).group_by(Attempt.set_id)
    if only is not None:
        sets = sets.where(AlmaSet.id == only)
        excluded_q = excluded_q.where(Record.set_id == only)
        newest = newest.where(Attempt.set_id == only)
    excluded: dict[int, int] = {row[0]: row[1] for row in session.execute(excluded_q)}
    stale = stale_rechecks(session, only)  # verified sets whose stale handles the worker checks again
    active = {
        row.set_id: row
        for row in session.execute(
            select(Attempt.set_id, Attempt.step, Attempt.instance_id, Attempt.status, Attempt.progress).where(
                Attempt.id.in_(newest.scalar_subquery()),
                Attempt.state.in_([AttemptState.SUBMITTING, AttemptState.SUBMITTED]),
            )
        )
    }
    out = []
    for r in session.execute(sets):
        a = active.get(r.id)
        waiting, wait_until = r.waiting, r.wait_until
        if r.id in stale and not waiting:
            waiting, wait_until = stale[r.id].phrase(), stale[r.id].at
        out.append(
            SetSummary(
                set=r.alma_set_id,
                name=r.name,
                state=r.stage.value,
                attention=r.attention,
                records=r.record_count,
                waiting=waiting,
                wait_until=wait_until,
                excluded=excluded.get(r.id, 0),
                lease_owner=r.lease_owner,
                step=a.step if a else None,
                instance_id=a.instance_id if a else None,
                job_status=a.status if a else None,
                progress=a.progress if a else None,
                last_checked=r.last_checked,
                next=nexts.get(r.alma_set_id) if nexts is not None else None,
            )
        )
    return out


def status(
    ctx: Context, ref: str | None = None, nexts: Callable[[Session], Mapping[str, Timed]] | None = None
) -> list[SetSummary]:
    """Where each set stands (or one set); ``nexts``: each set's next thing, read in the same transaction."""
    with ctx.sessions() as session:
        only = find_set(session, ref).id if ref is not None else None
        return _summaries(session, only, nexts(session) if nexts is not None else None)


@dataclass(frozen=True)
class EventView:
    """One audit event; ``raw_data`` is the stored JSON text, decoded only when asked for; ``at`` is UTC
    (text from SQLite, a datetime from PostgreSQL: use ``at_utc``)."""

    at: datetime | str
    kind: str
    detail: str
    actor: str | None
    raw_data: str | None = None
    host: str | None = None
    pid: int | None = None

    @property
    def data(self) -> dict[str, Any] | None:
        value = json.loads(self.raw_data) if self.raw_data else None
        return value if isinstance(value, dict) else None

    @property
    def at_utc(self) -> datetime:
        at = datetime.fromisoformat(self.at) if isinstance(self.at, str) else self.at
        return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)

    def _base(self) -> dict[str, Any]:
        out: dict[str, Any] = {"at": self.at_text(), "kind": self.kind}
        out["detail"] = self.detail
        out |= {"actor": self.actor, "host": self.host, "pid": self.pid}
        return out

    def who(self) -> str:
        """``by ACTOR on HOST pid PID`` for the readable history (what older rows do not know is left out)."""
        parts = [f"by {self.actor}"] if self.actor else []
        if self.host:
            parts.append(f"on {self.host}" + (f" pid {self.pid}" if self.pid is not None else ""))
        return " ".join(parts)

    def as_json(self) -> dict[str, Any]:
        out = self._base()
        for key, value in (self.data or {}).items():
            out.setdefault(key, value)
        return out

    def at_text(self) -> str:
        """ISO-8601 UTC with Z; from SQLite's stored text without parsing it."""
        if isinstance(self.at, str) and "+" not in self.at[10:]:
            return self.at.replace(" ", "T", 1) + "Z"
        return iso_z(self.at_utc) or ""

    def json_text(self) -> str:
        """``as_json`` serialised, without decoding the stored data: its members are spliced in (the
        event's own keys, at/kind/detail/actor/host/pid, are never data keys: ``add_event`` takes them apart)."""
        text = f'{{"at": "{self.at_text()}", "kind": {_quote(self.kind)}, "detail": {_quote(self.detail)}'
        text += f', "actor": {_quote(self.actor) if self.actor is not None else "null"}'
        text += f', "host": {_quote(self.host) if self.host is not None else "null"}'
        text += f', "pid": {self.pid if self.pid is not None else "null"}'
        raw = (self.raw_data or "").strip()
        if len(raw) > 2 and raw.startswith("{"):
            return text + ", " + raw[1:]
        return text + "}"


def history(ctx: Context, ref: str, page: int = 5000) -> Iterator[EventView]:
    """The audit trail of a set, oldest first, streamed in keyset pages of short transactions."""
    with ctx.sessions() as session:
        set_id = find_set(session, ref).id
    raw = cast(Event.data, Text)
    # SQLite keeps the time as text: hand it over as is (EventView.at_utc parses it when used); typed
    # conversion of every row would cost more than the query. PostgreSQL's driver gives datetimes.
    at: Any = type_coerce(Event.at, String) if ctx.sessions.kw["bind"].dialect.name == "sqlite" else Event.at
    last = 0
    while True:
        with ctx.sessions() as session:
            rows = session.execute(
                select(Event.id, at, Event.kind, Event.detail, Event.actor, raw, Event.host, Event.pid)
                .where(Event.set_id == set_id, Event.id > last)
                .order_by(Event.id)
                .limit(page)
            ).all()
        if not rows:
            return
        last = rows[-1][0]
        for e in rows:
            yield EventView(at=e[1], kind=e[2], detail=e[3], actor=e[4], raw_data=e[5], host=e[6], pid=e[7])


@dataclass(frozen=True)
class AttemptView:
    step: str
    number: int
    state: str
    job_id: str | None
    instance_id: str | None
    status: str | None
    counters: list[Any] | None
    begun_at: datetime  # hwf committed the attempt (before the POST)
    ended_at: datetime | None  # hwf read the run's end
    note: str | None

    def as_json(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "attempt": self.number,
            "state": self.state,
            "job_id": self.job_id,
            "instance_id": self.instance_id,
            "status": self.status,
            "counters": self.counters or [],
            "started_at": iso_z(self.begun_at),
            "finished_at": iso_z(self.ended_at),
            "seconds": (self.ended_at - self.begun_at).total_seconds() if self.ended_at else None,
            "note": self.note,
        }


def attempts(ctx: Context, ref: str) -> list[AttemptView]:
    """Every submission of every step of a set, in order."""
    with ctx.sessions() as session:
        set_id = find_set(session, ref).id
        rows = session.execute(
            select(Attempt, IntegrationBatch.job_id, IntegrationBatch.instance_id, IntegrationBatch.number)
            .outerjoin(IntegrationBatch, IntegrationBatch.id == Attempt.batch_id)
            .where(Attempt.set_id == set_id)
            .order_by(Attempt.id)
        ).all()
        return [
            AttemptView(
                step=a.step,
                number=a.number,
                state=a.state.value,
                job_id=a.job_id or batch_job,  # an integration batch's run is each of its sets' run
                instance_id=a.instance_id or batch_instance,
                status=a.status,
                counters=a.counters,
                begun_at=a.begun_at,
                ended_at=a.ended_at,
                note=a.note or (f"integration batch {batch}" if batch is not None else None),
            )
            for a, batch_job, batch_instance, batch in rows
        ]
