"""Handle rules: the handle forms found in metadata, the URL form stored in ``dc:identifier``, and
the verdict on a resolved URL against the record's Primo URL. Pure functions, no I/O."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from orchestrator.config import PrimoConfig
from orchestrator.display import utc_stamp

HANDLE_PROXY_HOSTS = frozenset({"hdl.handle.net"})

_URL_FORM = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<host>[^/?#]*)(?P<rest>.*)$", re.DOTALL)
_HDL_FORM = re.compile(r"^hdl:(?P<rest>.*)$", re.IGNORECASE | re.DOTALL)
_SCHEME_HOST = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)([^/?#]*)(.*)$", re.DOTALL)
_FULLDISPLAY = re.compile(r"/discovery/fulldisplay/alma(\d+)(?:[/?#]|$)")
_DOCID = re.compile(r"[?&]docid=alma(\d+)(?:&|#|$)")


# --------------------------------------------------------------------------------------------
# Handle syntax


@dataclass(frozen=True)
class ParsedHandle:
    """A handle as read from metadata: the normalised ``prefix/suffix`` or why it is unusable."""

    handle: str | None  # normalised "prefix/suffix"; None exactly when ``problem`` is set
    problem: str | None  # why it is BAD_HANDLE, e.g. "trailing slash", "prefix 123 is not 11084"
    note: str | None  # normalisation applied, e.g. "surrounding whitespace stripped"


def parse_handle(raw: str, prefix: str | None) -> ParsedHandle:
    """Read ``http(s)://hdl.handle.net/P/S``, ``hdl:P/S`` or bare ``P/S``.

    Surrounding whitespace is stripped (and noted); inner whitespace, a trailing slash, another
    prefix (when ``prefix`` is given), an empty suffix or another host are problems.
    """
    notes: list[str] = []
    problems: list[str] = []
    text = raw.strip()
    if text != raw:
        notes.append("surrounding whitespace stripped")
    if not text:
        return ParsedHandle(None, "empty", _join(notes))

    url = _URL_FORM.match(text)
    hdl = _HDL_FORM.match(text)
    if url:
        scheme, host, rest = url["scheme"], url["host"], url["rest"]
        if scheme.lower() not in ("http", "https"):
            return ParsedHandle(None, f"not a handle URL (scheme {scheme})", _join(notes))
        if host.lower() not in HANDLE_PROXY_HOSTS:
            return ParsedHandle(None, f"not a handle URL (host {host})", _join(notes))
        if scheme.lower() == "https":
            notes.append("https form accepted")
        if scheme != scheme.lower() or host != host.lower():
            notes.append("scheme/host case normalised")
        if not rest.startswith("/") or rest == "/":
            return ParsedHandle(None, "no handle after the host", _join(notes))
        rest = rest[1:]
        if "?" in rest or "#" in rest:
            problems.append("URL has a query or fragment")
    elif hdl:
        rest = hdl["rest"]
        notes.append("hdl: form accepted")
    elif text.lower().startswith(tuple(f"{h}/" for h in HANDLE_PROXY_HOSTS)):
        return ParsedHandle(None, "handle URL without http:// scheme", _join(notes))
    else:
        rest = text
        if "/" not in rest or not rest[:1].isdigit():
            return ParsedHandle(None, "not a handle", _join(notes))
        notes.append("bare prefix/suffix form accepted")

    if any(ch.isspace() for ch in rest):
        problems.append("contains whitespace")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in rest if not ch.isspace()):
        problems.append("contains control characters")
    core = rest
    if rest.endswith("/"):
        problems.append("trailing slash")
        core = rest.rstrip("/")
    if "/" not in core:
        problems.append("empty suffix" if "/" in rest else "no '/' between prefix and suffix")
        return ParsedHandle(None, _join(problems), _join(notes))
    got_prefix, suffix = core.split("/", 1)
    if not got_prefix:
        problems.append("empty prefix")
    elif prefix is not None and got_prefix.upper() != prefix.upper():
        problems.append(f"prefix {got_prefix} is not {prefix}")
    if suffix.startswith("/"):
        problems.append("double slash after the prefix")
    if problems:
        return ParsedHandle(None, _join(problems), _join(notes))
    return ParsedHandle(f"{got_prefix}/{suffix}", None, _join(notes))


def handle_url(handle: str) -> str:
    """The URL form of a handle as stored in ``dc:identifier``: ``http://hdl.handle.net/P/S``."""
    return f"http://hdl.handle.net/{handle}"


