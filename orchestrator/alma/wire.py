"""Alma wire formats: turning reply bodies (XML or JSON) into one plain tree, reading that tree
tolerantly, parsing Alma error bodies, and building the request bodies hwf sends.

Alma's JSON is a mechanical rendering of its XML: ``<status desc="Active">ACTIVE</status>``
becomes ``{"value": "ACTIVE", "desc": "Active"}`` and repeated children become lists. ``xml_to_tree`` renders
XML the same way, so the parsers in ``alma_xml.py`` read one shape whatever Alma sent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from lxml import etree

from orchestrator.bounded import JsonTooDeep, load_json
from orchestrator.errors import AlmaBadReplyError, UnsafeXmlError
from orchestrator.xmlsafe import MalformedXmlError, looks_unsafe, parse_xml

Tree = dict[str, Any]

_DATE_ONLY = re.compile(r"^(\d{4})-(\d{2})-(\d{2})(?:Z|[+-]\d{2}:?\d{2})?$")
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True)
class Origin:
    """Where a reply came from, so that every complaint about it names the request (never the query)."""

    method: str = ""
    path: str = ""
    status: int | None = None

    def bad(self, problem: str) -> AlmaBadReplyError:
        """An AlmaBadReplyError saying, in one line, what was wrong with this reply."""
        where = f"Alma {self.method} {self.path}: bad reply" if self.path else "bad Alma reply"
        return AlmaBadReplyError(
            one_line(f"{where}: {problem}"),
            status=self.status,
            method=self.method or None,
            path=self.path or None,
        )


@dataclass(frozen=True)
class Reply:
    """A decoded reply body: ``root`` is the XML root's local name (None for JSON)."""

    root: str | None
    tree: Tree
    xml: etree._Element | None = None


