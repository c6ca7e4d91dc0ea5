"""Tools for crash tests and the soak (bench/soak.py): real ``hwf`` processes against ``hwf sim serve``,
killed with SIGKILL, and the invariants every crash must leave intact.

The invariants, after a final ``hwf resume --all``: every set ``verified``; in the simulator's log of
accepted job runs, every record went through each of its steps exactly once and in the workflow's order (a
record's steps are the runs whose members included it: its own set's copy and migration, and in manual
integration mode the integration batch's run); in hwf's audit trail, each transition once and in order.

Their configuration: ``write_config(tmp_path, url, preset="crash", integration=mode)``. In manual integration
mode (``integration="manual"``) the tests play the operator who presses Run on the
Handle integration profile when hwf announces an integration batch (``press_batches``).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import threading
import time
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from orchestrator.config import load_config
from orchestrator.service import workflow
from orchestrator.service.reporting import NullReporter
from orchestrator.wiring import build_context
from tests.support.e2e import E2E_KEY, Served, hwf, start

ORDER = ["created", "identifiers_copied", "migrated", "integrated", "verified"]
KINDS = {"clean": ["migration", "integration"], "demo": ["copy", "migration", "integration"]}


MODES = ["api", "manual"]  # handle_integration_mode: the crash and concurrency tests run in both


def serve(tmp_path: Path, job_seconds: float = 0.4, **scenario: Any) -> Served:
    """``hwf sim serve`` with no per-second cap and no per-hour job cap unless given."""
    scenario.setdefault("per_second_limit", 0)
    scenario.setdefault("max_runs_per_hour", 1000)
    return Served(tmp_path, job_seconds=job_seconds, **scenario)


def query(db_url: str, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    """Rows of one read, on SQLite or PostgreSQL, without holding anything open afterwards."""
    engine = create_engine(db_url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(sql), params)]
    finally:
        engine.dispose()


def kill(proc: subprocess.Popen[str]) -> int | None:
    """SIGKILL ``proc`` (if it still runs) and reap it; returns its exit code if it had ended by itself."""
    ended = proc.poll()
    if ended is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    return ended


def status(config: Path) -> list[dict[str, Any]]:
    result = hwf(config, "status", "--json")
    assert result.returncode == 0, result.stderr
    data: list[dict[str, Any]] = json.loads(result.stdout)
    return data


def finish(
    config: Path, served: Served, sets: Mapping[str, str], *, rounds: int = 6, timeout: float = 300, tries: int = 1
) -> None:
    """The final ``hwf resume --all``, playing the operator for sets that need ``hwf fix --apply`` and, in
    manual integration mode, pressing Run for the integration batches hwf announces."""
    for _ in range(rounds):
        result = hwf(config, "resume", "--all", timeout=timeout)
        if result.returncode == 0:
            if all(row["state"] == "verified" for row in status(config)):
                return
            assert press_batches(config, served), f"sets wait, but for no integration batch: {status(config)}"
            continue
        assert result.returncode == 3, f"resume failed ({result.returncode}): {result.stderr}"
        fixed = fix_where_needed(config, timeout=timeout, tries=tries)
        pressed = press_batches(config, served)
        assert fixed or pressed, f"resume needs attention that `hwf fix` cannot clear: {result.stderr}"
    raise AssertionError("the sets did not finish after the final resumes")


def resume_until_verified(config: Path, served: Served, *, rounds: int = 4, timeout: float = 300) -> None:
    """``hwf resume --all`` until every set is verified, pressing Run for each integration batch hwf announces
    (manual integration mode); every resume must exit 0."""
    for _ in range(rounds):
        result = hwf(config, "resume", "--all", timeout=timeout)
        assert result.returncode == 0, result.stdout + result.stderr
        if all(row["state"] == "verified" for row in status(config)):
            return
        if not press_batches(config, served):
            overview = hwf(config, "overview", "--json").stdout
            raise AssertionError(f"sets wait, but for no integration batch: {status(config)}; {overview}")
    raise AssertionError("the sets did not reach verified")


class Presser:
    """The operator in the background (a thread), while a test waits on an ``hwf`` process: press Run for each
    integration batch hwf announces, until the ``with`` block ends."""

    def __init__(self, config: Path, served: Served, interval: float = 0.5) -> None:
        self.config, self.served, self.interval = config, served, interval
        self.pressed: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="presser", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.pressed += press_batches(self.config, self.served)

    def __enter__(self) -> Presser:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)


def press_batches(config: Path, served: Served, user: str = "jdoe") -> list[str]:
    """The operator of manual integration mode: press Run on the Handle integration profile for every
    integration batch that ``hwf overview`` says waits for a person, once each (the simulator records the
    run as Alma's job history shows a person's run). Returns the batches' names."""
    result = hwf(config, "overview", "--json")
    assert result.returncode == 0, result.stderr
    runs = served.state()["job_runs"]
    ran = {r["set_id"] for r in runs if r["kind"] == "integration"}
    pressed = []
    for batch in json.loads(result.stdout).get("batches", []):
        if batch["state"] == "announced" and batch["alma_set_id"] not in ran:
            served.call("POST", "/_sim/press-run", {"set_name": batch["name"], "user": user})
            pressed.append(batch["name"])
    return pressed


