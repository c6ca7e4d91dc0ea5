"""Tests for orchestrator.resolver: the concurrent Verifier (handle syntax and URL verdicts are in
tests/domain/test_handles.py, the rate gate in tests/test_pacing.py).

The handle proxy is faked with httpx.MockTransport handlers shaped like the HANDLE.NET JSON API
(`GET /api/handles/{handle}?type=URL`: responseCode 1 with values, 100 not registered, 200 no
value); the rows come from Grinnell's 2 Feb 2026 validation run.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

import httpx
import pytest

from orchestrator.config import PrimoConfig
from orchestrator.domain.handles import Verdict
from orchestrator.resolver import Verifier, VerifyItem, VerifyResult

PRIMO = PrimoConfig(domain="grinnell.primo.exlibrisgroup.com", view="01GCL_INST:GCL")
RESOLVER = "https://hdl.test"
Values = list[dict[str, object]]


def url_value(url: str, index: int = 1, type_: str = "URL") -> dict[str, object]:
    return {
        "index": index,
        "type": type_,
        "data": {"format": "string", "value": url},
        "ttl": 86400,
        "timestamp": "2025-05-08T18:21:24Z",
    }


ADMIN = {
    "index": 100,
    "type": "HS_ADMIN",
    "data": {
        "format": "admin",
        "value": {"handle": "0.NA/11084", "index": 200, "permissions": "011111110011"},
    },
}


class FakeProxy:
    """A thread-safe fake of hdl.handle.net: /api/handles/{h}?type=URL and /{h} (302)."""

    def __init__(self, records: dict[str, Values], *, delay: float = 0.0) -> None:
        self.records = records
        self.delay = delay
        self.lock = threading.Lock()
        self.calls: Counter[str] = Counter()
        self.in_flight = 0
        self.max_in_flight = 0
        self.requests: list[httpx.Request] = []
        self.faults: dict[str, list[Callable[[], httpx.Response]]] = {}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        with self.lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            if len(self.requests) < 50:
                self.requests.append(request)
        try:
            if self.delay:
                time.sleep(self.delay)
            return self.answer(request)
        finally:
            with self.lock:
                self.in_flight -= 1

    def answer(self, request: httpx.Request) -> httpx.Response:
        raw_path = request.url.raw_path.split(b"?", 1)[0].decode("ascii")
        api = raw_path.startswith("/api/handles/")
        handle = unquote(raw_path[len("/api/handles/") :] if api else raw_path[1:])
        key = f"{'api' if api else 'web'}:{handle}"
        with self.lock:
            self.calls[key] += 1
            queue = self.faults.get(key) or self.faults.get(handle)
            fault = queue.pop(0) if queue else None
        if fault is not None:
            return fault()
        if api:
            return self.api(handle, request)
        return self.web(handle)

    def api(self, handle: str, request: httpx.Request) -> httpx.Response:
        if not handle:
            return httpx.Response(400, json={"responseCode": 102, "message": "Empty handle invalid"})
        if handle not in self.records:
            return httpx.Response(404, json={"responseCode": 100, "handle": handle})
        values = self.records[handle]
        wanted = request.url.params.get_list("type")
        if wanted:
            values = [v for v in values if str(v["type"]).upper() in {w.upper() for w in wanted}]
        if not values:
            return httpx.Response(200, json={"responseCode": 200, "handle": handle, "values": []})
        return httpx.Response(200, json={"responseCode": 1, "handle": handle, "values": values})

    def web(self, handle: str) -> httpx.Response:
        values = self.records.get(handle)
        if values is None:
            return httpx.Response(404, html="<html><body>Handle Not Found</body></html>")
        urls = [v for v in values if str(v["type"]).upper() == "URL"]
        if not urls:
            return httpx.Response(200, html="<html>values page</html>")
        data = urls[0]["data"]
        assert isinstance(data, dict)
        return httpx.Response(302, headers={"Location": data["value"]}, html="<HTML>Handle Redirect</HTML>")


class Sleeps:
    """An injected sleep that records and returns at once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        with self.lock:
            self.calls.append(seconds)


