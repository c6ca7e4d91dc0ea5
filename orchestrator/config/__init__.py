"""Configuration: one TOML file into frozen dataclasses, validated once at start-up.

Precedence: ``--config`` > ``HWF_CONFIG`` > ``./hwf.toml``; inside, environment overrides
(``HWF_DATABASE_URL``, ``HWF_ALMA_BASE_URL``) > file > defaults. The Alma API key is read from the
environment variable named by ``alma.api_key_env`` or from ``alma.api_key_file`` (mode 0600), never
from the TOML file itself. Every error names the file and the key.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.config.keyfile import KEY_FILE_MAX_BYTES, read_key_file
from orchestrator.config.reader import (
    Reader,
    clock_time,
    is_loopback,
    is_loopback_host,
    plain_http_elsewhere,
    secure,
    url_value,
    without_userinfo,
)
from orchestrator.domain.steps import JOB_KEYS
from orchestrator.errors import ConfigError

__all__ = [
    "DEFAULT_CONFIG_NAME",
    "KEY_FILE_MAX_BYTES",
    "STEP_JOB_KEYS",
    "AlmaConfig",
    "Config",
    "HandlesConfig",
    "JobSpec",
    "LogConfig",
    "NotifyConfig",
    "PrimoConfig",
    "default_log_file",
    "find_config_path",
    "is_loopback",
    "is_loopback_host",
    "load_apprise",
    "load_config",
    "parse_config",
    "plain_http_elsewhere",
    "without_userinfo",
]

DEFAULT_CONFIG_NAME = "hwf.toml"
STEP_JOB_KEYS = JOB_KEYS  # the keys under [alma.jobs], in the workflow's order
_JOB_ID = re.compile(r"^[MSO]\d+$")
_INSTITUTION = re.compile(r"^[A-Za-z0-9_]+$")


@dataclass(frozen=True)
class JobSpec:
    """A configured Alma job: its id plus any parameters Alma wants beyond set_id and job_name."""

    id: str
    parameters: tuple[tuple[str, str], ...] = ()
    payload_file: Path | None = None
    mode: str = "api"  # "api": hwf runs the job (op=run); "manual": a person runs it in Alma and hwf binds the run

    @property
    def manual(self) -> bool:
        return self.mode == "manual"


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
    max_reply_mb: float = 20.0
    deadline_seconds: float = 300.0
    format: str = "json"
    reconcile_grace_seconds: float = 120.0
    handle_integration_mode: str = "manual"
    integration_batch_max_records: int = 10_000  # records in one integration batch (one click of Run)
    integration_batch_wait_minutes: float = 60.0  # close a batch when no set can reach migrated this soon
    snapshot_wait_seconds: float = 600.0  # how long `hwf add` waits for Alma to populate a logical set's snapshot
    max_running_jobs: int = 3
    max_runs_per_job_hour: int = 5
    threshold_wait_seconds: float = 300.0
    max_retries: int = 6
    shared_budget: bool = True  # one request budget for every process sharing the key (store.budget)
    quota_reset: str = "00:00"  # when Alma resets the daily quota, in ``timezone`` (HH:MM)
    timezone: str = "UTC"  # the institution's IANA time zone, for evidence and display

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
    max_reply_kb: float = 1024.0
    deadline_seconds: float = 60.0
    public_cache_check: bool = True
    authoritative: bool = False  # ask the primary server (auth=true) for every handle, not the public proxy first
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
class LogConfig:
    """The structured log (JSON lines): where, and how it rotates. ``file`` None means no log file."""

    file: Path | None = None
    max_bytes: int = 10_000_000
    backups: int = 5


@dataclass(frozen=True)
class NotifyConfig:
    """Apprise URLs and which events are sent to them. The URLs may carry secrets: never print them."""

    urls: tuple[str, ...] = field(default=(), repr=False)
    on_attention: bool = True
    on_quota: bool = True
    on_verified: bool = False
    on_done: bool = True
    on_batch: bool = True  # an integration batch waits for a person to press Run
    public_url: str | None = None  # [serve] public_url: where people open the dashboard; messages link its pages


@dataclass(frozen=True)
class Config:
    path: Path | None
    database_url: str
    alma: AlmaConfig
    handles: HandlesConfig
    primo: PrimoConfig
    lease_seconds: float = 120.0
    log: LogConfig = field(default_factory=LogConfig)
    notify: NotifyConfig = field(default_factory=NotifyConfig)
    operator: str | None = None  # [operator] name; $HWF_OPERATOR wins; else the OS user (service.context)
    display_utc: bool = False  # [display] utc: times on screen in UTC instead of local time

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


def _job(jobs: Reader, key: str) -> JobSpec:
    raw = jobs.get(key)
    if raw is None:
        raise jobs.fail(key, 'is missing (the Alma job id, e.g. "M1234567890000561"; see `hwf jobs`)')
    params: tuple[tuple[str, str], ...] = ()
    payload: Path | None = None
    mode = "api"
    if isinstance(raw, str):
        job_id = raw.strip()
    elif isinstance(raw, dict):
        table = jobs.table(key)
        job_id = table.string("id")
        given = table.get("parameters", {})
        if not isinstance(given, dict) or not all(isinstance(v, str | int) for v in given.values()):
            raise table.fail("parameters", 'must be a table of name = "value" pairs')
        params = tuple((str(k), str(v)) for k, v in given.items())
        payload_name = table.optional_string("payload_file")
        if payload_name is not None:
            payload = (jobs.path.parent / payload_name).resolve()
            if not payload.is_file():
                raise table.fail("payload_file", f"file {payload} does not exist")
        mode = table.choice("mode", "api", ("api", "manual"))
    else:
        raise jobs.fail(key, "must be a job id string or a table with id = ...")
    if not _JOB_ID.match(job_id):
        raise jobs.fail(key, f"{job_id!r} is not an Alma job id (M, S or O followed by digits)")
    return JobSpec(id=job_id, parameters=params, payload_file=payload, mode=mode)


def _integration_mode(jobs_table: Reader, jobs: dict[str, JobSpec]) -> str:
    """``handle_integration_mode`` ("manual" unless said otherwise: no public client runs the handle integration
    profile by API), or the same said as ``[alma.jobs.handle_integration] mode``; the two must agree."""
    given = jobs_table.get("handle_integration_mode")
    table = jobs_table.data.get("handle_integration")
    in_table = table.get("mode") if isinstance(table, dict) else None
    mode = jobs_table.choice("handle_integration_mode", str(in_table or "manual"), ("api", "manual"))
    if given is not None and in_table is not None and given != in_table:
        raise jobs_table.fail(
            "handle_integration_mode", f"is {given!r} but [alma.jobs.handle_integration] mode is {in_table!r}"
        )
    if "handle_integration" in jobs:
        jobs["handle_integration"] = dataclasses.replace(jobs["handle_integration"], mode=mode)
    return mode


def parse_config(data: Mapping[str, Any], path: Path, environ: Mapping[str, str] | None = None) -> Config:
    """Validate a parsed TOML document into a Config. :raises ConfigError: naming file and key."""
    env = os.environ if environ is None else environ
    root = Reader(path, data, "")
    db = root.table("database", required=False)
    database_url = db.string("url", "sqlite:///hwf.db")
    database_url = env.get("HWF_DATABASE_URL") or database_url

    allow_http = root.boolean("allow_insecure_http", False)
    alma = root.table("alma")
    base_url = url_value(alma, "base_url", value=env.get("HWF_ALMA_BASE_URL") or None)
    alma.seen.add("base_url")
    secure(alma, "base_url", base_url, allow_http, "the Alma API key")
    institution = alma.string("institution_code")
    if not _INSTITUTION.match(institution):
        raise alma.fail("institution_code", f"{institution!r} is not an Alma institution code (like 01GCL_INST)")
    jobs_table = alma.table("jobs")
    jobs = {key: _job(jobs_table, key) for key in STEP_JOB_KEYS}
    mode = _integration_mode(jobs_table, jobs)

    api_key_env = alma.string("api_key_env", "HWF_ALMA_API_KEY")
    if "api_key" in alma.data:
        alma.seen.add("api_key")
        raise alma.fail("api_key", "the key must not be written in the file; use api_key_env or api_key_file")
    key_file_name = alma.optional_string("api_key_file")
    key_file = (path.parent / key_file_name).expanduser() if key_file_name else None
    api_key = env.get(api_key_env) or None
    if api_key is None and key_file is not None:
        api_key = read_key_file(key_file, path)

    handles = root.table("handles")
    prefix = handles.string("prefix")
    if not re.match(r"^[0-9][0-9.]*$", prefix):
        raise handles.fail("prefix", f"{prefix!r} is not a handle prefix (digits, like 11084)")
    primo = root.table("primo")
    workflow = root.table("workflow", required=False)
    operator = root.table("operator", required=False).optional_string("name")  # read even when $HWF_OPERATOR wins
    config = Config(
        path=path,
        database_url=database_url,
        alma=_alma_config(alma, jobs_table, base_url, institution, jobs, mode, api_key_env, key_file, api_key),
        handles=_handles_config(handles, prefix),
        primo=PrimoConfig(domain=primo.string("domain"), view=primo.string("view")),
        lease_seconds=workflow.number("lease_seconds", 120.0, minimum=5.0),
        log=_log(root.table("log", required=False), database_url, path),
        notify=_notify(root.table("notify", required=False), root.table("serve", required=False)),
        operator=(env.get("HWF_OPERATOR") or "").strip() or operator,
        display_utc=root.table("display", required=False).boolean("utc", False),
    )
    secure(handles, "resolver_url", config.handles.resolver_url, allow_http, "what the proxy answers (unchecked)")
    root.check_unknown()
    return config


def _alma_config(
    alma: Reader,
    jobs_table: Reader,
    base_url: str,
    institution: str,
    jobs: dict[str, JobSpec],
    mode: str,
    api_key_env: str,
    key_file: Path | None,
    api_key: str | None,
) -> AlmaConfig:
    return AlmaConfig(
        base_url=base_url,
        institution_code=institution,
        jobs=jobs,
        api_key_env=api_key_env,
        api_key_file=key_file,
        api_key=api_key,
        poll_interval_seconds=alma.number("poll_interval_seconds", 15.0, minimum=0.01, maximum=3600.0),
        poll_max_interval_seconds=alma.number("poll_max_interval_seconds", 300.0, minimum=0.01),
        requests_per_second=alma.number("requests_per_second", 10.0, minimum=0.1, maximum=1e6),
        daily_call_floor=alma.integer("daily_call_floor", 5000, maximum=10_000_000),
        timeout_seconds=alma.number("timeout_seconds", 60.0, minimum=0.1, maximum=3600.0),
        max_reply_mb=alma.number("max_reply_mb", 20.0, minimum=0.01, maximum=10_000.0),
        deadline_seconds=alma.number("deadline_seconds", 300.0, minimum=0.1, maximum=86_400.0),
        format=alma.choice("format", "json", ("json", "xml")),
        reconcile_grace_seconds=alma.number("reconcile_grace_seconds", 120.0),
        handle_integration_mode=mode,
        integration_batch_max_records=jobs_table.integer(
            "integration_batch_max_records", 10_000, minimum=1, maximum=10_000_000
        ),
        integration_batch_wait_minutes=jobs_table.number("integration_batch_wait_minutes", 60.0, maximum=10_080.0),
        snapshot_wait_seconds=alma.number("snapshot_wait_seconds", 600.0, minimum=1.0, maximum=86_400.0),
        max_running_jobs=alma.integer("max_running_jobs", 3, minimum=1, maximum=100),
        max_runs_per_job_hour=alma.integer("max_runs_per_job_hour", 5, minimum=1),
        threshold_wait_seconds=alma.number("threshold_wait_seconds", 300.0, minimum=0.01),
        max_retries=alma.integer("max_retries", 6, maximum=100),
        timezone=_timezone(alma),
        shared_budget=alma.boolean("shared_budget", True),
        quota_reset=clock_time(alma, "quota_reset", "00:00"),
    )


def _handles_config(handles: Reader, prefix: str) -> HandlesConfig:
    return HandlesConfig(
        prefix=prefix,
        resolver_url=url_value(handles, "resolver_url", "https://hdl.handle.net"),
        settle_minutes=handles.number("settle_minutes", 15.0, maximum=10080.0),
        concurrency=handles.integer("concurrency", 8, minimum=1, maximum=256),
        requests_per_second=handles.number("requests_per_second", 20.0, minimum=0.1, maximum=1e6),
        retries=handles.integer("retries", 4, maximum=100),
        timeout_seconds=handles.number("timeout_seconds", 15.0, minimum=0.1, maximum=3600.0),
        max_reply_kb=handles.number("max_reply_kb", 1024.0, minimum=1.0, maximum=1_000_000.0),
        deadline_seconds=handles.number("deadline_seconds", 60.0, minimum=0.1, maximum=86_400.0),
        public_cache_check=handles.choice("public_cache_check", "on", ("on", "off")) == "on",
        authoritative=handles.boolean("authoritative", False),
        recheck_days=handles.number("recheck_days", 7.0, maximum=3650.0),
        recheck_requests_per_second=handles.number("recheck_requests_per_second", 2.0, minimum=0.1, maximum=1000.0),
    )


def _timezone(alma: Reader) -> str:
    """``[alma] timezone``: an IANA zone name that zoneinfo knows (``America/Chicago``)."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    name = alma.string("timezone", "UTC")
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise alma.fail("timezone", f"unknown time zone {name!r} (an IANA name like America/Chicago)") from None
    return name


