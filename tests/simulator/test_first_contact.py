"""Simulator, first contact with a real Alma (issue 20): LOGICAL sets, ``from_logical_set`` snapshots that
fill over time, jobs Alma will not run through the API (402231, 60347), runs made by a person (Admin > Run a
Job, the integration profile's Run), and the members every run started on."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from orchestrator.errors import ConfigError
from orchestrator.simulator import (
    ManualClock,
    Scenario,
    SetQuery,
    SimRecord,
    Simulator,
    dc_record_xml,
    load_scenario,
)
from orchestrator.xmlsafe import parse_xml
from tests.support.e2e import Served
from tests.support.sim import raw_alma

BASE = "http://alma.test/almaws/v1"
ERR_NS = "{http://com/exlibris/urm/general/xmlbeans}"
COPY, MIGRATE, INTEGRATE = "M1234567890000561", "M2234567890000561", "M50700"
MULTI_TASK_MESSAGE = (
    "Job in consisted of more than one task - executing such job is currently not supported via the API."
)
OVERLAP_MESSAGE = "Job overlapps with running job - cannot execute."


def alma(sim: Simulator, fmt: str = "json") -> httpx.Client:
    return raw_alma(sim, fmt, BASE)


def admin(sim: Simulator) -> httpx.Client:
    return httpx.Client(transport=httpx.MockTransport(sim.handle), base_url="http://sim.test/_sim")


def error_of(reply: httpx.Response) -> tuple[str, str]:
    """(code, message) of a 400 in either format."""
    assert reply.status_code == 400, reply.text
    if "json" in reply.headers["content-type"]:
        body = reply.json()
        assert body["errorsExist"] is True and body["result"] is None
        error = body["errorList"]["error"][0]
        assert error["trackingId"].startswith("E01-")
        return error["errorCode"], error["errorMessage"]
    root = parse_xml(reply.content)
    assert root.tag == f"{ERR_NS}web_service_result"
    error = root.find(f"{ERR_NS}errorList/{ERR_NS}error")
    assert error is not None and error.findtext(f"{ERR_NS}trackingId")
    return error.findtext(f"{ERR_NS}errorCode") or "", error.findtext(f"{ERR_NS}errorMessage") or ""


def run_body(set_id: str, job_name: str | None = None) -> dict[str, Any]:
    params = [{"name": {"value": "set_id"}, "value": set_id}]
    if job_name:
        params.append({"name": {"value": "job_name"}, "value": job_name})
    return {"parameter": params}


def submit(client: httpx.Client, job_id: str, set_id: str) -> httpx.Response:
    return client.post(f"/conf/jobs/{job_id}", params={"op": "run"}, json=run_body(set_id))


def run(client: httpx.Client, job_id: str, set_id: str) -> str:
    reply = submit(client, job_id, set_id)
    assert reply.status_code == 200, reply.text
    return str(reply.json()["additional_info"]["link"].rsplit("/", 1)[-1])


def record(mms: str, title: str, number: int) -> SimRecord:
    xml = dc_record_xml(
        institution="01GCL_INST",
        mms_id=mms,
        title=title,
        handle_url=f"http://hdl.handle.net/11084/{number}",
        local_id=f"grinnell:{number}",
    )
    return SimRecord(mms, title, xml=xml)


def members_of(client: httpx.Client, set_id: str) -> list[str]:
    found: list[str] = []
    while True:
        page = client.get(f"/conf/sets/{set_id}/members", params={"limit": 100, "offset": len(found)}).json()
        found += [m["id"] for m in page.get("member", [])]
        if len(found) >= page["total_record_count"] or not page.get("member"):
            return found


@pytest.fixture
def collembola(sim: Simulator) -> tuple[str, list[str]]:
    """A logical set 'Collembola titles' matching three records, with two other records around."""
    sim.add_records(
        [
            record("991000000000104641", "Collembola of Iowa", 1),
            record("991000000000204641", "Prairie grasses", 2),
            record("991000000000304641", "More COLLEMBOLA notes", 3),
            record("991000000000404641", "Springtails (Collembola) in winter", 4),
            record("991000000000504641", "Campus maps", 5),
        ]
    )
    set_id = sim.create_logical_set("Collembola titles", {"title_contains": "collembola"})
    return set_id, ["991000000000104641", "991000000000304641", "991000000000404641"]


# --- LOGICAL sets --------------------------------------------------------------------------------------


def test_logical_set_reply_xml_and_json(sim: Simulator, collembola: tuple[str, list[str]]) -> None:
    set_id, matching = collembola
    root = parse_xml(alma(sim, "xml").get(f"/conf/sets/{set_id}").content)
    assert root.findtext("type") == "LOGICAL" and root.find("type").get("desc") == "Logical"
    query = root.find("query")
    assert query is not None and query.text == 'BIB_MMS where BIB_MMS ((title CONTAIN "collembola"))'
    assert query.get("desc") == 'where (Title contains keywords "collembola")'
    tags = [child.tag for child in root]
    at = tags.index("created_date")
    assert tags[at : at + 3] == ["created_date", "query", "number_of_members"]
    assert root.findtext("number_of_members") == "3"
    body = alma(sim).get(f"/conf/sets/{set_id}").json()
    assert body["type"] == {"value": "LOGICAL", "desc": "Logical"}
    assert body["query"]["value"].startswith("BIB_MMS where BIB_MMS") and "desc" in body["query"]
    assert body["number_of_members"] == {"value": 3, "link": f"{BASE}/conf/sets/{set_id}/members"}
    itemized = sim.create_set("plain", matching)
    assert "query" not in alma(sim).get(f"/conf/sets/{itemized}").json()


def test_logical_set_members_follow_the_records(sim: Simulator, collembola: tuple[str, list[str]]) -> None:
    set_id, matching = collembola
    client = alma(sim)
    assert members_of(client, set_id) == matching == sim.set_members(set_id)
    sim.add_records([record("991000000000604641", "Collembola, a second look", 6)])
    assert client.get(f"/conf/sets/{set_id}").json()["number_of_members"]["value"] == 4
    assert client.get(f"/conf/sets/{set_id}/members", params={"limit": 0}).json() == {"total_record_count": 4}
    assert members_of(client, set_id) == [*matching, "991000000000604641"]
    xml = parse_xml(alma(sim, "xml").get(f"/conf/sets/{set_id}/members", params={"limit": 100}).content)
    assert [m.findtext("id") for m in xml] == [*matching, "991000000000604641"]


def test_logical_set_queries_combine_and_list_by_type(sim: Simulator) -> None:
    ids = sim.generate_records(3, profile="problems")  # READY, NEEDS_COPY, NEEDS_FIX: all dcap01
    marc = sim.generate_records(7, profile="problems")[6]  # NOT_DC: a MARC record
    assert sim.records[marc].record_format == "marc21"
    dcap = sim.create_logical_set("All Digital Titles in DCAP01 Format", {"record_format": "DCAP01"})
    picked = sim.create_logical_set("two of them", SetQuery(mms_ids=(ids[2], ids[0]), record_format="dcap01"))
    assert sim.set_members(picked) == [ids[0], ids[2]]  # institution order, not the order asked for
    assert all(sim.records[m].record_format == "dcap01" for m in sim.set_members(dcap))
    assert marc not in sim.set_members(dcap)
    assert set(ids) <= set(sim.set_members(dcap))
    sim.create_set("itemized", ids)
    client = alma(sim)
    logical = client.get("/conf/sets", params={"set_type": "LOGICAL", "limit": 100}).json()
    assert sorted(s["name"] for s in logical["set"]) == ["All Digital Titles in DCAP01 Format", "two of them"]
    itemized = client.get("/conf/sets", params={"set_type": "ITEMIZED"}).json()
    assert [s["name"] for s in itemized["set"]] == ["itemized"]
    with pytest.raises(ValueError, match="at least one"):
        sim.create_logical_set("empty", {})
    with pytest.raises(ValueError, match="unknown key 'colour'"):
        sim.create_logical_set("bad", {"colour": "red"})
    with pytest.raises(ValueError, match="already exists"):
        sim.create_logical_set("itemized", "x")


@pytest.mark.parametrize("fmt", ["xml", "json"])
def test_members_of_a_logical_set_cannot_be_managed(
    sim: Simulator, collembola: tuple[str, list[str]], fmt: str
) -> None:
    set_id, matching = collembola
    body = {"id": set_id, "members": {"member": [{"id": "991000000000204641"}]}}
    for op in ("add_members", "delete_members", "replace_members"):
        reply = alma(sim, fmt).post(f"/conf/sets/{set_id}", params={"op": op}, json=body)
        code, message = error_of(reply)
        assert code == "60112" and message.startswith("Invalid set type")
    assert sim.set_members(set_id) == matching


def test_a_run_on_a_logical_set_works_on_the_records_matching_at_submission(
    sim: Simulator, clock: ManualClock, collembola: tuple[str, list[str]]
) -> None:
    set_id, matching = collembola
    client = alma(sim)
    run(client, MIGRATE, set_id)
    sim.add_records([record("991000000000604641", "Collembola, late", 6)])
    clock.advance(3600)
    (result,) = sim.runs_for(set_id)
    assert result.members == tuple(matching) and result.counters["Records processed"] == 3
    assert sim.records["991000000000604641"].hidden_handle is None
    assert all(sim.records[m].hidden_handle for m in matching)
    run(client, MIGRATE, set_id)  # the next run sees the record that matches now
    clock.advance(3600)
    assert sim.runs_for(set_id)[1].members == (*matching, "991000000000604641")
    assert sim.records["991000000000604641"].hidden_handle == "11084/6"


# --- from_logical_set ----------------------------------------------------------------------------------


def _snapshot_body(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "type": {"value": "ITEMIZED"},
        "content": {"value": "BIB_MMS"},
        "description": "hwf snapshot",
        "private": {"value": "false"},
    }


def test_from_logical_set_fills_gradually(clock: ManualClock) -> None:
    sim = Simulator(Scenario(per_second_limit=0, from_logical_set_seconds=10), clock=clock)
    ids = sim.generate_records(250, profile="clean", title_prefix="Poweshiek ")
    sim.generate_records(5, profile="clean")  # other titles: not in the logical set
    logical = sim.create_logical_set("Poweshiek", "poweshiek")
    client = alma(sim)
    reply = client.post("/conf/sets", params={"from_logical_set": logical}, json=_snapshot_body("Poweshiek (snap)"))
    assert reply.status_code == 200, reply.text
    created = reply.json()
    snap = created["id"]
    assert created["type"] == {"value": "ITEMIZED", "desc": "Itemized"} and created["name"] == "Poweshiek (snap)"
    assert created["description"] == "hwf snapshot" and created["number_of_members"]["value"] == 0
    assert "query" not in created
    counts = []
    for _ in range(6):
        counts.append(client.get(f"/conf/sets/{snap}/members", params={"limit": 0}).json()["total_record_count"])
        clock.advance(2.5)
    assert counts == [0, 62, 125, 187, 250, 250]
    sim.generate_records(2, profile="clean", title_prefix="Poweshiek ")  # joins the logical set, not the snapshot
    assert members_of(client, snap) == ids and len(sim.set_members(logical)) == 252
    assert alma(sim).get(f"/conf/sets/{logical}").json()["type"]["value"] == "LOGICAL"
    state = admin(sim).get("/state").json()["sets"]
    assert state[snap]["from_logical_set"] == logical and state[snap]["member_count"] == 250
    assert state[logical]["type"] == "LOGICAL" and state[logical]["query"] == {"title_contains": "poweshiek"}


def test_from_logical_set_xml_and_immediate_fill(clock: ManualClock) -> None:
    sim = Simulator(Scenario(per_second_limit=0, from_logical_set_seconds=0), clock=clock)
    ids = sim.generate_records(3, profile="clean", title_prefix="Grinnell Herald: ")
    logical = sim.create_logical_set("Herald", {"title_contains": "herald"})
    body = "<set><name>Herald snapshot</name><type>ITEMIZED</type><content>BIB_MMS</content></set>"
    reply = alma(sim, "xml").post(
        "/conf/sets",
        params={"from_logical_set": logical},
        content=body,
        headers={"Content-Type": "application/xml"},
    )
    root = parse_xml(reply.content)
    assert root.findtext("type") == "ITEMIZED" and root.findtext("number_of_members") == "3"
    assert sim.set_members(root.findtext("id")) == ids


@pytest.mark.parametrize("fmt", ["xml", "json"])
def test_from_logical_set_refusals(sim: Simulator, collembola: tuple[str, list[str]], fmt: str) -> None:
    logical, matching = collembola
    itemized = sim.create_set("itemized", matching)
    client = alma(sim, fmt)

    def create(source: str, body: dict[str, Any]) -> httpx.Response:
        return client.post("/conf/sets", params={"from_logical_set": source}, json=body)

    assert error_of(create("123", _snapshot_body("a"))) == ("402264", "Set ID is invalid: 123")
    code, message = error_of(create(itemized, _snapshot_body("b")))
    assert code == "402264" and "not a logical set" in message
    assert error_of(create(logical, _snapshot_body("itemized")))[0] == "402263"
    assert error_of(create(logical, {**_snapshot_body("c"), "type": {"value": "LOGICAL"}}))[0] == "402265"
    assert sorted(sim.set_ids()) == ["Collembola titles", "itemized"]
    assert error_of(client.post("/conf/sets", json={**_snapshot_body("d"), "type": {"value": "LOGICAL"}}))[0] == (
        "402265"
    )


def test_manage_members_while_a_snapshot_fills(clock: ManualClock) -> None:
    sim = Simulator(Scenario(per_second_limit=0, from_logical_set_seconds=4), clock=clock)
    ids = sim.generate_records(4, profile="clean", title_prefix="Scarlet ")
    logical = sim.create_logical_set("Scarlet", "scarlet")
    client = alma(sim)
    snap = client.post("/conf/sets", params={"from_logical_set": logical}, json=_snapshot_body("s")).json()["id"]
    clock.advance(2)
    body = {"id": snap, "members": {"member": [{"id": ids[0]}]}}
    removed = client.post(f"/conf/sets/{snap}", params={"op": "delete_members"}, json=body)
    assert removed.json()["number_of_members"]["value"] == 1  # two were in; one taken out
    clock.advance(2)
    assert members_of(client, snap) == ids[1:]


# --- jobs Alma will not run through the API ------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["xml", "json"])
@pytest.mark.parametrize("named", [MIGRATE, "migration"])
def test_multi_task_job_is_refused_402231(clock: ManualClock, fmt: str, named: str) -> None:
    sim = Simulator(Scenario(per_second_limit=0, multi_task_jobs=(named,)), clock=clock)
    set_id = sim.create_set("s", sim.generate_records(2, profile="clean"))
    assert error_of(submit(alma(sim, fmt), MIGRATE, set_id)) == ("402231", MULTI_TASK_MESSAGE)
    assert sim.job_runs == []
    run(alma(sim), COPY, set_id)  # other jobs run as before
    instance = sim.run_job_by_hand(MIGRATE, set_id)  # a person can still run it
    clock.advance(3600)
    assert [(r.job_id, r.origin, r.instance_id) for r in sim.job_runs][1] == (MIGRATE, "run_a_job", instance)


@pytest.mark.parametrize("fmt", ["xml", "json"])
def test_overlapping_run_is_refused_60347(clock: ManualClock, fmt: str) -> None:
    sim = Simulator(Scenario(per_second_limit=0, refuse_overlapping_runs=True), clock=clock)
    one = sim.create_set("one", sim.generate_records(2, profile="clean"))
    two = sim.create_set("two", sim.generate_records(2, profile="clean"))
    client = alma(sim, fmt)
    json_client = alma(sim)
    run(json_client, COPY, one)
    assert error_of(submit(client, COPY, two)) == ("60347", OVERLAP_MESSAGE)
    run(json_client, MIGRATE, two)  # another job: no overlap
    clock.advance(3.5)  # the copy run has ended
    run(json_client, COPY, two)
    sim.run_job_by_hand(MIGRATE, one)  # a person's run of the job counts as running too
    clock.advance(3.5)
    sim.run_job_by_hand(MIGRATE, one)
    assert error_of(submit(client, MIGRATE, two))[0] == "60347"
    assert [r.job_id for r in sim.job_runs] == [COPY, MIGRATE, COPY, MIGRATE, MIGRATE]


def test_overlap_fault_refuses_the_next_n_runs(sim: Simulator, clock: ManualClock) -> None:
    set_id = sim.create_set("s", sim.generate_records(1, profile="clean"))
    client = admin(sim)
    assert client.post("/faults", json={"refuse_run_overlap": 2}).json()["refuse_run_overlap"] == 2
    assert error_of(submit(alma(sim, "xml"), COPY, set_id)) == ("60347", OVERLAP_MESSAGE)
    assert error_of(submit(alma(sim), COPY, set_id)) == ("60347", OVERLAP_MESSAGE)
    run(alma(sim), COPY, set_id)
    assert sim.faults.refuse_run_overlap == 0 and len(sim.job_runs) == 1


# --- runs made by a person --------------------------------------------------------------------------------


def test_run_job_by_hand_looks_like_alma_job_history(sim: Simulator, clock: ManualClock) -> None:
    ids = sim.generate_records(3, profile="clean")
    set_id = sim.create_set("Collembola Handle test", ids)
    instance_id = sim.run_job_by_hand(MIGRATE, set_id, user="000538225", user_desc="Doe, Jane")
    client = alma(sim)
    body = client.get(f"/conf/jobs/{MIGRATE}/instances/{instance_id}").json()
    assert body["name"] == "DG Handle Migration - Collembola Handle test - 10/05/2025 04:11:32 CDT"
    assert body["submitted_by"] == {"value": "000538225", "desc": "Doe, Jane"}
    assert body["status"]["value"] == "QUEUED" and body["job_info"]["id"] == MIGRATE
    listing = client.get(f"/conf/jobs/{MIGRATE}/instances").json()
    assert [i["id"] for i in listing["job_instance"]] == [instance_id]
    clock.advance(3600)
    assert all(sim.records[m].hidden_handle for m in ids)  # the same effect as an API run
    (log,) = sim.runs_for(set_id)
    assert (log.origin, log.submitted_by, log.job_name, log.status) == (
        "run_a_job",
        "000538225",
        None,
        "COMPLETED_SUCCESS",
    )
    assert log.members == tuple(ids) and log.name == body["name"]
    xml = parse_xml(alma(sim, "xml").get(f"/conf/jobs/{MIGRATE}/instances/{instance_id}").content)
    assert xml.findtext("submitted_by") == "000538225" and xml.find("submitted_by").get("desc") == "Doe, Jane"
    default = sim.run_job_by_hand(COPY, set_id)
    assert client.get(f"/conf/jobs/{COPY}/instances/{default}").json()["submitted_by"]["value"] == "jdoe"
    with pytest.raises(ValueError, match="no job"):
        sim.run_job_by_hand("M999", set_id)
    with pytest.raises(ValueError, match="no set"):
        sim.run_job_by_hand(MIGRATE, "123")


def test_api_runs_still_say_exl_api_and_hand_runs_do_not_fill_the_api_slots(sim: Simulator, clock: ManualClock) -> None:
    set_id = sim.create_set("s", sim.generate_records(1, profile="clean"))
    client = alma(sim)
    for _ in range(3):
        sim.run_job_by_hand(COPY, set_id)
    first = run(client, MIGRATE, set_id)
    body = client.get(f"/conf/jobs/{MIGRATE}/instances/{first}").json()
    assert body["submitted_by"] == {"value": "exl_api", "desc": "Ex Libris, API"}
    run(client, MIGRATE, set_id)
    run(client, MIGRATE, set_id)
    assert error_of(submit(client, INTEGRATE, set_id))[0] == "402222"  # three API runs going
    clock.advance(10)
    run(client, COPY, set_id)
    run(client, COPY, set_id)
    assert error_of(submit(client, COPY, set_id))[0] == "402223"  # the hand runs count for the hour
    assert [r.origin for r in sim.job_runs] == ["run_a_job"] * 3 + ["api"] * 5


def test_press_integration_run_and_its_counters(clock: ManualClock) -> None:
    sim = Simulator(Scenario(per_second_limit=0, job_seconds={"integration": 100}), clock=clock)
    ids = sim.generate_records(250, profile="clean")
    set_id = sim.create_set("hwf integration batch 1", ids)
    instance_id = sim.press_integration_run("hwf integration batch 1", user="jdoe")
    client = alma(sim)
    url = f"/conf/jobs/{INTEGRATE}/instances/{instance_id}"
    body = client.get(url).json()
    assert body["name"] == "Handle integration" and body["job_info"]["id"] == INTEGRATE
    assert body["submitted_by"]["value"] == "jdoe" and body["submitted_by"]["desc"]
    seen = []
    for moment in (5, 15, 50, 85, 95, 101):
        clock.set(body_time(body["submit_time"], moment))
        current = client.get(url).json()
        counters = {c["type"]["value"]: c["value"] for c in current.get("counter", [])}
        seen.append((current["status"]["value"], counters.get("handle_integration.records_processed")))
    assert seen == [
        ("QUEUED", None),
        ("INITIALIZING", None),
        ("RUNNING", "100"),
        ("RUNNING", "200"),
        ("FINALIZING", "250"),
        ("COMPLETED_SUCCESS", "250"),
    ]
    final = {c["type"]["desc"]: c["value"] for c in client.get(url).json()["counter"]}
    assert final == {
        "Records processed": "250",
        "Records with exceptions": "0",
        "Handles created": "250",
        "Handles updated": "0",
    }
    assert all(sim.handles[sim.records[m].hidden_handle] == sim.primo_url(m) for m in ids[:5])
    (log,) = sim.runs_for(set_id)
    assert (log.origin, log.name, log.submitted_by, log.members) == (
        "integration_profile",
        "Handle integration",
        "jdoe",
        tuple(ids),
    )
    with pytest.raises(ValueError, match="no set named"):
        sim.press_integration_run("no such set")


def body_time(submit_time: str, seconds: float) -> datetime:
    return datetime.fromisoformat(submit_time.replace("Z", "+00:00")) + timedelta(seconds=seconds)


def test_api_run_counters_while_running(clock: ManualClock) -> None:
    sim = Simulator(Scenario(per_second_limit=0, job_seconds={"copy": 10}), clock=clock)
    set_id = sim.create_set("s", sim.generate_records(30, profile="clean"))
    instance_id = run(alma(sim), COPY, set_id)
    clock.advance(5)  # running, no bulk of 100 done yet
    body = alma(sim).get(f"/conf/jobs/{COPY}/instances/{instance_id}").json()
    assert body["status"]["value"] == "RUNNING"
    assert body["counter"] == [
        {"type": {"value": "dcap01_normalization.records_processed", "desc": "Records processed"}, "value": "0"}
    ]
    assert sim.job_runs[0].counters == {"Records processed": 0}


def test_press_run_on_a_logical_set_and_without_integration_job(clock: ManualClock) -> None:
    sim = Simulator(Scenario(per_second_limit=0), clock=clock)
    ids = sim.generate_records(2, profile="clean", title_prefix="Lyceum ")
    sim.create_logical_set("Lyceum", "lyceum")
    sim.press_integration_run("Lyceum")
    assert sim.job_runs[0].members == tuple(ids)
    other = Simulator(Scenario(jobs=Scenario().jobs[:2]), clock=clock)
    other.create_set("x", [])
    with pytest.raises(ValueError, match="no integration job"):
        other.press_integration_run("x")


# --- admin endpoints and scenario ---------------------------------------------------------------------


def test_admin_endpoints_for_people_and_logical_sets(sim: Simulator, clock: ManualClock) -> None:
    client = admin(sim)
    ids = client.post("/records", json={"count": 2, "profile": "clean", "title_prefix": "Cyclone "}).json()["mms_ids"]
    assert all(sim.records[m].title.startswith("Cyclone ") for m in ids)
    logical = client.post("/logical-sets", json={"name": "Cyclone", "query": {"title_contains": "cyclone"}}).json()
    assert sim.set_members(logical["id"]) == ids
    set_id = client.post("/sets", json={"name": "batch", "mms_ids": ids}).json()["id"]
    by_hand = client.post("/run-job", json={"job_id": MIGRATE, "set_id": set_id, "user": "000538225"})
    assert by_hand.status_code == 200
    answer = by_hand.json()
    assert answer["job_id"] == MIGRATE and answer["name"].startswith("DG Handle Migration - batch - 10/05/2025")
    pressed = client.post("/press-run", json={"set_name": "batch"}).json()
    assert pressed["job_id"] == INTEGRATE and pressed["name"] == "Handle integration"
    runs = client.get("/state").json()["job_runs"]
    assert [(r["instance_id"], r["origin"], r["submitted_by"]) for r in runs] == [
        (answer["instance_id"], "run_a_job", "000538225"),
        (pressed["instance_id"], "integration_profile", "jdoe"),
    ]
    assert runs[0]["members"] == ids and runs[0]["member_count"] == 2 and runs[1]["name"] == "Handle integration"
    bad = [
        ("/press-run", {"set_name": "nope"}, "no set named 'nope'"),
        ("/press-run", {}, "set_name"),
        ("/run-job", {"job_id": "M999", "set_id": set_id}, "no job 'M999'"),
        ("/run-job", {"job_id": MIGRATE, "set_id": "123"}, "no set with id '123'"),
        ("/run-job", {"job_id": MIGRATE}, "set_id"),
        ("/run-job", {"job_id": MIGRATE, "set_id": set_id, "user": 5}, "user"),
        ("/run-job", {"job_id": MIGRATE, "set_id": set_id, "user": "exl_api"}, "exl_api"),
        ("/logical-sets", {"name": "x", "query": {"colour": "red"}}, "colour"),
        ("/logical-sets", {"name": "x"}, "query"),
        ("/logical-sets", {"name": "Cyclone", "query": "z"}, "already exists"),
        ("/records", {"count": 1, "title_prefix": 3}, "title_prefix"),
    ]
    for path, body, words in bad:
        reply = client.post(path, json=body)
        assert reply.status_code == 400 and words in reply.json()["error"], (path, reply.text)
    assert len(sim.job_runs) == 2


def test_big_runs_are_summarized_in_the_state_unless_full(sim: Simulator) -> None:
    set_id = sim.create_set("big", sim.generate_records(1001, profile="clean"))
    sim.run_job_by_hand(COPY, set_id)
    client = admin(sim)
    (summary,) = client.get("/state").json()["job_runs"]
    assert summary["member_count"] == 1001 and "members" not in summary
    assert len(client.get("/state", params={"full": "1"}).json()["job_runs"][0]["members"]) == 1001


def test_scenario_settings_for_first_contact(tmp_path: Path) -> None:
    path = tmp_path / "scenario.toml"
    path.write_text(
        """
