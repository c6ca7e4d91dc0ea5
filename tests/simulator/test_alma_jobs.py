"""Simulator jobs: op=run validation and thresholds, instance lifecycle and lists, and the job effects."""

from __future__ import annotations

from email.utils import parsedate_to_datetime

import httpx
import pytest

from orchestrator.simulator import ManualClock, Scenario, SimRecord, Simulator, dc_record_xml, marc_record_xml
from orchestrator.xmlsafe import parse_xml
from tests.support.sim import raw_alma

BASE = "http://alma.test/almaws/v1"
COPY, MIGRATE, INTEGRATE = "M1234567890000561", "M2234567890000561", "M50700"
HDL = "http://hdl.handle.net/11084/"


def client_for(sim: Simulator, fmt: str = "json") -> httpx.Client:
    return raw_alma(sim, fmt, BASE)


def run(client: httpx.Client, job_id: str, set_id: str, job_name: str | None = None) -> str:
    params = [{"name": {"value": "set_id"}, "value": set_id}]
    if job_name:
        params.append({"name": {"value": "job_name"}, "value": job_name})
    reply = client.post(f"/conf/jobs/{job_id}", params={"op": "run"}, json={"parameter": params})
    assert reply.status_code == 200, reply.text
    return str(reply.json()["additional_info"]["link"].rsplit("/", 1)[-1])


def error_code(reply: httpx.Response) -> str:
    assert reply.status_code == 400, reply.text
    return str(reply.json()["errorList"]["error"][0]["errorCode"])


def dc(mms: str, number: int, placement: str) -> SimRecord:
    xml = dc_record_xml(
        institution="01GCL_INST",
        mms_id=mms,
        title=f"T{number}",
        handle_url=f"{HDL}{number}",
        placement=placement,
        local_id=f"grinnell:{number}",
    )
    return SimRecord(mms, f"T{number}", xml=xml)


# --- submission ------------------------------------------------------------------------------------


def test_run_reply_xml_and_json(sim: Simulator, clock: ManualClock) -> None:
    set_id = sim.create_set("s", sim.generate_records(2))
    body = (
        f"<job><parameters><parameter><name>set_id</name><value>{set_id}</value></parameter>"
        "<parameter><name>job_name</name><value>hwf:abc:copy:1</value></parameter></parameters></job>"
    )
    reply = client_for(sim, "xml").post(
        f"/conf/jobs/{COPY}", params={"op": "run"}, content=body, headers={"Content-Type": "application/xml"}
    )
    root = parse_xml(reply.content)
    assert root.tag == "job" and root.findtext("id") == COPY and root.get("link") == f"{BASE}/conf/jobs/{COPY}"
    info = root.find("additional_info")
    instance_id = info.get("link").rsplit("/", 1)[-1]
    assert info.get("link") == f"{BASE}/conf/jobs/{COPY}/instances/{instance_id}"
    assert info.text.startswith(f"Job no. {instance_id} triggered on ")
    assert parsedate_to_datetime(info.text.split(" triggered on ")[1]) == clock().replace(microsecond=0)
    assert [p.findtext("name") for p in root.iter("parameter")] == ["set_id", "job_name"]
    reply = client_for(sim).post(
        f"/conf/jobs/{MIGRATE}",
        params={"op": "run"},
        json={"parameters": {"parameter": [{"name": {"value": "set_id"}, "value": set_id}]}},
    )
    body_json = reply.json()
    assert body_json["type"] == {"value": "MANUAL", "desc": "Manual"}
    assert body_json["parameter"] == [{"name": {"value": "set_id"}, "value": set_id}]
    assert body_json["additional_info"]["value"].startswith("Job no. ")
    assert [r.job_id for r in sim.runs_for(set_id)] == [COPY, MIGRATE]


def test_run_validation_errors(sim: Simulator) -> None:
    set_id = sim.create_set("v", sim.generate_records(1))
    client = client_for(sim)
    good = {"parameter": [{"name": {"value": "set_id"}, "value": set_id}]}
    assert error_code(client.post(f"/conf/jobs/{COPY}", json=good)) == "402220"
    assert error_code(client.post(f"/conf/jobs/{COPY}", params={"op": "stop"}, json=good)) == "402221"
    assert error_code(client.post("/conf/jobs/X12", params={"op": "run"}, json=good)) == "402215"
    assert error_code(client.post("/conf/jobs/M999", params={"op": "run"}, json=good)) == "402216"
    assert error_code(client.post(f"/conf/jobs/{COPY}", params={"op": "run"}, json={})) == "402228"
    empty = {"parameter": [{"name": {"value": "set_id"}, "value": ""}]}
    assert error_code(client.post(f"/conf/jobs/{COPY}", params={"op": "run"}, json=empty)) == "402229"
    unknown = {"parameter": [{"name": {"value": "set_id"}, "value": "123"}]}
    assert error_code(client.post(f"/conf/jobs/{COPY}", params={"op": "run"}, json=unknown)) == "60107"
    assert sim.job_runs == []


