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
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError, ProgrammingError, SQLAlchemyError
from sqlalchemy.exc import DatabaseError as SqlDatabaseError
from sqlalchemy.orm import Session, sessionmaker

from orchestrator.errors import DatabaseContentionError, DatabaseError

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig
    from alembic.script import ScriptDirectory

# The newest revision in migrations/versions (a test keeps the two in step). Opening a database that is
# already there needs no alembic at all, which keeps every command's start-up short.
SCHEMA_HEAD = "0006"
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


SQLITE_URI_ARGUMENTS = ("mode", "cache", "immutable", "nolock", "vfs", "psow", "modeof")


def require_folder(url: str) -> None:
    """An SQLite database's folder must exist: hwf never creates it (nor, through the log beside it, any file
    there); and SQLite's own arguments (``mode=ro``) come in its URI form, or the driver would ignore them (a
    database meant read-only opened for writing). :raises DatabaseError: one line; nothing for other databases
    or an unusable URL."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return
    if parsed.get_backend_name() != "sqlite":
        return
    ignored = [key for key in parsed.query if key in SQLITE_URI_ARGUMENTS]
    if ignored and parsed.query.get("uri") != "true":
        raise DatabaseError(
            f"database {url!r} (database.url): SQLite reads {', '.join(ignored)} only in its URI form, "
            "sqlite:///file:PATH?mode=ro&uri=true"
        )
    database = parsed.database
    if database and parsed.query.get("uri") == "true" and database.startswith("file:"):
        database = database[len("file:") :]  # SQLite's URI form: sqlite:///file:PATH?mode=ro&uri=true
    if database and database != ":memory:":
        folder = Path(database).expanduser().resolve().parent
        if not folder.is_dir():
            raise DatabaseError(
                f"database {database} does not exist: its folder {folder} does not exist (database.url = {url!r})"
            )


def make_engine(url: str) -> Engine:
    """Create an engine for ``url``. :raises DatabaseError: the URL is not usable."""
    try:
        parsed = make_url(url)
        if parsed.get_backend_name() == "sqlite":
            require_folder(url)
            engine = create_engine(parsed, connect_args={"timeout": SQLITE_BUSY_MS / 1000})
            event.listen(engine, "connect", _sqlite_pragmas)
            event.listen(engine, "begin", _sqlite_begin)
            return engine
        return create_engine(parsed, pool_pre_ping=True)
    except ImportError as exc:
        hint = ": pip install 'hwf[postgres]'" if url.startswith("postgresql") else ""
        raise DatabaseError(
            f"cannot use database URL {_safe_url(url)}: its driver is not installed ({exc}){hint}"
        ) from None
    except (ArgumentError, NoSuchModuleError) as exc:
        raise DatabaseError(f"cannot use database URL {_safe_url(url)}: {exc}") from None


def _safe_url(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "(unparseable URL)"


# What the database said -> what hwf tells the operator. Matched on the driver's message, lower case.
_FAILURES = (
    ("readonly database", "is read-only: hwf cannot write to it (check the permissions of the file and its folder)"),
    ("read-only", "is read-only: hwf cannot write to it (check the permissions of the file and its folder)"),
    ("database or disk is full", "is on a full disk: free some space, then run the command again"),
    ("no space left", "is on a full disk: free some space, then run the command again"),
    ("file is not a database", "is corrupt ({}): restore it from a backup; `hwf doctor` checks it"),
    ("disk image is malformed", "is corrupt ({}): restore it from a backup; `hwf doctor` checks it"),
    ("no such table", "is missing a table ({}): it is not a complete hwf database; `hwf doctor` checks it"),
    ("does not exist", "is missing a table or column ({}): it is not a complete hwf database; `hwf doctor` checks it"),
    ("unable to open database", "cannot be opened ({}): check that the file and its folder exist and are readable"),
    ("disk i/o error", "could not be read or written (disk I/O error): check the disk"),
)
_UNDEFINED_OBJECT = ("42P01", "42703")  # PostgreSQL: undefined table, undefined column
# PostgreSQL's "deadlock detected" and "could not serialize access": the transaction was rolled back whole.
CONTENTION_STATES = frozenset({"40P01", "40001"})


def database_failure(exc: BaseException, url: str) -> DatabaseError | None:
    """The one-line DatabaseError for an error the database (not hwf's code) caused, or None.

    Operational failures (locked, read-only, full, corrupt, gone, connection lost) qualify; so does a
    missing table or column (a damaged or foreign database). Constraint violations and other programming
    errors do not: those are bugs or races that the code handles where they happen.
    """
    code = getattr(getattr(exc, "orig", None), "sqlstate", None) or getattr(getattr(exc, "orig", None), "pgcode", None)
    if code in CONTENTION_STATES:
        return DatabaseContentionError(
            f"database {_safe_url(url)}: another hwf process's transaction crossed this one ({_first_line(exc)}); "
            "nothing of it was written: run the command again"
        )
    if isinstance(exc, ProgrammingError):
        code = code or getattr(exc, "code", None)
        if code not in _UNDEFINED_OBJECT and "does not exist" not in _first_line(exc).lower():
            return None
    elif not isinstance(exc, OperationalError) and type(exc) is not SqlDatabaseError:
        return None
    said = _first_line(exc)
    lower = said.lower()
    what = next((text_.format(said) for key, text_ in _FAILURES if key in lower), f"failed: {said}")
    return DatabaseError(f"database {_safe_url(url)} {what}")


class GuardedSession(Session):
    """A Session whose ``with`` block turns the database's own failures into one-line DatabaseErrors.

    Every ``with ctx.sessions() as session`` and ``with ctx.sessions.begin() as session`` ends in this
    ``__exit__`` (commit and rollback included), so a read-only file, a full disk, corrupt pages or a
    dropped table become ``Error: database ... is read-only ...`` (exit 1) instead of a traceback.
    """

    def __exit__(self, type_: Any, value: Any, traceback: Any) -> None:
        super().__exit__(type_, value, traceback)
        if isinstance(value, SQLAlchemyError):
            failure = database_failure(value, str(self.bind.engine.url) if self.bind is not None else "")
            if failure is not None:
                raise failure from None


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, class_=GuardedSession, expire_on_commit=False)


HWF_TABLES = ("alembic_version", "sets", "attempts", "records", "events", "backups", "set_creations")


def integrity_problems(engine: Engine) -> list[str]:
    """What is wrong with the database's storage, in words (empty: nothing found).

    SQLite: ``PRAGMA integrity_check`` (every page and index). PostgreSQL, which has no such check: every
    hwf table is present and can be counted. :raises DatabaseError: the database cannot be read at all.
    """
    problems: list[str] = []
    try:
        with engine.connect() as conn:
            present = set(inspect(conn).get_table_names())
            problems += [f"table {name} is missing" for name in HWF_TABLES if name not in present]
            if engine.dialect.name == "sqlite":
                rows = [str(row[0]) for row in conn.exec_driver_sql("PRAGMA integrity_check(20)")]
                problems += [row for row in rows if row.strip().lower() != "ok"]
            for name in HWF_TABLES:
                if name in present:
                    conn.execute(text(f'SELECT count(*) FROM "{name}"')).scalar()
    except SQLAlchemyError as exc:
        failure = database_failure(exc, str(engine.url))
        if failure is None:
            raise
        problems.append(_first_line(exc))
    return problems


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
            _run_migrations(engine, command)
    except SQLAlchemyError as exc:
        failure = database_failure(exc, str(engine.url))
        if failure is not None:
            raise failure from None
        raise DatabaseError(f"cannot open database {_safe_url(str(engine.url))}: {_first_line(exc)}") from None


def _run_migrations(engine: Engine, command: Any) -> None:
    """Upgrade to head in one transaction. On SQLite, foreign keys are off meanwhile: a migration that rebuilds a
    table (SQLite's way to alter one) drops the old table, and with foreign keys on, dropping ``sets`` would
    delete every row that refers to it (attempts, records, events) through ON DELETE CASCADE. Every reference
    is checked once the migration is done, before it commits."""
    if engine.dialect.name != "sqlite":
        with engine.begin() as conn:
            command.upgrade(alembic_config(conn), "head")
        return
    with engine.connect() as conn:
        raw = conn.connection.driver_connection  # the PRAGMA must come outside any transaction, or SQLite ignores it
        assert raw is not None
        raw.execute("PRAGMA foreign_keys=OFF")
        try:
            with conn.begin():
                command.upgrade(alembic_config(conn), "head")
                broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                if broken:
                    raise DatabaseError(
                        f"the schema upgrade of {_safe_url(str(engine.url))} left {len(broken)} row(s) referring to "
                        f"rows that do not exist (first: table {broken[0][0]}); nothing was changed"
                    )
        finally:
            raw.execute("PRAGMA foreign_keys=ON")


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


def _read_only_sqlite(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_MS}")
    cursor.execute("PRAGMA query_only=ON")  # any write through this connection fails
    cursor.close()


def _sqlite_begin_deferred(conn: Any) -> None:
    # A reader takes no write lock (BEGIN IMMEDIATE would queue it behind every worker) and still
    # sees one snapshot for the whole transaction.
    conn.exec_driver_sql("BEGIN")


def open_database_read_only(url: str) -> sessionmaker[Session]:
    """A session factory that can only read, on a database that must exist at the current schema (the
    dashboard). Nothing is created or upgraded. :raises DatabaseError: missing, or not at head (the message
    says to run ``hwf db upgrade``), or unreachable."""
    try:
        parsed = make_url(url)
        if parsed.get_backend_name() == "sqlite":
            require_folder(url)
            database = parsed.database
            if not database or database == ":memory:" or not Path(database).expanduser().is_file():
                raise DatabaseError(
                    f"database {_safe_url(url)} does not exist: run `hwf db upgrade` (or `hwf demo`) first"
                )
            engine = create_engine(parsed, connect_args={"timeout": SQLITE_BUSY_MS / 1000})
            event.listen(engine, "connect", _read_only_sqlite)
            event.listen(engine, "begin", _sqlite_begin_deferred)
        else:
            engine = create_engine(
                parsed, pool_pre_ping=True, connect_args={"options": "-c default_transaction_read_only=on"}
            )
    except (ArgumentError, NoSuchModuleError, ImportError) as exc:
        raise DatabaseError(f"cannot use database URL {_safe_url(url)}: {exc}") from None
    try:
        current = current_revision(engine)
    except SQLAlchemyError as exc:
        engine.dispose()
        raise DatabaseError(f"cannot open database {_safe_url(url)}: {_first_line(exc)}") from None
    if current != SCHEMA_HEAD:
        engine.dispose()
        found = f"is at schema {current}" if current else "has no hwf schema"
        raise DatabaseError(
            f"database {_safe_url(url)} {found}, this hwf needs {SCHEMA_HEAD}: run `hwf db upgrade` "
            "(if that says it is from a newer hwf, upgrade hwf)"
        )
    return make_sessionmaker(engine)
