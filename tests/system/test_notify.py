"""Notifications when hwf is killed: the real ``hwf`` against ``hwf sim serve``, SIGKILLed while apprise waits for
the receiver's answer; the next hwf sends the message once more (the in-process tests: tests/service/test_notify.py)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from tests.support import write_config
from tests.support.crash import database_url, kill, query, serve
from tests.support.e2e import hwf, start, wait_for
from tests.support.ops import Receiver, http_receiver


@pytest.fixture
def hook() -> Any:
    with http_receiver() as receiver:
        yield receiver


def test_e2e_hwf_killed_inside_a_send_the_next_hwf_sends_it_again_once(tmp_path: Path, hook: Receiver) -> None:
    """The real ``hwf`` against ``hwf sim serve``: SIGKILLed while apprise waits for the receiver's answer (the
    message arrived, hwf never recorded it sent). The claim ages; the next hwf sends it once more, saying so."""
    served = serve(tmp_path)
    try:
        path = write_config(tmp_path, served.url, preset="crash", notify={"urls": [hook.url]})
        set_id = served.make_set("Killed while sending", 6, profile="demo", seed=3)
        assert hwf(path, "add", set_id).returncode == 0
        hook.hang = True
        proc = start(path, "advance", set_id)
        try:
            wait_for(lambda: len(hook.received) == 1, timeout=60, interval=0.05, what="the attention message")
            time.sleep(0.2)
        finally:
            kill(proc)
        hook.hang = False
        hook.release.set()
        url = database_url(path)
        assert query(url, "SELECT count(*) FROM notifications WHERE sending_at IS NOT NULL AND sent_at IS NULL") == [
            (1,)
        ]
        assert hwf(path, "status").returncode == 0  # claimed a moment ago: not sent again yet
        assert len(hook.received) == 1
        engine = create_engine(url)
        with engine.begin() as conn:  # as if the claim were older than notify.STALE_SECONDS
            conn.execute(text("UPDATE notifications SET sending_at = '2000-01-01 00:00:00'"))
        engine.dispose()
        assert hwf(path, "status").returncode == 0
        assert hwf(path, "status").returncode == 0
        assert len(hook.received) == 2
        assert hook.received[0]["title"] == hook.received[1]["title"]
        assert "interrupted" in hook.received[1]["message"] and "interrupted" not in hook.received[0]["message"]
        assert query(url, "SELECT count(*) FROM notifications WHERE sent_at IS NULL") == [(0,)]
    finally:
        served.stop()
