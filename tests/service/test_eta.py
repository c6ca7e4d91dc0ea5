"""The ETA holds still while nothing can change it: on a virtual clock, a worker whose sets wait a whole hour
for Alma's hourly window reads the same ETA at every moment of that wait (it follows the window's resets and
the durations measured, not ``now``); meanwhile the worker's status row says what it waits for."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest

from orchestrator.config import parse_config
from orchestrator.domain.jobrules import window_starts
from orchestrator.service import nextstep, overview, worker, workflow
from orchestrator.simulator import Scenario, Simulator
from tests.support import API_KEY, FakeClock, config_dict, make_context, make_set

T0 = datetime.fromisoformat("2026-02-02T15:00:00+00:00")


def test_window_starts_follow_the_resets_not_now() -> None:
    hour = timedelta(hours=1, seconds=1)
    used = [T0 - timedelta(minutes=50), T0 - timedelta(minutes=20)]
    assert window_starts(2, used, T0, 3) == [used[0] + hour, used[1] + hour, used[0] + 2 * hour]
    later = T0 + timedelta(minutes=5)
    assert window_starts(2, used, later, 3) == window_starts(2, used, T0, 3)  # waiting does not move them
    assert window_starts(2, [], T0, 3) == [T0, T0, T0 + hour]


@pytest.fixture
def scenario() -> Scenario:
    return Scenario(
        job_seconds=dict.fromkeys(("copy", "migration", "integration", "other"), 25.0),
        per_second_limit=0,
        enforce_job_thresholds=True,
        max_running_api_jobs=3,
        max_runs_per_hour=2,
    )


def test_the_eta_does_not_move_while_the_worker_waits_on_a_full_window(
    tmp_path: Path, sim: Simulator, clock: FakeClock
) -> None:
    data = config_dict(
        db=f"sqlite:///{tmp_path / 'hwf.db'}",
        poll_interval_seconds=15,
        max_runs_per_job_hour=2,
        handles={"recheck_days": 0},
    )
    config = parse_config(data, tmp_path / "hwf.toml", environ={"HWF_ALMA_API_KEY": API_KEY})
    seen: list[tuple[datetime, datetime | None, str]] = []
    rows: list[str] = []  # what the worker's status row (in `hwf status`) says meanwhile

    def sleep(seconds: float) -> None:
        clock.sleep(seconds)
        ov = overview.overview(reader)
        with reader.sessions() as session:
            nexts = nextstep.per_set(session, config, clock())
        if not ov.running and any(n.kind == "window" for n in nexts.values()):
            seen.append((clock(), ov.eta, ov.next.what))
            rows.extend(w.reason or "" for w in worker.workers(reader) if w.state == "waiting")

    ctx = make_context(config, sim, clock, sleep=sleep)
    reader = make_context(config, sim, clock)
    for i in range(5):
        workflow.add_set(ctx, make_set(sim, 3, name=f"Window {i}", seed=i + 1))
    summary = worker.follow(ctx, worker.StopFlag(), until_idle=True)
    assert summary.verified == 5
    waits = [(at, eta) for at, eta, _ in seen]
    assert waits, "the sets never waited on a full window"
    assert waits[-1][0] - waits[0][0] >= timedelta(minutes=50)  # a whole window waited, not a moment
    etas = {eta for _, eta in waits}
    assert len(etas) == 1 and None not in etas, sorted(str(e) for e in etas)
    assert "this hour" in seen[0][2]  # what the migration waits for: the window
    assert any("this hour; starts 2026-02-02 " in r for r in rows), rows[-1:]  # and the worker's row says so
