"""A lean HTTP/1.1 transport for ``httpx``: ``http.client`` underneath, one kept-alive connection per thread
and origin.

The verifier sends one small GET per handle from up to 32 threads that share one interpreter lock, so every
microsecond of client CPU is time the other threads wait (and, with threads that wake together, it is paid
once per thread in the queue). httpcore's pool takes one lock around every request and every close, and h11
parses in pure Python: about 0.3 ms of CPU per request here, against well under 0.1 ms for ``http.client``.
This transport plugs in under the same ``httpx.Client``, so everything above it stays as it is: the request
the verifier builds (and ``--dry-run`` shows), the bounded reader (size cap, deadline), redirects, timeouts.
A proxy from the environment (:func:`environment_proxy`) is httpx's own transport's job; this one talks to
the server directly.

Connections are never shared between threads, so no lock is taken on the way of a request. A connection that
the server closed while it sat idle is noticed on its next use and the request is sent again on a new
connection, once, for methods that are safe to repeat (GET, HEAD, OPTIONS); for the others an idle connection
is checked before use instead.
"""

from __future__ import annotations

import http.client
import re
import select
import ssl
import threading
import urllib.request
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx

from orchestrator.config import is_loopback
from orchestrator.errors import ConfigError

CHUNK = 65536
SAFE_TO_REPEAT = frozenset({"GET", "HEAD", "OPTIONS"})
# What a connection the server closed while it sat idle looks like on its next use (plain, or TLS closed with or
# without its close_notify).
_STALE = (
    http.client.RemoteDisconnected,
    BrokenPipeError,
    ConnectionResetError,
    ConnectionAbortedError,
    ssl.SSLEOFError,
    ssl.SSLZeroReturnError,
)

Origin = tuple[str, str, int]


def environment_proxy(url: str) -> str | None:
    """The proxy the environment names for ``url`` (``HTTPS_PROXY``, ``HTTP_PROXY``, ``ALL_PROXY`` and ``NO_PROXY``,
    lower case first, as curl and httpx read them), or None. A loopback host is never proxied.

    httpx reads these variables only when it builds its own transport; hwf gives it one (for retries, or this
    module's), so it asks here and builds the proxy transport itself.
    :raises ConfigError: the variable names no http(s) proxy URL (one line, the password never shown)."""
    parts = urlsplit(url)
    host = parts.hostname
    if not host or is_loopback(url):
        return None
    proxies = urllib.request.getproxies_environment()
    scheme = parts.scheme if proxies.get(parts.scheme) else "all"
    proxy = proxies.get(scheme)
    if not proxy or urllib.request.proxy_bypass(host):
        return None
    proxy = proxy if "://" in proxy else f"http://{proxy}"
    problem = ""
    if proxy.split("://", 1)[0].lower() not in ("http", "https"):
        problem = "hwf uses http and https proxies only"
    else:
        try:
            httpx.Proxy(proxy)
        except (httpx.InvalidURL, ValueError) as exc:
            problem = str(exc)
    if problem:
        shown = re.sub(r"//[^/@]*@", "//***@", proxy)  # a proxy URL may carry a password
        raise ConfigError(
            f"the proxy in ${scheme.upper()}_PROXY (or ${scheme}_proxy), {shown!r}, is not usable: {problem}; "
            "fix it, or unset it to connect directly"
        )
    return proxy


class _Slot:
    """One thread's kept-alive connection to one origin; ``busy`` while a reply is being read from it."""

    __slots__ = ("conn", "busy", "timeout")

    def __init__(self, conn: http.client.HTTPConnection, timeout: float | None) -> None:
        self.conn = conn
        self.busy = False
        self.timeout = timeout  # the socket's read timeout now