def make_verifier(proxy: Callable[[httpx.Request], httpx.Response], **kwargs: object) -> Verifier:
    # The public-cache check (a second request per OK handle) has its own tests (test_resolver_stale_cache.py).
    options: dict[str, object] = {
        "requests_per_second": None,
        "sleep": Sleeps(),
        "concurrency": 4,
        "check_public": False,
    }
    options.update(kwargs)
    return Verifier(RESOLVER, PRIMO, transport=httpx.MockTransport(proxy), **options)  # type: ignore[arg-type]


def by_mms(results: Iterator[VerifyResult] | list[VerifyResult]) -> dict[str, VerifyResult]:
    return {r.mms_id: r for r in results}


# ---------------------------------------------------------------------------------------------
# URL verdicts

MMS = "991011591572804641"
EXPECTED = "https://grinnell.primo.exlibrisgroup.com/discovery/fulldisplay/alma991011591572804641/01GCL_INST:GCL"


def test_verifier_rate_cap_is_shared_by_all_workers() -> None:
    records = {f"11084/{n}": [url_value(PRIMO.record_url(str(n)))] for n in range(40)}
    proxy = FakeProxy(records)
    started = time.monotonic()
    with make_verifier(proxy, requests_per_second=100.0, sleep=time.sleep, concurrency=8) as verifier:
        results = list(verifier.verify(VerifyItem(str(n), f"11084/{n}") for n in range(40)))
    elapsed = time.monotonic() - started
    assert {r.verdict for r in results} == {Verdict.OK}
    assert elapsed >= 0.38  # 39 gaps of 10 ms, however many workers


# ---------------------------------------------------------------------------------------------
# Verifier verdicts

GRINNELL = {
    # mms -> handle, taken from the 2 Feb 2026 validation CSV
    "991011546573204641": "11084/14259",  # OK
    "991011591572804641": "11084/11789",  # wrong record
    "991011718398504641": "11084/1768421720",  # 404, Alma-minted, never registered
    "991011588277504641": "11084/19974",  # timed out once
}


def grinnell_records() -> dict[str, Values]:
    return {
        "11084/14259": [url_value(PRIMO.record_url("991011546573204641")), ADMIN],
        "11084/11789": [url_value(PRIMO.record_url("991011591572104641")), ADMIN],
        "11084/19974": [url_value(PRIMO.record_url("991011588277504641"))],
        "11084/88": [url_value("https://digital.grinnell.edu/islandora/object/grinnell:88")],
        "11084/99": [ADMIN, url_value("mailto:x@example.org", type_="EMAIL")],
    }


