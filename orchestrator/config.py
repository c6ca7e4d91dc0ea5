"""Configuration: one TOML file into frozen dataclasses, validated once at start-up.

Precedence: ``--config`` > ``HWF_CONFIG`` > ``./hwf.toml``; inside, environment overrides
(``HWF_DATABASE_URL``, ``HWF_ALMA_BASE_URL``) > file > defaults. The Alma API key is read from the
environment variable named by ``alma.api_key_env`` or from ``alma.api_key_file`` (mode 0600), never
from the TOML file itself. Every error names the file and the key.
"""

from __future__ import annotations

import os
import re
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.errors import ConfigError

DEFAULT_CONFIG_NAME = "hwf.toml"
STEP_JOB_KEYS = ("copy_identifiers", "handle_migration", "handle_integration")
_JOB_ID = re.compile(r"^[MSO]\d+$")
_INSTITUTION = re.compile(r"^[A-Za-z0-9_]+$")


@dataclass(frozen=True)
class JobSpec:
    """A configured Alma job: its id plus any parameters Alma wants beyond set_id and job_name."""

    id: str
    parameters: tuple[tuple[str, str], ...] = ()
    payload_file: Path | None = None


@dataclass(frozen=True)
class AlmaConfig:
    base_url: str
    institution_code: str
    jobs: dict[str, JobSpec]
    api_key_env: str = "HWF_ALMA_API_KEY"
    api_key_file: Path | None = None
    api_key: str | None = field(default=None, repr=False)
    poll_interval_seconds: float = 15.0
    poll_max_interval_seconds: float = 300.0
    requests_per_second: float = 10.0
    daily_call_floor: int = 5000
    timeout_seconds: float = 60.0
    format: str = "json"
    reconcile_grace_seconds: float = 120.0
    handle_integration_mode: str = "api"
    max_running_jobs: int = 3
    max_runs_per_job_hour: int = 5
    threshold_wait_seconds: float = 300.0
    max_retries: int = 6
    shared_budget: bool = True  # one request budget for every process sharing the key (store.budget)
    quota_reset: str = "00:00"  # when Alma resets the daily quota, in ``timezone`` (HH:MM)
    timezone: str = "UTC"  # the institution's time zone (an IANA name, e.g. America/Chicago)

    @property
    def api_url(self) -> str:
        return self.base_url.rstrip("/") + "/almaws/v1"


@dataclass(frozen=True)
class HandlesConfig:
    prefix: str
    resolver_url: str = "https://hdl.handle.net"
    settle_minutes: float = 15.0
    concurrency: int = 8
    requests_per_second: float = 20.0
    retries: int = 4
    timeout_seconds: float = 15.0
    recheck_days: float = 7.0  # the worker re-verifies verified sets this often (0: never)
    recheck_requests_per_second: float = 2.0  # and at this low rate


@dataclass(frozen=True)
class PrimoConfig:
    domain: str
    view: str

    def record_url(self, mms_id: str) -> str:
        """The Primo VE full-display URL a handle of this record must resolve to."""
        return f"https://{self.domain}/discovery/fulldisplay/alma{mms_id}/{self.view}"


@dataclass(frozen=True)
class Config:
    path: Path | None
    database_url: str
    alma: AlmaConfig
    handles: HandlesConfig
    primo: PrimoConfig
    lease_seconds: float = 120.0

    def require_api_key(self) -> str:
        """The Alma API key, or a ConfigError saying where hwf looked for it."""
        if self.alma.api_key:
            return self.alma.api_key
        where = f"environment variable {self.alma.api_key_env}"
        if self.alma.api_key_file is not None:
            where += f" or file {self.alma.api_key_file}"
        raise ConfigError(f"no Alma API key: set the {where} (key [alma] api_key_env in {self.path})")


def find_config_path(explicit: Path | None, environ: Mapping[str, str] | None = None) -> Path:
    """Resolve which configuration file to read: flag, then HWF_CONFIG, then ./hwf.toml."""
    env = os.environ if environ is None else environ
    if explicit is not None:
        return explicit
    if env.get("HWF_CONFIG"):
        return Path(env["HWF_CONFIG"])
    return Path(DEFAULT_CONFIG_NAME)


