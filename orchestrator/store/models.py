"""SQLAlchemy 2 models: sets, attempts, records, events (append-only), backups, runs of set creation.

Nothing here commits: the service opens the transactions; ``store.ledger`` is the one writer of a set's
status fields, attempts and events.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Enum,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from orchestrator.domain.steps import Stage

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    """Now, timezone-aware UTC: the default clock of rows and of the service context."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC) if dialect.name != "sqlite" else value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON(), list[Any]: JSON()}


class AttemptState(enum.Enum):
    """Where one submission of a step stands. An attempt is committed before its POST, so a crash between the
    two leaves a ``submitting`` attempt that is reconciled by its token, never submitted again blindly."""

    SUBMITTING = "submitting"  # attempt committed, POST not known to have succeeded
    SUBMITTED = "submitted"  # instance id known, job not finished
    FINISHED = "finished"  # terminal status recorded
    NOT_NEEDED = "not_needed"  # step skipped by rule (e.g. no record needs the copy job)
    ABANDONED = "abandoned"  # the POST never reached Alma (reconciled: no instance) or was refused
    WAITING_OPERATOR = "waiting_operator"  # a person was told what to run in Alma: waiting to find that run
    QUEUED = "queued"  # manual integration: waiting for the next integration batch to be formed


RAW_REPLY_CAP = 1_000_000  # bytes of a finished job instance's reply kept as evidence (``Attempt.raw_reply``)

# Where an attempt's run came from: hwf submitted it through the API; found in Alma's history before a first
# submission (a lost database); adopted by `hwf add --adopt`; a person's run hwf bound (manual steps,
# `hwf confirm`); or no run at all (a step not needed).
ORIGINS = ("hwf", "found", "adopted", "operator", "skipped")


def _enum(cls: type[enum.Enum], name: str) -> Enum:
    return Enum(cls, name=name, native_enum=False, length=32, values_callable=lambda e: [m.value for m in e])


class AlmaSet(Base):
    """One Alma set driven through the workflow. ``stage`` is the state machine's state."""

    __tablename__ = "sets"

    id: Mapped[int] = mapped_column(primary_key=True)
    alma_set_id: Mapped[str] = mapped_column(String(40), unique=True)
    name: Mapped[str] = mapped_column(String(255))
    stage: Mapped[Stage] = mapped_column("state", _enum(Stage, "stage"), default=Stage.CREATED)
    attention: Mapped[str | None] = mapped_column(Text)
    attention_kind: Mapped[str | None] = mapped_column(String(32))  # job, records, verify, quota, reconcile
    waiting: Mapped[str | None] = mapped_column(Text)  # what it waits for (job, settle time, quota)
    wait_until: Mapped[datetime | None] = mapped_column()
    lease_owner: Mapped[str | None] = mapped_column(String(255))
    lease_expires_at: Mapped[datetime | None] = mapped_column()
    record_count: Mapped[int] = mapped_column(Integer, default=0)
    alma_type: Mapped[str | None] = mapped_column(String(16))  # ITEMIZED or LOGICAL, as Alma said at `hwf add`
    source_set: Mapped[str | None] = mapped_column(String(40))  # the LOGICAL set this set is a snapshot of
    made_by_hwf: Mapped[bool] = mapped_column(Boolean, default=False)  # hwf created the Alma set (CSV, snapshot)
    last_checked: Mapped[datetime | None] = mapped_column()  # when every handle was last verified OK
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    attempts: Mapped[list[Attempt]] = relationship(back_populates="set", order_by="Attempt.id")

    __mapper_args__ = {"version_id_col": version}


