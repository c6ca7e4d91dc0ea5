"""shared request budget, workers, sets.last_checked

Revision ID: 0003
Revises: 0001
Create Date: 2026-12-01

(Numbered 0003: 0002 is another branch's; the chain is re-linked when both are merged.)
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import orchestrator.store.models

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "rate_budget",
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("next_start", sa.Double(), nullable=False),
        sa.Column("hold_until", sa.Double(), nullable=False),
        sa.Column("remaining", sa.Integer(), nullable=True),
        sa.Column("remaining_at", orchestrator.store.models.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("key_hash", name=op.f("pk_rate_budget")),
    )
    op.create_table(
        "workers",
        sa.Column("owner", sa.String(length=255), nullable=False),
        sa.Column("started_at", orchestrator.store.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", orchestrator.store.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("wake_at", orchestrator.store.models.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("owner", name=op.f("pk_workers")),
    )
    with op.batch_alter_table("sets") as batch:
        batch.add_column(sa.Column("last_checked", orchestrator.store.models.UTCDateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sets") as batch:
        batch.drop_column("last_checked")
    op.drop_table("workers")
    op.drop_table("rate_budget")
