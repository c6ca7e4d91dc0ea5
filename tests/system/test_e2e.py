"""End to end: the real ``hwf`` executable against ``hwf sim serve`` over real HTTP on 127.0.0.1."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import write_config
from tests.support.e2e import Served, hwf


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    server = Served(tmp_path, job_seconds=0.6)
    yield server
    server.stop()


def test_whole_workflow_over_http(served: Served, tmp_path: Path) -> None:
    config = write_config(tmp_path, served.url, preset="e2e")
    set_id = served.make_set("E2E titles", 30, profile="demo")
    assert hwf(config, "add", set_id).returncode == 0
    first = hwf(config, "advance", set_id)
    assert first.returncode == 3, first.stderr
    assert "NEEDS_FIX" in first.stderr and "hwf fix" in first.stderr
    dry = hwf(config, "fix", set_id)
    assert dry.returncode == 0, dry.stderr
    assert 'xsi:type="dcterms:URI"' in dry.stdout and "would change" in dry.stdout
    applied = hwf(config, "fix", set_id, "--apply")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    second = hwf(config, "advance", set_id)
    assert second.returncode == 0, second.stderr
    assert [r["kind"] for r in served.runs_for(set_id)] == ["copy", "migration", "integration"]
    status = json.loads(hwf(config, "status", "--json").stdout)
    assert status[0]["state"] == "verified" and status[0]["records"] == 30
    history = json.loads(hwf(config, "history", set_id, "--json").stdout)
    assert [e["to"] for e in history if e["kind"] == "transition"][-1] == "verified"
    report = hwf(config, "report", set_id, "--problems")
    assert report.returncode == 0 and report.stdout.count("\n") == 1  # header only: no problems


def test_resume_all_with_no_wait_and_json_formats(served: Served, tmp_path: Path) -> None:
    config = write_config(tmp_path, served.url, preset="e2e", format="xml")
    sets = [served.make_set(f"Batch {i}", 12, profile="clean", seed=i) for i in range(3)]
    for set_id in sets:
        assert hwf(config, "add", set_id).returncode == 0
    waiting = hwf(config, "resume", "--all", "--no-wait")
    assert waiting.returncode == 0, waiting.stderr
    done = hwf(config, "resume", "--all")
    assert done.returncode == 0, done.stderr
    states = {s["set"]: s["state"] for s in json.loads(hwf(config, "status", "--json").stdout)}
    assert states == dict.fromkeys(sets, "verified")
    for set_id in sets:
        assert [r["kind"] for r in served.runs_for(set_id)] == ["migration", "integration"]
