"""AlmaClient over httpx.MockTransport: requests sent, paging, errors, retries, throttling, key hygiene."""

from __future__ import annotations

import bisect
import json
import threading
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

import httpx
import pytest

from orchestrator import pacing as alma_throttle
from orchestrator.alma.client import AlmaClient
from orchestrator.alma.types import AlmaSetInfo
from orchestrator.errors import (
    AlmaBadReplyError,
    AlmaError,
    AlmaUnreachableError,
    ConfigError,
    DailyQuotaError,
    JobThresholdError,
    RateLimitedError,
    UnsafeXmlError,
)
from orchestrator.xmlsafe import parse_xml
from tests.support.clock import MonotonicClock as Clock

DATA = Path(__file__).parent / "data" / "alma"
KEY = "l7xx0123456789abcdefSECRET"
GATEWAY = "https://api-na.hosted.exlibrisgroup.com"
SET_ID = "9563654780000561"


def body(name: str) -> bytes:
    return (DATA / name).read_bytes()


def respond(name: str, status: int = 200, headers: dict[str, str] | None = None) -> httpx.Response:
    kind = {"json": "application/json;charset=UTF-8", "xml": "application/xml", "html": "text/html"}
    content_type = kind.get(name.rsplit(".", 1)[-1], "text/plain")
    return httpx.Response(status, content=body(name), headers={"Content-Type": content_type, **(headers or {})})


class Recorder:
    """A MockTransport handler that serves canned responses in order and records every request."""

    def __init__(self, *answers: httpx.Response | Exception | Callable[[httpx.Request], httpx.Response]) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        if callable(answer) and not isinstance(answer, httpx.Response):
            return answer(request)
        return answer


def make(handler: Callable[[httpx.Request], httpx.Response], clock: Clock | None = None, **options) -> AlmaClient:
    clock = clock or Clock()
    options.setdefault("requests_per_second", 1000.0)
    options.setdefault("jitter", lambda: 1.0)
    return AlmaClient(
        GATEWAY,
        KEY,
        transport=httpx.MockTransport(handler),
        sleep=clock.sleep,
        monotonic=clock.monotonic,
        **options,
    )


# Requests, headers, key hygiene


def test_key_travels_only_in_the_authorization_header():
    recorder = Recorder(respond("set.json"))
    with make(recorder) as client:
        info = client.get_set(SET_ID)
    assert info == AlmaSetInfo(SET_ID, "hwf 2026-01-15 batch 0007", "ITEMIZED", "BIB_MMS", 0)
    (request,) = recorder.requests
    assert request.headers["Authorization"] == f"apikey {KEY}"
    assert request.headers["Accept"] == "application/json"
    assert request.headers["User-Agent"] == "hwf/0.1"
    assert request.url.path == f"/almaws/v1/conf/sets/{SET_ID}"
    assert KEY not in str(request.url)
    assert KEY not in repr(client)
    assert client._http.is_closed


@pytest.mark.parametrize(
    "base_url", [GATEWAY, GATEWAY + "/", GATEWAY + "/almaws/v1", GATEWAY + "/almaws/v1/", "  " + GATEWAY]
)
def test_base_url_forms(base_url):
    recorder = Recorder(respond("set.xml"))
    client = AlmaClient(base_url, KEY, transport=httpx.MockTransport(recorder))
    client.get_set(SET_ID)
    assert str(recorder.requests[0].url) == f"{GATEWAY}/almaws/v1/conf/sets/{SET_ID}"


def test_a_password_in_the_base_url_never_replaces_the_key_header():
    """httpx turns a user:password@ in the URL into Basic auth in place of the key header: it is dropped."""
    recorder = Recorder(respond("set.xml"))
    client = AlmaClient(
        "https://user:PW-secret@api-na.hosted.exlibrisgroup.com", KEY, transport=httpx.MockTransport(recorder)
    )
    client.get_set(SET_ID)
    (request,) = recorder.requests
    assert request.headers["Authorization"] == f"apikey {KEY}"
    assert "PW-secret" not in str(request.url) and "PW-secret" not in client.base_url