def _join(parts: list[str]) -> str | None:
    return "; ".join(parts) if parts else None


# --------------------------------------------------------------------------------------------
# Verdicts


class Verdict(enum.StrEnum):
    """What resolving one record's handle showed."""

    OK = "OK"
    WRONG_RECORD = "WRONG_RECORD"  # a Primo full-display URL of another MMS ID
    WRONG_TARGET = "WRONG_TARGET"  # some other URL (legacy repository, other view, permalink)
    NO_URL = "NO_URL"  # registered, but no URL value
    NOT_REGISTERED = "NOT_REGISTERED"  # 404, responseCode 100
    BAD_HANDLE = "BAD_HANDLE"  # syntax check failed locally, or 400 responseCode 102
    NO_HANDLE = "NO_HANDLE"  # the record has no handle to check
    ERROR = "ERROR"  # still transient after every retry, or an unexpected reply
    # Right at the primary handle server (auth=true), but the public proxy still serves an older value
    # from its cache: the set is verified; the public sees the new value once the cache expires.
    STALE_CACHE = "STALE_CACHE"


# Verdicts that count as verified: the handle is right where it is registered (the primary server).
VERIFIED = frozenset({Verdict.OK, Verdict.STALE_CACHE})
VERIFIED_VALUES = frozenset(v.value for v in VERIFIED)
# The proxy's cache lifetime when the value names no TTL: "typically set to 24 hours" (handle.net).
DEFAULT_PROXY_TTL = timedelta(hours=24)


def stale_cache_expiry(checked_at: datetime, changed_at: datetime | None, ttl_seconds: float | None) -> datetime:
    """The latest time the public proxy can still serve a stale cached value.

    The proxy cached the old value at some moment before the check, and (since it holds the old value)
    before the value was changed at the primary server, when that time (the value's ``timestamp``) is
    known; it keeps it for the cached value's TTL. So it expires by ``min(checked_at, changed_at) + ttl``.
    """
    ttl = timedelta(seconds=ttl_seconds) if ttl_seconds is not None and ttl_seconds >= 0 else DEFAULT_PROXY_TTL
    cached_by = min(checked_at, changed_at) if changed_at is not None else checked_at
    return cached_by + ttl


def stale_cache_detail(public_verdict: Verdict, public_url: str | None, expires: datetime) -> str:
    """What a STALE_CACHE verdict means for this handle, in one line."""
    seen = f"{public_verdict.value} ({public_url.strip()})" if public_url else public_verdict.value
    return (
        f"right at the primary server; the public proxy still serves its cached value, {seen}, until "
        f"{utc_stamp(expires, seconds=False)} at the latest"
    )


def expected_url(primo: PrimoConfig, mms_id: str) -> str:
    """The URL a record's handle must resolve to (Primo VE full display)."""
    return primo.record_url(mms_id)


def normalise_url(url: str) -> str:
    """Strip whitespace and lower-case scheme and host; nothing else (the view's ``:`` stays)."""
    text = url.strip()
    m = _SCHEME_HOST.match(text)
    if not m:
        return text
    return m[1].lower() + m[2].lower() + m[3]


def linked_mms_id(url: str) -> str | None:
    """The MMS ID a Primo full-display URL points at (path or ``docid=`` form), if any."""
    m = _FULLDISPLAY.search(url) or _DOCID.search(url)
    return m[1] if m else None


def classify_url(url: str | None, mms_id: str, primo: PrimoConfig) -> Verdict:
    """OK when ``url`` is the record's Primo URL; WRONG_RECORD when it is a Primo full-display
    URL of another MMS ID; WRONG_TARGET otherwise (NO_URL when there is no URL)."""
    if url is None or not url.strip():
        return Verdict.NO_URL
    if normalise_url(url) == normalise_url(expected_url(primo, mms_id)):
        return Verdict.OK
    other = linked_mms_id(url)
    if other is not None and other != mms_id:
        return Verdict.WRONG_RECORD
    return Verdict.WRONG_TARGET


def explain(verdict: Verdict, url: str, expected: str) -> str | None:
    """A one-line detail for a wrong verdict: where the handle goes instead."""
    if verdict is Verdict.WRONG_RECORD:
        return f"resolves to the record alma{linked_mms_id(url)}: {url.strip()}"
    if verdict is Verdict.WRONG_TARGET:
        return f"resolves to {url.strip()}, expected {expected}"
    return None
