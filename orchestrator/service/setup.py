"""The first hour against a real Alma: regional gateways, ``hwf init`` (a commented ``hwf.toml``, with
the job ids looked up in Alma by name), ``hwf jobs`` (the institution's manual jobs) and ``hwf ping``
(read-only checks that everything a run needs is in place, with Alma's errors in plain words).

Only read-only Alma calls are made here: ``GET /conf/jobs``, ``GET /conf/jobs/{id}``, ``GET /bibs``,
and one ``GET`` at the handle resolver.
"""

from __future__ import annotations

import json
import os
import re
import time
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from orchestrator import __version__
from orchestrator.alma.client import AlmaClient
from orchestrator.alma.types import JobInfo
from orchestrator.alma.wire import as_list, local_name, sniff, text_of
from orchestrator.config import STEP_JOB_KEYS, Config, parse_config
from orchestrator.errors import (
    AlmaError,
    BadInputError,
    ConfigError,
    DailyQuotaError,
    HwfError,
)
from orchestrator.xmlsafe import parse_xml

REGIONS: dict[str, str] = {
    **{r: f"https://api-{r}.hosted.exlibrisgroup.com" for r in ("na", "eu", "ap", "aps", "ca")},
    "cn": "https://api-cn.hosted.exlibrisgroup.com.cn",
}
DEFAULT_REGION = "na"
DEFAULT_KEY_ENV = "HWF_ALMA_API_KEY"

# Names are institution-defined; these are the ones the seed case's Alma showed (reference §4.1).
COPY_JOB_NAMES = ("copy dcterms to dc:identifier", "copy dcterm to dc:identifier", "copy dcterm to dcidentifier")
MIGRATION_NAME_PART = "handle migration"
INTEGRATION_CATEGORY = "HANDLE_INTEGRATION"
INTEGRATION_NAME = "handle integration"
ROLE_OPTIONS = {
    "copy_identifiers": "--copy-job",
    "handle_migration": "--migration-job",
    "handle_integration": "--integration-job",
}
ROLE_TITLES = {
    "copy_identifiers": '"Copy dcterms to dc:identifier"',
    "handle_migration": 'the "… Handle Migration" job',
    "handle_integration": "the Handle integration profile's job",
}

# Placeholders `hwf init` writes when it cannot know a value; the file still loads, `hwf ping` flags them.
PLACEHOLDER_JOB_ID = "M0"
PLACEHOLDER_INSTITUTION = "YOUR_INST"
PLACEHOLDER_PREFIX = "0"
PLACEHOLDER_PRIMO_DOMAIN = "your-institution.primo.exlibrisgroup.com"
PLACEHOLDER_VIEW = "YOUR_VIEW"

