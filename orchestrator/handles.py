"""Handle syntax and the concurrent handle verifier.

Owns: reading the handle forms found in metadata (``parse_handle``), the URL form stored in
``dc:identifier`` (``handle_url``), judging a resolved URL against the Primo record URL
(``classify_url``), and ``Verifier``, which asks a handle proxy's JSON API for many handles with
bounded concurrency, one connection pool, a shared rate cap and retries, and streams the results.
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import enum
import queue
import random
import re
import threading
import time
from collections.abc import Callable, Generator, Iterable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote, urljoin, urlsplit

from .config import PrimoConfig
from .proxy_http import DirectClient, ProxyRequestError, Reply, usable_for

if TYPE_CHECKING:
    import httpx  # imported where used: the usual verification never needs it (see proxy_http.py)

_T = TypeVar("_T")

HANDLE_PROXY_HOSTS = frozenset({"hdl.handle.net"})
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
TRANSIENT_RESPONSE_CODES = frozenset({2, 3, 7})  # RC_ERROR, RC_SERVER_TOO_BUSY, RC_SERVER_BACKUP
MAX_RETRY_AFTER = 600.0
_ACCEPT_JSON = {"Accept": "application/json"}

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


def _explain(verdict: Verdict, url: str, expected: str) -> str | None:
    if verdict is Verdict.WRONG_RECORD:
        return f"resolves to the record alma{linked_mms_id(url)}: {url.strip()}"
    if verdict is Verdict.WRONG_TARGET:
        return f"resolves to {url.strip()}, expected {expected}"
    return None


# --------------------------------------------------------------------------------------------
# Verifier


@dataclass(frozen=True)
class VerifyItem:
    """One record to check; ``handle`` None means the record has none (NO_HANDLE, no request)."""

    mms_id: str
    handle: str | None


@dataclass(frozen=True)
class VerifyResult:
    """The outcome of checking one record's handle."""

    mms_id: str
    handle: str | None
    verdict: Verdict
    resolved_url: str | None
    expected_url: str
    detail: str | None
    attempts: int  # HTTP requests made for this record, retries included
    checked_at: datetime
    redirect_ok: bool | None = None  # only with follow=True and a URL to follow


@dataclass
class VerifyStats:
    """Running counts of one Verifier: items, HTTP requests, retries, and results per verdict."""

    items: int = 0
    requests: int = 0
    retries: int = 0
    circuit_pauses: int = 0
    verdicts: dict[Verdict, int] = field(default_factory=lambda: dict.fromkeys(Verdict, 0))

    def as_dict(self) -> dict[str, Any]:
        """Plain counts for a report or a log line."""
        return {
            "items": self.items,
            "requests": self.requests,
            "retries": self.retries,
            "circuit_pauses": self.circuit_pauses,
            "verdicts": {v.value: n for v, n in self.verdicts.items()},
        }