class Attempt(Base):
    """One submission of one step's Alma job, committed *before* the POST (see ``AttemptState``)."""

    __tablename__ = "attempts"
    __table_args__ = (
        UniqueConstraint("set_id", "step", "number", name="uq_attempts_set_step_number"),
        UniqueConstraint("job_id", "instance_id", name="uq_attempts_job_instance"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    set_id: Mapped[int] = mapped_column(ForeignKey("sets.id", ondelete="CASCADE"), index=True)
    step: Mapped[str] = mapped_column(String(32))
    number: Mapped[int] = mapped_column(Integer)
    token: Mapped[str] = mapped_column(String(64), unique=True)
    job_id: Mapped[str | None] = mapped_column(String(64))
    job_name: Mapped[str | None] = mapped_column(String(255))
    instance_id: Mapped[str | None] = mapped_column(String(64))
    state: Mapped[AttemptState] = mapped_column(_enum(AttemptState, "attempt_state"))
    origin: Mapped[str] = mapped_column(String(16), default="hwf")  # see ORIGINS
    batch_id: Mapped[int | None] = mapped_column(ForeignKey("integration_batches.id"), index=True)
    seen_before: Mapped[list[Any] | None] = mapped_column()  # a step run by hand: the job's runs before hwf asked
    status: Mapped[str | None] = mapped_column(String(40))  # Alma systemJobStatus
    progress: Mapped[float | None] = mapped_column()
    counters: Mapped[list[Any] | None] = mapped_column()
    alerts: Mapped[list[Any] | None] = mapped_column()
    note: Mapped[str | None] = mapped_column(Text)
    # hwf's clock: when the attempt was committed (before any POST), when hwf learned its instance id (the
    # reply, a reconciliation, an adoption), and when hwf read the run's end.
    begun_at: Mapped[datetime] = mapped_column(default=utcnow)
    submitted_at: Mapped[datetime | None] = mapped_column()
    ended_at: Mapped[datetime | None] = mapped_column()
    # Alma's clock, as the instance reports it (null when it does not say).
    alma_submitted_at: Mapped[datetime | None] = mapped_column()
    alma_started_at: Mapped[datetime | None] = mapped_column()
    alma_ended_at: Mapped[datetime | None] = mapped_column()
    next_poll_at: Mapped[datetime | None] = mapped_column()
    poll_interval: Mapped[float | None] = mapped_column()
    raw_reply: Mapped[bytes | None] = mapped_column(LargeBinary)  # the instance as Alma returned it (RAW_REPLY_CAP)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    set: Mapped[AlmaSet] = relationship(back_populates="attempts")


class IntegrationBatch(Base):
    """An integration batch: one itemized Alma set holding the records of every set queued at ``migrated``, on
    which a person presses Run of the handle integration profile once; hwf binds that run and polls it.

    States: ``creating`` (members chosen, the Alma set being made), ``announced`` (waiting for the person's
    run), ``bound`` (the run found; polled), ``finished`` (the run ended; its status is each set's)."""

    __tablename__ = "integration_batches"

    id: Mapped[int] = mapped_column(primary_key=True)
    number: Mapped[int] = mapped_column(Integer, unique=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    alma_set_id: Mapped[str | None] = mapped_column(String(40))
    state: Mapped[str] = mapped_column(String(16))
    records: Mapped[int] = mapped_column(Integer, default=0)
    sets: Mapped[int] = mapped_column(Integer, default=0)
    closed_because: Mapped[str | None] = mapped_column(Text)
    seen_before: Mapped[list[Any] | None] = mapped_column()  # the job's instance ids before the announcement
    job_id: Mapped[str | None] = mapped_column(String(64))
    instance_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    submitted_by: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[str | None] = mapped_column(String(40))
    progress: Mapped[float | None] = mapped_column()
    counters: Mapped[list[Any] | None] = mapped_column()
    alerts: Mapped[list[Any] | None] = mapped_column()
    raw_reply: Mapped[bytes | None] = mapped_column(LargeBinary)
    # a person's runs that may be the batch's, still going: hwf watches them until their counters say how many
    # records they ran on (the batch waits for hwf then, not for a person)
    watching: Mapped[str | None] = mapped_column(Text)
    # hwf's clock: the batch formed, announced, bound to a run, and the run's end read; then Alma's own times.
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    announced_at: Mapped[datetime | None] = mapped_column()
    bound_at: Mapped[datetime | None] = mapped_column()
    ended_at: Mapped[datetime | None] = mapped_column()
    alma_submitted_at: Mapped[datetime | None] = mapped_column()
    alma_ended_at: Mapped[datetime | None] = mapped_column()
    next_check_at: Mapped[datetime | None] = mapped_column()  # when to look for the run, or poll it, next
    poll_interval: Mapped[float | None] = mapped_column()
    lease_owner: Mapped[str | None] = mapped_column(String(255))
    lease_expires_at: Mapped[datetime | None] = mapped_column()
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Record(Base):
    """One member of a set, with its preflight class and verification verdict."""

    __tablename__ = "records"
    __table_args__ = (
        UniqueConstraint("set_id", "mms_id", name="uq_records_set_mms"),
        Index("ix_records_handle", "handle"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    set_id: Mapped[int] = mapped_column(ForeignKey("sets.id", ondelete="CASCADE"), index=True)
    mms_id: Mapped[str] = mapped_column(String(40))
    title: Mapped[str | None] = mapped_column(Text)
    handle: Mapped[str | None] = mapped_column(String(255))  # normalised "prefix/suffix"
    handle_raw: Mapped[str | None] = mapped_column(Text)  # as found in the metadata
    record_format: Mapped[str | None] = mapped_column(String(32))
    preflight: Mapped[str | None] = mapped_column(String(32))  # READY, NEEDS_COPY, ...
    preflight_detail: Mapped[str | None] = mapped_column(Text)
    checked_at: Mapped[datetime | None] = mapped_column()
    excluded: Mapped[bool] = mapped_column(Boolean, default=False)
    exclude_reason: Mapped[str | None] = mapped_column(Text)
    removed_from_alma_set: Mapped[bool] = mapped_column(Boolean, default=False)
    verdict: Mapped[str | None] = mapped_column(String(32))  # OK, WRONG_RECORD, ...
    verdict_detail: Mapped[str | None] = mapped_column(Text)
    resolved_url: Mapped[str | None] = mapped_column(Text)
    verified_at: Mapped[datetime | None] = mapped_column()
    # STALE_CACHE only: the latest time the public proxy serves its cached value (the worker checks again then).
    stale_until: Mapped[datetime | None] = mapped_column(index=True)


class Event(Base):
    """The append-only audit trail of a set."""

    __tablename__ = "events"
    __table_args__ = (Index("ix_events_set_id_id", "set_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    set_id: Mapped[int] = mapped_column(ForeignKey("sets.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(default=utcnow)
    kind: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any] | None] = mapped_column()
    actor: Mapped[str | None] = mapped_column(String(255))  # the operator's name, else the OS user
    host: Mapped[str | None] = mapped_column(String(255))  # where the process ran (None: older rows not known)
    pid: Mapped[int | None] = mapped_column(Integer)


class Backup(Base):
    """The original ``<bib>`` of a record hwf changed, stored before the PUT."""

    __tablename__ = "backups"

    id: Mapped[int] = mapped_column(primary_key=True)
    set_id: Mapped[int] = mapped_column(ForeignKey("sets.id", ondelete="CASCADE"), index=True)
    mms_id: Mapped[str] = mapped_column(String(40), index=True)
    original_xml: Mapped[bytes] = mapped_column(LargeBinary)
    new_xml: Mapped[bytes] = mapped_column(LargeBinary)
    state: Mapped[str] = mapped_column(String(16))  # pending, applied, failed, restored, conflict
    detail: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class SetCreation(Base):
    """A set hwf is creating in Alma from a CSV; the name is deterministic so a re-run finds it."""

    __tablename__ = "set_creations"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    batch: Mapped[int] = mapped_column(Integer)
    batches: Mapped[int] = mapped_column(Integer)
    mms_ids: Mapped[list[Any]] = mapped_column()
    alma_set_id: Mapped[str | None] = mapped_column(String(40))
    source_set: Mapped[str | None] = mapped_column(String(40))  # a snapshot of this LOGICAL set (`hwf add`)
    state: Mapped[str] = mapped_column(String(16))  # creating, created, populated, registered
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Notification(Base):
    """The outbox of notifications: written in the transaction of the event it announces, sent after commit.

    ``key`` is unique, so one event gives one message however often it is polled; ``sending_at`` is committed
    before the send and ``sent_at`` after it, so a crash leaves a row that a later hwf sends (again, if the
    crash fell inside the send itself).
    """

    __tablename__ = "notifications"
    __table_args__ = (UniqueConstraint("key", "target", name="uq_notifications_key_target"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(32))  # attention, quota, verified, done
    target: Mapped[int] = mapped_column(Integer)  # index into [notify] urls: each URL is sent (and retried) apart
    set_id: Mapped[int | None] = mapped_column(ForeignKey("sets.id", ondelete="SET NULL"), index=True)
    title: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sending_at: Mapped[datetime | None] = mapped_column()
    sending_by: Mapped[str | None] = mapped_column(String(255))
    sent_at: Mapped[datetime | None] = mapped_column()
    tries: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)


class RateBudget(Base):
    """The request budget every hwf process sharing one Alma key draws from (``store.budget``).

    ``next_start`` is a virtual schedule of request starts (seconds since the epoch, by the database's
    clock on PostgreSQL): each request claims the next start atomically, so processes on several hosts
    together keep under ``[alma] requests_per_second``. The key is named by a hash, never stored.
    """

    __tablename__ = "rate_budget"

    key_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    next_start: Mapped[float] = mapped_column(default=0.0)
    hold_until: Mapped[float] = mapped_column(default=0.0)
    remaining: Mapped[int | None] = mapped_column(Integer)  # the last X-Exl-Api-Remaining any process saw
    remaining_at: Mapped[datetime | None] = mapped_column()


class Worker(Base):
    """A running ``hwf resume --all --follow``: what it is doing or waiting for (``hwf status`` shows it)."""

    __tablename__ = "workers"

    owner: Mapped[str] = mapped_column(String(255), primary_key=True)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(default=utcnow)
    state: Mapped[str] = mapped_column(String(16))  # running, waiting, stopped
    reason: Mapped[str | None] = mapped_column(Text)
    wake_at: Mapped[datetime | None] = mapped_column()
