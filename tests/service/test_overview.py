"""``hwf overview``: the read model over a simulator-filled database, the ETA rule, and the command."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update
from starlette.testclient import TestClient
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.display import iso_z
from orchestrator.service import overview
from orchestrator.service.eta import estimate_finish
from orchestrator.store.models import AlmaSet, Record
from orchestrator.web import create_app
from tests.support import write_config
from tests.support.web import HOSTILE_NAME, World, build_world

NOW = datetime(2026, 2, 2, 15, 0, tzinfo=UTC)
STEPS = {"copy_identifiers": 600.0, "migrate": 600.0, "integrate": 600.0}


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = build_world(tmp_path)
    yield w
    w.close()


def test_overview_of_a_verified_an_attention_and_a_running_set(world: World) -> None:
    ov = overview.overview(world.reader)
    data = ov.as_json()
    assert data["sets"] == 3
    assert data["sets_by_state"] == {
        "created": 1,
        "identifiers_copied": 1,
        "migrated": 0,
        "integrated": 0,
        "verified": 1,
    }
    assert data["records"] == 90
    assert data["records_excluded"] == 1
    assert data["records_verified"] == 39  # 40 in the verified set, one excluded
    [attention] = data["attention"]
    assert attention["set"] == world.attention and attention["name"] == "Problem titles"
    assert "cannot go through the workflow" in attention["reason"]
    # One command to go on, the one the reason names (it names every record concerned).
    assert attention["command"].startswith(f"hwf exclude {world.attention} ")
    assert attention["reason"].endswith(
        f"To go on: `{attention['command']}` (or fix them in Alma, then `hwf check {world.attention}`)"
    )
    [running] = data["running"]
    assert running["set"] == world.running and running["step"] == "migrate"
    assert running["instance_id"] and set(running) >= {"set", "step", "instance_id", "status", "progress"}
    assert running["elapsed_seconds"] == pytest.approx(20, abs=1)
    assert data["limits"]["max_running_jobs"] == 3 and data["limits"]["max_runs_per_job_hour"] == 5
    assert data["limits"]["running_now"] == 1
    assert data["limits"]["runs_last_hour"]["migrate"] == 2  # the verified set's and the running set's
    assert set(data["durations"]) == {"copy_identifiers", "migrate", "integrate"}
    assert data["durations"]["migrate"]["runs"] == 1
    assert data["verified_over_time"][-1]["records"] == 39
    assert data["last_checked"][world.verified] is not None
    assert data["last_checked"][world.attention] is None and data["last_checked"][world.running] is None
    # The running set still needs the rest of its migration and its integration, one after the other.
    eta = datetime.fromisoformat(data["eta"].replace("Z", "+00:00"))
    migrate, integrate = ov.durations["migrate"].mean_seconds, ov.durations["integrate"].mean_seconds
    assert eta - world.clock() == pytest.approx(timedelta(seconds=migrate - 20 + integrate), abs=timedelta(seconds=2))
    assert "1 set needing attention is not counted" in data["eta_note"]  # no "set(s)": the count agrees
    assert data["done"] is False
    json.dumps(data)  # serialisable as is


def test_when_only_attention_is_left_there_is_no_eta(world: World) -> None:
    world.finish_running()
    ov = overview.overview(world.reader)
    assert ov.running == () and ov.sets_by_state["verified"] == 2
    assert ov.eta is None and ov.eta_note.endswith(": 1 set needs attention")
    assert ov.records_verified == 39 + 20


def test_eta_chain_of_one_set() -> None:
    eta = estimate_finish(
        NOW, [(100.0, ["integrate"])], STEPS, max_running=3, per_hour=5, runs_last_hour={}, settle_seconds=900
    )
    assert eta == NOW + timedelta(seconds=100 + 600 + 900)


def test_eta_shares_job_time_between_three_running_jobs() -> None:
    remaining = [(0.0, ["copy_identifiers", "migrate", "integrate"]) for _ in range(10)]
    eta = estimate_finish(NOW, remaining, STEPS, max_running=3, per_hour=5, runs_last_hour={}, settle_seconds=0)
    assert eta == NOW + timedelta(seconds=10 * 1800 / 3)


def test_eta_waits_for_runs_per_hour() -> None:
    remaining = [(0.0, ["integrate"]) for _ in range(20)]
    short = {"integrate": 60.0}
    eta = estimate_finish(NOW, remaining, short, max_running=3, per_hour=5, runs_last_hour={}, settle_seconds=0)
    assert eta == NOW + timedelta(seconds=3 * 3600 + 60)  # 5 now, then 5 an hour: the last 5 start after 3 h
    spent = estimate_finish(
        NOW, remaining[:5], short, max_running=3, per_hour=5, runs_last_hour={"integrate": 5}, settle_seconds=0
    )
    assert spent == NOW + timedelta(seconds=3600 + 60)  # the hour's five runs are spent: wait for the next hour


def test_no_eta_before_any_job_ended(tmp_path: Path) -> None:
    from orchestrator.config import parse_config
    from orchestrator.service import workflow
    from orchestrator.simulator import Scenario, Simulator
    from orchestrator.wiring import read_only_context
    from tests.support import API_KEY, FakeClock, config_dict, make_context

    clock = FakeClock()
    sim = Simulator(Scenario(per_second_limit=0), clock=clock)
    config = parse_config(
        config_dict(db=f"sqlite:///{tmp_path / 'hwf.db'}"), tmp_path / "hwf.toml", environ={"HWF_ALMA_API_KEY": API_KEY}
    )
    ctx = make_context(config, sim, clock)
    empty = overview.overview(ctx)
    assert empty.eta is None and empty.eta_note == "no sets registered yet" and not empty.done
    workflow.add_set(ctx, sim.create_set("New", sim.generate_records(5, profile="clean", seed=1)))
    reader = read_only_context(config)
    ov = overview.overview(reader)
    assert ov.eta is None and "no Alma job has finished yet" in ov.eta_note
    assert ov.sets_by_state["created"] == 1 and ov.records == 5 and ov.records_verified == 0
    assert ov.verified_over_time == ()
    ctx.close()


# ---------------------------------------------------------------------------------------------
# the command


def _cli_config(world: World, tmp_path: Path) -> Path:
    return write_config(tmp_path / "cli.toml", db=f"sqlite:///{world.db}", preset="minimal")


def test_overview_json_command(world: World, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["--config", str(_cli_config(world, tmp_path)), "overview", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    for key in ("sets_by_state", "records", "records_verified", "attention", "running", "eta"):
        assert key in data
    assert data["attention"][0] == {**data["attention"][0], "set": world.attention, "name": "Problem titles"}
    assert data["running"][0]["set"] == world.running


def test_overview_text_fits_80_columns(world: World, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["--config", str(_cli_config(world, tmp_path)), "overview"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    text = result.stdout
    assert "Records verified: 39 of 90" in text and "ETA:" in text
    for set_id in (world.attention, world.running):
        assert any(set_id in line for line in lines), set_id  # an id is never split over lines
    assert f"hwf exclude {world.attention}" in text
    assert f"Oldest full verification: set {world.verified}, " in text
    assert "\x1b" not in text  # the hostile set name's escape is not sent to the terminal
    assert HOSTILE_NAME not in text


def test_stale_handles_of_a_verified_set_show_when_the_worker_checks_them_again(world: World, tmp_path: Path) -> None:
    expires = world.clock() + timedelta(hours=2)
    with world.writer.sessions.begin() as session:  # three handles the public proxy still served from its cache
        set_id = session.scalar(select(AlmaSet.id).where(AlmaSet.alma_set_id == world.verified))
        first = select(Record.id).where(Record.set_id == set_id, ~Record.excluded).order_by(Record.id).limit(3)
        session.execute(
            update(Record)
            .where(Record.id.in_(first.scalar_subquery()))
            .values(verdict="STALE_CACHE", stale_until=expires)
        )
    phrase = f"re-check of 3 stale handles at {(expires + timedelta(minutes=1)).strftime('%Y-%m-%d %H:%M UTC')}"
    ov = overview.overview(world.reader)
    assert ov.stale_note == f"{phrase} (set {world.verified})"
    assert ov.as_json()["stale"] == [
        {"set": world.verified, "handles": 3, "at": iso_z(expires + timedelta(minutes=1)), "phrase": phrase}
    ]
    [row] = [r for r in overview.set_rows(world.reader) if r.summary.set == world.verified]
    assert row.note == phrase and row.summary.wait_until == expires + timedelta(minutes=1)
    result = CliRunner().invoke(
        app, ["--config", str(_cli_config(world, tmp_path)), "overview"], env={"COLUMNS": "200"}
    )
    text = " ".join(result.stdout.split())  # the console's width is the first test's
    assert f"Stale in the public proxy's cache: {phrase} (set {world.verified})" in text
    status = CliRunner().invoke(app, ["--config", str(_cli_config(world, tmp_path)), "status", world.verified])
    assert "re-check of 3 stale handles" in " ".join(status.stdout.split())
    with TestClient(create_app(world.reader), base_url="http://127.0.0.1:8155") as client:  # the dashboard
        page = client.get("/").text
        assert f'<span data-field="stale_note">{phrase} (set {world.verified})</span>' in page
        assert client.get("/api/overview").json()["stale_note"] == f"{phrase} (set {world.verified})"


def test_a_handle_still_stale_after_its_expiry_waits_an_hour_not_a_pass(world: World) -> None:
    checked = world.clock()
    with world.writer.sessions.begin() as session:  # checked just now, yet its expiry has passed
        set_id = session.scalar(select(AlmaSet.id).where(AlmaSet.alma_set_id == world.verified))
        first = select(Record.id).where(Record.set_id == set_id, ~Record.excluded).order_by(Record.id).limit(1)
        session.execute(
            update(Record)
            .where(Record.id.in_(first.scalar_subquery()))
            .values(verdict="STALE_CACHE", stale_until=checked - timedelta(hours=3), verified_at=checked)
        )
    [item] = overview.overview(world.reader).stale
    assert item.at == checked + timedelta(hours=1, minutes=1)


@pytest.mark.parametrize("value", ["0", "-5", "inf", "nan", "1e9"])
def test_overview_watch_must_be_positive_and_finite(world: World, tmp_path: Path, value: str) -> None:
    result = CliRunner().invoke(app, ["--config", str(_cli_config(world, tmp_path)), "overview", "--watch", value])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        f"Error: --watch must be a positive number of seconds up to 86400, not {float(value):g}"
    ]


def test_overview_watch_redraws_until_interrupted(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import orchestrator.cli.serve as cli_serve

    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 1:
            world.finish_running()  # something changes between two redraws
        else:
            raise KeyboardInterrupt

    monkeypatch.setattr(cli_serve.time, "sleep", sleep)
    result = CliRunner().invoke(
        app, ["--config", str(_cli_config(world, tmp_path)), "overview", "--watch", "2.5", "--json"]
    )
    assert result.exit_code == 0, result.output
    first, second = (json.loads(line) for line in result.stdout.splitlines())
    assert sleeps == [2.5, 2.5]
    assert first["running"] and not second["running"]
    assert second["records_verified"] == first["records_verified"] + 20