def default_log_file(database_url: str) -> Path:
    """Beside the database for SQLite on disk (``hwf.db`` -> ``hwf.log``), else the user log directory."""
    match = re.match(r"^sqlite(?:\+\w+)?:///(?P<path>[^?]+)", database_url)
    if match and match["path"] not in (":memory:", ""):
        return Path(match["path"]).expanduser().with_suffix(".log")
    import platformdirs

    return Path(platformdirs.user_log_dir("hwf", appauthor=False)) / "hwf.log"


def _log(log: Reader, database_url: str, path: Path) -> LogConfig:
    enabled = log.get("enabled", True)
    if not isinstance(enabled, bool):
        raise log.fail("enabled", f"must be true or false, not {enabled!r}")
    name = log.optional_string("file")
    file = (path.parent / name).expanduser() if name else default_log_file(database_url)
    return LogConfig(
        file=file if enabled else None,
        max_bytes=log.integer("max_bytes", 10_000_000, minimum=10_000, maximum=10_000_000_000),
        backups=log.integer("backups", 5, maximum=1000),
    )


def _flag(reader: Reader, key: str, default: bool) -> bool:
    value = reader.get(key, default)
    if not isinstance(value, bool):
        raise reader.fail(key, f"must be true or false, not {value!r}")
    return value


