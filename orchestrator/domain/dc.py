"""Dublin Core inspection and byte-preserving repair of Alma bib records.

Owns: the preflight class of each record (``classify_bib``), handles shared by several records
(``find_duplicates``), removing ``xsi:type`` from the handle ``dc:identifier`` without touching any
other byte (``remove_handle_xsi_type``), and the canonical record comparison used before a PUT or
an undo (``same_record``). Every document is parsed with ``xmlsafe.parse_xml``.
"""

from __future__ import annotations

import difflib
import enum
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from copy import deepcopy
from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol

from lxml import etree

from orchestrator.alma.types import Bib
from orchestrator.domain.handles import ParsedHandle, parse_handle
from orchestrator.errors import HwfError, UnsafeXmlError
from orchestrator.xmlsafe import parse_xml

DC_NS = "http://purl.org/dc/elements/1.1/"
DCTERMS_NS = "http://purl.org/dc/terms/"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
XSI_TYPE = f"{{{XSI_NS}}}type"
DC_IDENTIFIER = f"{{{DC_NS}}}identifier"
DCTERMS_IDENTIFIER = f"{{{DCTERMS_NS}}}identifier"
DC_TITLE = f"{{{DC_NS}}}title"


class Preflight(enum.StrEnum):
    """The preflight class of one record, before any Alma job runs."""

    READY = "READY"  # one plain dc:identifier handle: the migration can take it
    NEEDS_COPY = "NEEDS_COPY"  # handle only in dcterms:identifier: the copy job is needed
    NEEDS_FIX = "NEEDS_FIX"  # the handle dc:identifier carries xsi:type: hwf removes it
    NO_HANDLE = "NO_HANDLE"
    BAD_HANDLE = "BAD_HANDLE"
    DUPLICATE_HANDLE = "DUPLICATE_HANDLE"
    NOT_DC = "NOT_DC"  # a MARC (or other) record: it would fail a whole bulk of 100
    BAD_XML = "BAD_XML"
    MISSING = "MISSING"  # Alma did not return the bib


BLOCKING = frozenset(
    {
        Preflight.NO_HANDLE,
        Preflight.BAD_HANDLE,
        Preflight.DUPLICATE_HANDLE,
        Preflight.NOT_DC,
        Preflight.BAD_XML,
        Preflight.MISSING,
    }
)


class RepairError(HwfError, ValueError):
    """A bib could not be repaired byte-for-byte, or the repaired bytes failed the re-check."""


@dataclass(frozen=True)
class RecordCheck:
    """What preflight found in one record."""

    mms_id: str
    title: str | None
    record_format: str | None
    preflight: Preflight
    handle: str | None  # normalised "prefix/suffix"
    handle_raw: str | None  # the identifier text exactly as found
    detail: str | None


@dataclass(frozen=True)
class Repair:
    """A byte-preserving edit of one ``<bib>``: the original, the result and a unified diff."""

    mms_id: str
    original: bytes
    repaired: bytes
    diff: str
    removed: tuple[str, ...] = ()  # the attribute texts cut out, e.g. 'xsi:type="dcterms:URI"'
    identifiers: tuple[str, ...] = ()  # the text of each repaired dc:identifier (the handle URL)

    def summary(self) -> str:
        """One line: ``MMS: dc:identifier http://hdl.handle.net/P/S: remove xsi:type="dcterms:URI"``."""
        what = ", ".join(self.identifiers) or "?"
        return f"{self.mms_id}: dc:identifier {what}: remove {', '.join(self.removed) or 'xsi:type'}"


# --------------------------------------------------------------------------------------------
# Preflight


@dataclass(frozen=True)
class _Found:
    element: etree._Element
    raw: str
    parsed: ParsedHandle

    @property
    def untrimmed(self) -> bool:
        return self.raw != self.raw.strip()

    @property
    def xsi_type(self) -> str | None:
        return self.element.get(XSI_TYPE)


