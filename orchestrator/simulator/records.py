"""Simulated bibliographic records: the SimRecord shape, record XML templates and the profile generator.

Records are drawn from ``data/grinnell-sample.csv`` (605 real Grinnell digital titles: MMS ID,
``grinnell:N`` number, title; derived from Grinnell's public title export, every 19th title plus a
few with known wrong-record handles and non-ASCII titles). Beyond the fixture, MMS IDs and titles
are synthesized deterministically. XML is rendered lazily, so 100,000 records cost little until read.
"""

from __future__ import annotations

import csv
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from xml.sax.saxutils import escape

DC_NS = "http://purl.org/dc/elements/1.1/"
DCTERMS_NS = "http://purl.org/dc/terms/"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
HANDLE_HOST = "http://hdl.handle.net/"

READY = "READY"
NEEDS_COPY = "NEEDS_COPY"
NEEDS_FIX = "NEEDS_FIX"
NO_HANDLE = "NO_HANDLE"
BAD_HANDLE = "BAD_HANDLE"
DUPLICATE_HANDLE = "DUPLICATE_HANDLE"
NOT_DC = "NOT_DC"
BAD_XML = "BAD_XML"
PROBLEM_CLASSES = (READY, NEEDS_COPY, NEEDS_FIX, NO_HANDLE, BAD_HANDLE, DUPLICATE_HANDLE, NOT_DC, BAD_XML)
_PROBLEM_WEIGHTS = (40, 25, 10, 5, 8, 4, 4, 4)
_FIXTURE = Path(__file__).parent / "data" / "grinnell-sample.csv"
_DC_TYPES = ("Still Image", "Text", "Sound", "Moving Image", "Dataset")

# Where the handle URL sits in a DC record; the key decides which class preflight should see.
PLACEMENTS = ("dcterms", "dc", "dc_typed", "none")


def alma_dc_namespace(institution: str) -> str:
    """The default namespace of an institution's DC records."""
    return f"http://alma.exlibrisgroup.com/dc/{institution}"


class SimRecord:
    """One bib in the simulator. ``xml`` is the ``<record>`` element as bytes (rendered lazily)."""

    __slots__ = (
        "mms_id",
        "title",
        "record_format",
        "hidden_handle",
        "expected_class",
        "local_id",
        "created_date",
        "last_modified_date",
        "last_modified_by",
        "_xml",
        "_render",
    )

    def __init__(
        self,
        mms_id: str,
        title: str,
        record_format: str = "dcap01",
        xml: bytes | None = None,
        hidden_handle: str | None = None,
        *,
        expected_class: str | None = None,
        local_id: str | None = None,
        render: Callable[[], bytes] | None = None,
    ) -> None:
        if xml is None and render is None:
            raise ValueError("a SimRecord needs xml or a render function")
        self.mms_id = mms_id
        self.title = title
        self.record_format = record_format
        self.hidden_handle = hidden_handle
        self.expected_class = expected_class
        self.local_id = local_id
        self.created_date = "2025-05-08Z"
        self.last_modified_date = "2025-05-08Z"
        self.last_modified_by = "import"
        self._xml = xml
        self._render = render

    @property
    def xml(self) -> bytes:
        """The ``<record>`` bytes (rendered on first read)."""
        if self._xml is None:
            assert self._render is not None
            self._xml = self._render()
            self._render = None
        return self._xml

    @xml.setter
    def xml(self, value: bytes) -> None:
        self._xml = value
        self._render = None

    @property
    def is_dc(self) -> bool:
        """Dublin Core (dc, dcap01, dcap02), not MARC."""
        return not self.record_format.startswith("marc")

    def __repr__(self) -> str:
        return f"SimRecord({self.mms_id!r}, {self.title!r}, {self.record_format!r}, {self.hidden_handle!r})"


