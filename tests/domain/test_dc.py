"""Tests for orchestrator.domain.dc: preflight classes, duplicates, byte-exact repair, record comparison.

Fixtures in tests/domain/data/dc/ are shaped like Alma's `GET /bibs/{mms_id}` replies for Dublin Core records
with MMS IDs, titles and handles from Grinnell's public data.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from lxml import etree

from orchestrator.alma.types import Bib
from orchestrator.domain import dc
from orchestrator.domain.dc import (
    BLOCKING,
    Preflight,
    RecordCheck,
    RepairError,
    classify_bib,
    find_duplicates,
    missing_check,
    remove_handle_xsi_type,
    same_record,
)
from orchestrator.errors import HwfError, UnsafeXmlError
from orchestrator.xmlsafe import parse_xml

DATA = Path(__file__).parent / "data" / "dc"
PREFIX = "11084"


def load(name: str) -> bytes:
    return (DATA / name).read_bytes()


def bib(name: str, *, record_format: str | None = None, title: str | None = None) -> Bib:
    data = load(name)
    found = re.search(rb"<mms_id>(\d+)</mms_id>", data)
    mms_id = found.group(1).decode() if found else name
    return Bib(mms_id=mms_id, record_format=record_format, title=title, xml=data)


def check(name: str, **kwargs: str | None) -> RecordCheck:
    return classify_bib(bib(name, **kwargs), PREFIX)


# ---------------------------------------------------------------------------------------------
# Preflight classes


@pytest.mark.parametrize(
    ("name", "preflight", "handle"),
    [
        ("ready_grinnell.xml", Preflight.READY, "11084/1761063767"),
        ("ready_handles31.xml", Preflight.READY, "11084/34662"),
        ("needs_copy_legacy.xml", Preflight.NEEDS_COPY, "11084/88"),
        ("needs_fix_simple.xml", Preflight.NEEDS_FIX, "11084/14259"),
        ("fix_dcterms_first.xml", Preflight.NEEDS_FIX, "11084/19974"),
        ("fix_single_quotes.xml", Preflight.NEEDS_FIX, "11084/10001"),
        ("fix_other_xsi_prefix.xml", Preflight.NEEDS_FIX, "11084/10002"),
        ("fix_separate_line.xml", Preflight.NEEDS_FIX, "11084/224"),
        ("fix_crlf.xml", Preflight.NEEDS_FIX, "11084/10426"),
        ("fix_non_ascii.xml", Preflight.NEEDS_FIX, "11084/96"),
        ("fix_xml_lang_first.xml", Preflight.NEEDS_FIX, "11084/29700"),
        ("fix_comment_decoy.xml", Preflight.NEEDS_FIX, "11084/26671"),
        ("no_handle.xml", Preflight.NO_HANDLE, None),
        ("bad_trailing_slash.xml", Preflight.BAD_HANDLE, None),
        ("bad_untrimmed.xml", Preflight.BAD_HANDLE, "11084/11789"),
        ("bad_other_prefix.xml", Preflight.BAD_HANDLE, None),
        ("bad_two_handles.xml", Preflight.BAD_HANDLE, None),
        ("bad_dcterms_space.xml", Preflight.BAD_HANDLE, None),
        ("marc21.xml", Preflight.NOT_DC, None),
        ("doctype_entity.xml", Preflight.BAD_XML, None),
        ("malformed.xml", Preflight.BAD_XML, None),
    ],
)
def test_every_fixture_has_its_class(name: str, preflight: Preflight, handle: str | None) -> None:
    result = check(name)
    assert result.preflight is preflight, result.detail
    assert result.handle == handle
    assert (preflight in BLOCKING) == (result.preflight in BLOCKING)


def test_ready_record_fields() -> None:
    result = check("ready_grinnell.xml")
    assert result.mms_id == "991011687640104641"
    assert result.record_format == "dcap01"  # read from the XML when the Bib does not say
    assert result.title == "Photos_For_DG-Stella_SHLC_20251021_112115.csv"
    assert result.handle_raw == "http://hdl.handle.net/11084/1761063767"
    assert result.detail is None


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("needs_fix_simple.xml", ['xsi:type="dcterms:URI"']),
        ("needs_copy_legacy.xml", ["only in dcterms:identifier", "dcterms:URI"]),
        ("bad_trailing_slash.xml", ["trailing slash", "11084/19919/"]),
        ("bad_untrimmed.xml", ["untrimmed"]),
        ("bad_other_prefix.xml", ["prefix 2027 is not 11084"]),
        ("bad_two_handles.xml", ["two handles: 11084/5185, 11084/1742400039"]),
        ("bad_dcterms_space.xml", ["dcterms:identifier", "contains whitespace"]),
        ("marc21.xml", ["marc21", "not Dublin Core"]),
        ("doctype_entity.xml", ["DOCTYPE"]),
        ("malformed.xml", ["not well-formed"]),
    ],
)
def test_details_say_why(name: str, words: list[str]) -> None:
    detail = check(name).detail or ""
    for word in words:
        assert word in detail


def test_untrimmed_keeps_the_raw_text() -> None:
    result = check("bad_untrimmed.xml")
    assert result.handle_raw == " http://hdl.handle.net/11084/11789\n    "


def test_titles_come_from_dc_title_then_the_bib() -> None:
    assert check("fix_non_ascii.xml").title == (
        "Wollstonecraft, Kant, and China’s One-Child Policy: The Right to Education Vs. The Right to Life"
    )
    assert check("marc21.xml").title == "Limitations of Second-Generation Korean Americans’ Ethnic Options"
    assert check("malformed.xml", title="From Alma").title == "From Alma"


@pytest.mark.parametrize("fmt", ["dc", "DC", "dcap01", "DCAP02", "qdc"])
def test_dc_formats_are_accepted(fmt: str) -> None:
    assert check("ready_grinnell.xml", record_format=fmt).preflight is Preflight.READY


@pytest.mark.parametrize("fmt", ["marc21", "unimarc", "mods", "kormarc"])
def test_other_formats_are_not_dc(fmt: str) -> None:
    result = check("ready_grinnell.xml", record_format=fmt)
    assert result.preflight is Preflight.NOT_DC
    assert result.record_format == fmt


def test_record_xml_alone_is_enough() -> None:
    root = parse_xml(load("needs_fix_simple.xml"))
    element = root.find("{http://alma.exlibrisgroup.com/dc/01GCL_INST}record")
    assert element is not None
    record = etree.tostring(element)
    result = classify_bib(Bib("1", "dcap01", None, xml=b"", record_xml=record), PREFIX)
    assert result.preflight is Preflight.NEEDS_FIX


def test_bib_without_record_is_bad_xml() -> None:
    result = classify_bib(Bib("1", "dcap01", None, xml=b"<bib><mms_id>1</mms_id></bib>"), PREFIX)
    assert result.preflight is Preflight.BAD_XML


def dc_record(*identifiers: str, terms: str = "") -> Bib:
    body = "".join(identifiers) + terms
    xml = (
        '<bib><mms_id>1</mms_id><record_format>dcap01</record_format><record xmlns:dc="http://purl.org/dc/elements/1.1/"'
        ' xmlns:dcterms="http://purl.org/dc/terms/" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
        f"<dc:title>T</dc:title>{body}</record></bib>"
    )
    return Bib("1", None, None, xml=xml.encode())


@pytest.mark.parametrize(
    ("identifiers", "terms", "preflight", "detail"),
    [
        (
            ["<dc:identifier>https://hdl.handle.net/11084/5</dc:identifier>"],
            "",
            Preflight.READY,
            "https form",
        ),
        (["<dc:identifier>hdl:11084/5</dc:identifier>"], "", Preflight.BAD_HANDLE, "not a handle URL"),
        (
            ["<dc:identifier>11084/5</dc:identifier>"],
            "",
            Preflight.BAD_HANDLE,
            "Handles Migration Task reads",
        ),
        (
            ["<dc:identifier>http://hdl.handle.net/11084/5</dc:identifier>"] * 2,
            "",
            Preflight.READY,
            "appears 2 times",
        ),
        (
            [
                "<dc:identifier>http://hdl.handle.net/11084/5</dc:identifier>",
                '<dc:identifier xsi:type="dcterms:URI">http://hdl.handle.net/11084/5</dc:identifier>',
            ],
            "",
            Preflight.NEEDS_FIX,
            "dcterms:URI",
        ),
        (
            ["<dc:identifier>http://hdl.handle.net/11084/5</dc:identifier>"],
            "<dcterms:identifier>http://hdl.handle.net/11084/1742400039</dcterms:identifier>",
            Preflight.BAD_HANDLE,
            "differs from the dcterms:identifier handle 11084/1742400039",
        ),
        (
            ["<dc:identifier>grinnell:5</dc:identifier>"],
            "<dcterms:identifier>http://hdl.handle.net/11084/5</dcterms:identifier>",
            Preflight.NEEDS_COPY,
            "only in dcterms:identifier",
        ),
        (["<dc:identifier>http://hdl.handle.net/11084</dc:identifier>"], "", Preflight.BAD_HANDLE, "no '/'"),
        (
            ["<dc:identifier>https://example.org/hdl.handle.net/11084/5</dc:identifier>"],
            "",
            Preflight.BAD_HANDLE,
            "not a handle URL",
        ),
        (["<dc:identifier>dg_1761063767</dc:identifier>"], "", Preflight.NO_HANDLE, None),
        (
            ['<dc:identifier xsi:type="dcterms:URI">http://hdl.handle.net/11084/5/</dc:identifier>'],
            "",
            Preflight.BAD_HANDLE,
            "trailing slash",
        ),
    ],
)
def test_edge_classes(identifiers: list[str], terms: str, preflight: Preflight, detail: str | None) -> None:
    result = classify_bib(dc_record(*identifiers, terms=terms), PREFIX)
    assert result.preflight is preflight, result.detail
    if detail is not None:
        assert detail in (result.detail or "")


def test_missing_and_blocking() -> None:
    missing = missing_check("991011718398504641")
    assert missing.preflight is Preflight.MISSING and missing.preflight in BLOCKING
    assert BLOCKING == {
        Preflight.NO_HANDLE,
        Preflight.BAD_HANDLE,
        Preflight.DUPLICATE_HANDLE,
        Preflight.NOT_DC,
        Preflight.BAD_XML,
        Preflight.MISSING,
    }
    assert not {Preflight.READY, Preflight.NEEDS_COPY, Preflight.NEEDS_FIX} & BLOCKING


# ---------------------------------------------------------------------------------------------
# Duplicates


def rc(mms_id: str, handle: str | None) -> RecordCheck:
    return RecordCheck(mms_id, None, "dcap01", Preflight.READY, handle, handle, None)


def test_duplicates_within_a_set() -> None:
    # "11084/1750186419 points to letter ONE, not letter TWO": two records, one handle
    checks = [
        rc("991011700000104641", "11084/1750186419"),
        rc("991011700000204641", "11084/1750186419"),
        rc("991011700000304641", "11084/1750186420"),
        rc("991011700000404641", None),
    ]
    assert find_duplicates(checks) == {
        "991011700000104641": "handle 11084/1750186419 also on MMS 991011700000204641",
        "991011700000204641": "handle 11084/1750186419 also on MMS 991011700000104641",
    }


def test_duplicates_three_ways_and_case_insensitive() -> None:
    checks = [rc("1", "11084/abc"), rc("2", "11084/ABC"), rc("3", "11084/Abc"), rc("1", "11084/abc")]
    dups = find_duplicates(iter(checks))
    assert dups == {
        "1": "handle 11084/abc also on MMS 2, 3",
        "2": "handle 11084/abc also on MMS 1, 3",
        "3": "handle 11084/abc also on MMS 1, 2",
    }


def test_duplicates_against_another_set() -> None:
    checks = [rc("1", "11084/88"), rc("2", "11084/89"), rc("3", "11084/90")]
    known = {"11084/88": "77", "http://hdl.handle.net/11084/89": "78", "11084/90": "3"}
    assert find_duplicates(checks, known) == {
        "1": "handle 11084/88 also on MMS 77 (another set)",
        "2": "handle 11084/89 also on MMS 78 (another set)",
    }
    assert find_duplicates(checks) == {}


# ---------------------------------------------------------------------------------------------
# Repair


def test_simple_repair_removes_exactly_the_attribute() -> None:
    original = load("needs_fix_simple.xml")
    repair = remove_handle_xsi_type(original, PREFIX, "991011546573204641")
    assert repair is not None
    assert original.replace(b' xsi:type="dcterms:URI"', b"", 1) == repair.repaired
    assert repair.original == original and repair.mms_id == "991011546573204641"
    assert repair.removed == ('xsi:type="dcterms:URI"',)
    # the dcterms:identifier keeps its own xsi:type
    assert (
        b'<dcterms:identifier xsi:type="dcterms:URI">http://hdl.handle.net/11084/14259</dcterms:identifier>'
        in repair.repaired
    )
    assert repair.repaired.count(b'xsi:type="dcterms:URI"') == 1
    assert b'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"' in repair.repaired
    assert repair.repaired.startswith(b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<bib>')
    assert '-    <dc:identifier xsi:type="dcterms:URI">http://hdl.handle.net/11084/14259</dc:identifier>' in repair.diff
    assert "+    <dc:identifier>http://hdl.handle.net/11084/14259</dc:identifier>" in repair.diff
    assert repair.diff.startswith("--- 991011546573204641 (Alma)\n+++ 991011546573204641 (repaired)\n")


# (fixture, the handle dc:identifier start tag before, after): everything else must be identical
ODD_FORMS = [
    (
        "fix_dcterms_first.xml",
        b'<dc:identifier xsi:type="dcterms:URI">',
        b"<dc:identifier>",
    ),
    (
        "fix_single_quotes.xml",
        b"<dc:identifier xsi:type='dcterms:URI'>",
        b"<dc:identifier>",
    ),
    (
        "fix_other_xsi_prefix.xml",
        b'<dc:identifier type="uri" x:type="dcterms:URI">',
        b'<dc:identifier type="uri">',
    ),
    (
        "fix_separate_line.xml",
        b'<dc:identifier\n        xsi:type = "dcterms:URI"\n        xml:lang="eng">',
        b'<dc:identifier\n        xml:lang="eng">',
    ),
    (
        "fix_crlf.xml",
        b'<dc:identifier\r\n      xsi:type="dcterms:URI">',
        b"<dc:identifier>",
    ),
    (
        "fix_non_ascii.xml",
        b'<dc:identifier xsi:type="dcterms:URI">',
        b"<dc:identifier>",
    ),
    (
        "fix_xml_lang_first.xml",
        b'<dc:identifier xml:lang="eng" xsi:type="dcterms:URI">',
        b'<dc:identifier xml:lang="eng">',
    ),
    (
        "fix_comment_decoy.xml",
        b'<dc:identifier xsi:type="dcterms:URI">http://hdl.handle.net/11084/26671',
        b"<dc:identifier>http://hdl.handle.net/11084/26671",
    ),
]


@pytest.mark.parametrize(("name", "before", "after"), ODD_FORMS)
def test_repair_of_odd_forms_is_byte_exact(name: str, before: bytes, after: bytes) -> None:
    original = load(name)
    assert original.count(before) == 1
    position = original.index(before)
    expected = original[:position] + after + original[position + len(before) :]
    repair = remove_handle_xsi_type(original, PREFIX, name)
    assert repair is not None
    assert repair.repaired == expected
    # the dcterms:identifier (or decoys) keep their own xsi:type
    assert len(original) - len(repair.repaired) == len(before) - len(after)
    assert classify_bib(Bib(name, None, None, xml=repair.repaired), PREFIX).preflight is Preflight.READY


def test_repair_keeps_crlf_and_utf8() -> None:
    crlf = remove_handle_xsi_type(load("fix_crlf.xml"), PREFIX)
    assert crlf is not None and crlf.repaired.count(b"\r\n") == load("fix_crlf.xml").count(b"\r\n") - 1
    assert b"\n" not in crlf.repaired.replace(b"\r\n", b"")
    text = remove_handle_xsi_type(load("fix_non_ascii.xml"), PREFIX)
    assert text is not None
    assert "“Educación” — Ñandú, 北京, Zürich".encode() in text.repaired
    assert b"Caf\xc3\xa9 &amp; cr\xc3\xa8me br\xc3\xbbl\xc3\xa9e &#8212; kept as written" in text.repaired
    assert "China’s" in text.diff


def test_repair_leaves_comments_cdata_and_pis_alone() -> None:
    original = load("fix_comment_decoy.xml")
    repair = remove_handle_xsi_type(original, PREFIX)
    assert repair is not None
    assert repair.repaired.count(b'<dc:identifier xsi:type="dcterms:URI">') == 3  # comment x2, CDATA
    assert b"<?alma-note keep me?>" in repair.repaired


@pytest.mark.parametrize(
    "name", ["ready_grinnell.xml", "ready_handles31.xml", "needs_copy_legacy.xml", "no_handle.xml"]
)
def test_nothing_to_repair(name: str) -> None:
    assert remove_handle_xsi_type(load(name), PREFIX) is None


def test_repair_ignores_non_handle_identifiers_with_xsi_type() -> None:
    record = dc_record(
        '<dc:identifier xsi:type="dcterms:URI">https://digital.grinnell.edu/islandora/object/grinnell:5</dc:identifier>'
    )
    assert remove_handle_xsi_type(record.xml, PREFIX) is None


def test_repair_removes_it_from_every_handle_dc_identifier() -> None:
    original = dc_record(
        '<dc:identifier xsi:type="dcterms:URI">http://hdl.handle.net/11084/5</dc:identifier>',
        '<dc:identifier xsi:type="dcterms:URI" >http://hdl.handle.net/11084/5</dc:identifier>',
    ).xml
    repair = remove_handle_xsi_type(original, PREFIX)
    assert repair is not None
    assert repair.repaired == original.replace(b' xsi:type="dcterms:URI"', b"")
    assert len(repair.removed) == 2


XSI = "http://www.w3.org/2001/XMLSchema-instance"


@pytest.mark.parametrize(
    ("element", "expected"),
    [
        # the XSI prefix declared on the element itself
        (
            f'<dc:identifier xmlns:q="{XSI}" q:type="dcterms:URI">http://hdl.handle.net/11084/5</dc:identifier>',
            f'<dc:identifier xmlns:q="{XSI}">http://hdl.handle.net/11084/5</dc:identifier>',
        ),
        # "xsi" bound to something else: only the attribute in the XSI namespace goes
        (
            f'<dc:identifier xmlns:xsi="urn:not-xsi" xmlns:real="{XSI}" xsi:type="keep"'
            ' real:type="dcterms:URI">'
            "http://hdl.handle.net/11084/5</dc:identifier>",
            '<dc:identifier xmlns:xsi="urn:not-xsi" xmlns:real="http://www.w3.org/2001/XMLSchema-instance"'
            ' xsi:type="keep">http://hdl.handle.net/11084/5</dc:identifier>',
        ),
        # DC as the default namespace: no dc: prefix on the element
        (
            '<identifier xmlns="http://purl.org/dc/elements/1.1/" xsi:type="dcterms:URI">'
            "http://hdl.handle.net/11084/5</identifier>",
            '<identifier xmlns="http://purl.org/dc/elements/1.1/">http://hdl.handle.net/11084/5</identifier>',
        ),
    ],
)
def test_repair_follows_namespaces_not_prefixes(element: str, expected: str) -> None:
    original = dc_record(element).xml
    assert classify_bib(Bib("1", None, None, xml=original), PREFIX).preflight is Preflight.NEEDS_FIX
    repair = remove_handle_xsi_type(original, PREFIX)
    assert repair is not None
    assert repair.repaired == original.replace(element.encode(), expected.encode())


def test_repair_refuses_unsafe_documents() -> None:
    with pytest.raises(UnsafeXmlError):
        remove_handle_xsi_type(load("doctype_entity.xml"), PREFIX)
    with pytest.raises(RepairError):
        remove_handle_xsi_type(load("needs_fix_simple.xml").decode().encode("utf-16"), PREFIX)


def test_repair_recheck_catches_any_other_change() -> None:
    original = load("needs_fix_simple.xml")
    root = parse_xml(original)
    targets = {i for i, el in enumerate(dc._elements(root)) if el.get(dc.XSI_TYPE) and el.tag == dc.DC_IDENTIFIER}
    good = original.replace(b' xsi:type="dcterms:URI"', b"", 1)
    dc._check_repair(root, good, targets, "1")  # the real repair passes
    for tampered in (
        good.replace(b"11084/14259</dc:identifier>", b"11084/14258</dc:identifier>"),
        good.replace(b' xsi:type="dcterms:URI"', b"", 1),  # the dcterms one too
        good.replace(b"<dc:title>", b"<dc:title xml:lang='eng'>"),
        good.replace(b'standalone="yes"', b'standalone="no"'),
        good.replace(b"</dc:title>", b"</dc:title><dc:type>x</dc:type>"),
    ):
        with pytest.raises(RepairError):
            dc._check_repair(root, tampered, targets, "1")
    assert issubclass(RepairError, ValueError) and issubclass(RepairError, HwfError)


# ---------------------------------------------------------------------------------------------
# Record comparison


def test_same_record() -> None:
    original = load("needs_fix_simple.xml")
    repair = remove_handle_xsi_type(original, PREFIX)
    assert repair is not None
    assert same_record(original, original)
    assert not same_record(original, repair.repaired)
    # Alma touched only bib-level fields: the record is the same
    touched = original.replace(b"<title>Amana", b"<title>Amana (edited)")
    assert same_record(original, touched)
    # re-indented record, comments and prolog differences do not count
    reindented = re.sub(rb">\s+<", b"><", original).replace(b"<dc:title>", b"<!-- x --><dc:title>")
    assert same_record(original, reindented)
    # attribute quoting and order are not content either
    quoted = original.replace(b'xsi:type="dcterms:URI"', b"xsi:type='dcterms:URI'")
    assert same_record(original, quoted)
    # a changed value is
    assert not same_record(original, original.replace(b"Amana Meat Shop, Amana, Iowa</dc:title>", b"X</dc:title>"))
    assert not same_record(original, original.replace(b"<dc:identifier>grinnell:14259</dc:identifier>", b""))
    with pytest.raises(UnsafeXmlError):
        same_record(original, load("malformed.xml"))


# ---------------------------------------------------------------------------------------------
# Speed


def test_classification_speed_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    templates = [load(n) for n in ("ready_grinnell.xml", "needs_fix_simple.xml", "needs_copy_legacy.xml")]
    bibs = [
        Bib(
            str(991000000000000000 + i),
            "dcap01",
            None,
            xml=templates[i % 3].replace(b"11084/", f"11084/{i}".encode()),
        )
        for i in range(5000)
    ]
    started = time.perf_counter()
    results = [classify_bib(b, PREFIX) for b in bibs]
    elapsed = time.perf_counter() - started
    assert {r.preflight for r in results} == {Preflight.READY, Preflight.NEEDS_FIX, Preflight.NEEDS_COPY}
    assert find_duplicates(results) == {}
    with capsys.disabled():
        print(f"\n[dc] classified 5,000 records in {elapsed:.2f} s ({5000 / elapsed:,.0f} records/s)")
