"""Simulated Sets API: create (also ``from_logical_set``), retrieve, list by name, manage members, list
members, delete.

A LOGICAL set answers its ``query`` and counts its members anew on every read; its members cannot be
managed (60112). ``POST /conf/sets?from_logical_set=ID`` answers at once with the new itemized set,
still empty; its members (the logical set's members at that moment) are added over the scenario's
``from_logical_set_seconds``, in proportion to the time gone by, as Alma's background population does.
"""

from __future__ import annotations

from typing import Any

import httpx
from lxml import etree

from .alma_common import Ctx, paging
from .state import SimSet
from .wire import (
    GENERAL_ERROR,
    AlmaFault,
    Coded,
    Node,
    body_is_json,
    child_text,
    json_list,
    json_scalar,
    parse_json_body,
    parse_xml_body,
    utc_ms,
)

CONTENT_DESC = {
    "BIB_MMS": "All Titles",
    "IED": "Digital titles",
    "IEP": "Physical titles",
    "IEE": "Electronic titles",
    "IE": "Inventory titles",
    "IEC": "Collections",
}
MAX_MANAGE = 1000


def set_node(ctx: Ctx, sim_set: SimSet) -> Node:
    """The set object (``GET /conf/sets/{id}``); ``number_of_members`` is a number in JSON; a logical set
    carries its ``query``."""
    created = utc_ms(sim_set.created)
    link = ctx.link("conf", "sets", sim_set.id)
    query = None
    if sim_set.query is not None:
        query = Coded(*sim_set.query.alma_text(sim_set.content))
    set_type = Coded("LOGICAL", "Logical") if sim_set.logical else Coded("ITEMIZED", "Itemized")
    fields: list[tuple[str, Any]] = [
        ("id", sim_set.id),
        ("name", sim_set.name),
        ("description", sim_set.description or None),
        ("type", set_type),
        ("content", Coded(sim_set.content, CONTENT_DESC.get(sim_set.content, sim_set.content))),
        ("private", Coded("true" if sim_set.private else "false", "Yes" if sim_set.private else "No")),
        ("status", Coded("ACTIVE", "Active")),
        ("status_date", created),
        ("created_by", Coded("exl_api", "Ex Libris, API" if ctx.as_json else "API, Ex Libris")),
        ("created_date", created),
        ("query", query),
        ("number_of_members", Coded(len(ctx.state.members_of(sim_set)), link=link + "/members")),
        ("origin", Coded("UI", "Institution only")),
    ]
    return Node(fields, link=link)


def find_set(ctx: Ctx, set_id: str) -> SimSet:
    """:raises AlmaFault: 400 60107 when there is no such set."""
    sim_set = ctx.state.sets.get(set_id)
    if sim_set is None:
        raise AlmaFault(400, "60107", f"Set not found: Set ID {set_id}")
    return sim_set


def get_set(ctx: Ctx, set_id: str) -> httpx.Response:
    """``GET /conf/sets/{id}``."""
    return ctx.render("set", set_node(ctx, find_set(ctx, set_id)))


def list_sets(ctx: Ctx) -> httpx.Response:
    """``GET /conf/sets?q=name~X``: case-insensitive containment on name (or created_by)."""
    limit, offset = paging(ctx)
    found = list(ctx.state.sets.values())
    query = ctx.params.get("q")
    if query:
        field, sep, wanted = query.partition("~")
        if not sep or field not in ("name", "created_by"):
            raise AlmaFault(400, "40166410", f"Invalid q parameter: {query}. Use name~value or created_by~value.")
        wanted = wanted.lower()
        found = [s for s in found if wanted in (s.name.lower() if field == "name" else "exl_api")]
    set_type = ctx.params.get("set_type")
    if set_type:
        found = [s for s in found if ("LOGICAL" if s.logical else "ITEMIZED") == set_type.upper()]
    content = ctx.params.get("content_type")
    if content:
        found = [s for s in found if s.content == content]
    page = found[offset : offset + limit]
    return ctx.render_list("sets", "set", [set_node(ctx, s) for s in page], len(found))


def _read_set_body(ctx: Ctx) -> tuple[dict[str, str | None], list[str | None]]:
    """Name/type/content/description/private and member ids from an XML or JSON set body."""
    if body_is_json(ctx.request):
        data = parse_json_body(ctx.request)
        if not isinstance(data, dict):
            raise AlmaFault(400, GENERAL_ERROR[0], "The request body must be a set object.")
        info = {k: json_scalar(data.get(k)) for k in ("name", "type", "content", "description", "private")}
        members_raw = data.get("members")
        member_list = json_list(members_raw.get("member") if isinstance(members_raw, dict) else None)
        return info, [json_scalar(m.get("id")) if isinstance(m, dict) else None for m in member_list]
    root = parse_xml_body(ctx.request, "set")
    if etree.QName(root).localname != "set":
        raise AlmaFault(400, GENERAL_ERROR[0], "The request body must be a <set> element.")
    info = {k: child_text(root, k) for k in ("name", "type", "content", "description", "private")}
    ids: list[str | None] = []
    for child in root:
        if isinstance(child.tag, str) and etree.QName(child).localname == "members":
            ids.extend(child_text(m, "id") for m in child if isinstance(m.tag, str))
    return info, ids


