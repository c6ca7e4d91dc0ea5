"""Helpers for the long-haul operations tests (logs, notifications, operators, evidence): the real CLI on the
in-process simulator (its configuration: ``write_config(tmp_path, preset="cli", log={...})``), a local HTTP
receiver and a local SMTP server."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from orchestrator.cli import base as cli
from tests.support.sim import WiredRunner

runner = WiredRunner()


def run(path: Path, *args: str) -> Any:
    return runner.invoke(cli.app, ["--config", str(path), *args])


@dataclass
class Receiver:
    """A JSON webhook receiver on 127.0.0.1 (apprise's ``json://``): every POST body, decoded."""

    port: int
    received: list[dict[str, Any]] = field(default_factory=list)
    status: int = 200
    hang: bool = False  # take the message, then keep the sender waiting until ``release`` is set
    release: threading.Event = field(default_factory=threading.Event)

    @property
    def url(self) -> str:
        return f"json://127.0.0.1:{self.port}/hook"


@contextmanager
def http_receiver() -> Iterator[Receiver]:
    box = Receiver(port=0)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if box.status == 200:
                box.received.append(json.loads(body))
            if box.hang:
                box.release.wait(30)
            self.send_response(box.status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    box.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield box
    finally:
        box.release.set()
        server.shutdown()
        server.server_close()


@dataclass
class Mailbox:
    port: int
    messages: list[bytes] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"mailto://127.0.0.1:{self.port}?from=hwf@example.org&to=ops@example.org&mode=insecure"


@contextmanager
def smtp_server() -> Iterator[Mailbox]:
    from aiosmtpd.controller import Controller

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    box = Mailbox(port=port)

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
            box.messages.append(envelope.content)
            return "250 OK"

    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield box
    finally:
        controller.stop()
