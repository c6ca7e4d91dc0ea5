"""Several ``hwf`` processes on one database: four ``hwf resume --all`` sharing one PostgreSQL database split the
sets without overlap, and a set leased by a live process elsewhere is refused with exit 4 naming it.

The proof of "no two processes ever advanced the same set at once" comes from PostgreSQL itself: a trigger
(installed by the test, not part of hwf) checks, for every submission and transition hwf records, that the
process recording it (the event's ``host`` and ``pid``) holds the set's lease at that moment.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select, text, update
from sqlalchemy.pool import NullPool

from orchestrator.cli import base as cli
from orchestrator.config import load_config
from orchestrator.domain.machine import Stage
from orchestrator.service import workflow
from orchestrator.service.reporting import NullReporter
from orchestrator.simulator import Simulator
from orchestrator.store import leases
from orchestrator.store.db import open_database
from orchestrator.store.models import AlmaSet
from orchestrator.wiring import build_context
from tests.conftest import API_KEY, FakeClock, WiredRunner, minimal_config, sim_wiring
from tests.conftest import write_config as write_test_config
from tests.crashkit import MODES, check, kill, press_batches, query, serve, start, wait_for, write_config
from tests.e2e import E2E_KEY, Served

runner = WiredRunner()
PROCESSES = 4
SETS = 20

LEASE_AUDIT = """
CREATE TABLE lease_violations (event_id integer, set_id integer, kind text, actor text, holder text);
CREATE FUNCTION hwf_test_check_lease() RETURNS trigger AS $$
DECLARE current_holder text;
BEGIN
  IF NEW.kind IN ('submitting', 'submitted', 'reconciled', 'transition') THEN
    SELECT lease_owner INTO current_holder FROM sets WHERE id = NEW.set_id;
    IF current_holder IS DISTINCT FROM (NEW.host || ':' || NEW.pid) THEN
      INSERT INTO lease_violations VALUES (NEW.id, NEW.set_id, NEW.kind, NEW.host || ':' || NEW.pid, current_holder);
    END IF;
  END IF;
  RETURN NEW;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER hwf_test_lease_audit AFTER INSERT ON events FOR EACH ROW EXECUTE FUNCTION hwf_test_check_lease();