class RateLimiter:
    """A pacing gate shared by all workers: request starts are spaced ``1/rate`` seconds apart.

    Each call reserves the next slot under a lock and sleeps outside it, so there is no busy wait
    and ``hold`` (after a Retry-After or an outage) pauses every worker at once.
    """

    def __init__(
        self,
        rate: float | None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._interval = 1.0 / rate if rate else 0.0
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._next = float("-inf")
        self._hold_until = float("-inf")

    def reserve(self) -> float:
        """Reserve the next slot; return how long the caller must wait for it."""
        with self._lock:
            now = self._clock()
            start = max(now, self._next, self._hold_until)
            self._next = start + self._interval
        return start - now

    def wait(self) -> float:
        """Block until the caller may start a request; return the time waited."""
        delay = self.reserve()
        if delay > 0:
            self._sleep(delay)
        return max(delay, 0.0)

    def hold(self, seconds: float) -> None:
        """Let no request start for ``seconds`` from now."""
        with self._lock:
            self._hold_until = max(self._hold_until, self._clock() + seconds)


class _Transient(Exception):
    """One attempt failed in a way worth retrying."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


@dataclass(frozen=True)
class _Answer:
    verdict: Verdict
    url: str | None = None
    detail: str | None = None


class Verifier:
    """Resolves handles at a handle proxy's JSON API, concurrently and politely.

    One ``httpx.Client`` (pool sized to ``concurrency``), ``concurrency`` worker threads, one rate
    cap shared by all of them, retries with full-jitter exponential backoff for transient failures.
    """

    def __init__(
        self,
        resolver_url: str,
        primo: PrimoConfig,
        *,
        concurrency: int = 8,
        requests_per_second: float | None = 20.0,
        retries: int = 4,
        timeout: float = 15.0,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        follow: bool = False,
        user_agent: str = "hwf/0.1 (handle verification)",
        clock: Callable[[], float] = time.monotonic,
        circuit_threshold: int | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if retries < 0:
            raise ValueError("retries must not be negative")
        self._resolver = resolver_url.rstrip("/")
        self._primo = primo
        self._concurrency = concurrency
        self._retries = retries
        self._sleep = sleep
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._follow = follow
        self._rng = rng or random.Random()
        self._limiter = RateLimiter(requests_per_second, clock=clock, sleep=sleep)
        # After this many transient failures in a row (across workers) every worker pauses for
        # backoff_cap: an outage should cost a pause, not thousands of ERROR rows.
        self._circuit_threshold = circuit_threshold or max(5, 2 * concurrency)
        self._consecutive_transient = 0
        self._lock = threading.Lock()
        self.stats = VerifyStats()
        self._transport, self._timeout, self._user_agent = transport, timeout, user_agent
        self._client: httpx.Client | None = None
        # The JSON API call of each handle goes over http.client when nothing needs httpx (proxy_http.py);
        # the httpx client is then made only if a redirect or the --follow check needs it.
        self._direct: DirectClient | None = None
        if transport is None and usable_for(self._resolver):
            self._direct = DirectClient(self._resolver, timeout=timeout, user_agent=user_agent)
        self._pool: ThreadPoolExecutor | None = None

    @property
    def _http(self) -> httpx.Client:
        import httpx

        with self._lock:
            if self._client is None:
                limits = httpx.Limits(max_connections=self._concurrency, max_keepalive_connections=self._concurrency)
                self._client = httpx.Client(
                    transport=self._transport or httpx.HTTPTransport(limits=limits),
                    limits=limits,
                    timeout=self._timeout,
                    headers={"User-Agent": self._user_agent},
                    follow_redirects=False,
                )
            return self._client

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> Verifier:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop the worker threads and close the connection pool."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        if self._direct is not None:
            self._direct.close()
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    # -- the stream --------------------------------------------------------------------------

    def verify(
        self, items: Iterable[VerifyItem], on_result: Callable[[VerifyResult], None] | None = None
    ) -> Generator[VerifyResult, None, None]:
        """Check every item; yield results as they complete (not in input order).

        ``items`` is consumed lazily with at most ``2 * concurrency`` checks in flight, so memory
        stays flat for any input size. ``on_result`` runs in the caller's thread before each yield.
        Closing the generator early cancels the queued checks.
        """
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self._concurrency, thread_name_prefix="hwf-verify")
        pool = self._pool
        window = 2 * self._concurrency
        # Workers hand each result over through one queue: the caller's thread sleeps on it alone, instead
        # of waiting on every future in flight (which took a lock per future per result, all under the GIL).
        done: queue.SimpleQueue[VerifyResult] = queue.SimpleQueue()
        outstanding: set[Future[None]] = set()

        def check(item: VerifyItem) -> None:
            done.put(self._check_safely(item))

        source = iter(items)
        in_flight = 0
        exhausted = False
        try:
            while True:
                while not exhausted and in_flight < window:
                    try:
                        item = next(source)
                    except StopIteration:
                        exhausted = True
                        break
                    if item.handle is None:
                        yield self._deliver(self._no_handle(item), on_result)
                    else:
                        future = pool.submit(check, item)
                        outstanding.add(future)
                        future.add_done_callback(outstanding.discard)
                        in_flight += 1
                if not in_flight:
                    return
                result = done.get()
                in_flight -= 1
                yield self._deliver(result, on_result)
        finally:
            # The caller stopped early (or an error): drop queued checks, let running ones end.
            left = list(outstanding)
            for future in left:
                future.cancel()
            wait(left)

    def run(self, items: Iterable[VerifyItem], on_result: Callable[[VerifyResult], None] | None = None) -> VerifyStats:
        """Check every item, calling ``on_result`` for each; return the statistics."""
        for _ in self.verify(items, on_result):
            pass
        return self.stats

    def _deliver(self, result: VerifyResult, on_result: Callable[[VerifyResult], None] | None) -> VerifyResult:
        with self._lock:
            self.stats.items += 1
            self.stats.verdicts[result.verdict] += 1
        if on_result is not None:
            on_result(result)
        return result

    # -- one record --------------------------------------------------------------------------

    def _no_handle(self, item: VerifyItem) -> VerifyResult:
        return self._result(item, Verdict.NO_HANDLE, detail="the record has no handle")

    def _result(
        self,
        item: VerifyItem,
        verdict: Verdict,
        *,
        handle: str | None = None,
        url: str | None = None,
        detail: str | None = None,
        attempts: int = 0,
        redirect_ok: bool | None = None,
    ) -> VerifyResult:
        return VerifyResult(
            mms_id=item.mms_id,
            handle=handle if handle is not None else item.handle,
            verdict=verdict,
            resolved_url=url,
            expected_url=expected_url(self._primo, item.mms_id),
            detail=detail,
            attempts=attempts,
            checked_at=datetime.now(UTC),
            redirect_ok=redirect_ok,
        )

    def _check_safely(self, item: VerifyItem) -> VerifyResult:
        try:
            return self._check(item)
        except Exception as exc:  # one bad record must never stop the run
            return self._result(item, Verdict.ERROR, detail=f"internal error: {type(exc).__name__}: {exc}")

    def _check(self, item: VerifyItem) -> VerifyResult:
        if item.handle is None:
            return self._no_handle(item)
        parsed = parse_handle(item.handle, None)
        if parsed.handle is None:
            return self._result(item, Verdict.BAD_HANDLE, detail=parsed.problem)
        handle = parsed.handle
        expected = expected_url(self._primo, item.mms_id)

        answer, attempts, reason = self._retrying(lambda: self._ask_api(handle, item.mms_id, expected))
        if answer is None:
            return self._result(
                item,
                Verdict.ERROR,
                handle=handle,
                detail=f"gave up after {attempts} attempts: {reason}",
                attempts=attempts,
            )
        verdict, detail, redirect_ok = answer.verdict, answer.detail, None
        if self._follow and answer.url is not None:
            seen, more, reason = self._retrying(lambda: self._follow_redirect(handle, expected))
            attempts += more
            if seen is None:
                message = f"redirect check gave up after {more} attempts: {reason}"
                if verdict is Verdict.OK:
                    verdict, detail = Verdict.ERROR, message
                else:
                    detail = f"{detail}; {message}"
            else:
                redirect_ok, redirect_detail, hops = seen
                attempts += hops
                if not redirect_ok and verdict is Verdict.OK:
                    verdict = Verdict.WRONG_TARGET
                    detail = f"the JSON API gives the expected URL, but the proxy {redirect_detail}"
                elif not redirect_ok:
                    detail = f"{detail}; proxy {redirect_detail}"
                elif verdict is not Verdict.OK:
                    detail = f"{detail}; yet the proxy redirects to the expected URL (stale cache?)"
        return self._result(
            item,
            verdict,
            handle=handle,
            url=answer.url,
            detail=detail,
            attempts=attempts,
            redirect_ok=redirect_ok,
        )

    def _retrying(self, once: Callable[[], _T]) -> tuple[_T | None, int, str | None]:
        """Run ``once`` until it returns or raises _Transient ``retries + 1`` times."""
        attempt = 0
        while True:
            attempt += 1
            self._limiter.wait()
            self._count(requests=1)
            try:
                value = once()
            except _Transient as failure:
                self._note_transient()
                if attempt > self._retries:
                    return None, attempt, failure.reason
                self._count(retries=1)
                if failure.retry_after is not None:
                    delay = min(failure.retry_after, MAX_RETRY_AFTER)
                    self._limiter.hold(delay)
                else:
                    delay = self._backoff(attempt)
                self._sleep(delay)
                continue
            with self._lock:
                self._consecutive_transient = 0
            return value, attempt, None

    def _backoff(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2**(attempt-1))]."""
        return self._rng.uniform(0.0, min(self._backoff_cap, self._backoff_base * 2 ** (attempt - 1)))

    def _note_transient(self) -> None:
        with self._lock:
            self._consecutive_transient += 1
            tripped = self._consecutive_transient >= self._circuit_threshold
            if tripped:
                self._consecutive_transient = 0
                self.stats.circuit_pauses += 1
        if tripped:
            self._limiter.hold(self._backoff_cap)

    def _count(self, *, requests: int = 0, retries: int = 0) -> None:
        with self._lock:
            self.stats.requests += requests
            self.stats.retries += retries

    # -- HTTP --------------------------------------------------------------------------------

    def _get(self, url: str, **kwargs: Any) -> httpx.Response:
        import httpx

        try:
            return self._http.get(url, **kwargs)
        except httpx.TimeoutException as exc:
            raise _Transient(f"timeout ({type(exc).__name__})") from None
        except httpx.UnsupportedProtocol:
            raise
        except (httpx.TransportError, httpx.DecodingError) as exc:
            raise _Transient(f"connection error ({type(exc).__name__}: {exc})") from None

    def _ask_api(self, handle: str, mms_id: str, expected: str) -> _Answer:
        path = f"/api/handles/{quote(handle, safe='/')}?type=URL"
        resp: httpx.Response | Reply | None = None
        if self._direct is not None:
            try:
                resp = self._direct.get(path)
            except ProxyRequestError as exc:
                raise _Transient(str(exc)) from None
        if resp is None or resp.status_code in REDIRECT_STATUSES:
            # The API never redirects by itself; following is only for an http->https hop in front.
            resp = self._get(self._resolver + path, headers=_ACCEPT_JSON, follow_redirects=True)
        status = resp.status_code
        body = _json_object(resp)
        rc = _response_code(body)
        rc_text = f", responseCode {rc}" if rc is not None else ""
        if status == 429 or status >= 500:
            raise _Transient(f"HTTP {status}{rc_text}", _retry_after(resp.headers.get("Retry-After")))
        if status == 404:
            if body is None:
                return _Answer(Verdict.ERROR, detail="HTTP 404 without a handle JSON reply (is resolver_url right?)")
            if rc == 100:
                return _Answer(Verdict.NOT_REGISTERED)
            return _Answer(Verdict.NOT_REGISTERED, detail=f"HTTP 404{rc_text}{_message(body)}")
        if status == 400:
            if rc == 102:
                return _Answer(Verdict.BAD_HANDLE, detail=f"the handle server calls it invalid{_message(body)}")
            return _Answer(Verdict.ERROR, detail=f"HTTP 400{rc_text}{_message(body)}")
        if status != 200:
            return _Answer(Verdict.ERROR, detail=f"HTTP {status}{rc_text}")
        if body is None:
            raise _Transient("the reply is not JSON (HTML or garbage)")
        if rc in TRANSIENT_RESPONSE_CODES:
            raise _Transient(f"HTTP 200, responseCode {rc}{_message(body)}")
        if rc == 200:
            return _Answer(Verdict.NO_URL, detail="registered, but no URL value (responseCode 200)")
        if rc == 100:
            return _Answer(Verdict.NOT_REGISTERED, detail="responseCode 100 with HTTP 200")
        if rc == 102:
            return _Answer(Verdict.BAD_HANDLE, detail=f"the handle server calls it invalid{_message(body)}")
        if rc != 1:
            return _Answer(Verdict.ERROR, detail=f"unexpected reply: HTTP 200{rc_text}{_message(body)}")
        found, value = _first_url_value(body.get("values"))
        if not found:
            return _Answer(Verdict.NO_URL, detail="registered, but no URL value")
        if value is None:
            return _Answer(Verdict.NO_URL, detail="the URL value has no readable data")
        verdict = classify_url(value, mms_id, self._primo)
        return _Answer(verdict, url=value, detail=_explain(verdict, value, expected))

    def _follow_redirect(self, handle: str, expected: str) -> tuple[bool, str | None, int]:
        """GET the proxy's user-facing URL without following: (Location is expected, what was seen,
        extra requests made for proxy hops such as http -> https)."""
        url = f"{self._resolver}/{quote(handle, safe='/')}"
        for hop in range(3):
            if hop:
                self._limiter.wait()
                self._count(requests=1)
            resp = self._get(url, follow_redirects=False)
            status = resp.status_code
            if status == 429 or status >= 500:
                retry_after = _retry_after(resp.headers.get("Retry-After"))
                raise _Transient(f"redirect check: HTTP {status}", retry_after)
            if status not in REDIRECT_STATUSES:
                return False, f"answers HTTP {status} instead of a redirect", hop
            location = resp.headers.get("Location")
            if not location:
                return False, f"answers HTTP {status} without a Location", hop
            target = urljoin(url, location.strip())
            if normalise_url(target) == normalise_url(expected):
                return True, None, hop
            if _is_proxy_hop(url, target):
                url = target
                continue
            return False, f"redirects ({status}) to {location.strip()}", hop
        return False, "redirects in a loop on the proxy", 2


def _is_proxy_hop(current: str, target: str) -> bool:
    a, b = urlsplit(current), urlsplit(target)
    return a.path == b.path and (a.scheme, a.netloc.lower()) != (b.scheme, b.netloc.lower())


def _json_object(resp: httpx.Response | Reply) -> dict[str, Any] | None:
    try:
        data = resp.json()
    except (ValueError, UnicodeDecodeError):
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


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP date), or None."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
