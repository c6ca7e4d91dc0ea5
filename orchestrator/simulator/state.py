"""The simulator's mutable state: records, sets, job instances, the handle server, counters and limits.

Everything here is guarded by the one lock the ``Simulator`` holds; nothing in this module locks.
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from .faults import Faults
from .queries import SetQuery
from .records import RecordFactory, SimRecord
from .scenario import JobDef, Scenario

EVENT_ALREADY = "Record {mms} was skipped. Reason: BIB record MMS ID {mms} already has a handle identifier {handle}"
EVENT_NO_HANDLE = "Record {mms} was skipped. Reason: BIB record MMS ID {mms} does not have a handle identifier"


@dataclass
class SimSet:
    """A set. Itemized: ``members`` keeps insertion order, ``index`` makes membership tests cheap.

    Logical (``query`` set): ``members`` stays empty; read the members through ``SimState.members_of``,
    which evaluates the query against the records as they are now.

    An itemized set made by ``from_logical_set`` is filled over time: ``filling`` holds the logical
    set's members as they were at creation, ``filled`` how many of them have been added so far.
    """

    id: str
    name: str
    description: str
    content: str
    private: bool
    created: datetime
    members: list[str] = field(default_factory=list)
    index: set[str] = field(default_factory=set)
    query: SetQuery | None = None
    from_logical_set: str | None = None
    filling: tuple[str, ...] = ()
    filled: int = 0
    fill_seconds: float = 0.0

    @property
    def logical(self) -> bool:
        return self.query is not None

    def add(self, mms_ids: list[str]) -> None:
        for mms in mms_ids:
            if mms not in self.index:
                self.index.add(mms)
                self.members.append(mms)

    def remove(self, mms_ids: list[str]) -> None:
        gone = set(mms_ids)
        self.index -= gone
        self.members = [m for m in self.members if m not in gone]


@dataclass
class Instance:
    """One job run. Its status is a function of the clock; effects are applied once, at ``end``."""

    id: str
    external_id: str
    job: JobDef
    set_id: str
    job_name: str | None
    name: str
    parameters: list[tuple[str, str]]
    submitted: datetime
    seconds: float
    members: tuple[str, ...]
    origin: str = "api"  # api | run_a_job (Admin > Run a Job) | integration_profile (the profile's Run)
    submitted_by: tuple[str, str] = ("exl_api", "Ex Libris, API")  # (primary id, desc)
    applied: bool = False
    final_status: str | None = None
    counters: list[tuple[str, str, int]] = field(default_factory=list)
    alerts: list[tuple[str, str]] = field(default_factory=list)
    events: list[str] = field(default_factory=list)

    @property
    def end(self) -> datetime:
        return self.submitted + timedelta(seconds=self.seconds)

    def _at(self, share: float) -> datetime:
        return self.submitted + timedelta(seconds=self.seconds * share)

    def phase(self, now: datetime) -> tuple[str, float, datetime | None, datetime | None, datetime]:
        """(status, progress, start_time, end_time, status changed at) as seen at ``now``."""
        start = self._at(0.1)
        if self.applied and self.final_status is not None:
            return self.final_status, 100.0, start, self.end, self.end
        if now < start:
            return "QUEUED", 0.0, None, None, self.submitted
        if now < self._at(0.2):
            return "INITIALIZING", 0.0, start, None, start
        if now < self._at(0.9):
            share = (now - self._at(0.2)) / (self._at(0.9) - self._at(0.2)) if self.seconds else 1.0
            return "RUNNING", round(100 * share, 1), start, None, self._at(0.2)
        return "FINALIZING", 100.0, start, None, self._at(0.9)


@dataclass
class HandleEntry:
    """A handle at the handle server: its URL value (None = no URL value) and when it was written."""

    url: str | None
    timestamp: datetime


class TokenBucket:
    """``rate`` tokens a second, burst ``rate``; time from an injectable monotonic clock."""

    def __init__(self, rate: float, ticker: Callable[[], float]) -> None:
        self.rate = rate
        self.ticker = ticker
        self.tokens = max(rate, 1.0)
        self.stamp = ticker()

    def take(self) -> bool:
        """Spend a token if one is there."""
        if self.rate <= 0:
            return True
        now = self.ticker()
        self.tokens = min(max(self.rate, 1.0), self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class PeakWindow:
    """The most requests seen in any one-second window."""

    def __init__(self) -> None:
        self.times: deque[float] = deque()
        self.peak = 0

    def hit(self, now: float) -> None:
        self.times.append(now)
        while self.times and now - self.times[0] >= 1.0:
            self.times.popleft()
        self.peak = max(self.peak, len(self.times))


class SimState:
    """All simulated data. The Simulator holds the lock; handlers get this object."""

    def __init__(self, scenario: Scenario, clock: Callable[[], datetime], ticker: Callable[[], float]) -> None:
        self.scenario = scenario
        self.clock = clock
        self.ticker = ticker
        self.zone = ZoneInfo(scenario.timezone)
        self.rng = random.Random(scenario.seed)  # fault decisions only
        self.id_rng = random.Random(f"ids-{scenario.seed}")  # ids and tracking ids, kept apart from faults
        self.faults = Faults(**scenario.faults.to_dict())
        self.factory = RecordFactory(scenario.institution_code, scenario.id_suffix, scenario.handle_prefix)
        self.next_record_index = 0
        self.records: dict[str, SimRecord] = {}
        self.sets: dict[str, SimSet] = {}
        self.jobs: dict[str, JobDef] = {job.id: job for job in scenario.jobs}
        self.instances: dict[str, Instance] = {}
        self.instance_order: list[Instance] = []
        self.pending: list[tuple[datetime, int, str]] = []  # heap of (end, seq, instance id)
        self.handles: dict[str, HandleEntry] = {}
        self.wrong: dict[str, str] = dict(scenario.wrong_registrations)
        self.proxy_cache: dict[str, tuple[HandleEntry | None, float]] = {}
        self.id_seq = 759346656
        self.mint_seq = 0
        self.buckets: dict[str, TokenBucket] = {}
        self.proxy_bucket = TokenBucket(0.0, ticker)
        self.peaks: dict[str, PeakWindow] = {}
        self.proxy_peak = PeakWindow()
        self.requests: dict[str, int] = {}
        self.sent_429: dict[str, int] = {"per_second": 0, "daily": 0, "burst": 0, "proxy": 0}
        self.sent_503 = 0  # answers of faults.unavailable_paths (503 with Retry-After)
        self.daily_remaining = scenario.daily_quota
        self.daily_day: date | None = None

    def now(self) -> datetime:
        """The clock, as an aware UTC datetime."""
        moment = self.clock()
        if moment.tzinfo is None:
            raise ValueError("the simulator clock must return an aware datetime")
        return moment.astimezone(UTC)

    def new_id(self) -> str:
        """A fresh set/instance id shaped like Alma's: 9 digits, ``000``, the institution suffix."""
        self.id_seq += 7 + self.id_rng.randrange(40)
        return f"{self.id_seq:09d}000{self.scenario.id_suffix}"

    def tracking_id(self) -> str:
        """An Alma-style trackingId."""
        now = self.now()
        letters = "".join(self.id_rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") for _ in range(5))
        return f"E01-{now:%d%m%H%M%S}-{letters}-AWAE{self.id_rng.randrange(10**9)}"

    def count(self, kind: str) -> None:
        self.requests[kind] = self.requests.get(kind, 0) + 1

    def chance(self, rate: float) -> bool:
        """True with probability ``rate`` (no draw at all when the rate is 0, to keep runs reproducible)."""
        return rate > 0 and self.rng.random() < rate

    def add_records(self, records: list[SimRecord]) -> list[str]:
        for record in records:
            self.records[record.mms_id] = record
        return [r.mms_id for r in records]

    def generate(self, count: int, profile: str, seed: int, title_prefix: str = "") -> list[str]:
        """Create ``count`` new records of ``profile``; returns their MMS IDs."""
        records = self.factory.generate(self.next_record_index, count, profile, seed, title_prefix)
        self.next_record_index += count
        return self.add_records(records)

    def create_set(self, name: str, mms_ids: list[str], content: str = "BIB_MMS", description: str = "") -> SimSet:
        sim_set = SimSet(self.new_id(), name, description, content, False, self.now())
        sim_set.add(mms_ids)
        self.sets[sim_set.id] = sim_set
        return sim_set

    def create_logical_set(self, name: str, query: SetQuery, content: str = "BIB_MMS", description: str = "") -> SimSet:
        sim_set = SimSet(self.new_id(), name, description, content, False, self.now(), query=query)
        self.sets[sim_set.id] = sim_set
        return sim_set

    def set_named(self, name: str) -> SimSet | None:
        return next((s for s in self.sets.values() if s.name == name), None)

    def members_of(self, sim_set: SimSet) -> list[str]:
        """The set's members now: a logical set's query evaluated, a filling set brought up to date.

        The list of an itemized set is the live one; do not change it.
        """
        if sim_set.query is not None:
            return sim_set.query.select(self.records.values())
        if sim_set.filled < len(sim_set.filling):
            self._fill(sim_set)
        return sim_set.members

    def _fill(self, sim_set: SimSet) -> None:
        """Add the part of ``filling`` that Alma's population has reached by now (linear in time)."""
        total = len(sim_set.filling)
        elapsed = (self.now() - sim_set.created).total_seconds()
        if sim_set.fill_seconds <= 0 or elapsed >= sim_set.fill_seconds:
            reached = total
        else:
            reached = int(total * max(elapsed, 0.0) / sim_set.fill_seconds)
        if reached > sim_set.filled:
            sim_set.add([m for m in sim_set.filling[sim_set.filled : reached] if m in self.records])
            sim_set.filled = reached
        if sim_set.filled >= total:
            sim_set.filling, sim_set.filled = (), 0

    def primo_url(self, mms_id: str) -> str:
        """The Primo VE full-display URL of a record."""
        return f"https://{self.scenario.primo_domain}/discovery/fulldisplay/alma{mms_id}/{self.scenario.primo_view}"

    def register(self, handle: str, mms_id: str, at: datetime | None = None) -> None:
        """Write handle -> Primo URL at the handle server, honouring injected wrong registrations."""
        url = self.primo_url(self.wrong.get(handle, mms_id))
        self.handles[handle] = HandleEntry(url, at or self.now())

    def mint(self) -> str:
        """A new Alma control-number handle: prefix/10-digit epoch-like sequence, never reused."""
        if not self.mint_seq:
            self.mint_seq = int(self.now().timestamp())
        while True:
            self.mint_seq += 3
            handle = f"{self.scenario.handle_prefix}/{self.mint_seq}"
            if handle not in self.handles:
                return handle

    def key_bucket(self, label: str) -> TokenBucket:
        if label not in self.buckets:
            self.buckets[label] = TokenBucket(self.scenario.per_second_limit, self.ticker)
        return self.buckets[label]

    def roll_daily(self) -> None:
        """Apply a pending ``daily_remaining`` fault; refill the counter at each new UTC day."""
        if self.faults.daily_remaining is not None:
            self.daily_remaining = self.faults.daily_remaining
            self.faults.daily_remaining = None
            self.daily_day = self.now().date()
            return
        today = self.now().date()
        if self.daily_day is None:
            self.daily_day = today
        elif today != self.daily_day:
            self.daily_day = today
            self.daily_remaining = self.scenario.daily_quota


def real_ticker() -> float:
    """The default monotonic clock for rate limits."""
    return time.monotonic()
