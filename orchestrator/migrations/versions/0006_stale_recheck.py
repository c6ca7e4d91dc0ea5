"""the worker's re-check of handles stale in the public proxy's cache

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06

``records.stale_until``: for a record verified STALE_CACHE (right at the primary handle server, an older value
in the public proxy's cache), the latest time the proxy serves the cached value; the worker verifies the record
again just after it. NULL for every other verdict. Records found STALE_CACHE before this revision get their
verification time: they are checked again at once.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import orchestrator.store.models

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ADD COLUMN (no table rebuild): ``records`` is the largest table.
    op.add_column(
        "records", sa.Column("stale_until", orchestrator.store.models.UTCDateTime(timezone=True), nullable=True)
    )
    op.create_index(op.f("ix_records_stale_until"), "records", ["stale_until"], unique=False)
    op.execute("UPDATE records SET stale_until = verified_at WHERE verdict = 'STALE_CACHE'")


def downgrade() -> None:
    op.drop_index(op.f("ix_records_stale_until"), table_name="records")
    with op.batch_alter_table("records") as batch:
        batch.drop_column("stale_until")
