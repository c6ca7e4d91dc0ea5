"""The Simulator: one object that answers Alma, handle-proxy and ``/_sim`` admin requests.

``Simulator.handle`` is an ``httpx.MockTransport`` handler; ``SimServer`` serves the same object over
real HTTP. One lock guards all state; injected latency is slept outside it so concurrent clients
overlap as they would against a real server.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from threading import RLock
from typing import Any

import httpx

from ..errors import ConfigError
from .alma_api import API_ROOT, handle_alma
from .faults import Faults, update_faults
from .handle_proxy import handle_proxy
from .jobs import advance
from .records import SimRecord
from .scenario import PROFILES, Scenario
from .state import HandleEntry, SimState, real_ticker

ADMIN_ROOT = "/_sim"
_INLINE_LIMIT = 1000


class ConnectionDropped(Exception):
    """Raised to the HTTP server: close the connection without answering."""


@dataclass(frozen=True)
class JobRunLog:
    """One accepted ``op=run``, as it stands now (status, counters, per-record events)."""

    job_id: str
    instance_id: str
    set_id: str
    job_name: str | None
    submitted_at: datetime
    kind: str
    status: str
    counters: dict[str, int] = field(default_factory=dict, hash=False)
    events: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "job_id": self.job_id,
            "instance_id": self.instance_id,
            "set_id": self.set_id,
            "job_name": self.job_name,
            "submitted_at": self.submitted_at.isoformat().replace("+00:00", "Z"),
            "kind": self.kind,
            "status": self.status,
            "counters": self.counters,
            "events": list(self.events),
        }


def _real_clock() -> datetime:
    return datetime.now(UTC)


class Simulator:
    """Alma REST API subset + Handle proxy, in process. Thread-safe."""

    def __init__(
        self,
        scenario: Scenario | None = None,
        *,
        clock: Callable[[], datetime] | None = None,
        monotonic: Callable[[], float] | None = None,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self.scenario = scenario or Scenario()
        self._lock = RLock()
        self._sleep = sleep or time.sleep
        self._state = SimState(self.scenario, clock or _real_clock, monotonic or real_ticker)
        self._setup()

    def _setup(self) -> None:
        state, scenario = self._state, self.scenario
        if scenario.records is not None and scenario.records.count:
            state.generate(scenario.records.count, scenario.records.profile, scenario.records.seed)
        for number, spec in enumerate(scenario.sets, start=1):
            if spec.mms_ids:
                missing = [m for m in spec.mms_ids if m not in state.records]
                if missing:
                    raise ConfigError(f"scenario set {spec.name!r}: unknown MMS IDs {', '.join(missing[:5])}")
                ids = list(spec.mms_ids)
            else:
                ids = state.generate(spec.count, spec.profile, number if spec.seed is None else spec.seed)
            state.create_set(spec.name, ids)
        for handle, mms_id in scenario.wrong_registrations:
            state.register(handle, mms_id)

    # --- data access for tests and the demo -----------------------------------------------------

    @property
    def records(self) -> dict[str, SimRecord]:
        """Every record by MMS ID (the live dict), after applying every run that has ended.

        Read records through this property after moving the clock: a SimRecord held from before
        is the same object, but only an accessor (or a request) applies runs that ended meanwhile.
        """
        with self._lock:
            return self._advanced().records

    @property
    def faults(self) -> Faults:
        """The live fault settings; change fields freely."""
        return self._state.faults

    def _advanced(self) -> SimState:
        advance(self._state, self._state.now())
        return self._state

    @property
    def handles(self) -> dict[str, str]:
        """Registered handle -> URL at the handle server (handles without a URL value are left out)."""
        with self._lock:
            return {h: e.url for h, e in self._advanced().handles.items() if e.url is not None}

    @property
    def job_runs(self) -> list[JobRunLog]:
        """Every accepted run, in submission order, with its current status."""
        with self._lock:
            state = self._advanced()
            now = state.now()
            return [
                JobRunLog(
                    job_id=i.job.id,
                    instance_id=i.id,
                    set_id=i.set_id,
                    job_name=i.job_name,
                    submitted_at=i.submitted,
                    kind=i.job.kind,
                    status=i.phase(now)[0],
                    counters={desc: value for _code, desc, value in i.counters},
                    events=tuple(i.events),
                )
                for i in state.instance_order
            ]

    def runs_for(self, set_id: str) -> list[JobRunLog]:
        """The runs submitted on one set, oldest first."""
        return [run for run in self.job_runs if run.set_id == set_id]

    def set_members(self, set_id: str) -> list[str]:
        """The MMS IDs in a set, in order. :raises KeyError: no such set."""
        with self._lock:
            return list(self._state.sets[set_id].members)

    def set_ids(self) -> dict[str, str]:
        """Set name -> set id."""
        with self._lock:
            return {s.name: s.id for s in self._state.sets.values()}

    @property
    def stats(self) -> dict[str, Any]:
        """Requests per path kind, peak requests in any one second per key, 429s sent, daily counter."""
        with self._lock:
            state = self._state
            return {
                "requests": dict(sorted(state.requests.items())),
                "max_per_second": {label: peak.peak for label, peak in state.peaks.items()},
                "proxy_max_per_second": state.proxy_peak.peak,
                "sent_429": dict(state.sent_429),
                "daily_remaining": state.daily_remaining,
            }

    # --- changing the world --------------------------------------------------------------------

    def create_set(self, name: str, mms_ids: Sequence[str], *, content: str = "BIB_MMS") -> str:
        """Create an itemized set directly (no API call counted); returns its id."""
        with self._lock:
            unknown = [m for m in mms_ids if m not in self._state.records]
            if unknown:
                raise ValueError(f"unknown MMS IDs: {', '.join(unknown[:5])}")
            if any(s.name == name for s in self._state.sets.values()):
                raise ValueError(f"a set named {name!r} already exists")
            return self._state.create_set(name, list(mms_ids), content).id

    def add_records(self, records: Iterable[SimRecord]) -> list[str]:
        """Add (or replace) records; returns their MMS IDs."""
        with self._lock:
            return self._state.add_records(list(records))

    def generate_records(self, n: int, *, profile: str = "demo", seed: int = 0) -> list[str]:
        """Create ``n`` records from the Grinnell fixture (synthesized beyond it); returns their MMS IDs."""
        if profile not in PROFILES:
            raise ValueError(f"unknown profile {profile!r} (one of {', '.join(PROFILES)})")
        with self._lock:
            return self._state.generate(n, profile, seed)

    def register_handle(self, handle: str, url: str | None) -> None:
        """Write a handle at the handle server directly (``url=None``: a handle with no URL value)."""
        with self._lock:
            self._state.handles[handle] = HandleEntry(url, self._state.now())

    def misregister(self, handle: str, mms_id: str) -> None:
        """Point ``handle`` at another record's Primo URL, now and on every later integration run."""
        with self._lock:
            self._state.wrong[handle] = mms_id
            self._state.register(handle, mms_id)

    def primo_url(self, mms_id: str) -> str:
        """The URL a correct registration of this record's handle holds."""
        return self._state.primo_url(mms_id)

    # --- serving -------------------------------------------------------------------------------

    def handle(self, request: httpx.Request) -> httpx.Response:
        """Answer one request in process (an ``httpx.MockTransport`` handler).

        A lost reply surfaces as ``httpx.RemoteProtocolError`` and a hung proxy as ``httpx.ReadTimeout``,
        which is what a client sees over the network.
        """
        try:
            return self.respond(request, over_http=False)
        except ConnectionDropped:
            raise httpx.RemoteProtocolError(
                "Server disconnected without sending a response.", request=request
            ) from None

    def respond(self, request: httpx.Request, *, over_http: bool) -> httpx.Response:
        """Answer one request; ``over_http`` selects how stalls behave. :raises ConnectionDropped:."""
        request.read()
        path = request.url.path
        delay, drop, stall = 0.0, False, False
        with self._lock:
            state = self._advanced()
            if path == ADMIN_ROOT or path.startswith(ADMIN_ROOT + "/"):
                state.count("admin")
                reply = self._admin(request)
            elif path == API_ROOT or path.startswith(API_ROOT + "/"):
                outcome = handle_alma(state, request)
                reply, drop, delay = outcome.response, outcome.drop, state.faults.alma_latency_ms / 1000.0
                if request.method == "POST" and request.url.params.get("op") == "run" and reply.status_code == 200:
                    delay += state.faults.run_reply_delay_s
            else:
                proxied = handle_proxy(state, request)
                reply, delay, stall = proxied.response, proxied.delay, proxied.stall
            stall_seconds = state.faults.proxy_timeout_sleep_s
        if delay > 0:
            self._sleep(delay)
        if stall:
            if not over_http:
                raise httpx.ReadTimeout("The simulated handle proxy did not answer in time.", request=request)
            self._sleep(stall_seconds)
        if drop:
            raise ConnectionDropped
        return reply

    # --- admin endpoints -----------------------------------------------------------------------

    def snapshot(self, full: bool = False) -> dict[str, Any]:
        """The JSON served at ``GET /_sim/state``; big collections are summarized unless ``full``."""
        runs = [run.to_dict() for run in self.job_runs]
        with self._lock:
            state = self._advanced()
            sets = {}
            for sim_set in state.sets.values():
                info: dict[str, Any] = {"name": sim_set.name, "member_count": len(sim_set.members)}
                if full or len(sim_set.members) <= _INLINE_LIMIT:
                    info["members"] = list(sim_set.members)
                sets[sim_set.id] = info
            handles: dict[str, Any] = {"count": len(state.handles)}
            if full or len(state.handles) <= _INLINE_LIMIT:
                handles["values"] = {h: e.url for h, e in state.handles.items()}
            return {
                "now": state.now().isoformat().replace("+00:00", "Z"),
                "job_runs": runs,
                "sets": sets,
                "handles": handles,
                "records": {"count": len(state.records)},
                "stats": self.stats,
                "faults": state.faults.to_dict(),
            }

    def _admin(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path[len(ADMIN_ROOT) :].strip("/")
        try:
            body: Any = json.loads(request.content) if request.content.strip() else {}
        except ValueError:
            return _admin_json(400, {"error": "the body is not JSON"})
        if not isinstance(body, dict):
            return _admin_json(400, {"error": "the body must be a JSON object"})
        try:
            if path == "state" and request.method == "GET":
                full = request.url.params.get("full", "") in ("1", "true", "yes")
                return _admin_json(200, self.snapshot(full))
            if path == "sets" and request.method == "POST":
                name, ids = body.get("name"), body.get("mms_ids")
                if not isinstance(name, str) or not isinstance(ids, list):
                    return _admin_json(400, {"error": "give name (string) and mms_ids (list)"})
                return _admin_json(200, {"id": self.create_set(name, [str(i) for i in ids])})
            if path == "records" and request.method == "POST":
                count, profile, seed = body.get("count", 0), body.get("profile", "demo"), body.get("seed", 0)
                if not isinstance(count, int) or not isinstance(seed, int) or not isinstance(profile, str):
                    return _admin_json(400, {"error": "give count (int), profile (string), seed (int)"})
                return _admin_json(200, {"mms_ids": self.generate_records(count, profile=profile, seed=seed)})
            if path == "faults" and request.method in ("GET", "POST"):
                with self._lock:
                    update_faults(self._state.faults, body)
                    return _admin_json(200, self._state.faults.to_dict())
        except ValueError as exc:
            return _admin_json(400, {"error": str(exc)})
        return _admin_json(404, {"error": f"no admin endpoint {request.method} {request.url.path}"})


def _admin_json(status: int, data: Any) -> httpx.Response:
    return httpx.Response(status, json=data)
