"""first contact with a real Alma: integration batches, where a set came from, who made its Alma set

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05

``integration_batches``: one itemized Alma set per click of the handle integration profile's Run, and the run
hwf bound to it; ``attempts.batch_id`` ties a set's integration step to its batch. ``sets.alma_type`` (ITEMIZED or
LOGICAL, as Alma said), ``sets.source_set`` (the logical set a snapshot was made from) and ``sets.made_by_hwf``
(hwf created the Alma set, so it may remove members from it): sets made by ``hwf add --from-csv`` before this
revision are marked as made by hwf. ``set_creations.source_set``: a snapshot being made of a logical set.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import orchestrator.store.models

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "integration_batches",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("alma_set_id", sa.String(length=40), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("records", sa.Integer(), nullable=False),
        sa.Column("sets", sa.Integer(), nullable=False),
        sa.Column("closed_because", sa.Text(), nullable=True),
        sa.Column("seen_before", sa.JSON(), nullable=True),
        sa.Column("job_id", sa.String(length=64), nullable=True),
        sa.Column("instance_id", sa.String(length=64), nullable=True),
        sa.Column("submitted_by", sa.String(length=255), nullable=True),
        sa.Column("status", sa.String(length=40), nullable=True),
        sa.Column("progress", sa.Double(), nullable=True),
        sa.Column("counters", sa.JSON(), nullable=True),
        sa.Column("alerts", sa.JSON(), nullable=True),
        sa.Column("raw_reply", sa.LargeBinary(), nullable=True),
        sa.Column("watching", sa.Text(), nullable=True),
        sa.Column("created_at", orchestrator.store.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("announced_at", orchestrator.store.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("bound_at", orchestrator.store.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("ended_at", orchestrator.store.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("alma_submitted_at", orchestrator.store.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("alma_ended_at", orchestrator.store.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("next_check_at", orchestrator.store.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("poll_interval", sa.Double(), nullable=True),
        sa.Column("lease_owner", sa.String(length=255), nullable=True),
        sa.Column("lease_expires_at", orchestrator.store.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("updated_at", orchestrator.store.models.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_integration_batches")),
        sa.UniqueConstraint("instance_id", name=op.f("uq_integration_batches_instance_id")),
        sa.UniqueConstraint("name", name=op.f("uq_integration_batches_name")),
        sa.UniqueConstraint("number", name=op.f("uq_integration_batches_number")),
    )
    with op.batch_alter_table("attempts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("batch_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("seen_before", sa.JSON(), nullable=True))
        batch_op.create_index(batch_op.f("ix_attempts_batch_id"), ["batch_id"], unique=False)
        batch_op.create_foreign_key(
            batch_op.f("fk_attempts_batch_id_integration_batches"), "integration_batches", ["batch_id"], ["id"]
        )

    with op.batch_alter_table("set_creations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("source_set", sa.String(length=40), nullable=True))

    # Plain ADD COLUMN (no table rebuild): ``sets`` is the parent of every other table.
    op.add_column("sets", sa.Column("alma_type", sa.String(length=16), nullable=True))
    op.add_column("sets", sa.Column("source_set", sa.String(length=40), nullable=True))
    op.add_column("sets", sa.Column("made_by_hwf", sa.Boolean(), nullable=False, server_default=sa.false()))

    op.execute(
        "UPDATE sets SET made_by_hwf = TRUE WHERE alma_set_id IN "
        "(SELECT alma_set_id FROM set_creations WHERE alma_set_id IS NOT NULL)"
    )


def downgrade() -> None:
    for column in ("made_by_hwf", "source_set", "alma_type"):
        op.drop_column("sets", column)  # no table rebuild: see upgrade()

    with op.batch_alter_table("set_creations", schema=None) as batch_op:
        batch_op.drop_column("source_set")

    with op.batch_alter_table("attempts", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_attempts_batch_id_integration_batches"), type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_attempts_batch_id"))
        batch_op.drop_column("seen_before")
        batch_op.drop_column("batch_id")

    op.drop_table("integration_batches")
