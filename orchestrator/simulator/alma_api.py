"""The Alma gateway in front of the simulated endpoints: routing, API keys and areas, per-second and
daily thresholds, injected 5xx, the ``X-Exl-Api-*`` headers and error rendering."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from . import alma_bibs, alma_jobs, alma_sets
from .alma_common import Ctx
from .scenario import ApiKey
from .state import PeakWindow, SimState
from .wire import AlmaFault, error_body, response, wants_json

API_ROOT = "/almaws/v1"
UNAUTHORIZED_MESSAGE = "API-key not defined or not configured to allow this API."
_WRITES = ("POST", "PUT", "DELETE", "PATCH")
Handler = Callable[[Ctx], httpx.Response]


@dataclass
class AlmaOutcome:
    """The reply, and whether the connection must be dropped instead of sending it."""

    response: httpx.Response
    drop: bool = False
    kind: str = "alma"


def _route(parts: list[str], method: str) -> tuple[str, Handler]:
    """(stats kind, handler) for a path below /almaws/v1. :raises AlmaFault: 404 / 405."""
    n = len(parts)
    table: dict[tuple[str, ...], tuple[str, Handler]] = {}
    if n >= 2 and parts[0] == "conf" and parts[1] == "sets":
        if n == 2:
            table = {("GET",): ("sets", alma_sets.list_sets), ("POST",): ("set_create", alma_sets.create_set)}
        elif n == 3:
            sid = parts[2]
            table = {
                ("GET",): ("set", lambda c: alma_sets.get_set(c, sid)),
                ("POST",): ("set_members_manage", lambda c: alma_sets.manage_members(c, sid)),
                ("DELETE",): ("set_delete", lambda c: alma_sets.delete_set(c, sid)),
            }
        elif n == 4 and parts[3] == "members":
            sid = parts[2]
            table = {("GET",): ("set_members", lambda c: alma_sets.list_members(c, sid))}
    elif n >= 2 and parts[0] == "conf" and parts[1] == "jobs":
        if n == 2:
            table = {("GET",): ("jobs", alma_jobs.list_jobs)}
        elif n == 3:
            jid = parts[2]
            table = {
                ("GET",): ("job", lambda c: alma_jobs.get_job(c, jid)),
                ("POST",): ("job_run", lambda c: alma_jobs.run_job(c, jid)),
            }
        elif n == 4 and parts[3] == "instances":
            jid = parts[2]
            table = {("GET",): ("instances", lambda c: alma_jobs.list_instances(c, jid))}
        elif n == 5 and parts[3] == "instances":
            jid, iid = parts[2], parts[4]
            table = {("GET",): ("instance", lambda c: alma_jobs.get_instance(c, jid, iid))}
        elif n == 6 and parts[3] == "instances" and parts[5] == "events":
            jid, iid = parts[2], parts[4]
            table = {("GET",): ("events", lambda c: alma_jobs.instance_events(c, jid, iid))}
    elif n == 3 and parts[0] == "conf" and parts[1] == "code-tables":
        name = parts[2]
        table = {("GET",): ("code_table", lambda c: alma_jobs.code_table(c, name))}
    elif n >= 1 and parts[0] == "bibs":
        if n == 1:
            table = {("GET",): ("bibs", alma_bibs.get_bibs)}
        elif n == 2:
            mms = parts[1]
            table = {
                ("GET",): ("bib", lambda c: alma_bibs.get_bib(c, mms)),
                ("PUT",): ("bib_put", lambda c: alma_bibs.put_bib(c, mms)),
            }
    if not table:
        raise AlmaFault(404, "NOT_FOUND", f"No API matches {API_ROOT}/{'/'.join(parts)}")
    found = table.get((method,))
    if found is None:
        raise AlmaFault(405, "METHOD_NOT_ALLOWED", f"Method {method} is not supported for this API.")
    return found


def _key_from(request: httpx.Request) -> str | None:
    header = str(request.headers.get("authorization", ""))
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() == "apikey" and value.strip():
        return value.strip()
    query = str(request.url.params.get("apikey", "")).strip()
    return query or None


def _authorize(state: SimState, request: httpx.Request, area: str) -> str:
    """The key's label for stats. :raises AlmaFault: 401 missing, 403 unknown, 400 UNAUTHORIZED for area."""
    key = _key_from(request)
    if key is None:
        raise AlmaFault(401, "UNAUTHORIZED", "API key is missing. Send it as: Authorization: apikey <key>.")
    known = state.scenario.api_keys
    if not known:
        return "key-" + hashlib.sha256(key.encode()).hexdigest()[:8]
    match: ApiKey | None = next((k for k in known if k.key == key), None)
    if match is None:
        raise AlmaFault(403, "INVALID_REQUEST", "Invalid API Key")
    allowed = area in match.areas and match.environment == state.scenario.environment
    if not allowed or (match.read_only and request.method in _WRITES):
        raise AlmaFault(400, "UNAUTHORIZED", UNAUTHORIZED_MESSAGE)
    return match.name or "key"