def test_every_verdict() -> None:
    proxy = FakeProxy(grinnell_records())
    proxy.faults["11084/19974"] = [lambda: (_ for _ in ()).throw(httpx.ReadTimeout("slow"))]
    proxy.faults["11084/bad"] = [lambda: httpx.Response(400, json={"responseCode": 102, "message": "Invalid handle"})]
    proxy.faults["11084/rc1"] = [lambda: httpx.Response(200, json={"responseCode": 1, "values": [ADMIN]})]
    down = [lambda: httpx.Response(503, json={"responseCode": 3})] * 10
    proxy.faults["11084/down"] = list(down)
    items = [VerifyItem(mms, handle) for mms, handle in GRINNELL.items()] + [
        VerifyItem("991000000000000088", "http://hdl.handle.net/11084/88"),
        VerifyItem("991000000000000099", "11084/99"),
        VerifyItem("991000000000000100", "11084/rc1"),
        VerifyItem("991000000000000101", "11084/bad"),
        VerifyItem("991000000000000102", "http://hdl.handle.net/11084/5/"),
        VerifyItem("991000000000000103", None),
        VerifyItem("991000000000000104", "11084/down"),
    ]
    with make_verifier(proxy, retries=2) as verifier:
        results = by_mms(verifier.verify(items))
        stats = verifier.stats
    verdicts = {mms: r.verdict for mms, r in results.items()}
    assert verdicts == {
        "991011546573204641": Verdict.OK,
        "991011591572804641": Verdict.WRONG_RECORD,
        "991011718398504641": Verdict.NOT_REGISTERED,
        "991011588277504641": Verdict.OK,
        "991000000000000088": Verdict.WRONG_TARGET,
        "991000000000000099": Verdict.NO_URL,
        "991000000000000100": Verdict.NO_URL,
        "991000000000000101": Verdict.BAD_HANDLE,
        "991000000000000102": Verdict.BAD_HANDLE,
        "991000000000000103": Verdict.NO_HANDLE,
        "991000000000000104": Verdict.ERROR,
    }
    ok = results["991011546573204641"]
    assert ok.resolved_url == ok.expected_url == PRIMO.record_url("991011546573204641")
    assert ok.attempts == 1 and ok.detail is None and ok.handle == "11084/14259"
    assert ok.checked_at.tzinfo is not None
    wrong = results["991011591572804641"]
    assert wrong.detail is not None and "alma991011591572104641" in wrong.detail
    assert results["991011588277504641"].attempts == 2
    assert results["991000000000000088"].handle == "11084/88"  # URL form normalised
    assert results["991000000000000102"].attempts == 0 and results["991000000000000102"].detail == "trailing slash"
    assert results["991000000000000103"].attempts == 0
    assert proxy.calls["api:11084/5/"] == 0 and proxy.calls["api:11084/5"] == 0
    error = results["991000000000000104"]
    assert error.attempts == 3 and error.detail == "gave up after 3 attempts: HTTP 503, responseCode 3"
    assert stats.items == 11
    assert stats.verdicts[Verdict.OK] == 2 and stats.verdicts[Verdict.ERROR] == 1
    assert stats.requests == sum(proxy.calls.values())
    assert stats.retries == 1 + 2
    assert stats.as_dict()["verdicts"]["NO_URL"] == 2


def test_request_shape() -> None:
    proxy = FakeProxy({"11084/a#b?c_ü": [url_value(PRIMO.record_url("1"))]})
    with make_verifier(proxy, user_agent="hwf-test/1 (ops@example.org)") as verifier:
        # A bare handle with odd characters is quoted into the path, never into the query.
        (result,) = verifier.verify([VerifyItem("1", "11084/a#b?c_ü")])
    request = proxy.requests[0]
    assert request.method == "GET"
    assert request.url.raw_path == b"/api/handles/11084/a%23b%3Fc_%C3%BC?type=URL&auth=true"
    assert request.headers["Accept"] == "application/json"
    assert request.headers["User-Agent"] == "hwf-test/1 (ops@example.org)"
    assert result.verdict is Verdict.OK


@pytest.mark.parametrize(
    ("values", "verdict"),
    [
        ([url_value(EXPECTED), url_value(EXPECTED.replace("2804641", "2104641"), index=2)], Verdict.OK),
        (
            [url_value(EXPECTED.replace("2804641", "2104641")), url_value(EXPECTED, index=2)],
            Verdict.WRONG_RECORD,
        ),
        ([ADMIN, url_value(EXPECTED, index=2, type_="url")], Verdict.OK),
        (
            [url_value("https://elsewhere.example/x", type_="URL.alt"), url_value(EXPECTED, index=2)],
            Verdict.OK,
        ),
        (
            [{"index": 1, "type": "URL", "data": {"format": "base64", "value": "aHR0cHM6Ly94LmV4YW1wbGUv"}}],
            Verdict.WRONG_TARGET,
        ),
        ([{"index": 1, "type": "URL", "data": {"format": "admin", "value": {}}}], Verdict.NO_URL),
    ],
)
def test_first_url_value_wins(values: Values, verdict: Verdict) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"responseCode": 1, "handle": "11084/11789", "values": values})

    with make_verifier(handler) as verifier:
        (result,) = verifier.verify([VerifyItem(MMS, "11084/11789")])
    assert result.verdict is verdict


