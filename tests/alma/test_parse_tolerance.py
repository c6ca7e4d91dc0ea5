"""Tolerant parsing of job instances (issue 13 item 2) and the JSON bib's record (issue 13 wire tolerance)."""

from __future__ import annotations

import json

import pytest

from orchestrator.alma import parse
from orchestrator.alma.wire import Origin, decode
from orchestrator.domain.jobrules import exception_count, run_ok
from orchestrator.errors import AlmaBadReplyError
from orchestrator.xmlsafe import parse_xml

ORIGIN = Origin("GET", "/conf/jobs/M1/instances/1", 200)

FTP_INSTANCE = {
    "id": "1108569450000121",
    "name": "Export - hwf test",
    "status": {"value": "COMPLETED_FAILED", "desc": "Completed with errors"},
    "progress": 100,
    "counter": [
        {"type": {"value": "FTP has failed."}, "value": "Download zip file for manual FTP."},
        {"type": {"value": "c.jobs.records", "desc": "Records processed"}, "value": "12"},
    ],
    "some_new_field": {"nested": [1, 2, 3]},
}


def _instance(tree: dict):
    return parse.parse_instance(decode(json.dumps(tree).encode(), ORIGIN), "M1", ORIGIN)


def test_text_counter_is_kept_as_text_and_shown():
    inst = _instance(FTP_INSTANCE)
    assert [(c.code, c.value) for c in inst.counters] == [
        ("FTP has failed.", "Download zip file for manual FTP."),
        ("c.jobs.records", 12),
    ]
    assert inst.terminal
    # A failure message in a counter is not a clean run, and counting it never raises.
    assert exception_count(inst.counters) == 1
    assert not run_ok("COMPLETED_SUCCESS", inst.counters)


@pytest.mark.parametrize(
    ("progress", "expected"),
    [(42.5, 42.5), (209, 209.0), ("37", 37.0), ("12.5%", 12.5), ("almost done", None), (None, None), ("NaN", None)],
)
def test_progress_fractional_over_100_or_text(progress, expected):
    inst = _instance({**FTP_INSTANCE, "progress": progress})
    assert inst.progress == expected


@pytest.mark.parametrize("status", ["QUEUED", "PENDING", "SOMETHING_NEW", "RUNNING"])
def test_unknown_status_is_still_running(status):
    assert not _instance({**FTP_INSTANCE, "status": {"value": status}}).terminal


def test_single_object_counters_and_odd_entries_are_tolerated():
    tree = {
        **FTP_INSTANCE,
        "counter": {"type": "c.jobs.handled", "value": 3.0},
        "alert": [{"value": "alert_general_error", "desc": "Error"}, {"weird": True}],
    }
    inst = _instance(tree)
    assert [(c.code, c.value) for c in inst.counters] == [("c.jobs.handled", 3)]
    assert [a.code for a in inst.alerts] == ["alert_general_error"]
    tree["counter"] = ["not an object", {"value": 4}, {"type": {"value": "x"}, "value": {"value": "7"}}]
    assert [(c.code, c.value) for c in _instance(tree).counters] == [("x", 7)]


def test_instance_list_with_a_text_counter_parses():
    body = {
        "job_instance": [FTP_INSTANCE, {**FTP_INSTANCE, "id": "2", "status": {"value": "RUNNING"}, "progress": 5.5}],
        "total_record_count": "2",
    }
    instances, total = parse.parse_instances(decode(json.dumps(body).encode(), ORIGIN), "M1", ORIGIN)
    assert [i.id for i in instances] == ["1108569450000121", "2"] and total == 2
    assert instances[0].counters[0].value == "Download zip file for manual FTP."


def test_an_unreadable_entry_of_an_instance_list_is_skipped_and_logged_unless_it_is_the_one_looked_for(caplog):
    broken = {**FTP_INSTANCE, "id": "2", "name": "hwf migrate set 77 hwf-abc"}
    del broken["status"]
    body = {"job_instance": [broken, "not an object", FTP_INSTANCE], "total_record_count": "3"}
    reply = decode(json.dumps(body).encode(), ORIGIN)
    with caplog.at_level("WARNING", logger="orchestrator.alma.parse"):
        instances, total = parse.parse_instances(reply, "M1", ORIGIN)
    assert [i.id for i in instances] == ["1108569450000121"] and total == 3
    assert "job_instance[0].status is missing" in caplog.text and "job_instance[1] is" in caplog.text
    instances, _ = parse.parse_instances(reply, "M1", ORIGIN, wanted=lambda name: "hwf-zzz" in name)
    assert len(instances) == 1  # another token: not the one looked for
    with pytest.raises(AlmaBadReplyError, match=r"job_instance\[0\].status is missing"):
        parse.parse_instances(reply, "M1", ORIGIN, wanted=lambda name: "hwf-abc" in name)


def test_xml_instance_with_text_counter():
    xml = (
        b"<job_instance><id>9</id><status>COMPLETED_WARNING</status><progress>100.0</progress>"
        b"<counters><counter><type>FTP has failed.</type><value>Download zip file for manual FTP.</value></counter>"
        b"</counters></job_instance>"
    )
    inst = parse.parse_instance(decode(xml, ORIGIN), "M1", ORIGIN)
    assert inst.counters[0].value == "Download zip file for manual FTP."


def test_json_bib_record_xml_drops_the_utf16_declaration():
    record = '<?xml version="1.0" encoding="UTF-16"?><record><dc:title xmlns:dc="http://purl.org/dc/elements/1.1/">Über</dc:title></record>'
    body = json.dumps({"mms_id": "991", "title": "Über", "anies": [record]}).encode()
    bib = parse.parse_bib_document(body, decode(body, ORIGIN), ORIGIN)
    assert bib.record_xml is not None and not bib.record_xml.startswith(b"<?xml")
    assert parse_xml(bib.record_xml).findtext("{http://purl.org/dc/elements/1.1/}title") == "Über"
