"""``hwf fix --apply`` / ``--undo`` (orchestrator/repair.py): bulk reads, batched backups, concurrent PUTs
through the client's one pacing, and every promise of the repair, on the in-process simulator."""

from __future__ import annotations

import json
import math
import random
import threading
from collections.abc import Callable, Iterator

import httpx
import pytest
from sqlalchemy import select

from orchestrator.config import Config
from orchestrator.domain import dc
from orchestrator.errors import AlmaUnreachableError, LeaseHeldError
from orchestrator.service import preflight, repair, views, workflow
from orchestrator.service.context import Context
from orchestrator.simulator import Simulator
from orchestrator.simulator.records import NEEDS_FIX, RecordFactory
from orchestrator.store import leases
from orchestrator.store.models import AlmaSet, Backup, Event, Record
from tests.support import FakeClock, make_context

TYPED = b'<dc:identifier xsi:type="dcterms:URI">'
PLAIN = b"<dc:identifier>"


def needs_fix_set(sim: Simulator, n: int, name: str = "Fix titles") -> str:
    scenario = sim.scenario
    factory = RecordFactory(scenario.institution_code, scenario.id_suffix, scenario.handle_prefix)
    rng = random.Random(5)
    start = len(sim.records)
    ids = sim.add_records(factory.make(start + i, NEEDS_FIX, rng)[0] for i in range(n))
    return sim.create_set(name, ids)


def registered(ctx: Context, sim: Simulator, n: int) -> str:
    set_id = needs_fix_set(sim, n)
    workflow.add_set(ctx, set_id)
    summary = preflight.check_set(ctx, set_id)
    assert summary.counts == {"NEEDS_FIX": n}
    return set_id


Handler = Callable[[httpx.Request], httpx.Response]