@pytest.mark.parametrize("base_url", ["api-na.hosted.exlibrisgroup.com", GATEWAY + "?apikey=x"])
def test_bad_base_url(base_url):
    with pytest.raises(ValueError):
        AlmaClient(base_url, KEY)


@pytest.mark.parametrize("key", ["", "l7xx with space", "l7xx\nX-Injected: 1", "l7xxé"])
def test_unusable_keys_are_refused_without_echoing_them(key):
    with pytest.raises(ConfigError) as caught:
        AlmaClient(GATEWAY, key)
    assert not key.strip() or key not in str(caught.value)


def test_xml_format_asks_for_xml_but_accepts_json():
    recorder = Recorder(respond("set.json"))
    client = make(recorder, format="xml")
    assert client.get_set(SET_ID).id == SET_ID
    assert recorder.requests[0].headers["Accept"] == "application/xml"


def test_quota_headers_are_read_case_insensitively():
    client = make(Recorder(respond("set.json", headers={"x-exl-api-remaining": "498668", "X-EXL-API-QUOTA": "500000"})))
    assert client.remaining is None
    client.get_set(SET_ID)
    assert (client.remaining, client.quota, client.calls) == (498668, 500000, 1)


# Error mapping


@pytest.mark.parametrize(
    ("fixture", "status", "cls", "expected"),
    [
        (
            "error_60107.xml",
            400,
            AlmaError,
            "Alma GET /conf/sets/123: 400 60107 Set not found: Set ID 123"
            " (tracking E01-0212223205-P0XW8-AWAE584905282)",
        ),
        (
            "error_402203_nons.xml",
            400,
            AlmaError,
            "Alma GET /conf/sets/123: 400 402203 Input parameters mmsId 1234 is not valid.;"
            " 402204 Input parameters mmsId banana is not numeric."
            " (tracking E01-0212223205-P0XW8-AWAE584905283)",
        ),
        (
            "error_402204.json",
            400,
            AlmaError,
            "Alma GET /conf/sets/123: 400 402204 Input parameters mmsId banana is not numeric."
            " (tracking E01-0312225307-JJDGC-AWAE1735835386)",
        ),
        ("error_unauthorized.xml", 400, AlmaError, "is for the other environment (sandbox/production)"),
        ("error_unauthorized.json", 400, AlmaError, "the API key lacks the area for this API"),
        (
            "error_401.html",
            401,
            AlmaError,
            "Alma GET /conf/sets/123: 401 Unauthorized: not an Alma API answer",
        ),
        ("error_500.txt", 404, AlmaError, "Alma GET /conf/sets/123: 404 Not Found"),
        ("error_402222.json", 400, JobThresholdError, "402222 Execution threshold reached."),
    ],
)
def test_error_mapping(fixture, status, cls, expected):
    client = make(Recorder(respond(fixture, status)))
    with pytest.raises(AlmaError) as caught:
        client.get_set("123")
    error = caught.value
    assert type(error) is cls
    assert expected in str(error)
    assert "\n" not in str(error)
    assert (error.status, error.method, error.path) == (status, "GET", "/conf/sets/123")


def test_error_fields():
    client = make(Recorder(respond("error_60107.xml", 400)))
    with pytest.raises(AlmaError) as caught:
        client.get_set("123")
    error = caught.value
    assert (error.code, error.alma_message, error.tracking_id) == (
        "60107",
        "Set not found: Set ID 123",
        "E01-0212223205-P0XW8-AWAE584905282",
    )


def test_error_message_has_path_but_no_query_string():
    client = make(Recorder(respond("error_402204.json", 400)))
    with pytest.raises(AlmaError) as caught:
        client.find_sets("hwf batch")
    assert "Alma GET /conf/sets: 400" in str(caught.value)
    assert "name~" not in str(caught.value) and "limit=" not in str(caught.value)


