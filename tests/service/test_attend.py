"""Problems on day one, and one command to go on that stays true.

A set's records are read when ``hwf add`` registers it and, for a set that waits for a job slot, by the worker
as soon as its copy job ends; the records attention names one command to go on (the same in the reason, the
overview and the set's page), and ``hwf exclude``, ``hwf include``, ``hwf check`` and ``hwf fix`` rewrite or
clear it, so the command it names is always one that works."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from orchestrator.config import Config, parse_config
from orchestrator.domain.attention import GO_ON, Attention, next_command
from orchestrator.domain.steps import Step
from orchestrator.errors import NeedsAttentionError
from orchestrator.service import overview, preflight, repair, scheduler, setdetail, workflow
from orchestrator.service.context import Context, find_set
from orchestrator.simulator import Scenario, Simulator
from orchestrator.store.models import Attempt, Event
from tests.support import API_KEY, FakeClock, config_dict, make_context, make_set


def attention_of(ctx: Context, set_id: str) -> tuple[str | None, str | None]:
    with ctx.sessions() as session:
        row = find_set(session, set_id)
        return row.attention, row.attention_kind


def go_on(ctx: Context, set_id: str) -> str:
    reason, kind = attention_of(ctx, set_id)
    assert reason is not None
    return next_command(kind, set_id, reason)


# ---------------------------------------------------------------------------------------------
# day one


def test_add_then_first_check_stops_a_set_with_problem_records_on_day_one(ctx: Context, sim: Simulator) -> None:
    set_id = make_set(sim, 30, profile="problems", seed=9, name="Problem titles")
    workflow.add_set(ctx, set_id)
    summary = preflight.check_new(ctx, set_id)
    assert summary is not None and summary.step == Step.COPY_IDENTIFIERS.value
    reason, kind = attention_of(ctx, set_id)
    assert kind == Attention.RECORDS.value and reason is not None
    # The attention counts what the check calls blocking: the same records, the same number.
    blocking = sum(summary.blocking().values())
    assert reason.startswith(f"{blocking} of 30 records cannot go through the workflow")
    # NEEDS_COPY is what the copy job is for: not a record that needs something before it.
    assert all(p["class"] not in ("READY", "NEEDS_COPY") for p in summary.problems)
    assert len(summary.problems) == blocking + sum(summary.later().values())


def test_a_clean_set_needs_nothing_after_its_first_check(ctx: Context, sim: Simulator) -> None:
    set_id = make_set(sim, 8, profile="demo", seed=2)
    workflow.add_set(ctx, set_id)
    summary = preflight.check_new(ctx, set_id)
    assert summary is not None and summary.blocking() == {} and summary.attention is None
    assert attention_of(ctx, set_id) == (None, None)


@pytest.fixture
def limited_config(tmp_path: Path) -> Config:
    # One run of each job an hour: a migration that ran leaves the next set's migration an hour to wait.
    data = config_dict(db=f"sqlite:///{tmp_path / 'hwf.db'}", max_runs_per_job_hour=1, poll_interval_seconds=15)
    return parse_config(data, tmp_path / "hwf.toml", environ={"HWF_ALMA_API_KEY": API_KEY})


def test_the_post_copy_check_runs_when_the_copy_ends_not_when_a_slot_frees(
    limited_config: Config, tmp_path: Path, clock: FakeClock
) -> None:
    sim = Simulator(
        Scenario(job_seconds={"copy": 30, "migration": 30, "integration": 30, "other": 10}, per_second_limit=0),
        clock=clock,
    )
    ctx = make_context(limited_config, sim, clock, sleep=clock.sleep)
    try:
        # A clean set goes all the way first: its migration run fills the migration job's hour.
        first = make_set(sim, 5, profile="clean", name="Clean first", seed=1)
        workflow.add_set(ctx, first)
        assert workflow.advance(ctx, first).outcome is workflow.Outcome.VERIFIED
        with ctx.sessions() as session:
            migrated = session.scalar(select(Attempt.begun_at).where(Attempt.step == "migrate"))
        assert migrated is not None
        trap = make_set(sim, 6, profile="demo", name="Copy leaves xsi:type", seed=4)
        workflow.add_set(ctx, trap)
        scheduler.resume_all(ctx, wait=True)
        with ctx.sessions() as session:
            row = find_set(session, trap)
            copy = session.scalar(select(Attempt).where(Attempt.set_id == row.id, Attempt.step == "copy_identifiers"))
            migrations = session.scalars(
                select(Attempt).where(Attempt.set_id == row.id, Attempt.step == "migrate")
            ).all()
            stopped = session.scalars(
                select(Event.at).where(Event.set_id == row.id, Event.kind == "attention").order_by(Event.id)
            ).first()
        assert row.stage.value == "identifiers_copied" and migrations == []
        assert row.attention_kind == Attention.RECORDS.value and "NEEDS_FIX" in (row.attention or "")
        assert next_command(row.attention_kind, trap, row.attention) == f"hwf fix {trap} --apply"
        assert copy is not None and copy.ended_at is not None and stopped is not None
        # The migration job's next slot is an hour after the first set's run: the problem showed right after the
        # copy job, not then.
        assert copy.ended_at + timedelta(minutes=20) < migrated + timedelta(hours=1)
        assert stopped - copy.ended_at < timedelta(minutes=2)
    finally:
        ctx.close()


def test_sets_never_read_are_read_by_the_worker_after_its_submissions(
    config: Config, sim: Simulator, clock: FakeClock
) -> None:
    import httpx

    seen: list[str] = []
    answer = sim.handle

    def recording(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.method} {request.url.path}")
        return answer(request)

    sim.handle = recording  # type: ignore[method-assign]
    ctx = make_context(config, sim, clock, sleep=clock.sleep)
    try:
        first = make_set(sim, 5, profile="demo", name="Runs first", seed=1)
        older = make_set(sim, 30, profile="problems", name="Registered before", seed=9)
        workflow.add_set(ctx, first)
        workflow.add_set(ctx, older)  # as by an hwf that did not read the records at `hwf add`
        seen.clear()
        scheduler.resume_all(ctx, wait=False, max_running=1)  # one job slot: the older set waits for it
        submitted = seen.index(next(x for x in seen if x.startswith("POST /almaws/v1/conf/jobs/")))
        reads = [i for i, x in enumerate(seen) if x.startswith("GET /almaws/v1/bibs")]
        assert reads and submitted < reads[-1]  # the job went first; the waiting set's records after it
        reason, kind = attention_of(ctx, older)
        assert kind == Attention.RECORDS.value and reason is not None and GO_ON in reason
        with ctx.sessions() as session:
            row = find_set(session, older)
            assert row.waiting is None and row.stage.value == "created"
    finally:
        ctx.close()


# ---------------------------------------------------------------------------------------------
# one command to go on


def test_exclude_hint_holds_and_the_attention_is_rewritten_not_repeated(ctx: Context, sim: Simulator) -> None:
    set_id = make_set(sim, 30, profile="problems", seed=9)
    workflow.add_set(ctx, set_id)
    with pytest.raises(NeedsAttentionError) as raised:
        workflow.advance(ctx, set_id)
    command = go_on(ctx, set_id)
    assert f"{GO_ON}`{command}`" in str(raised.value)
    ids = command.split()[3:-2]
    assert command.startswith(f"hwf exclude {set_id} ") and command.endswith(" --reason TEXT")
    # Part of the list: the attention now names only the others (never the records just left out).
    message = preflight.exclude(ctx, set_id, ids[:2], reason="MARC records, done by hand")
    rewritten = go_on(ctx, set_id)
    assert "still needs attention" in message and f"`{rewritten}`" in message
    assert sorted(rewritten.split()[3:-2]) == sorted(ids[2:])
    with pytest.raises(NeedsAttentionError) as again:
        workflow.advance(ctx, set_id)
    assert ids[0] not in str(again.value) and ids[1] not in str(again.value)
    # Taking one back puts it back into the list.
    preflight.include(ctx, set_id, ids[:1], reason="fixed in Alma after all? no")
    assert sorted(go_on(ctx, set_id).split()[3:-2]) == sorted([ids[0], *ids[2:]])
    # The rest as printed: cleared, and the set goes on.
    last = go_on(ctx, set_id).split()[3:-2]
    message = preflight.exclude(ctx, set_id, last, reason="left for later")
    assert f"attention cleared, run `hwf advance {set_id}` again" in message
    assert attention_of(ctx, set_id) == (None, None)
    # After the copy job, the records it left with xsi:type stop the migration: the command is the fix.
    with pytest.raises(NeedsAttentionError):
        workflow.advance(ctx, set_id)
    assert go_on(ctx, set_id) == f"hwf fix {set_id} --apply"
    repair.fix(ctx, set_id, apply=True)
    assert workflow.advance(ctx, set_id).outcome is workflow.Outcome.VERIFIED


def test_needs_fix_names_fix_everywhere_and_fix_clears_it(ctx: Context, sim: Simulator) -> None:
    set_id = make_set(sim, 6, profile="demo", seed=4)
    workflow.add_set(ctx, set_id)
    with pytest.raises(NeedsAttentionError) as raised:
        workflow.advance(ctx, set_id)  # the copy job ran; it left xsi:type on dc:identifier
    assert str(raised.value).endswith(f"{GO_ON}`hwf fix {set_id} --apply`")
    item = next(a for a in overview.overview(ctx).attention if a.set == set_id)
    detail = setdetail.set_detail(ctx, set_id)
    assert item.command == detail.attention_command == f"hwf fix {set_id} --apply"
    assert item.advice.startswith(f"`hwf fix {set_id} --apply`")
    report = repair.fix(ctx, set_id, apply=True)
    assert report.changed and "attention cleared" in report.follow_up
    assert attention_of(ctx, set_id) == (None, None)
    assert workflow.advance(ctx, set_id).outcome is workflow.Outcome.VERIFIED


def test_check_rewrites_the_attention_to_what_alma_has_now(ctx: Context, sim: Simulator) -> None:
    set_id = make_set(sim, 6, profile="demo", seed=4)
    workflow.add_set(ctx, set_id)
    with pytest.raises(NeedsAttentionError):
        workflow.advance(ctx, set_id)
    # Someone removed the xsi:type in Alma by hand: the check clears the attention.
    repair.fix(ctx, set_id, apply=True)
    with ctx.ledger() as book:
        row = book.set(find_set(book.session, set_id).id)
        book.attention(row, Attention.RECORDS, "stale: written before the records were fixed")
    summary = preflight.check_set(ctx, set_id)
    assert summary.blocking() == {} and summary.attention is None
    assert attention_of(ctx, set_id) == (None, None)


@pytest.mark.parametrize(
    ("kind", "command"),
    [
        (Attention.VERIFY, "hwf verify {set}"),
        (Attention.REGRESSION, "hwf verify {set}"),
        (Attention.GUARD, "hwf retry {set} --reason TEXT"),
        (Attention.FAULT, "hwf retry {set} --reason TEXT"),
        (Attention.DRIFT, "hwf sync {set}"),
        (Attention.QUOTA, "hwf retry {set} --reason TEXT"),
    ],
)
def test_each_kind_has_one_command_to_go_on(kind: Attention, command: str) -> None:
    assert next_command(kind.value, "123", None) == command.format(set="123")
    # A reason that names its command to go on wins, and the advice says it first.
    reason = f"something. {GO_ON}`hwf verify 123` (re-checks only those)"
    assert next_command(kind.value, "123", reason) == "hwf verify 123"


def test_the_reasons_hwf_writes_name_the_command_of_their_kind() -> None:
    from orchestrator.domain.attention import ADVICE

    for kind, text in ADVICE.items():
        first = re.search(r"`(hwf [^`]+)`", text)
        assert first is not None, kind


def test_wrong_record_names_verify_everywhere_and_verify_holds(ctx: Context, sim: Simulator) -> None:
    from orchestrator.service import verification
    from orchestrator.store.models import Record

    set_id = make_set(sim, 5, profile="clean", seed=6)
    workflow.add_set(ctx, set_id)
    preflight.check_set(ctx, set_id)
    with ctx.sessions() as session:
        records = session.execute(select(Record.mms_id, Record.handle).order_by(Record.id)).all()
    sim.misregister(records[0].handle, records[1].mms_id)  # one handle lands on another record
    with pytest.raises(NeedsAttentionError) as raised:
        workflow.advance(ctx, set_id)
    assert "WRONG_RECORD" in str(raised.value)
    command = f"hwf verify {set_id}"
    assert str(raised.value).endswith(f"{GO_ON}`{command}` (re-checks only those)")
    item = next(a for a in overview.overview(ctx).attention if a.set == set_id)
    assert item.command == setdetail.set_detail(ctx, set_id).attention_command == command
    assert item.advice.startswith(f"`{command}`") and "hwf advance" not in item.advice
    sim.register_handle(records[0].handle, sim.primo_url(records[0].mms_id))  # the registration is fixed
    verification.verify_set(ctx, set_id)  # the command, as printed
    assert attention_of(ctx, set_id) == (None, None)
    with ctx.sessions() as session:
        assert find_set(session, set_id).stage.value == "verified"
