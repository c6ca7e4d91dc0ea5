"""SimServer: the Simulator over real HTTP on a local port (stdlib ThreadingHTTPServer, HTTP/1.1 keep-alive).

Each request becomes an ``httpx.Request``, goes through ``Simulator.respond`` and comes back as bytes.
A dropped reply closes the connection without a status line, as a crashed gateway would.
"""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType

import httpx

from .core import ConnectionDropped, Simulator

_HOP_HEADERS = {"content-length", "transfer-encoding", "connection", "keep-alive", "content-encoding"}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _SimHTTPServer

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes; with Nagle's algorithm and the client's delayed ACK
        # each keep-alive reply would stall about 40 ms.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        return  # the simulator never writes to stderr

    def _body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _serve(self) -> None:
        host, port = self.server.server_address[:2]
        url = f"http://{self.headers.get('Host') or f'{host!s}:{port}'}{self.path}"
        headers = [(k, v) for k, v in self.headers.items() if k.lower() not in _HOP_HEADERS]
        request = httpx.Request(self.command, url, headers=headers, content=self._body())
        try:
            reply = self.server.simulator.respond(request, over_http=True)
        except ConnectionDropped:
            self.close_connection = True
            return
        body = reply.content
        self.send_response(reply.status_code)
        for key, value in reply.headers.multi_items():
            if key.lower() not in _HOP_HEADERS:
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _serve


class _SimHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # a stalled handler (timeout fault) must not hold up stop()
    allow_reuse_address = True
    request_queue_size = 128  # the verifier opens many connections at once; 5 would stall them on SYN retries

    def __init__(self, address: tuple[str, int], simulator: Simulator) -> None:
        super().__init__(address, _Handler)
        self.simulator = simulator


class SimServer:
    """Serve a Simulator on ``host:port`` (port 0 picks a free port); ``url`` is the base for hwf's config."""

    def __init__(self, sim: Simulator, host: str = "127.0.0.1", port: int = 0) -> None:
        self.simulator = sim
        self._httpd = _SimHTTPServer((host, port), sim)
        self._thread: threading.Thread | None = None
        self._serving = threading.Event()

    @property
    def url(self) -> str:
        """``http://HOST:PORT``: use it as alma.base_url and handles.resolver_url."""
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> SimServer:
        """Serve in a background thread."""
        if self._thread is None:
            self._serving.set()
            self._thread = threading.Thread(target=self._run, name="hwf-sim", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        self._serving.set()
        try:
            self._httpd.serve_forever(poll_interval=0.05)
        finally:
            self._serving.clear()

    def serve_forever(self) -> None:
        """Serve in this thread until ``stop()`` is called from another thread (or KeyboardInterrupt)."""
        self._run()

    def stop(self) -> None:
        """Stop serving and close the listening socket."""
        if self._serving.is_set():
            self._httpd.shutdown()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> SimServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