@pytest.mark.parametrize(
    ("response", "verdict", "detail"),
    [
        (httpx.Response(404, json={"responseCode": 100, "handle": "11084/1"}), Verdict.NOT_REGISTERED, None),
        (httpx.Response(404, html="<html>Not Found</html>"), Verdict.ERROR, "HTTP 404 without a handle JSON"),
        (
            httpx.Response(400, json={"responseCode": 102, "message": "Bad"}),
            Verdict.BAD_HANDLE,
            "invalid: Bad",
        ),
        (httpx.Response(400, json={"responseCode": 4}), Verdict.ERROR, "HTTP 400, responseCode 4"),
        (httpx.Response(403, json={"responseCode": 401}), Verdict.ERROR, "HTTP 403"),
        (httpx.Response(200, json={"responseCode": 200, "values": []}), Verdict.NO_URL, "responseCode 200"),
        (httpx.Response(200, json={"responseCode": 1, "values": []}), Verdict.NO_URL, "no URL value"),
        (httpx.Response(200, json={"responseCode": 301}), Verdict.ERROR, "unexpected reply"),
    ],
)
def test_final_answers_are_never_retried(response: httpx.Response, verdict: Verdict, detail: str | None) -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return response

    sleeps = Sleeps()
    with make_verifier(handler, sleep=sleeps) as verifier:
        (result,) = verifier.verify([VerifyItem("1", "11084/1")])
    assert result.verdict is verdict
    assert (detail is None and result.detail is None) or (detail is not None and detail in (result.detail or ""))
    assert len(calls) == 1 and result.attempts == 1 and sleeps.calls == []


# ---------------------------------------------------------------------------------------------
# Transient failures


def transient_failures() -> list[Callable[[], httpx.Response]]:
    def raise_(exc: Exception) -> Callable[[], httpx.Response]:
        def fail() -> httpx.Response:
            raise exc

        return fail

    return [
        lambda: httpx.Response(503, text="Service Unavailable"),
        lambda: httpx.Response(502, html="<html>Bad Gateway</html>"),
        lambda: httpx.Response(500, json={"responseCode": 2}),
        lambda: httpx.Response(429, text="slow down"),
        lambda: httpx.Response(200, json={"responseCode": 3, "handle": "x"}),
        lambda: httpx.Response(200, json={"responseCode": 7, "handle": "x"}),
        lambda: httpx.Response(200, html="<html><body>Cloudflare says hi</body></html>"),
        lambda: httpx.Response(200, content=b'{"responseCode": 1, "values": ['),
        raise_(httpx.ReadTimeout("read timed out")),
        raise_(httpx.ConnectTimeout("connect timed out")),
        raise_(httpx.ConnectError("connection refused")),
        raise_(httpx.RemoteProtocolError("peer closed connection")),
    ]


def test_two_percent_transient_failures_end_with_zero_errors() -> None:
    n = 1000
    records = {f"11084/{i}": [url_value(PRIMO.record_url(f"99{i}"))] for i in range(n)}
    proxy = FakeProxy(records)
    kinds = transient_failures()
    failing = [i for i in range(n) if i % 50 == 7]  # 2 %
    for k, i in enumerate(failing):
        proxy.faults[f"api:11084/{i}"] = (
            [kinds[k % len(kinds)], kinds[(k + 1) % len(kinds)]] if k < 5 else [kinds[k % len(kinds)]]
        )
    sleeps = Sleeps()
    with make_verifier(proxy, sleep=sleeps, concurrency=8) as verifier:
        results = list(verifier.verify(VerifyItem(f"99{i}", f"11084/{i}") for i in range(n)))
        stats = verifier.stats
    assert len(results) == n
    assert Counter(r.verdict for r in results) == {Verdict.OK: n}
    assert stats.retries == len(failing) + 5
    assert stats.requests == n + len(failing) + 5
    assert {r.attempts for r in results} == {1, 2, 3}
    assert all(0.0 <= s <= 30.0 for s in sleeps.calls)


def test_retry_after_is_honoured() -> None:
    proxy = FakeProxy({"11084/1": [url_value(PRIMO.record_url("1"))]})
    proxy.faults["api:11084/1"] = [lambda: httpx.Response(429, headers={"Retry-After": "7"}, text="Too Many")]
    sleeps = Sleeps()
    with make_verifier(proxy, sleep=sleeps, concurrency=1) as verifier:
        (result,) = verifier.verify([VerifyItem("1", "11084/1")])
    assert result.verdict is Verdict.OK and result.attempts == 2
    assert sleeps.calls and sleeps.calls[0] == 7.0
    # the hold applies to every worker: the next request start is paced behind it
    assert all(s <= 7.0 for s in sleeps.calls)


