"""The open integration batches as the screens show them (manual integration): one itemized Alma set on which a
person presses Run of the handle integration profile once for all its sets, with the clicks while it waits."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select

from orchestrator.display import iso_z
from orchestrator.domain.clicks import profile_clicks
from orchestrator.service.context import Context
from orchestrator.store.models import IntegrationBatch

OPEN_BATCHES = ("creating", "announced", "bound")  # integration batches not finished


@dataclass(frozen=True)
class BatchItem:
    """An open integration batch: one itemized Alma set on which a person presses Run of the handle integration
    profile once for all its sets."""

    number: int
    name: str
    alma_set_id: str | None
    state: str  # creating, announced (waits for a person), bound (its run goes on)
    sets: int
    records: int
    created_at: datetime
    announced_at: datetime | None
    instance_id: str | None
    status: str | None
    progress: float | None
    clicks: str | None  # what the person does in Alma, while the batch waits for them

    @property
    def needs_person(self) -> bool:
        return self.state == "announced"

    def as_json(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "name": self.name,
            "alma_set_id": self.alma_set_id,
            "state": self.state,
            "sets": self.sets,
            "records": self.records,
            "created_at": iso_z(self.created_at),
            "announced_at": iso_z(self.announced_at),
            "instance_id": self.instance_id,
            "status": self.status,
            "progress": self.progress,
            "needs_person": self.needs_person,
            "clicks": self.clicks,
        }


def batches(ctx: Context) -> tuple[BatchItem, ...]:
    """The open integration batches (manual integration), oldest first."""
    with ctx.sessions() as session:
        return open_batches(
            list(
                session.scalars(
                    select(IntegrationBatch)
                    .where(IntegrationBatch.state.in_(OPEN_BATCHES))
                    .order_by(IntegrationBatch.number)
                )
            )
        )


def open_batches(rows: list[Any]) -> tuple[BatchItem, ...]:
    """The open integration batches, with the clicks of those that wait for a person."""
    return tuple(
        BatchItem(
            number=b.number,
            name=b.name,
            alma_set_id=b.alma_set_id,
            state=b.state,
            sets=b.sets,
            records=b.records,
            created_at=b.created_at,
            announced_at=b.announced_at,
            instance_id=b.instance_id,
            status=b.status,
            progress=b.progress,
            clicks=profile_clicks(b.name) if b.state == "announced" else None,
        )
        for b in rows
    )
