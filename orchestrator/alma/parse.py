"""Parsers from decoded Alma replies (XML or JSON, see ``alma_wire``) to the ``alma_types`` dataclasses.

Every parser accepts both renderings and their known variants (one-element lists sent as objects, numbers
sent as strings, ``parameter`` vs ``parameters.parameter``, unknown extra fields) and raises
AlmaBadReplyError naming the request and the missing or malformed field. Bib parsers keep the bytes Alma
sent: ``Bib.xml`` and ``Bib.record_xml`` are slices of the reply body, not re-serialisations.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable
from typing import Any, TypeVar

from lxml import etree

from orchestrator.alma.types import (
    Alert,
    AlmaSetInfo,
    Bib,
    Counter,
    JobInfo,
    JobInstance,
    JobParameter,
    JobRun,
    SetMember,
)
from orchestrator.alma.wire import (
    Origin,
    Reply,
    Tree,
    as_list,
    desc_of,
    instance_id_from_link,
    items,
    link_of,
    local_name,
    short_repr,
    text_of,
    to_datetime,
    to_int,
)
from orchestrator.errors import AlmaBadReplyError

T = TypeVar("T")
_log = logging.getLogger(__name__)

# A start, end or empty-element tag (attribute values may hold '>' but never '<'), or markup to skip.
_TAG = re.compile(
    rb"<!--.*?-->|<!\[CDATA\[.*?\]\]>|<\?.*?\?>"
    rb"|<(/?)([^\s/>!?]+)((?:\s+[^\s=/>]+\s*=\s*(?:\"[^\"]*\"|'[^']*'))*)\s*(/?)>",
    re.S,
)
_UTF8 = {"UTF-8", "UTF8", "US-ASCII", "ASCII"}


def _expect_root(reply: Reply, expected: str, origin: Origin) -> Tree:
    if reply.root is not None and reply.root != expected:
        raise origin.bad(f"XML root is <{reply.root}>, expected <{expected}>")
    return reply.tree


def _required(tree: Tree, key: str, where: str, origin: Origin) -> str:
    value = text_of(tree.get(key))
    if value is None or not value.strip():
        raise origin.bad(f"{where}.{key} is missing or empty")
    return value.strip()


def _optional(tree: Tree, key: str) -> str | None:
    value = text_of(tree.get(key))
    return value.strip() if value is not None and value.strip() else None


def _convert(func: Callable[[Any], T], value: Any, where: str, origin: Origin) -> T:
    try:
        return func(value)
    except (TypeError, ValueError):
        raise origin.bad(f"{where} is malformed: {short_repr(value)}") from None


def _objects(values: list[Any], where: str, origin: Origin) -> list[tuple[str, Tree]]:
    """List entries with their path for messages; each must be an object."""
    found = []
    for index, value in enumerate(values):
        path = f"{where}[{index}]"
        if not isinstance(value, dict):
            raise origin.bad(f"{path} is {short_repr(value)}, not an object")
        found.append((path, value))
    return found


def _total(tree: Tree, where: str, origin: Origin) -> int | None:
    return _convert(to_int, tree.get("total_record_count"), f"{where}.total_record_count", origin)


# Sets


def set_from_tree(tree: Tree, where: str, origin: Origin) -> AlmaSetInfo:
    """An AlmaSetInfo from one set object (``number_of_members`` as number, string or ``{"value": n}``)."""
    return AlmaSetInfo(
        id=_required(tree, "id", where, origin),
        name=_required(tree, "name", where, origin),
        type=_optional(tree, "type"),
        content=_optional(tree, "content"),
        member_count=_convert(to_int, tree.get("number_of_members"), f"{where}.number_of_members", origin),
    )


def parse_set(reply: Reply, origin: Origin = Origin()) -> AlmaSetInfo:
    """``GET /conf/sets/{id}``, ``POST /conf/sets`` and manage-members replies."""
    return set_from_tree(_expect_root(reply, "set", origin), "set", origin)


def parse_sets(reply: Reply, origin: Origin = Origin()) -> tuple[list[AlmaSetInfo], int | None]:
    """``GET /conf/sets``: the page of sets and ``total_record_count``."""
    tree = _expect_root(reply, "sets", origin)
    entries = _objects(as_list(tree.get("set")), "sets.set", origin)
    return [set_from_tree(entry, path, origin) for path, entry in entries], _total(tree, "sets", origin)


def parse_members(reply: Reply, origin: Origin = Origin()) -> tuple[list[SetMember], int | None]:
    """``GET /conf/sets/{id}/members``: the page of members and ``total_record_count``."""
    tree = _expect_root(reply, "members", origin)
    members = [
        SetMember(id=_required(entry, "id", path, origin), description=_optional(entry, "description"))
        for path, entry in _objects(as_list(tree.get("member")), "members.member", origin)
    ]
    return members, _total(tree, "members", origin)


# Jobs


def job_from_tree(tree: Tree, where: str, origin: Origin) -> JobInfo:
    """A JobInfo; parameters may be absent, under ``parameter`` or under ``parameters.parameter``."""
    parameters = []
    for path, entry in _objects(items(tree, "parameters", "parameter"), f"{where}.parameter", origin):
        parameters.append(
            JobParameter(
                name=_required(entry, "name", path, origin),
                value=text_of(entry.get("value")),
                description=desc_of(entry.get("name")),
            )
        )
    return JobInfo(
        id=_required(tree, "id", where, origin),
        name=_required(tree, "name", where, origin),
        type=_optional(tree, "type"),
        category=_optional(tree, "category"),
        description=_optional(tree, "description"),
        parameters=tuple(parameters),
    )


def parse_job(reply: Reply, origin: Origin = Origin()) -> JobInfo:
    """``GET /conf/jobs/{id}``."""
    return job_from_tree(_expect_root(reply, "job", origin), "job", origin)


def parse_jobs(reply: Reply, origin: Origin = Origin()) -> tuple[list[JobInfo], int | None]:
    """``GET /conf/jobs``: the page of jobs and ``total_record_count``."""
    tree = _expect_root(reply, "jobs", origin)
    entries = _objects(as_list(tree.get("job")), "jobs.job", origin)
    return [job_from_tree(entry, path, origin) for path, entry in entries], _total(tree, "jobs", origin)


def parse_job_run(reply: Reply, job_id: str, origin: Origin = Origin()) -> JobRun:
    """``POST /conf/jobs/{id}?op=run``: the instance id from ``additional_info@link``, never from its text."""
    tree = _expect_root(reply, "job", origin)
    info = tree.get("additional_info")
    link = link_of(info)
    if not link:
        raise origin.bad("job.additional_info@link is missing, so the new instance id is unknown")
    try:
        instance_id = instance_id_from_link(link)
    except ValueError as exc:
        raise origin.bad(f"job.additional_info@link: {exc}") from None
    return JobRun(job_id=_optional(tree, "id") or job_id, instance_id=instance_id, info=text_of(info))


def instance_from_tree(tree: Tree, job_id: str, where: str, origin: Origin) -> JobInstance:
    """A JobInstance; any status is accepted (unknown ones are simply not terminal)."""
    instance_id = _optional(tree, "id")
    if instance_id is None and text_of(tree.get("link")):
        try:
            instance_id = instance_id_from_link(text_of(tree.get("link")) or "")
        except ValueError:
            instance_id = None
    if instance_id is None:
        raise origin.bad(f"{where}.id is missing or empty")
    job_info = tree.get("job_info")
    counters = tuple(_counters(items(tree, "counters", "counter")))
    alerts = []
    for entry in items(tree, "alerts", "alert"):
        code = text_of(entry)
        if code is not None and code.strip():  # anything else is not an alert hwf can name: ignored
            alerts.append(Alert(code=code.strip(), desc=desc_of(entry) or ""))
    return JobInstance(
        id=instance_id,
        job_id=(_optional(job_info, "id") if isinstance(job_info, dict) else None) or job_id,
        name=_optional(tree, "name"),
        status=_required(tree, "status", where, origin),
        status_desc=desc_of(tree.get("status")),
        progress=progress_of(tree.get("progress")),
        submitted_by=_optional(tree, "submitted_by"),
        submit_time=_convert(to_datetime, tree.get("submit_time"), f"{where}.submit_time", origin),
        start_time=_convert(to_datetime, tree.get("start_time"), f"{where}.start_time", origin),
        end_time=_convert(to_datetime, tree.get("end_time"), f"{where}.end_time", origin),
        counters=counters,
        alerts=tuple(alerts),
    )


def _counters(entries: list[Any]) -> list[Counter]:
    """Counters as sent: a number stays a number, text stays text (Alma puts messages in counters);
    entries that are not objects, or name no type, are ignored."""
    found = []
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        code = _optional(entry, "type") or desc_of(entry.get("type"))
        if code is None:
            continue
        found.append(Counter(code=code, desc=desc_of(entry.get("type")) or "", value=counter_value(entry.get("value"))))
    return found


def counter_value(value: Any) -> int | str:
    """A counter's value: a whole number when it is one (``12``, ``"12"``, ``12.0``), otherwise its text
    (0 when absent or empty: a counter sent without a value counts nothing)."""
    try:
        number = to_int(value)
    except (TypeError, ValueError):
        number = None
    else:
        return number or 0
    text = text_of(value)
    return text.strip() if text is not None and text.strip() else 0


def progress_of(value: Any) -> float | None:
    """Progress as Alma sends it: a number (fractional, or over 100), ``"42"``, ``"42.5%"``; None when absent
    or text that is not a number (progress is informative only: it never decides anything)."""
    text = text_of(value)
    if text is None:
        return None
    try:
        number = float(text.strip().rstrip("%").strip())
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def parse_instance(reply: Reply, job_id: str, origin: Origin = Origin()) -> JobInstance:
    """``GET /conf/jobs/{job}/instances/{id}``."""
    return instance_from_tree(_expect_root(reply, "job_instance", origin), job_id, "job_instance", origin)


def parse_instances(
    reply: Reply, job_id: str, origin: Origin = Origin(), *, wanted: Callable[[str], bool] | None = None
) -> tuple[list[JobInstance], int | None]:
    """``GET /conf/jobs/{job}/instances``: the page of instances and ``total_record_count``.

    The list is Alma's, shared by every set: an entry that cannot be read is skipped (and logged), so one bad
    run never stops the others' work, unless it may be the very instance looked for (``wanted(its name)``),
    which raises AlmaBadReplyError.
    """
    tree = _expect_root(reply, "job_instances", origin)
    instances = []
    for index, entry in enumerate(as_list(tree.get("job_instance"))):
        path = f"job_instances.job_instance[{index}]"
        try:
            if not isinstance(entry, dict):
                raise origin.bad(f"{path} is {short_repr(entry)}, not an object")
            instances.append(instance_from_tree(entry, job_id, path, origin))
        except AlmaBadReplyError as exc:
            name = text_of(entry.get("name")) if isinstance(entry, dict) else None
            if wanted is not None and wanted(name or ""):
                raise
            _log.warning("%s; skipped (an entry of Alma's instance list, not the one looked for)", exc)
    return instances, _total(tree, "job_instances", origin)


# Bibs


def parse_bib_document(body: bytes, reply: Reply, origin: Origin = Origin()) -> Bib:
    """A single ``<bib>`` reply (GET or PUT /bibs/{id}) keeping Alma's exact bytes.

    ``xml`` is the whole body; ``record_xml`` the ``<record>`` element sliced from it. JSON replies are
    accepted too (rebuilt around ``anies``), but callers that will PUT the record must insist on XML.
    """
    if reply.xml is None:
        return bib_from_json(_expect_root(reply, "bib", origin), "bib", origin)
    _expect_root(reply, "bib", origin)
    record = _child(reply.xml, "record")
    record_xml = None
    if record is not None:
        spans = _element_spans(body, max_depth=1)
        found = [s for s in spans or () if s[0] == 1 and s[1] == b"record"]
        record_xml = _slice_or_serialise(body, found[0] if len(found) == 1 else None, record, reply.xml)
    return Bib(
        mms_id=_required(reply.tree, "mms_id", "bib", origin),
        record_format=_optional(reply.tree, "record_format"),
        title=_optional(reply.tree, "title"),
        xml=body,
        record_xml=record_xml,
    )


def parse_bibs(body: bytes, reply: Reply, origin: Origin = Origin()) -> list[Bib]:
    """``GET /bibs?mms_id=…``: XML ``<bibs>`` (each Bib.xml the ``<bib>`` slice) or JSON with ``anies``."""
    tree = _expect_root(reply, "bibs", origin)
    if reply.xml is None:
        return [
            bib_from_json(entry, path, origin) for path, entry in _objects(as_list(tree.get("bib")), "bibs.bib", origin)
        ]
    elements = [child for child in reply.xml if isinstance(child.tag, str) and local_name(child) == "bib"]
    spans = _element_spans(body, max_depth=2) or []
    bib_spans = [s for s in spans if s[0] == 1 and s[1] == b"bib"]
    if len(bib_spans) != len(elements):
        bib_spans = []
    bibs = []
    for index, element in enumerate(elements):
        where = f"bibs.bib[{index}]"
        span = bib_spans[index] if bib_spans else None
        record = _child(element, "record")
        record_xml = None
        if record is not None:
            inner = [s for s in spans if s[0] == 2 and s[1] == b"record" and span and span[2] < s[2] < span[3]]
            record_xml = _slice_or_serialise(body, inner[0] if span and len(inner) == 1 else None, record, element)
        fields = {local_name(child): (child.text or "") for child in element if isinstance(child.tag, str)}
        bibs.append(
            Bib(
                mms_id=_required(fields, "mms_id", where, origin),
                record_format=_optional(fields, "record_format"),
                title=_optional(fields, "title"),
                xml=_slice_or_serialise(body, span, element, reply.xml),
                record_xml=record_xml,
            )
        )
    return bibs


def bib_from_json(tree: Tree, where: str, origin: Origin) -> Bib:
    """A Bib from JSON: the record is the XML string in ``anies``; ``xml`` a ``<bib>`` rebuilt around it."""
    mms_id = _required(tree, "mms_id", where, origin)
    record_xml = None
    # The record is not parsed here: a malformed or unsafe record must not sink the other 99 of its
    # batch; dc.classify_bib parses it safely and classifies it BAD_XML.
    for value in as_list(tree.get("anies")):
        if isinstance(value, str) and value.strip():
            # Alma's string keeps its encoding="UTF-16" declaration; these bytes are UTF-8, so the
            # declaration goes, as the <record> sliced from an XML reply has none.
            record_xml = _strip_declaration(value.encode("utf-8"))
            break
    fields = []
    for key, value in tree.items():
        text = text_of(value)
        if key == "anies" or text is None or isinstance(value, list):
            continue
        try:
            element = etree.Element(key)
            element.text = text
            for attribute in ("desc", "link"):
                if isinstance(value, dict) and isinstance(value.get(attribute), str):
                    element.set(attribute, value[attribute])
        except ValueError:  # a key or value XML cannot carry; the rebuilt <bib> is informative only
            continue
        fields.append(etree.tostring(element, encoding="UTF-8", xml_declaration=False))
    record_part = record_xml or b""
    return Bib(
        mms_id=mms_id,
        record_format=_optional(tree, "record_format"),
        title=_optional(tree, "title"),
        xml=b"<bib>" + b"".join(fields) + record_part + b"</bib>",
        record_xml=record_xml,
    )


def _child(element: etree._Element, name: str) -> etree._Element | None:
    return next((c for c in element if isinstance(c.tag, str) and local_name(c) == name), None)


def _strip_declaration(xml: bytes) -> bytes:
    stripped = xml.lstrip(b"\xef\xbb\xbf \t\r\n")
    if stripped.startswith(b"<?xml"):
        return stripped[stripped.index(b"?>") + 2 :].lstrip()
    return xml


def _element_spans(data: bytes, max_depth: int) -> list[tuple[int, bytes, int, int]] | None:
    """(depth, local name, start, end) of each element up to ``max_depth``, in document order.

    Only used on bodies lxml has already accepted as well-formed; None if the scan disagrees.
    """
    stack: list[tuple[bytes, int]] = []
    spans: list[tuple[int, bytes, int, int]] = []
    for match in _TAG.finditer(data):
        name = match.group(2)
        if name is None:
            continue
        if match.group(1):
            if not stack or stack[-1][0] != name:
                return None
            _, start = stack.pop()
            if len(stack) <= max_depth:
                spans.append((len(stack), name.rsplit(b":", 1)[-1], start, match.end()))
        elif match.group(4):
            if len(stack) <= max_depth:
                spans.append((len(stack), name.rsplit(b":", 1)[-1], match.start(), match.end()))
        else:
            stack.append((name, match.start()))
    return sorted(spans, key=lambda span: span[2]) if not stack else None


def _slice_or_serialise(
    body: bytes, span: tuple[int, bytes, int, int] | None, element: etree._Element, parent: etree._Element
) -> bytes:
    """The element's bytes as sent, when the slice stands alone (UTF-8, no namespace declared above it);
    otherwise lxml's serialisation, which adds the inherited namespace declarations."""
    encoding = (element.getroottree().docinfo.encoding or "UTF-8").upper()
    if span is not None and encoding in _UTF8 and not parent.nsmap:
        return body[span[2] : span[3]]
    return etree.tostring(element, encoding="UTF-8", xml_declaration=False, with_tail=False)
