"""Benchmark of the read side at scale (issue 6): ``hwf status`` over 10,000 sets and ``hwf history`` of
a set with 100,000 events, each in under 1 s.

Run: ``.venv/bin/python -m bench.status_history`` (``--help`` for sizes). A SQLite database is filled
directly (bulk inserts: sets in every state, records, attempts, events), then measured two ways:
- the service calls (``views.status``, ``nextstep.status`` (what ``hwf status`` reads: each set with what happens
  next), ``views.history`` consumed to the end), best of 3;
- the real command line in a subprocess (``hwf --config ... status`` / ``history SET``, with and without
  ``--json``, output to a pipe), best of 3, which includes Python's start-up and hwf's imports; the
  start-up alone (``hwf version``) is printed for reference.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import insert

from orchestrator.domain.steps import Stage
from orchestrator.service import nextstep, views
from orchestrator.store.db import open_database
from orchestrator.store.models import AlmaSet, Attempt, AttemptState, Event, Record

from .common import API_KEY, Results, header, machine, make_config, make_context

HWF = Path(sys.executable).with_name("hwf")
T0 = datetime(2026, 2, 2, 9, 0, tzinfo=UTC)
STAGES = list(Stage)
ATTENTION = "migrate job M2234567890000561 instance 7593466 ended COMPLETED_FAILED; see the job report in Alma"
WAITING = "migrate job M2234567890000561 instance 7593466 is running"


def fill(url: str, *, sets: int, records: int, events: int) -> str:
    """Fill the database; returns the Alma set id of the set with ``events`` events."""
    sessions = open_database(url)
    with sessions.begin() as session:
        set_rows = []
        for k in range(sets):
            stage = STAGES[k % len(STAGES)]
            set_rows.append(
                {
                    "id": k + 1,
                    "alma_set_id": f"{7_000_000_000 + k * 7}0004641",
                    "name": f"Theses (batch {k + 1}/{sets})",
                    "stage": stage,
                    "attention": "migrate job M2 instance 9 ended COMPLETED_FAILED; see the job report"
                    if k % 17 == 0
                    else None,
                    "attention_kind": "job" if k % 17 == 0 else None,
                    "waiting": WAITING if k % 5 == 2 else None,
                    "record_count": records,
                    "version": 1,
                    "created_at": T0 + timedelta(seconds=k),
                    "updated_at": T0 + timedelta(seconds=k),
                }
            )
        session.execute(insert(AlmaSet), set_rows)
        record_rows = [
            {
                "set_id": k + 1,
                "mms_id": f"99{k:08d}{r:04d}4641",
                "title": f"Title {r} of set {k}",
                "handle": f"11084/{k * records + r}",
                "preflight": "READY",
                "excluded": r == 0 and k % 3 == 0,
                "removed_from_alma_set": False,
                "verdict": "OK" if STAGES[k % len(STAGES)] is Stage.VERIFIED else None,
            }
            for k in range(sets)
            for r in range(records)
        ]
        for start in range(0, len(record_rows), 50_000):
            session.execute(insert(Record), record_rows[start : start + 50_000])
        attempt_rows = []
        for k in range(sets):
            for n, step in enumerate(("copy_identifiers", "migrate")):
                running = n == 1 and k % 5 == 2
                attempt_rows.append(
                    {
                        "set_id": k + 1,
                        "step": step,
                        "number": 1,
                        "token": f"hwf-{k:08x}{n}",
                        "job_id": "M2234567890000561",
                        "instance_id": f"{759_000_000 + k * 2 + n}0004641",
                        "state": AttemptState.SUBMITTED if running else AttemptState.FINISHED,
                        "status": "RUNNING" if running else "COMPLETED_SUCCESS",
                        "progress": 42.0 if running else 100.0,
                        "begun_at": T0,
                        "created_at": T0,
                        "updated_at": T0,
                    }
                )
        session.execute(insert(Attempt), attempt_rows)
    big_id = sets + 1
    big_alma = "9999999990004641"
    with sessions.begin() as session:
        session.execute(
            insert(AlmaSet),
            [
                {
                    "id": big_id,
                    "alma_set_id": big_alma,
                    "name": "The long story",
                    "stage": Stage.INTEGRATED,
                    "record_count": records,
                    "version": 1,
                    "created_at": T0,
                    "updated_at": T0,
                }
            ],
        )
    kinds = ("waiting", "submitted", "job_finished", "transition", "check")
    for start in range(0, events, 20_000):
        with sessions.begin() as session:
            session.execute(
                insert(Event),
                [
                    {
                        "set_id": big_id,
                        "at": T0 + timedelta(seconds=i),
                        "kind": kinds[i % len(kinds)],
                        "detail": f"migrate: job M2234567890000561 instance {759_000_000 + i}0004641 event {i}",
                        "data": {"job_id": "M2234567890000561", "instance_id": f"{759_000_000 + i}0004641", "n": i},
                        "actor": "bench:1",
                    }
                    for i in range(start, min(events, start + 20_000))
                ],
            )
    bind = sessions.kw["bind"]
    bind.dispose()
    return big_alma


def best(runs: int, fn: Callable[[], Any]) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(runs):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return min(times), result


def cli(config: Path, *args: str) -> tuple[float, int]:
    """Best of 3 wall times of ``hwf --config CONFIG ARGS`` (output to a pipe), and the bytes it printed."""
    env = {**os.environ, "HWF_ALMA_API_KEY": API_KEY}
    times, size = [], 0
    for _ in range(3):
        started = time.perf_counter()
        done = subprocess.run([str(HWF), "--config", str(config), *args], capture_output=True, env=env, check=False)
        times.append(time.perf_counter() - started)
        if done.returncode != 0:
            raise RuntimeError(f"hwf {' '.join(args)} exited {done.returncode}: {done.stderr.decode()[:500]}")
        size = len(done.stdout)
    return min(times), size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", type=int, default=10_000)
    parser.add_argument("--records", type=int, default=20, help="records per set")
    parser.add_argument("--events", type=int, default=100_000, help="events of the one long set")
    args = parser.parse_args()
    res = Results("status/history benchmark")
    header(f"hwf status over {args.sets:,} sets, hwf history of a set with {args.events:,} events")
    res.note(machine())
    with tempfile.TemporaryDirectory(prefix="hwf-bench-status-") as tmp:
        workdir = Path(tmp)
        config = make_config(workdir, "http://127.0.0.1:9")
        started = time.perf_counter()
        big = fill(config.database_url, sets=args.sets, records=args.records, events=args.events)
        res.note(
            f"database filled in {time.perf_counter() - started:.1f} s: {args.sets + 1:,} sets, "
            f"{(args.sets + 1) * args.records:,} records, {args.sets * 2:,} attempts, {args.events:,} events "
            f"({(workdir / 'hwf.db').stat().st_size / 1e6:.0f} MB)"
        )
        config_path = workdir / "hwf.toml"
        config_path.write_text(
            f'[database]\nurl = "{config.database_url}"\n[alma]\nbase_url = "http://127.0.0.1:9"\n'
            'institution_code = "01GCL_INST"\n[alma.jobs]\ncopy_identifiers = "M1234567890000561"\n'
            'handle_migration = "M2234567890000561"\nhandle_integration = "M50700"\n[handles]\nprefix = "11084"\n'
            '[primo]\ndomain = "grinnell.primo.exlibrisgroup.com"\nview = "01GCL_INST:GCL"\n',
            encoding="utf-8",
        )
        ctx = make_context(config)
        try:
            status_s, rows = best(3, lambda: views.status(ctx))
            next_s, _ = best(3, lambda: nextstep.status(ctx))  # what `hwf status` reads: with each set's next
            history_s, count = best(3, lambda: sum(1 for _ in views.history(ctx, big)))
        finally:
            ctx.close()
        res.measure("service_status", status_s, f"service: views.status() of {len(rows):,} sets: {status_s:.3f} s")
        res.measure("service_status_next", next_s, f"service: nextstep.status() (with next): {next_s:.3f} s")
        res.measure("service_history", history_s, f"service: views.history() of {count:,} events: {history_s:.3f} s")
        startup, _ = cli(config_path, "version")
        res.measure("cli_startup", startup, f"CLI start-up alone (`hwf version`): {startup:.3f} s")
        measured = {}
        for label, argv in (
            ("status", ("status",)),
            ("status --json", ("status", "--json")),
            ("history", ("history", big)),
            ("history --json", ("history", big, "--json")),
        ):
            seconds, size = cli(config_path, *argv)
            measured[label] = seconds
            res.measure(
                f"cli_{label}", seconds, f"CLI `hwf {' '.join(argv)}`: {seconds:.3f} s ({size / 1e6:.1f} MB out)"
            )
    res.target("status service < 1 s", status_s < 1.0, f"{status_s:.3f} s for {args.sets:,} sets")
    res.target("status service with next < 1 s", next_s < 1.0, f"{next_s:.3f} s for {args.sets:,} sets")
    res.target("history service < 1 s", history_s < 1.0, f"{history_s:.3f} s for {args.events:,} events")
    for label, seconds in measured.items():
        res.target(f"`hwf {label}` (with start-up) < 1 s", seconds < 1.0, f"{seconds:.3f} s")
    res.summary()
    if not res.all_met:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
