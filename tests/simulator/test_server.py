"""The simulator over real HTTP (orchestrator.simulator.server): Alma, the proxy and the admin endpoints on a
local port, a dropped run reply, a proxy timeout, latency slept outside the lock, and serve_forever."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from orchestrator.simulator import Scenario, SimServer, Simulator

PRIMO = "https://grinnell.primo.exlibrisgroup.com/discovery/fulldisplay/alma991011592644004641/01GCL_INST:GCL"


# --- the real HTTP server --------------------------------------------------------------------------


@pytest.fixture
def server() -> SimServer:
    sim = Simulator(Scenario(per_second_limit=0))
    sim.register_handle("11084/34662", PRIMO)
    with SimServer(sim) as running:
        yield running


def test_server_serves_alma_proxy_and_admin(server: SimServer) -> None:
    assert server.url.startswith("http://127.0.0.1:")
    with httpx.Client(base_url=server.url, timeout=5, trust_env=False) as client:
        ids = client.post("/_sim/records", json={"count": 3, "profile": "clean", "seed": 1}).json()["mms_ids"]
        set_id = client.post("/_sim/sets", json={"name": "over http", "mms_ids": ids}).json()["id"]
        members = client.get(
            f"/almaws/v1/conf/sets/{set_id}/members",
            params={"limit": 100},
            headers={"Authorization": "apikey k", "Accept": "application/json"},
        ).json()
        assert [m["id"] for m in members["member"]] == ids
        assert members["member"][0]["link"].startswith(server.url + "/almaws/v1/bibs/")
        redirect = client.get("/11084/34662")
        assert redirect.status_code == 302 and redirect.headers["location"] == PRIMO
        assert client.head("/11084/34662").status_code == 302
        assert client.get("/api/handles/11084/34662?type=URL").json()["responseCode"] == 1
        state = client.get("/_sim/state").json()
        assert state["sets"][set_id]["members"] == ids and state["handles"]["count"] == 1
        assert state["stats"]["requests"]["set_members"] == 1
        faults = client.post("/_sim/faults", json={"proxy_error_rate": 0.25}).json()
        assert faults["proxy_error_rate"] == 0.25
        bad = client.post("/_sim/faults", json={"no_such_fault": 1})
        assert bad.status_code == 400 and "no_such_fault" in bad.json()["error"]


def test_server_drops_run_reply_but_instance_exists(server: SimServer) -> None:
    sim = server.simulator
    set_id = sim.create_set("drop", sim.generate_records(2))
    headers = {"Authorization": "apikey k", "Accept": "application/json"}
    body = {
        "parameter": [
            {"name": {"value": "set_id"}, "value": set_id},
            {"name": {"value": "job_name"}, "value": "hwf:tok9"},
        ]
    }
    transport = httpx.HTTPTransport(retries=0)
    with httpx.Client(base_url=server.url + "/almaws/v1", headers=headers, timeout=5, transport=transport) as client:
        sim.faults.drop_run_reply = 1
        with pytest.raises(httpx.RemoteProtocolError):
            client.post("/conf/jobs/M1234567890000561", params={"op": "run"}, json=body)
        listing = client.get("/conf/jobs/M1234567890000561/instances").json()
        assert [i["name"].split(" - ")[0] for i in listing["job_instance"]] == ["hwf:tok9"]
        sim.faults.reject_run_before_create = 1
        with pytest.raises(httpx.RemoteProtocolError):
            client.post("/conf/jobs/M1234567890000561", params={"op": "run"}, json=body)
    assert len(sim.job_runs) == 1


def test_server_proxy_timeout_stalls_past_client_timeout(server: SimServer) -> None:
    server.simulator.faults.proxy_timeout_rate = 1.0
    server.simulator.faults.proxy_timeout_sleep_s = 1.0
    with (
        httpx.Client(base_url=server.url, timeout=0.2, trust_env=False) as client,
        pytest.raises(httpx.ReadTimeout),
    ):
        client.get("/api/handles/11084/34662")


def test_latency_is_slept_outside_the_lock(server: SimServer) -> None:
    server.simulator.faults.proxy_latency_ms = 200
    with httpx.Client(
        base_url=server.url, timeout=5, limits=httpx.Limits(max_connections=8), trust_env=False
    ) as client:
        started = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(lambda _: client.get("/api/handles/11084/34662").status_code, range(8)))
        elapsed = time.monotonic() - started
    # One after another, eight 200 ms answers take at least 1.6 s: anything under that means they overlapped.
    assert codes == [200] * 8 and elapsed < 1.55


def test_serve_forever_blocks_until_stopped() -> None:
    server = SimServer(Simulator())
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        assert httpx.get(server.url + "/_sim/state", timeout=5, trust_env=False).status_code == 200
    finally:
        server.stop()
    thread.join(timeout=5)
    assert not thread.is_alive()
