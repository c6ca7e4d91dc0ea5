"""A minimal, independent handle proxy for benchmarks: stdlib only, nothing from hwf or its simulator.

``python -m bench.handle_server HANDLES.json [--stale STALE.json] [--latency-ms 50] [--port 0]`` serves
``GET /api/handles/{prefix}/{suffix}?type=URL`` with the handle proxy's JSON: for a handle in the file
(a JSON object handle -> URL) ``{"responseCode":1,"handle":…,"values":[{"index":1,"type":"URL",
"data":{"format":"string","value":URL},"ttl":86400,"timestamp":…}]}``; for any other
``404 {"responseCode":100,"handle":…}``. ``--stale``: a JSON object handle -> URL (or null) that a request
without ``auth=true`` gets instead, as a public proxy's cache still serving an older value (null: "not
registered"); ``auth=true`` (the primary server) always answers from HANDLES. Every reply waits ``--latency-ms``
first. ``GET /_stats`` (not counted, no latency) answers ``{"requests": N, "auth": M}``. HTTP/1.1 keep-alive,
a thread per connection, ``TCP_NODELAY`` on every connection (without it Nagle's algorithm and the
client's delayed ACK add about 40 ms to each keep-alive reply, and the benchmark would measure that).
It prints ``http://127.0.0.1:PORT`` on stdout once it listens, and ``requests N`` on stderr at exit.
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from urllib.parse import parse_qs, unquote, urlsplit

TIMESTAMP = "2025-05-08T18:21:24Z"


class HandleServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(
        self, address: tuple[str, int], urls: dict[str, str], latency: float, stale: dict[str, str | None]
    ) -> None:
        super().__init__(address, Handler)
        self.urls = urls
        self.stale = stale
        self.latency = latency
        self.count = 0
        self.auth_count = 0
        self.count_lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: HandleServer

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        return

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        parts = urlsplit(self.path)
        if parts.path == "/_stats":
            with self.server.count_lock:
                self._send(200, {"requests": self.server.count, "auth": self.server.auth_count})
            return
        query = parse_qs(parts.query)
        authoritative = query.get("auth", [""])[0].lower() == "true"
        with self.server.count_lock:
            self.server.count += 1
            self.server.auth_count += authoritative
        time.sleep(self.server.latency)
        prefix = "/api/handles/"
        if not parts.path.startswith(prefix) or len(parts.path) == len(prefix):
            self._send(400, {"responseCode": 102, "message": "Empty handle invalid"})
            return
        handle = unquote(parts.path[len(prefix) :])
        types = [t.upper() for t in query.get("type", [])]
        url = self.server.urls.get(handle)
        if not authoritative and handle in self.server.stale:
            url = self.server.stale[handle]
        if url is None:
            self._send(404, {"responseCode": 100, "handle": handle})
            return
        values = [
            {
                "index": 1,
                "type": "URL",
                "data": {"format": "string", "value": url},
                "ttl": 86400,
                "timestamp": TIMESTAMP,
            }
        ]
        if types and "URL" not in types:
            self._send(200, {"responseCode": 200, "handle": handle, "values": []})
            return
        self._send(200, {"responseCode": 1, "handle": handle, "values": values})

    def _send(self, status: int, body: dict[str, object]) -> None:
        data = json.dumps(body, separators=(",", ":")).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json;charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("handles", type=Path, help="JSON object: handle (prefix/suffix) -> URL")
    parser.add_argument("--stale", type=Path, help="JSON object: handle -> what the public cache serves (or null)")
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    urls = json.loads(args.handles.read_text())
    stale = json.loads(args.stale.read_text()) if args.stale else {}
    server = HandleServer(("127.0.0.1", args.port), urls, args.latency_ms / 1000.0, stale)

    def stop(signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    host, port = server.server_address[:2]
    print(f"http://{host!s}:{port}", flush=True)
    try:
        server.serve_forever(poll_interval=0.05)
    finally:
        server.server_close()
        print(f"requests {server.count} auth {server.auth_count}", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
