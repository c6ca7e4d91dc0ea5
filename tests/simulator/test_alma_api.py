"""Simulator wire shapes: sets, members, bibs, errors, auth, thresholds (through httpx.MockTransport)."""

from __future__ import annotations

import json

import httpx
import pytest
from lxml import etree

from orchestrator.simulator import ApiKey, ManualClock, Scenario, SimRecord, Simulator, dc_record_xml
from orchestrator.xmlsafe import parse_xml

ERR_NS = "{http://com/exlibris/urm/general/xmlbeans}"
BASE = "http://alma.test/almaws/v1"


@pytest.fixture
def sim(clock: ManualClock) -> Simulator:
    return Simulator(clock=clock, monotonic=clock.monotonic)


def make_client(sim: Simulator, fmt: str = "json", key: str | None = "l7xx-test") -> httpx.Client:
    headers = {"Accept": f"application/{fmt}"}
    if key:
        headers["Authorization"] = f"apikey {key}"
    return httpx.Client(transport=httpx.MockTransport(sim.handle), base_url=BASE, headers=headers)


def xml_error(response: httpx.Response) -> tuple[str, str]:
    root = parse_xml(response.content)
    assert root.tag == f"{ERR_NS}web_service_result"
    assert root.findtext(f"{ERR_NS}errorsExist") == "true"
    error = root.find(f"{ERR_NS}errorList/{ERR_NS}error")
    assert error is not None and error.findtext(f"{ERR_NS}trackingId")
    return error.findtext(f"{ERR_NS}errorCode") or "", error.findtext(f"{ERR_NS}errorMessage") or ""


def json_error(response: httpx.Response) -> tuple[str, str]:
    body = response.json()
    assert body["errorsExist"] is True and body["result"] is None
    error = body["errorList"]["error"][0]
    assert error["trackingId"].startswith("E01-")
    return error["errorCode"], error["errorMessage"]


# --- sets --------------------------------------------------------------------------------------


def test_set_json_shape_matches_reference(sim: Simulator) -> None:
    ids = sim.generate_records(3)
    set_id = sim.create_set("Collembola Handle test", ids)
    assert len(set_id) == 16 and set_id.endswith("0004641")
    body = make_client(sim).get(f"/conf/sets/{set_id}").json()
    assert body["id"] == set_id and body["name"] == "Collembola Handle test"
    assert body["type"] == {"value": "ITEMIZED", "desc": "Itemized"}
    assert body["content"] == {"value": "BIB_MMS", "desc": "All Titles"}
    assert body["created_by"] == {"value": "exl_api", "desc": "Ex Libris, API"}
    assert body["number_of_members"] == {"value": 3, "link": f"{BASE}/conf/sets/{set_id}/members"}
    assert body["link"] == f"{BASE}/conf/sets/{set_id}"
    assert body["created_date"].endswith("Z") and len(body["created_date"]) == 24