def test_backoff_is_exponential_full_jitter_and_capped() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503)

    sleeps = Sleeps()
    with make_verifier(
        handler, sleep=sleeps, retries=6, backoff_base=1.0, backoff_cap=4.0, circuit_threshold=100
    ) as verifier:
        (result,) = verifier.verify([VerifyItem("1", "11084/1")])
    assert result.verdict is Verdict.ERROR and result.attempts == 7
    assert result.detail == "gave up after 7 attempts: HTTP 503"
    bounds = [1.0, 2.0, 4.0, 4.0, 4.0, 4.0]
    assert len(sleeps.calls) == 6
    assert all(0.0 <= s <= b for s, b in zip(sleeps.calls, bounds, strict=True))


def test_html_garbage_is_retried_then_error() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(200, html="<!DOCTYPE html><html><body>maintenance</body></html>")

    with make_verifier(handler, retries=3) as verifier:
        (result,) = verifier.verify([VerifyItem("1", "11084/1")])
    assert result.verdict is Verdict.ERROR
    assert len(calls) == 4 and result.attempts == 4
    assert result.detail == "gave up after 4 attempts: the reply is not JSON (HTML or garbage)"


def test_circuit_breaker_pauses_every_worker() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503)

    sleeps = Sleeps()
    with make_verifier(handler, sleep=sleeps, retries=2, concurrency=2, circuit_threshold=3) as verifier:
        results = list(verifier.verify(VerifyItem(str(i), f"11084/{i}") for i in range(6)))
        pauses = verifier.stats.circuit_pauses
    assert {r.verdict for r in results} == {Verdict.ERROR}
    assert pauses >= 1
    assert any(s > 25.0 for s in sleeps.calls)  # a backoff_cap (30 s) hold was waited out


def test_exception_in_a_worker_becomes_an_error_result() -> None:
    proxy = FakeProxy({f"11084/{i}": [url_value(PRIMO.record_url(str(i)))] for i in range(5)})

    def broken() -> httpx.Response:
        raise RuntimeError("handler bug")

    proxy.faults["api:11084/3"] = [broken]
    with make_verifier(proxy) as verifier:
        results = by_mms(verifier.verify(VerifyItem(str(i), f"11084/{i}") for i in range(5)))
    assert results["3"].verdict is Verdict.ERROR
    assert results["3"].detail == "internal error: RuntimeError: handler bug"
    assert [results[str(i)].verdict for i in (0, 1, 2, 4)] == [Verdict.OK] * 4


# ---------------------------------------------------------------------------------------------
# Follow mode


def test_follow_checks_the_redirect_location() -> None:
    records = {
        "11084/14259": [url_value(PRIMO.record_url("991011546573204641"))],
        "11084/11789": [url_value(PRIMO.record_url("991011591572104641"))],
        "11084/1": [url_value(PRIMO.record_url("1"))],
        "11084/2": [url_value(PRIMO.record_url("2"))],
        "11084/3": [url_value(PRIMO.record_url("3"))],
    }
    proxy = FakeProxy(records)
    # 11084/1: the proxy's cache still sends users to the legacy repository
    proxy.faults["web:11084/1"] = [
        lambda: httpx.Response(302, headers={"Location": "https://digital.grinnell.edu/islandora/object/grinnell:1"})
    ]
    # 11084/2: an http->https hop on the proxy, then the real redirect
    proxy.faults["web:11084/2"] = [lambda: httpx.Response(301, headers={"Location": "http://hdl.test/11084/2"})]
    # 11084/3: the proxy shows a page instead of redirecting
    proxy.faults["web:11084/3"] = [lambda: httpx.Response(200, html="<html>values</html>")]
    items = [
        VerifyItem("991011546573204641", "11084/14259"),
        VerifyItem("991011591572804641", "11084/11789"),
        VerifyItem("1", "11084/1"),
        VerifyItem("2", "11084/2"),
        VerifyItem("3", "11084/3"),
        VerifyItem("4", "11084/4"),
    ]
    with make_verifier(proxy, follow=True) as verifier:
        results = by_mms(verifier.verify(items))
    ok = results["991011546573204641"]
    assert (ok.verdict, ok.redirect_ok, ok.attempts) == (Verdict.OK, True, 2)
    wrong = results["991011591572804641"]
    assert (wrong.verdict, wrong.redirect_ok) == (Verdict.WRONG_RECORD, False)
    stale = results["1"]
    assert (stale.verdict, stale.redirect_ok) == (Verdict.WRONG_TARGET, False)
    assert stale.detail is not None and "islandora/object/grinnell:1" in stale.detail
    assert stale.resolved_url == PRIMO.record_url("1")
    hop = results["2"]
    assert (hop.verdict, hop.redirect_ok, hop.attempts) == (Verdict.OK, True, 3)
    page = results["3"]
    assert (page.verdict, page.redirect_ok) == (Verdict.WRONG_TARGET, False)
    assert page.detail is not None and "HTTP 200 instead of a redirect" in page.detail
    unregistered = results["4"]
    assert (unregistered.verdict, unregistered.redirect_ok) == (Verdict.NOT_REGISTERED, None)
    assert proxy.calls["web:11084/4"] == 0


