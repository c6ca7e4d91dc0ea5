"""The verifier's hot path to the handle proxy: one keep-alive ``http.client`` connection per worker thread.

Verification is bounded by the proxy's latency, and the 16 workers share one interpreter lock: each request's
CPU is time the other workers wait. httpx costs about 0.55 ms of CPU per request here, ``http.client`` 0.16 ms,
so the JSON API calls (one per handle) go this way; anything unusual (a redirect, the ``--follow`` check, a
proxy from the environment, an injected test transport) stays with the verifier's ``httpx.Client``.
"""

from __future__ import annotations

import http.client
import json
import ssl
import threading
import urllib.request
from email.message import Message
from typing import Any
from urllib.parse import urlsplit


class ProxyRequestError(Exception):
    """The request got no usable answer (connection refused or reset, timeout, garbled reply)."""


class Reply:
    """What ``DirectClient.get`` returns: the little of ``httpx.Response`` the verifier reads."""

    def __init__(self, status_code: int, headers: Message, content: bytes) -> None:
        self.status_code = status_code
        self.headers = headers
        self.content = content

    def json(self) -> Any:
        return json.loads(self.content)


def usable_for(base_url: str) -> bool:
    """True when ``base_url`` can be reached directly: http(s), and no proxy from the environment applies."""
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return False
    proxies = urllib.request.getproxies()
    return not (proxies.get(parts.scheme) or proxies.get("all")) or bool(urllib.request.proxy_bypass(parts.hostname))


class DirectClient:
    """GET requests to one host over a kept-alive connection per thread."""

    def __init__(self, base_url: str, *, timeout: float, user_agent: str) -> None:
        parts = urlsplit(base_url)
        if parts.hostname is None:
            raise ValueError(f"not a URL with a host: {base_url!r}")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port
        self._root = parts.path.rstrip("/")
        self._timeout = timeout
        self._headers = {"User-Agent": user_agent, "Accept": "application/json"}
        self._context: ssl.SSLContext | None = None
        self._local = threading.local()
        self._lock = threading.Lock()
        self._open: set[http.client.HTTPConnection] = set()

    def _connection(self) -> tuple[http.client.HTTPConnection, bool]:
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is not None:
            return conn, False
        if self._https:
            with self._lock:
                if self._context is None:
                    import certifi  # the CA bundle httpx uses, so both paths trust the same roots

                    self._context = ssl.create_default_context(cafile=certifi.where())
            conn = http.client.HTTPSConnection(self._host, self._port, timeout=self._timeout, context=self._context)
        else:
            conn = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)
        self._local.conn = conn
        with self._lock:
            self._open.add(conn)
        return conn, True

    def _drop(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            with self._lock:
                self._open.discard(conn)
            conn.close()

    def get(self, path: str) -> Reply:
        """``GET {base}{path}`` (path with its query). :raises ProxyRequestError: no usable answer."""
        for _ in range(2):
            conn, fresh = self._connection()
            try:
                conn.request("GET", self._root + path, headers=self._headers)
                response = conn.getresponse()
                body = response.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                self._drop()
                if fresh:
                    raise ProxyRequestError(f"connection error ({type(exc).__name__}: {exc})") from None
                continue  # a kept-alive connection the server had closed meanwhile: once more, on a new one
            except TimeoutError:
                self._drop()
                raise ProxyRequestError("timeout (TimeoutError)") from None
            except (OSError, http.client.HTTPException) as exc:
                self._drop()
                raise ProxyRequestError(f"connection error ({type(exc).__name__}: {exc})") from None
            if response.will_close:
                self._drop()
            return Reply(response.status, response.headers, body)
        raise ProxyRequestError("connection error (closed twice)")  # pragma: no cover - loop always returns

    def close(self) -> None:
        """Close every thread's connection."""
        with self._lock:
            conns, self._open = list(self._open), set()
        for conn in conns:
            conn.close()
