"""Operators have names: every event carries actor (``[operator] name``, else ``$HWF_OPERATOR``... else the OS
user), host and pid; ``hwf history`` shows them; migration 0002 moves old ``host:pid`` actors to host and pid."""

from __future__ import annotations

import getpass
import json
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from orchestrator.simulator import Simulator
from orchestrator.store.db import SCHEMA_HEAD, alembic_config, head_revision, open_database
from tests.support import API_KEY, FakeClock, sim_wiring, write_config
from tests.support.ops import run, runner


@pytest.fixture
def wired(tmp_path: Path, sim: Simulator, clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> Simulator:
    monkeypatch.setenv("HWF_ALMA_API_KEY", API_KEY)
    monkeypatch.setattr(runner, "wiring", sim_wiring(sim, clock, owner="hostA:4242"))
    return sim


def _events(path: Path, set_id: str) -> list[dict[str, object]]:
    result = run(path, "history", set_id, "--json")
    assert result.exit_code == 0, result.output
    events: list[dict[str, object]] = json.loads(result.output)
    return events


def test_every_event_carries_the_operator_host_and_pid(tmp_path: Path, wired: Simulator) -> None:
    path = write_config(tmp_path, preset="cli", operator={"name": "Ada Lovelace"})
    set_id = wired.create_set("Named", wired.generate_records(8, profile="demo", seed=3))
    assert run(path, "add", set_id).exit_code == 0
    run(path, "advance", set_id)  # the demo profile needs a fix: attention (exit 3) is fine here
    events = _events(path, set_id)
    kinds = {e["kind"] for e in events}
    assert {"transition", "submitting", "submitted", "attention"} <= kinds, kinds
    for e in events:
        assert (e["actor"], e["host"], e["pid"]) == ("Ada Lovelace", "hostA", 4242), e
    text_out = run(path, "history", set_id).output
    assert "(by Ada Lovelace on hostA pid 4242)" in text_out


def test_hwf_operator_wins_over_the_file_and_the_os_user_is_the_default(
    tmp_path: Path, wired: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_config(tmp_path, preset="cli", operator={"name": "From File"})
    first = wired.create_set("One", wired.generate_records(3, profile="clean", seed=1))
    monkeypatch.setenv("HWF_OPERATOR", "grace")
    assert run(path, "add", first).exit_code == 0
    assert {e["actor"] for e in _events(path, first)} == {"grace"}
    monkeypatch.delenv("HWF_OPERATOR")
    bare = write_config(tmp_path, preset="cli")  # no [operator] table
    second = wired.create_set("Two", wired.generate_records(3, profile="clean", seed=2))
    assert run(bare, "add", second).exit_code == 0
    assert {e["actor"] for e in _events(bare, second)} == {getpass.getuser()}


def test_migration_0002_moves_host_pid_actors_and_keeps_old_rows_readable(tmp_path: Path) -> None:
    from alembic import command

    assert SCHEMA_HEAD == head_revision() == "0006"  # 0002 is the one this test is about; 0003 to 0006 follow it
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), "0001")
        conn.execute(
            text(
                "INSERT INTO sets (id, alma_set_id, name, state, record_count, version, created_at, updated_at) "
                "VALUES (1, '111', 'Old', 'created', 0, 1, '2026-01-01 00:00:00', '2026-01-01 00:00:00')"
            )
        )
        for i, actor in enumerate(["lib-host.example.org:812", None, "someone"]):
            conn.execute(
                text("INSERT INTO events (id, set_id, at, kind, detail, actor) VALUES (:i, 1, :at, 'note', 'x', :a)"),
                {"i": i + 1, "at": "2026-01-01 00:00:00", "a": actor},
            )
    engine.dispose()
    open_database(url).kw["bind"].dispose()  # upgrades to head
    engine = create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT actor, host, pid FROM events ORDER BY id")).all()
    engine.dispose()
    assert [tuple(r) for r in rows] == [
        (None, "lib-host.example.org", 812),
        (None, None, None),
        ("someone", None, None),
    ]