def dc_record_xml(
    *,
    institution: str,
    mms_id: str,
    title: str,
    handle_url: str | None = None,
    placement: str = "dc",
    local_id: str | None = None,
    dc_type: str | None = None,
) -> bytes:
    """A Grinnell-style DC ``<record>`` with the handle URL placed as ``placement`` says.

    ``dcterms`` = only in ``dcterms:identifier xsi:type="dcterms:URI"`` (needs the copy job);
    ``dc`` = also a plain ``dc:identifier`` (ready); ``dc_typed`` = the ``dc:identifier`` carries
    ``xsi:type`` too (needs the fix); ``none`` = no handle.
    """
    if placement not in PLACEMENTS:
        raise ValueError(f"placement must be one of {PLACEMENTS}, not {placement!r}")
    parts = [
        f'<record xmlns="{alma_dc_namespace(institution)}" xmlns:dc="{DC_NS}" '
        f'xmlns:dcterms="{DCTERMS_NS}" xmlns:xsi="{XSI_NS}">',
        f"<dc:title>{escape(title)}</dc:title>",
    ]
    if dc_type:
        parts.append(f'<dc:type xml:lang="eng">{escape(dc_type)}</dc:type>')
    if handle_url is not None and placement != "none":
        url = escape(handle_url)
        parts.append(f'<dcterms:identifier xsi:type="dcterms:URI">{url}</dcterms:identifier>')
        if placement == "dc":
            parts.append(f"<dc:identifier>{url}</dc:identifier>")
        elif placement == "dc_typed":
            parts.append(f'<dc:identifier xsi:type="dcterms:URI">{url}</dc:identifier>')
    if local_id:
        parts.append(f"<dc:identifier>{escape(local_id)}</dc:identifier>")
    parts.append(f'<dginfo xml:lang="eng">{escape(local_id or mms_id)}</dginfo>')
    parts.append(f"<dc:identifier>alma:{institution}/bibs/{mms_id}</dc:identifier>")
    parts.append("</record>")
    return "".join(parts).encode("utf-8")


def marc_record_xml(*, mms_id: str, title: str, handle: str | None = None) -> bytes:
    """A small MARC 21 ``<record>`` as Alma embeds it in a bib (no namespace)."""
    parts = [
        "<record><leader>00000nam a2200000 a 4500</leader>",
        f'<controlfield tag="001">{mms_id}</controlfield>',
        '<controlfield tag="005">20250508182124.0</controlfield>',
    ]
    if handle:
        parts.append(
            f'<datafield ind1="7" ind2=" " tag="024"><subfield code="a">{escape(handle)}</subfield>'
            '<subfield code="2">hdl</subfield></datafield>'
        )
    parts.append(f'<datafield ind1="0" ind2="0" tag="245"><subfield code="a">{escape(title)}</subfield></datafield>')
    parts.append("</record>")
    return "".join(parts).encode("utf-8")


def corrupt_xml(xml: bytes, kind: str) -> bytes:
    """A broken variant of a record: ``malformed`` (unclosed element) or ``doctype`` (DTD with an entity)."""
    if kind == "doctype":
        body = xml.replace(b"</record>", b"<dc:description>&sim;</dc:description></record>", 1)
        return b'<!DOCTYPE record [<!ENTITY sim "entity text">]>' + body
    if kind == "malformed":
        return xml.replace(b"</record>", b"<dc:description>unclosed</record>", 1)
    raise ValueError(f"unknown corruption {kind!r}")


@dataclass(frozen=True)
class FixtureRow:
    """One row of the derived Grinnell fixture."""

    mms_id: str
    grinnell_id: str
    title: str


@lru_cache(maxsize=1)
def fixture_rows() -> tuple[FixtureRow, ...]:
    """The derived Grinnell fixture (read once)."""
    with _FIXTURE.open(encoding="utf-8", newline="") as handle:
        return tuple(FixtureRow(r["mms_id"], r["grinnell_id"], r["title"]) for r in csv.DictReader(handle))


