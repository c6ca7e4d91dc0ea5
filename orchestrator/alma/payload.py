"""Request bodies hwf sends to Alma: set objects (create set, manage members) and job-run payloads.

A job-run payload can start from the template an operator pasted from Alma's Run-a-job wizard
("API Information" panel): hwf sets its own parameters (set_id, job_name) and keeps every other one.
This is the one reader of that template: ``hwf ping`` asks it which parameters the template gives.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from lxml import etree

from orchestrator.alma.wire import Tree, as_list, is_unsafe_xml, local_name, sniff, text_of
from orchestrator.errors import BadInputError, UnsafeXmlError
from orchestrator.xmlsafe import parse_xml


def set_body(fields: Sequence[tuple[str, str]], members: Sequence[str] | None, fmt: str) -> tuple[str, bytes]:
    """A ``<set>`` body (XML) or set object (JSON) with the given fields and optional members."""
    coded = {"type", "content", "private", "status"}
    if fmt == "xml":
        root = etree.Element("set")
        for name, value in fields:
            etree.SubElement(root, name).text = value
        if members is not None:
            wrapper = etree.SubElement(root, "members")
            for mms_id in members:
                etree.SubElement(etree.SubElement(wrapper, "member"), "id").text = mms_id
        return "application/xml", etree.tostring(root, xml_declaration=True, encoding="UTF-8")
    data: Tree = {name: ({"value": value} if name in coded else value) for name, value in fields}
    if members is not None:
        data["members"] = {"member": [{"id": mms_id} for mms_id in members]}
    return "application/json", json.dumps(data, ensure_ascii=False).encode("utf-8")


def build_job_payload(
    parameters: Sequence[tuple[str, str]], *, fmt: str, template: bytes | None = None
) -> tuple[str, bytes]:
    """The body of ``POST /conf/jobs/{id}?op=run``: ``(content_type, body)``.

    With a template (the payload from Alma's Run-a-job "API Information" panel, XML or JSON; its format wins
    over ``fmt``) the given parameters are set or replaced and every other parameter is kept as given.

    :raises BadInputError: the template is neither XML nor a JSON object, or is malformed.
    """
    if fmt not in ("json", "xml"):
        raise ValueError(f"fmt must be 'json' or 'xml', not {fmt!r}")
    if template is None:
        if fmt == "xml":
            return _xml_payload(etree.Element("job"), parameters)
        return _json_payload({}, parameters)
    loaded = _load_template(template)
    if isinstance(loaded, dict):
        return _json_payload(loaded, parameters)
    return _xml_payload(loaded, parameters)


def template_parameter_names(template: bytes) -> set[str]:
    """The names of the parameters a job payload template gives, as :func:`build_job_payload` reads them
    (the parameters it keeps when it sets set_id and job_name).

    :raises BadInputError: the template is neither XML nor a JSON object, or is malformed.
    """
    loaded = _load_template(template)
    if isinstance(loaded, dict):
        parameters = as_list(_json_holder(loaded).get("parameter"))
        return {name for p in parameters if isinstance(p, dict) and (name := text_of(p.get("name")))}
    wrapper = _xml_wrapper(loaded)
    if wrapper is None:
        return set()
    found = (_xml_child_text(el, "name") for el in wrapper if isinstance(el.tag, str) and local_name(el) == "parameter")
    return {name for name in found if name}


def _load_template(template: bytes) -> etree._Element | Tree:
    """A job payload template parsed: the XML root, or the JSON object.

    :raises BadInputError: the template is neither XML nor a JSON object, or is malformed.
    """
    kind = sniff(template)
    if kind == "xml":
        try:
            return parse_xml(template, "job payload template")
        except UnsafeXmlError as exc:
            if is_unsafe_xml(template):
                raise
            raise BadInputError(f"job payload template: {exc}") from None
    if kind == "json":
        try:
            data = json.loads(template.decode("utf-8-sig"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise BadInputError(f"job payload template: malformed JSON ({exc})") from None
        if not isinstance(data, dict):
            raise BadInputError('job payload template: JSON must be an object like {"parameter": [...]}')
        return data
    raise BadInputError('job payload template: neither XML (<job>…) nor JSON ({"parameter": …})')


def _xml_wrapper(root: etree._Element) -> etree._Element | None:
    """The template's ``<parameters>`` element (the first one), if it has one."""
    return next((el for el in root.iter() if isinstance(el.tag, str) and local_name(el) == "parameters"), None)


def _json_holder(data: Tree) -> Tree:
    """The object whose ``parameter`` list holds the parameters: ``data`` or its ``parameters`` object."""
    holder = data.get("parameters")
    if "parameter" not in data and isinstance(holder, dict):
        return holder
    return data


def _xml_payload(root: etree._Element, parameters: Sequence[tuple[str, str]]) -> tuple[str, bytes]:
    wrapper = _xml_wrapper(root)
    if wrapper is None:
        wrapper = etree.SubElement(root, "parameters")
    for name, values in _grouped(parameters):
        existing = [
            el
            for el in wrapper
            if isinstance(el.tag, str) and local_name(el) == "parameter" and _xml_child_text(el, "name") == name
        ]
        if not existing:
            for value in values:
                wrapper.append(_xml_param(wrapper, name, value))
            continue
        first = existing[0]
        _xml_set_value(first, values[0])
        for element in existing[1:]:
            wrapper.remove(element)
        anchor = first
        for value in values[1:]:
            element = _xml_param(wrapper, name, value)
            element.tail = anchor.tail
            anchor.addnext(element)
            anchor = element
    return "application/xml", etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def _xml_child_text(parent: etree._Element, name: str) -> str | None:
    for child in parent:
        if isinstance(child.tag, str) and local_name(child) == name:
            return (child.text or "").strip()
    return None


def _xml_set_value(parameter: etree._Element, value: str) -> None:
    for child in parameter:
        if isinstance(child.tag, str) and local_name(child) == "value":
            child.text = value
            return
    namespace = etree.QName(parameter).namespace
    etree.SubElement(parameter, f"{{{namespace}}}value" if namespace else "value").text = value


def _xml_param(parent: etree._Element, name: str, value: str) -> etree._Element:
    namespace = etree.QName(parent).namespace
    prefix = f"{{{namespace}}}" if namespace else ""
    element = etree.Element(prefix + "parameter")
    etree.SubElement(element, prefix + "name").text = name
    etree.SubElement(element, prefix + "value").text = value
    return element


def _json_payload(data: Tree, parameters: Sequence[tuple[str, str]]) -> tuple[str, bytes]:
    holder = _json_holder(data)
    current = as_list(holder.get("parameter"))
    for name, values in _grouped(parameters):
        new = [{"name": {"value": name}, "value": value} for value in values]
        positions = [i for i, p in enumerate(current) if isinstance(p, dict) and text_of(p.get("name")) == name]
        if not positions:
            current = current + new
            continue
        first = positions[0]
        replaced = {**current[first], "value": values[0]}
        later = [p for i, p in enumerate(current) if i > first and i not in positions]
        current = current[:first] + [replaced] + new[1:] + later
    holder["parameter"] = current
    return "application/json", json.dumps(data, ensure_ascii=False).encode("utf-8")


def _grouped(parameters: Sequence[tuple[str, str]]) -> list[tuple[str, list[str]]]:
    """Parameters grouped by name, in first-seen order (a name given twice yields two parameters)."""
    groups: dict[str, list[str]] = {}
    for name, value in parameters:
        if not name:
            raise ValueError("a job parameter needs a name")
        groups.setdefault(name, []).append(value)
    return list(groups.items())
