"""The Simulator: one object that answers Alma, handle-proxy and ``/_sim`` admin requests.

``Simulator.handle`` is an ``httpx.MockTransport`` handler; ``SimServer`` serves the same object over
real HTTP. One lock guards all state; injected latency is slept outside it so concurrent clients
overlap as they would against a real server.

Admin endpoints (JSON in, JSON out; a bad request is 400 ``{"error": "..."}``):

- ``GET /_sim/state[?full=1]``: the world (runs with the members each run started on, sets, handles, stats)
- ``POST /_sim/records {"count", "profile"?, "seed"?, "title_prefix"?}`` -> ``{"mms_ids": [...]}``
- ``POST /_sim/sets {"name", "mms_ids"}`` -> ``{"id"}``: an itemized set
- ``POST /_sim/logical-sets {"name", "query": {...}, "description"?}`` -> ``{"id"}``: see ``queries.SetQuery``
- ``POST /_sim/run-job {"job_id", "set_id", "user"?, "user_desc"?}`` -> ``{"instance_id", "job_id", "name"}``:
  an operator's Admin > Run a Job
- ``POST /_sim/press-run {"set_name", "user"?, "user_desc"?}`` -> ``{"instance_id", "job_id", "name"}``:
  an operator presses Run on the handle integration profile
- ``GET|POST /_sim/faults {...}`` -> every fault setting
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from threading import RLock
from typing import Any

import httpx

from ..errors import ConfigError
from . import by_hand
from .alma_api import API_ROOT, handle_alma
from .faults import Faults, update_faults
from .handle_proxy import handle_proxy
from .jobs import advance, live_counters
from .queries import SetQuery
from .records import SimRecord
from .scenario import PROFILES, Scenario
from .state import HandleEntry, Instance, SimState, real_ticker

ADMIN_ROOT = "/_sim"
_INLINE_LIMIT = 1000


class ConnectionDropped(Exception):
    """Raised to the HTTP server: close the connection without answering."""


@dataclass(frozen=True)
class JobRunLog:
    """One run (accepted ``op=run`` or made by a person), as it stands now.

    ``members`` are the set's members at the moment the run was submitted: the records it works on.
    ``origin`` is ``api``, ``run_a_job`` (Admin > Run a Job) or ``integration_profile`` (the profile's Run).
    """

    job_id: str
    instance_id: str
    set_id: str
    job_name: str | None
    submitted_at: datetime
    kind: str
    status: str
    counters: dict[str, int] = field(default_factory=dict, hash=False)
    events: tuple[str, ...] = ()
    name: str = ""
    origin: str = "api"
    submitted_by: str = "exl_api"
    members: tuple[str, ...] = ()

    def to_dict(self, members: bool = True) -> dict[str, Any]:
        """JSON-ready form; ``members=False`` leaves the member list out (its count stays)."""
        out = {
            "job_id": self.job_id,
            "instance_id": self.instance_id,
            "set_id": self.set_id,
            "job_name": self.job_name,
            "submitted_at": self.submitted_at.isoformat().replace("+00:00", "Z"),
            "kind": self.kind,
            "status": self.status,
            "counters": self.counters,
            "events": list(self.events),
            "name": self.name,
            "origin": self.origin,
            "submitted_by": self.submitted_by,
            "member_count": len(self.members),
        }
        if members:
            out["members"] = list(self.members)
        return out

    @classmethod
    def of(cls, instance: Instance, now: datetime) -> JobRunLog:
        """The log line of ``instance`` as seen at ``now``."""
        return cls(
            job_id=instance.job.id,
            instance_id=instance.id,
            set_id=instance.set_id,
            job_name=instance.job_name,
            submitted_at=instance.submitted,
            kind=instance.job.kind,
            status=instance.phase(now)[0],
            counters={desc: value for _code, desc, value in live_counters(instance, now)},
            events=tuple(instance.events),
            name=instance.name,
            origin=instance.origin,
            submitted_by=instance.submitted_by[0],
            members=instance.members,
        )


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
        for logical in scenario.logical_sets:
            if state.set_named(logical.name) is not None:
                raise ConfigError(f"scenario logical set {logical.name!r}: a set of that name already exists")
            state.create_logical_set(logical.name, logical.query, description=logical.description)
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
            return [JobRunLog.of(i, now) for i in state.instance_order]

    def runs_for(self, set_id: str) -> list[JobRunLog]:
        """The runs submitted on one set, oldest first."""
        return [run for run in self.job_runs if run.set_id == set_id]

    def set_members(self, set_id: str) -> list[str]:
        """The MMS IDs in a set now, in order (a logical set's query evaluated). :raises KeyError: no such set."""
        with self._lock:
            state = self._advanced()
            return list(state.members_of(state.sets[set_id]))

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
                "sent_503": state.sent_503,
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

    def create_logical_set(
        self, name: str, query: SetQuery | Mapping[str, Any] | str, *, content: str = "BIB_MMS", description: str = ""
    ) -> str:
        """Create a LOGICAL set (a saved search) directly; returns its id.

        ``query``: a ``SetQuery``, its mapping form (``{"title_contains": ..., "record_format": ...,
        "mms_ids": [...]}``, every criterion given must hold) or a bare string (a title substring).
        :raises ValueError: a bad query, or the name is taken.
        """
        parsed = SetQuery.of(query)
        with self._lock:
            if self._state.set_named(name) is not None:
                raise ValueError(f"a set named {name!r} already exists")
            return self._state.create_logical_set(name, parsed, content, description).id

    def run_job_by_hand(self, job_id: str, set_id: str, user: str = "jdoe", *, user_desc: str | None = None) -> str:
        """An operator runs ``job_id`` on ``set_id`` from Admin > Run a Job; returns the instance id.

        Named ``<job name> - <set name> - <MM/DD/YYYY HH:MM:SS TZ>``, submitted by ``user``; no API
        refusal (402231, 60347, thresholds) applies. :raises ValueError: unknown job or set.
        """
        with self._lock:
            return by_hand.run_job_by_hand(self._advanced(), job_id, set_id, user, user_desc).id

    def press_integration_run(self, set_name: str, user: str = "jdoe", *, user_desc: str | None = None) -> str:
        """An operator presses Run on the handle integration profile whose set is ``set_name``.

        A run of the scenario's integration job named ``Handle integration``, submitted by ``user``;
        returns the instance id. :raises ValueError: no set of that name, no integration job.
        """
        with self._lock:
            return by_hand.press_integration_run(self._advanced(), set_name, user, user_desc).id

    def add_records(self, records: Iterable[SimRecord]) -> list[str]:
        """Add (or replace) records; returns their MMS IDs."""
        with self._lock:
            return self._state.add_records(list(records))

    def generate_records(self, n: int, *, profile: str = "demo", seed: int = 0, title_prefix: str = "") -> list[str]:
        """Create ``n`` records from the Grinnell fixture (synthesized beyond it); returns their MMS IDs.

        ``title_prefix`` goes before each title (so a logical set's ``title_contains`` can pick them).
        """
        if profile not in PROFILES:
            raise ValueError(f"unknown profile {profile!r} (one of {', '.join(PROFILES)})")
        with self._lock:
            return self._state.generate(n, profile, seed, title_prefix)

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
                if request.method == "POST" and path.rstrip("/").endswith("/conf/sets") and reply.status_code == 200:
                    delay += state.faults.create_set_reply_delay_s
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
        runs = [run.to_dict(full or len(run.members) <= _INLINE_LIMIT) for run in self.job_runs]
        with self._lock:
            state = self._advanced()
            sets = {}
            for sim_set in state.sets.values():
                members = state.members_of(sim_set)
                info: dict[str, Any] = {"name": sim_set.name, "member_count": len(members)}
                if full or len(members) <= _INLINE_LIMIT:
                    info["members"] = list(members)
                if sim_set.query is not None:
                    info["type"], info["query"] = "LOGICAL", sim_set.query.to_dict()
                if sim_set.from_logical_set is not None:
                    info["from_logical_set"] = sim_set.from_logical_set
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
                prefix = body.get("title_prefix", "")
                if not all(isinstance(v, t) for v, t in ((count, int), (seed, int), (profile, str), (prefix, str))):
                    return _admin_json(
                        400, {"error": "give count (int), profile (string), seed (int), title_prefix (string)"}
                    )
                ids = self.generate_records(count, profile=profile, seed=seed, title_prefix=prefix)
                return _admin_json(200, {"mms_ids": ids})
            if request.method == "POST" and path in ("logical-sets", "run-job", "press-run"):
                return self._admin_people(path, body)
            if path == "faults" and request.method in ("GET", "POST"):
                with self._lock:
                    update_faults(self._state.faults, body)
                    return _admin_json(200, self._state.faults.to_dict())
        except ValueError as exc:
            return _admin_json(400, {"error": str(exc)})
        return _admin_json(404, {"error": f"no admin endpoint {request.method} {request.url.path}"})

    def _admin_people(self, path: str, body: dict[str, Any]) -> httpx.Response:
        """``POST /_sim/logical-sets``, ``/_sim/run-job``, ``/_sim/press-run``. :raises ValueError:."""
        user, desc = body.get("user", by_hand.DEFAULT_USER), body.get("user_desc")
        if not isinstance(user, str) or not (desc is None or isinstance(desc, str)):
            return _admin_json(400, {"error": "user and user_desc must be strings"})
        if path == "logical-sets":
            name, query, description = body.get("name"), body.get("query"), body.get("description", "")
            if not isinstance(name, str) or not name.strip() or not isinstance(description, str):
                return _admin_json(400, {"error": "give name (string), query (object), description (string)"})
            if not isinstance(query, dict | str):
                return _admin_json(400, {"error": 'give query: an object such as {"title_contains": "..."}'})
            return _admin_json(200, {"id": self.create_logical_set(name, query, description=description)})
        if path == "run-job":
            job_id, set_id = body.get("job_id"), body.get("set_id")
            if not isinstance(job_id, str) or not isinstance(set_id, str):
                return _admin_json(400, {"error": "give job_id (string) and set_id (string)"})
            instance_id = self.run_job_by_hand(job_id, set_id, user, user_desc=desc)
        else:
            set_name = body.get("set_name")
            if not isinstance(set_name, str):
                return _admin_json(400, {"error": "give set_name (string)"})
            instance_id = self.press_integration_run(set_name, user, user_desc=desc)
        with self._lock:
            instance = self._state.instances[instance_id]
            return _admin_json(200, {"instance_id": instance_id, "job_id": instance.job.id, "name": instance.name})


def _admin_json(status: int, data: Any) -> httpx.Response:
    return httpx.Response(status, json=data)
