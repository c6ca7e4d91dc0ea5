"""Real reply bodies from public sources (tests/alma/data/real, sources in its README.md): every one parses, or,
when it is genuinely an error reply (or a broken published sample), fails with a clear one-line error."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from orchestrator.alma import parse
from orchestrator.alma.client import AlmaClient
from orchestrator.alma.wire import Origin, decode, errors_exist, parse_error_body
from orchestrator.config import PrimoConfig
from orchestrator.domain.handles import Verdict
from orchestrator.errors import AlmaBadReplyError, AlmaError
from orchestrator.resolver import Verifier, VerifyItem
from orchestrator.xmlsafe import parse_xml

REAL = Path(__file__).parent / "data" / "real"
ORIGIN = Origin("GET", "/real", 200)


def _reply(name: str):
    body = (REAL / name).read_bytes()
    return body, decode(body, ORIGIN)


def test_every_file_is_listed_in_the_readme():
    readme = (REAL / "README.md").read_text()
    files = sorted(p.name for p in REAL.iterdir() if p.name != "README.md")
    assert files and [f for f in files if f"`{f}`" not in readme] == []


@pytest.mark.parametrize("name", ["esploro_job_instance.xml", "esploro_job_instance.json"])
def test_esploro_instance(name):
    _, reply = _reply(name)
    inst = parse.parse_instance(reply, "M50173", ORIGIN)
    assert inst.id == "9563643080000561" and inst.status == "COMPLETED_SUCCESS" and inst.terminal
    assert inst.progress == 100.0 and inst.submitted_by == "exl_api" and inst.job_id == "M50173"
    failed = {c.code: c.value for c in inst.counters}["import_research_assets_files.asset_failed"]
    assert failed == 1  # "1" in JSON, 1 in XML: a number either way
    assert [a.code for a in inst.alerts] == ["alert_general_success"]


def test_the_published_json_sample_with_a_stray_pl_is_a_one_line_bad_reply():
    body = (REAL / "esploro_job_instance_as_published.json").read_bytes()
    with pytest.raises(AlmaBadReplyError) as caught:
        decode(body, ORIGIN)
    assert "JSON is malformed" in str(caught.value) and "\n" not in str(caught.value)


def test_carleton_instance_text_counter_queued_fractional_progress():
    _, reply = _reply("carleton_job_instance.xml")
    inst = parse.parse_instance(reply, "M1", ORIGIN)
    assert inst.status == "QUEUED" and not inst.terminal
    assert inst.progress == pytest.approx(50.776)
    assert [(c.code, c.desc, c.value) for c in inst.counters] == [("4", "counter extreme", "It's at 4!")]


@pytest.mark.parametrize(
    ("name", "instance"), [("esploro_job_run.xml", "9563654220000561"), ("esploro_job_run.json", "9563643080000561")]
)
def test_job_run_reply(name, instance):
    _, reply = _reply(name)
    run = parse.parse_job_run(reply, "M50173", ORIGIN)
    assert run.instance_id == instance and run.job_id == "M50173"


def test_job_details_without_parameters():
    # Real replies often list no parameters at all: what `hwf ping` calls "parameters unknown".
    _, reply = _reply("esploro_job.json")
    job = parse.parse_job(reply, ORIGIN)
    assert job.id == "M50173" and job.type == "MANUAL" and job.parameters == ()


def test_job_details_with_parameters():
    _, reply = _reply("carleton_job.xml")
    job = parse.parse_job(reply, ORIGIN)
    assert [(p.name, p.value, p.description) for p in job.parameters] == [
        ("DESC", "AlphaBetaGamma", "param desc"),
        ("DESC2", "AlphaBetaGammaDelta", "param desc 2"),
    ]


def test_jobs_list():
    _, reply = _reply("esploro_jobs.json")
    jobs, total = parse.parse_jobs(reply, ORIGIN)
    assert len(jobs) > 100 and all(j.id.startswith("M") and j.type for j in jobs)
    assert total == json.loads((REAL / "esploro_jobs.json").read_text()).get("total_record_count")


@pytest.mark.parametrize(("name", "members"), [("esploro_set_created.json", 0), ("esploro_set_members_added.json", 2)])
def test_set_replies(name, members):
    _, reply = _reply(name)
    info = parse.parse_set(reply, ORIGIN)
    assert info.id == "9563654780000561" and info.type == "ITEMIZED" and info.content == "IER"
    assert info.member_count == members


@pytest.mark.parametrize(
    ("name", "ids"),
    [
        ("princeton_bibs_none.json", []),
        ("princeton_bibs_two.json", ["9957049613506421", "99122426947506421"]),
        ("princeton_bibs_utf16_declaration.json", ["9943506421"]),
        ("princeton_bibs_three.xml", ["991227830000541", "991227840000541", "991227850000541"]),
        ("princeton_bibs_one.xml", ["991227850000541"]),
    ],
)
def test_bibs_batches(name, ids):
    body, reply = _reply(name)
    bibs = parse.parse_bibs(body, reply, ORIGIN)
    assert [b.mms_id for b in bibs][: len(ids)] == ids and len(bibs) == len(ids)
    for bib in bibs:
        assert bib.record_xml is not None
        record = parse_xml(bib.record_xml)  # the record stands alone, whatever format it came in
        assert record.tag.rsplit("}", 1)[-1] == "record"
        assert parse_xml(bib.xml) is not None


def test_utf16_declaration_is_gone_from_the_json_record():
    body, reply = _reply("princeton_bibs_utf16_declaration.json")
    (bib,) = parse.parse_bibs(body, reply, ORIGIN)
    assert b"UTF-16" in body and bib.record_xml is not None and b"UTF-16" not in bib.record_xml
    assert bib.title == "The works of Henry Fielding : with the life of the author."


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("princeton_error_402204.json", "402204"),
        ("princeton_error_402203.xml", "402203"),
        ("princeton_error_unknown_code.json", "4016641x"),
    ],
)
def test_error_bodies(name, code):
    body = (REAL / name).read_bytes()
    (detail,) = parse_error_body(body)
    assert detail.code == code and detail.message and detail.tracking_id
    assert errors_exist(decode(body, ORIGIN).tree)
    transport = httpx.MockTransport(lambda request: httpx.Response(400, content=body))
    with AlmaClient(
        "https://api-na.hosted.exlibrisgroup.com", "l7xx0123456789abcdef0123456789", transport=transport, max_retries=0
    ) as alma:
        with pytest.raises(AlmaError) as caught:
            alma.get_set("1")
    message = str(caught.value)
    assert code in message and detail.message in message and "\n" not in message


PRIMO = PrimoConfig(domain="primo.example.org", view="VIEW")


@pytest.mark.parametrize(
    "name",
    [
        "pyhandle_handlerecord_for_reading.json",
        "pyhandle_handlerecord_with_10320LOC.json",
        "pyhandle_handlerecord_without_10320LOC.json",
    ],
)
def test_handle_records_without_a_url_value(name):
    body = (REAL / name).read_bytes()
    transport = httpx.MockTransport(lambda request: httpx.Response(200, content=body))
    with Verifier("https://hdl.handle.net", PRIMO, transport=transport, requests_per_second=None) as verifier:
        (result,) = list(verifier.verify([VerifyItem("991", "11084/1")]))
    assert result.verdict is Verdict.NO_URL and result.attempts == 2  # the public answer, then the primary's