def load_apprise() -> Any:
    """The apprise module, imported only when notifications are configured (it is slow to import, and some
    versions import the deprecated ``imghdr``: that warning is not the operator's business)."""
    import importlib
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import apprise

        for name in ("imghdr",):  # imported lazily by apprise's plugins; gone in Python 3.13
            try:
                importlib.import_module(name)
            except ImportError:
                pass
    return apprise


def _notify(notify: Reader, serve: Reader) -> NotifyConfig:
    urls = notify.get("urls", [])
    if isinstance(urls, str):
        urls = [urls]
    if not isinstance(urls, list) or not all(isinstance(u, str) and u.strip() for u in urls):
        raise notify.fail("urls", "must be a list of apprise URLs (strings)")
    if urls:
        apprise = load_apprise()
        for i, url in enumerate(urls):
            if not apprise.Apprise().add(url.strip()):
                scheme = url.strip().split(":", 1)[0]
                raise notify.fail(f"urls[{i}]", f"not a usable apprise URL (scheme {scheme!r}); see apprise's docs")
    return NotifyConfig(
        urls=tuple(u.strip() for u in urls),
        on_attention=_flag(notify, "on_attention", True),
        on_quota=_flag(notify, "on_quota", True),
        on_verified=_flag(notify, "on_verified", False),
        on_done=_flag(notify, "on_done", True),
        on_batch=_flag(notify, "on_batch", True),
        public_url=url_value(serve, "public_url") if "public_url" in serve.data else None,
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