def test_follow_off_makes_no_redirect_requests() -> None:
    proxy = FakeProxy({"11084/1": [url_value(PRIMO.record_url("1"))]})
    with make_verifier(proxy) as verifier:
        (result,) = verifier.verify([VerifyItem("1", "11084/1")])
    assert result.redirect_ok is None and proxy.calls["web:11084/1"] == 0


# ---------------------------------------------------------------------------------------------
# Concurrency and streaming


def test_concurrency_bound_is_respected() -> None:
    records = {f"11084/{i}": [url_value(PRIMO.record_url(str(i)))] for i in range(60)}
    proxy = FakeProxy(records, delay=0.005)
    with make_verifier(proxy, concurrency=3) as verifier:
        results = list(verifier.verify(VerifyItem(str(i), f"11084/{i}") for i in range(60)))
    assert len(results) == 60
    assert 1 < proxy.max_in_flight <= 3


def test_results_stream_and_input_is_consumed_lazily() -> None:
    n = 20_000
    consumed = 0
    concurrency = 4

    def items() -> Iterator[VerifyItem]:
        nonlocal consumed
        for i in range(n):
            consumed += 1
            yield VerifyItem(str(i), f"11084/{i}" if i % 1000 else None)

    def handler(request: httpx.Request) -> httpx.Response:
        handle = unquote(request.url.raw_path.split(b"?")[0].decode()[len("/api/handles/") :])
        mms = handle.split("/")[1]
        body = {"responseCode": 1, "handle": handle, "values": [url_value(PRIMO.record_url(mms))]}
        return httpx.Response(200, content=json.dumps(body).encode(), headers={"Content-Type": "application/json"})

    seen: list[int] = []
    callback_threads = set()

    def on_result(result: VerifyResult) -> None:
        callback_threads.add(threading.get_ident())

    count = 0
    max_ahead = 0
    verdicts: Counter[Verdict] = Counter()
    with make_verifier(handler, concurrency=concurrency) as verifier:
        stream = verifier.verify(items(), on_result)
        for result in stream:
            if count == 0:
                seen.append(consumed)
            count += 1
            verdicts[result.verdict] += 1
            max_ahead = max(max_ahead, consumed - count)
    assert seen[0] < n  # the first result came long before the input ran out
    assert seen[0] <= 2 * concurrency + 1
    assert max_ahead <= 2 * concurrency + 1  # bounded in-flight window: memory stays flat
    assert count == n and verdicts == {Verdict.OK: n - 20, Verdict.NO_HANDLE: 20}
    assert callback_threads == {threading.get_ident()}


def test_stopping_early_stops_consuming_input() -> None:
    consumed = 0

    def items() -> Iterator[VerifyItem]:
        nonlocal consumed
        for i in range(100_000):
            consumed += 1
            yield VerifyItem(str(i), f"11084/{i}")

    proxy = FakeProxy({})
    with make_verifier(proxy, concurrency=2) as verifier:
        stream = verifier.verify(items())
        first = [next(stream) for _ in range(10)]
        stream.close()
    assert len(first) == 10
    assert consumed <= 10 + 2 * 2 + 1
    assert sum(proxy.calls.values()) <= consumed
    assert not [t for t in threading.enumerate() if t.name.startswith("hwf-verify")]  # the workers ended with it


