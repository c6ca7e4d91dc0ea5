"""``hwf ping``: read-only checks that everything a run needs is in place (no placeholders left, the key,
its Bibs and Configuration areas, each configured job and the parameters it wants, the handle resolver,
the day's API quota), and Alma's errors in plain words.

Only read-only calls are made: ``GET /bibs``, ``GET /conf/jobs/{id}`` (and one ``GET /conf/jobs`` when
no configured job could be fetched), and one ``GET`` at the handle resolver. The clients come from the
caller's factories; ping closes what it opens.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from orchestrator.alma.client import AlmaClient
from orchestrator.alma.payload import template_parameter_names
from orchestrator.alma.types import JobInfo
from orchestrator.bounded import ReplyTooLarge, ReplyTooSlow, send_bounded
from orchestrator.config import STEP_JOB_KEYS, Config, without_userinfo
from orchestrator.domain.steps import JOB_STEPS, Step
from orchestrator.errors import AlmaError, DailyQuotaError, HwfError
from orchestrator.service.onboarding import PLACEHOLDER_JOB_ID, placeholders_in

# Any MMS ID serves to learn whether the key may use the Bibs API: Alma answers an unknown one with an
# empty list (or a 400 about the id), and a key without the area with 400 UNAUTHORIZED.
PROBE_MMS_ID = "9900000000000000001"
UNAUTHORIZED = "UNAUTHORIZED"
_ENVIRONMENT_NOTE = (
    "a key for the sandbox used against production (or a production key against the sandbox) gets this same "
    "400 UNAUTHORIZED"
)
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


def _check_job(
    report: PingReport, areas: _Areas, alma: AlmaClient, config: Config, role: str, accept_unknown: bool = False
) -> None:
    job = _fetch_job(report, areas, alma, config, role)
    if job is not None:
        _check_parameters(report, job, config, role, accept_unknown)


def _fetch_job(report: PingReport, areas: _Areas, alma: AlmaClient, config: Config, role: str) -> JobInfo | None:
    """The job configured for ``role`` when Alma has it and it is a manual job; else None, the line added."""
    spec = config.alma.jobs[role]
    label = f"job {role}"
    if spec.id == PLACEHOLDER_JOB_ID:
        report.add(
            label,
            FAIL,
            f"alma.jobs.{role} is still the placeholder {PLACEHOLDER_JOB_ID}: find the id "
            "with `hwf jobs` and write it into the config",
        )
        return None
    if areas.stop or areas.conf is False:
        report.add(label, SKIP, f"{spec.id}: not checked (see above)")
        return None
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
        return None
    areas.conf = True
    kind = (job.type or "").upper()
    if kind and kind != "MANUAL":
        report.add(label, FAIL, f"{spec.id} {job.name!r} is a {kind} job; hwf runs manual jobs only (see `hwf jobs`)")
        return None
    return job


def _check_parameters(report: PingReport, job: JobInfo, config: Config, role: str, accept_unknown: bool) -> None:
    """Which parameters Alma lists for the job that neither the config nor its payload file supplies."""
    spec = config.alma.jobs[role]
    label = f"job {role}"
    supplied = {"set_id", "job_name", *(name for name, _ in spec.parameters)}
    if spec.payload_file is not None:
        try:
            supplied |= template_parameter_names(spec.payload_file.read_bytes())
        except (HwfError, OSError) as exc:
            report.add(label, FAIL, f"{spec.id} {job.name!r}: cannot read payload_file {spec.payload_file}: {exc}")
            return
    missing = [p for p in job.parameters if p.name not in supplied]
    empty = [p.name for p in missing if not (p.value or "").strip()]
    given = [f"{p.name}={p.value}" for p in missing if (p.value or "").strip()]
    manual = spec.manual
    if manual:
        report.add(label, OK, f"{spec.id} {job.name!r}: run by a person in Alma; hwf looks for the runs and binds them")
        return
    if not job.parameters and not spec.parameters and spec.payload_file is None:
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
            f"if the Run-a-job wizard's API Information shows them, copy them into [alma.jobs.{role}] parameters",
        )
    else:
        kind = (job.type or "").upper()
        report.add(label, OK, f"{spec.id} {job.name!r}, a {kind.lower() or 'manual'} job")


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
    url = f"{without_userinfo(config.handles.resolver_url)}/api/handles/{config.handles.prefix}/1"
    request = http.build_request("GET", url, headers={"Accept": "application/json"})
    h = config.handles
    try:  # whole within [handles] deadline_seconds, at most max_reply_kb: a server that drips holds no ping
        response = send_bounded(
            http, request, max_bytes=int(h.max_reply_kb * 1024), deadline=h.deadline_seconds, follow_redirects=True
        )
    except (ReplyTooLarge, ReplyTooSlow) as exc:
        report.add("handle resolver", FAIL, f"GET {url}: {exc}")
        return
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
    alma: Callable[[], AlmaClient],
    http: Callable[[], httpx.Client],
    *,
    accept_unknown: bool = False,
) -> PingReport:
    """Check, with read-only calls only, that everything a run needs is in place.

    ``alma`` builds the Alma client (raising :class:`HwfError` when there is no usable key), ``http`` the
    handle resolver's client; both are closed here. ``accept_unknown``: a job for which Alma lists no
    parameters (and the config gives none) is a warning, not a failure. Never raises for what it finds.
    """
    report = PingReport(
        base_url=without_userinfo(config.alma.api_url), resolver_url=without_userinfo(config.handles.resolver_url)
    )
    report.add("steps", OK, who_runs_the_steps(config))
    todo = placeholders_in(config)
    if todo:
        report.add("configuration", FAIL, f"{config.path}: still placeholders from `hwf init`: {', '.join(todo)}")
    else:
        report.add("configuration", OK, f"{config.path} loads")
    client = _open_alma(report, config, alma)
    try:
        if client is not None:
            _check_alma(report, config, client, accept_unknown)
        with http() as resolver:
            _check_resolver(report, config, resolver)
        if client is not None:
            _report_quota(report, config, client)
    finally:
        if client is not None:
            client.close()
    return report


def who_runs_the_steps(config: Config) -> str:
    """Which steps hwf runs through the API and which a person runs in Alma (hwf then binds the run)."""
    parts = []
    for step in JOB_STEPS:
        assert step.job_key is not None
        spec = config.alma.jobs[step.job_key]
        if step is Step.INTEGRATE and spec.manual:
            parts.append(
                f"{step.value}: by a person, once per integration batch (Run on the Handle integration profile)"
            )
        elif spec.manual:
            parts.append(f"{step.value}: by a person (Admin > Run a Job)")
        else:
            parts.append(f"{step.value}: by API (op=run)")
    return "; ".join(parts)


def _open_alma(report: PingReport, config: Config, alma: Callable[[], AlmaClient]) -> AlmaClient | None:
    """The Alma client, with a line on where the key came from; None (and a failed line) without a key."""
    try:
        client = alma()
    except HwfError as exc:
        report.add("API key", FAIL, str(exc))
        return None
    from_file = config.alma.api_key_file is not None and not os.environ.get(config.alma.api_key_env)
    source = f"file {config.alma.api_key_file}" if from_file else f"environment variable {config.alma.api_key_env}"
    report.add("API key", OK, f"read from the {source} (never shown)")
    return client


def _check_alma(report: PingReport, config: Config, alma: AlmaClient, accept_unknown: bool) -> None:
    """The gateway, the key's areas, then each configured job (the jobs' lines after the areas')."""
    areas = _Areas()
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