class _Reader:
    """Typed access to one TOML table that names the file and dotted key in every error."""

    def __init__(self, path: Path, data: Mapping[str, Any], prefix: str) -> None:
        self.path, self.data, self.prefix = path, data, prefix

    def _name(self, key: str) -> str:
        return f"{self.prefix}.{key}" if self.prefix else key

    def fail(self, key: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.path}: key {self._name(key)}: {problem}")

    def table(self, key: str, required: bool = True) -> _Reader:
        value = self.data.get(key)
        if value is None:
            if required:
                raise ConfigError(f"{self.path}: missing table [{self._name(key)}]")
            value = {}
        if not isinstance(value, dict):
            raise self.fail(key, "must be a table")
        return _Reader(self.path, value, self._name(key))

    def string(self, key: str, default: str | None = None) -> str:
        value = self.data.get(key, default)
        if value is None:
            raise self.fail(key, "is missing")
        if not isinstance(value, str) or not value.strip():
            raise self.fail(key, f"must be a non-empty string, not {value!r}")
        return value.strip()

    def optional_string(self, key: str) -> str | None:
        if self.data.get(key) is None:
            return None
        return self.string(key)

    def number(self, key: str, default: float, minimum: float = 0.0) -> float:
        value = self.data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(key, f"must be a number, not {value!r}")
        if value < minimum:
            raise self.fail(key, f"must be at least {minimum:g}, not {value!r}")
        return float(value)

    def integer(self, key: str, default: int, minimum: int = 0) -> int:
        value = self.data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(key, f"must be a whole number, not {value!r}")
        if value < minimum:
            raise self.fail(key, f"must be at least {minimum}, not {value!r}")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self.data.get(key, default)
        if not isinstance(value, bool):
            raise self.fail(key, f"must be true or false, not {value!r}")
        return value

    def choice(self, key: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.string(key, default)
        if value not in choices:
            raise self.fail(key, f"must be one of {', '.join(choices)}, not {value!r}")
        return value


def _url(reader: _Reader, key: str, default: str | None = None) -> str:
    value = reader.string(key, default).rstrip("/")
    if not re.match(r"^https?://[^/\s]+", value):
        raise reader.fail(key, f"must be an http(s) URL, not {value!r}")
    if "apikey" in value.lower():
        raise reader.fail(key, "must not carry an API key; hwf sends the key only in a header")
    return value


def _clock_time(reader: _Reader, key: str, default: str) -> str:
    value = reader.string(key, default)
    match = re.fullmatch(r"([01]?\d|2[0-3]):([0-5]\d)", value)
    if match is None:
        raise reader.fail(key, f'must be a time of day as HH:MM (like "00:00"), not {value!r}')
    return f"{int(match.group(1)):02d}:{match.group(2)}"


def _timezone(reader: _Reader, key: str, default: str) -> str:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    value = reader.string(key, default)
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise reader.fail(key, f"unknown time zone {value!r} (an IANA name like America/Chicago or UTC)") from None
    return value


def _job(jobs: _Reader, key: str) -> JobSpec:
    raw = jobs.data.get(key)
    if raw is None:
        raise jobs.fail(key, 'is missing (the Alma job id, e.g. "M1234567890000561"; see `hwf jobs`)')
    params: tuple[tuple[str, str], ...] = ()
    payload: Path | None = None
    if isinstance(raw, str):
        job_id = raw.strip()
    elif isinstance(raw, dict):
        table = jobs.table(key)
        job_id = table.string("id")
        given = table.data.get("parameters", {})
        if not isinstance(given, dict) or not all(isinstance(v, str | int) for v in given.values()):
            raise table.fail("parameters", 'must be a table of name = "value" pairs')
        params = tuple((str(k), str(v)) for k, v in given.items())
        payload_name = table.optional_string("payload_file")
        if payload_name is not None:
            payload = (jobs.path.parent / payload_name).resolve()
            if not payload.is_file():
                raise table.fail("payload_file", f"file {payload} does not exist")
    else:
        raise jobs.fail(key, "must be a job id string or a table with id = ...")
    if not _JOB_ID.match(job_id):
        raise jobs.fail(key, f"{job_id!r} is not an Alma job id (M, S or O followed by digits)")
    return JobSpec(id=job_id, parameters=params, payload_file=payload)


def _read_key_file(path: Path, config_path: Path) -> str:
    try:
        info = path.stat()
    except OSError as exc:
        raise ConfigError(f"{config_path}: key alma.api_key_file: cannot read {path}: {exc.strerror}") from None
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"{config_path}: key alma.api_key_file: {path} is readable by others "
            f"(mode {stat.S_IMODE(info.st_mode):04o}); run: chmod 600 {path}"
        )
    key = path.read_text(encoding="utf-8").strip()
    if not key:
        raise ConfigError(f"{config_path}: key alma.api_key_file: {path} is empty")
    return key