_INSTITUTION = re.compile(r"^[A-Za-z0-9_]+$")
_JOB_ID = re.compile(r"^[MSO]\d+$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PREFIX = re.compile(r"^[0-9][0-9.]*$")
# Any MMS ID serves to learn whether the key may use the Bibs API: Alma answers an unknown one with an
# empty list (or a 400 about the id), and a key without the area with 400 UNAUTHORIZED.
PROBE_MMS_ID = "9900000000000000001"
UNAUTHORIZED = "UNAUTHORIZED"
_ENVIRONMENT_NOTE = (
    "a key for the sandbox used against production (or a production key against the sandbox) gets this same "
    "400 UNAUTHORIZED"
)


# ---------------------------------------------------------------------------------------------
# Validation of what `hwf init` is told


def region_base_url(region: str) -> str:
    """The API gateway of an Alma region. :raises BadInputError: not one of na, eu, ap, aps, ca, cn."""
    value = region.strip().lower()
    if value not in REGIONS:
        raise BadInputError(f"unknown region {region.strip()!r}: one of {', '.join(REGIONS)}")
    return REGIONS[value]


def check_institution(code: str) -> str:
    """An Alma institution code (letters, digits, underscores). :raises BadInputError:"""
    value = code.strip()
    if not _INSTITUTION.match(value):
        raise BadInputError(
            f"{code!r} is not an Alma institution code: letters, digits and underscores only, "
            "no spaces (like 01GCL_INST)"
        )
    return value


def check_job_id(value: str, option: str) -> str:
    """A job id as Alma writes it (M, S or O and digits). :raises BadInputError: naming the option."""
    job_id = value.strip()
    if not _JOB_ID.match(job_id):
        raise BadInputError(f"{option} {value!r} is not an Alma job id (like M4406520730000561; see `hwf jobs`)")
    return job_id


def _check_env_name(name: str) -> str:
    if not _ENV_NAME.match(name):
        raise BadInputError(f"--key-env {name!r} is not an environment variable name")
    return name


def _check_text(value: str, option: str) -> str:
    value = value.strip()
    if not value or any(c in value for c in '"\\\n\r\t '):
        raise BadInputError(f"{option} {value!r} must be one word without quotes or backslashes")
    return value


def make_client(
    base_url: str,
    api_key: str,
    *,
    transport: httpx.BaseTransport | None = None,
    timeout: float = 30.0,
    sleep: Callable[[float], None] = time.sleep,
) -> AlmaClient:
    """An Alma client for set-up and checks: one retry (an unreachable gateway is said at once), no daily
    floor (``ping`` reports the quota instead of stopping at it)."""
    return AlmaClient(
        base_url,
        api_key,
        transport=transport,
        timeout=timeout,
        sleep=sleep,
        max_retries=1,
        daily_call_floor=0,
        user_agent=f"hwf/{__version__} (setup)",
    )


# ---------------------------------------------------------------------------------------------
# Jobs: which of the institution's manual jobs play which role


def roles_of(job: JobInfo) -> tuple[str, ...]:
    """The workflow roles a job's name or category suggests (usually none, sometimes one)."""
    name = " ".join(job.name.split()).casefold()
    roles = []
    if name in COPY_JOB_NAMES:
        roles.append("copy_identifiers")
    if MIGRATION_NAME_PART in name:
        roles.append("handle_migration")
    if (job.category or "").upper() == INTEGRATION_CATEGORY or name == INTEGRATION_NAME:
        roles.append("handle_integration")
    return tuple(roles)


@dataclass(frozen=True)
class JobDiscovery:
    """Every manual job of the institution and, per role, the jobs that could play it."""

    jobs: tuple[JobInfo, ...]
    candidates: dict[str, tuple[JobInfo, ...]]

    def by_id(self, job_id: str) -> JobInfo | None:
        return next((j for j in self.jobs if j.id == job_id), None)


def discover_jobs(alma: AlmaClient) -> JobDiscovery:
    """Page through ``GET /conf/jobs?type=MANUAL`` (100 a page) and match the three roles by name.

    :raises AlmaError: Alma refused or could not be reached.
    """
    jobs = tuple(alma.list_jobs("MANUAL"))
    candidates = {role: tuple(j for j in jobs if role in roles_of(j)) for role in STEP_JOB_KEYS}
    return JobDiscovery(jobs=jobs, candidates=candidates)


@dataclass(frozen=True)
class JobListing:
    """One manual job for ``hwf jobs``: what it looks like to hwf and what the config uses it for."""

    job: JobInfo
    looks_like: tuple[str, ...]
    configured_as: tuple[str, ...]

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.job.id,
            "name": self.job.name,
            "category": self.job.category,
            "type": self.job.type,
            "description": self.job.description,
            "looks_like": list(self.looks_like),
            "configured_as": list(self.configured_as),
        }


def list_jobs(config: Config, search: str | None = None, *, alma: AlmaClient | None = None) -> list[JobListing]:
    """The institution's manual jobs (``GET /conf/jobs?type=MANUAL``), optionally only those whose id,
    name or category contains ``search`` (any case). :raises AlmaError: :raises ConfigError: no key."""
    configured: dict[str, list[str]] = {}
    for role, spec in config.alma.jobs.items():
        configured.setdefault(spec.id, []).append(role)
    needle = (search or "").strip().casefold()
    listings = []
    client = alma or make_client(config.alma.base_url, config.require_api_key(), timeout=config.alma.timeout_seconds)
    try:
        jobs = list(client.list_jobs("MANUAL"))
    finally:
        if alma is None:
            client.close()
    for job in jobs:
        text = " ".join(p for p in (job.id, job.name, job.category) if p).casefold()
        if needle and needle not in text:
            continue
        listings.append(JobListing(job, roles_of(job), tuple(configured.get(job.id, ()))))
    return listings


# ---------------------------------------------------------------------------------------------
# hwf init: the configuration file


@dataclass(frozen=True)
class InitSettings:
    """What ``hwf init`` knows; ``None`` is written as a placeholder that still loads."""

    region: str = DEFAULT_REGION
    institution: str | None = None
    jobs: Mapping[str, str | None] = field(default_factory=dict)
    job_names: Mapping[str, str] = field(default_factory=dict)
    key_env: str = DEFAULT_KEY_ENV
    prefix: str | None = None
    primo_domain: str | None = None
    primo_view: str | None = None


