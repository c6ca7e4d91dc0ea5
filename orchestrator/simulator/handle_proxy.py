"""The simulated Handle proxy (hdl.handle.net): the JSON API ``/api/handles/{handle}`` and the plain
redirect ``/{handle}``, with a value cache and injected faults.

Shapes follow the CNRI proxy: 200 rc 1 with values; 200 rc 200 ``values: []`` when the type/index
filter matches nothing; 404 rc 100 when the handle is unknown; 400 rc 102 for an empty handle; a 302
redirect with a tiny "Handle Redirect" page; 404 "Handle Not Found" HTML. Every method is a read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta
from email.utils import format_datetime
from html import escape
from typing import Any

import httpx

from .state import HandleEntry, SimState

API_PREFIX = "/api/handles"
JSON_TYPE = "application/json;charset=UTF-8"
HTML_TYPE = "text/html; charset=utf-8"
TTL = 86400
ADMIN_PERMISSIONS = "011111110011"


@dataclass
class ProxyOutcome:
    """The reply, how long to wait before sending it, and whether to stall like a hung server."""

    response: httpx.Response
    delay: float = 0.0
    stall: bool = False


def _truthy(params: httpx.QueryParams, name: str) -> bool:
    return name in params and params.get(name, "").lower() in ("", "yes", "true")


def _json(status: int, data: dict[str, Any], pretty: bool = False) -> httpx.Response:
    text = json.dumps(data, indent=2 if pretty else None, separators=None if pretty else (",", ":"))
    return httpx.Response(status, content=text.encode("utf-8"), headers={"Content-Type": JSON_TYPE})


def _html(status: int, title: str, body: str, headers: dict[str, str] | None = None) -> httpx.Response:
    page = f"<HTML><HEAD><TITLE>{escape(title)}</TITLE></HEAD><BODY>{body}</BODY></HTML>"
    return httpx.Response(status, content=page.encode("utf-8"), headers={"Content-Type": HTML_TYPE, **(headers or {})})


def _lookup(state: SimState, handle: str, authoritative: bool) -> HandleEntry | None:
    """The handle's entry, through the proxy cache unless ``auth`` was asked for or caching is off."""
    ttl = state.scenario.proxy_cache_ttl
    if authoritative or ttl <= 0:
        return state.handles.get(handle)
    now = state.now()
    cached = state.proxy_cache.get(handle)
    if cached is not None and (now.timestamp() - cached[1]) < ttl:
        return cached[0]
    entry = state.handles.get(handle)
    state.proxy_cache[handle] = (entry, now.timestamp())
    return entry


def _values(handle: str, entry: HandleEntry) -> list[dict[str, Any]]:
    stamp = entry.timestamp.strftime("%Y-%m-%dT%H:%M:%SZ")
    values: list[dict[str, Any]] = []
    if entry.url is not None:
        values.append(
            {
                "index": 1,
                "type": "URL",
                "data": {"format": "string", "value": entry.url},
                "ttl": TTL,
                "timestamp": stamp,
            }
        )
    admin = {"handle": f"0.NA/{handle.split('/', 1)[0]}", "index": 200, "permissions": ADMIN_PERMISSIONS}
    values.append(
        {
            "index": 100,
            "type": "HS_ADMIN",
            "data": {"format": "admin", "value": admin},
            "ttl": TTL,
            "timestamp": stamp,
        }
    )
    return values


def _filter(values: list[dict[str, Any]], params: httpx.QueryParams) -> list[dict[str, Any]]:
    """Keep values whose type or index was asked for (OR-ed); all values when nothing was asked."""
    types = {t.upper() for t in params.get_list("type") if t}
    indexes = {int(i) for i in params.get_list("index") if i}
    if not types and not indexes:
        return values
    return [v for v in values if v["type"].upper() in types or v["index"] in indexes]


def _api(state: SimState, handle: str, params: httpx.QueryParams) -> httpx.Response:
    pretty = _truthy(params, "pretty")
    if not handle:
        return _json(400, {"responseCode": 102, "message": "Empty handle invalid"}, pretty)
    for raw in params.get_list("index"):
        if raw and not raw.lstrip("-").isdigit():
            return _json(400, {"responseCode": 4, "handle": handle, "message": f"Invalid index: {raw}"}, pretty)
    entry = _lookup(state, handle, _truthy(params, "auth"))
    if entry is None:
        return _json(404, {"responseCode": 100, "handle": handle}, pretty)
    values = _filter(_values(handle, entry), params)
    if not values:
        return _json(200, {"responseCode": 200, "handle": handle, "values": []}, pretty)
    return _json(200, {"responseCode": 1, "handle": handle, "values": values}, pretty)