def one_line(text: str, limit: int = 600) -> str:
    """Collapse whitespace so a message fits on one line; cut very long texts."""
    text = _SPACES.sub(" ", text).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def short_repr(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def sniff(body: bytes) -> str | None:
    """'json', 'xml' or None, from the body's first significant character (Content-Type can lie)."""
    head = body[:64].lstrip(b"\xef\xbb\xbf \t\r\n")
    if head[:1] in (b"{", b"["):
        return "json"
    if head[:1] == b"<":
        return "xml"
    return None


def is_unsafe_xml(body: bytes) -> bool:
    """True when xmlsafe would refuse ``body`` for safety (size, DOCTYPE, entities) before parsing it."""
    return looks_unsafe(body)


def parse_xml_reply(body: bytes, origin: Origin, what: str = "the body") -> etree._Element:
    """Parse XML through xmlsafe; unsafe documents raise UnsafeXmlError, broken ones AlmaBadReplyError."""
    try:
        return parse_xml(body, what=what)
    except MalformedXmlError as exc:
        raise origin.bad(str(exc)) from None


def decode(body: bytes, origin: Origin) -> Reply:
    """Decode an Alma reply body, XML or JSON whatever was asked for, into a Reply.

    :raises UnsafeXmlError: XML with a DOCTYPE or entities (never parsed).
    :raises AlmaBadReplyError: empty, not XML or JSON, or malformed.
    """
    kind = sniff(body)
    if kind == "json":
        try:
            data = load_json(body)
        except JsonTooDeep as exc:
            raise origin.bad(str(exc)) from None
        except (UnicodeDecodeError, ValueError) as exc:
            raise origin.bad(f"JSON is malformed ({exc})") from None
        if not isinstance(data, dict):
            raise origin.bad(f"JSON is a {type(data).__name__}, not an object")
        return Reply(None, data)
    if kind == "xml":
        root = parse_xml_reply(body, origin)
        return Reply(local_name(root), element_to_tree(root, is_root=True), root)
    if not body.strip():
        raise origin.bad("the body is empty")
    raise origin.bad("the body is neither XML nor JSON")


def local_name(element: etree._Element) -> str:
    return etree.QName(element).localname


def element_to_tree(element: etree._Element, *, is_root: bool = False) -> Any:
    """Render an XML element the way Alma renders it in JSON.

    A leaf without attributes becomes its text; a leaf with attributes becomes ``{"value": text, attr: ...}``;
    an element with children becomes a dict of its attributes and children (repeated children → list).
    """
    children = [child for child in element if isinstance(child.tag, str)]
    attrs: Tree = {etree.QName(name).localname: value for name, value in element.attrib.items()}
    text = element.text or ""
    if not children and not is_root:
        if not attrs:
            return text
        return {**attrs, "value": text}
    tree: Tree = dict(attrs)
    if text.strip():
        tree["value"] = text
    for child in children:
        name = local_name(child)
        value = element_to_tree(child)
        if name in tree and name not in attrs:
            existing = tree[name]
            if isinstance(existing, list):
                existing.append(value)
            else:
                tree[name] = [existing, value]
        else:
            tree[name] = value
    return tree


# Tolerant accessors: each accepts the shapes Alma has been seen to send for one field.


def text_of(value: Any) -> str | None:
    """A field's text: plain strings, numbers, booleans, ``{"value": ...}`` objects, one-element lists."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else str(value)
    if isinstance(value, dict):
        return text_of(value.get("value"))
    if isinstance(value, list) and len(value) == 1:
        return text_of(value[0])
    return None


def desc_of(value: Any) -> str | None:
    """The ``desc`` attribute of a code-table field, if any."""
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if isinstance(value, dict):
        desc = value.get("desc")
        return desc if isinstance(desc, str) else text_of(desc)
    return None


def link_of(value: Any) -> str | None:
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if isinstance(value, dict):
        return text_of(value.get("link"))
    return None


def as_list(value: Any) -> list[Any]:
    """A list field that may arrive as a list, a single object (one-element lists), or nothing."""
    if value is None or value == "":
        return []
    if isinstance(value, list):
        return value
    return [value]


def items(tree: Tree, plural: str, singular: str) -> list[Any]:
    """Items of a list that Alma sends as ``singular: [...]`` or ``plural: {singular: [...]}``."""
    if tree.get(singular) is not None:
        return as_list(tree.get(singular))
    wrapper = tree.get(plural)
    if isinstance(wrapper, dict):
        return as_list(wrapper.get(singular))
    return []


def to_int(value: Any) -> int | None:
    """An integer sent as a number, a string or ``{"value": n}``; None when absent or empty.

    :raises ValueError: the value is present but not a whole number.
    """
    if isinstance(value, dict):
        value = value.get("value")
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        raise ValueError(f"not a number: {value!r}")
    if isinstance(value, int):
        return value
    number = float(value) if isinstance(value, float) else float(str(value).strip())
    if not number.is_integer():
        raise ValueError(f"not a whole number: {value!r}")
    return int(number)


def to_float(value: Any) -> float | None:
    """A decimal sent as a number or a string; None when absent or empty. :raises ValueError:"""
    if isinstance(value, dict):
        value = value.get("value")
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        raise ValueError(f"not a number: {value!r}")
    return float(value) if isinstance(value, int | float) else float(str(value).strip())


def to_datetime(value: Any) -> datetime | None:
    """An aware UTC datetime from Alma's ISO-8601 (``2025-10-05T09:11:32.592Z``, ``2025-10-05Z``).

    :raises ValueError: the value is present but not a date.
    """
    text = text_of(value)
    if text is None or not text.strip():
        return None
    text = text.strip()
    date_only = _DATE_ONLY.match(text)
    if date_only:
        year, month, day = (int(part) for part in date_only.groups())
        return datetime(year, month, day, tzinfo=UTC)
    if text[-1] in "zZ":
        text = text[:-1] + "+00:00"
    parsed = datetime.fromisoformat(text)
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


# Error bodies: XML <web_service_result> (namespaced) or JSON {"errorsExist", "errorList": {"error": ...}}.


@dataclass(frozen=True)
class ErrorDetail:
    code: str | None
    message: str | None
    tracking_id: str | None


def parse_error_body(body: bytes, content_type: str = "") -> list[ErrorDetail]:
    """Alma's errors from a ``web_service_result`` body (XML with or without namespace, or JSON).

    Never raises: HTML pages, plain text, unsafe or broken bodies give an empty list.
    """
    kind = sniff(body)
    if kind is None or "html" in content_type.lower() or body.lstrip()[:14].lower().startswith(b"<!doctype html"):
        return []
    try:
        if kind == "xml":
            tree = element_to_tree(parse_xml(body, "Alma error body"), is_root=True)
        else:
            tree = load_json(body)
    except (UnsafeXmlError, UnicodeDecodeError, ValueError):
        return []
    return errors_in(tree)


def errors_in(tree: Any) -> list[ErrorDetail]:
    """The ``errorList`` entries of a decoded ``web_service_result`` (empty if it is not one)."""
    if not isinstance(tree, dict):
        return []
    if isinstance(tree.get("web_service_result"), dict):
        tree = tree["web_service_result"]
    error_list = tree.get("errorList")
    entries = as_list(error_list.get("error")) if isinstance(error_list, dict) else as_list(error_list)
    details = []
    for entry in entries:
        if isinstance(entry, dict):
            details.append(
                ErrorDetail(
                    code=_clean(text_of(entry.get("errorCode"))),
                    message=_clean(text_of(entry.get("errorMessage"))),
                    tracking_id=_clean(text_of(entry.get("trackingId"))),
                )
            )
    return details


def errors_exist(tree: Tree) -> bool:
    """True when a (2xx) body is really a ``web_service_result`` with ``errorsExist`` true."""
    if isinstance(tree.get("web_service_result"), dict):
        tree = tree["web_service_result"]
    return (text_of(tree.get("errorsExist")) or "").strip().lower() == "true"


def _clean(text: str | None) -> str | None:
    if text is None:
        return None
    text = one_line(text)
    return text or None


def instance_id_from_link(link: str) -> str:
    """The instance id from ``…/conf/jobs/{job}/instances/{instance_id}`` (its last path segment).

    :raises ValueError: the link does not point at a job instance.
    """
    path = link.strip().split("?", 1)[0].split("#", 1)[0].rstrip("/")
    segments = path.split("/")
    if len(segments) < 2 or segments[-2] != "instances" or not segments[-1].strip():
        raise ValueError(f"not a job-instance link: {short_repr(link, 120)}")
    return segments[-1].strip()


def header_int(value: str | None) -> int | None:
    """A header's whole number (``X-Exl-Api-Remaining``), or None when it is absent or not a number."""
    try:
        return int(value.strip()) if value is not None else None
    except ValueError:
        return None
