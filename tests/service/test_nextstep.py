"""What happens next, and when: each set's own next job start and the hourly window that holds it, in the
scheduler's order (a set third in line starts at the third reset; the sixth an hour later), the next poll of a
running job, and "needs a person"; ``hwf status --json`` and ``hwf overview --json`` carry it as ``next``."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.config import Config
from orchestrator.service import nextstep, scheduler, workflow
from orchestrator.service.context import Context
from orchestrator.simulator import Scenario, Simulator
from orchestrator.store.models import AlmaSet, Attempt
from tests.support import (
    API_KEY,
    FakeClock,
    alma_limits,
    make_context,
    make_set,
    parsed_config,
    write_config,
)
from tests.support.people import clean_set, drive_until_announced

HOUR = timedelta(hours=1, seconds=1)


@pytest.fixture
def scenario() -> Scenario:
    return alma_limits()


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return parsed_config(tmp_path, poll_interval_seconds=15, poll_max_interval_seconds=300)


@pytest.fixture
def ctx(config: Config, sim: Simulator, clock: FakeClock) -> Context:
    return make_context(config, sim, clock)


def _nexts(ctx: Context) -> dict[str, nextstep.Next]:
    with ctx.sessions() as session:
        return nextstep.per_set(session, ctx.config, ctx.clock())


def _migrate_starts(ctx: Context) -> list[datetime]:
    with ctx.sessions() as session:
        rows = session.scalars(select(Attempt.begun_at).where(Attempt.step == "migrate").order_by(Attempt.begun_at))
        return [t.replace(tzinfo=ctx.clock().tzinfo) if t.tzinfo is None else t for t in rows]


def test_each_set_in_line_starts_at_the_reset_of_its_window(ctx: Context, sim: Simulator, clock: FakeClock) -> None:
    ids = []
    for k in range(12):
        ids.append(make_set(sim, 4, name=f"Line {k + 1}", seed=k))
        workflow.add_set(ctx, ids[-1])
    for _ in range(40):  # until the hour's five migrations ran and the rest wait for the window
        scheduler.resume_all(ctx, wait=False)
        clock.advance(20)
        if len(_migrate_starts(ctx)) == 5 and not any(n.kind in ("poll", "slots") for n in _nexts(ctx).values()):
            break
    starts = _migrate_starts(ctx)
    assert len(starts) == 5
    nexts = _nexts(ctx)
    assert [nexts[i].kind for i in ids[:5]] == ["poll"] * 5 or all(nexts[i].at is None for i in ids[:5])
    line = [nexts[i] for i in ids[5:]]
    assert [n.kind for n in line] == ["window"] * 7, [n.what for n in line]
    assert line[0].what == "migrate: 5 of 5 this hour" and line[0].when == "starts"
    assert line[2].what == "migrate: 5 of 5 this hour, 3rd in line"
    # The k-th in line takes the k-th slot the window frees; the sixth waits for the window after that.
    assert [n.at for n in line[:5]] == [t + HOUR for t in starts]
    assert line[5].at is not None and line[5].at >= starts[0] + 2 * HOUR - timedelta(seconds=1)
    # Time passing does not move them: they follow the window's resets.
    clock.advance(600)
    assert [n.at for n in (_nexts(ctx)[i] for i in ids[5:])] == [n.at for n in line]
    with ctx.sessions() as session:
        names = {s.alma_set_id: s.name for s in session.scalars(select(AlmaSet))}
    whole = nextstep.overall(_nexts(ctx), names)
    assert whole.at == line[0].at and whole.what.startswith(f"set {ids[5]} (Line 6): migrate: 5 of 5")


def test_a_set_in_attention_needs_a_person_and_its_command(ctx: Context, sim: Simulator) -> None:
    bad = make_set(sim, 6, profile="problems", name="Problems", seed=2)
    workflow.add_set(ctx, bad)
    scheduler.resume_all(ctx, wait=False)
    n = _nexts(ctx)[bad]
    assert n.person and n.at is None and n.what.startswith("needs a person: hwf ")
    assert n.as_json() == {"at": None, "what": n.what}


def test_status_and_overview_json_carry_next(
    ctx: Context, sim: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = [make_set(sim, 4, name=f"Json {k}", seed=k) for k in range(2)]
    for i in ids:
        workflow.add_set(ctx, i)
    scheduler.resume_all(ctx, wait=False)  # both migrations run: each set's next is a poll
    cfg = write_config(tmp_path / "cli.toml", db=ctx.config.database_url, preset="minimal")
    monkeypatch.setenv("HWF_ALMA_API_KEY", API_KEY)
    result = CliRunner().invoke(app, ["--config", str(cfg), "status", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    for row in rows:
        assert row["next"]["what"].startswith("migrate job running") and row["next"]["at"].endswith("Z")
    result = CliRunner().invoke(app, ["--config", str(cfg), "overview", "--json"])
    whole = json.loads(result.stdout)["next"]
    assert whole["at"] == min(r["next"]["at"] for r in rows) and whole["what"].startswith("set ")


def test_sets_in_an_integration_batch_that_waits_for_its_click_need_a_person(
    manual: Context, sim: Simulator, clock: FakeClock
) -> None:
    ids = [clean_set(sim, f"Click me {k}", 4, seed=k) for k in range(2)]
    for set_id in ids:
        workflow.add_set(manual, set_id)
    drive_until_announced(manual, clock, ids)
    nexts = _nexts(manual)
    for set_id in ids:
        assert nexts[set_id].person and nexts[set_id].at is None
        assert (
            nexts[set_id].what.startswith("needs a person: press Run") and "integration batch 1" in nexts[set_id].what
        )
