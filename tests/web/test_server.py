"""``hwf serve`` under a crowd of half-sent requests: each request has a deadline, an idle kept-alive
connection is closed, and the number of open connections is capped without locking a reader out."""

from __future__ import annotations

import http.client
import os
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from orchestrator.web import create_app
from tests.support import write_config
from tests.support.browser import LiveServer
from tests.support.web import World

HALF_SENT = b"GET /api/overview HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "


def _half_sent(port: int, count: int) -> list[socket.socket]:
    """``count`` connections that each send the start of a request head and then nothing (a slowloris)."""
    held: list[socket.socket] = []
    for _ in range(count):
        sock = socket.socket()
        sock.settimeout(0.5)
        try:
            sock.connect(("127.0.0.1", port))
            sock.sendall(HALF_SENT)
        except OSError:
            sock.close()  # the server's queue is full: that connection never got in
            continue
        held.append(sock)
    return held


def _closed_within(sock: socket.socket, seconds: float) -> bool:
    sock.settimeout(seconds)
    try:
        return sock.recv(1024) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def test_a_half_sent_request_is_closed_at_its_deadline(world: World) -> None:
    with LiveServer(create_app(world.reader), header_seconds=1.0) as live:
        port = int(live.url.rsplit(":", 1)[1])
        [slow] = _half_sent(port, 1)
        started = time.monotonic()
        assert _closed_within(slow, 5), "a half-sent request was held past its deadline"
        assert time.monotonic() - started < 4
        slow.close()
        # A kept-alive connection that starts its next request and stops is closed too.
        kept = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            kept.request("GET", "/static/hwf.css")
            first = kept.getresponse()
            assert first.status == 200 and first.read()
            assert kept.sock is not None
            kept.sock.sendall(HALF_SENT)
            assert _closed_within(kept.sock, 5)
        finally:
            kept.close()


def test_more_connections_than_the_cap_never_lock_a_reader_out(world: World) -> None:
    """A full house of half-sent requests: one more arriving closes the oldest that waits for its client."""
    with LiveServer(create_app(world.reader), header_seconds=60.0, max_connections=20) as live:
        port = int(live.url.rsplit(":", 1)[1])
        held = _half_sent(port, 50)
        try:
            started = time.monotonic()
            answer = httpx.get(live.url + "/api/overview", timeout=5)
            assert answer.status_code == 200 and time.monotonic() - started < 3
            closed = sum(_closed_within(sock, 0.05) for sock in held)
            assert closed >= 50 - 20, closed  # the oldest were let go; never more open than the cap
        finally:
            for sock in held:
                sock.close()


def _limit_files(count: int) -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (count, count))


def test_hwf_serve_answers_while_a_crowd_holds_half_sent_requests(world: World, tmp_path: Path) -> None:
    """The real command, with 1024 file descriptors (a common limit): 600 half-sent requests (more than its cap of
    open connections), a reader still gets the overview within a few seconds, and none is held for ever."""
    config = write_config(tmp_path / "serve.toml", db=f"sqlite:///{world.db}", preset="minimal")
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "--config", str(config), "serve", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        preexec_fn=lambda: _limit_files(1024),  # noqa: PLW1509 (a child of a test, no threads to fear)
    )
    held: list[socket.socket] = []
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip().rstrip("/")
        port = int(url.rsplit(":", 1)[1])
        deadline = time.monotonic() + 15
        while True:
            try:
                httpx.get(url + "/static/hwf.css", timeout=2)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "hwf serve did not answer"
                time.sleep(0.1)
        held = _half_sent(port, 600)
        started = time.monotonic()
        answer = httpx.get(url + "/api/overview", timeout=8)
        assert answer.status_code == 200 and answer.json()["records_verified"] == 39
        assert time.monotonic() - started < 5
        # And every half-sent request is let go (the oldest at once, the others at their 10 s deadline).
        end = time.monotonic() + 20
        for sock in held:
            assert _closed_within(sock, max(end - time.monotonic(), 0.01)), "a half-sent request was held"
    finally:
        for sock in held:
            sock.close()
        proc.terminate()
        _, log = proc.communicate(timeout=15)
    assert proc.returncode == 0, log
    assert "Traceback" not in log
