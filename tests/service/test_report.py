"""`hwf report`: CSV formula injection neutralised (issue 13 item 7), and -o writing regular files atomically
and anything else in place (item 6)."""

from __future__ import annotations

import csv
import io
import os
import sqlite3
import stat
import threading
from pathlib import Path
from typing import Any

import pytest

from orchestrator.cli import base as cli
from orchestrator.service.report import csv_safe
from orchestrator.simulator import Simulator
from tests.support import API_KEY, FakeClock, WiredRunner, make_set, sim_wiring, write_config

runner = WiredRunner()
TITLES = ['=HYPERLINK("http://x","y")', "+1+2", "-3", "@SUM(A1)", "\tTab", "\rCR", "Plain title"]


@pytest.fixture
def wired(tmp_path: Path, sim: Simulator, clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, str]:
    path = write_config(tmp_path, preset="cli", poll_interval_seconds=None)
    monkeypatch.setenv("HWF_ALMA_API_KEY", API_KEY)
    monkeypatch.setattr(runner, "wiring", sim_wiring(sim, clock))
    set_id = make_set(sim, len(TITLES), name="R", seed=3)
    assert run(path, "add", set_id).exit_code == 0
    with sqlite3.connect(tmp_path / "hwf.db") as db:
        ids = [row[0] for row in db.execute("SELECT id FROM records ORDER BY id")]
        for record_id, title in zip(ids, TITLES, strict=True):
            db.execute("UPDATE records SET title = ? WHERE id = ?", (title, record_id))
    return path, set_id


def run(path: Path, *args: str) -> Any:
    return runner.invoke(cli.app, ["--config", str(path), *args])


def _titles(text: str) -> list[str]:
    return [row[2] for row in csv.reader(io.StringIO(text))][1:]


def test_csv_safe():
    assert [csv_safe(t) for t in TITLES] == ["'" + t for t in TITLES[:-1]] + ["Plain title"]
    assert csv_safe("") == "" and csv_safe("a=b") == "a=b"


def test_report_csv_neutralises_formulas_and_raw_keeps_them(wired):
    path, set_id = wired
    safe = run(path, "report", set_id)
    assert safe.exit_code == 0, safe.output
    assert _titles(safe.stdout) == ["'" + t for t in TITLES[:-1]] + ["Plain title"]
    raw = run(path, "report", set_id, "--raw")
    assert raw.exit_code == 0 and _titles(raw.stdout) == TITLES


def test_report_json_keeps_titles_verbatim(wired, tmp_path):
    import json

    path, set_id = wired
    out = tmp_path / "r.json"
    assert run(path, "report", set_id, "--format", "json", "-o", str(out)).exit_code == 0
    assert [r["title"] for r in json.loads(out.read_text())] == TITLES


def test_regular_file_is_replaced_atomically_keeping_its_mode(wired, tmp_path):
    path, set_id = wired
    out = tmp_path / "report.csv"
    out.write_text("old\n")
    out.chmod(0o640)
    before = out.stat().st_ino
    result = run(path, "report", set_id, "-o", str(out))
    assert result.exit_code == 0 and "Wrote" in result.stderr
    assert out.read_text().startswith("MMS ID,") and out.stat().st_ino != before  # renamed into place
    assert stat.S_IMODE(out.stat().st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".report")) == []


def test_symlink_is_kept_and_its_target_written(wired, tmp_path):
    path, set_id = wired
    target = tmp_path / "real.csv"
    target.write_text("old\n")
    link = tmp_path / "link.csv"
    link.symlink_to(target)
    assert run(path, "report", set_id, "-o", str(link)).exit_code == 0
    assert link.is_symlink() and target.read_text().startswith("MMS ID,")


def test_fifo_is_written_in_place(wired, tmp_path):
    path, set_id = wired
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    result = run(path, "report", set_id, "-o", str(fifo))
    reader.join(timeout=30)
    assert result.exit_code == 0
    assert stat.S_ISFIFO(fifo.stat().st_mode) and got and got[0].startswith(b"MMS ID,")


def test_directory_is_refused(wired, tmp_path):
    path, set_id = wired
    result = run(path, "report", set_id, "-o", str(tmp_path))
    assert result.exit_code == 2 and "is a directory" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_missing_directory_is_refused(wired, tmp_path):
    path, set_id = wired
    result = run(path, "report", set_id, "-o", str(tmp_path / "no" / "r.csv"))
    assert result.exit_code == 2 and "does not exist" in result.stderr


def test_full_device_is_one_line_and_stays_a_device(wired, tmp_path):
    # A private /dev/full (same device numbers) so that a regression replaces only a file in tmp_path.
    path, set_id = wired
    full = tmp_path / "full"
    try:
        os.mknod(full, stat.S_IFCHR | 0o666, os.makedev(1, 7))
    except (PermissionError, OSError):
        pytest.skip("cannot create a character device here")
    result = run(path, "report", set_id, "-o", str(full))
    assert result.exit_code == 1
    assert result.stderr.strip() == f"Error: cannot write {full}: No space left on device"
    assert stat.S_ISCHR(full.stat().st_mode)


def test_unknown_set_writes_nothing(wired, tmp_path):
    path, _ = wired
    out = tmp_path / "r.csv"
    assert run(path, "report", "nope", "-o", str(out)).exit_code == 2
    assert not out.exists()


def test_problems_before_verification_lists_only_records_that_need_something(
    tmp_path: Path, sim: Simulator, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_config(tmp_path, preset="cli", poll_interval_seconds=None)
    monkeypatch.setenv("HWF_ALMA_API_KEY", API_KEY)
    monkeypatch.setattr(runner, "wiring", sim_wiring(sim, clock))
    fine = make_set(sim, 24, profile="demo", name="Fine", seed=2)  # READY and NEEDS_COPY: nothing to do yet
    assert run(path, "add", fine).exit_code == 0
    rows = list(csv.DictReader(io.StringIO(run(path, "report", fine, "--problems").stdout)))
    assert rows == []
    assert len(list(csv.DictReader(io.StringIO(run(path, "report", fine).stdout)))) == 24
    bad = make_set(sim, 30, profile="problems", name="Bad", seed=9)
    assert run(path, "add", bad).exit_code == 0
    rows = list(csv.DictReader(io.StringIO(run(path, "report", bad, "--problems").stdout)))
    assert rows and all(r["Preflight"] not in ("READY", "NEEDS_COPY") for r in rows)
    assert len(rows) < 30
