"""A pytest plugin: a PostgreSQL server for the database tests, and a ``db_url`` fixture that runs a test
on SQLite and on PostgreSQL.

``HWF_TEST_DATABASE_URL`` (any SQLAlchemy PostgreSQL URL) names a server to use; otherwise one is started
with the ``pgserver`` package (a test extra in pyproject.toml) in a short temporary folder, and stopped at
the end of the session. In a parallel run (``tests.support.parallel``) that folder is the run's, so the
workers share one server: the first that needs it starts it, the last stops it (pgserver counts the
processes using a data folder). Each test gets a fresh database (``CREATE DATABASE`` with a unique name).
When no server can be had the tests fail loudly; ``HWF_SKIP_POSTGRES=1`` turns that into a skip.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, make_url

from tests.support.parallel import RUN_DIR

# Read once at import: the autouse isolation fixture strips HWF_* variables from every test.
_GIVEN_URL = os.environ.get("HWF_TEST_DATABASE_URL", "").strip()
_SKIP = os.environ.get("HWF_SKIP_POSTGRES", "").strip() in ("1", "true", "yes")


def _psycopg_url(url: str) -> URL:
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        raise ValueError(f"HWF_TEST_DATABASE_URL must be a PostgreSQL URL, not {parsed.get_backend_name()}")
    return parsed.set(drivername="postgresql+psycopg")


class PostgresServer:
    """One PostgreSQL server for the session: hands out fresh databases and drops them afterwards."""

    def __init__(self, admin_url: URL, stop: Any = None, folder: Path | None = None) -> None:
        self.admin_url = admin_url
        self._stop, self._folder = stop, folder
        self._engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")

    def new_database(self) -> str:
        """Create an empty database; returns its ``postgresql+psycopg://`` URL (password included)."""
        name = f"hwf_test_{uuid.uuid4().hex[:12]}"
        with self._engine.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        return self.admin_url.set(database=name).render_as_string(hide_password=False)

    def ping(self) -> None:
        with self._engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    def drop_database(self, url: str) -> None:
        name = make_url(url).database
        with self._engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    def close(self) -> None:
        self._engine.dispose()
        if self._stop is not None:
            self._stop()
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)


def _start_pgserver() -> PostgresServer:
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (CI containers); that is not our concern.
        warnings.simplefilter("ignore")
        import pgserver

        owned: Path | None = None  # the folder this process made, and removes
        if RUN_DIR is not None:  # the parallel run's folder, shared by its workers (and removed by its controller)
            folder = RUN_DIR / "pg"
        else:
            # A short path: the server's Unix socket lives in it, and socket paths are limited to ~100 bytes.
            folder = owned = Path(tempfile.mkdtemp(prefix="hwfpg-"))
            folder.chmod(0o755)
        server = pgserver.get_server(folder, cleanup_mode="stop")
        uri = server.get_uri()
    return PostgresServer(_psycopg_url(uri), stop=server.cleanup, folder=owned)


def _unavailable(why: str) -> None:
    message = (
        f"PostgreSQL is not available for the database tests: {why}. Install the test extras "
        "(pip install -e '.[test]', which brings pgserver), or point HWF_TEST_DATABASE_URL at a server; "
        "HWF_SKIP_POSTGRES=1 skips these tests instead."
    )
    if _SKIP:
        pytest.skip(message)
    pytest.fail(message, pytrace=False)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """The session's PostgreSQL server (given by HWF_TEST_DATABASE_URL, else started with pgserver)."""
    if _SKIP and not _GIVEN_URL:
        pytest.skip("HWF_SKIP_POSTGRES=1")
    server: PostgresServer | None = None
    try:
        server = PostgresServer(_psycopg_url(_GIVEN_URL)) if _GIVEN_URL else _start_pgserver()
        server.ping()
    except Exception as exc:  # any failure to get a server is reported the same way
        if server is not None:
            server.close()
        _unavailable(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
    assert server is not None
    yield server
    server.close()


@pytest.fixture
def pg_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test (``postgresql+psycopg://...``)."""
    url = postgres_server.new_database()
    yield url
    postgres_server.drop_database(url)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database URL: a SQLite file in tmp_path, then (second run) a PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'hwf.db'}"
    url: str = request.getfixturevalue("pg_url")
    return url
