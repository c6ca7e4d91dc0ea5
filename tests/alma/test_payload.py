"""Request bodies the Alma client sends (orchestrator.alma.payload): the job payload, with and without the
wizard's template, and the set body."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.alma.payload import build_job_payload, set_body, template_parameter_names
from orchestrator.errors import BadInputError, UnsafeXmlError
from orchestrator.xmlsafe import parse_xml

DATA = Path(__file__).parent / "data" / "alma"


def body(name: str) -> bytes:
    return (DATA / name).read_bytes()


# Request bodies


def test_job_payload_without_template_xml():
    content_type, payload = build_job_payload([("set_id", "42"), ("job_name", "a & <b>")], fmt="xml")
    assert content_type == "application/xml"
    root = parse_xml(payload)
    assert root.tag == "job"
    params = [(p.findtext("name"), p.findtext("value")) for p in root.find("parameters")]
    assert params == [("set_id", "42"), ("job_name", "a & <b>")]


def test_job_payload_without_template_json():
    content_type, payload = build_job_payload([("set_id", "42"), ("job_name", "hwf:r1")], fmt="json")
    assert content_type == "application/json"
    assert json.loads(payload) == {
        "parameter": [
            {"name": {"value": "set_id"}, "value": "42"},
            {"name": {"value": "job_name"}, "value": "hwf:r1"},
        ]
    }


def test_job_payload_xml_template_keeps_other_parameters():
    content_type, payload = build_job_payload(
        [("set_id", "9563654780000561"), ("job_name", "hwf:run1:migrate:1"), ("extra", "yes")],
        fmt="json",
        template=body("job_payload_template.xml"),
    )
    assert content_type == "application/xml"  # the template's format wins
    root = parse_xml(payload)
    params = [(p.findtext("name"), p.findtext("value")) for p in root.iter("parameter")]
    assert params == [
        ("set_id", "9563654780000561"),
        ("job_name", "hwf:run1:migrate:1"),
        ("task_HandlesMigrationParams_controlNumber_string", "Digital.Grinnell Handles"),
        ("task_HandlesMigrationParams_sourceField_string", "dc:identifier"),
        ("extra", "yes"),
    ]
    assert root.find("parameters/parameter/name").get("desc") == "Set ID"


def test_job_payload_json_template_replaces_and_drops_duplicates():
    content_type, payload = build_job_payload(
        [("set_id", "1"), ("job_name", "hwf:t")], fmt="xml", template=body("job_payload_template.json")
    )
    assert content_type == "application/json"
    params = json.loads(payload)["parameter"]
    assert [(p["name"]["value"], p["value"]) for p in params] == [
        ("task_CopyParams_from_string", "dcterms:identifier"),
        ("set_id", "1"),
        ("task_CopyParams_to_string", "dc:identifier"),
        ("job_name", "hwf:t"),
    ]
    assert params[0]["name"]["desc"] == "From"


def test_job_payload_json_template_with_parameters_wrapper():
    template = b'{"parameters": {"parameter": {"name": {"value": "keep"}, "value": "k"}}}'
    _, payload = build_job_payload([("set_id", "1")], fmt="json", template=template)
    assert json.loads(payload) == {
        "parameters": {
            "parameter": [
                {"name": {"value": "keep"}, "value": "k"},
                {"name": {"value": "set_id"}, "value": "1"},
            ]
        }
    }


def test_job_payload_empty_xml_template():
    _, payload = build_job_payload([("set_id", "1")], fmt="xml", template=b"<job/>")
    assert [p.findtext("value") for p in parse_xml(payload).iter("parameter")] == ["1"]


@pytest.mark.parametrize("template", [b"set_id=1", b"<job><parameters>", b'{"parameter": [', b"[1]"])
def test_job_payload_bad_template(template):
    with pytest.raises(BadInputError, match="job payload template"):
        build_job_payload([("set_id", "1")], fmt="json", template=template)


def test_job_payload_template_with_entities_is_refused():
    with pytest.raises(UnsafeXmlError):
        build_job_payload([("set_id", "1")], fmt="xml", template=body("doctype_entity.xml"))


@pytest.mark.parametrize(
    ("template", "names"),
    [
        (b"<job><parameters><parameter><name>task_x</name><value>1</value></parameter></parameters></job>", {"task_x"}),
        (b'{"parameter": [{"name": {"value": "task_x"}, "value": "1"}, {"name": "set_id"}]}', {"task_x", "set_id"}),
        (b'{"parameters": {"parameter": {"name": {"value": "task_y"}}}}', {"task_y"}),
        (b"<job/>", set()),
    ],
)
def test_template_parameter_names_reads_what_the_payload_keeps(template, names):
    assert template_parameter_names(template) == names
    kept = build_job_payload([], fmt="json", template=template)[1]
    assert all(name.encode() in kept for name in names)


@pytest.mark.parametrize("template", [b"set_id=1", b"<job><parameters>", b'{"parameter": [', b"[1]"])
def test_template_parameter_names_bad_template(template):
    with pytest.raises(BadInputError, match="job payload template"):
        template_parameter_names(template)


def test_job_payload_bad_format():
    with pytest.raises(ValueError):
        build_job_payload([], fmt="yaml")


def test_set_body_xml_and_json():
    fields = [("id", "9"), ("name", "n"), ("type", "ITEMIZED"), ("content", "BIB_MMS")]
    content_type, xml = set_body(fields, ["1", "2"], "xml")
    root = parse_xml(xml)
    assert content_type == "application/xml"
    assert root.findtext("type") == "ITEMIZED"
    assert [m.findtext("id") for m in root.find("members")] == ["1", "2"]
    content_type, raw = set_body(fields, ["1"], "json")
    assert content_type == "application/json"
    assert json.loads(raw) == {
        "id": "9",
        "name": "n",
        "type": {"value": "ITEMIZED"},
        "content": {"value": "BIB_MMS"},
        "members": {"member": [{"id": "1"}]},
    }