def create_set(ctx: Ctx) -> httpx.Response:
    """``POST /conf/sets``: an empty itemized set with a unique name (402263), or, with
    ``from_logical_set=ID``, an itemized set that fills with that logical set's members."""
    info, _members = _read_set_body(ctx)
    name = (info["name"] or "").strip()
    if not name:
        raise AlmaFault(400, "402119", "General Error: the set name is mandatory.")
    set_type = (info["type"] or "").upper()
    if set_type not in ("ITEMIZED", "LOGICAL"):
        raise AlmaFault(400, "402262", "Set type is invalid. Only 'ITEMIZED' and 'LOGICAL' sets are supported.")
    source = _logical_source(ctx)
    if set_type == "LOGICAL":
        detail = "a set made from a logical set is itemized" if source else "logical sets are made in the simulator"
        raise AlmaFault(400, "402265", f"Failed to create a set ({detail}).")
    content = (info["content"] or "").upper()
    if not content:
        raise AlmaFault(400, "402119", "General Error: the set content is mandatory.")
    if any(s.name == name for s in ctx.state.sets.values()):
        raise AlmaFault(400, "402263", "The set name already exists. Please choose a different name.")
    sim_set = ctx.state.create_set(name, [], content, (info["description"] or "").strip())
    sim_set.private = (info["private"] or "false").lower() == "true"
    if source is not None:
        sim_set.from_logical_set = source.id
        sim_set.filling = tuple(ctx.state.members_of(source))
        sim_set.fill_seconds = ctx.state.scenario.from_logical_set_seconds
    return ctx.render("set", set_node(ctx, sim_set))


def _logical_source(ctx: Ctx) -> SimSet | None:
    """The set named by ``from_logical_set``, if given. :raises AlmaFault: 402264 unknown or not logical."""
    if "from_logical_set" not in ctx.params:
        return None
    source_id = (ctx.params.get("from_logical_set") or "").strip()
    source = ctx.state.sets.get(source_id)
    if source is None:
        raise AlmaFault(400, "402264", f"Set ID is invalid: {source_id}")
    if not source.logical:
        raise AlmaFault(400, "402264", f"Set ID is invalid: {source_id} is not a logical set")
    return source


def manage_members(ctx: Ctx, set_id: str) -> httpx.Response:
    """``POST /conf/sets/{id}?op=add_members|delete_members|replace_members``, all or nothing."""
    sim_set = find_set(ctx, set_id)
    if sim_set.logical:
        raise AlmaFault(400, "60112", "Invalid set type: the members of a logical set cannot be managed.")
    ctx.state.members_of(sim_set)  # a set still being filled from a logical set: bring it up to date
    op = ctx.params.get("op")
    if op not in ("add_members", "delete_members", "replace_members"):
        raise AlmaFault(400, "60111", f"Invalid operation: {op}")
    fail_on_invalid = ctx.params.get("fail_on_invalid_id", "true").lower() != "false"
    _info, ids = _read_set_body(ctx)
    if not ids:
        raise AlmaFault(400, "60113", "Input set with no members")
    if len(ids) > MAX_MANAGE:
        raise AlmaFault(400, "60118", f"Input set member list exceeds limit ({MAX_MANAGE})")
    if any(not i for i in ids):
        raise AlmaFault(400, "60114", "Input set with no member ID")
    clean = [str(i) for i in ids]
    seen: set[str] = set()
    for mms in clean:
        if mms in seen:
            raise AlmaFault(400, "60119", f"Input set with duplicate member: {mms}")
        seen.add(mms)
    records = ctx.state.records
    if op == "delete_members":
        missing = [m for m in clean if m not in sim_set.index]
        if missing and fail_on_invalid:
            raise AlmaFault(400, "60117", f"Input set member ID is not in set: {missing[0]}")
        sim_set.remove([m for m in clean if m in sim_set.index])
        return ctx.render("set", set_node(ctx, sim_set))
    invalid = [m for m in clean if m not in records]
    if invalid and fail_on_invalid:
        raise AlmaFault(400, "60116", f"A member ID is not valid for the content: {invalid[0]}")
    valid = [m for m in clean if m in records]
    if op == "replace_members":
        sim_set.members, sim_set.index = [], set()
    else:
        present = [m for m in valid if m in sim_set.index]
        if present and fail_on_invalid:
            raise AlmaFault(400, "60115", f"A member ID is already in the set: {present[0]}")
        valid = [m for m in valid if m not in sim_set.index]
    sim_set.add(valid)
    return ctx.render("set", set_node(ctx, sim_set))


def list_members(ctx: Ctx, set_id: str) -> httpx.Response:
    """``GET /conf/sets/{id}/members``: limit 0 answers the count only."""
    members = ctx.state.members_of(find_set(ctx, set_id))
    limit, offset = paging(ctx)
    page = members[offset : offset + limit]
    corrupt = set(ctx.state.faults.corrupt_set_members)
    for mms in page:
        if mms in corrupt:
            raise AlmaFault(400, "402119", f"Set Member not found: IED {mms}")
    nodes = []
    for mms in page:
        record = ctx.state.records.get(mms)
        title = record.title if record else None
        nodes.append(Node([("id", mms), ("description", title)], link=ctx.link("bibs", mms)))
    return ctx.render_list("members", "member", nodes, len(members))


def delete_set(ctx: Ctx, set_id: str) -> httpx.Response:
    """``DELETE /conf/sets/{id}``: 204."""
    find_set(ctx, set_id)
    del ctx.state.sets[set_id]
    return httpx.Response(204)
