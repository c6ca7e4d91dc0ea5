"""``hwf audit`` and ``hwf add --adopt``: Alma's job history, the order of the steps, adoption at the proven state."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from orchestrator.alma.types import JobInstance
from orchestrator.cli import app
from orchestrator.domain import jobrules
from orchestrator.errors import BadInputError, NeedsAttentionError
from orchestrator.service import adoption, audit, repair, views, workflow
from orchestrator.service.audit import AuditReport, AuditRun
from orchestrator.service.context import Context
from orchestrator.simulator import Scenario, SimServer, Simulator
from orchestrator.store.models import Attempt, AttemptState
from tests.support import FakeClock, make_set, write_config

JOB = {"copy": "M1234567890000561", "migration": "M2234567890000561", "integration": "M50700"}
TITLE = {
    "copy": "Copy dcterms to dc:identifier",
    "migration": "DG Handle Migration",
    "integration": "Handle Integration",
}
STEP = {"copy": "copy_identifiers", "migration": "migrate", "integration": "integrate"}
T0 = datetime(2026, 1, 5, 14, 0, tzinfo=UTC)


# ---------------------------------------------------------------------------------------------
# the order, on hand-made runs


def run(
    kind: str,
    minute: float,
    *,
    status: str = "COMPLETED_SUCCESS",
    minutes: float = 5,
    modified: int | None = None,
    by: str = "UI (jsmith)",
) -> AuditRun:
    counters = (
        [] if modified is None else [{"code": "x.records_modified", "desc": "Records modified", "value": modified}]
    )
    terminal = status.startswith("COMPLETED") or status in ("FAILED",)
    return AuditRun(
        step=STEP[kind],
        job_id=JOB[kind],
        instance_id=f"{kind}-{minute:g}",
        name=f"{TITLE[kind]} - Theses - 2026-01-05",
        by=by,
        submit_time=T0 + timedelta(minutes=minute),
        start_time=T0 + timedelta(minutes=minute),
        end_time=T0 + timedelta(minutes=minute + minutes) if terminal else None,
        status=status,
        ok=status in ("COMPLETED_SUCCESS", "COMPLETED_WARNING"),
        terminal=terminal,
        counters=counters,
    )


def analysed(*runs: AuditRun) -> AuditReport:
    report = AuditReport("123", "Theses", False, "2025-01-01", "2026-02-01")
    audit.analyse(report, list(runs))
    return report


def codes(report: AuditReport) -> list[tuple[str, str]]:
    return [(f.severity, f.code) for f in report.findings]


def test_copy_migration_integration_in_order_proves_integrated() -> None:
    report = analysed(run("copy", 0), run("migration", 10), run("integration", 20))
    assert report.valid and report.proven_stage == "integrated"
    assert [r.verdict for r in report.runs] == ["counts", "counts", "counts"]
    assert codes(report) == []


def test_seed_case_integration_before_migration_is_invalid_and_says_what_to_do() -> None:
    report = analysed(run("copy", 0), run("integration", 10), run("migration", 20))
    assert not report.valid
    assert report.proven_stage == "identifiers_copied"
    assert codes(report) == [("error", "integration_before_migration")]
    finding = report.findings[0]
    assert "integration-10" in finding.message and "legacy handles never resolve" in finding.message
    assert "Ex Libris support" in finding.action and "then run the Handle Migration job" in finding.action
    assert [r.verdict for r in report.runs] == ["counts", "breaks the order", "after the broken order: not counted"]


def test_integration_started_before_the_migration_ended_is_invalid() -> None:
    report = analysed(run("copy", 0), run("migration", 10, minutes=30), run("integration", 20))
    assert codes(report) == [("error", "integration_before_migration")]
    assert report.proven_stage == "migrated"


def test_copy_after_migration_that_changed_nothing_is_pointless_but_harmless() -> None:
    report = analysed(run("copy", 0), run("migration", 10), run("copy", 20, modified=0))
    assert report.valid and report.proven_stage == "migrated"
    assert codes(report) == [("warning", "copy_after_migration")]
    assert "pointless" in report.findings[0].message


def test_copy_after_migration_that_changed_records_needs_the_migration_again() -> None:
    report = analysed(run("migration", 0), run("integration", 10), run("copy", 20, modified=12))
    assert report.valid
    assert report.proven_stage == "identifiers_copied"
    assert ("warning", "copy_after_migration") in codes(report)
    assert "changed 12 records" in report.findings[-1].message
    assert "Run the migration again, then the integration" in report.findings[-1].action


def test_migration_without_copy_counts_with_a_note() -> None:
    report = analysed(run("migration", 0), run("integration", 10))
    assert report.valid and report.proven_stage == "integrated" and report.copy_skipped
    assert codes(report) == [("note", "no_copy_before_migration")]


def test_migration_during_the_copy_does_not_count() -> None:
    report = analysed(run("copy", 0, minutes=20), run("migration", 10))
    assert report.valid and report.proven_stage == "identifiers_copied"
    assert codes(report) == [("warning", "migration_during_copy")]


def test_migration_after_integration_needs_the_integration_again() -> None:
    report = analysed(run("copy", 0), run("migration", 10), run("integration", 20), run("migration", 30))
    assert report.proven_stage == "migrated"
    assert codes(report)[-1] == ("warning", "migration_after_integration")


def test_failed_and_running_runs_are_the_frontier() -> None:
    failed = analysed(run("copy", 0), run("migration", 10, status="COMPLETED_FAILED"))
    assert failed.proven_stage == "identifiers_copied"
    assert failed.frontier is not None and failed.frontier.instance_id == "migration-10"
    assert codes(failed) == [("note", "run_failed")]
    retried = analysed(run("copy", 0), run("migration", 10, status="FAILED"), run("migration", 20))
    assert retried.proven_stage == "migrated" and retried.frontier is None
    assert [r.instance_id for r in retried.counted["migrate"]] == ["migration-10", "migration-20"]
    running = analysed(run("copy", 0), run("migration", 10, status="RUNNING"))
    assert running.frontier is not None and running.frontier.verdict == "running"
    early = analysed(run("copy", 0), run("integration", 10, status="RUNNING"))
    assert codes(early) == [("error", "integration_before_migration")]
    assert "Abort it in Alma" in early.findings[0].action


def test_repeated_runs_are_harmless() -> None:
    report = analysed(run("copy", 0), run("copy", 5), run("migration", 10), run("migration", 15))
    assert report.valid and report.proven_stage == "migrated"
    assert [f.code for f in report.findings] == ["copy_identifiers_again", "migrate_again"]


def test_no_runs_says_where_to_look() -> None:
    report = analysed()
    assert report.proven_stage == "created" and codes(report) == [("note", "no_runs")]


def instance(name: str, submitted_by: str = "exl_api") -> JobInstance:
    return JobInstance("1", "M1", name, "COMPLETED_SUCCESS", submitted_by=submitted_by, submit_time=T0)


def test_which_instance_names_name_the_set() -> None:
    yes = [
        "DG Handle Migration - Theses - 2026-01-05 9:00 AM",
        "hwf migrate set 123 hwf-0a1b2c - 2026-01-05 9:00 AM",
        "Handle Integration - set 123",
    ]
    no = [
        "DG Handle Migration - Theses 2 - 2026-01-05 9:00 AM",
        "hwf migrate set 1234 hwf-0a1b2c - 2026-01-05 9:00 AM",
        "hwf migrate set 12 hwf-0a1b2c",
        "Handle Integration - 2026-01-05 9:00 AM",
    ]
    assert [jobrules.names_set(instance(n).name, "123", "Theses") for n in yes] == [True, True, True]
    assert [jobrules.names_set(instance(n).name, "123", "Theses") for n in no] == [False, False, False, False]


# ---------------------------------------------------------------------------------------------
# Alma's history, on the simulator


def by_hand(ctx: Context, clock: FakeClock, kind: str, set_id: str, set_name: str, *, wait: float = 120) -> str:
    """A run as the Alma UI names it: ``<job> - <set name> - <timestamp>``."""
    submitted = ctx.alma.run_job(JOB[kind], [("set_id", set_id), ("job_name", f"{TITLE[kind]} - {set_name}")])
    clock.advance(wait)
    return submitted.instance_id


@pytest.fixture
def scenario() -> Scenario:
    return Scenario(
        job_seconds={"copy": 30, "migration": 60, "integration": 45, "other": 10},
        per_second_limit=0,
        copy_keeps_xsi_type=False,
    )


def test_audit_reads_runs_by_hand_and_by_hwf_and_leaves_other_sets_out(
    ctx: Context, sim: Simulator, clock: FakeClock
) -> None:
    theses = make_set(sim, 30, profile="clean", name="Theses", seed=6)
    other = make_set(sim, 30, profile="clean", name="Theses 2", seed=8)
    copy_other = by_hand(ctx, clock, "copy", other, "Theses 2")
    migration = by_hand(ctx, clock, "migration", theses, "Theses")
    workflow.add_set(ctx, theses)
    report = audit.audit_set(ctx, theses)
    assert copy_other not in [r.instance_id for r in report.runs]
    first = report.runs[0]
    assert (first.instance_id, first.step, first.by, first.known_to_hwf) == (migration, "migrate", "API", False)
    assert report.registered and report.name == "Theses"


def test_audit_of_hwfs_own_runs_is_valid(ctx: Context, sim: Simulator) -> None:
    set_id = make_set(sim, 30, profile="demo", name="Own", seed=3)
    workflow.add_set(ctx, set_id)
    assert workflow.advance(ctx, set_id).outcome is workflow.Outcome.VERIFIED
    report = audit.audit_set(ctx, set_id)
    assert [(r.step, r.by, r.known_to_hwf, r.verdict) for r in report.runs] == [
        ("copy_identifiers", "hwf", True, "counts"),
        ("migrate", "hwf", True, "counts"),
        ("integrate", "hwf", True, "counts"),
    ]
    assert report.valid and report.proven_stage == "integrated"


def test_audit_of_hwfs_clean_set_knows_hwf_skipped_the_copy(ctx: Context, sim: Simulator) -> None:
    set_id = make_set(sim, 30, profile="clean", name="Clean", seed=5)
    workflow.add_set(ctx, set_id)
    workflow.advance(ctx, set_id)
    report = audit.audit_set(ctx, set_id)
    assert [r.verdict for r in report.runs] == ["counts (copy not needed)", "counts"]
    assert report.findings == [] and report.valid


def test_audit_window_and_unknown_sets(ctx: Context, sim: Simulator, clock: FakeClock) -> None:
    set_id = make_set(sim, 30, profile="clean", name="Old", seed=3)
    by_hand(ctx, clock, "migration", set_id, "Old")
    clock.advance(40 * 86400)
    assert audit.audit_set(ctx, set_id, days=30).runs == []
    assert len(audit.audit_set(ctx, set_id).runs) == 1
    assert len(audit.audit_set(ctx, "Old").runs) == 1  # an unregistered set, by its exact Alma name
    with pytest.raises(BadInputError, match="no Alma set has that exact name"):
        audit.audit_set(ctx, "Ol")
    with pytest.raises(BadInputError, match="at least 1"):
        audit.audit_set(ctx, set_id, days=0)


# ---------------------------------------------------------------------------------------------
# adopt


def attempts(ctx: Context, set_id: str) -> list[tuple[str, str, str | None]]:
    return [(a.step, a.state, a.instance_id) for a in views.attempts(ctx, set_id)]


def test_adopt_copy_and_migration_done_by_hand_then_hwf_runs_only_the_rest(
    ctx: Context, sim: Simulator, clock: FakeClock
) -> None:
    set_id = make_set(sim, 30, profile="demo", name="Hand done", seed=9)
    copy = by_hand(ctx, clock, "copy", set_id, "Hand done")
    migration = by_hand(ctx, clock, "migration", set_id, "Hand done")
    summary = adoption.adopt(ctx, set_id, "hand")
    assert (summary.name, summary.state, summary.attention) == ("hand", "migrated", None)
    assert attempts(ctx, set_id) == [("copy_identifiers", "finished", copy), ("migrate", "finished", migration)]
    history = list(views.history(ctx, set_id))
    transitions = [e for e in history if e.kind == "transition"]
    assert [(e.data or {}).get("to") for e in transitions] == ["identifiers_copied", "migrated"]
    assert all((e.data or {}).get("adopted") for e in transitions)
    assert workflow.advance(ctx, set_id).outcome is workflow.Outcome.VERIFIED
    assert [r.kind for r in sim.runs_for(set_id)] == ["copy", "migration", "integration"]


def test_adopt_the_seed_case_stops_before_the_broken_order_with_attention(
    ctx: Context, sim: Simulator, clock: FakeClock
) -> None:
    set_id = make_set(sim, 30, profile="demo", name="Seed case", seed=9)
    by_hand(ctx, clock, "copy", set_id, "Seed case")
    by_hand(ctx, clock, "integration", set_id, "Seed case")
    by_hand(ctx, clock, "migration", set_id, "Seed case")
    summary = adoption.adopt(ctx, set_id)
    assert summary.state == "identifiers_copied"
    assert summary.attention is not None
    assert summary.attention.startswith("adopted at identifiers_copied, not further: the integration run")
    assert "legacy handles never resolve" in summary.attention
    with pytest.raises(NeedsAttentionError, match="integration run"):
        workflow.advance(ctx, set_id)
    assert [r.kind for r in sim.runs_for(set_id)] == ["copy", "integration", "migration"]


def test_adopt_reattaches_to_a_running_next_step(ctx: Context, sim: Simulator, clock: FakeClock) -> None:
    set_id = make_set(sim, 30, profile="demo", name="Running", seed=7)
    by_hand(ctx, clock, "copy", set_id, "Running")
    migration = by_hand(ctx, clock, "migration", set_id, "Running", wait=5)
    summary = adoption.adopt(ctx, set_id)
    assert summary.state == "identifiers_copied"
    assert (summary.step, summary.instance_id) == ("migrate", migration)
    assert workflow.advance(ctx, set_id).outcome is workflow.Outcome.VERIFIED
    assert [r.kind for r in sim.runs_for(set_id)] == ["copy", "migration", "integration"]


def test_adopt_a_failed_next_step_asks_for_retry(ctx: Context, sim: Simulator, clock: FakeClock) -> None:
    set_id = sim.create_set("Failing", sim.generate_records(8, profile="problems", seed=4))
    by_hand(ctx, clock, "copy", set_id, "Failing")
    summary = adoption.adopt(ctx, set_id)
    assert summary.state == "created"
    assert summary.attention is not None and "COMPLETED_FAILED" in summary.attention
    assert "hwf retry" in summary.attention
    assert [a[1] for a in attempts(ctx, set_id)] == ["finished"]


def test_adopt_does_not_go_past_records_that_were_not_ready(clock: FakeClock, tmp_path: Path) -> None:
    from orchestrator.config import parse_config
    from tests.support import API_KEY, config_dict, make_context

    sim = Simulator(Scenario(per_second_limit=0, copy_keeps_xsi_type=True), clock=clock)
    config = parse_config(
        config_dict(db=f"sqlite:///{tmp_path / 'trap.db'}"),
        tmp_path / "hwf.toml",
        environ={"HWF_ALMA_API_KEY": API_KEY},
    )
    ctx = make_context(config, sim, clock)
    try:
        set_id = make_set(sim, 30, profile="demo", name="Trap", seed=4)
        by_hand(ctx, clock, "copy", set_id, "Trap")
        by_hand(ctx, clock, "migration", set_id, "Trap")
        summary = adoption.adopt(ctx, set_id)
        # The copy kept xsi:type, so the migration skipped those records: it does not count.
        assert summary.state == "identifiers_copied" and summary.attention is None
        assert [a[0] for a in attempts(ctx, set_id)] == ["copy_identifiers"]
        assert any(e.kind == "adopt_stopped" for e in views.history(ctx, set_id))
        with pytest.raises(NeedsAttentionError, match="NEEDS_FIX"):
            workflow.advance(ctx, set_id)
        repair.fix(ctx, set_id, apply=True)
        assert workflow.advance(ctx, set_id).outcome is workflow.Outcome.VERIFIED
        assert [r.kind for r in sim.runs_for(set_id)] == ["copy", "migration", "migration", "integration"]
    finally:
        ctx.close()


def test_adopt_migration_without_copy_records_the_copy_as_not_needed(
    ctx: Context, sim: Simulator, clock: FakeClock
) -> None:
    set_id = make_set(sim, 30, profile="clean", name="Clean by hand", seed=13)
    by_hand(ctx, clock, "migration", set_id, "Clean by hand")
    summary = adoption.adopt(ctx, set_id)
    assert summary.state == "migrated"
    assert [a[:2] for a in attempts(ctx, set_id)] == [("copy_identifiers", "not_needed"), ("migrate", "finished")]
    demo = make_set(sim, 30, profile="demo", name="Demo by hand", seed=12)
    by_hand(ctx, clock, "migration", demo, "Demo by hand")
    assert adoption.adopt(ctx, demo).state == "created"


def test_adopt_refuses_a_set_hwf_has_worked_on_and_a_stray_running_run(
    ctx: Context, sim: Simulator, clock: FakeClock
) -> None:
    worked = make_set(sim, 30, profile="clean", name="Worked", seed=6)
    workflow.add_set(ctx, worked)
    workflow.advance(ctx, worked, wait=False)
    with pytest.raises(BadInputError, match="already registered and hwf has worked on it"):
        adoption.adopt(ctx, worked)
    untouched = make_set(sim, 30, profile="clean", name="Untouched", seed=9)
    workflow.add_set(ctx, untouched)
    by_hand(ctx, clock, "migration", untouched, "Untouched")
    assert adoption.adopt(ctx, untouched).state == "migrated"
    stray = make_set(sim, 30, profile="demo", name="Stray", seed=5)
    by_hand(ctx, clock, "migration", stray, "Stray", wait=5)
    with pytest.raises(BadInputError, match="still running and is not the set's next step"):
        adoption.adopt(ctx, stray)
    with pytest.raises(BadInputError, match="not an Alma set id"):
        adoption.adopt(ctx, "abc")


def test_adopted_runs_are_never_run_twice(ctx: Context, sim: Simulator, clock: FakeClock) -> None:
    set_id = make_set(sim, 30, profile="demo", name="Twice", seed=5)
    copy = by_hand(ctx, clock, "copy", set_id, "Twice")
    adoption.adopt(ctx, set_id)
    with ctx.sessions() as session:
        row = session.scalars(select(Attempt).where(Attempt.instance_id == copy)).one()
        assert row.state is AttemptState.FINISHED and row.job_id == JOB["copy"]
    assert workflow.advance(ctx, set_id).outcome is workflow.Outcome.VERIFIED
    assert [r.kind for r in sim.runs_for(set_id)] == ["copy", "migration", "integration"]


# ---------------------------------------------------------------------------------------------
# the command line, over real HTTP to the simulator


def test_cli_audit_exit_codes_and_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import httpx

    from orchestrator.alma.client import AlmaClient

    sim = Simulator(Scenario(per_second_limit=0, job_seconds={"copy": 0, "migration": 0, "integration": 0}))
    with SimServer(sim, host="127.0.0.1", port=0) as server:
        client = AlmaClient(server.url, "l7xx-cli-key", transport=httpx.HTTPTransport())
        good = make_set(sim, 30, profile="clean", name="Good", seed=4)
        bad = make_set(sim, 30, profile="clean", name="Bad", seed=3)
        for kind in ("migration", "integration"):
            client.run_job(JOB[kind], [("set_id", good), ("job_name", f"{TITLE[kind]} - Good")])
        for kind in ("integration", "migration"):
            client.run_job(JOB[kind], [("set_id", bad), ("job_name", f"{TITLE[kind]} - Bad")])
        client.close()
        config = write_config(
            tmp_path / "cli.toml",
            server.url,
            db=f"sqlite:///{tmp_path / 'cli.db'}",
            preset="minimal",
            jobs={
                "copy_identifiers": JOB["copy"],
                "handle_migration": JOB["migration"],
                "handle_integration": JOB["integration"],
            },
        )
        monkeypatch.setenv("HWF_ALMA_API_KEY", "l7xx-cli-key")
        runner = CliRunner()
        ok = runner.invoke(app, ["--config", str(config), "audit", good])
        assert ok.exit_code == 0, ok.output
        assert "Order: valid" in ok.stdout and "integrated" in ok.stdout
        broken = runner.invoke(app, ["--config", str(config), "audit", bad, "--json"])
        assert broken.exit_code == 3, broken.output
        data: dict[str, Any] = json.loads(broken.stdout)
        assert data["valid"] is False and data["proven_state"] == "created"
        assert data["findings"][0]["code"] == "integration_before_migration"
        assert [r["step"] for r in data["runs"]] == ["integrate", "migrate"]
        missing = runner.invoke(app, ["--config", str(config), "audit", "No such set"])
        assert missing.exit_code == 2
