"""Simulator handle proxy (JSON API and redirects, cache, faults), in process; the real HTTP SimServer is in
test_server.py."""

from __future__ import annotations

import httpx
import pytest

from orchestrator.simulator import ManualClock, Scenario, Simulator

PRIMO = "https://grinnell.primo.exlibrisgroup.com/discovery/fulldisplay/alma991011592644004641/01GCL_INST:GCL"


@pytest.fixture
def sim(clock: ManualClock) -> Simulator:
    sim = Simulator(clock=clock, monotonic=clock.monotonic, sleep=clock.sleep)
    sim.register_handle("11084/34662", PRIMO)
    return sim


def proxy(sim: Simulator) -> httpx.Client:
    return httpx.Client(transport=httpx.MockTransport(sim.handle), base_url="http://hdl.test")


# --- JSON API ------------------------------------------------------------------------------------


def test_api_found_with_url_and_admin_values(sim: Simulator) -> None:
    reply = proxy(sim).get("/api/handles/11084/34662")
    assert reply.status_code == 200 and reply.headers["content-type"] == "application/json;charset=UTF-8"
    body = reply.json()
    assert body["responseCode"] == 1 and body["handle"] == "11084/34662"
    url, admin = body["values"]
    assert url == {
        "index": 1,
        "type": "URL",
        "data": {"format": "string", "value": PRIMO},
        "ttl": 86400,
        "timestamp": "2025-10-05T09:11:32Z",
    }
    assert admin["index"] == 100 and admin["type"] == "HS_ADMIN"
    assert admin["data"] == {
        "format": "admin",
        "value": {"handle": "0.NA/11084", "index": 200, "permissions": "011111110011"},
    }


def test_api_filters_not_found_and_empty(sim: Simulator) -> None:
    client = proxy(sim)
    only_url = client.get("/api/handles/11084/34662", params={"type": "URL"}).json()
    assert [v["type"] for v in only_url["values"]] == ["URL"]
    assert [v["index"] for v in client.get("/api/handles/11084/34662?index=100").json()["values"]] == [100]
    assert [v["index"] for v in client.get("/api/handles/11084/34662?index=100&type=URL").json()["values"]] == [1, 100]
    none = client.get("/api/handles/11084/34662", params={"type": "EMAIL"})
    assert none.status_code == 200 and none.json() == {
        "responseCode": 200,
        "handle": "11084/34662",
        "values": [],
    }
    missing = client.get("/api/handles/11084/1768421720", params={"type": "URL"})
    assert missing.status_code == 404 and missing.json() == {
        "responseCode": 100,
        "handle": "11084/1768421720",
    }
    empty = client.get("/api/handles/")
    assert empty.status_code == 400 and empty.json()["responseCode"] == 102
    assert client.get("/api/handles/11084/34662", params={"index": "x"}).status_code == 400
    assert client.put("/api/handles/11084/34662", json={"values": []}).json()["responseCode"] == 1  # read-only


def test_api_handle_without_url_value(sim: Simulator) -> None:
    sim.register_handle("11084/5", None)
    body = proxy(sim).get("/api/handles/11084/5", params={"type": "URL"}).json()
    assert body["responseCode"] == 200 and body["values"] == []
    assert "11084/5" not in sim.handles


# --- plain redirect ------------------------------------------------------------------------------


def test_redirect_found_missing_and_trailing_slash(sim: Simulator) -> None:
    client = proxy(sim)
    found = client.get("/11084/34662")
    assert found.status_code == 302 and found.headers["location"] == PRIMO
    assert "Handle Redirect" in found.text and found.headers["content-type"].startswith("text/html")
    assert "expires" in found.headers
    assert client.get("/11084/34662", params={"urlappend": "#x"}).headers["location"] == PRIMO + "#x"
    missing = client.get("/11084/404404")
    assert missing.status_code == 404 and "Handle Not Found" in missing.text
    slash = client.get("/11084/34662/")
    assert slash.status_code == 404 and "slash" in slash.text and "11084/34662" in slash.text
    values = client.get("/11084/34662", params={"noredirect": ""})
    assert values.status_code == 200 and PRIMO in values.text
    sim.register_handle("11084/6", None)
    assert client.get("/11084/6").status_code == 200


# --- cache and faults ----------------------------------------------------------------------------


def test_proxy_cache_is_stale_until_ttl_and_auth_bypasses(clock: ManualClock) -> None:
    sim = Simulator(Scenario(proxy_cache_ttl=600), clock=clock)
    client = proxy(sim)
    assert client.get("/api/handles/11084/7").status_code == 404  # the miss is cached too
    sim.register_handle("11084/7", PRIMO)
    assert client.get("/api/handles/11084/7").status_code == 404
    assert client.get("/api/handles/11084/7", params={"auth": ""}).status_code == 200
    clock.advance(601)
    assert client.get("/api/handles/11084/7").json()["values"][0]["data"]["value"] == PRIMO
    sim.register_handle("11084/7", "https://elsewhere.test/")
    assert client.get("/api/handles/11084/7").json()["values"][0]["data"]["value"] == PRIMO
    assert (
        client.get("/api/handles/11084/7?auth=true").json()["values"][0]["data"]["value"] == "https://elsewhere.test/"
    )