class RecordFactory:
    """Makes records for one institution; ``index`` numbers records so no MMS ID repeats across calls."""

    def __init__(self, institution: str, id_suffix: str, handle_prefix: str) -> None:
        self.institution = institution
        self.id_suffix = id_suffix
        self.prefix = handle_prefix

    def identity(self, index: int) -> tuple[str, str, str]:
        """(MMS ID, local number N, title) of the ``index``-th record: fixture first, then synthesized."""
        rows = fixture_rows()
        if index < len(rows):
            row = rows[index]
            return row.mms_id, row.grinnell_id, row.title
        base = rows[index % len(rows)]
        copy = index // len(rows) + 1
        return (
            f"99{12_000_000_000 + index:011d}0{self.id_suffix}",
            str(100_000 + index),
            f"{base.title} ({copy})",
        )

    def handle_url(self, number: str) -> str:
        """The legacy handle URL of local number ``number``."""
        return f"{HANDLE_HOST}{self.prefix}/{number}"

    def make(
        self, index: int, cls: str, rng: random.Random, duplicate_of: str | None = None, title_prefix: str = ""
    ) -> tuple[SimRecord, str | None]:
        """Build the ``index``-th record of class ``cls``; returns it and its metadata handle URL."""
        mms, number, title = self.identity(index)
        title = title_prefix + title
        local = f"grinnell:{number}"
        url: str | None = self.handle_url(number)
        dc_type = _DC_TYPES[index % len(_DC_TYPES)] if index % 2 else None
        placement = "dc"
        corrupt: str | None = None
        if cls == NEEDS_COPY:
            placement = "dcterms"
        elif cls == NEEDS_FIX:
            placement = "dc_typed"
        elif cls == NO_HANDLE:
            placement, url = "none", None
        elif cls == BAD_HANDLE:
            url = rng.choice(
                (
                    f"{url}/",
                    f"{HANDLE_HOST} {self.prefix}/{number}",
                    f"{HANDLE_HOST}10.5555/{number}",
                    f"{self.prefix}/{number}",
                )
            )
        elif cls == DUPLICATE_HANDLE:
            url = duplicate_of or url
        elif cls == BAD_XML:
            corrupt = rng.choice(("malformed", "doctype"))
        if cls == NOT_DC:
            handle = f"{self.prefix}/{number}"
            record = SimRecord(
                mms,
                title,
                "marc21",
                render=lambda: marc_record_xml(mms_id=mms, title=title, handle=handle),
                expected_class=cls,
                local_id=local,
            )
            return record, None
        inst = self.institution

        def render() -> bytes:
            xml = dc_record_xml(
                institution=inst,
                mms_id=mms,
                title=title,
                handle_url=url,
                placement=placement,
                local_id=local,
                dc_type=dc_type,
            )
            return corrupt_xml(xml, corrupt) if corrupt else xml

        return SimRecord(mms, title, "dcap01", render=render, expected_class=cls, local_id=local), url

    def generate(self, start: int, count: int, profile: str, seed: int, title_prefix: str = "") -> list[SimRecord]:
        """``count`` records numbered from ``start``, classes drawn for ``profile`` from ``Random(seed)``;
        ``title_prefix`` goes before every title."""
        rng = random.Random(seed)
        classes = _classes(profile, count, rng)
        records: list[SimRecord] = []
        last_ready_url: str | None = None
        for offset, cls in enumerate(classes):
            record, url = self.make(start + offset, cls, rng, duplicate_of=last_ready_url, title_prefix=title_prefix)
            if cls == READY:
                last_ready_url = url
            records.append(record)
        return records


def _classes(profile: str, count: int, rng: random.Random) -> Sequence[str]:
    if profile == "clean":
        return [READY] * count
    if profile == "demo":
        return [READY if rng.random() < 0.15 else NEEDS_COPY for _ in range(count)]
    if profile == "problems":
        first = list(PROBLEM_CLASSES[:count])
        rest = rng.choices(PROBLEM_CLASSES, weights=_PROBLEM_WEIGHTS, k=max(0, count - len(first)))
        return first + rest
    raise ValueError(f"unknown profile {profile!r} (demo, problems, clean)")