def fix_where_needed(config: Path, timeout: float = 120, tries: int = 1) -> list[str]:
    """Run ``hwf fix SET --apply`` for every set whose attention asks for it; returns those sets. With
    ``tries`` > 1 the operator runs it again when records failed (a flaky Alma)."""
    fixed = []
    for row in status(config):
        if row["attention"] and "hwf fix" in row["attention"]:
            for attempt in range(1, tries + 1):
                result = hwf(config, "fix", row["set"], "--apply", timeout=timeout)
                if result.returncode == 0:
                    break
                assert attempt < tries and result.returncode == 1, result.stdout + result.stderr
            fixed.append(row["set"])
    return fixed


@dataclass
class Verdict:
    """What the invariants found: empty lists mean every invariant holds."""

    duplicates: list[str] = field(default_factory=list)
    out_of_order: list[str] = field(default_factory=list)
    not_verified: list[str] = field(default_factory=list)
    runs: int = 0

    @property
    def ok(self) -> bool:
        return not (self.duplicates or self.out_of_order or self.not_verified)

    def __str__(self) -> str:
        return (
            f"{self.runs} job runs; duplicates: {self.duplicates or 0}; out of order: {self.out_of_order or 0}; "
            f"not verified: {self.not_verified or 0}"
        )


def database_url(config: Path) -> str:
    """The [database] url of an hwf config file."""
    with config.open("rb") as handle:
        return str(tomllib.load(handle)["database"]["url"])


def check(config: Path, served: Served, sets: Mapping[str, str]) -> Verdict:
    """Check every invariant for ``sets`` (Alma set id -> profile) without asserting. hwf's side is read
    straight from its database (sets, records and the audit trail), Alma's from the simulator's log of runs
    with the members each run started on: per record, the runs that included it."""
    verdict = Verdict()
    url = database_url(config)
    states = {r[0]: r[1] for r in query(url, "SELECT alma_set_id, state FROM sets")}
    moves_of: dict[str, list[tuple[str, str]]] = {}
    transitions = (
        "SELECT s.alma_set_id, e.data FROM events e JOIN sets s ON s.id = e.set_id "
        "WHERE e.kind = 'transition' ORDER BY e.id"
    )
    for alma_id, data in query(url, transitions):
        data = json.loads(data) if isinstance(data, str) else data
        moves_of.setdefault(alma_id, []).append((data["from"], data["to"]))
    records_of: dict[str, list[str]] = {}
    included = "SELECT s.alma_set_id, r.mms_id FROM records r JOIN sets s ON s.id = r.set_id WHERE NOT r.excluded"
    for alma_id, mms_id in query(url, included):
        records_of.setdefault(alma_id, []).append(mms_id)
    runs = served.call("GET", "/_sim/state?full=1")["job_runs"]
    verdict.runs = len(runs)
    runs_of_record: dict[str, list[dict[str, Any]]] = {}
    for run in sorted(runs, key=lambda r: (r["submitted_at"], r["instance_id"])):
        for mms_id in run.get("members", []):
            runs_of_record.setdefault(mms_id, []).append(run)
    for set_id, profile in sets.items():
        state = states.get(set_id)
        if state != "verified":
            verdict.not_verified.append(f"{set_id}: {state or 'missing'}")
        expected = KINDS[profile]
        for mms_id in sorted(records_of.get(set_id, [])):
            _check_record(verdict, f"{set_id}/{mms_id}", runs_of_record.get(mms_id, []), expected, state)
        moves = moves_of.get(set_id, [])
        if moves != list(zip(ORDER, ORDER[1:], strict=False))[: len(moves)]:
            verdict.out_of_order.append(f"{set_id}: transitions {moves}")
    return verdict