@dataclass(frozen=True)
class InitResult:
    path: Path
    base_url: str
    jobs: dict[str, str]
    placeholders: tuple[str, ...]  # dotted keys still to fill in


def refuse_overwrite(path: Path, force: bool) -> None:
    """:raises BadInputError: ``path`` exists and ``force`` is off (nothing is written)."""
    if path.exists() and not force:
        raise BadInputError(f"{path} already exists; hwf init will not overwrite it (pass --force to replace it)")


def render_config(settings: InitSettings) -> tuple[str, tuple[str, ...]]:
    """The commented ``hwf.toml`` text for ``settings`` and the dotted keys left as placeholders."""
    base_url = region_base_url(settings.region)
    institution = check_institution(settings.institution) if settings.institution else None
    key_env = _check_env_name(settings.key_env)
    placeholders: list[str] = []
    values: dict[str, str] = {"BASE_URL": base_url, "KEY_ENV": key_env}

    def todo(key: str, hint: str) -> str:
        placeholders.append(key)
        return f"  # TODO: {hint}"

    values["INSTITUTION"] = institution or PLACEHOLDER_INSTITUTION
    values["INSTITUTION_NOTE"] = (
        "" if institution else todo("alma.institution_code", "your Alma institution code, like 01GCL_INST")
    )
    for role in STEP_JOB_KEYS:
        job_id = settings.jobs.get(role)
        tag = role.upper()
        if job_id:
            values[tag] = check_job_id(job_id, ROLE_OPTIONS[role])
            name = settings.job_names.get(role)
            values[tag + "_NOTE"] = f"  # {json.dumps(name, ensure_ascii=False)}" if name else ""
        else:
            values[tag] = PLACEHOLDER_JOB_ID
            values[tag + "_NOTE"] = todo(f"alma.jobs.{role}", f"the id of {ROLE_TITLES[role]}; see `hwf jobs`")
    if settings.prefix:
        prefix = settings.prefix.strip()
        if not _PREFIX.match(prefix):
            raise BadInputError(f"--prefix {prefix!r} is not a handle prefix (digits, like 11084)")
        values["PREFIX"], values["PREFIX_NOTE"] = prefix, ""
    else:
        values["PREFIX"] = PLACEHOLDER_PREFIX
        values["PREFIX_NOTE"] = todo("handles.prefix", "your handle prefix, like 11084")
    if settings.primo_domain:
        values["DOMAIN"], values["DOMAIN_NOTE"] = _check_text(settings.primo_domain, "--primo-domain"), ""
    else:
        values["DOMAIN"] = PLACEHOLDER_PRIMO_DOMAIN
        values["DOMAIN_NOTE"] = todo("primo.domain", "your Primo VE host")
    if settings.primo_view:
        values["VIEW"], values["VIEW_NOTE"] = _check_text(settings.primo_view, "--primo-view"), ""
    else:
        values["VIEW"] = f"{values['INSTITUTION']}:{PLACEHOLDER_VIEW}"
        values["VIEW_NOTE"] = todo("primo.view", "your Primo view, like 01GCL_INST:GCL")
    text = _TEMPLATE
    for token, value in values.items():
        text = text.replace(f"@@{token}@@", value)
    return text, tuple(placeholders)


def write_init_config(path: Path, settings: InitSettings, *, force: bool = False) -> InitResult:
    """Write a commented ``hwf.toml`` (atomically); the file is validated with the real loader first.

    :raises BadInputError: the file exists and ``force`` is off, or a setting is invalid.
    """
    refuse_overwrite(path, force)
    text, placeholders = render_config(settings)
    try:
        parse_config(tomllib.loads(text), path, environ={})
    except (ConfigError, tomllib.TOMLDecodeError) as exc:  # pragma: no cover - a template bug
        raise BadInputError(f"hwf init would write an invalid configuration: {exc}") from None
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise BadInputError(f"cannot write {path}: {exc.strerror}") from None
    jobs = {role: job_id for role in STEP_JOB_KEYS if (job_id := settings.jobs.get(role))}
    return InitResult(path, region_base_url(settings.region), jobs, placeholders)