class KeepAliveTransport(httpx.BaseTransport):
    """``httpx.BaseTransport`` over ``http.client``: HTTP/1.1, http and https, a connection per thread per origin.

    ``max_origins`` bounds the connections one thread keeps (a redirect to another host opens one more).
    """

    def __init__(self, *, ssl_context: ssl.SSLContext | None = None, max_origins: int = 4) -> None:
        self._ssl_context = ssl_context
        self._max_origins = max_origins
        self._local = threading.local()
        self._lock = threading.Lock()  # guards _open and _ssl_context only; never held across I/O
        self._open: set[http.client.HTTPConnection] = set()
        self._closed = False

    # -- connections -----------------------------------------------------------------------

    def _slots(self) -> dict[Origin, _Slot]:
        slots: dict[Origin, _Slot] | None = getattr(self._local, "slots", None)
        if slots is None:
            slots = self._local.slots = {}
        return slots

    def _context(self) -> ssl.SSLContext:
        with self._lock:
            if self._ssl_context is None:
                # httpx's own default context (certifi's roots, SSL_CERT_FILE / SSL_CERT_DIR honoured),
                # so the two transports trust the same servers.
                self._ssl_context = httpx.create_ssl_context()
            return self._ssl_context

    def _connect(self, origin: Origin, timeouts: dict[str, Any], request: httpx.Request) -> http.client.HTTPConnection:
        scheme, host, port = origin
        conn: http.client.HTTPConnection
        if scheme == "https":
            conn = http.client.HTTPSConnection(host, port, timeout=timeouts.get("connect"), context=self._context())
        else:
            conn = http.client.HTTPConnection(host, port, timeout=timeouts.get("connect"))
        try:
            conn.connect()
        except TimeoutError as exc:
            conn.close()
            raise httpx.ConnectTimeout(f"connect timed out ({exc})", request=request) from None
        except OSError as exc:  # refused, unreachable, DNS, TLS handshake (ssl.SSLError is an OSError)
            conn.close()
            raise httpx.ConnectError(f"{type(exc).__name__}: {exc}", request=request) from None
        if conn.sock is not None:
            conn.sock.settimeout(timeouts.get("read"))
        with self._lock:
            if self._closed:
                conn.close()
                raise httpx.ConnectError("the transport is closed", request=request)
            self._open.add(conn)
        return conn

    def _forget(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            self._open.discard(conn)
        conn.close()

    def _drop(self, slots: dict[Origin, _Slot], origin: Origin, slot: _Slot) -> None:
        if slots.get(origin) is slot:
            del slots[origin]
        self._forget(slot.conn)

    def _checkout(
        self, slots: dict[Origin, _Slot], origin: Origin, timeouts: dict[str, Any], request: httpx.Request
    ) -> tuple[_Slot, bool]:
        """This thread's idle connection to ``origin`` (reused: True) or a new one (False)."""
        slot = slots.get(origin)
        read_timeout = timeouts.get("read")
        if slot is not None and not slot.busy:
            sock = slot.conn.sock
            if sock is not None and (request.method in SAFE_TO_REPEAT or not _readable(slot.conn)):
                slot.busy = True
                if slot.timeout != read_timeout:
                    sock.settimeout(read_timeout)
                    slot.timeout = read_timeout
                return slot, True
            self._drop(slots, origin, slot)  # closed, or spoken to by the server while idle
        fresh = _Slot(self._connect(origin, timeouts, request), read_timeout)
        fresh.busy = True
        if origin not in slots:  # a busy slot stays; this connection is then closed after its one reply
            if len(slots) >= self._max_origins:
                oldest = next(iter(slots))
                if not slots[oldest].busy:
                    self._drop(slots, oldest, slots[oldest])
            if len(slots) < self._max_origins:
                slots[origin] = fresh
        return fresh, False

    # -- the request -----------------------------------------------------------------------

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.scheme not in ("http", "https"):
            raise httpx.UnsupportedProtocol(f"unsupported scheme {url.scheme!r}", request=request)
        origin: Origin = (url.scheme, url.host, url.port or (443 if url.scheme == "https" else 80))
        timeouts: dict[str, Any] = request.extensions.get("timeout", {})
        body = request.read()
        target = url.raw_path.decode("ascii")
        slots = self._slots()
        for _ in range(2):
            slot, reused = self._checkout(slots, origin, timeouts, request)
            try:
                response = _exchange(slot.conn, request, target, body)
            except _STALE as exc:
                self._drop(slots, origin, slot)
                if reused and request.method in SAFE_TO_REPEAT:
                    continue  # the server closed the idle connection: once more, on a new one
                raise _mapped(exc, request) from None
            except BaseException as exc:
                self._drop(slots, origin, slot)
                if isinstance(exc, Exception):
                    raise _mapped(exc, request) from None
                raise
            return httpx.Response(
                response.status,
                headers=[(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.getheaders()],
                stream=_Body(self, slots, origin, slot, response, request),
                extensions={
                    "http_version": b"HTTP/1.1" if response.version == 11 else b"HTTP/1.0",
                    "reason_phrase": response.reason.encode("latin-1", "replace"),
                },
            )
        raise httpx.RemoteProtocolError("the server closed the connection twice", request=request)

    def release(
        self, slots: dict[Origin, _Slot], origin: Origin, slot: _Slot, response: http.client.HTTPResponse, whole: bool
    ) -> None:
        """After a reply (called by its body stream, in whichever thread closes it): keep the connection if
        the body was read whole and neither side asked to close; otherwise close it."""
        kept = slots.get(origin) is slot
        if whole and not response.will_close and kept and slot.conn.sock is not None:
            slot.busy = False
            return
        if kept:
            del slots[origin]
        self._forget(slot.conn)

    def close_thread(self) -> None:
        """Close the calling thread's connections (a worker thread about to end: its connections would
        otherwise stay open, unusable by any other thread, until :meth:`close`)."""
        slots = self._slots()
        for origin, slot in list(slots.items()):
            if not slot.busy:
                self._drop(slots, origin, slot)

    def close(self) -> None:
        """Close every connection of every thread; later requests fail with ConnectError."""
        with self._lock:
            self._closed = True
            conns, self._open = list(self._open), set()
        for conn in conns:
            conn.close()


class _Body(httpx.SyncByteStream):
    """The reply's body as it arrives (``read1``: whatever is there, never waiting for a full chunk), so that
    the bounded reader above sees every chunk and can stop at its cap or deadline."""

    def __init__(
        self,
        transport: KeepAliveTransport,
        slots: dict[Origin, _Slot],
        origin: Origin,
        slot: _Slot,
        response: http.client.HTTPResponse,
        request: httpx.Request,
    ) -> None:
        self._transport = transport
        self._slots = slots
        self._origin = origin
        self._slot = slot
        self._response = response
        self._request = request
        self._whole = False
        self._released = False

    def __iter__(self) -> Iterator[bytes]:
        response = self._response
        while True:
            if response.length == 0 or response.isclosed():  # all of a known length read, or nothing left
                self._finish()
                return
            try:
                chunk = response.read1(CHUNK)
            except Exception as exc:  # noqa: BLE001 - every failure becomes httpx's error for the caller
                raise _mapped(exc, self._request) from None
            if not chunk:
                if response.length:  # the connection ended before the announced length
                    missing = http.client.IncompleteRead(b"", response.length)
                    raise _mapped(missing, self._request) from None
                self._finish()
                return
            yield chunk

    def _finish(self) -> None:
        # http.client marks a reply done only when its file is closed; read1 does not close it after the
        # last byte of a known length, and the connection refuses its next request until it is.
        self._response.close()
        self._whole = True

    def close(self) -> None:
        if self._released:
            return
        self._released = True
        if not self._whole and self._response.length == 0:
            self._whole = True  # nothing was left to read (a HEAD, a 204, an empty body)
        self._transport.release(self._slots, self._origin, self._slot, self._response, self._whole)


def _exchange(
    conn: http.client.HTTPConnection, request: httpx.Request, target: str, body: bytes
) -> http.client.HTTPResponse:
    conn.putrequest(request.method, target, skip_host=True, skip_accept_encoding=True)
    chunked = False
    for name, value in request.headers.raw:
        if name.lower() == b"transfer-encoding":  # a streamed body (httpx frames nothing itself): it was read
            chunked = True  # whole above, so it goes out with its length instead
            continue
        conn.putheader(name.decode("latin-1"), value)
    if chunked:
        conn.putheader("Content-Length", str(len(body)))
    conn.endheaders(body or None)
    return conn.getresponse()


def _readable(conn: http.client.HTTPConnection) -> bool:
    """An idle connection with something to read has been closed (or spoken to) by the server: not reusable."""
    sock = conn.sock
    if sock is None:
        return True
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


def _mapped(exc: BaseException, request: httpx.Request) -> httpx.TransportError:
    """http.client's and the socket's errors as the httpx errors the rest of hwf handles."""
    if isinstance(exc, httpx.TransportError):
        return exc
    if isinstance(exc, TimeoutError):
        return httpx.ReadTimeout(f"read timed out ({exc})", request=request)
    if isinstance(exc, http.client.RemoteDisconnected):
        return httpx.RemoteProtocolError("Server disconnected without sending a response.", request=request)
    if isinstance(exc, http.client.HTTPException):
        return httpx.RemoteProtocolError(f"{type(exc).__name__}: {exc}", request=request)
    if isinstance(exc, OSError):
        return httpx.ReadError(f"{type(exc).__name__}: {exc}", request=request)
    return httpx.ReadError(f"{type(exc).__name__}: {exc}", request=request)
