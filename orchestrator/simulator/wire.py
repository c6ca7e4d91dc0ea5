"""Alma wire formats: one neutral object description rendered as Alma-style XML or JSON, error bodies,
content negotiation, body parsing and time formats.

An object is a ``Node`` (ordered fields, optional ``link``); a leaf with attributes is a ``Coded``
(``<type desc="Manual">MANUAL</type>`` / ``{"value":"MANUAL","desc":"Manual"}``); a repeated child is
``Items`` (the XML wrapper disappears in JSON, an empty list disappears). That is the JAXB-to-JSON
mapping Alma uses, applied in one place.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from typing import Any

import httpx
from lxml import etree

from ..errors import UnsafeXmlError
from ..xmlsafe import parse_xml

ERROR_NS = "http://com/exlibris/urm/general/xmlbeans"
JSON_TYPE = "application/json;charset=UTF-8"
XML_TYPE = "application/xml;charset=UTF-8"
PROLOG = b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
GENERAL_ERROR = ("401652", "General Error - An error has occurred while processing the request.")


@dataclass
class Coded:
    """A text value carrying attributes: ``desc`` and/or ``link``."""

    value: str | int | float | None
    desc: str | None = None
    link: str | None = None


@dataclass
class Node:
    """An object: ordered (name, value) fields; ``attrs`` are XML attributes that become JSON keys."""

    fields: list[tuple[str, Any]]
    link: str | None = None
    attrs: dict[str, str | int] = field(default_factory=dict)


@dataclass
class Items:
    """A repeated child: ``<wrapper><item/>…</wrapper>`` in XML; ``"item": […]`` in JSON."""

    wrapper: str | None
    item: str
    values: Sequence[Any]


class AlmaFault(Exception):
    """An Alma error reply: raised inside a handler, rendered by the dispatcher."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code} {message}")
        self.status, self.code, self.message = status, code, message


def wants_json(request: httpx.Request) -> bool:
    """Content negotiation: ``format=`` wins, then ``Accept``; XML by default."""
    fmt = str(request.url.params.get("format", "")).lower()
    if fmt in ("json", "xml"):
        return fmt == "json"
    return "application/json" in str(request.headers.get("accept", "")).lower()


def utc_ms(moment: datetime) -> str:
    """``2025-10-05T09:11:32.592Z``."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def alma_date(moment: datetime) -> str:
    """``2025-10-05Z``."""
    return moment.strftime("%Y-%m-%dZ")


def local_stamp(moment: datetime, zone: tzinfo) -> str:
    """Instance-name timestamp in the institution's time: ``2025-10-05 4:11 AM``."""
    local = moment.astimezone(zone)
    hour = local.hour % 12 or 12
    return f"{local:%Y-%m-%d} {hour}:{local:%M} {'AM' if local.hour < 12 else 'PM'}"


def ui_stamp(moment: datetime, zone: tzinfo) -> str:
    """The time stamp Alma's UI puts in a run's name, in the institution's time: ``09/30/2025 11:35:15 CDT``."""
    return moment.astimezone(zone).strftime("%m/%d/%Y %H:%M:%S %Z")


# --- XML ---------------------------------------------------------------------------------------


def _xml_value(parent: etree._Element, name: str, value: Any) -> None:
    if value is None:
        return
    if isinstance(value, Items):
        if not value.values and value.wrapper is not None:
            return
        holder = parent if value.wrapper is None else etree.SubElement(parent, value.wrapper)
        for item in value.values:
            _xml_value(holder, value.item, item)
        return
    child = etree.SubElement(parent, name)
    if isinstance(value, Node):
        _fill_xml(child, value)
    elif isinstance(value, Coded):
        if value.link is not None:
            child.set("link", value.link)
        if value.desc is not None:
            child.set("desc", value.desc)
        if value.value is not None:
            child.text = _text(value.value)
    else:
        child.text = _text(value)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _fill_xml(element: etree._Element, node: Node) -> None:
    if node.link is not None:
        element.set("link", node.link)
    for key, attr in node.attrs.items():
        element.set(key, str(attr))
    for name, value in node.fields:
        _xml_value(element, name, value)


def to_xml(root: str, node: Node) -> bytes:
    """Serialize ``node`` as the document element ``root``, with Alma's prolog."""
    element = etree.Element(root)
    _fill_xml(element, node)
    return PROLOG + etree.tostring(element, encoding="unicode").encode("utf-8")


# --- JSON --------------------------------------------------------------------------------------


