"""The handle verifier: asks a handle proxy's JSON API for many handles with bounded concurrency, a
kept-alive connection per worker thread, the shared pacing of :mod:`orchestrator.pacing` and retries, and
streams the results. What one reply means is :mod:`orchestrator.resolver.replies`; the rules it applies
(handle syntax, verdicts) are in :mod:`orchestrator.domain.handles`.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections.abc import Callable, Generator, Iterable
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import quote, urljoin

import httpx

from orchestrator.bounded import MB, ReplyTooLarge, ReplyTooSlow, send_bounded
from orchestrator.config import PrimoConfig
from orchestrator.domain.handles import (
    Verdict,
    expected_url,
    normalise_url,
    parse_handle,
)
from orchestrator.pacing import TokenBucket, backoff_delay, retry_after
from orchestrator.resolver.replies import (
    REDIRECT_STATUSES,
    Answer,
    Refused,
    Transient,
    is_proxy_hop,
    read_reply,
    stale_answer,
)
from orchestrator.resolver.results import VerifyItem, VerifyResult, VerifyStats
from orchestrator.transport import KeepAliveTransport, environment_proxy

_http_log = logging.getLogger("orchestrator.http")

_T = TypeVar("_T")

MAX_RETRY_AFTER = 600.0


# --------------------------------------------------------------------------------------------
# Verifier


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
        max_reply_bytes: int = MB,
        deadline: float | None = None,
        check_public: bool = True,
        authoritative: bool = False,
        now: Callable[[], datetime] | None = None,
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
        # Each reply is read as a stream, at most max_reply_bytes, whole within ``deadline`` seconds.
        self._check_public = check_public
        # Which server is asked first (see ``_check``): the public proxy (one request for a handle that is
        # right), or with ``authoritative`` the primary server for every handle. Settable before ``verify``.
        self.authoritative = authoritative
        self._now = now or (lambda: datetime.now(UTC))  # when a check happened and a cached value expires
        self._max_reply_bytes = max_reply_bytes
        self._deadline = deadline if deadline is not None else 4 * timeout
        self._limiter = TokenBucket(requests_per_second, clock, sleep, pacing=1.0)
        # After this many transient failures in a row (across workers) every worker pauses for
        # backoff_cap: an outage should cost a pause, not thousands of ERROR rows.
        self._circuit_threshold = circuit_threshold or max(5, 2 * concurrency)
        self._consecutive_transient = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()  # set when a verify() ends: workers give up their retries
        self.stats = VerifyStats()
        # The verifier's own transport (orchestrator.transport): a kept-alive connection per worker thread,
        # no pool lock, http.client's parser. Through a proxy from the environment: httpx's own transport.
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        self._keepalive: KeepAliveTransport | None = None
        if transport is None:
            proxy = environment_proxy(self._resolver)
            if proxy is None:
                transport = self._keepalive = KeepAliveTransport()
            else:
                transport = httpx.HTTPTransport(proxy=proxy, limits=limits)
        self._http = httpx.Client(
            transport=transport,
            limits=limits,
            timeout=timeout,
            headers={"User-Agent": user_agent},
            follow_redirects=False,
        )
        # The API request's headers and timeout, merged once: built per handle with the client's own defaults
        # (what ``build_request`` would merge), it cost more CPU than the rest of the request together.
        self._api_headers = httpx.Headers(self._http.headers)
        self._api_headers["Accept"] = "application/json"
        self._api_extensions = {"timeout": self._http.timeout.as_dict()}

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> Verifier:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections (the worker threads of a ``verify`` end with it)."""
        self._http.close()

    # -- the stream --------------------------------------------------------------------------

    def verify(
        self, items: Iterable[VerifyItem], on_result: Callable[[VerifyResult], None] | None = None
    ) -> Generator[VerifyResult, None, None]:
        """Check every item; yield results as they complete (not in input order).

        ``items`` is consumed lazily with at most ``2 * concurrency`` checks in flight, so memory
        stays flat for any input size. ``on_result`` runs in the caller's thread before each yield.
        Closing the generator early drops the queued checks and waits for the running ones.
        """
        window = 2 * self._concurrency
        # Worker threads of this call take items from one queue and hand results back through another: no
        # future, condition or callback per item (all of it CPU under the one interpreter lock), and the
        # caller's thread sleeps on one queue alone.
        todo: queue.SimpleQueue[VerifyItem | None] = queue.SimpleQueue()
        done: queue.SimpleQueue[VerifyResult] = queue.SimpleQueue()
        stopping = self._stopping
        stopping.clear()
        workers: list[threading.Thread] = []

        def work() -> None:
            try:
                while (item := todo.get()) is not None:
                    if not stopping.is_set():
                        done.put(self._check_safely(item))
            finally:
                if self._keepalive is not None:
                    self._keepalive.close_thread()  # this thread's kept-alive connections end with it

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
                        continue
                    if len(workers) < min(self._concurrency, in_flight + 1):
                        worker = threading.Thread(target=work, name=f"hwf-verify-{len(workers) + 1}", daemon=True)
                        worker.start()
                        workers.append(worker)
                    todo.put(item)
                    in_flight += 1
                if not in_flight:
                    return
                result = done.get()
                in_flight -= 1
                yield self._deliver(result, on_result)
        finally:
            # The end, or the caller stopped early (or an error): queued checks are dropped, running ones end.
            stopping.set()
            for _ in workers:
                todo.put(None)
            for worker in workers:
                worker.join()

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
        stale_until: datetime | None = None,
    ) -> VerifyResult:
        return VerifyResult(
            mms_id=item.mms_id,
            handle=handle if handle is not None else item.handle,
            verdict=verdict,
            resolved_url=url,
            expected_url=expected_url(self._primo, item.mms_id),
            detail=detail,
            attempts=attempts,
            checked_at=self._now(),
            redirect_ok=redirect_ok,
            stale_until=stale_until,
        )

    def _check_safely(self, item: VerifyItem) -> VerifyResult:
        try:
            return self._check(item)
        except Refused as exc:
            return self._result(item, Verdict.ERROR, detail=f"the proxy's reply was refused: {exc}", attempts=1)
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

        answer, attempts, reason = self._answer(handle, item.mms_id, expected)
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
            stale_until=answer.expires,
        )

    def _answer(self, handle: str, mms_id: str, expected: str) -> tuple[Answer | None, int, str | None]:
        """The verdict of one handle, its requests and (when it gave up) why.

        By default the public proxy is asked first: what a patron's browser sees. A handle it answers with
        its own record's URL is OK after one request. Otherwise the primary server is asked (``auth=true``,
        past the proxy's cache): right there, the handle is STALE_CACHE until the cached value expires;
        wrong there, the primary's verdict stands. With ``authoritative`` the primary is asked first for every
        handle (and the public proxy after it for a handle that is right); with ``check_public`` off only the
        primary is asked."""
        if self.authoritative or not self._check_public:
            answer, attempts, reason = self._retrying(lambda: self._ask_api(handle, mms_id, expected))
            if answer is not None and answer.verdict is Verdict.OK and self._check_public:
                answer, more = self._public_view(handle, mms_id, expected, answer)
                attempts += more
            return answer, attempts, reason
        public, attempts, why = self._retrying(lambda: self._ask_api(handle, mms_id, expected, authoritative=False))
        if public is not None and public.verdict is Verdict.OK:
            return public, attempts, None
        primary, more, reason = self._retrying(lambda: self._ask_api(handle, mms_id, expected))
        attempts += more
        if primary is None or primary.verdict is not Verdict.OK:
            return primary, attempts, reason
        if public is None:
            return Answer(Verdict.OK, url=primary.url, detail=f"public proxy not checked: {why}"), attempts, None
        return stale_answer(primary, public, self._now()), attempts, None

    def _public_view(self, handle: str, mms_id: str, expected: str, primary: Answer) -> tuple[Answer, int]:
        """With ``authoritative``, the primary server has the right URL: ask what the public proxy (its cache)
        answers. Only asked when the authoritative answer is OK (a wrong handle needs no second request), so a
        handle costs two requests when right and one otherwise. A public answer that differs gives
        STALE_CACHE with the time the cached value expires; a public proxy that does not answer leaves
        the verdict OK (the primary is what registration is about) with a note."""
        public, attempts, reason = self._retrying(lambda: self._ask_api(handle, mms_id, expected, authoritative=False))
        if public is None:
            return Answer(Verdict.OK, url=primary.url, detail=f"public proxy not checked: {reason}"), attempts
        if public.verdict is Verdict.OK:
            return primary, attempts
        return stale_answer(primary, public, self._now()), attempts

    def _retrying(self, once: Callable[[], _T]) -> tuple[_T | None, int, str | None]:
        """Run ``once`` until it returns or raises _Transient ``retries + 1`` times."""
        attempt = 0
        while True:
            attempt += 1
            self._limiter.acquire()
            self._count(requests=1)
            try:
                value = once()
            except Transient as failure:
                self._note_transient()
                if attempt > self._retries or self._stopping.is_set():
                    # Out of retries, or the run is ending (Ctrl-C, the caller stopped): no more waiting on
                    # this one; a stopped run's result is dropped, never stored.
                    return None, attempt, failure.reason
                self._count(retries=1)
                if failure.retry_after is not None:
                    delay = min(failure.retry_after, MAX_RETRY_AFTER)
                    self._limiter.hold(delay)
                else:
                    delay = self._backoff(attempt)
                self._sleep(delay)
                if self._stopping.is_set():
                    return None, attempt, failure.reason
                continue
            with self._lock:
                self._consecutive_transient = 0
            return value, attempt, None

    def _backoff(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2**(attempt-1))]."""
        return backoff_delay(attempt - 1, self._rng.random(), base=self._backoff_base, cap=self._backoff_cap)

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
        return self._send(self._http.build_request("GET", url), **kwargs)

    def _send(self, request: httpx.Request, *, follow_redirects: bool = False) -> httpx.Response:
        started = time.monotonic()
        try:
            response = send_bounded(
                self._http,
                request,
                max_bytes=self._max_reply_bytes,
                deadline=self._deadline,
                follow_redirects=follow_redirects,
            )
        except ReplyTooLarge as exc:
            # A handle's reply is a few hundred bytes: a huge one is a broken proxy, not worth retrying.
            _log_call(request, None, started, "ReplyTooLarge")
            raise Refused(f"{exc} (handles.max_reply_kb)") from None
        except ReplyTooSlow as exc:
            _log_call(request, None, started, "ReplyTooSlow")
            raise Transient(f"{exc} (handles.deadline_seconds)") from None
        except httpx.TimeoutException as exc:
            _log_call(request, None, started, type(exc).__name__)
            raise Transient(f"timeout ({type(exc).__name__})") from None
        except httpx.UnsupportedProtocol:
            raise
        except (httpx.TransportError, httpx.DecodingError) as exc:
            _log_call(request, None, started, type(exc).__name__)
            raise Transient(f"connection error ({type(exc).__name__}: {exc})") from None
        _log_call(request, response.status_code, started)
        return response

    def api_request(self, handle: str, *, authoritative: bool = True) -> httpx.Request:
        """The request that asks the proxy's JSON API for a handle's URL value (sent by a check, shown by
        ``--dry-run``). ``authoritative``: ``auth=true``, the proxy bypasses its cache and asks the primary
        handle server; without it, the answer is what the public gets (possibly from the proxy's cache)."""
        query = "type=URL&auth=true" if authoritative else "type=URL"
        url = f"{self._resolver}/api/handles/{quote(handle, safe='/')}?{query}"
        return httpx.Request("GET", url, headers=self._api_headers, extensions=dict(self._api_extensions))

    def _ask_api(self, handle: str, mms_id: str, expected: str, *, authoritative: bool = True) -> Answer:
        # The API never redirects by itself; following is only for an http->https hop in front.
        resp = self._send(self.api_request(handle, authoritative=authoritative), follow_redirects=True)
        return read_reply(resp, mms_id, expected, self._primo)

    def _follow_redirect(self, handle: str, expected: str) -> tuple[bool, str | None, int]:
        """GET the proxy's user-facing URL without following: (Location is expected, what was seen,
        extra requests made for proxy hops such as http -> https)."""
        url = f"{self._resolver}/{quote(handle, safe='/')}"
        for hop in range(3):
            if hop:
                self._limiter.acquire()
                self._count(requests=1)
            resp = self._get(url, follow_redirects=False)
            status = resp.status_code
            if status == 429 or status >= 500:
                raise Transient(f"redirect check: HTTP {status}", retry_after(resp))
            if status not in REDIRECT_STATUSES:
                return False, f"answers HTTP {status} instead of a redirect", hop
            location = resp.headers.get("Location")
            if not location:
                return False, f"answers HTTP {status} without a Location", hop
            target = urljoin(url, location.strip())
            if normalise_url(target) == normalise_url(expected):
                return True, None, hop
            if is_proxy_hop(url, target):
                url = target
                continue
            return False, f"redirects ({status}) to {location.strip()}", hop
        return False, "redirects in a loop on the proxy", 2


def _log_call(request: httpx.Request, status: int | None, started: float, error: str | None = None) -> None:
    """One structured log line per HTTP exchange with the handle proxy (path only, no query)."""
    ms = round((time.monotonic() - started) * 1000, 1)
    path = request.url.path
    fields: dict[str, object] = {"event": "http", "remote": "resolver", "method": request.method, "path": path}
    fields["status"] = status
    fields |= {"ms": ms, "error": error}
    _http_log.info("resolver %s %s -> %s in %.0f ms", request.method, path, status or error, ms, extra={"hwf": fields})
