"""Leases (orchestrator.store.leases) on SQLite and PostgreSQL: a set leased by a live process elsewhere is refused
with exit 4 naming it, simultaneous claims have one winner, schedulers planning at once never deadlock, and a
lease is exclusive between owners."""

from __future__ import annotations

import random
import socket
import subprocess
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from orchestrator.cli import base as cli
from orchestrator.domain.machine import Stage
from orchestrator.service import workflow
from orchestrator.service.context import Context
from orchestrator.simulator import Simulator
from orchestrator.store import leases
from orchestrator.store.db import open_database
from orchestrator.store.models import AlmaSet, IntegrationBatch
from tests.support import API_KEY, FakeClock, WiredRunner, make_set, sim_wiring, write_config

runner = WiredRunner()


def test_lease_held_by_a_live_process_on_another_host_exits_4_naming_it(
    db_url: str, tmp_path: Path, sim: Simulator, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "hwf.toml"
    write_config(path, db=db_url, preset="cli")
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


def test_claims_are_exclusive_between_owners(bctx: Context, sim: Simulator, clock: FakeClock) -> None:
    set_id = make_set(sim, 5, name="Backend titles", seed=3)
    workflow.add_set(bctx, set_id)
    with bctx.sessions.begin() as session:
        row_id = session.scalars(select(AlmaSet.id)).one()
    with bctx.sessions.begin() as session:
        assert leases.try_claim(session, row_id, "a:1", clock(), 30)
    with bctx.sessions.begin() as session:
        assert not leases.try_claim(session, row_id, "b:2", clock(), 30)
        assert leases.try_claim(session, row_id, "a:1", clock(), 30)  # renewal by the holder
    clock.advance(31)
    with bctx.sessions.begin() as session:
        assert leases.try_claim(session, row_id, "b:2", clock(), 30)
    with bctx.sessions.begin() as session:
        leases.release(session, row_id, "a:1")  # not the holder: nothing changes
        assert leases.holder(session, row_id)[0] == "b:2"
        leases.release(session, row_id, "b:2")
        assert leases.holder(session, row_id) == (None, None)


def test_an_integration_batch_s_lease_is_exclusive_renewed_and_taken_from_a_dead_process(
    bctx: Context, clock: FakeClock
) -> None:
    """One process at a time makes a batch's Alma set or looks for its run: a live holder elsewhere is refused until its
    lease expires, the holder's keeper renews it while it works, and a killed process's lease is taken over at once
    (not after the lease's length)."""
    with bctx.sessions.begin() as session:
        batch = IntegrationBatch(number=1, name="hwf integration batch 1", state="creating", created_at=clock())
        session.add(batch)
        session.flush()
        batch_id = batch.id
    table = IntegrationBatch
    with bctx.sessions.begin() as session:
        assert leases.claim(session, batch_id, "other-host:7", clock(), 30, table=table)
    with bctx.sessions.begin() as session:
        assert not leases.claim(session, batch_id, bctx.owner, clock(), 30, table=table)
        assert leases.holder(session, batch_id, table=table)[0] == "other-host:7"
    clock.advance(31)
    with bctx.sessions.begin() as session:
        assert leases.claim(session, batch_id, bctx.owner, clock(), 30, table=table)
    keeper = leases.LeaseKeeper(bctx.sessions, batch_id, bctx.owner, 30, clock, table=table)
    clock.advance(25)
    keeper.renew()
    clock.advance(25)  # past the first expiry: the renewal holds it
    with bctx.sessions.begin() as session:
        assert not leases.try_claim(session, batch_id, "other-host:7", clock(), 30, table=table)
        leases.release(session, batch_id, bctx.owner, table=table)
    dead = subprocess.Popen(["true"])
    dead.wait()
    with bctx.sessions.begin() as session:
        assert leases.try_claim(session, batch_id, f"{socket.gethostname()}:{dead.pid}", clock(), 600, table=table)
    with bctx.sessions.begin() as session:
        assert leases.claim(session, batch_id, bctx.owner, clock(), 30, table=table)  # at once: its holder is gone
        assert leases.holder(session, batch_id, table=table)[0] == bctx.owner