def test_proxy_faults(sim: Simulator, clock: ManualClock) -> None:
    client = proxy(sim)
    sim.faults.proxy_rate_429 = 1.0
    sim.faults.proxy_retry_after = 7
    limited = client.get("/api/handles/11084/34662")
    assert limited.status_code == 429 and limited.headers["retry-after"] == "7"
    sim.faults.proxy_rate_429 = 0.0
    sim.faults.proxy_error_rate = 1.0
    assert all(client.get("/api/handles/11084/34662").status_code >= 500 for _ in range(5))
    sim.faults.proxy_error_rate = 0.0
    sim.faults.proxy_html_garbage_rate = 1.0
    garbage = client.get("/api/handles/11084/34662")
    assert garbage.status_code == 200 and garbage.headers["content-type"].startswith("text/html")
    with pytest.raises(ValueError):
        garbage.json()
    sim.faults.proxy_html_garbage_rate = 0.0
    sim.faults.proxy_timeout_rate = 1.0
    with pytest.raises(httpx.ReadTimeout):
        client.get("/api/handles/11084/34662")
    sim.faults.proxy_timeout_rate = 0.0
    sim.faults.proxy_latency_ms = 250
    before = clock()
    assert client.get("/api/handles/11084/34662").status_code == 200
    assert (clock() - before).total_seconds() == pytest.approx(0.25)
    assert sim.stats["sent_429"]["proxy"] == 1


def test_proxy_per_second_cap(sim: Simulator, clock: ManualClock) -> None:
    sim.faults.proxy_per_second_cap = 3
    client = proxy(sim)
    codes = [client.get("/api/handles/11084/34662").status_code for _ in range(5)]
    assert codes[-1] == 429 and codes.count(200) <= 3
    clock.advance(1.0)
    assert client.get("/api/handles/11084/34662").status_code == 200


def test_faults_are_reproducible_from_the_seed() -> None:
    def statuses(seed: int) -> list[int]:
        sim = Simulator(Scenario(seed=seed))
        sim.register_handle("11084/1", PRIMO)
        sim.faults.proxy_error_rate = 0.5
        client = proxy(sim)
        return [client.get("/api/handles/11084/1").status_code for _ in range(30)]

    assert statuses(3) == statuses(3)
    assert 200 in statuses(3) and any(code >= 500 for code in statuses(3))


def test_lost_run_reply_in_process(clock: ManualClock) -> None:
    sim = Simulator(clock=clock)
    set_id = sim.create_set("s", sim.generate_records(1))
    client = httpx.Client(
        transport=httpx.MockTransport(sim.handle),
        base_url="http://a.test/almaws/v1",
        headers={"Authorization": "apikey k"},
    )
    sim.faults.drop_run_reply = 1
    body = {"parameter": [{"name": {"value": "set_id"}, "value": set_id}]}
    with pytest.raises(httpx.RemoteProtocolError):
        client.post("/conf/jobs/M50700", params={"op": "run"}, json=body)
    assert len(sim.job_runs) == 1 and sim.faults.drop_run_reply == 0
    assert client.post("/conf/jobs/M50700", params={"op": "run"}, json=body).status_code == 200
    sim.faults.drop_run_reply_rate = 1.0
    with pytest.raises(httpx.RemoteProtocolError):
        client.post("/conf/jobs/M1234567890000561", params={"op": "run"}, json=body)
    sim.faults.drop_run_reply_rate = 0.0
    sim.faults.reject_run_before_create = 1
    with pytest.raises(httpx.RemoteProtocolError):
        client.post("/conf/jobs/M44", params={"op": "run"}, json=body)
    assert [run.job_id for run in sim.job_runs] == ["M50700", "M50700", "M1234567890000561"]


def test_alma_latency_and_big_state_summary(clock: ManualClock) -> None:
    sim = Simulator(clock=clock, sleep=clock.sleep)
    set_id = sim.create_set("big", sim.generate_records(1001))
    sim.faults.alma_latency_ms = 1500
    client = httpx.Client(
        transport=httpx.MockTransport(sim.handle),
        base_url="http://a.test",
        headers={"Authorization": "apikey k"},
    )
    before = clock()
    assert client.get(f"/almaws/v1/conf/sets/{set_id}").status_code == 200
    assert (clock() - before).total_seconds() == pytest.approx(1.5)
    summary = client.get("/_sim/state").json()["sets"][set_id]
    assert summary == {"name": "big", "member_count": 1001}
    assert len(client.get("/_sim/state", params={"full": "1"}).json()["sets"][set_id]["members"]) == 1001
