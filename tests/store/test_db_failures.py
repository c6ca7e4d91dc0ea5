"""Database failures are one line (issue 13 item 9): read-only, full, corrupt, a dropped table; and
`hwf doctor` checks the database's integrity instead of calling a damaged database healthy."""

from __future__ import annotations

import json
import sqlite3
import warnings
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from orchestrator.cli import base as cli
from orchestrator.errors import DatabaseError
from orchestrator.simulator import Simulator
from orchestrator.store import db
from tests.support import API_KEY, FakeClock, WiredRunner, sim_wiring, write_config

runner = WiredRunner()


@pytest.fixture
def wired(tmp_path: Path, sim: Simulator, clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path, str]:
    database = tmp_path / "hwf.db"
    path = write_config(tmp_path, db=f"sqlite:///{database}", preset="cli", poll_interval_seconds=None)
    monkeypatch.setenv("HWF_ALMA_API_KEY", API_KEY)
    monkeypatch.setattr(runner, "wiring", sim_wiring(sim, clock))
    set_id = sim.create_set("S", sim.generate_records(30, profile="clean", seed=4))
    assert run(path, "add", set_id).exit_code == 0
    return path, database, set_id


def run(path: Path, *args: str) -> Any:
    return runner.invoke(cli.app, ["--config", str(path), *args])


def _one_line_error(result: Any, *words: str) -> None:
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: database "), result.stderr
    assert "Traceback" not in result.output
    for word in words:
        assert word in lines[0], lines[0]


def test_read_only_database_is_one_line(wired, tmp_path):
    _, database, set_id = wired
    # Root ignores file permissions, so open it read-only the way SQLite itself offers.
    path = write_config(
        tmp_path, db=f"sqlite:///file:{database}?mode=ro&uri=true", preset="cli", poll_interval_seconds=None
    )
    with sqlite3.connect(database) as conn:
        mms_id = conn.execute("SELECT mms_id FROM records LIMIT 1").fetchone()[0]
    _one_line_error(run(path, "exclude", set_id, mms_id, "--reason", "test"), "read-only")


def test_full_disk_is_one_line(wired, tmp_path, sim, clock):
    from tests.support import make_context

    _, database, _ = wired
    from orchestrator.config import load_config

    ctx = make_context(load_config(tmp_path / "hwf.toml"), sim, clock)
    try:
        with pytest.raises(DatabaseError, match="full disk") as caught:
            with ctx.sessions.begin() as session:
                pages = session.execute(text("PRAGMA page_count")).scalar()
                session.execute(text(f"PRAGMA max_page_count = {pages}"))
                for n in range(2000):
                    session.execute(
                        text("INSERT INTO events (set_id, at, kind, detail) VALUES (1, CURRENT_TIMESTAMP, 'x', :d)"),
                        {"d": "y" * 2000 + str(n)},
                    )
        assert str(database) in str(caught.value) and "\n" not in str(caught.value)
    finally:
        ctx.close()


def test_file_that_is_not_a_database_is_one_line(wired):
    path, database, _ = wired
    database.write_bytes(b"this is not an sqlite database at all " * 200)
    for name in ("-wal", "-shm"):
        Path(str(database) + name).unlink(missing_ok=True)
    _one_line_error(run(path, "status"), "corrupt", "file is not a database", str(database))
    doctor = run(path, "doctor", "--offline", "--json")
    assert doctor.exit_code == 1
    found = json.loads(doctor.stdout)
    assert not found["healthy"] and found["findings"][0]["kind"] == "database"
    assert "damaged" in found["findings"][0]["problem"]


def test_dropped_table_is_one_line_and_doctor_names_it(wired):
    path, database, set_id = wired
    with sqlite3.connect(database) as conn:
        conn.execute("PRAGMA foreign_keys=OFF")
        conn.execute("DROP TABLE records")
    _one_line_error(run(path, "report", set_id), "missing a table", "records")
    doctor = run(path, "doctor", "--offline")
    assert doctor.exit_code == 1 and "table records is missing" in doctor.stdout
    assert "Healthy" not in doctor.stdout


def test_corrupt_pages_are_found_by_doctor(wired):
    path, database, _ = wired
    with sqlite3.connect(database) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("PRAGMA journal_mode=DELETE")
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
    assert pages > 3
    raw = bytearray(database.read_bytes())
    for page in range(2, pages):  # keep page 1 (the header and schema): damage everything else
        start = page * page_size
        raw[start + 8 : start + page_size] = bytes([0x5A]) * (page_size - 8)
    database.write_bytes(bytes(raw))
    doctor = run(path, "doctor", "--offline", "--json")
    assert doctor.exit_code == 1, doctor.output
    found = json.loads(doctor.stdout)
    assert not found["healthy"]
    assert any(f["kind"] == "database" and "damaged" in f["problem"] for f in found["findings"]), found


def test_healthy_database_has_no_integrity_problem(wired):
    path, database, _ = wired
    assert db.integrity_problems(db.make_engine(f"sqlite:///{database}")) == []
    doctor = run(path, "doctor", "--offline")
    assert doctor.exit_code == 0 and "Healthy" in doctor.stdout


def test_bugs_are_not_turned_into_database_errors():
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    assert db.database_failure(IntegrityError("INSERT", {}, Exception("UNIQUE constraint failed")), "sqlite://") is None
    assert db.database_failure(ProgrammingError("SELECT", {}, Exception("syntax error")), "sqlite://") is None


def test_integrity_and_dropped_table_on_both_backends(db_url: str) -> None:
    from sqlalchemy import select

    from orchestrator.store.models import Event

    sessions = db.open_database(db_url)
    engine = sessions.kw["bind"]
    try:
        assert db.integrity_problems(engine) == []
        with engine.begin() as conn:
            conn.execute(
                text("DROP TABLE events CASCADE" if engine.dialect.name == "postgresql" else "DROP TABLE events")
            )
        assert db.integrity_problems(engine) == ["table events is missing"]
        with pytest.raises(DatabaseError, match="missing a table") as caught:
            with sessions() as session:
                session.scalars(select(Event)).all()
        assert "\n" not in str(caught.value) and "events" in str(caught.value)
    finally:
        engine.dispose()


@pytest.mark.parametrize("command", [["status"], ["history", "1"], ["report", "1"], ["add", "1"]])
def test_a_database_in_a_missing_folder_is_one_line_and_nothing_is_made(
    tmp_path: Path, sim: Simulator, clock: FakeClock, monkeypatch: pytest.MonkeyPatch, command: list[str]
) -> None:
    """Neither the database nor the log beside it (the default) makes the folder: hwf says it does not exist."""
    monkeypatch.setenv("HWF_ALMA_API_KEY", API_KEY)
    monkeypatch.setattr(runner, "wiring", sim_wiring(sim, clock))
    missing = tmp_path / "no" / "such"
    path = write_config(tmp_path, db=f"sqlite:///{missing / 'hwf.db'}", preset="cli")
    result = run(path, *command)
    _one_line_error(result, "does not exist", str(missing))
    assert not (tmp_path / "no").exists()


def test_sqlite_arguments_outside_the_uri_form_are_one_line_not_a_warning(wired, tmp_path):
    """`?mode=ro` without `uri=true`: the driver would ignore it (with a warning) and open the database for
    writing; hwf says how to write it instead."""
    _, database, _ = wired
    path = write_config(tmp_path / "ro.toml", db=f"sqlite:///{database}?mode=ro", preset="cli")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = run(path, "status")
    _one_line_error(result, "mode", "sqlite:///file:PATH?mode=ro&uri=true")
    assert "Warning" not in result.output