@lru_cache(maxsize=32)
def _handle_like(prefix: str) -> re.Pattern[str]:
    return re.compile(
        r"hdl\.handle\.net|//hdl\.|handle\.net/|^\s*hdl:|^\s*\d[\d.]*/\S|(?:^|[/\s])" + re.escape(prefix) + "/",
        re.IGNORECASE,
    )


def looks_like_handle(text: str, prefix: str) -> bool:
    """True when an identifier is meant as a handle (URL, ``hdl:``, ``P/S``), well-formed or not."""
    return bool(_handle_like(prefix).search(text))


def is_dc_format(record_format: str | None) -> bool:
    """``dc``, ``dcap01``, ``dcap02``, ``qdc`` ... (case-insensitive)."""
    fmt = (record_format or "").strip().lower()
    return fmt.startswith("dc") or fmt.startswith("qdc")


def _local(element: etree._Element) -> str:
    return etree.QName(element).localname if isinstance(element.tag, str) else ""


def _find_record(root: etree._Element) -> etree._Element | None:
    if _local(root) == "record":
        return root
    for child in root:
        if _local(child) == "record":
            return child
    anies = next((c for c in root if _local(c) == "anies"), None)
    if anies is not None:
        return next((c for c in anies if _local(c) == "record"), None)
    return None


def _child_text(root: etree._Element, name: str) -> str | None:
    child = root.find(name)
    if child is None or child.text is None:
        return None
    return child.text.strip() or None


def _collect(record: etree._Element, tag: str, prefix: str) -> list[_Found]:
    found = []
    for element in record.iter(tag):
        raw = element.text or ""
        if looks_like_handle(raw, prefix):
            found.append(_Found(element, raw, parse_handle(raw, prefix)))
    return found


def missing_check(mms_id: str) -> RecordCheck:
    """The preflight row for a member Alma did not return (deleted, or not a bib)."""
    return RecordCheck(mms_id, None, None, Preflight.MISSING, None, None, "Alma did not return this bib")


def classify_bib(bib: Bib, prefix: str) -> RecordCheck:
    """Preflight one bib: READY, NEEDS_COPY, NEEDS_FIX or a blocking class, with the reason."""
    record_format = bib.record_format
    try:
        root = parse_xml(bib.xml or bib.record_xml or b"", f"bib {bib.mms_id}")
    except UnsafeXmlError as exc:
        return RecordCheck(bib.mms_id, bib.title, record_format, Preflight.BAD_XML, None, None, str(exc))
    if record_format is None:
        record_format = _child_text(root, "record_format")
    record = _find_record(root)
    title = bib.title or _child_text(root, "title")
    if record is not None:
        dc_title = record.find(f".//{DC_TITLE}")
        if dc_title is not None and dc_title.text and dc_title.text.strip():
            title = dc_title.text.strip()

    def result(
        preflight: Preflight, detail: str | None, handle: str | None = None, raw: str | None = None
    ) -> RecordCheck:
        return RecordCheck(bib.mms_id, title, record_format, preflight, handle, raw, detail)

    if record_format is not None and not is_dc_format(record_format):
        return result(
            Preflight.NOT_DC,
            f"record format {record_format} is not Dublin Core (it would fail its whole bulk)",
        )
    if record is None:
        return result(Preflight.BAD_XML, "no <record> element in the bib")
    if record_format is None and record.find(f".//{{{DC_NS}}}*") is None:
        return result(Preflight.NOT_DC, "no record format and no Dublin Core elements")

    in_dc = _collect(record, DC_IDENTIFIER, prefix)
    in_terms = _collect(record, DCTERMS_IDENTIFIER, prefix)
    if in_dc:
        return _classify_dc(in_dc, in_terms, result)
    if in_terms:
        return _classify_dcterms(in_terms, result)
    return result(Preflight.NO_HANDLE, "no handle in dc:identifier or dcterms:identifier")