def _server_error(state: SimState, as_json: bool) -> httpx.Response:
    if state.rng.random() < 0.5:
        html = b"<html><head><title>500 Internal Server Error</title></head><body><h1>Error</h1></body></html>"
        return httpx.Response(500, content=html, headers={"Content-Type": "text/html;charset=UTF-8"})
    body = error_body("INTERNAL_SERVER_ERROR", "Internal Server Error", state.tracking_id(), as_json)
    return response(500, body, as_json)


def handle_alma(state: SimState, request: httpx.Request) -> AlmaOutcome:
    """Answer one request under /almaws/v1 (the caller holds the lock and advanced the jobs)."""
    as_json = wants_json(request)
    single = state.scenario.json_single_object_lists
    state.roll_daily()
    parts = [p for p in request.url.path[len(API_ROOT) :].split("/") if p]
    base = f"{request.url.scheme}://{request.url.netloc.decode('ascii')}{API_ROOT}"
    ctx = Ctx(state, request, as_json, base, parts)
    kind = "alma_unknown"
    try:
        area = "bibs" if parts[:1] == ["bibs"] else "conf"
        label = _authorize(state, request, area)
        kind, handler = _route(parts, request.method)
        state.peaks.setdefault(label, PeakWindow()).hit(state.ticker())
        if state.faults.burst_429 > 0:
            state.faults.burst_429 -= 1
            state.sent_429["burst"] += 1
            raise AlmaFault(429, "PER_SECOND_THRESHOLD", "HTTP requests are more than allowed per second")
        if not state.key_bucket(label).take():
            state.sent_429["per_second"] += 1
            raise AlmaFault(429, "PER_SECOND_THRESHOLD", "HTTP requests are more than allowed per second")
        if state.daily_remaining <= 0:
            state.sent_429["daily"] += 1
            raise AlmaFault(429, "DAILY_THRESHOLD", "Daily API threshold exceeded")
        state.daily_remaining -= 1
        rate = {"GET": state.faults.alma_get_500_rate, "PUT": state.faults.alma_put_500_rate}.get(request.method, 0.0)
        unavailable = next((s for f, s in state.faults.unavailable_paths.items() if f in request.url.path), None)
        if unavailable is not None:
            state.sent_503 += 1
            body = error_body("SERVICE_UNAVAILABLE", "Service Unavailable", state.tracking_id(), as_json)
            reply = response(503, body, as_json, {"Retry-After": str(unavailable)})
        elif state.chance(rate):
            reply = _server_error(state, as_json)
        else:
            reply = handler(ctx)
    except alma_jobs.ConnectionDrop:
        state.count(kind)
        return AlmaOutcome(httpx.Response(500), drop=True, kind=kind)
    except AlmaFault as fault:
        body = error_body(fault.code, fault.message, state.tracking_id(), as_json, single)
        reply = response(fault.status, body, as_json)
    state.count(kind)
    reply.headers["X-Exl-Api-Remaining"] = str(max(state.daily_remaining, 0))
    if state.scenario.emit_quota_header:
        reply.headers["X-Exl-Api-Quota"] = str(state.scenario.daily_quota)
    reply.headers["X-Request-ID"] = state.tracking_id()[-10:]
    return AlmaOutcome(reply, ctx.drop_reply, kind)