class _Hookable:
    """Stands in for the simulator's transport handler; a test may put its own handler in front."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.hook: Handler | None = None

    def handle(self, request: httpx.Request) -> httpx.Response:
        return self.hook(request) if self.hook is not None else self.sim.handle(request)


@pytest.fixture
def hooked(config: Config, sim: Simulator, clock: FakeClock) -> Iterator[tuple[Context, _Hookable]]:
    """A context whose Alma transport a test can wrap (``hook.hook = handler``)."""
    hook = _Hookable(sim)
    context = make_context(config, hook, clock)  # type: ignore[arg-type]
    yield context, hook
    context.close()


def backups(ctx: Context) -> list[Backup]:
    with ctx.sessions() as session:
        return list(session.scalars(select(Backup).order_by(Backup.id)))


def classes(ctx: Context) -> dict[str, str | None]:
    with ctx.sessions() as session:
        return {r.mms_id: r.preflight for r in session.scalars(select(Record))}


def requests(sim: Simulator) -> dict[str, int]:
    return dict(sim.stats["requests"])


def delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}


def test_apply_reads_in_bulk_and_puts_each_record_once(ctx: Context, sim: Simulator) -> None:
    n = 250
    set_id = registered(ctx, sim, n)
    before = requests(sim)
    seen: list[tuple[int, int]] = []
    report = repair.fix(ctx, set_id, apply=True, progress=lambda done, total: seen.append((done, total)))
    calls = delta(requests(sim), before)
    # N PUTs; per batch of 100: the read for the diff, the re-read before the writes, the confirmation.
    assert calls == {"bib_put": n, "bibs": 3 * math.ceil(n / 100)}
    assert len(report.changed) == n and not report.failed and not report.refused
    assert set(classes(ctx).values()) == {"READY"}
    stored = backups(ctx)
    assert [b.state for b in stored] == ["applied"] * n
    for b in stored:
        # What was written differs from the backup in the attribute alone, byte for byte.
        assert b.original_xml.count(TYPED) == 1 and b.new_xml == b.original_xml.replace(TYPED, PLAIN, 1)
    assert all(TYPED not in r.xml for r in sim.records.values())
    assert seen[-1] == (n, n) and [d for d, _ in seen] == sorted(d for d, _ in seen)
    again = repair.fix(ctx, set_id, apply=True)
    assert not again.changed and delta(requests(sim), before)["bib_put"] == n  # nothing left to write


def test_apply_and_undo_take_the_sets_lease(ctx: Context, sim: Simulator) -> None:
    """Another live hwf process works on the set (its lease): --apply and --undo are refused before any backup
    or write, the dry run still reads; once the lease is free the repair runs and gives it back."""
    set_id = registered(ctx, sim, 5)
    with ctx.sessions.begin() as session:
        row = session.scalars(select(AlmaSet).where(AlmaSet.alma_set_id == set_id)).one()
        assert leases.try_claim(session, row.id, "other-host:4242", ctx.clock(), 600)
    before = requests(sim)
    with pytest.raises(LeaseHeldError, match="other-host:4242"):
        repair.fix(ctx, set_id, apply=True)
    assert backups(ctx) == [] and "bib_put" not in delta(requests(sim), before)
    assert len(repair.fix(ctx, set_id).summaries) == 5  # the dry run: GETs only, no lease needed
    with ctx.sessions.begin() as session:
        leases.release(session, row.id, "other-host:4242")
    assert len(repair.fix(ctx, set_id, apply=True).changed) == 5
    with ctx.sessions.begin() as session:
        assert leases.try_claim(session, row.id, "other-host:4242", ctx.clock(), 600)
    with pytest.raises(LeaseHeldError):
        repair.undo(ctx, set_id)
    assert [b.state for b in backups(ctx)] == ["applied"] * 5  # nothing restored
    with ctx.sessions.begin() as session:
        leases.release(session, row.id, "other-host:4242")
    assert len(repair.undo(ctx, set_id).changed) == 5
    assert views.status(ctx, set_id)[0].lease_owner is None  # given back


def test_dry_run_prints_a_line_per_record_and_the_diff_on_request(ctx: Context, sim: Simulator) -> None:
    set_id = registered(ctx, sim, 3)
    before = requests(sim)
    report = repair.fix(ctx, set_id)
    assert delta(requests(sim), before) == {"bibs": 1}
    assert not backups(ctx) and not report.diffs
    for mms, line in report.summaries.items():
        assert line.startswith(f"{mms}: dc:identifier http://hdl.handle.net/11084/")
        assert line.endswith(': remove xsi:type="dcterms:URI"')
    diffs = repair.fix(ctx, set_id, diff=True).diffs
    assert set(diffs) == set(report.summaries)
    assert all("-" in d and 'xsi:type="dcterms:URI"' in d for d in diffs.values())


def test_a_record_changed_between_read_and_write_is_refused(hooked: tuple[Context, _Hookable], sim: Simulator) -> None:
    ctx, hook = hooked
    set_id = registered(ctx, sim, 120)
    victim = sorted(sim.set_members(set_id))[7]
    reads = [0]

    def someone_edits_after_the_first_read(request: httpx.Request) -> httpx.Response:
        reply = sim.handle(request)
        if request.method == "GET" and request.url.path.endswith("/bibs"):
            reads[0] += 1
            if reads[0] == 1:
                record = sim.records[victim]
                record.xml = record.xml.replace(b"<dc:title>", b"<dc:title>Edited: ", 1)
        return reply

    hook.hook = someone_edits_after_the_first_read
    before = requests(sim)
    report = repair.fix(ctx, set_id, apply=True)
    assert "between hwf's read and write" in report.refused[victim]
    assert len(report.changed) == 119 and victim not in report.changed
    assert delta(requests(sim), before)["bib_put"] == 119
    assert TYPED in sim.records[victim].xml  # not overwritten
    assert {b.mms_id: b.state for b in backups(ctx)}[victim] == "conflict"
    assert classes(ctx)[victim] == "NEEDS_FIX"


def test_a_refused_put_is_reported_with_its_code_and_the_rest_go_on(
    hooked: tuple[Context, _Hookable], sim: Simulator
) -> None:
    ctx, hook = hooked
    set_id = registered(ctx, sim, 30)
    victim = sorted(sim.set_members(set_id))[3]
    body = {
        "errorsExist": True,
        "errorList": {
            "error": [{"errorCode": "4022032", "errorMessage": "The record failed validation", "trackingId": "E01-1"}]
        },
        "result": None,
    }

    def refuse_one(request: httpx.Request) -> httpx.Response:
        if request.method == "PUT" and request.url.path.endswith(victim):
            return httpx.Response(400, content=json.dumps(body), headers={"Content-Type": "application/json"})
        return sim.handle(request)

    hook.hook = refuse_one
    report = repair.fix(ctx, set_id, apply=True)
    assert "4022032" in report.failed[victim] and "The record failed validation" in report.failed[victim]
    assert len(report.changed) == 29 and not report.refused
    assert {b.mms_id: b.state for b in backups(ctx)}[victim] == "failed"
    assert classes(ctx)[victim] == "NEEDS_FIX"
    with ctx.sessions() as session:
        event = session.scalars(select(Event).where(Event.kind == "fix")).one()
    assert "29 records repaired" in event.detail and "1 failed" in event.detail
    hook.hook = None
    retried = repair.fix(ctx, set_id, apply=True)  # the operator fixed the cause: it goes through now
    assert retried.changed == [victim]


def test_a_429_slows_the_one_shared_pacing_and_every_record_gets_through(ctx: Context, sim: Simulator) -> None:
    set_id = registered(ctx, sim, 150)
    full = ctx.alma.pacing_rate
    sim.faults.burst_429 = 4
    report = repair.fix(ctx, set_id, apply=True)
    assert sim.stats["sent_429"]["burst"] == 4
    assert len(report.changed) == 150 and not report.failed
    assert ctx.alma.pacing_rate < full * 0.75  # cut for every worker, not one


def test_a_run_stopped_by_an_unreachable_alma_is_finished_by_the_next_apply(
    hooked: tuple[Context, _Hookable], sim: Simulator
) -> None:
    ctx, hook = hooked
    set_id = registered(ctx, sim, 200)
    puts = [0]
    lock = threading.Lock()

    def alma_goes_away(request: httpx.Request) -> httpx.Response:
        if request.method == "PUT":
            with lock:
                puts[0] += 1
                if puts[0] > 60:
                    raise httpx.ConnectError("connection refused", request=request)
        return sim.handle(request)

    hook.hook = alma_goes_away
    with pytest.raises(AlmaUnreachableError):
        repair.fix(ctx, set_id, apply=True)
    states = [b.state for b in backups(ctx)]
    assert states.count("applied") >= 1 and "pending" in states and "failed" not in states
    hook.hook = None
    before = requests(sim)
    report = repair.fix(ctx, set_id, apply=True)
    assert not report.failed and not report.refused
    assert set(classes(ctx).values()) == {"READY"}
    assert all(TYPED not in sim.records[m].xml for m in sim.set_members(set_id))
    assert {b.state for b in backups(ctx)} == {"applied"} and len(backups(ctx)) == 200  # no second backup
    # Only the records whose PUT never reached Alma were written now.
    assert delta(requests(sim), before)["bib_put"] == 200 - min(puts[0], 60)


def test_pending_backups_are_finished_or_settled_without_a_second_write(ctx: Context, sim: Simulator) -> None:
    set_id = registered(ctx, sim, 3)
    first, second, third = sorted(sim.set_members(set_id))
    with ctx.sessions.begin() as session:
        db_set = session.scalars(select(Record.set_id)).first()
        for bib in ctx.alma.get_bibs_xml([first, second, third]).bibs:
            fixed = dc.remove_handle_xsi_type(bib.xml, "11084", bib.mms_id)
            assert fixed is not None
            session.add(
                Backup(
                    set_id=db_set,
                    mms_id=bib.mms_id,
                    original_xml=fixed.original,
                    new_xml=fixed.repaired,
                    state="pending",
                )
            )
    # As a crash leaves it: the first PUT reached Alma, the second never left, the third was edited since.
    sim.records[first].xml = sim.records[first].xml.replace(TYPED, PLAIN, 1)
    sim.records[third].xml = sim.records[third].xml.replace(b"<dc:title>", b"<dc:title>Edited: ", 1)
    before = requests(sim)
    report = repair.fix(ctx, set_id, apply=True)
    assert delta(requests(sim), before) == {"bibs": 3, "bib_put": 1}
    assert sorted(report.changed) == [first, second] and list(report.refused) == [third]
    assert [b.state for b in backups(ctx)] == ["applied", "applied", "conflict"]
    assert classes(ctx) == {first: "READY", second: "READY", third: "NEEDS_FIX"}


def test_undo_restores_each_record_byte_for_byte_and_refuses_one_changed_since(ctx: Context, sim: Simulator) -> None:
    set_id = registered(ctx, sim, 130)
    originals = {m: sim.records[m].xml for m in sim.set_members(set_id)}
    repair.fix(ctx, set_id, apply=True)
    edited = sorted(originals)[11]
    sim.records[edited].xml = sim.records[edited].xml.replace(b"<dc:title>", b"<dc:title>Edited: ", 1)
    before = requests(sim)
    report = repair.undo(ctx, set_id)
    assert delta(requests(sim), before) == {"bib_put": 129, "bibs": 2 * math.ceil(130 / 100)}
    assert list(report.refused) == [edited] and len(report.changed) == 129
    for mms, xml in originals.items():
        if mms != edited:
            assert repair_same(sim.records[mms].xml, xml), mms
    states = {b.mms_id: b.state for b in backups(ctx)}
    assert states[edited] == "applied" and {s for m, s in states.items() if m != edited} == {"restored"}
    assert classes(ctx)[sorted(originals)[0]] == "NEEDS_FIX"


def test_an_undo_stopped_after_its_put_is_settled_without_writing_again(ctx: Context, sim: Simulator) -> None:
    set_id = registered(ctx, sim, 5)
    repair.fix(ctx, set_id, apply=True)
    done_already = backups(ctx)[0]
    ctx.alma.put_bib_xml(done_already.mms_id, done_already.original_xml)  # the PUT of an undo that was killed
    before = requests(sim)
    report = repair.undo(ctx, set_id)
    assert delta(requests(sim), before)["bib_put"] == 4
    assert len(report.changed) == 5 and {b.state for b in backups(ctx)} == {"restored"}


def test_in_flight_follows_the_rate_cap() -> None:
    assert repair.in_flight_for(10) == 10
    assert repair.in_flight_for(0.5) == 2
    assert repair.in_flight_for(1000) == repair.MAX_IN_FLIGHT
    assert repair.in_flight_for(float("inf")) == repair.MAX_IN_FLIGHT


def repair_same(a: bytes, b: bytes) -> bool:
    from orchestrator.domain.dc import same_record

    wrap = b"<bib>%s</bib>"
    return same_record(wrap % a, wrap % b)


def test_cli_fix_dry_run_diff_and_progress(
    tmp_path: object, sim: Simulator, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    from orchestrator.cli import base as cli
    from tests.support import API_KEY, WiredRunner, sim_wiring, write_config

    path = write_config(tmp_path, preset="cli")  # type: ignore[arg-type]
    monkeypatch.setenv("HWF_ALMA_API_KEY", API_KEY)
    runner = WiredRunner()
    runner.wiring = sim_wiring(sim, clock)
    set_id = needs_fix_set(sim, 4)
    assert runner.invoke(cli.app, ["--config", str(path), "add", set_id]).exit_code == 0
    # NEEDS_FIX stops the migration job, not the copy job the set goes to first: it can go on, and hears of it.
    checked = runner.invoke(cli.app, ["--config", str(path), "check", set_id])
    assert checked.exit_code == 0 and "Before the migration job: 4 NEEDS_FIX" in checked.stdout
    dry = runner.invoke(cli.app, ["--config", str(path), "fix", set_id])
    assert dry.exit_code == 0, dry.output
    lines = dry.stdout.splitlines()
    assert len([x for x in lines if ": dc:identifier http://hdl.handle.net/11084/" in x]) == 4
    assert "would change 4 records" in dry.stdout and "@@" not in dry.stdout
    assert "fix: 4/4 records" in dry.stderr  # not a terminal: plain progress lines
    full = runner.invoke(cli.app, ["--config", str(path), "fix", set_id, "--diff"])
    assert full.stdout.count("\n@@ -1 +1 @@") == 4
    bad = runner.invoke(cli.app, ["--config", str(path), "fix", set_id, "--undo", "--diff"])
    assert bad.exit_code == 2 and "--diff" in bad.stderr
    applied = runner.invoke(cli.app, ["--config", str(path), "fix", set_id, "--apply"])
    assert applied.exit_code == 0 and "changed 4 records" in applied.stdout
    assert "fix: 4/4 records" in applied.stderr