def test_running_and_hourly_thresholds(sim: Simulator, clock: ManualClock) -> None:
    set_id = sim.create_set("t", sim.generate_records(1))
    client = client_for(sim)
    for _ in range(3):
        run(client, COPY, set_id)
    body = {"parameter": [{"name": {"value": "set_id"}, "value": set_id}]}
    blocked = client.post(f"/conf/jobs/{MIGRATE}", params={"op": "run"}, json=body)
    assert error_code(blocked) == "402222"
    assert blocked.json()["errorList"]["error"][0]["errorMessage"] == "Execution threshold reached."
    clock.advance(10)
    run(client, COPY, set_id)
    run(client, COPY, set_id)
    clock.advance(10)
    assert error_code(client.post(f"/conf/jobs/{COPY}", params={"op": "run"}, json=body)) == "402223"
    run(client, MIGRATE, set_id)  # another job is fine
    clock.advance(3600)
    run(client, COPY, set_id)
    assert len(sim.job_runs) == 7


def test_thresholds_can_be_switched_off(clock: ManualClock) -> None:
    sim = Simulator(Scenario(enforce_job_thresholds=False), clock=clock)
    set_id = sim.create_set("t", sim.generate_records(1))
    client = client_for(sim)
    for _ in range(7):
        run(client, COPY, set_id)
    assert len(sim.runs_for(set_id)) == 7


def test_job_details_and_control_number(clock: ManualClock) -> None:
    sim = Simulator(Scenario(migration_requires_control_number=True), clock=clock)
    set_id = sim.create_set("c", sim.generate_records(1))
    client = client_for(sim)
    details = client.get(f"/conf/jobs/{MIGRATE}").json()
    names = [p["name"]["value"] for p in details["parameter"]]
    assert names == ["set_id", "job_name", "task_HandleMigration_controlNumber"]
    body = {"parameter": [{"name": {"value": "set_id"}, "value": set_id}]}
    reply = client.post(f"/conf/jobs/{MIGRATE}", params={"op": "run"}, json=body)
    assert error_code(reply) == "402228" and "controlNumber" in reply.text
    body["parameter"].append({"name": {"value": "task_HandleMigration_controlNumber"}, "value": "Handles"})
    assert client.post(f"/conf/jobs/{MIGRATE}", params={"op": "run"}, json=body).status_code == 200


def test_job_list(sim: Simulator) -> None:
    client = client_for(sim)
    listing = client.get("/conf/jobs", params={"type": "MANUAL", "limit": 100}).json()
    by_name = {j["name"]: j for j in listing["job"]}
    assert by_name["DG Handle Migration"]["id"] == MIGRATE
    assert by_name["Handle Integration"]["category"]["value"] == "HANDLE_INTEGRATION"
    assert listing["total_record_count"] == len(listing["job"]) >= 4
    assert client.get("/conf/jobs", params={"category": "REPOSITORY"}).json()["total_record_count"] == 1
    assert client.get("/conf/jobs", params={"type": "SCHEDULED"}).json() == {"total_record_count": 0}
    assert error_code(client.get("/conf/jobs", params={"type": "BOGUS"})) == "40166410"
    root = parse_xml(client_for(sim, "xml").get("/conf/jobs", params={"limit": 2}).content)
    assert root.tag == "jobs" and len(root.findall("job")) == 2


# --- lifecycle -----------------------------------------------------------------------------------


