"""``hwf doctor``: stale leases, attempts stuck submitting (with their age), instances Alma no longer knows,
corrupted rows, a schema not at head; what to do for each; exit 0 healthy, 1 otherwise."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text, update

from orchestrator.cli import base as cli
from orchestrator.errors import NeedsAttentionError
from orchestrator.service import doctor, views, workflow
from orchestrator.service.actions.confirm import confirm
from orchestrator.service.context import Context
from orchestrator.simulator import Simulator
from orchestrator.store import db
from orchestrator.store.models import AlmaSet, Attempt
from tests.support import API_KEY, FakeClock, WiredRunner, make_set, sim_wiring, write_config

runner = WiredRunner()


def kinds(diagnosis: doctor.Diagnosis) -> list[str]:
    return [f.kind for f in diagnosis.findings]


def submitted(ctx: Context, sim: Simulator) -> str:
    """A set whose migration job is running (attempt submitted, instance known)."""
    set_id = make_set(sim, name="Doctor titles", seed=5)
    workflow.add_set(ctx, set_id)
    assert workflow.advance(ctx, set_id, wait=False).outcome is workflow.Outcome.WAITING
    return set_id


def test_healthy_database_has_no_findings(ctx: Context, sim: Simulator) -> None:
    set_id = submitted(ctx, sim)
    diagnosis = doctor.diagnose(ctx)
    assert diagnosis.healthy and diagnosis.findings == []
    assert diagnosis.sets == 1 and diagnosis.instances_checked == 1
    assert workflow.advance(ctx, set_id).outcome is workflow.Outcome.VERIFIED
    assert doctor.diagnose(ctx).healthy


def test_stale_leases_are_found_live_ones_are_not(ctx: Context, sim: Simulator, clock: FakeClock) -> None:
    set_id = make_set(sim, name="Doctor titles", seed=5)
    workflow.add_set(ctx, set_id)
    with ctx.sessions.begin() as session:
        session.execute(
            update(AlmaSet).values(lease_owner="far-host:4242", lease_expires_at=clock() + timedelta(seconds=30))
        )
    assert doctor.diagnose(ctx).healthy  # a live process elsewhere: nothing to do
    clock.advance(31)
    diagnosis = doctor.diagnose(ctx)
    assert kinds(diagnosis) == ["lease"] and not diagnosis.healthy
    finding = diagnosis.findings[0]
    assert "far-host:4242" in finding.problem and "expired" in finding.problem
    assert "hwf resume --all" in finding.action and finding.set == set_id


def test_attempt_stuck_submitting_is_reported_with_its_age(ctx: Context, sim: Simulator, clock: FakeClock) -> None:
    set_id = make_set(sim, name="Doctor titles", seed=5)
    workflow.add_set(ctx, set_id)

    def killed(*args: object, **kwargs: object) -> object:
        raise KeyboardInterrupt("killed before the POST")

    ctx.alma.run_job = killed  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        workflow.advance(ctx, set_id)
    with ctx.sessions.begin() as session:  # a real kill leaves the lease behind, until it expires
        session.execute(update(AlmaSet).values(lease_owner="gone-host:9", lease_expires_at=clock()))
    clock.advance(600)
    diagnosis = doctor.diagnose(ctx)
    assert sorted(kinds(diagnosis)) == ["lease", "submitting"]
    stuck = next(f for f in diagnosis.findings if f.kind == "submitting")
    assert "10m 00s" in stuck.problem and "migrate" in stuck.problem and "no hwf process" in stuck.problem
    assert stuck.data["age_seconds"] == 600.0
    assert "token" in stuck.action and "do not run the job by hand" in stuck.action


def test_instance_alma_no_longer_knows(ctx: Context, sim: Simulator) -> None:
    set_id = submitted(ctx, sim)
    real = sim.runs_for(set_id)[0].instance_id
    with ctx.sessions.begin() as session:
        session.execute(update(Attempt).where(Attempt.instance_id == real).values(instance_id="1234567890004641"))
    diagnosis = doctor.diagnose(ctx)
    assert kinds(diagnosis) == ["unknown_instance"]
    finding = diagnosis.findings[0]
    assert "1234567890004641" in finding.problem and "402218" in finding.problem
    assert f"hwf confirm {set_id} --instance" in finding.action and f"hwf retry {set_id}" in finding.action
    assert doctor.diagnose(ctx, check_alma=False).healthy  # offline: not asked

    # hwf itself: the poll stops with attention instead of failing on every run ...
    with pytest.raises(NeedsAttentionError, match="no longer knows"):
        workflow.advance(ctx, set_id)
    # ... and the operator adopts the real run, which is not resubmitted.
    confirm(ctx, set_id, real)
    assert workflow.advance(ctx, set_id).outcome is workflow.Outcome.VERIFIED
    assert [r.kind for r in sim.runs_for(set_id)] == ["migration", "integration"]


def test_retry_after_an_unknown_instance_submits_the_step_again(ctx: Context, sim: Simulator) -> None:
    set_id = submitted(ctx, sim)
    with ctx.sessions.begin() as session:
        session.execute(update(Attempt).where(Attempt.step == "migrate").values(instance_id="1234567890004641"))
    with pytest.raises(NeedsAttentionError):
        workflow.advance(ctx, set_id)
    workflow.retry(ctx, set_id, reason="checked Monitor Jobs: it never ran")
    assert workflow.advance(ctx, set_id).outcome is workflow.Outcome.VERIFIED
    states = [a.state for a in views.attempts(ctx, set_id) if a.step == "migrate"]
    assert states == ["abandoned", "finished"]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"instance_id": None}, "submitted without an instance id"),
        ({"step": "teleport"}, "unknown step 'teleport'"),
        ({"state": "finished", "status": None}, "finished without a status"),
        ({"state": "finished", "status": "RUNNING"}, "non-terminal status RUNNING"),
        ({"state": "exploded"}, "unknown state 'exploded'"),
        ({"job_id": None}, "submitted without a job id"),
        ({"step": "integrate"}, "out of order"),
    ],
)
def test_corrupted_attempt_rows_are_reported(
    ctx: Context, sim: Simulator, change: dict[str, Any], expected: str
) -> None:
    submitted(ctx, sim)
    sets = ", ".join(f"{k} = :{k}" for k in change)
    with ctx.sessions.begin() as session:
        session.execute(text(f"UPDATE attempts SET {sets} WHERE step = 'migrate'"), change)
    diagnosis = doctor.diagnose(ctx)
    corrupt = [f for f in diagnosis.findings if f.kind == "corrupt_attempt"]
    assert len(corrupt) == 1 and expected in corrupt[0].problem, diagnosis.findings
    assert "by hand" in corrupt[0].action and not diagnosis.healthy


def test_corrupted_set_state_is_reported(ctx: Context, sim: Simulator) -> None:
    workflow.add_set(ctx, make_set(sim, name="Doctor titles", seed=5))
    with ctx.sessions.begin() as session:
        session.execute(text("UPDATE sets SET state = 'half_done'"))
    diagnosis = doctor.diagnose(ctx)
    assert kinds(diagnosis) == ["corrupt_set"] and "half_done" in diagnosis.findings[0].problem


def test_schema_behind_head_and_newer_schema(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path / 'schema.db'}"
    missing, engine = doctor.check_schema(url)
    assert engine is None and [f.severity for f in missing.findings] == ["note"]  # no database yet, not created
    assert not (tmp_path / "schema.db").exists()
    db.open_database(url).kw["bind"].dispose()
    at_head, engine = doctor.check_schema(url)
    assert engine is not None and at_head.findings == []
    engine.dispose()
    monkeypatch.setattr(db, "head_revision", lambda: "0002_next")
    behind, engine = doctor.check_schema(url)
    assert engine is None and not behind.healthy
    assert "not at 0002_next" in behind.findings[0].problem and "hwf db upgrade" in behind.findings[0].action
    monkeypatch.undo()
    engine = db.make_engine(url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0042_future'"))
    engine.dispose()
    newer, _ = doctor.check_schema(url)
    assert "0042_future" in newer.findings[0].problem and db.head_revision() in newer.findings[0].problem
    assert "upgrade hwf" in newer.findings[0].action


@pytest.fixture
def wired(tmp_path: Path, sim: Simulator, clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = write_config(tmp_path, preset="cli")
    monkeypatch.setenv("HWF_ALMA_API_KEY", API_KEY)

    monkeypatch.setattr(runner, "wiring", sim_wiring(sim, clock))
    return path


def test_cli_exit_codes_and_json(wired: Path, sim: Simulator, clock: FakeClock) -> None:
    healthy = runner.invoke(cli.app, ["--config", str(wired), "doctor"])
    assert healthy.exit_code == 0, healthy.output
    assert "Healthy" in healthy.stdout
    set_id = make_set(sim, name="Doctor titles", seed=5)
    assert runner.invoke(cli.app, ["--config", str(wired), "add", set_id]).exit_code == 0
    sessions = db.open_database(f"sqlite:///{wired.parent / 'hwf.db'}")
    with sessions.begin() as session:
        session.execute(update(AlmaSet).values(lease_owner="far-host:1", lease_expires_at=clock() - timedelta(1)))
    sessions.kw["bind"].dispose()
    text_run = runner.invoke(cli.app, ["--config", str(wired), "doctor", "--offline"])
    assert text_run.exit_code == 1, text_run.output
    assert "PROBLEM" in text_run.stdout and "far-host:1" in text_run.stdout and "what to do" in text_run.stdout
    json_run = runner.invoke(cli.app, ["--config", str(wired), "doctor", "--json"])
    assert json_run.exit_code == 1
    data = json.loads(json_run.stdout)
    assert data["healthy"] is False and [f["kind"] for f in data["findings"]] == ["lease"]
    assert data["schema"] == data["head"] == db.head_revision()


def test_cli_newer_schema_is_reported_and_left_alone(wired: Path) -> None:
    url = f"sqlite:///{wired.parent / 'hwf.db'}"
    engine = db.make_engine(url)
    db.upgrade(engine)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0042_future'"))
    result = runner.invoke(cli.app, ["--config", str(wired), "doctor"])
    assert result.exit_code == 1 and "0042_future" in result.stdout and "upgrade hwf" in result.stdout
    assert db.current_revision(engine) == "0042_future"
    engine.dispose()


def test_doctor_reads_rows_hwf_itself_cannot_load(ctx: Context, sim: Simulator) -> None:
    submitted(ctx, sim)
    with ctx.sessions.begin() as session:
        session.execute(text("UPDATE attempts SET state = 'exploded' WHERE step = 'migrate'"))
    with pytest.raises(LookupError), ctx.sessions() as session:
        session.scalars(select(Attempt).where(Attempt.step == "migrate")).one()
    assert [f.kind for f in doctor.diagnose(ctx).findings] == ["corrupt_attempt"]
