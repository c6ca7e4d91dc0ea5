"""A database the simulator filled, for the overview and dashboard tests: one set verified (with a repair
and an exclusion), one needing attention (problem records, one with a hostile title), one with its
migration job running in Alma. Plus a read-only context over it, as ``hwf serve`` builds one.

And a migration mid-way, as a librarian sees it on a working day (``demo_world``): ten sets with long names,
some verified, one in attention, three jobs running in Alma and the others waiting for a job slot."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select

from orchestrator.config import Config, parse_config
from orchestrator.errors import NeedsAttentionError
from orchestrator.service import preflight, repair, workflow
from orchestrator.service.context import Context
from orchestrator.simulator import Scenario, Simulator
from orchestrator.store.models import Record
from orchestrator.wiring import read_only_context
from tests.support.clock import FakeClock
from tests.support.config import API_KEY, config_dict
from tests.support.sim import make_context

HOSTILE_NAME = "Verified <script>alert('set')</script> titles \x1b[31m"
HOSTILE_TITLE = "<script>alert('title')</script> An \x1b[2J escaped title"
FORMULA_TITLE = '=HYPERLINK("http://attacker.example/","click")'


@dataclass
class World:
    config: Config
    clock: FakeClock
    sim: Simulator
    writer: Context  # what a worker would use: may write, talks to the simulator
    reader: Context  # what `hwf serve` uses: read-only sessions, no Alma
    db: Path
    verified: str
    attention: str
    running: str
    hostile_mms: str

    def close(self) -> None:
        self.writer.close()
        self.writer.sessions.kw["bind"].dispose()
        self.reader.sessions.kw["bind"].dispose()

    def finish_running(self) -> None:
        """Let the running set's jobs end and drive it to verified (a worker's next passes)."""
        workflow.advance(self.writer, self.running, wait=True)


def _start(tmp_path: Path, url: str | None, clock: FakeClock) -> tuple[Config, Simulator, Context, Path]:
    """A simulator, a configuration and a worker's context on a new database."""
    sim = Simulator(
        Scenario(job_seconds={"copy": 30, "migration": 60, "integration": 45, "other": 10}, per_second_limit=0),
        clock=clock,
    )
    db = tmp_path / "hwf.db"
    data = config_dict(db=url or f"sqlite:///{db}")
    data["operator"] = {"name": "librarian"}  # who acts: every event's actor
    config = parse_config(data, tmp_path / "hwf.toml", environ={"HWF_ALMA_API_KEY": API_KEY})
    return config, sim, make_context(config, sim, clock, owner="librarian@test-host:7"), db


def build_world(tmp_path: Path, url: str | None = None) -> World:
    clock = FakeClock()
    config, sim, writer, db = _start(tmp_path, url, clock)
    verified = sim.create_set(HOSTILE_NAME, sim.generate_records(40, profile="demo", seed=11))
    attention = sim.create_set("Problem titles", sim.generate_records(30, profile="problems", seed=12))
    running = sim.create_set("Running titles", sim.generate_records(20, profile="clean", seed=13))
    for set_id in (verified, attention, running):
        workflow.add_set(writer, set_id)
    # The verified set goes through the seed case's trap: the copy carries xsi:type, hwf fix repairs it.
    try:
        workflow.advance(writer, verified)
    except NeedsAttentionError:
        repair.fix(writer, verified, apply=True)
    first = sorted(sim.set_members(verified))[0]
    preflight.exclude(writer, verified, [first], "withdrawn title", keep_in_alma_set=True)
    workflow.advance(writer, verified)
    try:
        workflow.advance(writer, attention)
    except NeedsAttentionError:
        pass
    workflow.advance(writer, running, wait=False)
    clock.advance(20)
    # Titles as Alma might hand them over: markup, a terminal escape, a spreadsheet formula.
    with writer.sessions.begin() as session:
        rec = session.scalars(
            select(Record)
            .where(Record.preflight.in_(["NO_HANDLE", "BAD_HANDLE"]), Record.mms_id.in_(sim.set_members(attention)))
            .order_by(Record.id)
        ).first()
        assert rec is not None
        rec.title = HOSTILE_TITLE
        hostile_mms = rec.mms_id
        formula = session.scalars(select(Record).where(Record.mms_id == first)).one()
        formula.title = FORMULA_TITLE
    reader = read_only_context(config)
    reader.clock = clock
    return World(config, clock, sim, writer, reader, db, verified, attention, running, hostile_mms)


@dataclass
class Demo:
    """A migration mid-way: ``sets`` in the order they were added (batch 1 first)."""

    clock: FakeClock
    sim: Simulator
    writer: Context
    reader: Context
    sets: list[str]
    attention: str | None  # the fourth set (of four or more)

    def close(self) -> None:
        self.writer.close()
        self.writer.sessions.kw["bind"].dispose()
        self.reader.sessions.kw["bind"].dispose()


def demo_world(tmp_path: Path, sets: int = 10) -> Demo:
    """``sets`` sets named ``Handles 2026 rehearsal (batch N/sets)``: the first two verified, the fourth in
    attention (problem records), three jobs running in Alma (its limit) and the rest waiting for a job slot.
    Its clock starts at the real now (the verifier stamps its checks with the real time)."""
    clock = FakeClock(datetime.now(UTC).replace(microsecond=0))
    _, sim, writer, _ = _start(tmp_path, None, clock)
    ids = []
    for n in range(1, sets + 1):
        profile = "problems" if n == 4 else "demo" if n % 3 == 0 else "clean"
        records = sim.generate_records(12 + n, profile=profile, seed=n)
        ids.append(sim.create_set(f"Handles 2026 rehearsal (batch {n}/{sets})", records))
    for set_id in ids:
        workflow.add_set(writer, set_id)
    for n, set_id in enumerate(ids, start=1):
        try:
            workflow.advance(writer, set_id, wait=n <= 2)
        except NeedsAttentionError:
            pass
    clock.advance(20)
    reader = read_only_context(writer.config)
    reader.clock = clock
    return Demo(clock, sim, writer, reader, ids, ids[3] if len(ids) > 3 else None)
