"""The one XML parser configuration hwf uses: no entities, no DTDs, no network, bounded size.

Every XML document hwf reads (Alma replies, bib records) goes through ``parse_xml``. A document is
refused as *unsafe* (``UnsafeXmlError``) when it is too large, declares a DOCTYPE or entities (in any
encoding), or trips libxml2's depth/size limits; it is refused as *broken* (``MalformedXmlError``, a
subclass) when it is simply not well-formed. Entities are never expanded and nothing is fetched.
"""

from __future__ import annotations

import re

from lxml import etree

from orchestrator.errors import UnsafeXmlError

MAX_XML_BYTES = 20 * 1024 * 1024
_DOCTYPE = re.compile(rb"<!DOCTYPE|<!ENTITY", re.IGNORECASE)
# libxml2's own safety limits (huge_tree off) surface as syntax errors with these words.
_LIMIT_WORDS = ("huge", "excessive depth", "amplification", "entity loop", "maximum entity")


class MalformedXmlError(UnsafeXmlError):
    """The document is empty or not well-formed XML: broken, not dangerous."""


def _parser() -> etree.XMLParser:
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_blank_text=False,
    )


def looks_unsafe(data: bytes) -> bool:
    """True when ``data`` would be refused for safety before parsing (size, DOCTYPE or entity markup)."""
    return len(data) > MAX_XML_BYTES or _DOCTYPE.search(data) is not None


def parse_xml(data: bytes, what: str = "XML document") -> etree._Element:
    """Parse ``data`` safely and return the root element.

    :raises UnsafeXmlError: the document is too large, carries a DOCTYPE or entity declaration, or hits
        the parser's depth/size limits.
    :raises MalformedXmlError: the document is empty or not well-formed XML.
    """
    if len(data) > MAX_XML_BYTES:
        raise UnsafeXmlError(f"{what} is {len(data):,} bytes, over the {MAX_XML_BYTES:,}-byte limit; not parsed")
    if _DOCTYPE.search(data):
        raise UnsafeXmlError(f"{what} has a DOCTYPE or entity declaration; refused (entities are never expanded)")
    try:
        root = etree.fromstring(data, parser=_parser())
    except etree.XMLSyntaxError as exc:
        text = str(exc)
        if any(word in text.lower() for word in _LIMIT_WORDS):
            raise UnsafeXmlError(f"{what} exceeds the XML parser's safety limits: {text}") from None
        raise MalformedXmlError(f"{what} is not well-formed XML: {text}") from None
    if root is None:
        raise MalformedXmlError(f"{what} is empty")
    # A DOCTYPE in UTF-16 or UTF-32 slips past the byte search above; it was parsed but never expanded.
    info = root.getroottree().docinfo
    if info.doctype or info.internalDTD is not None or info.externalDTD is not None:
        raise UnsafeXmlError(f"{what} has a DOCTYPE or entity declaration; refused (entities are never expanded)")
    return root
