"""Alembic environment: hwf's metadata; the connection hwf hands over, else the configured URL."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from orchestrator.store.models import Base

config = context.config
target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    from pathlib import Path

    from orchestrator.config import find_config_path, load_config
    from orchestrator.store.db import make_engine

    url = load_config(find_config_path(None)).database_url if Path(find_config_path(None)).exists() else None
    if url is None:
        raise SystemExit("no database: set HWF_CONFIG or run alembic through `hwf db upgrade`")
    with make_engine(url).connect() as conn:
        _run(conn)
        conn.commit()


if context.is_offline_mode():
    raise SystemExit("offline migrations are not supported; use `hwf db upgrade`")
run_migrations_online()
