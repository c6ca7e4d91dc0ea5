"""The one XML parser configuration hwf uses: no entities, no DTDs, no network, bounded size.

Every XML document hwf reads (Alma replies, bib records) goes through ``parse_xml``.
"""

from __future__ import annotations

import re

from lxml import etree

from .errors import UnsafeXmlError

MAX_XML_BYTES = 20 * 1024 * 1024
_DOCTYPE = re.compile(rb"<!DOCTYPE|<!ENTITY", re.IGNORECASE)


def _parser() -> etree.XMLParser:
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_blank_text=False,
    )


def parse_xml(data: bytes, what: str = "XML document") -> etree._Element:
    """Parse ``data`` safely and return the root element.

    :raises UnsafeXmlError: the document is too large, carries a DOCTYPE or entity declaration,
        or is not well-formed.
    """
    if len(data) > MAX_XML_BYTES:
        raise UnsafeXmlError(f"{what} is {len(data):,} bytes, over the {MAX_XML_BYTES:,}-byte limit; not parsed")
    if _DOCTYPE.search(data[:65536]) or _DOCTYPE.search(data):
        raise UnsafeXmlError(f"{what} has a DOCTYPE or entity declaration; refused (entities are never expanded)")
    try:
        root = etree.fromstring(data, parser=_parser())
    except etree.XMLSyntaxError as exc:
        raise UnsafeXmlError(f"{what} is not well-formed XML: {exc}") from None
    if root is None:
        raise UnsafeXmlError(f"{what} is empty")
    return root