def test_key_echoed_by_a_server_is_scrubbed():
    echo = {
        "errorsExist": True,
        "errorList": {"error": [{"errorCode": "X", "errorMessage": f"bad key {KEY}"}]},
    }
    client = make(Recorder(httpx.Response(400, json=echo)))
    with pytest.raises(AlmaError) as caught:
        client.get_set("1")
    assert KEY not in str(caught.value) and KEY not in (caught.value.alma_message or "")
    assert "***" in str(caught.value)


def test_errors_exist_in_a_200_reply_is_an_error():
    client = make(Recorder(respond("error_402204.json", 200)))
    with pytest.raises(AlmaError, match="402204"):
        client.get_set("1")


# Malformed and unsafe replies


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b'{"id": "1", ', "JSON is malformed"),
        (b"", "the body is empty"),
        (b"<bibs/>", "XML root is <bibs>, expected <set>"),
        (b'{"name": "no id"}', "set.id is missing"),
    ],
)
def test_malformed_reply_is_a_bad_reply_naming_the_path(content, problem):
    client = make(Recorder(httpx.Response(200, content=content, headers={"Content-Type": "application/json"})))
    with pytest.raises(AlmaBadReplyError) as caught:
        client.get_set("77")
    assert str(caught.value).startswith("Alma GET /conf/sets/77: bad reply: ")
    assert problem in str(caught.value)


def test_doctype_reply_is_refused_not_parsed():
    client = make(Recorder(respond("doctype_entity.xml")))
    with pytest.raises(UnsafeXmlError):
        client.get_set("1")


def test_doctype_in_an_error_body_still_gives_the_status():
    client = make(Recorder(respond("doctype_entity.xml", 400)))
    with pytest.raises(AlmaError, match="Alma GET /conf/sets/1: 400 Bad Request"):
        client.get_set("1")


# Rate limits and quotas


def test_per_second_threshold_backs_off_and_retries():
    clock = Clock()
    recorder = Recorder(respond("error_per_second.json", 429), respond("error_per_second.xml", 429), respond("set.xml"))
    client = make(recorder, clock)
    assert client.get_set(SET_ID).member_count == 3
    assert clock.sleeps == [1.0, 2.0]
    assert len(recorder.requests) == client.calls == 3
    assert client._bucket.current_rate() < 1000.0


def test_retry_after_is_honoured():
    clock = Clock()
    recorder = Recorder(respond("error_per_second.json", 429, {"Retry-After": "3"}), respond("set.xml"))
    make(recorder, clock).get_set(SET_ID)
    assert clock.sleeps == [3.0]


def test_a_5xx_retry_after_is_capped_like_a_429s():
    clock = Clock()
    recorder = Recorder(respond("error_500.txt", 503, {"Retry-After": "120"}), respond("set.xml"))
    make(recorder, clock).get_set(SET_ID)
    assert clock.sleeps == [120.0]  # a short one is waited in place


@pytest.mark.parametrize("status", [503, 429])
def test_a_long_retry_after_is_never_slept_but_carried_to_the_caller(status: int):
    clock = Clock()
    name = "error_per_second.json" if status == 429 else "error_500.txt"
    recorder = Recorder(respond(name, status, {"Retry-After": "86400"}), respond("set.xml"))
    with pytest.raises(AlmaError) as caught:
        make(recorder, clock).get_set(SET_ID)
    assert clock.sleeps == [] and len(recorder.requests) == 1
    assert caught.value.retry_after == 86400.0 and caught.value.status == status
    assert "Alma asks to wait 86400 s (Retry-After)" in str(caught.value)


def test_a_long_retry_after_on_a_job_run_is_an_unknown_outcome_carrying_the_wait():
    clock = Clock()
    recorder = Recorder(respond("error_500.txt", 503, {"Retry-After": "86400"}))
    with pytest.raises(AlmaUnreachableError) as caught:
        make(recorder, clock).run_job("M50173", [("set_id", "1")])
    assert clock.sleeps == [] and caught.value.retry_after == 86400.0


