from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.errors import DatabaseError
from orchestrator.store import db


def test_schema_head_constant_matches_the_migrations() -> None:
    # Opening an up-to-date database skips alembic entirely by comparing with SCHEMA_HEAD.
    assert db.SCHEMA_HEAD == db.head_revision()


def test_open_creates_and_reopens(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'a.db'}"
    db.open_database(url)
    engine = db.make_engine(url)
    assert db.current_revision(engine) == db.SCHEMA_HEAD
    db.open_database(url)  # the fast path


def test_missing_folder_is_named(tmp_path: Path) -> None:
    with pytest.raises(DatabaseError, match="does not exist"):
        db.open_database(f"sqlite:///{tmp_path / 'nope' / 'a.db'}")


def test_bad_url_is_named() -> None:
    with pytest.raises(DatabaseError, match="cannot use database URL"):
        db.make_engine("nosuchdialect://x/y")
