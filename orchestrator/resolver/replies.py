"""Reading a handle proxy's JSON API replies: what one reply says about a handle (its verdict, the URL
value, the value's TTL and timestamp), and which failures are worth asking again.

The replies are documented in the Handle.Net proxy's API: ``responseCode`` 1 (found), 100 (not registered),
200 (registered, no value of that type), 102 (invalid handle), 2/3/7 (error, busy, backing up: ask again).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

from orchestrator.bounded import load_json
from orchestrator.config import PrimoConfig
from orchestrator.domain.handles import Verdict, classify_url, explain, stale_cache_detail, stale_cache_expiry
from orchestrator.pacing import retry_after

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
TRANSIENT_RESPONSE_CODES = frozenset({2, 3, 7})  # RC_ERROR, RC_SERVER_TOO_BUSY, RC_SERVER_BACKUP


class Refused(Exception):
    """One attempt got a reply hwf will not read (over the size cap): an ERROR verdict, no retry."""


class Transient(Exception):
    """One attempt failed in a way worth retrying."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


@dataclass(frozen=True)
class Answer:
    """What one reply says: the verdict, the URL value and its times."""

    verdict: Verdict
    url: str | None = None
    detail: str | None = None
    ttl: float | None = None  # the URL value's TTL (seconds), as the reply gives it
    changed_at: datetime | None = None  # the URL value's timestamp (when it was last written)
    expires: datetime | None = None  # STALE_CACHE only: when the public proxy's cached value expires


def read_reply(resp: httpx.Response, mms_id: str, expected: str, primo: PrimoConfig) -> Answer:
    """What one reply of the handle API says about a handle: its verdict, URL and the URL value's times.

    :raises Transient: worth asking again (429, 5xx, a reply that is not JSON, a busy server).
    """
    status = resp.status_code
    body = _json_object(resp)
    rc = _response_code(body)
    rc_text = f", responseCode {rc}" if rc is not None else ""
    if status == 429 or status >= 500:
        raise Transient(f"HTTP {status}{rc_text}", retry_after(resp))
    if status == 404:
        if body is None:
            return Answer(Verdict.ERROR, detail="HTTP 404 without a handle JSON reply (is resolver_url right?)")
        if rc == 100:
            return Answer(Verdict.NOT_REGISTERED)
        return Answer(Verdict.NOT_REGISTERED, detail=f"HTTP 404{rc_text}{_message(body)}")
    if status == 400:
        if rc == 102:
            return Answer(Verdict.BAD_HANDLE, detail=f"the handle server calls it invalid{_message(body)}")
        return Answer(Verdict.ERROR, detail=f"HTTP 400{rc_text}{_message(body)}")
    if status != 200:
        return Answer(Verdict.ERROR, detail=f"HTTP {status}{rc_text}")
    if body is None:
        raise Transient("the reply is not JSON (HTML or garbage)")
    if rc in TRANSIENT_RESPONSE_CODES:
        raise Transient(f"HTTP 200, responseCode {rc}{_message(body)}")
    if rc == 200:
        return Answer(Verdict.NO_URL, detail="registered, but no URL value (responseCode 200)")
    if rc == 100:
        return Answer(Verdict.NOT_REGISTERED, detail="responseCode 100 with HTTP 200")
    if rc == 102:
        return Answer(Verdict.BAD_HANDLE, detail=f"the handle server calls it invalid{_message(body)}")
    if rc != 1:
        return Answer(Verdict.ERROR, detail=f"unexpected reply: HTTP 200{rc_text}{_message(body)}")
    found, value = _first_url_value(body.get("values"))
    if not found:
        return Answer(Verdict.NO_URL, detail="registered, but no URL value")
    if value is None:
        return Answer(Verdict.NO_URL, detail="the URL value has no readable data")
    verdict = classify_url(value, mms_id, primo)
    ttl, changed_at = _url_value_times(body.get("values"))
    return Answer(verdict, url=value, detail=explain(verdict, value, expected), ttl=ttl, changed_at=changed_at)


def stale_answer(primary: Answer, public: Answer, now: datetime) -> Answer:
    """Right at the primary server, not in the public proxy's answer: STALE_CACHE until the cached value
    expires (its TTL from the value's timestamp; 24 hours when the reply gives neither)."""
    expires = stale_cache_expiry(now, primary.changed_at, public.ttl)
    detail = stale_cache_detail(public.verdict, public.url, expires)
    return Answer(Verdict.STALE_CACHE, url=primary.url, detail=detail, ttl=public.ttl, expires=expires)


def is_proxy_hop(current: str, target: str) -> bool:
    a, b = urlsplit(current), urlsplit(target)
    return a.path == b.path and (a.scheme, a.netloc.lower()) != (b.scheme, b.netloc.lower())


def _json_object(resp: httpx.Response) -> dict[str, Any] | None:
    try:
        data = load_json(resp.content)
    except (ValueError, UnicodeDecodeError):  # JsonTooDeep included: not a handle reply
        return None
    return data if isinstance(data, dict) else None


def _response_code(body: dict[str, Any] | None) -> int | None:
    if body is None:
        return None
    rc = body.get("responseCode")
    if isinstance(rc, bool):
        return None
    if isinstance(rc, int):
        return rc
    if isinstance(rc, str) and rc.strip().isdigit():
        return int(rc)
    return None


def _message(body: dict[str, Any] | None) -> str:
    message = body.get("message") if body else None
    return f": {message}" if isinstance(message, str) and message else ""


def _url_value_times(values: object) -> tuple[float | None, datetime | None]:
    """The first URL value's ``ttl`` (seconds; negative TTLs are absolute times, ignored) and ``timestamp``."""
    if not isinstance(values, list):
        return None, None
    for value in values:
        if isinstance(value, dict) and str(value.get("type", "")).upper() == "URL":
            ttl = value.get("ttl")
            seconds = float(ttl) if isinstance(ttl, int | float) and not isinstance(ttl, bool) and ttl >= 0 else None
            return seconds, _timestamp(value.get("timestamp"))
    return None, None


def _timestamp(value: object) -> datetime | None:
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    try:
        parsed = datetime.fromisoformat(text[:-1] + "+00:00" if text[-1:] in "zZ" else text)
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _first_url_value(values: object) -> tuple[bool, str | None]:
    """The proxy's choice: the first value whose type is exactly URL (case-insensitive)."""
    if not isinstance(values, list):
        return False, None
    for value in values:
        if not isinstance(value, dict) or str(value.get("type", "")).upper() != "URL":
            continue
        data = value.get("data")
        if isinstance(data, str):
            return True, data
        if isinstance(data, dict):
            raw = data.get("value")
            if data.get("format") == "base64" and isinstance(raw, str):
                try:
                    return True, base64.b64decode(raw, validate=True).decode("utf-8")
                except (binascii.Error, UnicodeDecodeError):
                    return True, None
            if isinstance(raw, str):
                return True, raw
        return True, None
    return False, None