def _values_page(handle: str, values: list[dict[str, Any]]) -> httpx.Response:
    rows = "".join(
        f"<tr><td>{v['index']}</td><td>{escape(v['type'])}</td><td>{escape(json.dumps(v['data']['value']))}</td></tr>"
        for v in values
    )
    head = "<tr><th>Index</th><th>Type</th><th>Data</th></tr>"
    body = f"<h1>Handle Values for: {escape(handle)}</h1><table>{head}{rows}</table>"
    return _html(200, f"Handle Values for: {handle}", body)


def _redirect(state: SimState, handle: str, params: httpx.QueryParams) -> httpx.Response:
    if not handle:
        return _html(200, "Handle.Net Proxy Server", "<h1>Handle.Net Proxy Server</h1>")
    entry = _lookup(state, handle, _truthy(params, "auth"))
    if entry is None:
        note = ""
        if handle.endswith("/"):
            bare = handle.rstrip("/")
            note = (
                f"<p>Note: the handle you requested ends with a slash (/), which is part of the handle. "
                f'Did you mean <a href="/{escape(bare)}">{escape(bare)}</a>?</p>'
            )
        body = (
            f"<h1>Handle Not Found</h1><p>Not Found: the handle you requested -- {escape(handle)} -- "
            f"cannot be found in the Handle System.</p>{note}"
        )
        return _html(404, "Handle Not Found", body)
    values = _filter(_values(handle, entry), params)
    url = next((v["data"]["value"] for v in values if v["type"].upper() == "URL"), None)
    if url is None or _truthy(params, "noredirect"):
        return _values_page(handle, values)
    target = str(url) + params.get("urlappend", "")
    expires = format_datetime(state.now() + timedelta(seconds=TTL), usegmt=True)
    link = escape(target, quote=True)
    return _html(302, "Handle Redirect", f'<A HREF="{link}">{link}</A>', {"Location": target, "Expires": expires})


def _fault(state: SimState, api: bool) -> httpx.Response | None:
    faults = state.faults
    if state.chance(faults.proxy_error_rate):
        status = state.rng.choice((500, 502, 503))
        if status == 502 or not api:
            return _html(status, "Server Error", f"<h1>{status} Server Error</h1>")
        code, message = (2, "Error") if status == 500 else (3, "Server too busy")
        return _json(status, {"responseCode": code, "message": message})
    if api and state.chance(faults.proxy_html_garbage_rate):
        body = "<h1>Service Temporarily Unavailable</h1><p>Please try again later.</p>"
        return _html(200, "Handle.Net Proxy Server", body)
    return None


def _too_many(state: SimState) -> httpx.Response:
    state.sent_429["proxy"] += 1
    retry = str(state.faults.proxy_retry_after)
    return _html(429, "Too Many Requests", "<h1>Too Many Requests</h1>", {"Retry-After": retry})


def handle_proxy(state: SimState, request: httpx.Request) -> ProxyOutcome:
    """Answer one handle-proxy request (the caller holds the lock)."""
    path = request.url.path
    api = path == API_PREFIX or path.startswith(API_PREFIX + "/")
    handle = path[len(API_PREFIX) :].lstrip("/") if api else path.lstrip("/")
    state.count("handles_api" if api else "handle_redirect")
    state.proxy_peak.hit(state.ticker())
    faults = state.faults
    delay = faults.proxy_latency_ms / 1000.0
    state.proxy_bucket.rate = faults.proxy_per_second_cap
    if not state.proxy_bucket.take() or state.chance(faults.proxy_rate_429):
        return ProxyOutcome(_too_many(state), delay)
    if state.chance(faults.proxy_timeout_rate):
        return ProxyOutcome(_api(state, handle, request.url.params), delay, stall=True)
    injected = _fault(state, api)
    if injected is not None:
        return ProxyOutcome(injected, delay)
    reply = _api(state, handle, request.url.params) if api else _redirect(state, handle, request.url.params)
    return ProxyOutcome(reply, delay)