def test_set_xml_shape_matches_reference(sim: Simulator) -> None:
    set_id = sim.create_set("s", sim.generate_records(2))
    response = make_client(sim, "xml").get(f"/conf/sets/{set_id}")
    assert response.headers["content-type"] == "application/xml;charset=UTF-8"
    assert response.content.startswith(b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>')
    root = parse_xml(response.content)
    assert root.tag == "set" and root.get("link") == f"{BASE}/conf/sets/{set_id}"
    assert root.find("type").get("desc") == "Itemized" and root.findtext("type") == "ITEMIZED"
    members = root.find("number_of_members")
    assert members.text == "2" and members.get("link").endswith("/members")


def test_unknown_set_is_400_60107_in_both_formats(sim: Simulator) -> None:
    response = make_client(sim, "xml").get("/conf/sets/123")
    assert response.status_code == 400
    assert xml_error(response) == ("60107", "Set not found: Set ID 123")
    response = make_client(sim, "json").get("/conf/sets/123")
    assert response.headers["content-type"] == "application/json;charset=UTF-8"
    assert json_error(response) == ("60107", "Set not found: Set ID 123")


def test_create_set_then_add_members_xml(sim: Simulator) -> None:
    ids = sim.generate_records(3)
    client = make_client(sim, "xml")
    body = "<set><name>hwf batch 1</name><type>ITEMIZED</type><content>BIB_MMS</content><private>false</private></set>"
    created = client.post("/conf/sets", content=body, headers={"Content-Type": "application/xml"})
    assert created.status_code == 200
    root = parse_xml(created.content)
    set_id = root.findtext("id")
    assert root.findtext("number_of_members") == "0"
    members = "".join(f"<member><id>{m}</id></member>" for m in ids)
    payload = f"<set><id>{set_id}</id><members>{members}</members></set>"
    added = client.post(f"/conf/sets/{set_id}", params={"op": "add_members"}, content=payload)
    assert added.status_code == 200 and parse_xml(added.content).findtext("number_of_members") == "3"
    assert sim.set_members(set_id) == ids
    again = client.post("/conf/sets", content=body, headers={"Content-Type": "application/xml"})
    assert xml_error(again)[0] == "402263"


def test_manage_members_json_rules(sim: Simulator) -> None:
    ids = sim.generate_records(4)
    client = make_client(sim)
    set_id = client.post(
        "/conf/sets", json={"name": "j", "type": {"value": "ITEMIZED"}, "content": {"value": "BIB_MMS"}}
    ).json()["id"]

    def post(members: list[str], **params: str) -> httpx.Response:
        body = {"id": set_id, "members": {"member": [{"id": m} for m in members]}}
        return client.post(f"/conf/sets/{set_id}", params={"op": "add_members", **params}, json=body)

    assert post(ids[:2]).json()["number_of_members"]["value"] == 2
    assert json_error(post(ids[1:3]))[0] == "60115"  # already in the set: nothing added
    assert json_error(post(["991999999999904641"]))[0] == "60116"
    assert post([ids[2], "991999999999904641"], fail_on_invalid_id="false").json()["number_of_members"]["value"] == 3
    assert json_error(post([ids[3], ids[3]]))[0] == "60119"
    assert json_error(post([]))[0] == "60113"
    too_many = [str(n) for n in range(1001)]
    assert json_error(post(too_many))[0] == "60118"
    assert sim.set_members(set_id) == ids[:3]


def test_members_paging_count_only_and_limits(sim: Simulator) -> None:
    ids = sim.generate_records(5)
    set_id = sim.create_set("p", ids)
    client = make_client(sim)
    assert client.get(f"/conf/sets/{set_id}/members", params={"limit": 0}).json() == {"total_record_count": 5}
    xml_count = make_client(sim, "xml").get(f"/conf/sets/{set_id}/members", params={"limit": 0})
    assert parse_xml(xml_count.content).get("total_record_count") == "5" and len(parse_xml(xml_count.content)) == 0
    page = client.get(f"/conf/sets/{set_id}/members", params={"limit": 2, "offset": 3}).json()
    assert [m["id"] for m in page["member"]] == ids[3:5] and page["total_record_count"] == 5
    assert page["member"][0]["link"] == f"{BASE}/bibs/{ids[3]}"
    assert page["member"][0]["description"] == sim.records[ids[3]].title
    assert client.get(f"/conf/sets/{set_id}/members", params={"limit": 101}).status_code == 400


def test_single_object_lists_switch(clock: ManualClock) -> None:
    sim = Simulator(Scenario(json_single_object_lists=True), clock=clock)
    set_id = sim.create_set("one", sim.generate_records(1))
    page = make_client(sim).get(f"/conf/sets/{set_id}/members", params={"limit": 10}).json()
    assert isinstance(page["member"], dict)
    error = make_client(sim).get("/conf/sets/1").json()
    assert isinstance(error["errorList"]["error"], dict)


def test_list_sets_by_name(sim: Simulator) -> None:
    sim.create_set("hwf 2026-01-15 batch 0007 (run 6f1c)", sim.generate_records(1))
    sim.create_set("Other set", [])
    client = make_client(sim)
    found = client.get("/conf/sets", params={"q": "name~6F1C"}).json()
    assert found["total_record_count"] == 1 and found["set"][0]["name"].startswith("hwf 2026")
    assert client.get("/conf/sets", params={"q": "name~nothing"}).json() == {"total_record_count": 0}


def test_corrupt_member_page_fails(sim: Simulator) -> None:
    ids = sim.generate_records(3)
    set_id = sim.create_set("c", ids)
    sim.faults.corrupt_set_members = [ids[2]]
    client = make_client(sim)
    assert client.get(f"/conf/sets/{set_id}/members", params={"limit": 2}).status_code == 200
    failed = client.get(f"/conf/sets/{set_id}/members", params={"limit": 2, "offset": 2})
    assert failed.status_code == 400 and json_error(failed)[1] == f"Set Member not found: IED {ids[2]}"


# --- bibs --------------------------------------------------------------------------------------


def test_bib_xml_embeds_the_dc_record(sim: Simulator) -> None:
    mms = sim.generate_records(1, profile="clean")[0]
    response = make_client(sim, "xml").get(f"/bibs/{mms}")
    assert response.content.startswith(b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>')
    root = parse_xml(response.content)
    assert root.tag == "bib" and root.findtext("mms_id") == mms and root.findtext("record_format") == "dcap01"
    record = root.find("{http://alma.exlibrisgroup.com/dc/01GCL_INST}record")
    assert record is not None and record.nsmap["dc"] == "http://purl.org/dc/elements/1.1/"
    assert sim.records[mms].xml in response.content  # verbatim


def test_bib_json_has_record_string_in_anies(sim: Simulator) -> None:
    mms = sim.generate_records(1)[0]
    body = make_client(sim).get(f"/bibs/{mms}").json()
    assert body["mms_id"] == mms and isinstance(body["anies"], list)
    assert body["anies"][0].encode() == sim.records[mms].xml


def test_bibs_batch_rules(sim: Simulator) -> None:
    ids = sim.generate_records(3)
    client = make_client(sim)
    body = client.get("/bibs", params={"mms_id": ",".join([ids[0], "991999999999904641", ids[2]])}).json()
    assert [b["mms_id"] for b in body["bib"]] == [ids[0], ids[2]] and body["total_record_count"] == 2
    assert client.get("/bibs", params={"mms_id": "991999999999904641"}).json() == {"total_record_count": 0}
    empty = make_client(sim, "xml").get("/bibs", params={"mms_id": "991999999999904641"})
    assert empty.status_code == 200 and parse_xml(empty.content).get("total_record_count") == "0"
    assert json_error(client.get("/bibs", params={"mms_id": "banana"})) == (
        "402204",
        "Input parameters mmsId banana is not numeric.",
    )
    too_many = ",".join(str(99100 + n) for n in range(101))
    assert client.get("/bibs", params={"mms_id": too_many}).status_code == 400


def test_put_bib_rules(sim: Simulator) -> None:
    mms = sim.generate_records(1, profile="clean")[0]
    client = make_client(sim, "xml")
    original = client.get(f"/bibs/{mms}").content
    as_json = client.put(f"/bibs/{mms}", json={"mms_id": mms})
    assert as_json.status_code == 400 and xml_error(as_json) == (
        "60105",
        "JSON is not supported for this API.",
    )
    namespaced = original.replace(b"<bib>", b'<bib xmlns="http://alma.exlibrisgroup.com/dc/01GCL_INST">')
    rejected = client.put(f"/bibs/{mms}", content=namespaced, headers={"Content-Type": "application/xml"})
    assert rejected.status_code == 400 and "namespace" in xml_error(rejected)[1]
    ns0 = original.replace(b"<dginfo", b'<ns0:dginfo xmlns:ns0="http://alma.exlibrisgroup.com/dc/01GCL_INST"')
    ns0 = ns0.replace(b"</dginfo>", b"</ns0:dginfo>")
    rejected = client.put(f"/bibs/{mms}", content=ns0, headers={"Content-Type": "application/xml"})
    assert rejected.status_code == 400 and "ns0" in xml_error(rejected)[1]
    broken = client.put(f"/bibs/{mms}", content=b"<bib><record>", headers={"Content-Type": "application/xml"})
    assert broken.status_code == 400
    assert sim.records[mms].xml in original  # nothing changed so far


def test_put_bib_replaces_the_whole_record(sim: Simulator) -> None:
    mms = sim.generate_records(1, profile="clean")[0]
    client = make_client(sim, "xml")
    new_record = dc_record_xml(institution="01GCL_INST", mms_id=mms, title="New title", placement="none")
    body = b"<bib><mms_id>" + mms.encode() + b"</mms_id>" + new_record + b"</bib>"
    reply = client.put(f"/bibs/{mms}", content=body, headers={"Content-Type": "application/xml; charset=utf-8"})
    assert reply.status_code == 200 and parse_xml(reply.content).findtext("title") == "New title"
    assert sim.records[mms].xml == new_record and sim.records[mms].title == "New title"
    assert b"hdl.handle.net" not in sim.records[mms].xml  # swap-all: the old identifiers are gone


def test_bad_xml_record_breaks_the_reply(sim: Simulator) -> None:
    mms = sim.generate_records(1, profile="clean")[0]
    sim.faults.bad_xml_records = {mms: "doctype"}
    anies = make_client(sim).get(f"/bibs/{mms}").json()["anies"][0]
    assert anies.startswith("<!DOCTYPE")
    sim.faults.bad_xml_records = {mms: "malformed"}
    with pytest.raises(etree.XMLSyntaxError):
        etree.fromstring(make_client(sim, "xml").get(f"/bibs/{mms}").content)


def test_marc_record_is_served_as_marc21(sim: Simulator) -> None:
    ids = sim.generate_records(8, profile="problems")
    marc = [m for m in ids if sim.records[m].record_format == "marc21"]
    assert len(marc) == 1
    body = make_client(sim).get(f"/bibs/{marc[0]}").json()
    assert body["record_format"] == "marc21" and body["anies"][0].startswith("<record><leader>")


# --- gateway: auth, formats, thresholds ----------------------------------------------------------


def test_format_param_and_default_xml(sim: Simulator) -> None:
    set_id = sim.create_set("f", [])
    bare = httpx.Client(transport=httpx.MockTransport(sim.handle), base_url=BASE, headers={"Authorization": "apikey k"})
    assert bare.get(f"/conf/sets/{set_id}").headers["content-type"].startswith("application/xml")
    assert bare.get(f"/conf/sets/{set_id}", params={"format": "json"}).json()["id"] == set_id


def test_auth_missing_unknown_and_wrong_area(clock: ManualClock) -> None:
    keys = (ApiKey("good"), ApiKey("bibs-only", areas=("bibs",)), ApiKey("sandbox", environment="sandbox"))
    sim = Simulator(Scenario(api_keys=keys), clock=clock)
    set_id = sim.create_set("a", [])
    assert make_client(sim, key=None).get(f"/conf/sets/{set_id}").status_code == 401
    assert make_client(sim, key="nope").get(f"/conf/sets/{set_id}").status_code == 403
    for key in ("bibs-only", "sandbox"):
        reply = make_client(sim, key=key).get(f"/conf/sets/{set_id}")
        assert reply.status_code == 400
        assert json_error(reply) == (
            "UNAUTHORIZED",
            "API-key not defined or not configured to allow this API.",
        )
    assert make_client(sim, key="good").get(f"/conf/sets/{set_id}").status_code == 200
    query_key = httpx.Client(transport=httpx.MockTransport(sim.handle), base_url=BASE)
    assert query_key.get(f"/conf/sets/{set_id}", params={"apikey": "good"}).status_code == 200
    assert "good" not in json.dumps(sim.stats)


def test_per_second_threshold(clock: ManualClock) -> None:
    sim = Simulator(Scenario(per_second_limit=5), clock=clock, monotonic=clock.monotonic)
    set_id = sim.create_set("r", [])
    client = make_client(sim)
    codes = [client.get(f"/conf/sets/{set_id}").status_code for _ in range(7)]
    assert codes == [200] * 5 + [429] * 2
    reply = client.get(f"/conf/sets/{set_id}")
    assert json_error(reply) == ("PER_SECOND_THRESHOLD", "HTTP requests are more than allowed per second")
    clock.advance(1.0)
    assert client.get(f"/conf/sets/{set_id}").status_code == 200
    assert sim.stats["sent_429"]["per_second"] == 3 and max(sim.stats["max_per_second"].values()) == 8


def test_daily_quota_and_remaining_header(sim: Simulator, clock: ManualClock) -> None:
    set_id = sim.create_set("d", [])
    client = make_client(sim)
    first = client.get(f"/conf/sets/{set_id}")
    second = client.get(f"/conf/sets/{set_id}")
    assert int(second.headers["X-Exl-Api-Remaining"]) == int(first.headers["X-Exl-Api-Remaining"]) - 1
    assert first.headers["X-Exl-Api-Quota"] == "500000"
    sim.faults.daily_remaining = 1
    assert client.get(f"/conf/sets/{set_id}").headers["X-Exl-Api-Remaining"] == "0"
    spent = client.get(f"/conf/sets/{set_id}")
    assert spent.status_code == 429 and json_error(spent)[0] == "DAILY_THRESHOLD"
    assert client.get("/conf/sets/1").headers["X-Exl-Api-Remaining"] == "0"
    clock.advance(24 * 3600)
    assert client.get(f"/conf/sets/{set_id}").status_code == 200


def test_burst_429_and_get_500(sim: Simulator) -> None:
    set_id = sim.create_set("b", [])
    client = make_client(sim)
    sim.faults.burst_429 = 2
    assert [client.get(f"/conf/sets/{set_id}").status_code for _ in range(3)] == [429, 429, 200]
    sim.faults.alma_get_500_rate = 1.0
    assert client.get(f"/conf/sets/{set_id}").status_code == 500
    sim.faults.alma_get_500_rate = 0.0
    assert client.get(f"/conf/sets/{set_id}").status_code == 200


def test_put_500_leaves_record_alone(sim: Simulator) -> None:
    mms = sim.generate_records(1, profile="clean")[0]
    before = sim.records[mms].xml
    sim.faults.alma_put_500_rate = 1.0
    body = b"<bib>" + dc_record_xml(institution="01GCL_INST", mms_id=mms, title="x") + b"</bib>"
    reply = make_client(sim, "xml").put(f"/bibs/{mms}", content=body, headers={"Content-Type": "application/xml"})
    assert reply.status_code == 500 and sim.records[mms].xml == before


def test_add_records_accepts_custom_records(sim: Simulator) -> None:
    xml = dc_record_xml(institution="01GCL_INST", mms_id="991000000000104641", title="Mine", placement="none")
    sim.add_records([SimRecord("991000000000104641", "Mine", xml=xml)])
    assert make_client(sim).get("/bibs/991000000000104641").json()["title"] == "Mine"