def _classify_dc(in_dc: list[_Found], in_terms: list[_Found], result: _ResultFn) -> RecordCheck:
    first = in_dc[0]
    for found in in_dc:
        if found.parsed.problem is not None:
            return result(Preflight.BAD_HANDLE, f"dc:identifier {found.raw!r}: {found.parsed.problem}", None, found.raw)
    handles = list(dict.fromkeys(f.parsed.handle for f in in_dc if f.parsed.handle))
    if len(handles) > 1:
        return result(Preflight.BAD_HANDLE, f"two handles: {', '.join(handles)}", None, first.raw)
    handle = handles[0]
    for found in in_dc:
        if found.untrimmed:
            return result(
                Preflight.BAD_HANDLE,
                f"untrimmed: dc:identifier {found.raw!r} has whitespace around the handle "
                "(Alma's migration compares the text as is)",
                handle,
                found.raw,
            )
    others = {f.parsed.handle for f in in_terms if f.parsed.handle} - {handle}
    if others:
        return result(
            Preflight.BAD_HANDLE,
            f"dc:identifier handle {handle} differs from the dcterms:identifier handle {', '.join(sorted(others))}",
            handle,
            first.raw,
        )
    typed = [f for f in in_dc if f.xsi_type is not None]
    if typed:
        return result(
            Preflight.NEEDS_FIX,
            f'the handle dc:identifier carries xsi:type="{typed[0].xsi_type}"; the migration would skip it',
            handle,
            typed[0].raw,
        )
    url_forms = [
        f for f in in_dc if f.raw.strip().lower().startswith(("http://hdl.handle.net/", "https://hdl.handle.net/"))
    ]
    if not url_forms:
        # The Handles Migration Task reads handle URLs (http(s)://hdl.handle.net/...) from dc:identifier;
        # a bare "11084/N" or "hdl:11084/N" is not picked up, and the integration then mints a new handle.
        return result(
            Preflight.BAD_HANDLE,
            f"dc:identifier {first.raw!r} is not a handle URL; the Handles Migration Task reads "
            f"http://hdl.handle.net/{handle}",
            handle,
            first.raw,
        )
    notes = []
    if len(in_dc) > 1:
        notes.append(f"the handle appears {len(in_dc)} times in dc:identifier")
    if first.parsed.note:
        notes.append(f"{first.parsed.note} (the migration expects http://hdl.handle.net/{handle})")
    return result(Preflight.READY, "; ".join(notes) or None, handle, first.raw)


def _classify_dcterms(in_terms: list[_Found], result: _ResultFn) -> RecordCheck:
    first = in_terms[0]
    for found in in_terms:
        if found.parsed.problem is not None:
            return result(
                Preflight.BAD_HANDLE,
                f"dcterms:identifier {found.raw!r}: {found.parsed.problem}",
                None,
                found.raw,
            )
    handles = list(dict.fromkeys(f.parsed.handle for f in in_terms if f.parsed.handle))
    if len(handles) > 1:
        return result(Preflight.BAD_HANDLE, f"two handles: {', '.join(handles)}", None, first.raw)
    handle = handles[0]
    for found in in_terms:
        if found.untrimmed:
            return result(
                Preflight.BAD_HANDLE,
                f"untrimmed: dcterms:identifier {found.raw!r} has whitespace around the handle "
                "(the copy job would carry it into dc:identifier)",
                handle,
                found.raw,
            )
    typed = f' (with xsi:type="{first.xsi_type}", which the copy keeps)' if first.xsi_type else ""
    return result(Preflight.NEEDS_COPY, f"handle only in dcterms:identifier{typed}", handle, first.raw)


class _ResultFn(Protocol):
    """The ``result`` closure of ``classify_bib``."""

    def __call__(
        self, preflight: Preflight, detail: str | None, handle: str | None = None, raw: str | None = None
    ) -> RecordCheck: ...


