"""The structured log: JSON lines in ``[log] file`` (default beside the SQLite database), rotated by size,
with each HTTP call (Alma and the handle proxy), each event (transitions with their reason), each scheduler
decision, and never the Alma key."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from orchestrator.config import default_log_file
from orchestrator.simulator import Simulator
from tests.support import API_KEY, FakeClock, sim_wiring, write_config
from tests.support.ops import run, runner


@pytest.fixture
def wired(sim: Simulator, clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> Simulator:
    monkeypatch.setenv("HWF_ALMA_API_KEY", API_KEY)
    monkeypatch.setattr(runner, "wiring", sim_wiring(sim, clock))
    return sim


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_default_log_file_is_beside_the_sqlite_database(tmp_path: Path) -> None:
    assert default_log_file(f"sqlite:///{tmp_path}/work/hwf.db") == tmp_path / "work" / "hwf.log"
    assert default_log_file("postgresql+psycopg://u@h/db").name == "hwf.log"
    assert default_log_file("postgresql+psycopg://u@h/db").parent != Path(".")


def test_a_whole_run_is_in_the_log_and_the_key_never_is(tmp_path: Path, wired: Simulator) -> None:
    path = write_config(tmp_path, preset="cli")
    set_id = wired.create_set("Logged", wired.generate_records(12, profile="clean", seed=4))
    other = wired.create_set("Waits", wired.generate_records(5, profile="clean", seed=6))
    assert run(path, "add", set_id).exit_code == 0
    assert run(path, "add", other).exit_code == 0
    assert run(path, "resume", "--all", "--max-running", "1").exit_code == 0
    assert run(path, "status").exit_code == 0
    assert run(path, "history", set_id).exit_code == 0
    log = tmp_path / "hwf.log"  # beside hwf.db
    raw = log.read_text(encoding="utf-8")
    assert API_KEY not in raw and API_KEY[:12] not in raw
    lines = _lines(log)
    http = [x for x in lines if x.get("event") == "http"]
    alma = [x for x in http if x["remote"] == "alma"]
    assert alma and all({"method", "path", "status", "ms", "alma_code", "tracking_id"} <= x.keys() for x in alma)
    assert {"GET", "POST"} <= {x["method"] for x in alma}
    assert any(x["path"].startswith("/conf/jobs/") and x["method"] == "POST" for x in alma)
    assert all("?" not in x["path"] and "apikey" not in x["path"].lower() for x in http)
    assert any(x["remote"] == "resolver" and x["path"].startswith("/api/handles/") for x in http)
    transitions = [x for x in lines if x.get("event") == "audit" and x["kind"] == "transition"]
    mine = [x["to"] for x in transitions if x["set"] == set_id]
    assert mine == ["identifiers_copied", "migrated", "integrated", "verified"]
    assert all(x["detail"] for x in transitions)
    decisions = [x for x in lines if x.get("event") == "schedule"]
    assert any(x["decision"] == "wait" and "slot" in x["reason"] for x in decisions), decisions
    assert any(x["decision"] == "run" for x in decisions)
    assert all(x["at"].endswith("Z") and x["level"] in ("info", "warning") for x in lines)


def test_an_alma_error_is_logged_with_its_code_and_tracking_id(tmp_path: Path, wired: Simulator) -> None:
    path = write_config(tmp_path, preset="cli")
    assert run(path, "add", "999999999").exit_code != 0  # the simulator does not know this set
    errors = [x for x in _lines(tmp_path / "hwf.log") if x.get("event") == "http" and x["status"] >= 400]
    assert errors and errors[0]["alma_code"] and errors[0]["path"] == "/conf/sets/999999999"


def test_the_log_rotates_by_size(tmp_path: Path, wired: Simulator) -> None:
    path = write_config(tmp_path, preset="cli", log={"file": "logs/run.log", "max_bytes": 10_000, "backups": 2})
    set_id = wired.create_set("Rotated", wired.generate_records(40, profile="clean", seed=5))
    assert run(path, "add", set_id).exit_code == 0
    assert run(path, "advance", set_id).exit_code == 0
    names = sorted(p.name for p in (tmp_path / "logs").iterdir())
    assert names == ["run.log", "run.log.1", "run.log.2"], names
    assert all(p.stat().st_size <= 10_000 + 4_000 for p in (tmp_path / "logs").iterdir())


def test_no_log_file_when_disabled(tmp_path: Path, wired: Simulator) -> None:
    path = write_config(tmp_path, preset="cli", log={"enabled": False})
    assert run(path, "status").exit_code == 0
    assert not (tmp_path / "hwf.log").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_an_unwritable_log_file_is_one_line_naming_it_exit_2(tmp_path: Path, wired: Simulator) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        path = write_config(tmp_path, preset="cli", log={"file": "locked/sub/hwf.log"})
        result = run(path, "status")
    finally:
        locked.chmod(0o700)
    assert result.exit_code == 2
    assert result.output.startswith("Error: cannot write the log file ") and str(locked / "sub") in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_a_log_path_that_is_a_directory_is_one_line_exit_2(tmp_path: Path, wired: Simulator) -> None:
    (tmp_path / "adir").mkdir()
    path = write_config(tmp_path, preset="cli", log={"file": "adir"})
    result = run(path, "status")
    assert result.exit_code == 2, result.output
    assert result.output.startswith("Error: cannot write the log file ") and "adir" in result.output
    assert "Traceback" not in result.output


def test_a_log_file_that_cannot_be_created_is_one_line_exit_2(tmp_path: Path, wired: Simulator) -> None:
    path = write_config(tmp_path, preset="cli", log={"file": "/proc/hwf-test/hwf.log"})  # not even root can make it
    result = run(path, "status")
    assert result.exit_code == 2, result.output
    assert result.output.startswith("Error: cannot write the log file /proc/hwf-test/hwf.log")
    assert len(result.output.strip().splitlines()) == 1


def test_each_record_is_formatted_once_and_other_writers_count_toward_the_size(tmp_path: Path) -> None:
    """Two handlers on one file stand for two hwf processes appending to one log: the rollover goes by the
    file's real size, whoever wrote it, and each record is formatted once (the stdlib handler formats twice)."""
    import logging

    from orchestrator.logs import JsonLines, RotatingLines

    formatted = 0

    class Counting(JsonLines):
        def format(self, record: logging.LogRecord) -> str:
            nonlocal formatted
            formatted += 1
            return super().format(record)

    path = tmp_path / "shared.log"
    first, second = (RotatingLines(path, maxBytes=2_000, backupCount=3, encoding="utf-8") for _ in range(2))
    for handler in (first, second):
        handler.setFormatter(Counting())
    record = logging.LogRecord("orchestrator.http", logging.INFO, __file__, 1, "x" * 80, None, None)
    try:
        for i in range(40):
            (first if i % 2 else second).handle(record)
    finally:
        first.close()
        second.close()
    assert formatted == 40
    sizes = [p.stat().st_size for p in sorted(tmp_path.iterdir())]
    assert len(sizes) >= 3 and all(size <= 2_000 for size in sizes), sizes  # neither handler's own count


