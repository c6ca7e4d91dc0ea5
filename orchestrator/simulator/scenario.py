"""Scenario: everything that makes one simulated institution, as a frozen dataclass plus a TOML loader.

``load_scenario(path)`` reads a file like ``data/example-scenario.toml``; every error is a
``ConfigError`` that names the file and the dotted key.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ..errors import ConfigError
from .faults import Faults, update_faults
from .queries import SetQuery

JOB_KINDS = ("copy", "migration", "integration", "other")
PROFILES = ("demo", "problems", "clean")
AREAS = ("bibs", "conf")
ENVIRONMENTS = ("production", "sandbox")


@dataclass(frozen=True)
class JobDef:
    """One manual job of the catalogue. ``kind`` decides what a run does to the records."""

    id: str
    name: str
    kind: str  # copy | migration | integration | other
    category: str
    category_desc: str = ""
    description: str = ""


DEFAULT_JOBS: tuple[JobDef, ...] = (
    JobDef(
        "M1234567890000561",
        "Copy dcterms to dc:identifier",
        "copy",
        "DCAP01_NORMALIZATION",
        "DC Application profile 1 normalization",
        "Copy the handle URL from dcterms:identifier to dc:identifier",
    ),
    JobDef(
        "M2234567890000561",
        "DG Handle Migration",
        "migration",
        "REPOSITORY",
        "Repository",
        "Handles Migration Task",
    ),
    JobDef("M50700", "Handle Integration", "integration", "HANDLE_INTEGRATION", "", "Handle Integration"),
    JobDef("M44", "Export Bibliographic Records", "other", "EXPORT", "Export", "Export Bibliographic Records"),
    JobDef("M18", "Withdraw Digital Representations", "other", "DIGITAL", "Digital", "Withdraw representations"),
    JobDef(
        "M4406520730000561",
        "Suppress Bib records from discovery DCAP01",
        "other",
        "DCAP01_NORMALIZATION",
        "DC Application profile 1 normalization",
        "",
    ),
)
DEFAULT_JOB_SECONDS: Mapping[str, float] = dict.fromkeys(JOB_KINDS, 3.0)


@dataclass(frozen=True)
class ApiKey:
    """An API key the simulated institution knows. The key itself never appears in stats or reprs."""

    key: str = field(repr=False)
    name: str = ""
    areas: tuple[str, ...] = AREAS
    environment: str = "production"
    read_only: bool = False


@dataclass(frozen=True)
class RecordsSpec:
    """Records created at start, outside any set."""

    count: int
    profile: str = "demo"
    seed: int = 0


@dataclass(frozen=True)
class SetSpec:
    """A set created at start: either ``count`` fresh records of ``profile``, or the given ``mms_ids``."""

    name: str
    count: int = 0
    profile: str = "demo"
    seed: int | None = None
    mms_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class LogicalSetSpec:
    """A LOGICAL set created at start: a saved search over the records (see ``queries.SetQuery``)."""

    name: str
    query: SetQuery
    description: str = ""


@dataclass(frozen=True)
class Scenario:
    """One simulated institution: ids, jobs, limits, switches, start-up data and faults."""

    institution_code: str = "01GCL_INST"
    id_suffix: str = "4641"
    handle_prefix: str = "11084"
    primo_domain: str = "grinnell.primo.exlibrisgroup.com"
    primo_view: str = "01GCL_INST:GCL"
    timezone: str = "America/Chicago"
    environment: str = "production"
    seed: int = 0
    jobs: tuple[JobDef, ...] = DEFAULT_JOBS
    job_seconds: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_JOB_SECONDS))
    job_seconds_per_record: float = 0.0
    copy_keeps_xsi_type: bool = True
    json_single_object_lists: bool = False
    api_keys: tuple[ApiKey, ...] = ()
    per_second_limit: float = 25.0  # 0 = unlimited
    daily_quota: int = 500_000
    emit_quota_header: bool = True
    enforce_job_thresholds: bool = True
    max_running_api_jobs: int = 3
    max_runs_per_hour: int = 5
    migration_requires_control_number: bool = False
    proxy_cache_ttl: float = 0.0
    from_logical_set_seconds: float = 3.0  # how long Alma takes to fill a set made with from_logical_set
    multi_task_jobs: tuple[str, ...] = ()  # job ids or kinds whose op=run answers 402231
    refuse_overlapping_runs: bool = False  # op=run while a run of the same job is going answers 60347
    records: RecordsSpec | None = None
    sets: tuple[SetSpec, ...] = ()
    logical_sets: tuple[LogicalSetSpec, ...] = ()
    wrong_registrations: tuple[tuple[str, str], ...] = ()  # (handle, MMS ID it wrongly points at)
    faults: Faults = field(default_factory=Faults)

    def job(self, kind: str) -> JobDef | None:
        """The first catalogue job of ``kind``."""
        return next((j for j in self.jobs if j.kind == kind), None)

    def seconds_for(self, kind: str) -> float:
        """Base duration of a run of a job of ``kind``."""
        return float(self.job_seconds.get(kind, DEFAULT_JOB_SECONDS["other"]))

    def is_multi_task(self, job: JobDef) -> bool:
        """Is ``job`` one that Alma refuses to run through the API (402231)? Named by id or by kind."""
        return job.id in self.multi_task_jobs or job.kind in self.multi_task_jobs


class _Table:
    """Typed access to one TOML table; errors name the file and the dotted key."""

    def __init__(self, path: Path, data: Mapping[str, Any], prefix: str) -> None:
        self.path, self.data, self.prefix = path, data, prefix
        self.used: set[str] = set()

    def name(self, key: str) -> str:
        return f"{self.prefix}.{key}" if self.prefix else key

    def fail(self, key: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.path}: key {self.name(key)}: {problem}")

    def get(self, key: str, kind: type | tuple[type, ...], default: Any) -> Any:
        self.used.add(key)
        value = self.data.get(key, default)
        if value is default:
            return value
        bad_bool = isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,))
        if bad_bool or not isinstance(value, kind):
            raise self.fail(key, f"has the wrong type ({type(value).__name__}: {value!r})")
        return value

    def number(self, key: str, default: float, minimum: float = 0.0) -> float:
        value = self.get(key, (int, float), default)
        if value < minimum:
            raise self.fail(key, f"must be at least {minimum:g}, not {value!r}")
        return float(value)

    def integer(self, key: str, default: int, minimum: int = 0) -> int:
        value = self.get(key, int, default)
        if value < minimum:
            raise self.fail(key, f"must be at least {minimum}, not {value!r}")
        return int(value)

    def string(self, key: str, default: str | None = None, pattern: str | None = None) -> str:
        value = self.get(key, str, default)
        if value is None:
            raise self.fail(key, "is missing")
        if not value.strip():
            raise self.fail(key, "must not be empty")
        if pattern and not re.fullmatch(pattern, value):
            raise self.fail(key, f"{value!r} does not look right (expected {pattern})")
        return str(value)

    def choice(self, key: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.string(key, default)
        if value not in choices:
            raise self.fail(key, f"must be one of {', '.join(choices)}, not {value!r}")
        return value

    def tables(self, key: str) -> list[_Table]:
        self.used.add(key)
        raw = self.data.get(key, [])
        if not isinstance(raw, list) or not all(isinstance(item, dict) for item in raw):
            raise self.fail(key, "must be an array of tables ([[" + self.name(key) + "]])")
        return [_Table(self.path, item, f"{self.name(key)}[{i}]") for i, item in enumerate(raw)]

    def table(self, key: str) -> _Table | None:
        self.used.add(key)
        raw = self.data.get(key)
        if raw is None:
            return None
        if not isinstance(raw, dict):
            raise self.fail(key, "must be a table")
        return _Table(self.path, raw, self.name(key))

    def finish(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            raise self.fail(unknown[0], "unknown key")


def _jobs(root: _Table) -> tuple[JobDef, ...]:
    tables = root.tables("jobs")
    if not tables:
        return DEFAULT_JOBS
    jobs = []
    for t in tables:
        jobs.append(
            JobDef(
                id=t.string("id", pattern=r"[MSO]\d+"),
                name=t.string("name"),
                kind=t.choice("kind", "other", JOB_KINDS),
                category=t.string("category", "NORMALIZATION"),
                category_desc=t.get("category_desc", str, ""),
                description=t.get("description", str, ""),
            )
        )
        t.finish()
    ids = [j.id for j in jobs]
    if len(set(ids)) != len(ids):
        raise root.fail("jobs", "job ids must be unique")
    return tuple(jobs)


def _api_keys(root: _Table) -> tuple[ApiKey, ...]:
    keys = []
    for i, t in enumerate(root.tables("api_keys")):
        areas = t.get("areas", list, list(AREAS))
        if not all(a in AREAS for a in areas):
            raise t.fail("areas", f"must list areas among {', '.join(AREAS)}, not {areas!r}")
        keys.append(
            ApiKey(
                key=t.string("key"),
                name=t.get("name", str, f"key{i + 1}"),
                areas=tuple(areas),
                environment=t.choice("environment", "production", ENVIRONMENTS),
                read_only=t.get("read_only", bool, False),
            )
        )
        t.finish()
    return tuple(keys)


def _sets(root: _Table) -> tuple[SetSpec, ...]:
    specs = []
    for t in root.tables("sets"):
        mms_ids = t.get("mms_ids", list, [])
        if not all(isinstance(m, str) and m.isdigit() for m in mms_ids):
            raise t.fail("mms_ids", "must be a list of MMS ID strings (digits)")
        count = t.integer("count", 0)
        if not mms_ids and count < 1:
            raise t.fail("count", "give count >= 1 (fresh records) or mms_ids")
        seed = t.get("seed", int, None)
        specs.append(
            SetSpec(
                name=t.string("name"),
                count=count,
                profile=t.choice("profile", "demo", PROFILES),
                seed=seed,
                mms_ids=tuple(mms_ids),
            )
        )
        t.finish()
    return tuple(specs)


def _logical_sets(root: _Table) -> tuple[LogicalSetSpec, ...]:
    specs = []
    for t in root.tables("logical_sets"):
        criteria: dict[str, Any] = {}
        for key, kind in (("title_contains", str), ("record_format", str), ("mms_ids", list)):
            value = t.get(key, kind, None)
            if value is not None:
                criteria[key] = value
        try:
            query = SetQuery.of(criteria)
        except ValueError as exc:
            key = next((k for k in criteria if k in str(exc)), "title_contains")
            raise t.fail(key, str(exc).removeprefix("query: ")) from None
        specs.append(LogicalSetSpec(name=t.string("name"), query=query, description=t.get("description", str, "")))
        t.finish()
    return tuple(specs)


def _multi_task_jobs(root: _Table, jobs: tuple[JobDef, ...]) -> tuple[str, ...]:
    names = root.get("multi_task_jobs", list, [])
    known = {j.id for j in jobs} | set(JOB_KINDS)
    for name in names:
        if not isinstance(name, str) or name not in known:
            raise root.fail("multi_task_jobs", f"{name!r} is neither a job id of the catalogue nor a kind")
    return tuple(names)


def parse_scenario(data: Mapping[str, Any], path: Path) -> Scenario:
    """Validate a parsed TOML document into a Scenario. :raises ConfigError: naming file and key."""
    root = _Table(path, data, "")
    timezone = root.string("timezone", "America/Chicago")
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise root.fail("timezone", f"{timezone!r} is not a known time zone") from None
    job_seconds = dict(DEFAULT_JOB_SECONDS)
    seconds_table = root.table("job_seconds")
    if seconds_table is not None:
        for kind in JOB_KINDS:
            job_seconds[kind] = seconds_table.number(kind, job_seconds[kind])
        seconds_table.finish()
    records = None
    records_table = root.table("records")
    if records_table is not None:
        records = RecordsSpec(
            count=records_table.integer("count", 0),
            profile=records_table.choice("profile", "demo", PROFILES),
            seed=records_table.get("seed", int, 0),
        )
        records_table.finish()
    wrong = []
    for t in root.tables("wrong_registrations"):
        wrong.append((t.string("handle"), t.string("mms_id", pattern=r"\d+")))
        t.finish()
    faults = Faults()
    faults_table = root.table("faults")
    if faults_table is not None:
        try:
            update_faults(faults, faults_table.data, where="faults.")
        except ValueError as exc:
            raise ConfigError(f"{path}: key {exc}") from None
    jobs = _jobs(root)
    scenario = Scenario(
        institution_code=root.string("institution_code", "01GCL_INST", pattern=r"[A-Za-z0-9_]+"),
        id_suffix=root.string("id_suffix", "4641", pattern=r"\d{4}"),
        handle_prefix=root.string("handle_prefix", "11084", pattern=r"[0-9][0-9.]*"),
        primo_domain=root.string("primo_domain", "grinnell.primo.exlibrisgroup.com"),
        primo_view=root.string("primo_view", "01GCL_INST:GCL"),
        timezone=timezone,
        environment=root.choice("environment", "production", ENVIRONMENTS),
        seed=root.get("seed", int, 0),
        jobs=jobs,
        job_seconds=job_seconds,
        job_seconds_per_record=root.number("job_seconds_per_record", 0.0),
        copy_keeps_xsi_type=root.get("copy_keeps_xsi_type", bool, True),
        json_single_object_lists=root.get("json_single_object_lists", bool, False),
        api_keys=_api_keys(root),
        per_second_limit=root.number("per_second_limit", 25.0),
        daily_quota=root.integer("daily_quota", 500_000),
        emit_quota_header=root.get("emit_quota_header", bool, True),
        enforce_job_thresholds=root.get("enforce_job_thresholds", bool, True),
        max_running_api_jobs=root.integer("max_running_api_jobs", 3, minimum=1),
        max_runs_per_hour=root.integer("max_runs_per_hour", 5, minimum=1),
        migration_requires_control_number=root.get("migration_requires_control_number", bool, False),
        proxy_cache_ttl=root.number("proxy_cache_ttl", 0.0),
        from_logical_set_seconds=root.number("from_logical_set_seconds", 3.0),
        multi_task_jobs=_multi_task_jobs(root, jobs),
        refuse_overlapping_runs=root.get("refuse_overlapping_runs", bool, False),
        records=records,
        sets=_sets(root),
        logical_sets=_logical_sets(root),
        wrong_registrations=tuple(wrong),
        faults=faults,
    )
    root.used.add("faults")
    root.finish()
    return scenario


def load_scenario(path: Path) -> Scenario:
    """Read a scenario TOML file. :raises ConfigError: naming the file and, where it applies, the key."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read scenario file {path}: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse_scenario(data, path)