def test_sleeping_with_puts_every_wait_before_a_retry_through_the_callers_sleep():
    clock = Clock()
    recorder = Recorder(respond("error_500.txt", 503, {"Retry-After": "200"}), respond("set.xml"))
    client = make(recorder, clock)

    class Asked(BaseException):
        pass

    def stopped(_sleep: Callable[[float], None]) -> Callable[[float], None]:
        def sleep(seconds: float) -> None:
            raise Asked(seconds)

        return sleep

    client.sleeping_with(stopped)
    with pytest.raises(Asked):
        client.get_set(SET_ID)
    assert clock.sleeps == [] and len(recorder.requests) == 1


def test_per_second_threshold_gives_up_after_max_retries():
    clock = Clock()
    recorder = Recorder(respond("error_per_second.json", 429))
    client = make(recorder, clock, max_retries=3)
    with pytest.raises(RateLimitedError) as caught:
        client.get_set(SET_ID)
    assert clock.sleeps == [1.0, 2.0, 4.0]
    assert len(recorder.requests) == 4
    assert caught.value.code == "PER_SECOND_THRESHOLD"
    assert "still too fast after 4 tries" in str(caught.value)


def test_per_second_threshold_on_run_is_retried_because_alma_rejected_it():
    recorder = Recorder(respond("error_per_second.json", 429), respond("job_run.json"))
    run = make(recorder).run_job("M50173", [("set_id", "1")])
    assert run.instance_id == "9563643080000561"
    assert len(recorder.requests) == 2


def test_daily_threshold_stops_at_once():
    clock = Clock()
    recorder = Recorder(respond("error_daily.json", 429, {"X-Exl-Api-Remaining": "0"}))
    client = make(recorder, clock)
    with pytest.raises(DailyQuotaError, match="DAILY_THRESHOLD Daily API threshold exceeded") as caught:
        client.get_set(SET_ID)
    assert "daily API quota is spent" in str(caught.value)
    assert len(recorder.requests) == 1
    assert clock.sleeps == []
    assert client.remaining == 0


def test_remaining_under_the_floor_stops_before_the_next_request():
    recorder = Recorder(respond("set.json", headers={"X-Exl-Api-Remaining": "4999"}))
    client = make(recorder, daily_call_floor=5000)
    assert client.get_set(SET_ID).id == SET_ID  # the reply that crossed the floor is still delivered
    with pytest.raises(DailyQuotaError) as caught:
        client.get_set(SET_ID)
    assert "4999 calls remain" in str(caught.value) and "floor of 5000" in str(caught.value)
    assert len(recorder.requests) == 1


def test_floor_zero_never_stops():
    recorder = Recorder(respond("set.json", headers={"X-Exl-Api-Remaining": "1"}))
    client = make(recorder)
    client.get_set(SET_ID)
    client.get_set(SET_ID)
    assert len(recorder.requests) == 2


def test_token_bucket_paces_requests():
    clock = Clock()
    client = make(Recorder(respond("set.json")), clock, requests_per_second=2.0)
    for _ in range(5):
        client.get_set(SET_ID)
    gap = 1 / (2.0 * alma_throttle.PACING)  # one at a time, a little under the configured rate
    assert clock.sleeps == pytest.approx([gap] * 4)


