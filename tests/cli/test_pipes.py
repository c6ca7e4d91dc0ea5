"""A reader that leaves early (``hwf report --json | head``) ends every command quietly: no "Broken pipe" line,
no traceback on stderr. The real ``hwf`` process, its stdout a pipe closed before it writes."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from orchestrator.cli import base as cli
from orchestrator.simulator import Simulator
from tests.support import API_KEY, FakeClock, WiredRunner, make_set, sim_wiring, write_config
from tests.support.e2e import HWF

runner = WiredRunner()


@pytest.fixture
def registered(tmp_path: Path, sim: Simulator, clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, str]:
    path = write_config(tmp_path, preset="cli")
    monkeypatch.setenv("HWF_ALMA_API_KEY", API_KEY)
    runner.wiring = sim_wiring(sim, clock)
    set_id = make_set(sim, 12, profile="demo", seed=2)
    assert runner.invoke(cli.app, ["--config", str(path), "add", set_id]).exit_code == 0
    return path, set_id


def test_a_closed_pipe_ends_every_command_quietly(registered: tuple[Path, str]) -> None:
    path, set_id = registered
    env = {k: v for k, v in os.environ.items() if not k.startswith("HWF_")} | {"HWF_ALMA_API_KEY": API_KEY}
    for args in (
        ["report", set_id, "--json"],
        ["report", set_id],
        ["status", "--json"],
        ["status"],
        ["history", set_id, "--json"],
        ["history", set_id],
        ["overview", "--json"],
        ["--help"],
    ):
        proc = subprocess.Popen(
            [HWF, "--config", str(path), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
        )
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()  # the reader is gone before the first line
        stderr = proc.stderr.read().decode()
        proc.stderr.close()
        assert proc.wait(timeout=60) in (0, 1), args
        assert stderr == "", f"{args}: {stderr}"
