"""Talking to Alma's REST API: one ``httpx.Client`` per key, and the rules every call follows.

Owns authentication (the key travels only in the ``Authorization`` header), the request-rate gate (halved on
429 PER_SECOND_THRESHOLD, recovering slowly; or the budget every process sharing the key draws from), retries
(reads and bib PUTs only; a POST that may have reached Alma is never re-sent: its outcome is unknown and the
caller reconciles), the daily-quota floor, bounded replies, one log line per call, and the mapping of Alma's
error bodies to ``errors.py``. The API's calls themselves (sets, jobs, bibs) are ``alma.client``.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import NamedTuple, Self, TypeVar

import httpx

from orchestrator.alma.wire import (
    ErrorDetail,
    Origin,
    Reply,
    decode,
    errors_exist,
    errors_in,
    header_int,
    one_line,
    parse_error_body,
)
from orchestrator.bounded import MB, ReplyTooLarge, ReplyTooSlow, send_bounded
from orchestrator.config import without_userinfo
from orchestrator.errors import (
    AlmaBadReplyError,
    AlmaError,
    AlmaUnreachableError,
    ConfigError,
    DailyQuotaError,
    JobThresholdError,
    RateLimitedError,
)
from orchestrator.pacing import RateGate, SharesRemaining, TokenBucket, backoff_delay, retry_after
from orchestrator.transport import environment_proxy

_log = logging.getLogger(__name__)
_http_log = logging.getLogger("orchestrator.http")
T = TypeVar("T")

API_ROOT = "/almaws/v1"
REDACTED_KEY = "***"  # how a key is shown: the planning client's Authorization is "apikey ***"
PAGE_SIZE = 100
_SHORTEST_KEY = 8  # a "key" shorter than this is a test's stand-in: replies are never searched for it
MAX_RETRY_AFTER = 300.0
# Alma will not start the job now: 402222/402223 execution threshold (3 API jobs at once, 5 runs of a job an hour),
# 60347 "Job overlaps with running job". The job was not started: wait, then submit again.
JOB_THRESHOLD_CODES = frozenset({"402222", "402223", "60347"})
MEDIA = {"json": "application/json", "xml": "application/xml"}  # Accept for each reply format
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
_UNKNOWN_OUTCOME = "the outcome is unknown (Alma may have acted on it): check before sending it again"
_HINTS: dict[object, str] = {
    "UNAUTHORIZED": ": the API key lacks the area for this API or is for the other environment (sandbox/production)",
    "401": ": not an Alma API answer; is the base URL the API gateway (https://api-XX.hosted.exlibrisgroup.com)"
    " rather than the institution's Alma domain?",
    "403": ": the API key is invalid or this address is not allowed to use it",
    DailyQuotaError: ": the institution's daily API quota is spent; resume after midnight (institution time)",
    RateLimitedError: ": still too fast after {attempts} tries",
    JobThresholdError: ": Alma starts at most 3 API jobs at once, 5 runs of one job an hour, and no run that"
    " overlaps a running one; wait, then resubmit",
    AlmaUnreachableError: f": {_UNKNOWN_OUTCOME}",
}


def _long(seconds: float | None) -> float | None:
    """A ``Retry-After`` over ``MAX_RETRY_AFTER`` (never slept in a call: the error carries it, the set waits)."""
    return seconds if seconds is not None and seconds > MAX_RETRY_AFTER else None


class NoSending(httpx.BaseTransport):
    """The transport of a planning client: building requests is all it may do."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        raise RuntimeError("a planning AlmaClient (--dry-run) never sends a request")


class Answer(NamedTuple):
    body: bytes
    reply: Reply
    origin: Origin


def _api_root(base_url: str) -> str:
    # A user:password@ never travels: httpx would send it as Basic auth in place of the key header.
    url = without_userinfo(base_url.strip()).rstrip("/")
    if not url.startswith(("https://", "http://")) or "?" in url or "#" in url:
        raise ValueError(f"Alma base URL must look like https://api-na.hosted.exlibrisgroup.com, not {url!r}")
    return url if url.endswith(API_ROOT) else url + API_ROOT