def test_lifecycle_phases_and_fields(clock: ManualClock) -> None:
    sim = Simulator(Scenario(job_seconds={"copy": 10.0}), clock=clock)
    set_id = sim.create_set("l", sim.generate_records(2))
    client = client_for(sim)
    instance_id = run(client, COPY, set_id, job_name="hwf:tok")
    url = f"/conf/jobs/{COPY}/instances/{instance_id}"
    seen = []
    progress = []
    for _ in range(11):
        body = client.get(url).json()
        seen.append(body["status"]["value"])
        progress.append(body["progress"])
        clock.advance(1.0)
    assert seen[0] == "QUEUED" and seen[1] == "INITIALIZING" and "FINALIZING" in seen
    assert seen[-1] == "COMPLETED_SUCCESS" and seen.index("RUNNING") < seen.index("FINALIZING")
    assert progress == sorted(progress) and progress[-1] == 100
    assert body["name"] == "hwf:tok - 2025-10-05 4:11 AM"
    assert body["submitted_by"] == {"value": "exl_api", "desc": "Ex Libris, API"}
    assert body["submit_time"] == "2025-10-05T09:11:32.592Z" and body["end_time"] == "2025-10-05T09:11:42.592Z"
    assert body["status_date"] == "2025-10-05Z"
    assert body["alert"][0]["value"] == "alert_general_success"
    counters = {c["type"]["desc"]: c["value"] for c in body["counter"]}
    assert counters["Records processed"] == "2"
    assert body["job_info"]["id"] == COPY
    xml = parse_xml(client_for(sim, "xml").get(url).content)
    assert xml.tag == "job_instance" and xml.find("counters/counter/type").get("desc") == "Records processed"
    assert error_code(client.get(f"{url}/events")) == "60332"
    assert error_code(client.get(f"/conf/jobs/{COPY}/instances/42")) == "402218"


def test_fractional_durations_and_empty_set(clock: ManualClock) -> None:
    sim = Simulator(Scenario(job_seconds={"copy": 0.05}), clock=clock)
    client = client_for(sim)
    instance_id = run(client, COPY, sim.create_set("empty", []))
    clock.advance(0.06)
    body = client.get(f"/conf/jobs/{COPY}/instances/{instance_id}").json()
    assert body["status"]["value"] == "COMPLETED_NO_BULKS"


def test_instance_list_filters_and_order(sim: Simulator, clock: ManualClock) -> None:
    set_id = sim.create_set("i", sim.generate_records(1))
    client = client_for(sim)
    first = run(client, COPY, set_id)
    clock.advance(86400)
    second = run(client, COPY, set_id)
    listing = client.get(f"/conf/jobs/{COPY}/instances").json()
    assert [i["id"] for i in listing["job_instance"]] == [second, first]
    day = client.get(
        f"/conf/jobs/{COPY}/instances",
        params={"submit_date_from": "2025-10-05", "submit_date_to": "2025-10-05"},
    ).json()
    assert [i["id"] for i in day["job_instance"]] == [first] and day["total_record_count"] == 1
    clock.advance(10)
    done = client.get(f"/conf/jobs/{COPY}/instances", params={"status": "COMPLETED_SUCCESS", "limit": 1}).json()
    assert done["total_record_count"] == 2 and len(done["job_instance"]) == 1
    root = parse_xml(client_for(sim, "xml").get(f"/conf/jobs/{COPY}/instances").content)
    assert root.tag == "job_instances" and root.get("total_record_count") == "2"
    assert client.get(f"/conf/jobs/{MIGRATE}/instances").json() == {"total_record_count": 0}


# --- effects ---------------------------------------------------------------------------------------


def _finish(clock: ManualClock) -> None:
    clock.advance(3600)


@pytest.mark.parametrize("keeps", [True, False])
def test_copy_job_with_and_without_xsi_type(clock: ManualClock, keeps: bool) -> None:
    sim = Simulator(Scenario(copy_keeps_xsi_type=keeps), clock=clock)
    sim.add_records([dc("991000000000104641", 88, "dcterms"), dc("991000000000204641", 89, "dc")])
    before = sim.records["991000000000104641"].xml
    ready_before = sim.records["991000000000204641"].xml
    run(client_for(sim), COPY, sim.create_set("c", list(sim.records)))
    _finish(clock)
    after = sim.records["991000000000104641"].xml
    url = f"{HDL}88"
    typed = f'<dcterms:identifier xsi:type="dcterms:URI">{url}</dcterms:identifier>'.encode()
    added = (
        f'<dc:identifier xsi:type="dcterms:URI">{url}</dc:identifier>'
        if keeps
        else f"<dc:identifier>{url}</dc:identifier>"
    )
    assert after == before.replace(typed, typed + added.encode())
    assert sim.records["991000000000204641"].xml == ready_before
    assert sim.job_runs[0].counters["Records modified"] == 1


def test_marc_record_fails_its_bulk(sim: Simulator, clock: ManualClock) -> None:
    records = [dc(f"9910000{n:05d}04641", n, "dcterms") for n in range(150)]
    marc = SimRecord(
        "991000009999904641", "MARC", "marc21", xml=marc_record_xml(mms_id="991000009999904641", title="M")
    )
    sim.add_records(records + [marc])
    ids = [r.mms_id for r in records]
    members = ids[:50] + [marc.mms_id] + ids[50:]
    untouched = {m: sim.records[m].xml for m in ids[:99]}
    run(client_for(sim), COPY, sim.create_set("bulk", members))
    _finish(clock)
    result = sim.job_runs[0]
    assert result.status == "COMPLETED_FAILED"
    assert result.counters == {
        "Records processed": 151,
        "Records with exceptions": 100,
        "Records modified": 51,
    }
    assert all(sim.records[m].xml == xml for m, xml in untouched.items())
    assert b"<dc:identifier xsi:type" in sim.records[ids[120]].xml


