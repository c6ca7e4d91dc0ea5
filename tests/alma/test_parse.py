"""Parsers of Alma replies (orchestrator.alma.parse) over the XML and JSON fixtures in tests/alma/data/alma."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from lxml import etree

from orchestrator.alma import parse as alma_xml
from orchestrator.alma.types import TERMINAL_STATUSES
from orchestrator.alma.wire import (
    Origin,
    decode,
)
from orchestrator.errors import AlmaBadReplyError
from orchestrator.xmlsafe import parse_xml

DATA = Path(__file__).parent / "data" / "alma"
ORIGIN = Origin("GET", "/conf/test", 200)


def body(name: str) -> bytes:
    return (DATA / name).read_bytes()


def reply(name: str):
    return decode(body(name), ORIGIN)


# Sets and members


@pytest.mark.parametrize(
    ("name", "set_type", "count"),
    [
        ("set.xml", "ITEMIZED", 3),
        ("set.json", "ITEMIZED", 0),
        ("set_variants.json", "ITEMIZED", 1234),
        ("set_logical_nons.xml", "LOGICAL", 1),
    ],
)
def test_parse_set(name, set_type, count):
    info = alma_xml.parse_set(reply(name), ORIGIN)
    assert info.type == set_type
    assert info.content == "BIB_MMS"
    assert info.member_count == count
    assert info.id in {"9563654780000561", "59317390720005501"}
    assert info.name


@pytest.mark.parametrize(("name", "count"), [("sets.json", 2), ("sets.xml", 2), ("sets_one.json", 1)])
def test_parse_sets_lists_and_one_object(name, count):
    sets, total = alma_xml.parse_sets(reply(name), ORIGIN)
    assert total == count
    assert [s.name for s in sets][:1] == ["hwf 2026-01-15 batch 0007"]
    assert len(sets) == count


@pytest.mark.parametrize(
    ("name", "ids", "total"),
    [
        ("members.xml", ["991011506418804641", "991011506418904641", "991011506419004641"], 3),
        ("members_page1.json", ["991011506418804641", "991011506418904641"], 3),
        ("members_page2_one_object.json", ["991011506419004641"], 3),
        ("members_empty.json", [], 5),
        ("members_count.xml", [], 1234),
        ("members_count.json", [], 1234),
    ],
)
def test_parse_members(name, ids, total):
    members, found_total = alma_xml.parse_members(reply(name), ORIGIN)
    assert [m.id for m in members] == ids
    assert found_total == total


def test_member_descriptions_are_titles():
    members, _ = alma_xml.parse_members(reply("members.xml"), ORIGIN)
    assert members[2].description == "The Social Politics of Having Children"


def test_member_without_id_is_a_bad_reply():
    broken = decode(b'{"member":[{"description":"no id"}],"total_record_count":1}', ORIGIN)
    with pytest.raises(AlmaBadReplyError, match=r"members\.member\[0\]\.id is missing"):
        alma_xml.parse_members(broken, ORIGIN)


def test_bad_total_is_a_bad_reply_naming_the_field():
    broken = decode(b'{"member":[],"total_record_count":"lots"}', ORIGIN)
    with pytest.raises(AlmaBadReplyError, match=r"GET /conf/test: bad reply: members.total_record_count"):
        alma_xml.parse_members(broken, ORIGIN)


# Jobs


def test_parse_job_xml_with_parameters():
    job = alma_xml.parse_job(reply("job.xml"), ORIGIN)
    assert (job.id, job.name, job.type, job.category) == (
        "M26714670000011",
        "DG Handle Migration",
        "MANUAL",
        "REPOSITORY",
    )
    assert [(p.name, p.value, p.description) for p in job.parameters] == [
        ("set_id", "", "Set ID"),
        ("job_name", "DG Handle Migration", "Job name"),
    ]


def test_parse_job_json_without_parameters():
    job = alma_xml.parse_job(reply("job.json"), ORIGIN)
    assert job.category == "DCAP01_NORMALIZATION"
    assert job.parameters == ()


def test_parse_job_parameters_wrapper_with_one_object_and_extra_fields():
    job = alma_xml.parse_job(reply("job_param_object.json"), ORIGIN)
    assert [(p.name, p.value) for p in job.parameters] == [("set_id", "9563654780000561")]


@pytest.mark.parametrize(("name", "count"), [("jobs.json", 2), ("jobs.xml", 2), ("jobs_page2_one.json", 1)])
def test_parse_jobs(name, count):
    jobs, total = alma_xml.parse_jobs(reply(name), ORIGIN)
    assert len(jobs) == count
    assert all(job.type == "MANUAL" for job in jobs)
    assert total in (2, 3)


@pytest.mark.parametrize(
    ("name", "instance_id"), [("job_run.xml", "9563654220000561"), ("job_run.json", "9563643080000561")]
)
def test_parse_job_run_takes_the_instance_from_the_link(name, instance_id):
    run = alma_xml.parse_job_run(reply(name), "M50173", ORIGIN)
    assert run.instance_id == instance_id
    assert run.job_id == "M50173"
    assert run.info is not None and run.info.startswith("Job no.")


def test_parse_job_run_without_link_is_a_bad_reply_even_if_the_text_names_the_job():
    with pytest.raises(AlmaBadReplyError, match="additional_info@link is missing"):
        alma_xml.parse_job_run(reply("job_run_no_link.json"), "M50173", ORIGIN)


def test_parse_job_run_with_a_link_that_is_not_an_instance():
    wrong = decode(b'{"additional_info":{"value":"x","link":"https://h/almaws/v1/conf/jobs/M1"}}', ORIGIN)
    with pytest.raises(AlmaBadReplyError, match="not a job-instance link"):
        alma_xml.parse_job_run(wrong, "M1", ORIGIN)


# Job instances


@pytest.mark.parametrize("name", ["instance.xml", "instance.json"])
def test_parse_instance_real_samples(name):
    instance = alma_xml.parse_instance(reply(name), "M50173", ORIGIN)
    assert instance.id == "9563643080000561"
    assert instance.job_id == "M50173"
    assert instance.status == "COMPLETED_SUCCESS"
    assert instance.status_desc == "Completed Successfully"
    assert instance.terminal
    assert instance.progress == 100.0
    assert instance.submitted_by == "exl_api"
    assert instance.submit_time == datetime(2025, 10, 5, 9, 11, 32, 592000, tzinfo=UTC)
    assert instance.end_time == datetime(2025, 10, 5, 9, 11, 36, 463000, tzinfo=UTC)
    assert instance.alerts[0].code == "alert_general_success"
    failed = [c for c in instance.counters if c.code == "import_research_assets_files.asset_failed"]
    assert failed[0].value == 1
    assert failed[0].desc == "Number of assets failed"


def test_parse_instance_xml_keeps_every_counter():
    instance = alma_xml.parse_instance(reply("instance.xml"), "M50173", ORIGIN)
    assert [(c.code, c.value) for c in instance.counters] == [
        ("import_research_assets_files.asset_succeeded", 0),
        ("import_research_assets_files.asset_failed", 1),
    ]


def test_parse_instance_variants_unknown_status_is_not_terminal():
    instance = alma_xml.parse_instance(reply("instance_running_variants.json"), "M26714670000011", ORIGIN)
    assert instance.id == "7640734270004641"
    assert instance.job_id == "M26714670000011"
    assert instance.status == "BRAND_NEW_RUNNING_STATE"
    assert not instance.terminal
    assert instance.progress == 45.5
    assert instance.submitted_by == "exl_api"
    assert instance.start_time is None and instance.end_time is None
    assert [(c.desc, c.value) for c in instance.counters] == [("Records processed", 11849)]
    assert [a.code for a in instance.alerts] == ["alert_general_running"]


def test_parse_instance_progress_over_100_and_empty_alerts():
    instance = alma_xml.parse_instance(reply("instance_failed_progress.xml"), "M26714670000011", ORIGIN)
    assert instance.status == "COMPLETED_FAILED"
    assert instance.status in TERMINAL_STATUSES
    assert instance.progress == 209.0
    assert instance.alerts == ()
    assert [c.value for c in instance.counters] == [11849, 100]
    assert instance.submitted_by == "000538225"


def test_parse_instance_without_id_is_a_bad_reply():
    with pytest.raises(AlmaBadReplyError, match=r"job_instance\.id is missing"):
        alma_xml.parse_instance(reply("instance_no_id.json"), "M1", ORIGIN)


def test_parse_instance_without_status_is_a_bad_reply():
    with pytest.raises(AlmaBadReplyError, match=r"job_instance\.status is missing"):
        alma_xml.parse_instance(decode(b'{"id":"1"}', ORIGIN), "M1", ORIGIN)


def test_parse_instance_bad_date_names_the_field():
    broken = decode(b'{"id":"1","status":{"value":"RUNNING"},"submit_time":"yesterday"}', ORIGIN)
    with pytest.raises(AlmaBadReplyError, match=r"job_instance\.submit_time is malformed"):
        alma_xml.parse_instance(broken, "M1", ORIGIN)


@pytest.mark.parametrize(
    ("name", "ids", "total"),
    [
        ("instances.json", ["9563643080000561", "9563643090000561"], 3),
        ("instances_page2_one.json", ["9563643100000561"], 3),
        ("instances.xml", ["9563643080000561"], 1),
        ("instances_empty.json", [], 0),
    ],
)
def test_parse_instances(name, ids, total):
    instances, found_total = alma_xml.parse_instances(reply(name), "M26714670000011", ORIGIN)
    assert [i.id for i in instances] == ids
    assert found_total == total


# Bibs


def test_parse_bib_document_keeps_exact_bytes():
    raw = body("bib.xml")
    bib = alma_xml.parse_bib_document(raw, decode(raw, ORIGIN), ORIGIN)
    assert bib.xml == raw
    assert bib.mms_id == "991011687640104641"
    assert bib.record_format == "dcap01"
    assert bib.title == "Photos_For_DG-Stella_SHLC_20251021_112115.csv"
    assert bib.record_xml is not None
    start = raw.index(b"<record ")
    assert bib.record_xml == raw[start : raw.index(b"</record>") + len(b"</record>")]


def test_record_slice_survives_comments_cdata_and_gt_in_attributes():
    raw = body("bib_legacy.xml")
    bib = alma_xml.parse_bib_document(raw, decode(raw, ORIGIN), ORIGIN)
    assert bib.record_xml is not None
    assert bib.record_xml.startswith(b'<record xmlns="http://alma.exlibrisgroup.com/dc/01GCL_INST"')
    assert bib.record_xml.endswith(b"</dc:description>\n  </record>")
    assert b"note='a > b'" in bib.record_xml
    assert b"&amp;" in bib.record_xml  # not re-serialised: escapes kept as sent
    parsed = parse_xml(bib.record_xml)
    assert etree.QName(parsed).localname == "record"


def test_record_needing_namespaces_from_bib_is_serialised_standalone():
    raw = body("bib_ns_on_root.xml")
    bib = alma_xml.parse_bib_document(raw, decode(raw, ORIGIN), ORIGIN)
    assert bib.xml == raw
    assert bib.record_xml is not None
    assert b'xmlns:dc="http://purl.org/dc/elements/1.1/"' in bib.record_xml
    parse_xml(bib.record_xml)


def test_parse_bibs_xml_slices_each_bib():
    raw = body("bibs.xml")
    bibs = alma_xml.parse_bibs(raw, decode(raw, ORIGIN), ORIGIN)
    assert [b.mms_id for b in bibs] == ["991011506418804641", "991011506418904641"]
    for bib in bibs:
        assert bib.xml.startswith(b"<bib>") and bib.xml.endswith(b"</bib>")
        assert bib.xml in raw
        assert bib.record_xml is not None and bib.record_xml in bib.xml
    assert b'xsi:type="dcterms:URI">http://hdl.handle.net/11084/10002' in bibs[1].record_xml


def test_parse_bibs_json_with_anies():
    raw = body("bibs.json")
    bibs = alma_xml.parse_bibs(raw, decode(raw, ORIGIN), ORIGIN)
    assert [b.mms_id for b in bibs] == ["991011506418804641", "991011506419204641"]
    first = bibs[0]
    assert first.record_xml == json.loads(raw)["bib"][0]["anies"][0].encode()
    rebuilt = parse_xml(first.xml)
    assert rebuilt.findtext("mms_id") == "991011506418804641"
    assert rebuilt.find("cataloging_level").get("desc") == "Default Level"
    assert etree.QName(rebuilt[-1]).localname == "record"


def test_parse_bibs_one_object_with_anies_as_string():
    raw = body("bibs_one_object.json")
    (bib,) = alma_xml.parse_bibs(raw, decode(raw, ORIGIN), ORIGIN)
    assert bib.mms_id == "991011506419304641"
    assert bib.record_xml is not None and b"11084/3463" in bib.record_xml


@pytest.mark.parametrize("name", ["bibs_empty.xml", "bibs_empty_bare.xml", "bibs_empty.json"])
def test_parse_bibs_empty(name):
    raw = body(name)
    assert alma_xml.parse_bibs(raw, decode(raw, ORIGIN), ORIGIN) == []


def test_parse_bibs_broken_anies_sinks_only_its_own_record():
    # One malformed record must not fail its batch of 100: it is kept as bytes and classified
    # BAD_XML by dc.classify_bib (which parses it safely).
    from orchestrator.domain.dc import Preflight, classify_bib

    raw = body("bibs_bad_anies.json")
    bibs = alma_xml.parse_bibs(raw, decode(raw, ORIGIN), ORIGIN)
    assert bibs and bibs[0].record_xml is not None
    assert classify_bib(bibs[0], "11084").preflight is Preflight.BAD_XML


def test_anies_with_entities_is_never_expanded():
    from orchestrator.domain.dc import Preflight, classify_bib

    raw = json.dumps({"bib": [{"mms_id": "1", "anies": ['<!DOCTYPE r [<!ENTITY e "x">]><record>&e;</record>']}]})
    (bib,) = alma_xml.parse_bibs(raw.encode(), decode(raw.encode(), ORIGIN), ORIGIN)
    check = classify_bib(bib, "11084")
    assert check.preflight is Preflight.BAD_XML and "DOCTYPE" in (check.detail or "")
