"""Wire helpers of the Alma client (orchestrator.alma.wire): decoding a reply whatever was asked, tolerant
accessors, Alma's error bodies and the instance id in a link."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from orchestrator.alma import parse as alma_xml
from orchestrator.alma.wire import (
    Origin,
    decode,
    element_to_tree,
    instance_id_from_link,
    parse_error_body,
    text_of,
    to_datetime,
    to_float,
    to_int,
)
from orchestrator.errors import AlmaBadReplyError, UnsafeXmlError
from orchestrator.xmlsafe import parse_xml

DATA = Path(__file__).parent / "data" / "alma"
ORIGIN = Origin("GET", "/conf/test", 200)


def body(name: str) -> bytes:
    return (DATA / name).read_bytes()


# Decoding and tolerant accessors


def test_decode_ignores_what_was_asked_and_looks_at_the_body():
    assert decode(b'\xef\xbb\xbf  {"a": 1}', ORIGIN).tree == {"a": 1}
    xml = decode(b"\n<set><id>1</id></set>", ORIGIN)
    assert xml.root == "set" and xml.tree == {"id": "1"}


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (b"", "the body is empty"),
        (b"Internal Server Error", "neither XML nor JSON"),
        (b'{"id": ', "JSON is malformed"),
        (b"[1, 2]", "JSON is a list"),
        (b"<set><id>1</set>", "not well-formed"),
    ],
)
def test_decode_malformed_bodies(raw, problem):
    with pytest.raises(AlmaBadReplyError, match=problem) as caught:
        decode(raw, Origin("GET", "/conf/sets/1", 200))
    assert str(caught.value).startswith("Alma GET /conf/sets/1: bad reply: ")
    assert "\n" not in str(caught.value)
    assert caught.value.path == "/conf/sets/1"


def test_decode_refuses_doctype():
    with pytest.raises(UnsafeXmlError):
        decode(body("doctype_entity.xml"), ORIGIN)


def test_wrong_xml_root_is_a_bad_reply():
    with pytest.raises(AlmaBadReplyError, match="XML root is <bibs>, expected <set>"):
        alma_xml.parse_set(decode(b"<bibs/>", ORIGIN), ORIGIN)


def test_element_to_tree_renders_like_alma_json():
    root = parse_xml(
        b'<a n="1"><status desc="Active">ACTIVE</status><x/><l link="u"/><c><v>1</v></c><c><v>2</v></c><t>text</t></a>'
    )
    assert element_to_tree(root, is_root=True) == {
        "n": "1",
        "status": {"value": "ACTIVE", "desc": "Active"},
        "x": "",
        "l": {"link": "u", "value": ""},
        "c": [{"v": "1"}, {"v": "2"}],
        "t": "text",
    }


@pytest.mark.parametrize(
    ("value", "expected"),
    [("12", 12), (12, 12), (12.0, 12), ({"value": "7"}, 7), (" 3 ", 3), ("", None), (None, None), (["4"], 4)],
)
def test_to_int(value, expected):
    assert to_int(value) == expected


@pytest.mark.parametrize("value", ["1.5", "x", True])
def test_to_int_rejects(value):
    with pytest.raises(ValueError):
        to_int(value)


def test_to_float_and_text_of():
    assert to_float("209.0") == 209.0 and to_float(45) == 45.0 and to_float("") is None
    assert text_of({"value": True}) == "true"
    assert text_of(9563654780000561) == "9563654780000561"
    assert text_of(["a", "b"]) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-10-05T09:11:32.592Z", datetime(2025, 10, 5, 9, 11, 32, 592000, tzinfo=UTC)),
        ("2025-10-05T09:11:32Z", datetime(2025, 10, 5, 9, 11, 32, tzinfo=UTC)),
        ("2025-10-05T11:11:32.592+02:00", datetime(2025, 10, 5, 9, 11, 32, 592000, tzinfo=UTC)),
        ("2025-10-05T09:11:32", datetime(2025, 10, 5, 9, 11, 32, tzinfo=UTC)),
        ("2025-10-05Z", datetime(2025, 10, 5, tzinfo=UTC)),
        ("", None),
        (None, None),
    ],
)
def test_to_datetime(text, expected):
    parsed = to_datetime(text)
    assert parsed == expected
    if parsed is not None:
        assert parsed.tzinfo is UTC


# Error bodies


def test_error_body_xml_with_namespace():
    (detail,) = parse_error_body(body("error_60107.xml"), "application/xml")
    assert detail.code == "60107"
    assert detail.message == "Set not found: Set ID 123"
    assert detail.tracking_id == "E01-0212223205-P0XW8-AWAE584905282"


def test_error_body_xml_without_namespace_two_errors_one_line_each():
    details = parse_error_body(body("error_402203_nons.xml"))
    assert [d.code for d in details] == ["402203", "402204"]
    assert details[1].message == "Input parameters mmsId banana is not numeric."
    assert details[1].tracking_id is None


def test_error_body_json_list_and_object_with_string_flag():
    assert parse_error_body(body("error_402204.json"))[0].code == "402204"
    (daily,) = parse_error_body(body("error_daily.json"))
    assert daily.code == "DAILY_THRESHOLD"


@pytest.mark.parametrize(
    ("raw", "content_type"),
    [
        (body("error_401.html"), "text/html"),
        (body("error_401.html"), "application/xml"),
        (body("error_500.txt"), "text/plain"),
        (body("doctype_entity.xml"), "application/xml"),
        (b"<web_service_result><errorList>", "application/xml"),
        (b"{broken", "application/json"),
        (b"", ""),
    ],
)
def test_error_body_that_is_not_alma_gives_nothing(raw, content_type):
    assert parse_error_body(raw, content_type) == []


@pytest.mark.parametrize(
    ("link", "expected"),
    [
        (
            "https://api-na.hosted.exlibrisgroup.com/almaws/v1/conf/jobs/M50173/instances/9563654220000561",
            "9563654220000561",
        ),
        ("https://h/almaws/v1/conf/jobs/M1/instances/77/", "77"),
        ("https://h/almaws/v1/conf/jobs/M1/instances/77?format=json", "77"),
    ],
)
def test_instance_id_from_link(link, expected):
    assert instance_id_from_link(link) == expected


@pytest.mark.parametrize("link", ["", "https://h/almaws/v1/conf/jobs/M1", "https://h/conf/jobs/M1/instances/", "77"])
def test_instance_id_from_link_rejects(link):
    with pytest.raises(ValueError):
        instance_id_from_link(link)
