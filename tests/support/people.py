"""First contact with a real Alma on the in-process simulator: the contexts of the two integration modes, sets of
clean records, driving sets to verified with a person who presses Run, and the invariant every such test ends on:
no Alma job ever ran on a record hwf had not seen pass every earlier step."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import select

from orchestrator.config import parse_config
from orchestrator.service import overview, workflow
from orchestrator.service.context import Context
from orchestrator.simulator import Simulator
from orchestrator.store.models import AlmaSet, Attempt, IntegrationBatch, Record
from tests.support.clock import FakeClock
from tests.support.config import API_KEY, config_dict
from tests.support.sim import make_context

MIGRATION_JOB = "M2234567890000561"
COPY_JOB = "M1234567890000561"


def first_contact_context(tmp_path: Path, sim: Simulator, clock: FakeClock, **jobs: Any) -> Context:
    """A context on ``sim`` with hwf's default integration mode (manual) unless ``jobs`` say otherwise."""
    data = config_dict(db=f"sqlite:///{tmp_path / 'hwf.db'}", integration=None)
    data["alma"]["jobs"].update(jobs)
    return make_context(parse_config(data, tmp_path / "hwf.toml", environ={"HWF_ALMA_API_KEY": API_KEY}), sim, clock)


def clean_set(sim: Simulator, name: str, n: int = 20, seed: int = 1) -> str:
    return sim.create_set(name, sim.generate_records(n, profile="clean", seed=seed))


def drive(ctx: Context, sim: Simulator, clock: FakeClock, set_ids: list[str], *, press: bool = True) -> None:
    """Advance every set until each is verified; when an integration batch waits for a person, press Run."""
    pressed: set[int] = set()
    for _ in range(400):
        done = 0
        for set_id in set_ids:
            result = workflow.advance(ctx, set_id, wait=False)
            done += result.outcome is workflow.Outcome.VERIFIED
        if done == len(set_ids):
            return
        for batch in overview.batches(ctx):
            if press and batch.needs_person and batch.number not in pressed:
                pressed.add(batch.number)
                sim.press_integration_run(batch.name)
        clock.advance(5)
    raise AssertionError("the sets did not reach verified")


def assert_no_job_ran_unseen(ctx: Context, sim: Simulator) -> None:
    """Every member of every run was a record hwf had (not taken out of its Alma set) in a set that had passed the
    steps before the run's step."""
    with ctx.sessions() as session:
        known = {
            (s.alma_set_id, r.mms_id)
            for s, r in session.execute(select(AlmaSet, Record).join(Record, Record.set_id == AlmaSet.id))
            if not r.removed_from_alma_set
        }
        batch_sets = {b.alma_set_id: b.id for b in session.scalars(select(IntegrationBatch))}
        batch_members = {
            batch_id: {
                m
                for set_id in session.scalars(select(Attempt.set_id).where(Attempt.batch_id == batch_id))
                for m in session.scalars(select(Record.mms_id).where(Record.set_id == set_id, ~Record.excluded))
            }
            for batch_id in batch_sets.values()
        }
    registered = {set_id for set_id, _ in known}
    for run in sim.job_runs:
        if run.set_id not in registered and run.set_id not in batch_sets:
            continue  # a person's run on a set hwf has nothing to do with
        if run.set_id in batch_sets:
            assert set(run.members) <= batch_members[batch_sets[run.set_id]], run
        else:
            assert all((run.set_id, m) in known for m in run.members), (run.set_id, run.kind, run.members)


def drive_until_announced(ctx: Context, clock: FakeClock, set_ids: list[str]) -> None:
    for _ in range(100):
        for set_id in set_ids:
            workflow.advance(ctx, set_id, wait=False)
        if any(b.needs_person for b in overview.batches(ctx)):
            return
        clock.advance(5)
    raise AssertionError("no batch was announced")
