"""Tests for orchestrator.domain.handles: handle syntax and URL verdicts (the rows come from Grinnell's 2 Feb 2026
validation run).
"""

from __future__ import annotations

import pytest

from orchestrator.config import PrimoConfig
from orchestrator.domain.handles import Verdict, classify_url, expected_url, handle_url, normalise_url, parse_handle

PRIMO = PrimoConfig(domain="grinnell.primo.exlibrisgroup.com", view="01GCL_INST:GCL")


# ---------------------------------------------------------------------------------------------
# Syntax


@pytest.mark.parametrize(
    ("raw", "handle", "problem", "note"),
    [
        ("http://hdl.handle.net/11084/34662", "11084/34662", None, None),
        ("https://hdl.handle.net/11084/34662", "11084/34662", None, "https form accepted"),
        ("HTTP://HDL.Handle.NET/11084/34662", "11084/34662", None, "scheme/host case normalised"),
        ("hdl:11084/34662", "11084/34662", None, "hdl: form accepted"),
        ("HDL:11084/88", "11084/88", None, "hdl: form accepted"),
        ("11084/1768421720", "11084/1768421720", None, "bare prefix/suffix form accepted"),
        ("  http://hdl.handle.net/11084/88\n", "11084/88", None, "surrounding whitespace stripped"),
        ("http://hdl.handle.net/11084/19919/", None, "trailing slash", None),
        ("http://hdl.handle.net/11084/ 19919", None, "contains whitespace", None),
        ("http://hdl.handle.net/11084/19\t919", None, "contains whitespace", None),
        ("http://hdl.handle.net/123/45", None, "prefix 123 is not 11084", None),
        ("http://hdl.handle.net/11084/", None, "trailing slash; empty suffix", None),
        ("http://hdl.handle.net/11084", None, "no '/' between prefix and suffix", None),
        ("http://hdl.handle.net/", None, "no handle after the host", None),
        ("http://example.org/11084/88", None, "not a handle URL (host example.org)", None),
        ("ftp://hdl.handle.net/11084/88", None, "not a handle URL (scheme ftp)", None),
        ("hdl.handle.net/11084/88", None, "handle URL without http:// scheme", None),
        ("http://hdl.handle.net/11084/88?noredirect", None, "URL has a query or fragment", None),
        ("http://hdl.handle.net/11084//88", None, "double slash after the prefix", None),
        ("grinnell:88", None, "not a handle", None),
        ("", None, "empty", None),
        ("   ", None, "empty", "surrounding whitespace stripped"),
    ],
)
def test_parse_handle(raw: str, handle: str | None, problem: str | None, note: str | None) -> None:
    parsed = parse_handle(raw, "11084")
    assert (parsed.handle, parsed.problem) == (handle, problem)
    if note is not None:
        assert parsed.note is not None and note in parsed.note
    elif handle is not None:
        assert parsed.note is None


def test_parse_handle_without_prefix_accepts_any_prefix() -> None:
    assert parse_handle("http://hdl.handle.net/2027/54", None).handle == "2027/54"
    assert parse_handle("0.NA/11084", None).handle == "0.NA/11084"


def test_handle_url_is_the_grinnell_form() -> None:
    assert handle_url("11084/34662") == "http://hdl.handle.net/11084/34662"
    assert parse_handle(handle_url("11084/34662"), "11084").note is None


# ---------------------------------------------------------------------------------------------
# URL verdicts

MMS = "991011591572804641"
EXPECTED = "https://grinnell.primo.exlibrisgroup.com/discovery/fulldisplay/alma991011591572804641/01GCL_INST:GCL"


def test_expected_url_is_the_primo_record_url() -> None:
    assert expected_url(PRIMO, MMS) == EXPECTED == PRIMO.record_url(MMS)


@pytest.mark.parametrize(
    ("url", "verdict"),
    [
        (EXPECTED, Verdict.OK),
        (f"  {EXPECTED}\n", Verdict.OK),
        (EXPECTED.replace("https://grinnell.primo", "HTTPS://Grinnell.PRIMO"), Verdict.OK),
        # Grinnell's 11789 points at the neighbouring record
        (EXPECTED.replace("alma991011591572804641", "alma991011591572104641"), Verdict.WRONG_RECORD),
        (
            "https://grinnell.primo.exlibrisgroup.com/discovery/fulldisplay?docid=alma991011591572104641"
            "&vid=01GCL_INST:GCL",
            Verdict.WRONG_RECORD,
        ),
        (EXPECTED.replace("01GCL_INST:GCL", "01GCL_INST:OTHER"), Verdict.WRONG_TARGET),
        (EXPECTED.replace("01GCL_INST:GCL", "01GCL_INST%3AGCL"), Verdict.WRONG_TARGET),
        (EXPECTED.replace("/01GCL_INST:GCL", "/01gcl_inst:gcl"), Verdict.WRONG_TARGET),
        (EXPECTED + "/", Verdict.WRONG_TARGET),
        (
            "https://grinnell.primo.exlibrisgroup.com/permalink/01GCL_INST/1prvshj/alma991011591572804641",
            Verdict.WRONG_TARGET,
        ),
        ("https://digital.grinnell.edu/islandora/object/grinnell:11789", Verdict.WRONG_TARGET),
        (None, Verdict.NO_URL),
        ("  ", Verdict.NO_URL),
    ],
)
def test_classify_url(url: str | None, verdict: Verdict) -> None:
    assert classify_url(url, MMS, PRIMO) is verdict


def test_normalise_url_touches_only_scheme_host_and_whitespace() -> None:
    assert normalise_url(" HTTPS://A.B/Path:X?Q=Y ") == "https://a.b/Path:X?Q=Y"
