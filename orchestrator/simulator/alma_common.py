"""What every simulated Alma endpoint shares: the per-request context, paging and list rendering."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from .state import SimState
from .wire import AlmaFault, Items, Node, dump_json, response, to_json_obj, to_xml

INVALID_PARAMETER = "40166411"


@dataclass
class Ctx:
    """One Alma request being answered."""

    state: SimState
    request: httpx.Request
    as_json: bool
    api: str  # e.g. "http://127.0.0.1:8080/almaws/v1", for links
    parts: list[str]  # path segments after /almaws/v1
    drop_reply: bool = False  # the dispatcher must lose this reply (fault injection)

    @property
    def params(self) -> httpx.QueryParams:
        return self.request.url.params

    @property
    def single(self) -> bool:
        return self.state.scenario.json_single_object_lists

    def link(self, *segments: str) -> str:
        return "/".join((self.api, *segments))

    def render(self, root: str, node: Node, status: int = 200) -> httpx.Response:
        """``node`` as XML document ``root`` or as a JSON object, per the negotiated format."""
        body = dump_json(to_json_obj(node, self.single)) if self.as_json else to_xml(root, node)
        return response(status, body, self.as_json)

    def render_list(self, root: str, item: str, nodes: Sequence[Any], total: int) -> httpx.Response:
        """List: ``<root total_record_count="N"><item/>…</root>``, ``{"item":[…],"total_record_count":N}``.

        An empty JSON list has no ``item`` key at all, as Alma sends it.
        """
        return self.render(root, Node([(item, Items(None, item, nodes))], attrs={"total_record_count": total}))


def int_param(ctx: Ctx, name: str, default: int, low: int, high: int | None = None) -> int:
    """An integer query parameter in [low, high]. :raises AlmaFault: 400 otherwise."""
    raw = ctx.params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise AlmaFault(400, INVALID_PARAMETER, f"Parameter {name} is not a valid number: {raw}.") from None
    if value < low or (high is not None and value > high):
        valid = f"{low}-{high}" if high is not None else f">= {low}"
        raise AlmaFault(400, INVALID_PARAMETER, f"Parameter {name} is invalid. Valid values are {valid}.")
    return value


def paging(ctx: Ctx) -> tuple[int, int]:
    """(limit, offset): limit 0-100, default 10; offset >= 0."""
    return int_param(ctx, "limit", 10, 0, 100), int_param(ctx, "offset", 0, 0)