def test_client_is_shared_safely_between_threads():
    recorder = Recorder(respond("set.json"))
    client = AlmaClient(GATEWAY, KEY, transport=httpx.MockTransport(recorder), requests_per_second=float("inf"))
    threads = [threading.Thread(target=lambda: [client.get_set(SET_ID) for _ in range(25)]) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert client.calls == len(recorder.requests) == 100


# Retries on reads, never on POSTs that may have arrived


def test_get_is_retried_on_500_then_succeeds():
    clock = Clock()
    recorder = Recorder(respond("error_500.txt", 500), respond("set.xml"))
    assert make(recorder, clock).get_set(SET_ID).id == SET_ID
    assert len(recorder.requests) == 2
    assert clock.sleeps == [1.0]


def test_get_is_retried_on_read_timeout():
    recorder = Recorder(httpx.ReadTimeout("timed out"), respond("set.xml"))
    assert make(recorder).get_set(SET_ID).id == SET_ID
    assert len(recorder.requests) == 2


def test_get_gives_up_after_max_retries_on_500():
    recorder = Recorder(respond("error_500.txt", 500))
    with pytest.raises(AlmaError) as caught:
        make(recorder, max_retries=2).get_set(SET_ID)
    assert type(caught.value) is AlmaError
    assert str(caught.value) == f"Alma GET /conf/sets/{SET_ID}: 500 Internal Server Error"
    assert len(recorder.requests) == 3


def test_get_gives_up_on_timeouts_as_unreachable():
    recorder = Recorder(httpx.ReadTimeout("timed out"))
    with pytest.raises(
        AlmaUnreachableError, match=r"no answer from https://api-na\.hosted\.exlibrisgroup\.com .ReadTimeout. after 3"
    ):
        make(recorder, max_retries=2).get_set(SET_ID)


@pytest.mark.parametrize(
    "failure",
    [
        respond("error_500.txt", 500),
        respond("error_60107.xml", 503),
        httpx.ReadTimeout("t"),
        httpx.RemoteProtocolError("x"),
    ],
)
def test_run_job_is_never_resent_once_it_may_have_arrived(failure):
    clock = Clock()
    recorder = Recorder(failure, respond("job_run.json"))
    with pytest.raises(AlmaUnreachableError) as caught:
        make(recorder, clock).run_job("M50173", [("set_id", "1"), ("job_name", "hwf:t")])
    assert len(recorder.requests) == 1
    assert clock.sleeps == []
    assert "the outcome is unknown" in str(caught.value)
    assert caught.value.path == "/conf/jobs/M50173" and caught.value.method == "POST"


def test_create_set_and_add_members_are_never_resent():
    recorder = Recorder(httpx.WriteTimeout("t"), respond("set.json"))
    client = make(recorder)
    with pytest.raises(AlmaUnreachableError, match="outcome is unknown"):
        client.create_set("hwf batch")
    with pytest.raises(AlmaUnreachableError, match="outcome is unknown"):
        make(Recorder(respond("error_500.txt", 502))).add_members(AlmaSetInfo(SET_ID, "n"), ["1"])
    assert len(recorder.requests) == 1


def test_post_whose_connection_never_opened_is_retried():
    recorder = Recorder(httpx.ConnectError("refused"), respond("job_run.xml"))
    run = make(recorder).run_job("M50173", [("set_id", "1")])
    assert run.instance_id == "9563654220000561"
    assert len(recorder.requests) == 2


def test_connection_never_opened_after_every_retry():
    recorder = Recorder(httpx.ConnectError("refused"))
    with pytest.raises(
        AlmaUnreachableError,
        match=r"could not reach https://api-na\.hosted\.exlibrisgroup\.com .ConnectError. after 2 tries; the request",
    ):
        make(recorder, max_retries=1).run_job("M1", [])


@pytest.mark.parametrize("fixture", ["error_402222.json", "error_402223.xml"])
def test_job_threshold(fixture):
    recorder = Recorder(respond(fixture, 400))
    with pytest.raises(JobThresholdError) as caught:
        make(recorder).run_job("M50173", [("set_id", "1")])
    assert caught.value.code in {"402222", "402223"}
    assert "wait, then resubmit" in str(caught.value)
    assert len(recorder.requests) == 1


# Sets


@pytest.mark.timeout(5)
def test_members_are_paged_until_the_total():
    def pages(request: httpx.Request) -> httpx.Response:
        offset = request.url.params["offset"]
        return respond("members_page1.json" if offset == "0" else "members_page2_one_object.json")

    recorder = Recorder(pages)
    members = list(make(recorder).iter_set_members(SET_ID))
    assert [m.id for m in members] == ["991011506418804641", "991011506418904641", "991011506419004641"]
    assert [(r.url.params["limit"], r.url.params["offset"]) for r in recorder.requests] == [
        ("100", "0"),
        ("100", "2"),
    ]
    assert recorder.requests[0].url.path == f"/almaws/v1/conf/sets/{SET_ID}/members"


@pytest.mark.timeout(5)
def test_members_paging_stops_on_an_empty_page():
    recorder = Recorder(respond("members_empty.json"))
    assert list(make(recorder).iter_set_members(SET_ID)) == []
    assert len(recorder.requests) == 1


@pytest.mark.timeout(5)
def test_members_paging_without_total_stops_on_a_short_page():
    page = httpx.Response(200, json={"member": [{"id": "1"}, {"id": "2"}]})
    recorder = Recorder(page)
    assert [m.id for m in make(recorder).iter_set_members(SET_ID, page_size=5)] == ["1", "2"]
    assert recorder.requests[0].url.params["limit"] == "5"


def test_count_set_members_asks_for_limit_zero():
    recorder = Recorder(respond("members_count.xml"))
    assert make(recorder).count_set_members(SET_ID) == 1234
    assert recorder.requests[0].url.params["limit"] == "0"


def test_find_sets_pages_a_name_search():
    recorder = Recorder(respond("sets.json"), respond("sets_one.json"))
    sets = make(recorder).find_sets("hwf 2026-01-15 batch 0007")
    assert len(sets) == 2
    assert recorder.requests[0].url.params["q"] == "name~hwf 2026-01-15 batch 0007"
    assert len(recorder.requests) == 1


def test_create_set_sends_an_itemized_set_json():
    recorder = Recorder(respond("set.json"))
    info = make(recorder).create_set("hwf batch 7", description="d")
    assert info.id == SET_ID
    request = recorder.requests[0]
    assert (request.method, request.url.path) == ("POST", "/almaws/v1/conf/sets")
    assert request.headers["Content-Type"] == "application/json"
    sent = json.loads(request.content)
    assert sent["name"] == "hwf batch 7"
    assert sent["type"] == {"value": "ITEMIZED"} and sent["content"] == {"value": "BIB_MMS"}
    assert sent["private"] == {"value": "false"}


def test_create_set_sends_xml_in_xml_mode():
    recorder = Recorder(respond("set.xml"))
    make(recorder, format="xml").create_set("hwf batch 7", private=True)
    root = parse_xml(recorder.requests[0].content)
    assert root.tag == "set" and root.findtext("type") == "ITEMIZED" and root.findtext("private") == "true"
    assert recorder.requests[0].headers["Content-Type"] == "application/xml"


def test_add_members_chunks_by_1000_and_sends_the_whole_set():
    recorder = Recorder(respond("set.xml"))
    ids = [str(991000000000000000 + i) for i in range(2500)]
    info = make(recorder, format="xml").add_members(AlmaSetInfo(SET_ID, "n", "ITEMIZED", "BIB_MMS"), ids + ids[:5])
    assert info.member_count == 3
    sizes = []
    for request in recorder.requests:
        assert request.url.params["op"] == "add_members"
        assert request.url.params["fail_on_invalid_id"] == "false"
        root = parse_xml(request.content)
        assert (root.findtext("id"), root.findtext("name"), root.findtext("type")) == (
            SET_ID,
            "n",
            "ITEMIZED",
        )
        sizes.append(len(root.find("members")))
    assert sizes == [1000, 1000, 500]


def test_add_members_failure_names_the_chunk():
    recorder = Recorder(respond("set.json"), respond("error_60107.xml", 400))
    ids = [str(i) for i in range(1500)]
    with pytest.raises(AlmaError, match=r"chunk 2 of 2: ids 1001-1500"):
        make(recorder).add_members(AlmaSetInfo(SET_ID, "n"), ids, fail_on_invalid_id=True)
    assert recorder.requests[0].url.params["fail_on_invalid_id"] == "true"


def test_add_members_with_nothing_to_add_sends_nothing():
    recorder = Recorder(respond("set.json"))
    info = AlmaSetInfo(SET_ID, "n")
    assert make(recorder).add_members(info, []) is info
    assert recorder.requests == []


# Jobs and instances


def test_list_jobs_uses_type_not_job_type_and_pages():
    recorder = Recorder(respond("jobs.json"), respond("jobs_page2_one.json"))
    jobs = list(make(recorder).list_jobs(category="REPOSITORY"))
    assert [j.id for j in jobs] == ["M4406520730000561", "M50700", "M26714670000011"]
    params = recorder.requests[0].url.params
    assert params["type"] == "MANUAL" and "job_type" not in params and params["category"] == "REPOSITORY"
    assert recorder.requests[1].url.params["offset"] == "2"


def test_get_job():
    recorder = Recorder(respond("job.xml"))
    job = make(recorder).get_job("M26714670000011")
    assert job.name == "DG Handle Migration"
    assert recorder.requests[0].url.path == "/almaws/v1/conf/jobs/M26714670000011"


def test_run_job_json_body_and_instance_id():
    recorder = Recorder(respond("job_run.json"))
    run = make(recorder).run_job("M50173", [("set_id", SET_ID), ("job_name", "hwf:r1:migrate:1")])
    assert run.instance_id == "9563643080000561"
    request = recorder.requests[0]
    assert (request.method, request.url.path, request.url.params["op"]) == (
        "POST",
        "/almaws/v1/conf/jobs/M50173",
        "run",
    )
    assert request.headers["Content-Type"] == "application/json"
    assert json.loads(request.content)["parameter"][1] == {
        "name": {"value": "job_name"},
        "value": "hwf:r1:migrate:1",
    }


def test_run_job_with_template_keeps_the_wizard_parameters():
    recorder = Recorder(respond("job_run.xml"))
    make(recorder).run_job("M50173", [("set_id", SET_ID)], payload_template=body("job_payload_template.xml"))
    request = recorder.requests[0]
    assert request.headers["Content-Type"] == "application/xml"
    names = [p.findtext("name") for p in parse_xml(request.content).iter("parameter")]
    assert "task_HandlesMigrationParams_sourceField_string" in names


def test_run_job_reply_without_link_says_the_job_probably_started():
    with pytest.raises(AlmaBadReplyError, match="probably started"):
        make(Recorder(respond("job_run_no_link.json"))).run_job("M50173", [])


def test_get_instance():
    recorder = Recorder(respond("instance.xml"))
    instance = make(recorder).get_instance("M50173", "9563643080000561")
    assert instance.terminal
    assert recorder.requests[0].url.path == "/almaws/v1/conf/jobs/M50173/instances/9563643080000561"


def test_list_instances_sends_dates_and_status_and_pages():
    recorder = Recorder(respond("instances.json"), respond("instances_page2_one.json"))
    instances = list(
        make(recorder).list_instances(
            "M26714670000011",
            date_from=date(2026, 1, 14),
            date_to=date(2026, 1, 16),
            status="COMPLETED_SUCCESS",
        )
    )
    assert [i.id for i in instances] == ["9563643080000561", "9563643090000561", "9563643100000561"]
    assert all(i.job_id == "M26714670000011" for i in instances)
    params = recorder.requests[0].url.params
    assert (params["submit_date_from"], params["submit_date_to"], params["status"]) == (
        "2026-01-14",
        "2026-01-16",
        "COMPLETED_SUCCESS",
    )
    assert params["limit"] == "100"


# Bibs


def test_get_bibs_diffs_requested_and_returned():
    recorder = Recorder(respond("bibs.xml"))
    batch = make(recorder).get_bibs(["991011506418804641", "991011506418904641", "991099999999904641"])
    assert [b.mms_id for b in batch.bibs] == ["991011506418804641", "991011506418904641"]
    assert batch.missing == ("991099999999904641",)
    params = recorder.requests[0].url.params
    assert params["mms_id"] == "991011506418804641,991011506418904641,991099999999904641"
    assert params["view"] == "full"
    assert "expand" not in params


def test_get_bibs_all_unknown_is_an_empty_200():
    batch = make(Recorder(respond("bibs_empty.json"))).get_bibs(["1", "2"])
    assert batch.bibs == () and batch.missing == ("1", "2")


def test_get_bibs_json():
    batch = make(Recorder(respond("bibs.json"))).get_bibs(["991011506418804641", "991011506419204641"])
    assert batch.missing == ()
    assert all(b.record_xml for b in batch.bibs)


def test_get_bibs_rejects_more_than_100_and_empty_sends_nothing():
    recorder = Recorder(respond("bibs.json"))
    client = make(recorder)
    with pytest.raises(ValueError, match="at most 100"):
        client.get_bibs([str(i) for i in range(101)])
    assert client.get_bibs([]).bibs == ()
    with pytest.raises(ValueError):
        client.get_bibs(["1,2"])
    assert recorder.requests == []


def test_get_bib_xml_returns_exact_bytes_and_always_asks_for_xml():
    recorder = Recorder(respond("bib.xml"))
    bib = make(recorder).get_bib_xml("991011687640104641")
    assert bib.xml == body("bib.xml")
    assert bib.record_xml is not None and bib.record_xml.startswith(b"<record xmlns=")
    request = recorder.requests[0]
    assert request.headers["Accept"] == "application/xml"
    assert request.url.path == "/almaws/v1/bibs/991011687640104641"
    assert "expand" not in request.url.params


def test_get_bib_xml_refuses_json_and_the_wrong_record():
    with pytest.raises(AlmaBadReplyError, match="expected an XML <bib>"):
        make(Recorder(respond("set.json"))).get_bib_xml("1")
    with pytest.raises(AlmaBadReplyError, match="asked for bib 1 but got bib 991011687640104641"):
        make(Recorder(respond("bib.xml"))).get_bib_xml("1")


def test_put_bib_xml_sends_the_bytes_with_the_documented_parameters():
    raw = body("bib.xml")
    recorder = Recorder(respond("bib.xml"))
    bib = make(recorder).put_bib_xml("991011687640104641", raw)
    assert bib.mms_id == "991011687640104641"
    request = recorder.requests[0]
    assert request.method == "PUT"
    assert request.content == raw
    assert request.headers["Content-Type"] == "application/xml; charset=utf-8"
    assert request.headers["Accept"] == "application/xml"
    assert dict(request.url.params) == {
        "validate": "true",
        "override_warning": "true",
        "override_lock": "true",
        "stale_version_check": "false",
        "check_match": "false",
    }


def test_put_bib_xml_is_retried_on_5xx():
    recorder = Recorder(respond("error_500.txt", 503), respond("bib.xml"))
    make(recorder).put_bib_xml("991011687640104641", body("bib.xml"))
    assert len(recorder.requests) == 2


@pytest.mark.parametrize(
    "xml",
    [
        b"<bib><mms_id>42</mms_id></bib>",
        b'<bib xmlns="http://alma.exlibrisgroup.com/dc/01GCL_INST"><mms_id>991011687640104641</mms_id></bib>',
        b"<record/>",
    ],
)
def test_put_bib_xml_refuses_a_document_for_another_record_or_shape(xml):
    recorder = Recorder(respond("bib.xml"))
    with pytest.raises(ValueError):
        make(recorder).put_bib_xml("991011687640104641", xml)
    assert recorder.requests == []


def test_ping():
    recorder = Recorder(httpx.Response(200, json={"total_record_count": 12}, headers={"X-Exl-Api-Remaining": "77"}))
    assert make(recorder).ping() == {
        "base_url": GATEWAY + "/almaws/v1",
        "sets": 12,
        "remaining": 77,
        "quota": None,
    }


def test_threads_held_up_after_their_turn_do_not_bunch_up():
    # Twelve threads wake 0.6 s late from their turn (a busy core), then all send at once with those
    # whose turn comes on time: the places held until a second after each reply keep them under the rate.
    lock = threading.Lock()
    late = iter([0.6] * 12)
    stamps: list[float] = []

    def sleep(seconds: float) -> None:
        with lock:
            extra = next(late, 0.0)
        time.sleep(seconds + extra)

    bucket = alma_throttle.TokenBucket(20.0, time.monotonic, sleep, window=True)

    def send() -> None:
        bucket.acquire()
        with lock:
            stamps.append(time.monotonic())
        bucket.release()

    threads = [threading.Thread(target=send) for _ in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stamps.sort()
    most = max(bisect.bisect_left(stamps, start + 0.99) - i for i, start in enumerate(stamps))
    assert most <= 20