def find_duplicates(checks: Iterable[RecordCheck], known: Mapping[str, str] | None = None) -> dict[str, str]:
    """``{mms_id: reason}`` for every record whose handle is on another record of ``checks`` or,
    per ``known`` (handle -> MMS ID), of another set. Handles compare case-insensitively."""
    by_handle: dict[str, list[str]] = defaultdict(list)
    shown: dict[str, str] = {}
    for check in checks:
        if check.handle is None:
            continue
        key = check.handle.upper()
        shown.setdefault(key, check.handle)
        if check.mms_id not in by_handle[key]:
            by_handle[key].append(check.mms_id)
    elsewhere: dict[str, str] = {}
    for handle, mms_id in (known or {}).items():
        parsed = parse_handle(handle, None)
        elsewhere[(parsed.handle or handle.strip()).upper()] = mms_id

    duplicates: dict[str, str] = {}
    for key, members in by_handle.items():
        other_set = elsewhere.get(key)
        for mms_id in members:
            others = [m for m in members if m != mms_id]
            reasons = []
            if others:
                reasons.append(f"handle {shown[key]} also on MMS {', '.join(others)}")
            if other_set is not None and other_set != mms_id:
                reasons.append(f"handle {shown[key]} also on MMS {other_set} (another set)")
            if reasons:
                duplicates[mms_id] = "; ".join(reasons)
    return duplicates


# --------------------------------------------------------------------------------------------
# Repair

# A start tag with its attributes; quoted values may hold '>' so the match is quote-aware.
_START_TAG = re.compile(rb"<([^\s/>!?]+)((?:\s+[^\s=/>]+\s*=\s*(?:\"[^\"]*\"|'[^']*'))*)\s*/?>")
_ATTRIBUTE = re.compile(rb"(\s+)([^\s=/>]+)(\s*=\s*)(\"[^\"]*\"|'[^']*')")


def _start_tags(data: bytes) -> list[re.Match[bytes]]:
    """Every element start tag in document order, skipping comments, CDATA, PIs and end tags."""
    tags: list[re.Match[bytes]] = []
    i = 0
    while (j := data.find(b"<", i)) >= 0:
        if data.startswith(b"<!--", j):
            end = data.find(b"-->", j + 4) + 3
        elif data.startswith(b"<![CDATA[", j):
            end = data.find(b"]]>", j + 9) + 3
        elif data.startswith(b"<?", j):
            end = data.find(b"?>", j + 2) + 2
        elif data.startswith(b"</", j) or data.startswith(b"<!", j):
            end = data.find(b">", j + 2) + 1
        else:
            match = _START_TAG.match(data, j)
            if match is None:
                raise RepairError(f"cannot read the start tag at byte {j}")
            tags.append(match)
            end = match.end()
        if end <= j:
            raise RepairError(f"unterminated markup at byte {j}")
        i = end
    return tags


def _elements(root: etree._Element) -> list[etree._Element]:
    return [el for el in root.iter() if isinstance(el.tag, str)]


def _qname(element: etree._Element) -> str:
    local = etree.QName(element).localname
    return f"{element.prefix}:{local}" if element.prefix else local


def _encoding(root: etree._Element) -> str:
    return root.getroottree().docinfo.encoding or "UTF-8"


