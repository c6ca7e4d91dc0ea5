"""attempt times: one meaning per name; where an attempt's run came from

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05

``attempts.started_at`` was hwf's clock before the POST; it becomes ``begun_at``. ``attempts.finished_at``
meant Alma's end time for runs adopted from Alma's history and hwf's clock elsewhere; it becomes ``ended_at``,
hwf's clock when it read the run's end, and Alma's own times get columns of their own: ``alma_submitted_at``,
``alma_started_at``, ``alma_ended_at`` (null when Alma did not say). Runs adopted from Alma's history (token
``adopted-…``) had Alma's times in ``submitted_at``/``finished_at``: those are copied into the Alma columns.

``attempts.origin`` says where the run came from (hwf, found, adopted, operator, skipped), filled in from the
token's form and the attempt's state for the rows already there.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import orchestrator.store.models

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ALMA = ("alma_submitted_at", "alma_started_at", "alma_ended_at")


def upgrade() -> None:
    with op.batch_alter_table("attempts") as batch:
        batch.alter_column("started_at", new_column_name="begun_at")
        batch.alter_column("finished_at", new_column_name="ended_at")
        for name in _ALMA:
            batch.add_column(sa.Column(name, orchestrator.store.models.UTCDateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("origin", sa.String(length=16), nullable=False, server_default="hwf"))
    op.execute(
        "UPDATE attempts SET alma_submitted_at = submitted_at, alma_ended_at = ended_at WHERE token LIKE 'adopted-%'"
    )
    op.execute("UPDATE attempts SET origin = 'adopted' WHERE token LIKE 'adopted-%'")
    op.execute("UPDATE attempts SET origin = 'found' WHERE token LIKE 'found-%'")
    op.execute("UPDATE attempts SET origin = 'skipped' WHERE state = 'not_needed'")
    op.execute(
        "UPDATE attempts SET origin = 'operator' WHERE job_name IS NULL AND state <> 'not_needed' AND origin = 'hwf'"
    )


def downgrade() -> None:
    op.execute("UPDATE attempts SET ended_at = alma_ended_at WHERE token LIKE 'adopted-%'")
    with op.batch_alter_table("attempts") as batch:
        batch.drop_column("origin")
        for name in _ALMA:
            batch.drop_column(name)
        batch.alter_column("ended_at", new_column_name="finished_at")
        batch.alter_column("begun_at", new_column_name="started_at")
