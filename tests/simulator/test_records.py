"""Simulated records (orchestrator.simulator.records): the problem profile has every class with matching content,
profiles are deterministic with unique ids, and generation scales past the fixture."""

from __future__ import annotations

from collections import Counter

import pytest
from lxml import etree

from orchestrator.errors import UnsafeXmlError
from orchestrator.simulator import Simulator
from orchestrator.xmlsafe import parse_xml

DC = "{http://purl.org/dc/elements/1.1/}"
XSI_TYPE = "{http://www.w3.org/2001/XMLSchema-instance}type"


# --- records -----------------------------------------------------------------------------------------


def _dc_identifiers(xml: bytes) -> list[etree._Element]:
    return list(parse_xml(xml).iter(f"{DC}identifier"))


def test_problem_profile_has_every_class_with_matching_content() -> None:
    sim = Simulator()
    ids = sim.generate_records(200, profile="problems", seed=4)
    records = [sim.records[m] for m in ids]
    classes = Counter(r.expected_class for r in records)
    assert set(classes) == {
        "READY",
        "NEEDS_COPY",
        "NEEDS_FIX",
        "NO_HANDLE",
        "BAD_HANDLE",
        "DUPLICATE_HANDLE",
        "NOT_DC",
        "BAD_XML",
    }
    ready_urls = set()
    for record in records:
        cls = record.expected_class
        if cls == "NOT_DC":
            assert record.record_format == "marc21"
            continue
        if cls == "BAD_XML":
            with pytest.raises(UnsafeXmlError):
                parse_xml(record.xml)
            continue
        handles = [e for e in _dc_identifiers(record.xml) if "hdl.handle.net" in (e.text or "")]
        if cls == "READY":
            assert len(handles) == 1 and handles[0].get(XSI_TYPE) is None
            ready_urls.add(handles[0].text)
        elif cls == "NEEDS_COPY":
            assert handles == [] and b"<dcterms:identifier" in record.xml
        elif cls == "NEEDS_FIX":
            assert handles[0].get(XSI_TYPE) == "dcterms:URI"
        elif cls == "NO_HANDLE":
            assert b"hdl.handle.net" not in record.xml
    duplicates = [r for r in records if r.expected_class == "DUPLICATE_HANDLE"]
    for record in duplicates:
        url = next(e.text for e in _dc_identifiers(record.xml) if "hdl.handle.net" in (e.text or ""))
        assert url in ready_urls


def test_profiles_are_deterministic_and_ids_unique() -> None:
    first, second = Simulator(), Simulator()
    a = first.generate_records(50, profile="demo", seed=9)
    b = second.generate_records(50, profile="demo", seed=9)
    assert a == b and [first.records[m].xml for m in a] == [second.records[m].xml for m in b]
    demo = Counter(first.records[m].expected_class for m in a)
    assert demo["NEEDS_COPY"] > demo["READY"] > 0 and set(demo) == {"NEEDS_COPY", "READY"}
    more = first.generate_records(10, profile="clean")
    assert not set(a) & set(more)
    assert {first.records[m].expected_class for m in more} == {"READY"}
    assert first.records[a[0]].title == "Data Repository for Reproducible Research"


def test_generation_scales_past_the_fixture() -> None:
    sim = Simulator()
    ids = sim.generate_records(100_000, profile="clean")
    assert len(set(ids)) == 100_000 and all(m.endswith("04641") and m.startswith("99") for m in ids[-3:])
    last = sim.records[ids[-1]]
    assert f"alma:01GCL_INST/bibs/{last.mms_id}".encode() in last.xml