def test_stopping_early_abandons_the_retries_of_the_checks_in_flight() -> None:
    """Ctrl-C (or any early stop) while handles are retrying against a proxy that is down: the running checks
    give up at their next failure instead of going through every retry (minutes behind a circuit pause)."""
    proxy = FakeProxy({"11084/0": [url_value(PRIMO.record_url("0"))]})
    for n in range(1, 9):
        proxy.faults[f"api:11084/{n}"] = [lambda: httpx.Response(503)] * 1000
    items = [VerifyItem(str(n), f"11084/{n}") for n in range(9)]
    with make_verifier(proxy, concurrency=8, retries=50, sleep=time.sleep, backoff_base=0.01, backoff_cap=0.01) as v:
        stream = v.verify(items)
        first = next(stream)
        stream.close()
    assert first.verdict is Verdict.OK
    failing = sum(proxy.calls[f"api:11084/{n}"] for n in range(1, 9))
    assert failing < 8 * 10  # each stopped after a few attempts, not after its 51 (306 before)
    assert not [t for t in threading.enumerate() if t.name.startswith("hwf-verify")]


def test_worker_threads_are_started_as_needed_and_end_with_the_run() -> None:
    proxy = FakeProxy({}, delay=0.01)
    started: set[str] = set()

    def on_result(result: VerifyResult) -> None:
        started.update(t.name for t in threading.enumerate() if t.name.startswith("hwf-verify"))

    with make_verifier(proxy, concurrency=8) as verifier:
        assert len(list(verifier.verify([VerifyItem(str(i), f"11084/{i}") for i in range(3)], on_result))) == 3
        assert len(started) <= 3  # three handles never start eight threads
        assert not [t for t in threading.enumerate() if t.name.startswith("hwf-verify")]
        results = list(verifier.verify([VerifyItem(str(i), f"11084/{i}") for i in range(200)], on_result))
    assert len(results) == 200
    assert proxy.max_in_flight <= 8
    assert len(started) == 8
    assert not [t for t in threading.enumerate() if t.name.startswith("hwf-verify")]


def test_run_consumes_everything_and_returns_stats() -> None:
    proxy = FakeProxy({"11084/1": [url_value(PRIMO.record_url("1"))]})
    got: list[VerifyResult] = []
    with make_verifier(proxy) as verifier:
        stats = verifier.run([VerifyItem("1", "11084/1"), VerifyItem("2", "11084/2")], got.append)
    assert len(got) == 2 and stats.items == 2
    assert stats.verdicts[Verdict.OK] == 1 and stats.verdicts[Verdict.NOT_REGISTERED] == 1


# ---------------------------------------------------------------------------------------------
# Real sockets (127.0.0.1 only)


class _ProxyHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        path = self.path.split("?", 1)[0]
        if path.startswith("/api/handles/11084/"):
            mms = path.rsplit("/", 1)[1]
            body = {"responseCode": 1, "handle": f"11084/{mms}", "values": [url_value(PRIMO.record_url(mms))]}
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json;charset=UTF-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        else:
            self.send_response(302)
            self.send_header("Location", PRIMO.record_url(path.rsplit("/", 1)[1]))
            self.send_header("Content-Length", "0")
            self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_real_sockets_on_localhost(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ProxyHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        resolver = f"http://127.0.0.1:{server.server_address[1]}"
        with Verifier(resolver, PRIMO, concurrency=4, requests_per_second=None, follow=True, timeout=5) as verifier:
            results = list(verifier.verify(VerifyItem(str(i), f"11084/{i}") for i in range(40)))
    finally:
        server.shutdown()
        server.server_close()
    assert len(results) == 40
    assert {(r.verdict, r.redirect_ok, r.attempts) for r in results} == {
        (Verdict.OK, True, 2)
    }  # the public answer (right: no auth=true request), the redirect