def remove_handle_xsi_type(bib_xml: bytes, prefix: str, mms_id: str = "", *, with_diff: bool = True) -> Repair | None:
    """Cut ``xsi:type`` out of the handle ``dc:identifier`` start tag(s); every other byte stays.

    Returns None when no handle ``dc:identifier`` carries ``xsi:type``; ``with_diff=False`` skips the diff.
    :raises RepairError: the bytes cannot be edited safely or the result differs in anything else.
    :raises UnsafeXmlError: the document cannot be parsed safely.
    """
    if bib_xml[:2] in (b"\xff\xfe", b"\xfe\xff") or b"\x00" in bib_xml[:512]:
        raise RepairError(f"bib {mms_id}: only ASCII-compatible encodings (UTF-8) can be repaired in place")
    root = parse_xml(bib_xml, f"bib {mms_id}")
    encoding = _encoding(root)
    elements = _elements(root)
    targets = [
        index
        for index, element in enumerate(elements)
        if element.tag == DC_IDENTIFIER
        and element.get(XSI_TYPE) is not None
        and looks_like_handle(element.text or "", prefix)
        and parse_handle(element.text or "", prefix).handle is not None
    ]
    if not targets:
        return None
    tags = _start_tags(bib_xml)
    if len(tags) != len(elements):
        raise RepairError(f"bib {mms_id}: found {len(tags)} start tags for {len(elements)} elements")

    cuts: list[tuple[int, int]] = []
    removed: list[str] = []
    for index in targets:
        element, tag = elements[index], tags[index]
        name = tag.group(1).decode(encoding)
        if name != _qname(element):
            raise RepairError(f"bib {mms_id}: start tag {name} does not match element {_qname(element)}")
        xsi_names = {f"{p}:type".encode(encoding) for p, ns in element.nsmap.items() if p and ns == XSI_NS}
        hits = [a for a in _ATTRIBUTE.finditer(tag.group(2)) if a.group(2) in xsi_names]
        if len(hits) != 1:
            raise RepairError(f"bib {mms_id}: cannot find the xsi:type attribute in {tag.group(0)!r}")
        offset = tag.start(2)
        cuts.append((offset + hits[0].start(1), offset + hits[0].end(4)))
        removed.append(hits[0].group(0).strip().decode(encoding))

    pieces, last = [], 0
    for start, end in cuts:
        pieces.append(bib_xml[last:start])
        last = end
    pieces.append(bib_xml[last:])
    repaired = b"".join(pieces)
    _check_repair(root, repaired, set(targets), mms_id)
    return Repair(
        mms_id=mms_id,
        original=bib_xml,
        repaired=repaired,
        diff=_diff(bib_xml, repaired, encoding, mms_id) if with_diff else "",
        removed=tuple(removed),
        identifiers=tuple((elements[i].text or "").strip() for i in targets),
    )


def _check_repair(before_root: etree._Element, repaired: bytes, targets: set[int], mms_id: str) -> None:
    """Re-parse and prove that only ``xsi:type`` on the target elements went away."""
    after_root = parse_xml(repaired, f"repaired bib {mms_id}")
    before, after = _elements(before_root), _elements(after_root)
    if len(before) != len(after):
        raise RepairError(f"bib {mms_id}: the repair changed the number of elements")
    for index, (old, new) in enumerate(zip(before, after, strict=True)):
        expected = [(k, v) for k, v in old.attrib.items() if not (index in targets and k == XSI_TYPE)]
        same = (
            old.tag == new.tag
            and old.text == new.text
            and old.tail == new.tail
            and old.prefix == new.prefix
            and dict(old.nsmap) == dict(new.nsmap)
            and list(new.attrib.items()) == expected
        )
        if not same:
            raise RepairError(f"bib {mms_id}: the repair changed element {index} ({_qname(old)}) beyond xsi:type")
    info_before, info_after = before_root.getroottree().docinfo, after_root.getroottree().docinfo
    if (info_before.encoding, info_before.xml_version, info_before.standalone) != (
        info_after.encoding,
        info_after.xml_version,
        info_after.standalone,
    ):
        raise RepairError(f"bib {mms_id}: the repair changed the XML declaration")


def _diff(original: bytes, repaired: bytes, encoding: str, mms_id: str) -> str:
    a = original.decode(encoding, errors="replace").splitlines(keepends=True)
    b = repaired.decode(encoding, errors="replace").splitlines(keepends=True)
    name = mms_id or "bib"
    lines = difflib.unified_diff(a, b, fromfile=f"{name} (Alma)", tofile=f"{name} (repaired)", n=2)
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)


# --------------------------------------------------------------------------------------------
# Comparison


def _canonical_record(data: bytes, what: str) -> bytes:
    root = parse_xml(data, what)
    found = _find_record(root)
    record = deepcopy(found if found is not None else root)
    # Whitespace between elements (indentation) is not content; leaf text is kept exactly.
    for element in record.iter():
        if len(element) and element.text is not None and not element.text.strip():
            element.text = None
        if element is not record and element.tail is not None and not element.tail.strip():
            element.tail = None
    record.tail = None
    return etree.tostring(record, method="c14n", with_comments=False)


def same_record(a: bytes, b: bytes) -> bool:
    """True when two ``<bib>`` documents hold the same ``<record>`` (C14N, indentation ignored).

    :raises UnsafeXmlError: either document cannot be parsed safely.
    """
    return _canonical_record(a, "first bib") == _canonical_record(b, "second bib")