def _check_record(verdict: Verdict, where: str, runs: list[dict[str, Any]], expected: list[str], state: Any) -> None:
    """One record's runs (in submission order) against its profile's steps (a run of a job that is no step of the
    workflow, such as an export, does not count)."""
    kinds = [r["kind"] for r in runs if r["kind"] != "other"]
    for kind in sorted(set(kinds)):
        if kinds.count(kind) > 1:
            verdict.duplicates.append(f"{where}: {kinds.count(kind)} {kind} runs")
    if [k for k in expected if k in kinds] != [k for k in kinds if k in expected] or set(kinds) - set(expected):
        verdict.out_of_order.append(f"{where}: runs {kinds}")
    elif state == "verified" and sorted(set(kinds)) != sorted(expected):
        verdict.not_verified.append(f"{where}: verified with runs {kinds}, expected {expected}")
    failed = [r["status"] for r in runs if r["status"] != "COMPLETED_SUCCESS" and r["kind"] != "other"]
    if failed:
        verdict.out_of_order.append(f"{where}: runs not successful {failed}")


def assert_invariants(config: Path, served: Served, sets: Mapping[str, str]) -> None:
    verdict = check(config, served, sets)
    assert verdict.ok, str(verdict)


@dataclass
class KillLog:
    """What a randomized kill loop did: how many processes it killed, and how many ended by themselves."""

    killed: int = 0
    ended: int = 0
    fixes: int = 0
    presses: int = 0
    delays: list[float] = field(default_factory=list)


def kill_rounds(
    config: Path,
    rounds: int,
    rng: random.Random,
    *,
    low: float = 0.05,
    high: float = 2.5,
    log: KillLog | None = None,
    operator: bool = True,
    stop_when_done: bool = True,
    served: Served | None = None,
) -> KillLog:
    """``rounds`` times: start ``hwf resume --all``, SIGKILL it after a random delay in [low, high] s (unless
    it ended first). Between rounds, play the operator (``hwf fix --apply``) where a set asks for it and,
    given the simulator (``served``), press Run for an integration batch that waits for a person."""
    log = log or KillLog()
    for _ in range(rounds):
        delay = rng.uniform(low, high)
        proc = start(config, "resume", "--all")
        deadline = time.monotonic() + delay
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.005)
        ended = kill(proc)
        if ended is None:
            log.killed += 1
            log.delays.append(delay)
        else:
            log.ended += 1
        if operator and ended == 3:
            log.fixes += len(fix_where_needed(config))
        if operator and ended is not None:
            log.presses += len(press_batches(config, served)) if served is not None else 0
        if ended == 0 and stop_when_done and all(row["state"] == "verified" for row in status(config)):
            break  # everything verified: no work left to interrupt
    return log


def add_sets(
    config: Path, served: Served, profiles: Iterable[str], *, records: int = 12, prefix: str = "Crash"
) -> dict[str, str]:
    """Create one simulator set per profile and register it with hwf; returns Alma set id -> profile."""
    sets = {}
    for number, profile in enumerate(profiles):
        set_id = served.make_set(f"{prefix} {number} {profile}", records, profile=profile, seed=100 + number)
        result = hwf(config, "add", set_id)
        assert result.returncode == 0, result.stderr
        sets[set_id] = profile
    return sets


def register(config: Path, set_ids: Iterable[str]) -> None:
    """``hwf add`` of many sets at once, in this process (one process start instead of one per set): for tests
    whose subject is what comes after registration."""
    ctx = build_context(load_config(config, environ={"HWF_ALMA_API_KEY": E2E_KEY}), reporter=NullReporter())
    try:
        for set_id in set_ids:
            workflow.add_set(ctx, set_id)
    finally:
        ctx.close()
        ctx.sessions.kw["bind"].dispose()


def environ_flag(name: str, default: int) -> int:
    """An integer knob from the environment (e.g. the number of kill rounds)."""
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default
