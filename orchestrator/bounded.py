"""Bounded replies: read an HTTP reply as a stream, with a cap on its size and a deadline for the whole
exchange, so that no server (Alma, a proxy in front of it, the handle proxy) can make hwf hold a huge body in
memory or wait forever.

httpx's ``timeout`` bounds each read, not the reply: a server sending one byte a second never trips it. Here
the clock is checked after every chunk, so an exchange ends at most ``deadline`` (plus one read timeout) after
it began. The size is counted on the decoded bytes, so a small gzip that inflates to gigabytes is cut off too.
JSON bodies are parsed with a nesting cap (``load_json``), so a 200,000-deep document is a bad reply, not a
RecursionError.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from typing import Any

import httpx

MB = 1024 * 1024


class ReplyTooLarge(Exception):
    """The reply's body is larger than the cap; nothing past the cap was read."""

    def __init__(self, limit: int, declared: int | None = None) -> None:
        self.limit = limit
        self.declared = declared
        size = f"{declared:,} bytes announced" if declared is not None else "more than that arrived"
        super().__init__(f"the reply is larger than the {_size(limit)} limit ({size})")


class ReplyTooSlow(Exception):
    """The reply did not arrive whole within the deadline."""

    def __init__(self, deadline: float, received: int) -> None:
        self.deadline = deadline
        self.received = received
        super().__init__(f"the reply did not arrive within {deadline:g} s ({received:,} bytes had arrived)")


def _size(limit: int) -> str:
    return f"{limit / MB:g} MB" if limit >= MB else f"{limit:,} bytes"


def _declared_length(response: httpx.Response) -> int | None:
    value = response.headers.get("content-length")
    if value is None or response.headers.get("content-encoding"):
        return None  # an encoded body's length says nothing about its decoded size
    try:
        return int(value.strip())
    except ValueError:
        return None


def send_bounded(
    client: httpx.Client,
    request: httpx.Request,
    *,
    max_bytes: int,
    deadline: float,
    follow_redirects: bool = False,
    monotonic: Callable[[], float] = time.monotonic,
) -> httpx.Response:
    """Send ``request`` and read its reply whole, or raise.

    The response returned is complete (``.content`` works, the connection is released) and carries the
    decoded body, so its ``Content-Encoding`` header is dropped.

    :raises ReplyTooLarge: the body (decoded) is over ``max_bytes``; reading stopped at the cap.
    :raises ReplyTooSlow: the body was not complete ``deadline`` seconds after sending began.
    :raises httpx.HTTPError: as ``client.send`` does.
    """
    started = monotonic()
    response = client.send(request, stream=True, follow_redirects=follow_redirects)
    try:
        declared = _declared_length(response)
        if declared is not None and declared > max_bytes:
            raise ReplyTooLarge(max_bytes, declared)
        chunks: list[bytes] = []
        received = 0
        for chunk in response.iter_bytes():  # as chunks arrive: a chunk size would wait for it to fill
            received += len(chunk)
            if received > max_bytes:
                raise ReplyTooLarge(max_bytes)
            chunks.append(chunk)
            if monotonic() - started > deadline:
                raise ReplyTooSlow(deadline, received)
    finally:
        response.close()
    headers = httpx.Headers(response.headers)
    for name in ("content-encoding", "content-length", "transfer-encoding"):
        if name in headers:
            del headers[name]
    complete = httpx.Response(
        response.status_code,
        headers=headers,
        content=b"".join(chunks),
        request=request,
        extensions=response.extensions,
    )
    complete.history = response.history
    return complete


MAX_JSON_DEPTH = 64


class JsonTooDeep(ValueError):
    """A JSON document nested deeper than MAX_JSON_DEPTH (Alma's replies nest fewer than 10 levels)."""


def json_depth(text: str, limit: int = MAX_JSON_DEPTH) -> int:
    """The nesting depth of a JSON text, stopping (and raising) as soon as it passes ``limit``.

    Brackets inside strings do not count. Run before ``json.loads``, whose recursion would otherwise end in
    a RecursionError for a 200,000-deep document. :raises JsonTooDeep:"""
    depth = deepest = 0
    # Only structural characters matter; strings are skipped whole (escapes included) by the regex.
    for match in _JSON_TOKENS.finditer(text):
        token = match.group()
        if token in "[{":
            depth += 1
            if depth > limit:
                raise JsonTooDeep(f"JSON is nested more than {limit} levels deep; not parsed")
            deepest = max(deepest, depth)
        elif token in "]}":
            depth -= 1
    return deepest


_JSON_TOKENS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')


def load_json(body: bytes, limit: int = MAX_JSON_DEPTH) -> Any:
    """``json.loads`` of a reply body (UTF-8, BOM allowed) with a nesting cap.

    :raises JsonTooDeep: nested deeper than ``limit``.
    :raises ValueError, UnicodeDecodeError: not JSON.
    """
    text = body.decode("utf-8-sig")
    json_depth(text, limit)
    try:
        return json.loads(text)
    except RecursionError:  # cannot happen under the cap; kept so that no traceback ever can
        raise JsonTooDeep("JSON is nested too deeply; not parsed") from None
