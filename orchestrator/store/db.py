"""Engines, sessions and schema upgrades. Opening a database brings it to the current schema.

SQLite gets WAL, foreign keys and a busy timeout; PostgreSQL is used as is. A database written by a
newer hwf is refused with both versions named.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from orchestrator.errors import DatabaseError

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig
    from alembic.script import ScriptDirectory

# The newest revision in migrations/versions (a test keeps the two in step). Opening a database that is
# already there needs no alembic at all, which keeps every command's start-up short.
SCHEMA_HEAD = "0003"
MIGRATIONS = Path(__file__).parent.parent / "migrations"
SQLITE_BUSY_MS = 30_000


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # pysqlite's own transaction handling is switched off so that every transaction can start with
    # BEGIN IMMEDIATE (below): a read that later writes would otherwise fail with SQLITE_BUSY when
    # another hwf process wrote in between, and busy_timeout cannot help with that.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_MS}")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _sqlite_begin(conn: Any) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def make_engine(url: str) -> Engine:
    """Create an engine for ``url``. :raises DatabaseError: the URL is not usable."""
    try:
        parsed = make_url(url)
        if parsed.get_backend_name() == "sqlite":
            database = parsed.database
            if database and database != ":memory:":
                folder = Path(database).expanduser().resolve().parent
                if not folder.is_dir():
                    raise DatabaseError(f"database folder {folder} does not exist (database.url = {url!r})")
            engine = create_engine(parsed, connect_args={"timeout": SQLITE_BUSY_MS / 1000})
            event.listen(engine, "connect", _sqlite_pragmas)
            event.listen(engine, "begin", _sqlite_begin)
            return engine
        return create_engine(parsed, pool_pre_ping=True)
    except (ArgumentError, NoSuchModuleError, ImportError) as exc:
        raise DatabaseError(f"cannot use database URL {_safe_url(url)}: {exc}") from None


def _safe_url(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "(unparseable URL)"


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def alembic_config(connection: Any | None = None) -> AlembicConfig:
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    """The schema revision stored in the database (None for an empty database)."""
    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


@contextlib.contextmanager
def _migration_lock(engine: Engine) -> Iterator[None]:
    """Keep two processes from migrating one database at once; the second waits, then goes on."""
    if engine.dialect.name == "postgresql":
        key = int(hashlib.sha1(b"hwf-migrations").hexdigest()[:15], 16)
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
            conn.commit()
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                conn.commit()
        return
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        yield
        return
    lock_path = Path(database).expanduser().resolve().with_name(Path(database).name + ".migrate-lock")
    with open(lock_path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def upgrade(engine: Engine) -> None:
    """Bring the schema to head. :raises DatabaseError: not a database, or from a newer hwf."""
    try:
        current = current_revision(engine)
        if current == SCHEMA_HEAD:
            return
        from alembic import command
        from alembic.script import ScriptDirectory

        head = head_revision()
        script = ScriptDirectory.from_config(alembic_config())
        if current == head:
            return
        if current is not None and not _known_revision(script, current):
            raise DatabaseError(
                f"database {_safe_url(str(engine.url))} is at schema {current}, written by a newer hwf; "
                f"this hwf knows schemas up to {head}: upgrade hwf"
            )
        with _migration_lock(engine):
            if current_revision(engine) == head:
                return
            with engine.begin() as conn:
                command.upgrade(alembic_config(conn), "head")
    except SQLAlchemyError as exc:
        raise DatabaseError(f"cannot open database {_safe_url(str(engine.url))}: {_first_line(exc)}") from None


def _known_revision(script: ScriptDirectory, revision: str) -> bool:
    from alembic.util import CommandError

    # alembic raises (rather than returning None) for a revision it has no script for.
    try:
        return script.get_revision(revision) is not None
    except CommandError:
        return False


def _first_line(exc: BaseException) -> str:
    text_ = str(getattr(exc, "orig", None) or exc)
    return text_.splitlines()[0] if text_ else type(exc).__name__


def open_database(url: str) -> sessionmaker[Session]:
    """Engine + schema upgrade + session factory: the one way hwf opens its database."""
    engine = make_engine(url)
    try:
        upgrade(engine)
    except BaseException:
        engine.dispose()
        raise
    return make_sessionmaker(engine)
