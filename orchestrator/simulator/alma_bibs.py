"""Simulated Bibs API: GET one, GET many (``mms_id=a,b``, at most 100), PUT (XML only, full replacement).

The ``<record>`` bytes are embedded verbatim, so a record's prefixes and namespaces survive a GET/PUT
round trip byte for byte, and an injected broken record breaks the reply the way it would break a parser.
"""

from __future__ import annotations

import json
import re
from xml.sax.saxutils import escape, quoteattr

import httpx
from lxml import etree

from .alma_common import Ctx
from .records import SimRecord, alma_dc_namespace, corrupt_xml
from .wire import (
    GENERAL_ERROR,
    PROLOG,
    AlmaFault,
    alma_date,
    body_is_json,
    child_text,
    parse_xml_body,
    response,
)

MAX_BATCH = 100
_DECLARATION = re.compile(rb"^\s*<\?xml[^>]*\?>\s*")
_DC_IDENTIFIER = re.compile(rb"<dc:identifier[^>]*>([^<]*)</dc:identifier>")
_NS_PREFIX = re.compile(r"^ns\d+$")


def _record_bytes(ctx: Ctx, record: SimRecord) -> bytes:
    xml = _DECLARATION.sub(b"", record.xml)
    kind = ctx.state.faults.bad_xml_records.get(record.mms_id)
    return corrupt_xml(xml, kind) if kind else xml


def _network_numbers(xml: bytes) -> list[str]:
    found = []
    for match in _DC_IDENTIFIER.finditer(xml):
        value = match.group(1).decode("utf-8", "replace").strip()
        if value and not value.startswith("alma:"):
            found.append(value)
    return found


def _scalars(ctx: Ctx, record: SimRecord) -> list[tuple[str, str]]:
    return [
        ("created_by", "import"),
        ("created_date", record.created_date),
        ("last_modified_by", record.last_modified_by),
        ("last_modified_date", record.last_modified_date),
        ("suppress_from_publishing", "false"),
        ("suppress_from_external_search", "false"),
        ("suppress_from_metadoor", "false"),
        ("sync_with_oclc", "NONE"),
        ("sync_with_libraries_australia", "NONE"),
        ("originating_system_id", record.local_id or record.mms_id),
    ]


def bib_xml(ctx: Ctx, record: SimRecord) -> bytes:
    """One ``<bib>`` element (no prolog) with the record embedded verbatim."""
    xml = _record_bytes(ctx, record)
    numbers = "".join(f"<network_number>{escape(n)}</network_number>" for n in _network_numbers(xml))
    head = [
        f"<bib><mms_id>{record.mms_id}</mms_id><record_format>{record.record_format}</record_format>",
        f"<linked_record_id/><title>{escape(record.title)}</title>",
        f"<network_numbers>{numbers}</network_numbers>" if numbers else "<network_numbers/>",
        f"<holdings link={quoteattr(ctx.link('bibs', record.mms_id, 'holdings'))}/>",
    ]
    head += [f"<{k}>{escape(v)}</{k}>" for k, v in _scalars(ctx, record)]
    head.append('<cataloging_level desc="Default Level">00</cataloging_level>')
    return "".join(head).encode("utf-8") + xml + b"</bib>"


def bib_json(ctx: Ctx, record: SimRecord) -> dict[str, object]:
    """One bib as JSON: the record is an XML string in ``anies``."""
    xml = _record_bytes(ctx, record)
    out: dict[str, object] = {
        "mms_id": record.mms_id,
        "record_format": record.record_format,
        "linked_record_id": "",
        "title": record.title,
        "network_number": _network_numbers(xml),
        "holdings": {"value": "", "link": ctx.link("bibs", record.mms_id, "holdings")},
    }
    out.update(_scalars(ctx, record))
    out["cataloging_level"] = {"value": "00", "desc": "Default Level"}
    out["anies"] = [xml.decode("utf-8", "replace")]
    return out


def _dumps(data: object) -> bytes:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _render_one(ctx: Ctx, record: SimRecord) -> httpx.Response:
    if ctx.as_json:
        return response(200, _dumps(bib_json(ctx, record)), True)
    return response(200, PROLOG + bib_xml(ctx, record), False)


def _check_mms(mms_id: str) -> None:
    if not mms_id.isdigit():
        raise AlmaFault(400, "402204", f"Input parameters mmsId {mms_id} is not numeric.")


