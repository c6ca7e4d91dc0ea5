"""``hwf resume --follow`` speaks, in the reader's zone: a line per set already in attention when it starts, a
line when a set enters attention (with its one command), and, while it waits, a line when what it waits for
changes and at least every 10 minutes (local time, what, until when); nothing of that with ``-q``. Its stop
summary after SIGTERM prints an attention holding ``[/]``, ``[link=...]`` and ESC as the text it is.

The real ``hwf`` command, on the in-process simulator and a virtual clock, with ``TZ=America/Chicago``."""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.config import load_config
from orchestrator.domain.attention import Attention
from orchestrator.service import workflow
from orchestrator.service.context import find_set
from orchestrator.simulator import Scenario, Simulator
from tests.support import (
    API_KEY,
    FakeClock,
    alma_limits,
    make_context,
    make_set,
    sim_wiring,
    write_config,
)

HOSTILE = "Alma said [/] and [link=https://evil.example]click[/link] \x1b[8mhidden"


@pytest.fixture
def scenario() -> Scenario:
    return alma_limits(runs_per_hour=1)


@pytest.fixture
def chicago(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "America/Chicago")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def _run(tmp_path: Path, sim: Simulator, clock: FakeClock, args: list[str], stop_after: float) -> tuple[int, str]:
    config = write_config(
        tmp_path / "hwf.toml", poll_interval_seconds=15, max_runs_per_job_hour=1, handles={"recheck_days": 0}
    )
    os.environ["HWF_ALMA_API_KEY"] = API_KEY
    ctx = make_context(load_config(config), sim, clock)
    workflow.add_set(ctx, make_set(sim, 4, profile="problems", name="Problem titles", seed=5))
    for k in range(2):
        workflow.add_set(ctx, make_set(sim, 3, name=f"Clean titles (batch {k + 1}/2)", seed=k + 1))
    held = make_set(sim, 3, name="Held by a fault", seed=9)
    workflow.add_set(ctx, held)
    with ctx.ledger() as book:
        book.attention(find_set(book.session, held), Attention.FAULT, HOSTILE)
    start = clock()

    def sleep(seconds: float) -> None:
        clock.sleep(seconds)
        if (clock() - start).total_seconds() >= stop_after:
            os.kill(os.getpid(), signal.SIGTERM)

    result = CliRunner().invoke(app, ["--config", str(config), *args], obj=sim_wiring(sim, clock, sleep=sleep))
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout + result.stderr  # the lines go where the progress goes: stderr


def test_the_worker_says_what_it_waits_for_and_who_must_act(
    tmp_path: Path, sim: Simulator, clock: FakeClock, chicago: None
) -> None:
    code, out = _run(tmp_path, sim, clock, ["resume", "--follow"], stop_after=50 * 60)
    assert code == 0, out
    lines = out.splitlines()
    # The set already in attention, at once, with its command; the one that enters attention, when it does.
    first = next(i for i, line in enumerate(lines) if "needs attention: set" in line)
    assert "Held by a fault" in lines[first] and "; to go on: hwf retry " in lines[first]
    entered = [line for line in lines if "needs attention: set" in line and "Problem titles" in line]
    assert len(entered) == 1 and "to go on: hwf " in entered[0]
    # While the second clean set waits for the hourly window: a line at once, then at least every 10 minutes,
    # in Chicago's time with the zone named and how far it is.
    waits = [line for line in lines if " waiting: " in line and "this hour" in line]
    assert len(waits) >= 4, out
    stamp = re.compile(r"^(\d\d):(\d\d):\d\d CST waiting: .*; starts (\d\d:\d\d) CST \(in [^)]+\)$")
    parsed = [stamp.match(line) for line in waits]
    assert all(parsed), waits[0]
    said = [int(m.group(1)) * 60 + int(m.group(2)) for m in parsed if m]
    assert all(0 < b - a <= 10 for a, b in zip(said, said[1:], strict=False)), waits  # at least every 10 min
    assert len({m.group(3) for m in parsed if m}) == 1  # until when: the window's reset, the same all along
    assert "UTC" not in "".join(waits)
    # The stop summary prints the attention's words as they are: no markup, no hidden text, no link.
    assert "Worker stopped: SIGTERM" in out
    summary = [line for line in lines if line.startswith("Needs attention: set") and "Held by a fault" not in line]
    held = next(line for line in lines if line.startswith("Needs attention:") and "Alma said" in line)
    assert "[/] and [link=https://evil.example]click[/link] \\x1b[8mhidden" in held, held
    assert "\x1b" not in out and summary


def test_quiet_worker_says_nothing_but_its_summary(tmp_path: Path, sim: Simulator, clock: FakeClock) -> None:
    code, out = _run(tmp_path, sim, clock, ["-q", "resume", "--follow"], stop_after=20 * 60)
    assert code == 0, out
    assert "waiting:" not in out and "needs attention: set" not in out
    assert "Worker stopped: SIGTERM" in out