def test_migration_fills_and_skips_but_says_success(sim: Simulator, clock: ManualClock) -> None:
    ready, typed, missing = (
        dc("991000000000104641", 1, "dc"),
        dc("991000000000204641", 2, "dc_typed"),
        dc("991000000000304641", 3, "none"),
    )
    already = dc("991000000000404641", 4, "dc")
    already.hidden_handle = "11084/4"
    sim.add_records([ready, typed, missing, already])
    run(client_for(sim), MIGRATE, sim.create_set("m", list(sim.records)))
    _finish(clock)
    hidden = {mms: r.hidden_handle for mms, r in sim.records.items()}
    assert hidden == {
        ready.mms_id: "11084/1",
        typed.mms_id: None,
        missing.mms_id: None,
        already.mms_id: "11084/4",
    }
    result = sim.job_runs[0]
    assert result.status == "COMPLETED_SUCCESS"
    assert result.counters["Records skipped"] == 3
    assert (
        "Record 991000000000204641 was skipped. Reason: BIB record MMS ID 991000000000204641 "
        "does not have a handle identifier"
    ) in result.events
    assert (
        "Record 991000000000404641 was skipped. Reason: BIB record MMS ID 991000000000404641 "
        "already has a handle identifier 11084/4"
    ) in result.events


def test_integration_registers_hidden_handles(sim: Simulator, clock: ManualClock) -> None:
    ids = sim.generate_records(3, profile="clean")
    set_id = sim.create_set("ok", ids)
    client = client_for(sim)
    run(client, MIGRATE, set_id)
    _finish(clock)
    run(client, INTEGRATE, set_id)
    _finish(clock)
    for mms in ids:
        handle = sim.records[mms].hidden_handle
        assert handle == sim.records[mms].local_id.replace("grinnell:", "11084/")
        assert sim.handles[handle] == sim.primo_url(mms)
    assert sim.runs_for(set_id)[1].counters["Handles updated"] == 3


def test_integration_before_migration_shadows_the_legacy_handle(sim: Simulator, clock: ManualClock) -> None:
    record = dc("991000000000104641", 99, "dc")
    sim.add_records([record])
    set_id = sim.create_set("wrong order", [record.mms_id])
    client = client_for(sim)
    run(client, INTEGRATE, set_id)
    _finish(clock)
    minted = sim.records[record.mms_id].hidden_handle
    assert minted is not None and minted.startswith("11084/17") and len(minted.split("/")[1]) == 10
    assert sim.handles[minted] == sim.primo_url(record.mms_id)
    run(client, MIGRATE, set_id)
    _finish(clock)
    assert sim.records[record.mms_id].hidden_handle == minted
    expected = f"BIB record MMS ID {record.mms_id} already has a handle identifier {minted}"
    assert any(expected in event for event in sim.runs_for(set_id)[1].events)
    assert sim.runs_for(set_id)[1].status == "COMPLETED_SUCCESS"
    assert "11084/99" not in sim.handles


def test_effects_apply_exactly_once(sim: Simulator, clock: ManualClock) -> None:
    record = dc("991000000000104641", 5, "none")
    sim.add_records([record])
    run(client_for(sim), INTEGRATE, sim.create_set("once", [record.mms_id]))
    _finish(clock)
    first = dict(sim.handles)
    for _ in range(3):
        clock.advance(100)
        assert sim.handles == first and sim.job_runs[0].counters["Handles created"] == 1


def test_wrong_registration_survives_integration_and_duplicates(sim: Simulator, clock: ManualClock) -> None:
    a, b, c = (
        dc("991000000000104641", 7, "dc"),
        dc("991000000000204641", 8, "dc"),
        dc("991000000000304641", 7, "dc"),
    )
    sim.add_records([a, b, c])
    sim.misregister("11084/8", a.mms_id)
    set_id = sim.create_set("w", [a.mms_id, b.mms_id, c.mms_id])
    client = client_for(sim)
    run(client, MIGRATE, set_id)
    _finish(clock)
    run(client, INTEGRATE, set_id)
    _finish(clock)
    assert sim.handles["11084/8"] == sim.primo_url(a.mms_id)  # wrong record
    assert sim.handles["11084/7"] == sim.primo_url(c.mms_id)  # duplicate: the last registration wins
