"""Migrations on SQLite and PostgreSQL: empty to head with no drift, a newer database refused, and a
database another process is migrating waited for."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import Engine, inspect, text
from typer.testing import CliRunner

from orchestrator.cli import base as cli
from orchestrator.errors import DatabaseError
from orchestrator.store import db
from tests.support import write_config
from tests.support.e2e import hwf

TABLES = {
    "alembic_version",
    "sets",
    "attempts",
    "records",
    "events",
    "backups",
    "set_creations",
    "rate_budget",
    "workers",
    "notifications",
}


def test_upgrade_from_empty_to_head_has_every_table_and_no_drift(db_url: str) -> None:
    engine = db.make_engine(db_url)
    try:
        assert db.current_revision(engine) is None
        db.upgrade(engine)
        assert db.current_revision(engine) == db.head_revision()
        assert TABLES <= set(inspect(engine).get_table_names())
        with engine.begin() as conn:
            command.check(db.alembic_config(conn))  # raises if the models and the migrations differ
        db.upgrade(engine)  # at head: a no-op
        assert db.current_revision(engine) == db.head_revision()
    finally:
        engine.dispose()


def test_database_from_a_newer_hwf_is_refused_naming_both_versions(db_url: str) -> None:
    engine = db.make_engine(db_url)
    try:
        db.upgrade(engine)
        with engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = '0099_from_the_future'"))
        with pytest.raises(DatabaseError) as raised:
            db.open_database(db_url)
        message = str(raised.value)
        assert "0099_from_the_future" in message and db.head_revision() in message and "newer hwf" in message
        assert db.current_revision(engine) == "0099_from_the_future"  # refused, and left untouched
    finally:
        engine.dispose()


def test_every_command_refuses_a_newer_database(db_url: str, tmp_path: Path) -> None:
    engine = db.make_engine(db_url)
    db.upgrade(engine)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0099_from_the_future'"))
    engine.dispose()
    config = write_config(tmp_path, "http://127.0.0.1:9", preset="e2e", db=db_url)
    result = CliRunner().invoke(cli.app, ["--config", str(config), "status"])
    assert result.exit_code == 1
    assert "0099_from_the_future" in result.stderr and db.head_revision() in result.stderr
    assert "upgrade hwf" in result.stderr and "Traceback" not in result.output


def test_second_migrator_waits_for_the_first_then_goes_on(db_url: str) -> None:
    first, second = db.make_engine(db_url), db.make_engine(db_url)
    done = threading.Event()
    failures: list[BaseException] = []

    def migrate_second() -> None:
        try:
            db.upgrade(second)
        except BaseException as exc:  # reported to the main thread
            failures.append(exc)
        finally:
            done.set()

    try:
        with db._migration_lock(first):
            waiter = threading.Thread(target=migrate_second)
            waiter.start()
            assert not done.wait(0.8), "the second migrator did not wait for the lock"
            with first.begin() as conn:
                command.upgrade(db.alembic_config(conn), "head")
        assert done.wait(30), "the second migrator never went on"
        waiter.join(5)
        assert failures == []
        assert db.current_revision(second) == db.head_revision()
    finally:
        first.dispose()
        second.dispose()


def test_hwf_process_waits_while_another_migrates(db_url: str, tmp_path: Path) -> None:
    config = write_config(tmp_path, "http://127.0.0.1:9", preset="e2e", db=db_url)
    engine = db.make_engine(db_url)
    result: dict[str, object] = {}
    try:
        with db._migration_lock(engine):
            runner = threading.Thread(target=lambda: result.setdefault("run", hwf(config, "db", "upgrade")))
            started = time.monotonic()
            runner.start()
            runner.join(2.0)
            assert runner.is_alive(), "hwf did not wait for the migration lock"
            _migrate(engine)  # this process is "the other one", migrating while hwf waits
        runner.join(60)
        run = result["run"]
        assert run.returncode == 0, run.stderr  # type: ignore[attr-defined]
        assert db.head_revision() in run.stdout  # type: ignore[attr-defined]
        assert time.monotonic() - started >= 2.0
    finally:
        engine.dispose()


def _migrate(engine: Engine) -> None:
    with engine.begin() as conn:
        command.upgrade(db.alembic_config(conn), "head")


def test_upgrading_keeps_every_row_of_every_table(db_url: str) -> None:
    """A schema upgrade never loses a row: on SQLite, rebuilding a table that others refer to (ON DELETE CASCADE)
    would delete their rows if foreign keys stayed on during the migration."""
    engine = db.make_engine(db_url)
    tables = ("sets", "attempts", "records", "events", "backups")
    try:
        with engine.begin() as conn:
            command.upgrade(db.alembic_config(conn), "0004")
            stamp = "'2026-01-01 00:00:00'"
            for sql in (
                "INSERT INTO sets (id, alma_set_id, name, state, record_count, version, created_at, updated_at) "
                f"VALUES (1, '111', 'Old', 'migrated', 1, 1, {stamp}, {stamp})",
                "INSERT INTO attempts (id, set_id, step, number, token, state, begun_at, origin, created_at, "
                f"updated_at) VALUES (1, 1, 'migrate', 1, 'hwf-aa', 'finished', {stamp}, 'hwf', {stamp}, {stamp})",
                "INSERT INTO records (id, set_id, mms_id, excluded, removed_from_alma_set) "
                "VALUES (1, 1, '991', FALSE, FALSE)",
                f"INSERT INTO events (id, set_id, at, kind, detail) VALUES (1, 1, {stamp}, 'added', 'registered')",
                "INSERT INTO backups (id, set_id, mms_id, original_xml, new_xml, state, created_at, updated_at) "
                f"VALUES (1, 1, '991', :xml, :xml, 'applied', {stamp}, {stamp})",
            ):
                conn.execute(text(sql), {"xml": b"<bib/>"} if ":xml" in sql else {})
        db.upgrade(engine)  # the way every hwf command upgrades
        with engine.connect() as conn:
            counts = {t: conn.execute(text(f"SELECT count(*) FROM {t}")).scalar() for t in tables}
            made = conn.execute(text("SELECT made_by_hwf FROM sets")).scalar()
        assert counts == dict.fromkeys(tables, 1) and not made
    finally:
        engine.dispose()


def test_0004_gives_attempt_times_one_meaning_and_their_origin(db_url: str) -> None:
    """Runs adopted from Alma's history kept Alma's times in submitted_at/finished_at: after 0004 those are in the
    Alma columns, hwf's own names mean hwf's clock, and every attempt says where its run came from."""
    engine = db.make_engine(db_url)
    try:
        with engine.begin() as conn:
            command.upgrade(db.alembic_config(conn), "0003")
            conn.execute(
                text(
                    "INSERT INTO sets (id, alma_set_id, name, state, record_count, version, created_at, updated_at) "
                    "VALUES (1, '111', 'Old', 'migrated', 0, 1, '2026-01-01 00:00:00', '2026-01-01 00:00:00')"
                )
            )
            rows = [  # (token, state, job_name, started_at, submitted_at, finished_at)
                ("hwf-aa", "finished", "hwf copy_identifiers set 111 hwf-aa", "01:00", "01:01", "01:30"),
                ("adopted-bb", "finished", "DG Handle Migration - Old - 2026", "02:00", "02:00", "02:40"),
                ("found-cc", "submitted", "hwf integrate set 111 hwf-zz", "03:00", "03:00", None),
                ("hwf-dd", "waiting_operator", None, "04:00", None, None),
                ("not-needed-1-1", "not_needed", None, "05:00", None, None),
            ]
            for n, (token, state, name, started, submitted, finished) in enumerate(rows, 1):
                conn.execute(
                    text(
                        "INSERT INTO attempts (id, set_id, step, number, token, job_name, state, started_at, "
                        "submitted_at, finished_at, created_at, updated_at) VALUES (:n, 1, 'migrate', :n, :token, "
                        ":name, :state, :started, :submitted, :finished, :started, :started)"
                    ),
                    {
                        "n": n,
                        "token": token,
                        "name": name,
                        "state": state,
                        "started": f"2026-01-01 {started}:00",
                        "submitted": submitted and f"2026-01-01 {submitted}:00",
                        "finished": finished and f"2026-01-01 {finished}:00",
                    },
                )
        _migrate(engine)
        with engine.connect() as conn:
            got = conn.execute(
                text(
                    "SELECT origin, begun_at IS NOT NULL, ended_at IS NOT NULL, alma_submitted_at IS NOT NULL, "
                    "alma_ended_at IS NOT NULL FROM attempts ORDER BY id"
                )
            ).all()
        assert [tuple(bool(v) if i else v for i, v in enumerate(r)) for r in got] == [
            ("hwf", True, True, False, False),
            ("adopted", True, True, True, True),
            ("found", True, False, False, False),
            ("operator", True, False, False, False),
            ("skipped", True, False, False, False),
        ]
        with engine.begin() as conn:
            command.downgrade(db.alembic_config(conn), "0003")
            names = {c["name"] for c in inspect(conn).get_columns("attempts")}
        assert {"started_at", "finished_at"} <= names and not {"begun_at", "origin", "alma_ended_at"} & names
    finally:
        engine.dispose()


def test_0006_gives_records_found_stale_before_it_a_re_check_at_once(db_url: str) -> None:
    """Records verified STALE_CACHE before 0006 have no expiry of their own: they get their verification time, so
    the worker checks them again at once; every other record has none."""
    engine = db.make_engine(db_url)
    try:
        with engine.begin() as conn:
            command.upgrade(db.alembic_config(conn), "0005")
            conn.execute(
                text(
                    "INSERT INTO sets (id, alma_set_id, name, state, record_count, version, created_at, updated_at) "
                    "VALUES (1, '111', 'Old', 'verified', 2, 1, '2026-01-01 00:00:00', '2026-01-01 00:00:00')"
                )
            )
            for n, verdict in ((1, "STALE_CACHE"), (2, "OK")):
                conn.execute(
                    text(
                        "INSERT INTO records (id, set_id, mms_id, excluded, removed_from_alma_set, verdict, "
                        "verified_at) VALUES (:n, 1, :mms, FALSE, FALSE, :verdict, '2026-01-02 03:04:05')"
                    ),
                    {"n": n, "mms": f"99{n}", "verdict": verdict},
                )
        db.upgrade(engine)
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT verdict, stale_until FROM records ORDER BY id")).all()
        assert [(v, str(at)[:19] if at else None) for v, at in rows] == [
            ("STALE_CACHE", "2026-01-02 03:04:05"),
            ("OK", None),
        ]
    finally:
        engine.dispose()
