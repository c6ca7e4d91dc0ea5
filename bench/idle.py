"""What an idle worker costs: a real ``hwf resume --all --follow`` while Alma's daily quota is spent.

Three clean sets against ``hwf sim serve`` over HTTP on 127.0.0.1; one set's migration job is submitted first
(``hwf advance --no-wait``), so a poll falls due while the quota is spent (what once made the worker spin). Then
the simulator's daily counter is set to 0 (every call answers 429 DAILY_THRESHOLD) and the worker is started with
``[alma] quota_reset`` an hour behind the clock, so the reset is about 23 hours away. Once the worker says it waits
for the quota, the bench measures it for ``--minutes`` (10 by default):

- CPU seconds of the worker process (user + system, ``/proc/PID/stat``);
- its write system calls and bytes written to any file (``/proc/PID/io`` ``syscw``, ``wchar``);
- database commits: how often ``PRAGMA data_version``, read every 0.1 s from another connection, changed (each
  change is at least one commit by the worker), and how much the database and its WAL file grew;
- Alma requests the simulator answered meanwhile.

    .venv/bin/python -m bench.idle               # 10 minutes
    .venv/bin/python -m bench.idle --minutes 1   # a shorter run (its numbers are for 1 minute, not 10)

Not a test: no PASS/MISS target; the numbers go into README ("How hwf keeps its promises").
"""

from __future__ import annotations

import argparse
import os
import signal
import sqlite3
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tests.support.config import write_config
from tests.support.crash import add_sets, query, serve
from tests.support.e2e import Served, hwf, start_hwf, wait_for

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (``/proc/PID/stat`` fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def io_counters(pid: int) -> dict[str, int]:
    """``/proc/PID/io``: syscw (write calls), wchar (bytes written)."""
    pairs = (line.split(": ") for line in Path(f"/proc/{pid}/io").read_text().splitlines())
    return {key: int(value) for key, value in pairs}


class CommitCounter:
    """Counts changes of ``PRAGMA data_version`` seen by a connection of its own (commits by others)."""

    def __init__(self, path: Path) -> None:
        self._path, self.changes = path, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        conn = sqlite3.connect(self._path)
        last = conn.execute("PRAGMA data_version").fetchone()[0]
        while not self._stop.wait(0.1):
            now = conn.execute("PRAGMA data_version").fetchone()[0]
            if now != last:
                self.changes, last = self.changes + 1, now
        conn.close()

    def __enter__(self) -> CommitCounter:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _alma_requests(served: Served) -> int:
    requests: dict[str, int] = served.state()["stats"]["requests"]
    return sum(n for kind, n in requests.items() if kind not in {"admin", "handles_api", "handle_redirect"})


def measure(folder: Path, minutes: float) -> dict[str, Any]:
    served = serve(folder, job_seconds=30)
    try:
        reset = (datetime.now(UTC) - timedelta(hours=1)).strftime("%H:%M")
        config = write_config(folder, served.url, preset="crash", quota_reset=reset, timezone="UTC")
        sets = list(add_sets(config, served, ["clean"] * 3, records=4, prefix="Idle"))
        assert hwf(config, "advance", sets[0], "--no-wait").returncode == 0
        served.faults(daily_remaining=0)
        db = folder / "hwf.db"
        url = f"sqlite:///{db}"
        proc = start_hwf(config, "resume", "--all", "--follow")
        try:
            wait_for(
                lambda: any("quota is spent" in (r or "") for (r,) in query(url, "SELECT reason FROM workers")),
                timeout=60,
                what="the worker waiting for the quota",
            )
            time.sleep(2.0)
            cpu0, io0, calls0 = cpu_seconds(proc.pid), io_counters(proc.pid), _alma_requests(served)
            db0, wal0 = _size(db), _size(db.with_name(db.name + "-wal"))
            with CommitCounter(db) as commits:
                time.sleep(minutes * 60)
            cpu1, io1, calls1 = cpu_seconds(proc.pid), io_counters(proc.pid), _alma_requests(served)
            db1, wal1 = _size(db), _size(db.with_name(db.name + "-wal"))
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    finally:
        served.stop()
    return {
        "minutes": minutes,
        "cpu_seconds": round(cpu1 - cpu0, 2),
        "write_calls": io1["syscw"] - io0["syscw"],
        "bytes_written": io1["wchar"] - io0["wchar"],
        "commits_seen": commits.changes,
        "db_growth_bytes": db1 - db0,
        "wal_growth_bytes": wal1 - wal0,
        "alma_requests": calls1 - calls0,
        "summary": next((line for line in out.splitlines() if " passes" in line), out.strip()[-300:]),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--minutes", type=float, default=10.0, help="how long to measure the idle worker")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="hwf-idle-") as tmp:
        found = measure(Path(tmp), args.minutes)
    print(f"idle worker, spent quota, {found['minutes']:g} minutes (hwf resume --all --follow, 3 sets, 1 job running)")
    for key in (
        "cpu_seconds",
        "write_calls",
        "bytes_written",
        "commits_seen",
        "db_growth_bytes",
        "wal_growth_bytes",
        "alma_requests",
    ):
        print(f"  {key:18} {found[key]}")
    print(f"  worker said: {found['summary']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
