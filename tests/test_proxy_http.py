"""proxy_http.DirectClient: the verifier's keep-alive http.client path, against a real local server."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from orchestrator.proxy_http import DirectClient, ProxyRequestError, usable_for


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        return

    def setup(self) -> None:
        super().setup()
        with self.server.lock:
            self.server.connections += 1

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        body = b'{"responseCode":1,"path":"%s"}' % self.path.encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        if "hang-up" in self.path:
            self.close_connection = True  # without saying so: the client's kept-alive connection is dead


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.connections = 0


@pytest.fixture
def server() -> Iterator[_Server]:
    srv = _Server()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def test_one_kept_alive_connection_and_a_new_one_when_the_server_hung_up(server: _Server) -> None:
    host, port = server.server_address[:2]
    client = DirectClient(f"http://{host!s}:{port}/base/", timeout=5, user_agent="test")
    try:
        for n in range(3):
            reply = client.get(f"/api/handles/11084/{n}?type=URL")
            assert reply.status_code == 200 and reply.json()["path"] == f"/base/api/handles/11084/{n}?type=URL"
        assert server.connections == 1
        assert client.get("/hang-up").status_code == 200
        assert client.get("/after").json()["path"] == "/base/after"  # the dead connection was replaced
        assert server.connections == 2
    finally:
        client.close()


def test_an_unreachable_proxy_is_a_request_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = DirectClient(f"http://127.0.0.1:{port}", timeout=2, user_agent="test")
    with pytest.raises(ProxyRequestError, match="connection error"):
        client.get("/api/handles/11084/1?type=URL")


def test_a_proxy_from_the_environment_leaves_requests_to_httpx(monkeypatch: pytest.MonkeyPatch) -> None:
    assert usable_for("https://hdl.handle.net")
    monkeypatch.setenv("https_proxy", "http://proxy.example:3128")
    assert not usable_for("https://hdl.handle.net")
    monkeypatch.setenv("no_proxy", "hdl.handle.net")
    assert usable_for("https://hdl.handle.net")
    assert not usable_for("ftp://hdl.handle.net")