class AlmaCaller:
    """Sends requests to Alma and decodes the replies; one instance per API key, safe to share between threads."""

    remaining: int | None
    quota: int | None
    calls: int

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 60.0,
        format: str = "json",
        requests_per_second: float = 10.0,
        daily_call_floor: int = 0,
        max_retries: int = 6,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
        user_agent: str = "hwf/0.1",
        jitter: Callable[[], float] = random.random,
        max_reply_bytes: int = 20 * MB,
        deadline: float | None = None,
        gate: RateGate | None = None,
    ) -> None:
        """``base_url`` is the regional gateway (``/almaws/v1`` is appended unless present).

        ``jitter`` returns a number in [0, 1) that scales each backoff delay (full jitter). ``gate``
        replaces the process's own rate gate (``store.budget.SharedGate``: one budget for every process
        sharing the key).
        :raises ConfigError: the API key is empty or could not travel in an HTTP header.
        """
        if format not in MEDIA:
            raise ValueError(f"format must be 'json' or 'xml', not {format!r}")
        if not api_key or not api_key.isascii() or any(c.isspace() or not c.isprintable() for c in api_key):
            raise ConfigError("the Alma API key is empty or contains spaces, control or non-ASCII characters")
        if max_retries < 0:
            raise ValueError("max_retries must be 0 or more")
        self.base_url = _api_root(base_url)
        self._secret = api_key
        self._format = format
        self._floor = daily_call_floor
        self._max_retries = max_retries
        self._sleep, self._jitter = sleep, jitter
        self._bucket: RateGate = gate or TokenBucket(requests_per_second, monotonic, sleep, window=True)
        # Every reply is read as a stream: at most max_reply_bytes, whole within ``deadline`` seconds
        # (default: 5 x the per-read timeout), so a 1-byte-a-second server cannot hold hwf forever.
        self._max_reply_bytes = max_reply_bytes
        self._deadline = deadline if deadline is not None else 5 * timeout
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self.remaining = None
        self.quota = None
        self.calls = 0
        self._http = httpx.Client(
            base_url=self.base_url,
            timeout=timeout,
            # A proxy from the environment (HTTPS_PROXY, NO_PROXY): httpx reads it only for a transport it builds.
            transport=transport or httpx.HTTPTransport(retries=2, proxy=environment_proxy(self.base_url)),
            follow_redirects=False,
            headers={
                "Authorization": f"apikey {api_key}",
                "Accept": MEDIA[format],
                "User-Agent": user_agent,
            },
        )

    def _gateway(self) -> str:
        """Scheme and host of the gateway (for messages: never the query string, never the key)."""
        url = httpx.URL(self.base_url)
        port = f":{url.port}" if url.port else ""
        return f"{url.scheme}://{url.host}{port}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r}, format={self._format!r})"

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def sleeping_with(self, wrap: Callable[[Callable[[float], None]], Callable[[float], None]]) -> Self:
        """Wait before a retry through ``wrap(sleep)`` (the worker's sleep, which a stop request ends)."""
        self._sleep = wrap(self._sleep)
        return self

    @property
    def pacing_rate(self) -> float:
        """Requests a second the shared token bucket allows now (cut after a 429, recovering slowly)."""
        return self._bucket.current_rate()

    def _pages(
        self,
        path: str,
        params: dict[str, str],
        parse: Callable[[Reply, Origin], tuple[list[T], int | None]],
        page_size: int = PAGE_SIZE,
    ) -> Iterator[T]:
        """Page through a list by limit/offset until ``total_record_count`` is reached or a page is empty."""
        limit = max(1, min(PAGE_SIZE, page_size))
        offset = 0
        while True:
            answer = self._exchange(self._page_request(path, params, limit, offset))
            page, total = parse(answer.reply, answer.origin)
            yield from page
            offset += len(page)
            if not page or (total is not None and offset >= total) or (total is None and len(page) < limit):
                return

    def _page_request(self, path: str, params: dict[str, str], limit: int, offset: int) -> httpx.Request:
        return self.build_request("GET", path, params={**params, "limit": str(limit), "offset": str(offset)})

    def build_request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        body: bytes | None = None,
        content_type: str | None = None,
        accept: str | None = None,
    ) -> httpx.Request:
        """The request to send (the one place its URL, query and headers are made): ``send`` it, or show it."""
        headers = {}
        if content_type:
            headers["Content-Type"] = content_type
        if accept:
            headers["Accept"] = accept
        return self._http.build_request(method, path, params=params, content=body, headers=headers)

    def _call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        body: bytes | None = None,
        content_type: str | None = None,
        accept: str | None = None,
        idempotent: bool = True,
    ) -> Answer:
        request = self.build_request(method, path, params=params, body=body, content_type=content_type, accept=accept)
        return self._exchange(request, idempotent=idempotent)

    def _exchange(self, request: httpx.Request, *, idempotent: bool = True) -> Answer:
        """Send a built request (paced, retried as its kind allows) and decode Alma's reply."""
        method, path = request.method, self._api_path(request)
        response = self._send(request, method, path, idempotent)
        origin = Origin(method, path, response.status_code)
        body = self._redacted(response.content)
        reply = decode(body, origin)
        if errors_exist(reply.tree):
            raise self._alma_error(method, path, response, errors_in(reply.tree))
        return Answer(body, reply, origin)

    def _redacted(self, body: bytes) -> bytes:
        """A reply with the key, should Alma echo it (in a set's name, an error), replaced by ``***``: every
        reply is data that reaches the database, ``hwf status``, the dashboard and notifications."""
        secret = self._secret.encode("ascii")
        if len(secret) < _SHORTEST_KEY:  # not an Alma key (those are ~36 characters): it would cut words apart
            return body
        return body.replace(secret, REDACTED_KEY.encode("ascii")) if secret in body else body

    def _api_path(self, request: httpx.Request) -> str:
        """The request's path below ``/almaws/v1``, without the query (for messages and logs)."""
        root = httpx.URL(self.base_url).path.rstrip("/")
        path = request.url.path
        return path[len(root) :] if path.startswith(root + "/") else path

    def _send(self, request: httpx.Request, method: str, path: str, idempotent: bool) -> httpx.Response:
        attempt = 0
        while True:
            self._check_floor(method, path)
            self._bucket.acquire()
            with self._lock:
                self.calls += 1
            started = time.monotonic()
            try:
                try:
                    response = send_bounded(
                        self._http,
                        request,
                        max_bytes=self._max_reply_bytes,
                        deadline=self._deadline,
                        monotonic=self._monotonic,
                    )
                finally:
                    self._bucket.release()
            except ReplyTooLarge as exc:
                raise self._too_large(method, path, idempotent, exc) from None
            except _NOT_SENT as exc:
                self._log_call(method, path, None, started, error=type(exc).__name__)
                # The connection was never made, so even a POST did not reach Alma: safe to try again.
                if attempt < self._max_retries:
                    self._pause(attempt, None, method, path, type(exc).__name__)
                    attempt += 1
                    continue
                raise self._error(
                    AlmaUnreachableError,
                    f"Alma {method} {path}: could not reach {self._gateway()} ({type(exc).__name__})"
                    f" after {attempt + 1} tries; the request was not sent",
                    method=method,
                    path=path,
                ) from exc
            except (httpx.RequestError, ReplyTooSlow) as exc:
                self._log_call(method, path, None, started, error=type(exc).__name__)
                if idempotent and attempt < self._max_retries:
                    self._pause(attempt, None, method, path, type(exc).__name__)
                    attempt += 1
                    continue
                if idempotent:
                    message = (
                        f"Alma {method} {path}: no answer from {self._gateway()} ({type(exc).__name__}) "
                        f"after {attempt + 1} tries"
                    )
                else:
                    message = f"Alma {method} {path}: {type(exc).__name__} after sending; {_UNKNOWN_OUTCOME}"
                raise self._error(AlmaUnreachableError, message, method=method, path=path) from exc
            self._note_quota(response)
            status = response.status_code
            if status < 300:
                self._log_call(method, path, status, started)
                return response
            retry = self._refused(response, method, path, idempotent, attempt, started)
            self._pause(attempt, retry[1], method, path, retry[0])
            attempt += 1

    def _refused(
        self, response: httpx.Response, method: str, path: str, idempotent: bool, attempt: int, started: float
    ) -> tuple[str, float | None]:
        """An error reply: why to try again and the ``Retry-After`` to wait first (None: back off), or the
        error raised. A ``Retry-After`` over ``MAX_RETRY_AFTER`` is never waited here (see ``_long``)."""
        status = response.status_code
        details = parse_error_body(self._redacted(response.content), response.headers.get("content-type", ""))
        first = details[0] if details else None
        code, tracking = (first.code, first.tracking_id) if first else (None, None)
        self._log_call(method, path, status, started, code=code, tracking_id=tracking)
        codes = {detail.code for detail in details}
        wait = retry_after(response)
        if status == 429:
            if "DAILY_THRESHOLD" in codes or b"DAILY_THRESHOLD" in response.content[:4096]:
                raise self._alma_error(method, path, response, details, DailyQuotaError)
            self._bucket.slow_down()
            if attempt < self._max_retries and _long(wait) is None:
                return f"429 {next(iter(codes), None) or 'rate limited'}", wait
            raise self._alma_error(
                method, path, response, details, RateLimitedError, attempts=attempt + 1, retry_after=_long(wait)
            )
        if status >= 500:
            if idempotent and attempt < self._max_retries and _long(wait) is None:
                return f"HTTP {status}", wait
            if not idempotent:
                raise self._alma_error(method, path, response, details, AlmaUnreachableError, retry_after=_long(wait))
            if _long(wait) is not None:
                raise self._alma_error(method, path, response, details, retry_after=wait)
        if codes & JOB_THRESHOLD_CODES:
            raise self._alma_error(method, path, response, details, JobThresholdError)
        raise self._alma_error(method, path, response, details)

    def _too_large(self, method: str, path: str, idempotent: bool, exc: ReplyTooLarge) -> AlmaError:
        """A reply over alma.max_reply_mb: a bad reply, or after a POST an unknown outcome (reconciled)."""
        if idempotent:
            return self._error(
                AlmaBadReplyError,
                f"Alma {method} {path}: bad reply: {exc} (alma.max_reply_mb)",
                method=method,
                path=path,
            )
        message = f"Alma {method} {path}: {exc} (alma.max_reply_mb); {_UNKNOWN_OUTCOME}"
        return self._error(AlmaUnreachableError, message, method=method, path=path)

    def _check_floor(self, method: str, path: str) -> None:
        remaining = self.remaining
        if self._floor > 0 and remaining is None and isinstance(self._bucket, SharesRemaining):
            remaining = self._bucket.shared_remaining()  # another process's reading of the same key
        if self._floor > 0 and remaining is not None and remaining < self._floor:
            raise self._error(
                DailyQuotaError,
                f"Alma daily API quota nearly spent: {remaining} calls remain, under the floor of"
                f" {self._floor} (alma.daily_call_floor); {method} {path} was not sent",
                method=method,
                path=path,
            )

    def _note_quota(self, response: httpx.Response) -> None:
        remaining = header_int(response.headers.get("x-exl-api-remaining"))
        quota = header_int(response.headers.get("x-exl-api-quota"))
        with self._lock:
            if remaining is not None:
                self.remaining = remaining
            if quota is not None:
                self.quota = quota
        if remaining is not None and isinstance(self._bucket, SharesRemaining):
            self._bucket.note_remaining(remaining)

    def _log_call(
        self,
        method: str,
        path: str,
        status: int | None,
        started: float,
        *,
        code: str | None = None,
        tracking_id: str | None = None,
        error: str | None = None,
    ) -> None:
        """One structured log line per HTTP exchange: no query string, no headers, never the key."""
        ms = round((time.monotonic() - started) * 1000, 1)
        fields: dict[str, object] = {"event": "http", "remote": "alma", "method": method, "path": path}
        fields |= {"status": status, "ms": ms}
        fields |= {"alma_code": code, "tracking_id": tracking_id, "error": error}
        _http_log.info("Alma %s %s -> %s in %.0f ms", method, path, status or error, ms, extra={"hwf": fields})

    def _pause(self, attempt: int, retry_after: float | None, method: str, path: str, why: str) -> None:
        if retry_after is None:
            delay = backoff_delay(attempt, self._jitter())
        else:
            delay = min(retry_after, MAX_RETRY_AFTER)  # a longer one is never waited here (see _long)
        _log.info(
            "Alma %s %s: %s; retry %d of %d in %.1f s",
            method,
            path,
            why,
            attempt + 1,
            self._max_retries,
            delay,
        )
        self._sleep(delay)

    def _alma_error(
        self,
        method: str,
        path: str,
        response: httpx.Response,
        details: list[ErrorDetail],
        cls: type[AlmaError] = AlmaError,
        attempts: int = 1,
        retry_after: float | None = None,
    ) -> AlmaError:
        status = response.status_code
        first = details[0] if details else ErrorDetail(None, None, None)
        described = "; ".join(" ".join(p for p in (d.code, d.message) if p) for d in details if d.code or d.message)
        message = f"Alma {method} {path}: {status} {described or response.reason_phrase or 'error'}"
        if first.tracking_id:
            message += f" (tracking {first.tracking_id})"
        codes = {d.code for d in details}
        if "UNAUTHORIZED" in codes:
            message += _HINTS["UNAUTHORIZED"]
        elif status in (401, 403) and not details:
            message += _HINTS[str(status)]
        elif cls in _HINTS:
            message += _HINTS[cls].format(attempts=attempts)
        if retry_after is not None:
            message += f"; Alma asks to wait {retry_after:.0f} s (Retry-After), longer than hwf waits in place"
        return self._error(
            cls,
            message,
            status=status,
            code=first.code,
            alma_message="; ".join(d.message for d in details if d.message) or None,
            tracking_id=first.tracking_id,
            method=method,
            path=path,
            retry_after=retry_after,
        )

    def _error(
        self,
        cls: type[AlmaError],
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        alma_message: str | None = None,
        tracking_id: str | None = None,
        method: str | None = None,
        path: str | None = None,
        retry_after: float | None = None,
    ) -> AlmaError:
        """Build an exception whose text is one line and can never carry the API key."""
        return cls(
            one_line(message).replace(self._secret, "***"),
            status=status,
            code=code,
            alma_message=alma_message.replace(self._secret, "***") if alma_message else None,
            tracking_id=tracking_id,
            method=method,
            path=path,
            retry_after=retry_after,
        )
