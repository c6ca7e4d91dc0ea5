"""Crash tests: SIGKILL a real ``hwf`` process at a chosen moment, then ``hwf resume --all``.

The moment is made deterministic without any test hook in hwf: the simulator holds the reply to the
job POST for a while, and the test holds SQLite's write lock, so hwf is provably between "Alma
answered" and "instance id committed" when it is killed.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import write_config
from tests.support.crash import MODES, assert_invariants, resume_until_verified
from tests.support.e2e import Served, hwf, start_hwf, wait_for

# Both handle integration modes: by API, and by a person pressing Run on an integration batch.
pytestmark = pytest.mark.parametrize("mode", MODES)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    server = Served(tmp_path, job_seconds=0.5)
    yield server
    server.stop()


def attempts(db: Path) -> list[tuple[str, str, str | None]]:
    with sqlite3.connect(db) as conn:
        return list(conn.execute("SELECT step, state, instance_id FROM attempts ORDER BY id"))


def test_kill_after_post_answered_before_instance_committed(served: Served, tmp_path: Path, mode: str) -> None:
    config = write_config(tmp_path, served.url, preset="e2e", integration=mode)
    db = tmp_path / "hwf.db"
    set_id = served.make_set("Crash titles", 20, profile="clean")
    assert hwf(config, "add", set_id).returncode == 0
    served.faults(run_reply_delay_s=1.0)
    proc = start_hwf(config, "advance", set_id)
    wait_for(lambda: served.runs_for(set_id), timeout=60)  # Alma created the instance; its reply is held
    lock = sqlite3.connect(db, timeout=30, isolation_level=None)
    lock.execute("BEGIN IMMEDIATE")  # hwf cannot commit anything from here on
    time.sleep(1.6)  # the reply has reached hwf, which now waits on the lock to record the instance id
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=10)
    lock.execute("ROLLBACK")
    lock.close()
    assert proc.returncode == -signal.SIGKILL
    migrate = [a for a in attempts(db) if a[0] == "migrate"]
    assert migrate == [("migrate", "submitting", None)], "the kill did not land in the window"
    served.faults(run_reply_delay_s=0)

    resume_until_verified(config, served)
    assert_invariants(config, served, {set_id: "clean"})
    runs = served.runs_for(set_id)
    status = json.loads(hwf(config, "status", "--json").stdout)
    assert status[0]["state"] == "verified"
    history = json.loads(hwf(config, "history", set_id, "--json").stdout)
    reconciled = [e for e in history if e["kind"] == "reconciled" and e["detail"].startswith("migrate:")]
    assert len(reconciled) == 1 and reconciled[0]["instance_id"] == runs[0]["instance_id"]


def test_kill_while_polling_then_resume_reattaches(served: Served, tmp_path: Path, mode: str) -> None:
    served.call("POST", "/_sim/faults", {})
    config = write_config(tmp_path, served.url, preset="e2e", integration=mode)
    set_id = served.make_set("Poll titles", 10, profile="clean")
    assert hwf(config, "add", set_id).returncode == 0
    proc = start_hwf(config, "advance", set_id)
    wait_for(lambda: any(a[2] for a in attempts(tmp_path / "hwf.db") if a[0] == "migrate"), timeout=60)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=10)
    resume_until_verified(config, served)
    assert_invariants(config, served, {set_id: "clean"})
