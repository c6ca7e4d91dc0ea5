"""events carry host and pid; attempts keep Alma's raw instance reply; the notification outbox

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import orchestrator.store.models

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_HOST_PID = re.compile(r"^(?P<host>[^:\s]+):(?P<pid>\d{1,10})$")


def upgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("host", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("pid", sa.Integer(), nullable=True))
    _backfill_host_pid()
    with op.batch_alter_table("attempts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("raw_reply", sa.LargeBinary(), nullable=True))
    op.create_table(
        "notifications",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("target", sa.Integer(), nullable=False),
        sa.Column("set_id", sa.Integer(), nullable=True),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_at", orchestrator.store.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("sending_at", orchestrator.store.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("sending_by", sa.String(length=255), nullable=True),
        sa.Column("sent_at", orchestrator.store.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("tries", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["set_id"], ["sets.id"], name=op.f("fk_notifications_set_id_sets"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notifications")),
        sa.UniqueConstraint("key", "target", name="uq_notifications_key_target"),
    )
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_notifications_set_id"), ["set_id"], unique=False)


def _backfill_host_pid() -> None:
    """Events written before 0002 carried ``host:pid`` (or nothing) as their actor: move it to host and pid.

    The actor of those rows becomes NULL (who ran them was never recorded); nothing else is touched.
    """
    conn = op.get_bind()
    events = sa.table(
        "events",
        sa.column("id", sa.Integer),
        sa.column("actor", sa.String),
        sa.column("host", sa.String),
        sa.column("pid", sa.Integer),
    )
    actors = conn.execute(sa.select(events.c.actor).where(events.c.actor.is_not(None)).distinct()).scalars().all()
    for actor in actors:
        match = _HOST_PID.match(actor)
        if match is None:
            continue
        conn.execute(
            events.update().where(events.c.actor == actor).values(host=match["host"], pid=int(match["pid"]), actor=None)
        )


def downgrade() -> None:
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_notifications_set_id"))
    op.drop_table("notifications")
    with op.batch_alter_table("attempts", schema=None) as batch_op:
        batch_op.drop_column("raw_reply")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_column("pid")
        batch_op.drop_column("host")