def test_a_log_that_is_not_a_regular_file_never_rolls_over(tmp_path: Path) -> None:
    import logging

    from orchestrator.logs import JsonLines, RotatingLines

    fifo = tmp_path / "log.fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        handler = RotatingLines(fifo, maxBytes=100, backupCount=2, encoding="utf-8")
        handler.setFormatter(JsonLines())
        record = logging.LogRecord("orchestrator", logging.INFO, __file__, 1, "y" * 200, None, None)
        for _ in range(3):
            handler.handle(record)
        handler.close()
        assert os.read(reader, 100_000).count(b"\n") == 3  # every line arrived, none went to a backup file
    finally:
        os.close(reader)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.fifo"]


def test_levels_mean_something_attention_is_a_warning_a_fault_an_error(tmp_path: Path, wired: Simulator) -> None:
    import logging

    from orchestrator.logs import event_level

    path = write_config(tmp_path, preset="cli")
    bad = wired.create_set("Problem titles", wired.generate_records(30, profile="problems", seed=9))
    assert run(path, "add", bad).exit_code == 0  # its first check stops it
    lines = _lines(tmp_path / "hwf.log")
    audit = {x["kind"]: x["level"] for x in lines if x.get("event") == "audit" and x["set"] == bad}
    assert audit["attention"] == "warning" and audit["added"] == "info" and audit["check"] == "info"
    assert event_level("attention", "fault") == logging.ERROR
    assert event_level("attention", "records") == logging.WARNING
    assert event_level("transition") == logging.INFO


def test_a_fifo_no_one_reads_never_hangs_a_command(tmp_path: Path, wired: Simulator) -> None:
    """The log is opened without blocking (as the key file is read): one line says the log is off, and the
    command does its work."""
    import threading

    fifo = tmp_path / "log.fifo"
    os.mkfifo(fifo)
    path = write_config(tmp_path, preset="cli", log={"file": "log.fifo"})
    set_id = wired.create_set("Piped", wired.generate_records(3, profile="clean", seed=7))
    results: list[Any] = []
    worker = threading.Thread(target=lambda: results.append(run(path, "add", set_id)), daemon=True)
    worker.start()
    worker.join(20)
    if worker.is_alive():  # the command waits for a reader (the defect): give it one, so the test can end
        os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))
        worker.join(20)
    assert results and not worker.is_alive(), "the command hung on a FIFO with no reader"
    result = results[0]
    assert result.exit_code == 0, result.output
    said = [line for line in result.output.splitlines() if "log file" in line]
    assert said == [
        f"hwf: cannot write the log file {fifo}: it is a FIFO that no process reads; going on without the log"
    ]
    assert "Traceback" not in result.output


def test_a_log_that_fails_says_one_line_and_never_changes_the_outcome(tmp_path: Path, wired: Simulator) -> None:
    """/dev/full takes the open and fails every write: one line, once, no logging tracebacks, exit 0."""
    path = write_config(tmp_path, preset="cli", log={"file": "/dev/full"})
    set_id = wired.create_set("Full disk", wired.generate_records(6, profile="clean", seed=8))
    assert run(path, "add", set_id).exit_code == 0
    result = run(path, "advance", set_id)
    assert result.exit_code == 0, result.output
    said = [line for line in result.output.splitlines() if "log file" in line]
    assert said == ["hwf: cannot write the log file /dev/full: No space left on device; going on without the log"]
    assert "Traceback" not in result.output and "Logging error" not in result.output
    status = run(path, "status", set_id, "--json")
    assert status.exit_code == 0 and '"verified"' in status.output, status.output