def find_record(ctx: Ctx, mms_id: str) -> SimRecord:
    """:raises AlmaFault: 402204 non-numeric, 402203 unknown."""
    _check_mms(mms_id)
    record = ctx.state.records.get(mms_id)
    if record is None:
        raise AlmaFault(400, "402203", f"Input parameters mmsId {mms_id} is not valid.")
    return record


def get_bib(ctx: Ctx, mms_id: str) -> httpx.Response:
    """``GET /bibs/{mms_id}``."""
    return _render_one(ctx, find_record(ctx, mms_id))


def get_bibs(ctx: Ctx) -> httpx.Response:
    """``GET /bibs?mms_id=a,b``: unknown ids are left out silently; all unknown is an empty 200."""
    raw = ctx.params.get("mms_id")
    if raw is None or not raw.strip():
        raise AlmaFault(400, GENERAL_ERROR[0], "One of the parameters mms_id, ie_id, holdings_id, ... is required.")
    ids = list(dict.fromkeys(i.strip() for i in raw.split(",") if i.strip()))
    if len(ids) > MAX_BATCH:
        raise AlmaFault(400, "40166411", f"Parameter mms_id: at most {MAX_BATCH} values are allowed, got {len(ids)}.")
    for mms in ids:
        _check_mms(mms)
    found = [ctx.state.records[m] for m in ids if m in ctx.state.records]
    if ctx.as_json:
        data: dict[str, object] = {}
        if found:
            bibs = [bib_json(ctx, r) for r in found]
            data["bib"] = bibs[0] if ctx.single and len(bibs) == 1 else bibs
        data["total_record_count"] = len(found)
        return response(200, _dumps(data), True)
    if not found:
        return response(200, PROLOG + b'<bibs total_record_count="0"/>', False)
    body = b"".join(bib_xml(ctx, r) for r in found)
    return response(200, PROLOG + f'<bibs total_record_count="{len(found)}">'.encode() + body + b"</bibs>", False)


def _reject(detail: str) -> AlmaFault:
    return AlmaFault(400, GENERAL_ERROR[0], f"{GENERAL_ERROR[1]} {detail}")


def put_bib(ctx: Ctx, mms_id: str) -> httpx.Response:
    """``PUT /bibs/{id}``: XML only (60105), the body's ``<record>`` replaces the stored one entirely."""
    record = find_record(ctx, mms_id)
    if body_is_json(ctx.request):
        raise AlmaFault(400, "60105", "JSON is not supported for this API.")
    root = parse_xml_body(ctx.request, "bib")
    qname = etree.QName(root)
    if qname.localname != "bib":
        raise _reject(f"The root element must be <bib>, not <{qname.localname}>.")
    if qname.namespace is not None:
        raise _reject(f'The <bib> element must not be in a namespace (found xmlns="{qname.namespace}").')
    for element in root.iter():
        if isinstance(element.tag, str) and element.prefix and _NS_PREFIX.match(element.prefix):
            where = etree.QName(element).localname
            raise _reject(f"Unexpected generated namespace prefix {element.prefix}: on <{where}>.")
    body_id = child_text(root, "mms_id")
    if body_id and body_id != mms_id:
        raise _reject(f"The mms_id in the body ({body_id}) does not match the URL ({mms_id}).")
    new = next(
        (c for c in root if isinstance(c.tag, str) and etree.QName(c).localname == "record"),
        None,
    )
    if new is None:
        raise _reject("The <bib> has no <record> element.")
    namespace = etree.QName(new).namespace
    dc_ns = alma_dc_namespace(ctx.state.scenario.institution_code)
    if namespace not in (None, dc_ns):
        raise _reject(f"The <record> namespace {namespace} is not {dc_ns}.")
    record.xml = etree.tostring(new, encoding="unicode", with_tail=False).encode("utf-8")
    if namespace is None:
        record.record_format = "marc21"
    elif not record.is_dc:
        record.record_format = "dcap01"
    title = next((t.text for t in new.iter("{http://purl.org/dc/elements/1.1/}title") if t.text), None)
    if title:
        record.title = title.strip()
    record.last_modified_by = "exl_api"
    record.last_modified_date = alma_date(ctx.state.now())
    return _render_one(ctx, record)
