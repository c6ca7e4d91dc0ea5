"""Notifications through apprise, end to end: a local JSON webhook receiver and a local SMTP server get one
message per event (attention, quota spent, verified when asked, migration done), never one per poll; a send
that fails is logged and never stops the work, and is sent later; a send interrupted by a crash is sent by
the next hwf; a malformed URL is refused at start, exit 2."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from orchestrator.config import load_config
from orchestrator.service import notify
from orchestrator.simulator import Scenario, Simulator
from orchestrator.store.models import Notification
from orchestrator.wiring import build_context
from tests.support import API_KEY, FakeClock, sim_wiring, write_config
from tests.support.ops import Receiver, http_receiver, run, runner, smtp_server


@pytest.fixture
def wired(sim: Simulator, clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> Simulator:
    monkeypatch.setenv("HWF_ALMA_API_KEY", API_KEY)
    monkeypatch.setattr(runner, "wiring", sim_wiring(sim, clock))
    return sim


@pytest.fixture
def hook() -> Any:
    with http_receiver() as receiver:
        yield receiver


def _titles(receiver: Receiver) -> list[str]:
    return [str(m.get("title")) for m in receiver.received]


def _rows(path: Path) -> list[Notification]:
    ctx = build_context(load_config(path, environ={"HWF_ALMA_API_KEY": API_KEY}))
    try:
        with ctx.sessions() as session:
            return list(session.scalars(select(Notification).order_by(Notification.id)))
    finally:
        ctx.close()


def test_attention_is_one_email_and_one_webhook_message_not_one_per_poll(
    tmp_path: Path, wired: Simulator, hook: Receiver
) -> None:
    with smtp_server() as mailbox:
        path = write_config(tmp_path, preset="cli", notify={"urls": [hook.url, mailbox.url]})
        set_id = wired.create_set("Needs a fix", wired.generate_records(10, profile="demo", seed=3))
        added = run(path, "add", set_id)
        assert added.exit_code == 0, added.output
        assert run(path, "advance", set_id).exit_code == 3  # the demo profile's xsi:type trap needs `hwf fix`
        for _ in range(3):
            run(path, "advance", set_id)
            run(path, "resume", "--all")
        assert _titles(hook) == [f"hwf: set {set_id} (Needs a fix) needs attention"]
        assert hook.received[0]["type"] == "warning" and "hwf fix" in hook.received[0]["message"]
        assert len(mailbox.messages) == 1
        mail = mailbox.messages[0].decode()
        assert f"Subject: hwf: set {set_id} (Needs a fix) needs attention" in mail and "To: ops@example.org" in mail
    rows = _rows(path)
    assert [(r.kind, r.target, r.sent_at is not None, r.tries) for r in rows] == [
        ("attention", 0, True, 1),
        ("attention", 1, True, 1),
    ]


def test_verified_is_off_by_default_and_done_is_sent_once(tmp_path: Path, wired: Simulator, hook: Receiver) -> None:
    path = write_config(tmp_path, preset="cli", notify={"urls": [hook.url]})
    first = wired.create_set("First", wired.generate_records(4, profile="clean", seed=1))
    second = wired.create_set("Second", wired.generate_records(4, profile="clean", seed=2))
    for set_id in (first, second):
        assert run(path, "add", set_id).exit_code == 0
    assert run(path, "advance", first).exit_code == 0
    assert _titles(hook) == []  # one set left: not done, and verified is opt-in
    assert run(path, "advance", second).exit_code == 0
    assert run(path, "resume", "--all").exit_code == 0
    assert _titles(hook) == ["hwf: the migration is done: all 2 sets are verified"]
    assert hook.received[0]["type"] == "success"


def test_verified_when_asked(tmp_path: Path, wired: Simulator, hook: Receiver) -> None:
    path = write_config(tmp_path, preset="cli", notify={"urls": [hook.url], "on_verified": True, "on_done": False})
    set_id = wired.create_set("Opted in", wired.generate_records(4, profile="clean", seed=1))
    assert run(path, "add", set_id).exit_code == 0
    assert run(path, "advance", set_id).exit_code == 0
    assert _titles(hook) == [f"hwf: set {set_id} (Opted in) is verified"]


def test_a_spent_quota_is_one_message_for_every_set(
    tmp_path: Path, clock: FakeClock, hook: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    wired = Simulator(
        Scenario(job_seconds={"copy": 30, "migration": 60, "integration": 45}, daily_quota=40, per_second_limit=0),
        clock=clock,
    )
    monkeypatch.setenv("HWF_ALMA_API_KEY", API_KEY)
    monkeypatch.setattr(runner, "wiring", sim_wiring(wired, clock))
    path = write_config(tmp_path, preset="cli", notify={"urls": [hook.url]}, alma={"daily_call_floor": 0})
    ids = [wired.create_set(f"Quota {i}", wired.generate_records(4, profile="clean", seed=i)) for i in range(3)]
    for set_id in ids:
        run(path, "add", set_id)
    for _ in range(3):
        run(path, "resume", "--all")
    quota = [t for t in _titles(hook) if "quota" in t]
    assert quota == ["hwf: Alma's daily API quota is spent"], _titles(hook)


def test_a_failed_send_is_logged_never_stops_the_work_and_goes_later(
    tmp_path: Path, wired: Simulator, hook: Receiver
) -> None:
    path = write_config(tmp_path, preset="cli", notify={"urls": [hook.url]})
    set_id = wired.create_set("Receiver down", wired.generate_records(4, profile="clean", seed=1))
    assert run(path, "add", set_id).exit_code == 0
    hook.status = 500
    result = run(path, "advance", set_id)
    assert result.exit_code == 0, result.output  # verified although the "done" message failed
    assert hook.received == []
    warnings = [json.loads(x) for x in (tmp_path / "hwf.log").read_text().splitlines() if '"notify"' in x]
    assert warnings and all(not w["ok"] and w["error"] == "json:// send failed" for w in warnings)
    assert hook.url.split("//")[1] not in (tmp_path / "hwf.log").read_text()  # the URL (a secret) is not logged
    hook.status = 200
    assert run(path, "status").exit_code == 0  # any later command sends what is due
    assert _titles(hook) == ["hwf: the migration is done: all 1 sets are verified"]
    assert run(path, "status").exit_code == 0
    assert len(hook.received) == 1


def test_a_send_interrupted_by_a_crash_is_sent_by_the_next_hwf_once(
    tmp_path: Path, wired: Simulator, hook: Receiver, clock: FakeClock
) -> None:
    path = write_config(tmp_path, preset="cli", notify={"urls": [hook.url]})
    set_id = wired.create_set("Crashed", wired.generate_records(4, profile="clean", seed=1))
    assert run(path, "add", set_id).exit_code == 0
    hook.status = 500
    assert run(path, "advance", set_id).exit_code == 0
    hook.status = 200
    # As a process killed inside the send leaves it: claimed, not sent.
    ctx = build_context(load_config(path, environ={"HWF_ALMA_API_KEY": API_KEY}), wiring=sim_wiring(wired, clock))
    with ctx.sessions.begin() as session:
        session.execute(update(Notification).values(sending_at=clock(), sending_by="dead-host:1"))
    assert notify.send_pending(ctx) == 0  # claimed a moment ago: another process may be sending it
    clock.advance(notify.STALE_SECONDS + 1)
    assert notify.send_pending(ctx) == 1
    assert notify.send_pending(ctx) == 0
    ctx.close()
    assert len(hook.received) == 1 and "interrupted" in hook.received[0]["message"]


def test_a_message_is_given_up_after_max_tries(tmp_path: Path, wired: Simulator, hook: Receiver) -> None:
    path = write_config(tmp_path, preset="cli", notify={"urls": [hook.url]})
    set_id = wired.create_set("Never", wired.generate_records(4, profile="clean", seed=1))
    assert run(path, "add", set_id).exit_code == 0
    hook.status = 500
    for _ in range(notify.MAX_TRIES + 2):
        run(path, "advance", set_id)
    (row,) = _rows(path)
    assert row.sent_at is None and row.tries == notify.MAX_TRIES and row.last_error == "json:// send failed"


@pytest.mark.parametrize("url", ["nonsense://example", "json://", "not a url at all"])
def test_a_malformed_apprise_url_is_named_at_start_exit_2(tmp_path: Path, wired: Simulator, url: str) -> None:
    path = write_config(tmp_path, preset="cli", notify={"urls": ["json://127.0.0.1:9/ok", url]})
    result = run(path, "status")
    assert result.exit_code == 2, result.output
    assert result.output.startswith(f"Error: {path}: key notify.urls[1]: not a usable apprise URL")
    assert len(result.output.strip().splitlines()) == 1


def test_no_urls_no_outbox_rows(tmp_path: Path, wired: Simulator) -> None:
    path = write_config(tmp_path, preset="cli")
    set_id = wired.create_set("Quiet", wired.generate_records(6, profile="demo", seed=3))
    run(path, "add", set_id)
    run(path, "advance", set_id)
    assert _rows(path) == []


def test_messages_link_the_set_page_when_public_url_is_set(tmp_path: Path, wired: Simulator, hook: Receiver) -> None:
    path = write_config(
        tmp_path, preset="cli", notify={"urls": [hook.url]}, serve={"public_url": "https://hwf.example.edu/dash/"}
    )
    set_id = wired.create_set("Needs a fix", wired.generate_records(10, profile="demo", seed=3))
    assert run(path, "add", set_id).exit_code == 0
    assert run(path, "advance", set_id).exit_code == 3
    [message] = hook.received
    assert f"Dashboard: https://hwf.example.edu/dash/sets/{set_id}" in str(message.get("message"))
    # Without it, no link (hwf does not guess where the dashboard is served).
    plain = write_config(tmp_path / "plain", preset="cli", notify={"urls": [hook.url]})
    assert load_config(plain, environ={"HWF_ALMA_API_KEY": API_KEY}).notify.public_url is None
    bad = write_config(tmp_path / "bad", preset="cli", serve={"public_url": "hwf.example.edu"})
    refused = run(bad, "status")
    assert refused.exit_code == 2 and "public_url" in refused.output and "http(s) URL" in refused.output


def test_hwf_verify_raising_the_same_attention_again_sends_nothing_new(
    tmp_path: Path, wired: Simulator, hook: Receiver, clock: FakeClock
) -> None:
    """`hwf verify` clears a failed verification and raises it again when the same handles still fail: the
    same attention, so no second message (one message per attention, however often it is raised)."""
    import sqlite3

    path = write_config(tmp_path, preset="cli", notify={"urls": [hook.url]}, handles={"settle_minutes": 10})
    set_id = wired.create_set("Misregistered", wired.generate_records(6, profile="clean", seed=4))
    assert run(path, "add", set_id).exit_code == 0
    with sqlite3.connect(tmp_path / "hwf.db") as db:
        for _ in range(30):  # to integrated: verification then waits for the proxy to settle
            assert run(path, "advance", set_id, "--no-wait").exit_code == 0
            if db.execute("SELECT state FROM sets").fetchone()[0] == "integrated":
                break
            clock.advance(60)
        records = db.execute("SELECT mms_id, handle FROM records ORDER BY id").fetchall()
    assert all(handle for _, handle in records), records
    wired.misregister(records[0][1], records[1][0])  # the first handle lands on the second record
    clock.advance(11 * 60)
    assert run(path, "advance", set_id).exit_code == 3
    assert len(hook.received) == 1 and "WRONG_RECORD" in hook.received[0]["message"]
    for _ in range(2):
        again = run(path, "verify", set_id)
        assert again.exit_code != 0 and "WRONG_RECORD" in again.output, again.output
    assert len(hook.received) == 1, _titles(hook)
    # A different attention is a new message.
    wired.misregister(records[2][1], records[1][0])
    run(path, "verify", set_id, "--all")
    assert len(hook.received) == 2 and "2 of 6 handles" in hook.received[1]["message"], _titles(hook)


def test_a_target_that_takes_the_message_and_never_answers_holds_no_command(
    tmp_path: Path, wired: Simulator, hook: Receiver
) -> None:
    """One call waits at most notify.SEND_SECONDS for its sends; a send still going finishes in the background
    (here, in this process, it records the message sent: nothing is sent twice)."""
    import time

    hook.hang = True  # the receiver takes the message and keeps the sender waiting (apprise waits up to 60 s)
    path = write_config(tmp_path, preset="cli", notify={"urls": [hook.url + "?rto=60"]})
    set_id = wired.create_set("Slow receiver", wired.generate_records(6, profile="demo", seed=3))
    assert run(path, "add", set_id).exit_code == 0
    started = time.monotonic()
    result = run(path, "advance", set_id)
    waited = time.monotonic() - started
    assert result.exit_code == 3, result.output  # the attention, and its message went out
    assert len(hook.received) == 1
    assert waited < 10, waited  # notify.SEND_SECONDS (5 s) and the work; without the bound: 30 s
    started = time.monotonic()
    assert run(path, "status").exit_code == 0
    assert time.monotonic() - started < 3  # the send still going holds nothing else
    hook.release.set()
    deadline = time.monotonic() + 15
    while not all(r.sent_at for r in _rows(path)):
        assert time.monotonic() < deadline, "the background send never recorded its message"
        time.sleep(0.1)
    assert run(path, "status").exit_code == 0
    assert len(hook.received) == 1