from_logical_set_seconds = 0.5
multi_task_jobs = ["migration", "M50700"]
refuse_overlapping_runs = true
[records]
count = 6
profile = "clean"
[[logical_sets]]
name = "All Digital Titles in DCAP01 Format"
record_format = "dcap01"
description = "everything digital"
[faults]
refuse_run_overlap = 1
""",
        encoding="utf-8",
    )
    scenario = load_scenario(path)
    assert scenario.from_logical_set_seconds == 0.5 and scenario.refuse_overlapping_runs is True
    assert scenario.multi_task_jobs == ("migration", "M50700") and scenario.faults.refuse_run_overlap == 1
    sim = Simulator(scenario)
    logical = sim.set_ids()["All Digital Titles in DCAP01 Format"]
    assert len(sim.set_members(logical)) == 6
    assert alma(sim).get(f"/conf/sets/{logical}").json()["description"] == "everything digital"
    assert Scenario().from_logical_set_seconds == 3.0 and Scenario().multi_task_jobs == ()


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("multi_task_jobs = ['M1']", "key multi_task_jobs: 'M1' is neither"),
        ("multi_task_jobs = 'migration'", "key multi_task_jobs: has the wrong type"),
        ("from_logical_set_seconds = -1", "key from_logical_set_seconds: must be at least 0"),
        ("refuse_overlapping_runs = 1", "key refuse_overlapping_runs: has the wrong type"),
        ("[[logical_sets]]\nname = 'x'", "key logical_sets[0].title_contains: a logical set query needs"),
        ("[[logical_sets]]\nname = 'x'\nmms_ids = ['abc']", "key logical_sets[0].mms_ids: mms_ids must be"),
        ("[[logical_sets]]\nname = 'x'\ntitle_contains = 3", "key logical_sets[0].title_contains: has the wrong"),
        ("[[logical_sets]]\nname = 'x'\nrecord_format = 'dc'\nsize = 3", "key logical_sets[0].size: unknown key"),
        ("[faults]\nrefuse_run_overlap = 0.5", "key faults.refuse_run_overlap: must be a whole number"),
    ],
)
def test_scenario_errors_for_first_contact(tmp_path: Path, text: str, key: str) -> None:
    path = tmp_path / "scenario.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_scenario(path)
    assert key in str(caught.value)


def test_scenario_logical_set_name_clash(tmp_path: Path) -> None:
    path = tmp_path / "scenario.toml"
    path.write_text(
        "[[sets]]\nname = 'x'\ncount = 1\n[[logical_sets]]\nname = 'x'\ntitle_contains = 'a'\n", encoding="utf-8"
    )
    with pytest.raises(ConfigError, match="already exists"):
        Simulator(load_scenario(path))


# --- over real HTTP: `hwf sim serve` ------------------------------------------------------------------


def test_hwf_sim_serve_first_contact(tmp_path: Path) -> None:
    served = Served(tmp_path, multi_task_jobs=["migration"], from_logical_set_seconds=0.6, job_seconds=0.3)
    try:
        ids = served.call("POST", "/_sim/records", {"count": 3, "profile": "clean", "title_prefix": "Tanager "})
        served.call("POST", "/_sim/records", {"count": 2, "profile": "clean"})
        logical = served.call("POST", "/_sim/logical-sets", {"name": "Tanager", "query": {"title_contains": "tanager"}})
        headers = {"Authorization": "apikey k", "Accept": "application/json"}
        with httpx.Client(base_url=served.url + "/almaws/v1", headers=headers, timeout=10, trust_env=False) as client:
            got = client.get(f"/conf/sets/{logical['id']}").json()
            assert got["type"]["value"] == "LOGICAL" and got["number_of_members"]["value"] == 3
            reply = client.post(
                "/conf/sets", params={"from_logical_set": logical["id"]}, json=_snapshot_body("Tanager (snapshot)")
            )
            snap = reply.json()["id"]
            assert reply.json()["number_of_members"]["value"] < 3
            deadline = time.monotonic() + 10
            while members_of(client, snap) != ids["mms_ids"]:
                assert time.monotonic() < deadline, "the snapshot never filled"
                time.sleep(0.1)
            assert error_of(submit(client, MIGRATE, snap)) == ("402231", MULTI_TASK_MESSAGE)
            xml = client.post(
                f"/conf/jobs/{MIGRATE}",
                params={"op": "run"},
                json=run_body(snap),
                headers={"Accept": "application/xml"},
            )
            assert error_of(xml) == ("402231", MULTI_TASK_MESSAGE)
            by_hand = served.call("POST", "/_sim/run-job", {"job_id": MIGRATE, "set_id": snap, "user": "jdoe"})
            pressed = served.call("POST", "/_sim/press-run", {"set_name": "Tanager (snapshot)"})
            listing = client.get(f"/conf/jobs/{INTEGRATE}/instances").json()["job_instance"]
            assert [(i["id"], i["name"], i["submitted_by"]["value"]) for i in listing] == [
                (pressed["instance_id"], "Handle integration", "jdoe")
            ]
            hand = client.get(f"/conf/jobs/{MIGRATE}/instances/{by_hand['instance_id']}").json()
            assert hand["name"].startswith("DG Handle Migration - Tanager (snapshot) - ")
        runs = served.runs_for(snap)
        assert [(r["origin"], r["members"]) for r in runs] == [
            ("run_a_job", ids["mms_ids"]),
            ("integration_profile", ids["mms_ids"]),
        ]
        request = httpx.post(served.url + "/_sim/press-run", json={"set_name": "nope"}, timeout=10, trust_env=False)
        assert request.status_code == 400 and request.json() == {"error": "no set named 'nope'"}
    finally:
        served.stop()