def _json_list(values: list[Any], single_object: bool) -> Any:
    return values[0] if single_object and len(values) == 1 else values


def _json_value(value: Any, single: bool) -> Any:
    if isinstance(value, Node):
        return to_json_obj(value, single)
    if isinstance(value, Coded):
        out: dict[str, Any] = {"value": value.value}
        if value.desc is not None:
            out["desc"] = value.desc
        if value.link is not None:
            out["link"] = value.link
        return out
    return value


def to_json_obj(node: Node, single: bool = False) -> dict[str, Any]:
    """The JSON object of ``node``; ``single`` renders one-element lists as a bare object."""
    out: dict[str, Any] = {}
    for name, value in node.fields:
        if value is None:
            continue
        if isinstance(value, Items):
            items = [_json_value(v, single) for v in value.values]
            if items:
                out[value.item] = _json_list(items, single)
        else:
            out[name] = _json_value(value, single)
    for key, attr in node.attrs.items():
        out[key] = attr
    if node.link is not None:
        out["link"] = node.link
    return out


def dump_json(data: Any) -> bytes:
    """Compact UTF-8 JSON."""
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


# --- errors and responses ----------------------------------------------------------------------


def error_body(code: str, message: str, tracking_id: str, as_json: bool, single: bool = False) -> bytes:
    """A ``web_service_result`` (XML) or ``errorsExist`` (JSON) body with one error."""
    if as_json:
        error = {"errorCode": code, "errorMessage": message, "trackingId": tracking_id}
        errors: Any = error if single else [error]
        return dump_json({"errorsExist": True, "errorList": {"error": errors}, "result": None})
    root = etree.Element(f"{{{ERROR_NS}}}web_service_result", nsmap={None: ERROR_NS})
    etree.SubElement(root, f"{{{ERROR_NS}}}errorsExist").text = "true"
    error_el = etree.SubElement(etree.SubElement(root, f"{{{ERROR_NS}}}errorList"), f"{{{ERROR_NS}}}error")
    etree.SubElement(error_el, f"{{{ERROR_NS}}}errorCode").text = code
    etree.SubElement(error_el, f"{{{ERROR_NS}}}errorMessage").text = message
    etree.SubElement(error_el, f"{{{ERROR_NS}}}trackingId").text = tracking_id
    return PROLOG + etree.tostring(root, encoding="unicode").encode("utf-8")


def response(status: int, body: bytes, as_json: bool, headers: Mapping[str, str] | None = None) -> httpx.Response:
    """An Alma response with the right content type."""
    all_headers = {"Content-Type": JSON_TYPE if as_json else XML_TYPE, "Server": "Layer7-API-Gateway"}
    all_headers.update(headers or {})
    return httpx.Response(status, content=body, headers=all_headers)


# --- request bodies ----------------------------------------------------------------------------


def body_is_json(request: httpx.Request) -> bool:
    """Does the request body claim (or look like) JSON?"""
    ctype = request.headers.get("content-type", "").lower()
    if "json" in ctype:
        return True
    if "xml" in ctype:
        return False
    return request.content.lstrip()[:1] in (b"{", b"[")


def parse_json_body(request: httpx.Request) -> Any:
    """The JSON body. :raises AlmaFault: 400 when it is not JSON."""
    try:
        return json.loads(request.content.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise AlmaFault(400, GENERAL_ERROR[0], "Malformed JSON in the request body.") from None


def parse_xml_body(request: httpx.Request, what: str = "request body") -> etree._Element:
    """The XML body, parsed safely. :raises AlmaFault: 400 when empty, unsafe or malformed."""
    if not request.content.strip():
        raise AlmaFault(400, GENERAL_ERROR[0], f"Empty {what}.")
    try:
        return parse_xml(request.content, what)
    except UnsafeXmlError as exc:
        raise AlmaFault(400, GENERAL_ERROR[0], f"{GENERAL_ERROR[1]} {exc}") from None


def json_scalar(value: Any) -> str | None:
    """A JSON field that may be a string or Alma's ``{"value": ...}`` object."""
    if isinstance(value, dict):
        value = value.get("value")
    if value is None:
        return None
    return str(value)


def json_list(value: Any) -> list[Any]:
    """A JSON list that may come as a bare object (Alma's one-element quirk)."""
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def child_text(element: etree._Element, name: str) -> str | None:
    """Text of the first child called ``name`` (any namespace), or None."""
    for child in element:
        if isinstance(child.tag, str) and etree.QName(child).localname == name:
            return (child.text or "").strip()
    return None
