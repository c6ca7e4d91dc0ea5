"""``resume --all``: an error on one set (a bad reply, an Alma 4xx on that set, a bug) becomes that set's
attention with a one-line reason, logged with its traceback; the other sets go on (issue 13 item 2).
Only errors that concern every set (the key refused, the database gone) stop the run."""

from __future__ import annotations

import logging
from collections.abc import Callable

import httpx
import pytest

from orchestrator.config import Config
from orchestrator.errors import AlmaError
from orchestrator.service import scheduler, views, workflow
from orchestrator.service.reporting import CollectingReporter
from orchestrator.simulator import Simulator
from orchestrator.wiring import build_context
from tests.support import FakeClock, make_set, sim_wiring

Fault = Callable[[httpx.Request], httpx.Response | None]


def broken_for(sim: Simulator, alma_set_id: str, answer: Fault) -> httpx.MockTransport:
    """The simulator, except that polls of one set's job instances are answered by ``answer``."""

    def handle(request: httpx.Request) -> httpx.Response:
        runs = {r.instance_id for r in sim.runs_for(alma_set_id)}
        if request.url.path.rsplit("/", 1)[-1] in runs:
            reply = answer(request)
            if reply is not None:
                return reply
        return sim.handle(request)

    return httpx.MockTransport(handle)


def bad_reply(request: httpx.Request) -> httpx.Response:
    return httpx.Response(
        200, content=b"<members total_record_count='3'><member><id>", headers={"content-type": "application/xml"}
    )


def not_found(request: httpx.Request) -> httpx.Response:
    body = (
        b'<web_service_result xmlns="http://com/exlibris/urm/general/xmlbeans"><errorsExist>true</errorsExist>'
        b"<errorList><error><errorCode>402119</errorCode><errorMessage>General Error</errorMessage>"
        b"</error></errorList></web_service_result>"
    )
    return httpx.Response(400, content=body, headers={"content-type": "application/xml"})


def bug(request: httpx.Request) -> httpx.Response:
    raise ZeroDivisionError("a bug somewhere below hwf")


def unauthorized(request: httpx.Request) -> httpx.Response:
    return httpx.Response(401, content=b"Unauthorized")


def sets_of(sim: Simulator, n: int) -> list[str]:
    return [make_set(sim, 5, name=f"Set {i}", seed=i) for i in range(n)]


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (bad_reply, "Alma's reply stopped this set"),
        (not_found, "402119"),
        (bug, "unexpected error in hwf stopped this set (ZeroDivisionError: a bug somewhere below hwf)"),
    ],
)
def test_one_sets_fault_stops_that_set_alone(
    config: Config, sim: Simulator, clock: FakeClock, caplog: pytest.LogCaptureFixture, answer: Fault, expected: str
) -> None:
    ids = sets_of(sim, 3)
    plain = build_context(config, reporter=CollectingReporter(), wiring=sim_wiring(sim, clock))
    for set_id in ids:
        workflow.add_set(plain, set_id)
    plain.close()
    wiring = sim_wiring(sim, clock, alma_transport=broken_for(sim, ids[1], answer))
    ctx = build_context(config, reporter=CollectingReporter(), wiring=wiring)
    try:
        with caplog.at_level(logging.ERROR, logger="orchestrator.service.scheduler"):
            summary = scheduler.resume_all(ctx)
        assert [r.set for r in summary.results if r.outcome is workflow.Outcome.VERIFIED] == [ids[0], ids[2]]
        assert [a[0] for a in summary.attention] == [ids[1]]
        reason = summary.attention[0][1]
        assert expected in reason and "\n" not in reason and f"hwf retry {ids[1]}" in reason
        row = views.status(ctx, ids[1])[0]
        assert row.state == "identifiers_copied" and row.attention is not None and expected in row.attention
        assert any(r.exc_info for r in caplog.records)  # the traceback is logged
    finally:
        ctx.close()


def test_a_refused_key_stops_the_run(config: Config, sim: Simulator, clock: FakeClock) -> None:
    ids = sets_of(sim, 2)
    plain = build_context(config, reporter=CollectingReporter(), wiring=sim_wiring(sim, clock))
    for set_id in ids:
        workflow.add_set(plain, set_id)
    plain.close()
    wiring = sim_wiring(sim, clock, alma_transport=broken_for(sim, ids[0], unauthorized))
    ctx = build_context(config, reporter=CollectingReporter(), wiring=wiring)
    try:
        with pytest.raises(AlmaError) as raised:
            scheduler.resume_all(ctx)
        assert raised.value.status == 401
        assert views.status(ctx, ids[0])[0].attention is None
    finally:
        ctx.close()


class _Crossed(Exception):
    """What psycopg raises when PostgreSQL undoes a transaction for another's sake."""

    def __init__(self, sqlstate: str) -> None:
        super().__init__("deadlock detected")
        self.sqlstate = sqlstate


@pytest.mark.parametrize(("sqlstate", "expected"), [("40P01", True), ("40001", True), ("23505", False)])
def test_a_deadlock_or_serialization_failure_is_contention(sqlstate: str, expected: bool) -> None:
    from sqlalchemy.exc import OperationalError

    assert scheduler.contention(OperationalError("UPDATE sets", {}, _Crossed(sqlstate))) is expected
    assert not scheduler.contention(_Crossed(sqlstate))  # only the database layer's errors


def _crossed(
    config: Config,
    sim: Simulator,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
    where: str,
    times: int,
    state: str,
) -> None:
    """``scheduler.<where>`` meets another process's transaction ``times`` times (PostgreSQL's ``state``, raised
    inside a session's block as the database would), then runs as it does; every set still ends verified."""
    from sqlalchemy.exc import OperationalError

    ids = sets_of(sim, 3)
    ctx = build_context(config, reporter=CollectingReporter(), wiring=sim_wiring(sim, clock))
    try:
        for set_id in ids:
            workflow.add_set(ctx, set_id)
        real, crossed = getattr(scheduler, where), []

        def once_crossed(c, *args, **kw):  # type: ignore[no-untyped-def]
            if len(crossed) < times:
                crossed.append(1)
                with c.sessions():
                    raise OperationalError("UPDATE sets", {}, _Crossed(state))
            return real(c, *args, **kw)

        monkeypatch.setattr(scheduler, where, once_crossed)
        summary = scheduler.resume_all(ctx)
        assert len(crossed) == times and not summary.attention
        assert {r.set for r in summary.results if r.outcome is workflow.Outcome.VERIFIED} == set(ids)
    finally:
        ctx.close()


def test_a_deadlock_on_one_set_is_tried_again_not_the_end_of_the_run(
    config: Config, sim: Simulator, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    _crossed(config, sim, clock, monkeypatch, "drive_leased", 1, "40P01")


def test_a_deadlock_in_a_pass_s_own_bookkeeping_runs_the_pass_again(
    config: Config, sim: Simulator, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    _crossed(config, sim, clock, monkeypatch, "_scan", 2, "40001")


def test_a_deadlock_is_one_line_that_says_nothing_was_written() -> None:
    from sqlalchemy.exc import OperationalError

    from orchestrator.errors import DatabaseContentionError
    from orchestrator.store.db import database_failure

    failure = database_failure(OperationalError("UPDATE sets", {}, _Crossed("40P01")), "postgresql://u:secret@h/db")
    assert isinstance(failure, DatabaseContentionError) and scheduler.contention(failure)
    assert "nothing of it was written" in str(failure) and "secret" not in str(failure)
    assert "\n" not in str(failure)