"""


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    server = serve(tmp_path, job_seconds=0.3)  # Alma's own limit of 3 running API jobs stays on
    yield server
    server.stop()


@pytest.mark.postgres
@pytest.mark.parametrize("mode", MODES)
def test_four_resume_processes_share_twenty_sets(
    served: Served, pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    config_path = write_config(tmp_path, served.url, db=pg_url, lease_seconds=6, integration=mode)
    ids = [served.make_set(f"Shared {i:02d}", 5, profile="clean", seed=i) for i in range(SETS)]
    monkeypatch.setenv("HWF_ALMA_API_KEY", E2E_KEY)
    ctx = build_context(load_config(config_path), reporter=NullReporter())
    try:
        for set_id in ids:
            workflow.add_set(ctx, set_id)
    finally:
        ctx.close()
        ctx.sessions.kw["bind"].dispose()
    engine = create_engine(pg_url, poolclass=NullPool)
    with engine.begin() as conn:
        conn.execute(text(LEASE_AUDIT))
    engine.dispose()

    started = time.monotonic()
    logs = [(tmp_path / f"resume-{n}.err").open("w") for n in range(PROCESSES)]
    procs = [start(config_path, "resume", "--all", stderr=log) for log in logs]
    verified = "SELECT count(*) FROM sets WHERE state = 'verified'"
    try:
        # In manual integration mode the processes end once the sets wait for a person's click; the operator
        # presses Run for the batch, and the four start again.
        for _ in range(1 if mode == "api" else 3):
            wait_for(
                lambda running=procs: (
                    all(p.poll() is not None for p in running) or query(pg_url, verified)[0][0] == SETS
                ),
                timeout=50,
                interval=0.1,
                what="every set verified, or every process ended",
            )
            if query(pg_url, verified)[0][0] == SETS or not press_batches(config_path, served):
                break
            assert {p.poll() for p in procs} == {0}, [p.poll() for p in procs]
            procs = [start(config_path, "resume", "--all", stderr=log) for log in logs]
        elapsed = time.monotonic() - started
        # A process that found every set taken by the others may be asleep until its next rescan (up to a
        # minute): once every set is verified it has nothing left to do, so it is not waited for.
        time.sleep(2.0)
        codes = [p.poll() for p in procs]
    finally:
        for p in procs:
            kill(p)
        for log in logs:
            log.close()
    errors = [(tmp_path / f"resume-{n}.err").read_text()[-3000:] for n, code in enumerate(codes) if code]
    assert set(codes) <= {0, None}, errors

    verdict = check(config_path, served, dict.fromkeys(ids, "clean"))
    assert verdict.ok, str(verdict)
    batches = query(pg_url, "SELECT count(*) FROM integration_batches")[0][0]
    assert verdict.runs == (2 * SETS if mode == "api" else SETS + batches)  # each step of each set once
    assert query(pg_url, "SELECT * FROM lease_violations") == []
    actors = query(
        pg_url, "SELECT host || ':' || pid, count(*) FROM events WHERE kind = 'submitting' GROUP BY host, pid"
    )
    assert sum(n for _, n in actors) >= (2 if mode == "api" else 1) * SETS
    assert len(actors) >= 2, f"the sets were not shared between processes: {actors}"
    idle = codes.count(None)
    print(
        f"\n{PROCESSES} processes, {SETS} sets on PostgreSQL: all verified in {elapsed:.1f} s; submissions per "
        f"process {[n for _, n in actors]}; {idle} still asleep at the end"
    )


def test_lease_held_by_a_live_process_on_another_host_exits_4_naming_it(
    db_url: str, tmp_path: Path, sim: Simulator, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "hwf.toml"
    cli_config(path, db_url)
    monkeypatch.setenv("HWF_ALMA_API_KEY", API_KEY)
    monkeypatch.setattr(runner, "wiring", sim_wiring(sim, clock))
    _lease_held_scenario(path, db_url, sim, clock)


def _lease_held_scenario(path: Path, db_url: str, sim: Simulator, clock: FakeClock) -> None:
    set_id = sim.create_set("Held titles", sim.generate_records(5, profile="clean", seed=1))
    assert runner.invoke(cli.app, ["--config", str(path), "add", set_id]).exit_code == 0
    sessions = open_database(db_url)
    with sessions.begin() as session:
        session.execute(
            update(AlmaSet).values(lease_owner="cataloguing-pc:31337", lease_expires_at=clock() + timedelta(minutes=2))
        )
    sessions.kw["bind"].dispose()
    held = runner.invoke(cli.app, ["--config", str(path), "advance", set_id])
    assert held.exit_code == 4, held.output
    assert "cataloguing-pc:31337" in held.stderr and "holds this set" in held.stderr
    assert sim.runs_for(set_id) == []
    clock.advance(121)  # that process died without releasing it: the lease expires and is taken over
    done = runner.invoke(cli.app, ["--config", str(path), "advance", set_id])
    assert done.exit_code == 0, done.output
    assert [r.kind for r in sim.runs_for(set_id)] == ["migration", "integration"]


def cli_config(path: Path, db_url: str) -> Path:
    data = minimal_config(db_url, "http://alma.test", poll_interval_seconds=2, requests_per_second=1000)
    data["handles"].update(resolver_url="http://alma.test", settle_minutes=0)
    return write_test_config(path, data)


def test_simultaneous_claims_have_exactly_one_winner(db_url: str) -> None:
    sessions = open_database(db_url)
    try:
        with sessions.begin() as session:
            session.add(AlmaSet(alma_set_id="1234", name="Contested", stage=Stage.CREATED))
        with sessions() as session:
            set_id = session.scalars(select(AlmaSet.id)).one()
        now = datetime.now(UTC)
        for round_ in range(5):
            barrier = threading.Barrier(6)
            wins: list[str] = []

            def contend(owner: str, barrier: threading.Barrier, wins: list[str]) -> None:
                barrier.wait()
                with sessions.begin() as session:
                    if leases.try_claim(session, set_id, owner, now, 60):
                        wins.append(owner)

            threads = [threading.Thread(target=contend, args=(f"host-{n}:{round_}", barrier, wins)) for n in range(6)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
            assert len(wins) == 1, wins
            with sessions.begin() as session:
                assert leases.holder(session, set_id)[0] == wins[0]
                leases.release(session, set_id, wins[0])
    finally:
        sessions.kw["bind"].dispose()


def test_schedulers_planning_at_once_never_deadlock(db_url: str) -> None:
    sessions = open_database(db_url)
    errors: list[BaseException] = []
    try:
        with sessions.begin() as session:
            session.add_all(AlmaSet(alma_set_id=str(9000 + n), name=f"Set {n}", stage=Stage.CREATED) for n in range(12))
        with sessions() as session:
            ids = list(session.scalars(select(AlmaSet.id)))

        def plan(seed: int) -> None:
            rng = random.Random(seed)
            try:
                for _ in range(15):
                    with sessions.begin() as session:
                        rows = session.scalars(select(AlmaSet).where(AlmaSet.id.in_(ids))).all()
                        free = leases.candidate_ids(session, rng.sample(ids, 8), datetime.now(UTC))
                        for row in rows:
                            if row.id in free:
                                row.waiting = f"planned by {seed}"  # a write back, as the scheduler does
                        time.sleep(rng.uniform(0, 0.005))
            except BaseException as exc:  # reported to the main thread
                errors.append(exc)

        threads = [threading.Thread(target=plan, args=(n,)) for n in range(5)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert errors == []
    finally:
        sessions.kw["bind"].dispose()