def placeholders_in(config: Config) -> list[str]:
    """Dotted keys of a loaded configuration that still hold ``hwf init``'s placeholders."""
    found = []
    if config.alma.institution_code == PLACEHOLDER_INSTITUTION:
        found.append("alma.institution_code")
    found += [f"alma.jobs.{role}" for role, spec in config.alma.jobs.items() if spec.id == PLACEHOLDER_JOB_ID]
    if config.handles.prefix == PLACEHOLDER_PREFIX:
        found.append("handles.prefix")
    if config.primo.domain == PLACEHOLDER_PRIMO_DOMAIN:
        found.append("primo.domain")
    if config.primo.view.endswith(":" + PLACEHOLDER_VIEW):
        found.append("primo.view")
    return found


# ---------------------------------------------------------------------------------------------
# hwf ping


OK, WARN, FAIL, SKIP = "ok", "warn", "fail", "skip"


@dataclass(frozen=True)
class Check:
    """One line of ``hwf ping``: what was checked, ok/warn/fail/skip, and what it showed."""

    name: str
    status: str
    detail: str

    def as_json(self) -> dict[str, str]:
        return {"check": self.name, "status": self.status, "detail": self.detail}


@dataclass
class PingReport:
    base_url: str
    resolver_url: str
    checks: list[Check] = field(default_factory=list)
    remaining: int | None = None
    quota: int | None = None

    @property
    def ok(self) -> bool:
        """True when nothing a run needs is missing (warnings allowed)."""
        return all(c.status != FAIL for c in self.checks)

    def add(self, name: str, status: str, detail: str) -> None:
        self.checks.append(Check(name, status, detail))

    def as_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "base_url": self.base_url,
            "resolver_url": self.resolver_url,
            "api_remaining": self.remaining,
            "api_quota": self.quota,
            "checks": [c.as_json() for c in self.checks],
        }


def explain_alma_error(exc: AlmaError) -> str:
    """An Alma error in plain words: what it means for the key, the URL or the request."""
    if exc.code == UNAUTHORIZED:
        return (
            f"Alma answered 400 UNAUTHORIZED to {exc.method} {exc.path}: the key is not allowed to use this API. "
            f"Either it lacks the area (hwf needs Bibs and Configuration, both Read/write), or {_ENVIRONMENT_NOTE}"
        )
    if exc.status == 401:
        return f"{exc} (check alma.base_url: it must be the regional API gateway, not your Alma's own address)"
    if exc.status == 403:
        return f"{exc} (the key is unknown to Alma, revoked, or not allowed from this IP address)"
    return str(exc)


def _area_failure(area: str, request: str) -> str:
    return (
        f"the key lacks the {area} area: {request} answered 400 UNAUTHORIZED. In the Developer Network "
        f"(Build > My APIs > Manage API keys) add {area}, Read/write, to the key; note that {_ENVIRONMENT_NOTE}"
    )


class _Areas:
    """What the probes learned about the key's areas: True allowed, False refused, None unknown."""

    def __init__(self) -> None:
        self.bibs: bool | None = None
        self.conf: bool | None = None
        self.stop: str | None = None  # why the Alma checks cannot go on (unreachable, bad key, quota)


def _classify(areas: _Areas, area: str, exc: HwfError) -> bool:
    """Record what an error says about ``area``; True when Alma answered this API (the key got through)."""
    if isinstance(exc, AlmaError) and exc.code == UNAUTHORIZED:
        setattr(areas, area, False)
        return False
    if isinstance(exc, AlmaError) and exc.status == 400 and not isinstance(exc, DailyQuotaError):
        # Any other 400 (an id Alma does not know, ...) means the key was let through to this API.
        setattr(areas, area, True)
        return True
    areas.stop = explain_alma_error(exc) if isinstance(exc, AlmaError) else str(exc)
    return False


