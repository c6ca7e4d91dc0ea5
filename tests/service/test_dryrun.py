"""`advance --dry-run` / `resume --all --dry-run`: the exact requests and the transition, and nothing changed."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from orchestrator.cli import base as cli
from orchestrator.config import parse_config
from orchestrator.errors import BadInputError
from orchestrator.service import dryrun, preflight, views, workflow
from orchestrator.service.actions import PlannedRequest
from orchestrator.service.actions.batch import Batch
from orchestrator.service.actions.submit import TOKEN_PLACEHOLDER
from orchestrator.service.context import Context
from orchestrator.simulator import Simulator
from orchestrator.store.models import AlmaSet, Attempt, Event, Record
from tests.support import (
    API_KEY,
    DEFAULT_JOBS,
    FakeClock,
    config_dict,
    dry_context,
    make_context,
    make_set,
    write_config,
)

COPY_JOB = "M1234567890000561"
MIGRATION_JOB = "M2234567890000561"


def fingerprint(ctx: Context) -> tuple[Any, ...]:
    """Everything hwf stores about sets, attempts, records and events."""
    with ctx.sessions() as s:
        sets = [(r.alma_set_id, r.stage.value, r.attention, r.waiting, r.version) for r in s.scalars(select(AlmaSet))]
        attempts = [(a.id, a.state.value, a.status, a.next_poll_at) for a in s.scalars(select(Attempt))]
        records = s.scalar(select(func.count()).select_from(Record))
        events = s.scalar(select(func.max(Event.id)))
    return sets, attempts, records, events


def requests_of(plan: dryrun.DryRunPlan) -> list[PlannedRequest]:
    return [r for a in plan.actions for r in a.requests]


def test_new_set_precheck_then_submit(ctx: Context, sim: Simulator) -> None:
    set_id = make_set(sim, 250, name="Dry titles")
    workflow.add_set(ctx, set_id)
    before, stats = fingerprint(ctx), sim.stats["requests"]
    plan = dryrun.describe_advance(dry_context(ctx), set_id)
    assert fingerprint(ctx) == before and sim.stats["requests"] == stats
    assert [a.action for a in plan.actions] == ["precheck", "submit"]
    bibs, post = requests_of(plan)
    with ctx.sessions() as s:
        first = list(s.scalars(select(Record.mms_id).order_by(Record.id).limit(100)))
    assert bibs.method == "GET" and bibs.count == 3
    assert bibs.path == f"/almaws/v1/bibs?mms_id={'%2C'.join(first)}&view=full"  # exactly as the client sends it
    assert ("Authorization", "apikey ***") in bibs.headers
    assert post.method == "POST" and post.path == f"/almaws/v1/conf/jobs/{COPY_JOB}?op=run"
    assert dict(post.headers) == {
        "Authorization": "apikey ***",
        "Accept": "application/json",
        "Content-Type": "application/json",
    }
    body = json.loads(post.body or "")
    assert body == {
        "parameter": [
            {"name": {"value": "set_id"}, "value": set_id},
            {"name": {"value": "job_name"}, "value": f"hwf copy_identifiers set {set_id} hwf-<token>"},
        ]
    }
    assert plan.transition is not None
    assert plan.transition.startswith(
        "created -> identifiers_copied (copy_identifiers) once the job ends COMPLETED_SUCCESS"
    )
    text = plan.text()
    assert f"POST /almaws/v1/conf/jobs/{COPY_JOB}?op=run" in text
    assert "(100 MMS IDs)" in text and "[3 requests like this" in text and "250 records" in text
    assert API_KEY not in text and API_KEY not in json.dumps(plan.as_json())
    assert plan.as_json()["actions"][0]["requests"][0]["path"] == bibs.path


def test_checked_clean_set_says_the_copy_job_would_be_skipped(ctx: Context, sim: Simulator) -> None:
    set_id = make_set(sim, 12, name="Dry titles")
    workflow.add_set(ctx, set_id)
    preflight.check_set(ctx, set_id)
    plan = dryrun.describe_advance(dry_context(ctx), set_id)
    notes = " ".join(plan.actions[0].notes)
    assert "last check: 12 READY" in notes and "copy job is not needed" in notes


def test_running_job_is_polled(ctx: Context, sim: Simulator, clock: FakeClock) -> None:
    set_id = make_set(sim, 12, name="Dry titles")
    workflow.add_set(ctx, set_id)
    result = workflow.advance(ctx, set_id, wait=False)
    assert result.outcome is workflow.Outcome.WAITING
    with ctx.sessions() as s:
        attempt = s.scalars(select(Attempt).where(Attempt.job_id.is_not(None))).one()
        instance = attempt.instance_id
    assert attempt.job_id == MIGRATION_JOB
    before = fingerprint(ctx)
    plan = dryrun.describe_advance(dry_context(ctx), set_id)
    assert fingerprint(ctx) == before
    assert [a.action for a in plan.actions] == ["wait", "poll"]
    (poll,) = requests_of(plan)
    assert (poll.method, poll.path) == ("GET", f"/almaws/v1/conf/jobs/{MIGRATION_JOB}/instances/{instance}")
    assert plan.transition is not None and plan.transition.startswith("identifiers_copied -> migrated (migrate)")
    clock.advance(600)
    assert [a.action for a in dryrun.describe_advance(dry_context(ctx), set_id).actions] == ["poll"]


def test_lost_submission_is_reconciled_not_resubmitted(ctx: Context, sim: Simulator) -> None:
    set_id = make_set(sim, 12, name="Dry titles")
    workflow.add_set(ctx, set_id)

    def crash(*args: object, **kwargs: object) -> object:
        raise KeyboardInterrupt("simulated kill after the attempt was committed")

    ctx.alma.run_job = crash  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        workflow.advance(ctx, set_id)
    plan = dryrun.describe_advance(dry_context(ctx), set_id)
    assert [a.action for a in plan.actions] == ["reconcile"]
    (listing,) = requests_of(plan)
    assert listing.path.startswith(f"/almaws/v1/conf/jobs/{MIGRATION_JOB}/instances?submit_date_from=2026-02-01")
    assert "submit_date_to=2026-02-03&limit=100&offset=0" in listing.path
    assert "never guesses" in " ".join(plan.actions[0].notes)
    assert not any(r.method == "POST" for r in requests_of(plan))


def test_attention_sends_nothing_and_says_what_to_do(ctx: Context, sim: Simulator) -> None:
    set_id = make_set(sim, 30, profile="problems", seed=4, name="Dry titles")
    workflow.add_set(ctx, set_id)
    with pytest.raises(Exception, match="needs attention"):
        workflow.advance(ctx, set_id)
    plan = dryrun.describe_advance(dry_context(ctx), set_id)
    assert [a.action for a in plan.actions] == ["attention"]
    assert requests_of(plan) == [] and plan.transition is None
    assert "exit 3" in plan.actions[0].summary and f"hwf exclude {set_id}" in plan.actions[0].notes[0]


@pytest.fixture
def settling(tmp_path: Path, sim: Simulator, clock: FakeClock) -> Iterator[tuple[Context, str]]:
    data = config_dict(db=f"sqlite:///{tmp_path / 'hwf.db'}", handles={"settle_minutes": 10})
    ctx = make_context(parse_config(data, tmp_path / "hwf.toml", environ={"HWF_ALMA_API_KEY": API_KEY}), sim, clock)
    set_id = make_set(sim, 7, name="Dry titles")
    workflow.add_set(ctx, set_id)
    for _ in range(100):
        result = workflow.advance(ctx, set_id, wait=False)
        if result.state == "integrated" and "settling" in result.message:
            break
        clock.advance(30)
    yield ctx, set_id
    ctx.close()


def test_verification_requests_go_to_the_resolver_without_a_key(settling: tuple[Context, str]) -> None:
    ctx, set_id = settling
    plan = dryrun.describe_advance(dry_context(ctx), set_id)
    assert [a.action for a in plan.actions] == ["wait", "verify"]
    (first,) = requests_of(plan)
    with ctx.sessions() as s:
        handle = s.scalars(select(Record.handle).order_by(Record.id)).first()
    assert first.count == 7
    assert (first.method, first.path) == (
        "GET",
        f"{ctx.config.handles.resolver_url}/api/handles/{handle}?type=URL",
    )  # the public proxy first; auth=true only for a handle it does not answer right
    assert "asked again at the primary server (auth=true)" in (first.note or "")
    assert dict(first.headers) == {"Accept": "application/json"}
    assert plan.transition is not None and plan.transition.startswith("integrated -> verified (verify)")


def test_verified_set_has_nothing_to_do(ctx: Context, sim: Simulator) -> None:
    set_id = make_set(sim, 5, name="Dry titles")
    workflow.add_set(ctx, set_id)
    workflow.advance(ctx, set_id)
    plan = dryrun.describe_advance(dry_context(ctx), set_id)
    assert [a.action for a in plan.actions] == ["done"] and plan.transition is None
    assert dryrun.describe_all(dry_context(ctx)) == []


def test_xml_format_and_payload_template(tmp_path: Path, sim: Simulator, clock: FakeClock) -> None:
    (tmp_path / "copy.xml").write_text(
        "<job><parameters><parameter><name>set_id</name><value>OLD</value></parameter>"
        "<parameter><name>task_Copy_mode</name><value>keep</value></parameter>"
        "</parameters></job>"
    )
    data = config_dict(db=f"sqlite:///{tmp_path / 'hwf.db'}", format="xml")
    data["alma"]["jobs"]["copy_identifiers"] = {"id": COPY_JOB, "payload_file": "copy.xml"}
    config = parse_config(data, tmp_path / "hwf.toml", environ={"HWF_ALMA_API_KEY": API_KEY})
    ctx = make_context(config, sim, clock)
    try:
        set_id = make_set(sim, 12, name="Dry titles")
        workflow.add_set(ctx, set_id)
        plan = dryrun.describe_advance(dry_context(ctx), set_id)
        post = next(r for r in requests_of(plan) if r.method == "POST")
        assert dict(post.headers)["Content-Type"] == "application/xml"
        assert dict(post.headers)["Accept"] == "application/xml"
        assert f"<name>set_id</name><value>{set_id}</value>" in (post.body or "")
        assert "<name>job_name</name><value>hwf copy_identifiers set" in (post.body or "")
        assert "<value>keep</value>" in (post.body or "") and "OLD" not in (post.body or "")
    finally:
        ctx.close()


def test_manual_integration_mode(
    tmp_path: Path, sim: Simulator, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = config_dict(db=f"sqlite:///{tmp_path / 'hwf.db'}")
    data["alma"]["jobs"]["handle_integration_mode"] = "manual"
    ctx = make_context(parse_config(data, tmp_path / "hwf.toml", environ={"HWF_ALMA_API_KEY": API_KEY}), sim, clock)
    real = Batch.run

    def crash(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt("killed right after the migrate transition")

    monkeypatch.setattr(Batch, "run", crash)
    try:
        set_id = make_set(sim, 12, name="Dry titles")
        workflow.add_set(ctx, set_id)
        with pytest.raises(KeyboardInterrupt):
            for _ in range(50):
                workflow.advance(ctx, set_id, wait=False)
                clock.advance(30)
        assert views.status(ctx, set_id)[0].state == "migrated"
        plan = dryrun.describe_advance(dry_context(ctx), set_id)
        assert [a.action for a in plan.actions] == ["batch"]
        assert "queue the set for the next integration batch" in plan.actions[0].summary
        assert plan.transition is not None and plan.transition.startswith("migrated -> integrated (integrate)")

        monkeypatch.setattr(Batch, "run", real)
        with ctx.sessions.begin() as s:  # the killed process's lease has run out
            s.scalars(select(AlmaSet)).one().lease_owner = None
        workflow.advance(ctx, set_id, wait=False)  # the batch forms and is announced: it waits for a person
        clock.advance(30)
        plan = dryrun.describe_advance(dry_context(ctx), set_id)
        looks = [a for a in plan.actions if a.action == "batch"]
        assert looks and "look for your run of the Handle integration profile on 'hwf integration batch 1" in (
            looks[0].summary
        )
        assert f"hwf confirm {set_id} --instance ID" in looks[0].summary
        assert requests_of(plan)[-1].path.startswith("/almaws/v1/conf/jobs/M50700/instances?")
        assert sim.runs_for(set_id) and all(r.kind != "integration" for r in sim.job_runs)  # nothing sent
    finally:
        ctx.close()


def test_describe_all_filters_by_name(ctx: Context, sim: Simulator) -> None:
    first = make_set(sim, 3, name="Theses 2019", seed=1)
    second = make_set(sim, 3, name="Photos", seed=2)
    workflow.add_set(ctx, first)
    workflow.add_set(ctx, second)
    assert [p.set for p in dryrun.describe_all(dry_context(ctx))] == [first, second]
    assert [p.set for p in dryrun.describe_all(dry_context(ctx), only="theses*")] == [first]


def test_unknown_set_is_bad_input(ctx: Context) -> None:
    with pytest.raises(BadInputError, match="unknown set"):
        dryrun.describe_advance(dry_context(ctx), "nope")


def test_lease_held_elsewhere_is_mentioned(ctx: Context, sim: Simulator, clock: FakeClock) -> None:
    set_id = make_set(sim, 3, name="Dry titles")
    workflow.add_set(ctx, set_id)
    with ctx.sessions.begin() as s:
        row = s.scalars(select(AlmaSet)).one()
        row.lease_owner = "otherhost:42"
        row.lease_expires_at = clock() + timedelta(minutes=1)
    plan = dryrun.describe_advance(dry_context(ctx), set_id)
    assert any("otherhost:42" in n and "exit 4" in n for n in plan.notes)


def test_cli_dry_run_changes_no_byte_of_the_database(
    tmp_path: Path, sim: Simulator, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = parse_config(
        config_dict(db=f"sqlite:///{tmp_path / 'hwf.db'}"), tmp_path / "hwf.toml", environ={"HWF_ALMA_API_KEY": API_KEY}
    )
    ctx = make_context(config, sim, clock)
    set_id = make_set(sim, 5, name="Dry titles")
    workflow.add_set(ctx, set_id)
    ctx.close()
    ctx.sessions.kw["bind"].dispose()
    jobs = {**DEFAULT_JOBS, "copy_identifiers": COPY_JOB, "handle_migration": MIGRATION_JOB}
    write_config(tmp_path, preset="minimal", resolver="http://127.0.0.1:9", jobs=jobs)
    monkeypatch.setenv("HWF_ALMA_API_KEY", API_KEY)

    def digest() -> dict[str, str]:
        # The -shm file is SQLite's shared-memory index, rewritten by any reader; the data is in db and -wal.
        files = [tmp_path / "hwf.db", tmp_path / "hwf.db-wal"]
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in files if p.exists() and p.stat().st_size}

    before = digest()
    assert "hwf.db" in before
    runner = CliRunner()
    result = runner.invoke(cli.app, ["advance", set_id, "--dry-run"])
    assert result.exit_code == 0, result.output
    assert f"POST /almaws/v1/conf/jobs/{COPY_JOB}?op=run" in result.stdout and "apikey ***" in result.stdout
    assert API_KEY not in result.stdout + result.stderr
    every = runner.invoke(cli.app, ["resume", "--all", "--dry-run"])
    assert every.exit_code == 0 and f"Set {set_id}" in every.stdout
    assert digest() == before


def test_dry_run_shows_the_very_requests_the_client_sends(
    tmp_path: Path, sim: Simulator, clock: FakeClock, config: Any
) -> None:
    """The dry run is not a second implementation: its bibs GET and job POST are byte for byte what the
    Alma client then sends (the key shown as ***, the token a placeholder)."""
    import httpx

    from orchestrator.wiring import build_context
    from tests.support import sim_wiring

    seen: list[httpx.Request] = []

    def recording(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return sim.handle(request)

    ctx = build_context(config, wiring=sim_wiring(sim, clock, alma_transport=httpx.MockTransport(recording)))
    try:
        set_id = make_set(sim, 150, profile="demo", name="Dry titles")  # records that need the copy job
        workflow.add_set(ctx, set_id)
        plan = dryrun.describe_advance(dry_context(ctx), set_id)
        planned_bibs, planned_post = requests_of(plan)
        seen.clear()
        workflow.advance(ctx, set_id, wait=False)
    finally:
        ctx.close()
    sent_bibs = next(r for r in seen if r.url.path.endswith("/bibs"))
    sent_post = next(r for r in seen if r.method == "POST" and "op=run" in str(r.url))
    assert planned_bibs.path == sent_bibs.url.raw_path.decode()
    for planned, sent in ((planned_bibs, sent_bibs), (planned_post, sent_post)):
        shown = dict(planned.headers)
        assert shown.pop("Authorization") == "apikey ***" and sent.headers["Authorization"] == f"apikey {API_KEY}"
        assert shown == {name: sent.headers[name] for name in shown}
    token = json.loads(sent_post.content)["parameter"][1]["value"].rsplit(" ", 1)[1]
    assert planned_post.path == sent_post.url.raw_path.decode()
    assert planned_post.body == sent_post.content.decode().replace(token, TOKEN_PLACEHOLDER)
