"""End to end, the real ``hwf`` against ``hwf sim serve``: problems show on the day a set is added, ``hwf check
--all`` says which sets cannot go on, and every command hwf prints to go on works as printed: run it, and the
attention changes (rewritten to what remains, or cleared) until the set is verified."""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import write_config
from tests.support.e2e import Served, hwf

GO_ON = re.compile(r"To go on: `(hwf [^`]+)`")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    server = Served(tmp_path, job_seconds=0.3)
    yield server
    server.stop()


def attention(config: Path, set_id: str) -> str | None:
    status = hwf(config, "status", set_id, "--json")
    assert status.returncode == 0, status.stderr
    data = json.loads(status.stdout)
    value = (data[0] if isinstance(data, list) else data)["attention"]
    return str(value) if value is not None else None


def run_hint(config: Path, command: str) -> str:
    """Run a printed command as a person would (TEXT is where they type their reason); its output."""
    args = ["because the hint said so" if a == "TEXT" else a for a in shlex.split(command)]
    assert args[0] == "hwf"
    done = hwf(config, *args[1:])
    assert done.returncode == 0, f"{command}: {done.stdout}{done.stderr}"
    return done.stdout


def test_add_checks_at_once_and_check_all_names_the_sets_that_cannot_go_on(served: Served, tmp_path: Path) -> None:
    config = write_config(tmp_path, served.url, preset="e2e")
    good = served.make_set("Good titles", 8, profile="demo", seed=2)
    bad = served.make_set("Problem titles", 30, profile="problems", seed=9)
    added = hwf(config, "add", good)
    assert added.returncode == 0 and "needs attention" not in added.stdout, added.stdout
    added = hwf(config, "add", bad)
    assert added.returncode == 0, added.stderr
    assert "needs attention: " in added.stdout and GO_ON.search(added.stdout), added.stdout  # day one
    every = hwf(config, "check", "--all")
    assert every.returncode == 3, every.stdout + every.stderr
    lines = every.stdout.splitlines()
    assert any(line.startswith(f"{good} (Good titles): can go on") for line in lines), every.stdout
    assert any(line.startswith(f"{bad} (Problem titles): cannot go on") for line in lines), every.stdout
    assert "2 sets checked: 1 cannot go on (exit 3)." in every.stdout
    as_json = hwf(config, "check", "--all", "--json")
    assert as_json.returncode == 3
    verdicts = {s["set"]: s["can_go_on"] for s in json.loads(as_json.stdout)}
    assert verdicts == {good: True, bad: False}
    both = hwf(config, "check", good, "--all")
    assert both.returncode == 2 and "give a SET, or --all" in both.stderr


def test_every_printed_command_to_go_on_holds(served: Served, tmp_path: Path) -> None:
    config = write_config(tmp_path, served.url, preset="e2e")
    set_id = served.make_set("Problem titles", 30, profile="problems", seed=9)
    assert hwf(config, "add", set_id).returncode == 0
    seen: list[str] = []
    for _ in range(8):
        advanced = hwf(config, "advance", set_id)
        if advanced.returncode == 0:
            break
        assert advanced.returncode == 3, advanced.stderr
        before = attention(config, set_id)
        assert before is not None and before in advanced.stderr  # the reason printed is the one stored
        found = GO_ON.search(advanced.stderr)
        assert found is not None, advanced.stderr
        command = found.group(1)
        # The same command in the overview and in `hwf check`.
        overview = json.loads(hwf(config, "overview", "--json").stdout)
        assert [a["command"] for a in overview["attention"] if a["set"] == set_id] == [command]
        checked = json.loads(hwf(config, "check", set_id, "--json").stdout)
        assert checked["command"] == command
        run_hint(config, command)
        assert attention(config, set_id) != before, f"{command} left the attention as it was"
        seen.append(command.split()[1])
    else:
        pytest.fail(f"not verified after the commands {seen}")
    assert "exclude" in seen and "fix" in seen, seen
    assert json.loads(hwf(config, "status", set_id, "--json").stdout)[0]["state"] == "verified"
