"""Running the dashboard: bind the socket first (so a port in use is one clear error), then serve it
with uvicorn until interrupted. uvicorn's access log stays off: a first visit's URL holds the token.

A client cannot hold the dashboard: a request must arrive whole (head, and any body) within
``HEADER_SECONDS`` of its first byte (or of the connection), an idle kept-alive connection is closed after
``KEEP_ALIVE_SECONDS``, a request head is at most ``MAX_HEAD_BYTES``, and at most ``MAX_CONNECTIONS`` are open at
once: one more arriving closes the oldest that is still waiting for its client (never one whose answer is
being made), so a crowd of half-sent requests cannot lock a reader out. uvicorn has no header timeout of its
own for HTTP/1.1: :func:`guarded_protocol` adds it to uvicorn's h11 protocol.
"""

from __future__ import annotations

import asyncio
import errno
import signal
import socket
from types import FrameType
from typing import Any

from orchestrator.errors import ServeError

HEADER_SECONDS = 10.0
KEEP_ALIVE_SECONDS = 5.0
MAX_HEAD_BYTES = 16 * 1024
MAX_CONNECTIONS = 256


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``. :raises ServeError: in use, not an address of this machine."""
    try:
        infos = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ServeError(f"cannot serve on {host}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ServeError(
                f"port {port} on {host} is in use (another hwf serve?): choose another with --port"
            ) from None
        raise ServeError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.set_inheritable(True)
    return sock


class _Stopped(Exception):
    pass


def _stop(signum: int, frame: FrameType | None) -> None:
    raise _Stopped


def guarded_protocol(header_seconds: float = HEADER_SECONDS, max_connections: int = MAX_CONNECTIONS) -> type[Any]:
    """uvicorn's h11 protocol with a deadline on each request and a cap on open connections (module doc)."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    arrivals: dict[Any, None] = {}  # this server's open connections, oldest first

    class Guarded(H11Protocol):
        _deadline: asyncio.TimerHandle | None = None
        _refused = False

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            if len(arrivals) >= max_connections and not _evict_one():
                self._refused = True  # every connection is busy with an answer: this one waits for none
                transport.close()
                return
            super().connection_made(transport)
            arrivals[self] = None
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            arrivals.pop(self, None)
            self._disarm()
            if not self._refused:
                super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self._refused:
                return
            super().data_received(data)
            if not self.waiting():
                self._disarm()
            elif self._deadline is None:
                self._arm()  # the first bytes of the next request on a kept-alive connection

        def waiting(self) -> bool:
            """The client owes (the rest of) a request, and no answer is being made."""
            owes = self.conn.their_state in (h11.IDLE, h11.SEND_BODY)
            return bool(owes and (self.cycle is None or self.cycle.response_complete))

        def _arm(self) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(header_seconds, self._expired)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expired(self) -> None:
            self._deadline = None
            if self.conn.their_state in (h11.IDLE, h11.SEND_BODY) and not self.transport.is_closing():
                self.transport.close()

    def _evict_one() -> bool:
        for protocol in arrivals:
            if protocol.waiting():
                arrivals.pop(protocol)
                protocol.transport.close()
                return True
        return False

    return Guarded


def server_config(app: Any, *, header_seconds: float = HEADER_SECONDS, max_connections: int = MAX_CONNECTIONS) -> Any:
    """The uvicorn configuration ``hwf serve`` runs ``app`` with (a ``uvicorn.Config``)."""
    import uvicorn

    return uvicorn.Config(
        app,
        http=guarded_protocol(header_seconds, max_connections),
        log_level="warning",
        access_log=False,
        lifespan="off",
        server_header=False,
        timeout_keep_alive=int(KEEP_ALIVE_SECONDS),
        h11_max_incomplete_event_size=MAX_HEAD_BYTES,
        limit_concurrency=max_connections + 1,  # a second bound on answers at once (the cap keeps them below)
        backlog=128,
    )


def serve(app: Any, sock: socket.socket) -> None:
    """Serve ``app`` on ``sock`` until SIGINT or SIGTERM, then return (a clean stop, not a death by signal)."""
    import uvicorn

    server = uvicorn.Server(server_config(app))
    # uvicorn shuts down gracefully on SIGTERM, then raises the signal again for the handler it found:
    # this one, which ends the run instead of the process.
    previous = signal.signal(signal.SIGTERM, _stop)
    try:
        server.run(sockets=[sock])
    except _Stopped:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        sock.close()