def parse_config(data: Mapping[str, Any], path: Path, environ: Mapping[str, str] | None = None) -> Config:
    """Validate a parsed TOML document into a Config. :raises ConfigError: naming file and key."""
    env = os.environ if environ is None else environ
    root = _Reader(path, data, "")
    db = root.table("database", required=False)
    database_url = env.get("HWF_DATABASE_URL") or db.string("url", "sqlite:///hwf.db")

    alma = root.table("alma")
    base_url = env.get("HWF_ALMA_BASE_URL") or _url(alma, "base_url")
    institution = alma.string("institution_code")
    if not _INSTITUTION.match(institution):
        raise alma.fail("institution_code", f"{institution!r} is not an Alma institution code (like 01GCL_INST)")
    jobs_table = alma.table("jobs")
    jobs = {key: _job(jobs_table, key) for key in STEP_JOB_KEYS}
    mode = jobs_table.choice("handle_integration_mode", "api", ("api", "manual"))

    api_key_env = alma.string("api_key_env", "HWF_ALMA_API_KEY")
    if "api_key" in alma.data:
        raise alma.fail("api_key", "the key must not be written in the file; use api_key_env or api_key_file")
    key_file_name = alma.optional_string("api_key_file")
    key_file = (path.parent / key_file_name).expanduser() if key_file_name else None
    api_key = env.get(api_key_env) or None
    if api_key is None and key_file is not None:
        api_key = _read_key_file(key_file, path)

    handles = root.table("handles")
    prefix = handles.string("prefix")
    if not re.match(r"^[0-9][0-9.]*$", prefix):
        raise handles.fail("prefix", f"{prefix!r} is not a handle prefix (digits, like 11084)")
    primo = root.table("primo")
    workflow = root.table("workflow", required=False)
    return Config(
        path=path,
        database_url=database_url,
        alma=AlmaConfig(
            base_url=base_url,
            institution_code=institution,
            jobs=jobs,
            api_key_env=api_key_env,
            api_key_file=key_file,
            api_key=api_key,
            poll_interval_seconds=alma.number("poll_interval_seconds", 15.0, minimum=0.01),
            poll_max_interval_seconds=alma.number("poll_max_interval_seconds", 300.0, minimum=0.01),
            requests_per_second=alma.number("requests_per_second", 10.0, minimum=0.1),
            daily_call_floor=alma.integer("daily_call_floor", 5000),
            timeout_seconds=alma.number("timeout_seconds", 60.0, minimum=0.1),
            format=alma.choice("format", "json", ("json", "xml")),
            reconcile_grace_seconds=alma.number("reconcile_grace_seconds", 120.0),
            handle_integration_mode=mode,
            max_running_jobs=alma.integer("max_running_jobs", 3, minimum=1),
            max_runs_per_job_hour=alma.integer("max_runs_per_job_hour", 5, minimum=1),
            threshold_wait_seconds=alma.number("threshold_wait_seconds", 300.0, minimum=0.01),
            max_retries=alma.integer("max_retries", 6),
            shared_budget=alma.boolean("shared_budget", True),
            quota_reset=_clock_time(alma, "quota_reset", "00:00"),
            timezone=_timezone(alma, "timezone", "UTC"),
        ),
        handles=HandlesConfig(
            prefix=prefix,
            resolver_url=_url(handles, "resolver_url", "https://hdl.handle.net"),
            settle_minutes=handles.number("settle_minutes", 15.0),
            concurrency=handles.integer("concurrency", 8, minimum=1),
            requests_per_second=handles.number("requests_per_second", 20.0, minimum=0.1),
            retries=handles.integer("retries", 4),
            timeout_seconds=handles.number("timeout_seconds", 15.0, minimum=0.1),
            recheck_days=handles.number("recheck_days", 7.0),
            recheck_requests_per_second=handles.number("recheck_requests_per_second", 2.0, minimum=0.1),
        ),
        primo=PrimoConfig(domain=primo.string("domain"), view=primo.string("view")),
        lease_seconds=workflow.number("lease_seconds", 120.0, minimum=5.0),
    )


def load_config(path: Path, environ: Mapping[str, str] | None = None) -> Config:
    """Read and validate a TOML configuration file. :raises ConfigError: naming file and key."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            f"no configuration file {path}: pass --config FILE, set HWF_CONFIG, or run `hwf init`"
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read configuration file {path}: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse_config(data, path, environ)