def _template_parameter_names(data: bytes) -> set[str]:
    """Parameter names in a payload pasted from Alma's Run-a-job wizard (XML or JSON)."""
    if sniff(data) == "xml":
        root = parse_xml(data, "job payload template")
        names = set()
        for element in root.iter():
            if isinstance(element.tag, str) and local_name(element) == "parameter":
                for child in element:
                    if isinstance(child.tag, str) and local_name(child) == "name" and (child.text or "").strip():
                        names.add((child.text or "").strip())
        return names
    try:
        tree = json.loads(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadInputError(f"job payload template: malformed JSON ({exc})") from None
    if not isinstance(tree, dict):
        raise BadInputError("job payload template: JSON must be an object")
    holder = tree.get("parameters") if isinstance(tree.get("parameters"), dict) else tree
    assert isinstance(holder, dict)
    return {name for p in as_list(holder.get("parameter")) if isinstance(p, dict) and (name := text_of(p.get("name")))}


def _check_job(
    report: PingReport, areas: _Areas, alma: AlmaClient, config: Config, role: str, accept_unknown: bool = False
) -> None:
    spec = config.alma.jobs[role]
    label = f"job {role}"
    if spec.id == PLACEHOLDER_JOB_ID:
        report.add(
            label,
            FAIL,
            f"alma.jobs.{role} is still the placeholder {PLACEHOLDER_JOB_ID}: find the id "
            "with `hwf jobs` and write it into the config",
        )
        return
    if areas.stop or areas.conf is False:
        report.add(label, SKIP, f"{spec.id}: not checked (see above)")
        return
    try:
        job = alma.get_job(spec.id)
    except HwfError as exc:
        if not _classify(areas, "conf", exc):
            report.add(label, SKIP, f"{spec.id}: not checked (see above)")
        else:
            said = (exc.alma_message if isinstance(exc, AlmaError) else None) or str(exc)
            report.add(
                label,
                FAIL,
                f"job id {spec.id} (alma.jobs.{role} in {config.path}) is not a job of this Alma: "
                f"{said}. Find the right id with `hwf jobs`",
            )
        return
    areas.conf = True
    kind = (job.type or "").upper()
    if kind and kind != "MANUAL":
        report.add(label, FAIL, f"{spec.id} {job.name!r} is a {kind} job; hwf runs manual jobs only (see `hwf jobs`)")
        return
    supplied = {"set_id", "job_name", *(name for name, _ in spec.parameters)}
    if spec.payload_file is not None:
        try:
            supplied |= _template_parameter_names(spec.payload_file.read_bytes())
        except (HwfError, OSError) as exc:
            report.add(label, FAIL, f"{spec.id} {job.name!r}: cannot read payload_file {spec.payload_file}: {exc}")
            return
    missing = [p for p in job.parameters if p.name not in supplied]
    empty = [p.name for p in missing if not (p.value or "").strip()]
    given = [f"{p.name}={p.value}" for p in missing if (p.value or "").strip()]
    note = (
        " (manual mode: hwf only looks for your runs of it)"
        if role == "handle_integration" and (config.alma.handle_integration_mode == "manual")
        else ""
    )
    manual = role == "handle_integration" and config.alma.handle_integration_mode == "manual"
    if not job.parameters and not spec.parameters and spec.payload_file is None and not manual:
        _unknown_parameters(report, label, spec.id, job.name, role, accept_unknown)
    elif empty:
        report.add(
            label,
            FAIL,
            f"{spec.id} {job.name!r}: Alma lists parameters the config does not supply: {', '.join(empty)}. "
            f'Alma would answer 402228 "Mandatory parameter is missing". Add them under [alma.jobs.{role}] '
            'as parameters = { name = "value" }, or paste the payload from Alma\'s Run-a-job wizard '
            '("API Information") into a file named by payload_file',
        )
    elif given:
        report.add(
            label,
            WARN,
            f"{spec.id} {job.name!r}: Alma lists {', '.join(given)}, which the config does not supply; "
            f"if the Run-a-job wizard's API Information shows them, copy them into [alma.jobs.{role}] parameters"
            + note,
        )
    else:
        report.add(label, OK, f"{spec.id} {job.name!r}, a {kind.lower() or 'manual'} job{note}")


def _unknown_parameters(report: PingReport, label: str, job_id: str, name: str, role: str, accept: bool) -> None:
    """Alma listed no parameters and the config gives none: real Alma often lists none for a job that needs
    task parameters, so this is not "OK" until the operator says so (or supplies them)."""
    detail = (
        f"{job_id} {name!r}: parameters unknown: paste the payload from the job's API Information (Alma lists "
        "no parameters for this job, and it may need task parameters) into a file named by "
        f'payload_file under [alma.jobs.{role}], or give them as parameters = {{ name = "value" }}'
    )
    if accept:
        report.add(label, WARN, detail + "; accepted with --accept-unknown: only set_id and job_name will be sent")
    else:
        report.add(label, FAIL, detail + "; or run `hwf ping --accept-unknown` if the job truly needs none")


def _probe_bibs(report: PingReport, areas: _Areas, alma: AlmaClient) -> None:
    try:
        alma.get_bibs([PROBE_MMS_ID])
    except HwfError as exc:
        _classify(areas, "bibs", exc)
    else:
        areas.bibs = True
    if areas.stop:
        report.add("gateway", FAIL, f"{alma.base_url}: {areas.stop}")
    else:
        report.add("gateway", OK, f"{alma.base_url} answers")


def _probe_conf(areas: _Areas, alma: AlmaClient) -> None:
    """Learn whether the key has Configuration when no configured job could be fetched."""
    try:
        next(iter(alma.list_jobs("MANUAL")), None)
    except HwfError as exc:
        _classify(areas, "conf", exc)
    else:
        areas.conf = True


def _report_areas(report: PingReport, areas: _Areas) -> None:
    bibs_request = f"GET /almaws/v1/bibs?mms_id={PROBE_MMS_ID}"
    conf_request = "GET /almaws/v1/conf/jobs/..."
    if areas.bibs is False and areas.conf is False:
        report.add(
            "key areas",
            FAIL,
            "Alma refused the key for both Bibs and Configuration (400 UNAUTHORIZED): most likely "
            f"{_ENVIRONMENT_NOTE.replace(' gets this same 400 UNAUTHORIZED', '')}; otherwise the key has neither "
            "area. Check the key's environment and areas (Bibs and Configuration, Read/write) in the Developer Network",
        )
        return
    if areas.bibs is False:
        report.add("key: Bibs area", FAIL, _area_failure("Bibs", bibs_request))
    elif areas.bibs:
        report.add("key: Bibs area", OK, f"{bibs_request} answered")
    if areas.conf is False:
        report.add("key: Configuration area", FAIL, _area_failure("Configuration", conf_request))
    elif areas.conf:
        report.add("key: Configuration area", OK, "GET /almaws/v1/conf/jobs answered")
    if areas.bibs and areas.conf:
        report.add(
            "key: read/write",
            WARN,
            "read-only checks cannot tell a Read-only key from a Read/write one: make sure both areas are Read/write",
        )


def _check_resolver(report: PingReport, config: Config, http: httpx.Client) -> None:
    url = f"{config.handles.resolver_url}/api/handles/{config.handles.prefix}/1"
    try:
        response = http.get(url, headers={"Accept": "application/json"})
    except httpx.HTTPError as exc:
        report.add("handle resolver", FAIL, f"GET {url}: could not reach it ({type(exc).__name__})")
        return
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and "responseCode" in body:
        report.add(
            "handle resolver",
            OK,
            f"GET {url} answered HTTP {response.status_code}, responseCode {body.get('responseCode')}",
        )
        return
    report.add(
        "handle resolver",
        FAIL,
        f"GET {url} answered HTTP {response.status_code} without a handle JSON reply: is handles.resolver_url "
        "a handle proxy (https://hdl.handle.net)?",
    )


def ping(
    config: Config,
    *,
    alma: AlmaClient | None = None,
    http: httpx.Client | None = None,
    accept_unknown: bool = False,
) -> PingReport:
    """Check, with read-only calls only, that everything a run needs is in place.

    ``accept_unknown``: a job for which Alma lists no parameters (and the config gives none) is a warning,
    not a failure.

    ``alma`` and ``http`` (the handle resolver's client) default to new clients built from the
    configuration. Never raises for what it finds.
    """
    report = PingReport(base_url=config.alma.api_url, resolver_url=config.handles.resolver_url)
    todo = placeholders_in(config)
    if todo:
        report.add("configuration", FAIL, f"{config.path}: still placeholders from `hwf init`: {', '.join(todo)}")
    else:
        report.add("configuration", OK, f"{config.path} loads")
    areas = _Areas()
    own_alma = alma is None
    try:
        if alma is None:
            key = config.require_api_key()
            alma = make_client(config.alma.base_url, key, timeout=config.alma.timeout_seconds)
    except HwfError as exc:
        report.add("API key", FAIL, str(exc))
    else:
        from_file = config.alma.api_key_file is not None and not os.environ.get(config.alma.api_key_env)
        source = f"file {config.alma.api_key_file}" if from_file else f"environment variable {config.alma.api_key_env}"
        report.add("API key", OK, f"read from the {source} (never shown)")
    if alma is not None:
        _probe_bibs(report, areas, alma)
        gateway_failed = areas.stop is not None
        jobs = PingReport(report.base_url, report.resolver_url)
        for role in STEP_JOB_KEYS:
            _check_job(jobs, areas, alma, config, role, accept_unknown)
        if areas.conf is None and not areas.stop:
            _probe_conf(areas, alma)
        if areas.stop and not gateway_failed:
            report.add("Alma", FAIL, areas.stop)
        _report_areas(report, areas)
        report.checks.extend(jobs.checks)
        report.remaining, report.quota = alma.remaining, alma.quota
    own = http is None
    client = http or httpx.Client(
        timeout=config.handles.timeout_seconds,
        follow_redirects=True,
        headers={"User-Agent": f"hwf/{__version__} (ping)"},
    )
    try:
        _check_resolver(report, config, client)
    finally:
        if own:
            client.close()
    if alma is not None:
        _report_quota(report, config, alma)
        if own_alma:
            alma.close()
    return report


def _report_quota(report: PingReport, config: Config, alma: AlmaClient) -> None:
    remaining, floor = alma.remaining, config.alma.daily_call_floor
    if remaining is None:
        if alma.calls and not any(c.name == "gateway" and c.status == FAIL for c in report.checks):
            report.add("API quota", WARN, "Alma sent no X-Exl-Api-Remaining header")
        return
    of = f" of {alma.quota:,}" if alma.quota else ""
    if remaining < floor:
        report.add(
            "API quota",
            FAIL,
            f"X-Exl-Api-Remaining: {remaining:,}{of}, under alma.daily_call_floor ({floor:,}): hwf would start "
            "no new work today",
        )
    else:
        report.add("API quota", OK, f"X-Exl-Api-Remaining: {remaining:,}{of} calls left today")


# ---------------------------------------------------------------------------------------------
# The file `hwf init` writes: config.example.toml's keys and comments, with this institution's values.

_TEMPLATE = """\
# hwf configuration, written by `hwf init`. Every key is here with its default; edit freely.
# hwf reads --config FILE, else $HWF_CONFIG, else ./hwf.toml. This file never holds the API key.
# Lines marked TODO still hold placeholders: fill them in, then run `hwf ping`.
# Every key is checked: an unknown or misspelt key is an error naming the closest known one.

# Plain http:// is refused for alma.base_url and handles.resolver_url unless the host is this machine: the API
# key would travel in clear. Set true only for a test server on a trusted network.
allow_insecure_http = false

[database]
# Any SQLAlchemy URL. SQLite (WAL) for one machine; PostgreSQL for a team sharing the work:
#   url = "postgresql+psycopg://hwf@db.example.edu/hwf"     (pip install 'hwf[postgres]')
# $HWF_DATABASE_URL overrides this key.
url = "sqlite:///hwf.db"

[alma]
# The regional API gateway; /almaws/v1 is appended. na, eu, ap, aps, ca: api-REGION.hosted.exlibrisgroup.com;
# China: https://api-cn.hosted.exlibrisgroup.com.cn. $HWF_ALMA_BASE_URL overrides this key.
base_url = "@@BASE_URL@@"
# The key is read from this environment variable (needs Bibs read/write and Configuration read/write) ...
api_key_env = "@@KEY_ENV@@"
# ... or, if the variable is unset, from this file, which must be mode 0600 (chmod 600 FILE).
# api_key_file = "~/.config/hwf/alma.key"
institution_code = "@@INSTITUTION@@"@@INSTITUTION_NOTE@@
# First wait between job-status polls; it grows by half each poll up to the maximum.
poll_interval_seconds = 15
poll_max_interval_seconds = 300
# hwf's own cap on Alma calls per second (Alma's institution limit is 25).
requests_per_second = 10
# Stop starting new work when X-Exl-Api-Remaining falls under this many calls.
daily_call_floor = 5000
# Seconds before one Alma request times out (each read of the reply; see deadline_seconds).
timeout_seconds = 60
# Every reply is read as a stream and refused past this size (MB), and must arrive whole within
# deadline_seconds of being sent (a server dripping bytes is cut off; reads are retried like timeouts).
max_reply_mb = 20
deadline_seconds = 300
# Retries (with growing, jittered pauses) of reads that failed on the network or with a 5xx, and of 429
# PER_SECOND_THRESHOLD. Job submissions are never retried blindly: a lost reply is reconciled instead.
max_retries = 6
# Reply format hwf asks for: "json" or "xml" (it understands both either way; bib edits always use XML).
format = "json"
# After a lost reply to a job submission, how long to keep looking for the job in Alma's list
# before deciding the submission never arrived and submitting again.
reconcile_grace_seconds = 120
# Alma runs at most 3 API-started jobs at once and 5 runs of one job an hour; hwf counts across all sets.
max_running_jobs = 3
max_runs_per_job_hour = 5
# How long to wait before trying again when Alma answers 402222/402223 (execution threshold).
threshold_wait_seconds = 300
# One request budget (requests_per_second, the daily floor) shared by every hwf process using this key:
# a table in PostgreSQL, a file beside a SQLite database. false: each process paces itself alone.
shared_budget = true
# When Alma resets the daily API quota ("until midnight according to the Institution's Account Plan"),
# as HH:MM in the institution's time zone; `hwf resume --all --follow` goes on by itself 5 minutes later.
quota_reset = "00:00"
# The institution's time zone (an IANA name such as "America/Chicago"): `hwf evidence` gives every time in UTC
# and in this zone. Unknown names are refused at start.
timezone = "UTC"

[alma.jobs]
# Job ids from Alma (Admin > Monitor Jobs, or `hwf jobs`).
copy_identifiers = "@@COPY_IDENTIFIERS@@"@@COPY_IDENTIFIERS_NOTE@@
handle_migration = "@@HANDLE_MIGRATION@@"@@HANDLE_MIGRATION_NOTE@@
handle_integration = "@@HANDLE_INTEGRATION@@"@@HANDLE_INTEGRATION_NOTE@@
# "api": hwf submits the integration job itself; "manual": hwf tells you what to click in Alma
# and then finds your run (or takes `hwf confirm SET --instance ID`).
handle_integration_mode = "api"
# A job may instead be a table, when Alma needs more parameters than set_id and job_name
# (`hwf ping` lists the parameters a job wants that this file does not give):
# [alma.jobs.handle_migration]
# id = "M2234567890000561"
# parameters = { task_HandleMigration_controlNumber = "Digital.Grinnell Handles" }
# payload_file = "migration-job.xml"   # the payload from Alma's Run-a-job wizard, "API Information" panel

[handles]
prefix = "@@PREFIX@@"@@PREFIX_NOTE@@
resolver_url = "https://hdl.handle.net"
# Wait this long after the integration run before verifying (0 = none).
settle_minutes = 15
# Verification: parallel requests, the global rate cap, retries of transient failures, per-request timeout.
concurrency = 8
requests_per_second = 20
retries = 4
timeout_seconds = 15
# A handle reply is a few hundred bytes: larger than this (KB) is refused (an ERROR verdict); a reply not
# whole within deadline_seconds counts as a timeout (retried).
max_reply_kb = 1024
deadline_seconds = 60
# Verification asks the primary handle server (auth=true: the proxy's cache is bypassed); for handles that
# are right there, "on" also asks what the public proxy answers (one more request each), so that a handle
# the proxy still serves from its cache (up to 24 h) is STALE_CACHE with its expiry. "off": primary only.
public_cache_check = "on"
# The worker (`hwf resume --all --follow`) re-verifies each verified set this often (days; 0 = never),
# one set at a time, spread over the period, at this low rate (handles per second).
recheck_days = 7
recheck_requests_per_second = 2

[primo]
# Handles must resolve to https://{domain}/discovery/fulldisplay/alma{MMS ID}/{view}
domain = "@@DOMAIN@@"@@DOMAIN_NOTE@@
view = "@@VIEW@@"@@VIEW_NOTE@@

[workflow]
# A process's claim on a set lasts this long unless renewed (it renews every third of it while working).
lease_seconds = 120
[log]
# A structured log, one JSON object a line: every HTTP call to Alma and to the handle proxy (method, path
# without the query, status, milliseconds, Alma error code, tracking id), every event (transitions and
# their reasons), every scheduler decision (why a set waits). Never the API key.
enabled = true
# Default: beside the SQLite database (hwf.db -> hwf.log), else the user log directory
# (~/.local/state/hwf/log/hwf.log on Linux). A relative path is relative to this file.
# file = "hwf.log"
# Rotation: a new file every max_bytes, keeping this many old ones (hwf.log.1, hwf.log.2, ...).
max_bytes = 10000000
backups = 5

[notify]
# Apprise URLs (https://github.com/caronc/apprise/wiki): mailto://, slack://, msteams://, ntfy://, json://...
# Each event sends one message to each URL. The URLs may hold tokens or passwords: they are never printed,
# logged or put in `hwf evidence`. A URL apprise cannot use is refused at start (exit 2).
urls = []
# Which events: a set needs attention; Alma's daily API quota is spent (one message a day); a set is
# verified (off: one message per set is a lot for 115 sets); every set is verified.
on_attention = true
on_quota = true
on_verified = false
on_done = true

[operator]
# Who acts: recorded as `actor` in every event (with host and pid). $HWF_OPERATOR wins over this key;
# with neither, the OS user name.
# name = "Ada Lovelace"

[display]
# Times on the terminal: local time with its zone (false), or UTC (true; the same as --utc on a command).
utc = false
"""
