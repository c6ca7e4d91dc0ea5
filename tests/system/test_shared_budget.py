"""One request budget for every process sharing an Alma key (``store.budget``).

The proof: four ``hwf resume --all --follow`` processes on one PostgreSQL database, against the simulator
(which counts the most requests per key in any one-second window), never exceed ``[alma]
requests_per_second`` together, and every step of every set still runs once. Without the shared budget
each process would pace itself alone: about four times the cap. The same holds on SQLite (a file lock).
The schedule itself is checked with threads in tests/store/test_budget.py.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.store import budget
from tests.support import write_config
from tests.support.crash import add_sets, check, kill, query, serve
from tests.support.e2e import E2E_KEY, Served, start, wait_for

# They count requests per second across processes: nothing else may load the machine meanwhile.
pytestmark = pytest.mark.serial

CAP = 8  # requests per second, for the key, all processes together
PROCESSES = 4
SETS = 4


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    server = serve(tmp_path, job_seconds=0.5)  # no per-second cap in the simulator: it only measures
    yield server
    server.stop()


def _run_workers(config: Path, tmp_path: Path, db_url: str) -> list[int | None]:
    """Four workers until every set is verified. A worker that found every set held by the others sleeps until its
    next rescan (up to a minute) before it sees there is nothing left: once every set is verified, the ones still
    running are asked to stop (SIGTERM: a worker then ends with 0)."""
    logs = [(tmp_path / f"worker-{n}.err").open("w") for n in range(PROCESSES)]
    procs = [start(config, "resume", "--all", "--follow", "--until-idle", stderr=log) for log in logs]
    verified = "SELECT count(*) FROM sets WHERE state = 'verified'"
    try:
        wait_for(
            lambda: all(p.poll() is not None for p in procs) or query(db_url, verified)[0][0] == SETS,
            timeout=240,
            interval=0.2,
            what="every set verified",
        )
        with contextlib.suppress(AssertionError):  # the workers that saw the last set verified end by themselves
            wait_for(lambda: all(p.poll() is not None for p in procs), timeout=3, interval=0.1, what="their end")
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(timeout=60)
    finally:
        codes = [kill(p) for p in procs]
        for log in logs:
            log.close()
    return codes


def _check_shared(served: Served, config: Path, tmp_path: Path, db_url: str) -> None:
    sets = add_sets(config, served, ["clean"] * SETS, records=4, prefix="Budget")
    before = served.state()["stats"]
    codes = _run_workers(config, tmp_path, db_url)
    errors = [(tmp_path / f"worker-{n}.err").read_text()[-2000:] for n, c in enumerate(codes) if c]
    assert codes == [0] * PROCESSES, errors
    stats = served.state()["stats"]
    peaks = stats["max_per_second"]
    assert peaks, stats
    assert max(peaks.values()) <= CAP, f"peak {peaks} requests in one second, cap {CAP}; before: {before}"
    verdict = check(config, served, sets)
    assert verdict.ok, str(verdict)
    assert verdict.runs == 2 * SETS  # each step of each set submitted once
    actors = query(db_url, "SELECT actor, count(*) FROM events WHERE kind = 'submitting' GROUP BY actor")
    print(f"\n{PROCESSES} workers, {SETS} sets: peak {max(peaks.values())}/s at a cap of {CAP}/s; submissions {actors}")


def test_four_workers_stay_under_the_cap_together(served: Served, db_url: str, tmp_path: Path) -> None:
    """On PostgreSQL the budget is a row (keyed by a hash of the key), on SQLite a flock'd file beside the database."""
    config = write_config(tmp_path, served.url, preset="crash", db=db_url, requests_per_second=CAP)
    _check_shared(served, config, tmp_path, db_url)
    if db_url.startswith("postgresql"):
        hashes = query(db_url, "SELECT key_hash FROM rate_budget")
        assert hashes == [(budget.key_hash(E2E_KEY),)]
        assert E2E_KEY not in str(query(db_url, "SELECT * FROM rate_budget"))
    else:
        files = list(tmp_path.glob("hwf.db.budget-*"))
        assert len(files) == 1 and E2E_KEY.encode() not in files[0].read_bytes()


def test_without_the_shared_budget_four_workers_do_exceed_the_cap(served: Served, tmp_path: Path) -> None:
    """The control: each process pacing itself alone goes over the cap (so the tests above can fail). Seen once is
    enough: the workers are stopped as soon as one second held more than the cap."""
    config = write_config(tmp_path, served.url, preset="crash", requests_per_second=CAP, shared_budget=False)
    add_sets(config, served, ["clean"] * SETS, records=4, prefix="Alone")
    procs = [start(config, "resume", "--all", "--follow", "--until-idle") for _ in range(PROCESSES)]
    try:
        wait_for(
            lambda: max(served.state()["stats"]["max_per_second"].values(), default=0) > CAP,
            timeout=120,
            what=f"a second with more than {CAP} requests",
        )
    finally:
        for p in procs:
            kill(p)
