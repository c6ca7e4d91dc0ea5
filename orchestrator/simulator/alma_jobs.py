"""Simulated Jobs API: catalogue, details, ``op=run`` with Alma's thresholds and refusals, instances and
their lists.

``op=run`` refuses, as Alma does: a job of several tasks (the scenario's ``multi_task_jobs``) with
402231; a job while another run of it is going (``refuse_overlapping_runs``), or the next N runs
(fault ``refuse_run_overlap``), with 60347; 402222 when three API-submitted runs are going (runs made
by a person do not count); 402223 when five runs of that job, by anyone, started in the last hour.
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
from lxml import etree

from .alma_common import Ctx, paging
from .jobs import live_counters, start_instance
from .scenario import JobDef
from .state import Instance
from .wire import (
    AlmaFault,
    Coded,
    Items,
    Node,
    body_is_json,
    child_text,
    json_list,
    json_scalar,
    local_stamp,
    parse_json_body,
    parse_xml_body,
    utc_ms,
)

STATUS_DESC = {
    "QUEUED": "Queued",
    "PENDING": "Pending",
    "INITIALIZING": "Initializing",
    "RUNNING": "Running",
    "FINALIZING": "Finalizing",
    "COMPLETED_SUCCESS": "Completed Successfully",
    "COMPLETED_WARNING": "Completed with Warnings",
    "COMPLETED_FAILED": "Completed with Errors",
    "COMPLETED_NO_BULKS": "Completed - No Bulks",
    "FAILED": "Failed",
    "SKIPPED": "Skipped",
    "SYSTEM_ABORTED": "System Aborted",
    "USER_ABORTED": "User Aborted",
    "MANUAL_HANDLING_REQUIRED": "Manual Handling Required",
}
CONTROL_NUMBER_PARAM = "task_HandleMigration_controlNumber"
_JOB_ID = re.compile(r"^[MSO]\d+$")
_PARAM_DESC = {"set_id": "Set ID", "job_name": "Job name", CONTROL_NUMBER_PARAM: "Control Number"}
_THRESHOLD = "Execution threshold reached."
# Alma's own wording and spelling, as its published API definition gives them.
MULTI_TASK = (
    "402231",
    "Job in consisted of more than one task - executing such job is currently not supported via the API.",
)
OVERLAP = ("60347", "Job overlapps with running job - cannot execute.")


class ConnectionDrop(Exception):
    """The connection must be dropped without any reply (fault injection)."""


def find_job(ctx: Ctx, job_id: str) -> JobDef:
    """:raises AlmaFault: 402215 bad format, 402216 unknown id."""
    if not _JOB_ID.match(job_id):
        raise AlmaFault(400, "402215", "Invalid job id format")
    job = ctx.state.jobs.get(job_id)
    if job is None:
        raise AlmaFault(400, "402216", f"Invalid job id: {job_id}")
    return job


def _required_params(ctx: Ctx, job: JobDef) -> list[str]:
    names = ["set_id", "job_name"]
    if job.kind == "migration" and ctx.state.scenario.migration_requires_control_number:
        names.append(CONTROL_NUMBER_PARAM)
    return names


def _param_node(name: str, value: str, desc: str | None = None) -> Node:
    return Node([("name", Coded(name, desc)), ("value", value)])


def job_node(
    ctx: Ctx,
    job: JobDef,
    *,
    brief: bool = False,
    parameters: list[tuple[str, str]] | None = None,
    instance_id: str | None = None,
    triggered: datetime | None = None,
) -> Node:
    """A job object: brief (list), details with the parameter list, or the reply to ``op=run``."""
    fields: list[tuple[str, Any]] = [
        ("id", job.id),
        ("name", job.name),
        ("description", job.description or None),
        ("type", Coded("MANUAL", "Manual")),
        ("category", Coded(job.category, job.category_desc)),
    ]
    if not brief:
        fields.append(("content", Coded("BIB_MMS", "All Titles")))
        fields.append(("schedule", Coded("NOT_SCHEDULED", "Not scheduled")))
        if parameters is None:
            nodes = [_param_node(n, "", _PARAM_DESC.get(n)) for n in _required_params(ctx, job)]
        else:
            nodes = [_param_node(n, v) for n, v in parameters]
        fields.append(("parameters", Items("parameters", "parameter", nodes)))
    if instance_id is not None and triggered is not None:
        text = f"Job no. {instance_id} triggered on {format_datetime(triggered, usegmt=True)}"
        fields.append(("additional_info", Coded(text, link=ctx.link("conf", "jobs", job.id, "instances", instance_id))))
    return Node(fields, link=ctx.link("conf", "jobs", job.id))


def list_jobs(ctx: Ctx) -> httpx.Response:
    """``GET /conf/jobs?type=&category=&limit=&offset=``."""
    limit, offset = paging(ctx)
    job_type = ctx.params.get("type")
    if job_type and job_type not in ("MANUAL", "SCHEDULED", "OTHER"):
        raise AlmaFault(400, "40166410", "Invalid category/type")
    jobs = list(ctx.state.jobs.values()) if job_type in (None, "", "MANUAL") else []
    category = ctx.params.get("category")
    if category:
        jobs = [j for j in jobs if j.category == category]
    page = jobs[offset : offset + limit]
    return ctx.render_list("jobs", "job", [job_node(ctx, j, brief=True) for j in page], len(jobs))


def get_job(ctx: Ctx, job_id: str) -> httpx.Response:
    """``GET /conf/jobs/{id}``: the definition with its parameter list."""
    return ctx.render("job", job_node(ctx, find_job(ctx, job_id)))


def _read_parameters(ctx: Ctx) -> list[tuple[str, str | None]]:
    """(name, value) pairs from ``<job><parameters><parameter>`` or ``{"parameter":[...]}``."""
    if not ctx.request.content.strip():
        return []
    pairs: list[tuple[str, str | None]] = []
    if body_is_json(ctx.request):
        data = parse_json_body(ctx.request)
        if not isinstance(data, dict):
            raise AlmaFault(400, "402119", "The request body must be a job object.")
        raw = data.get("parameter")
        if raw is None and isinstance(data.get("parameters"), dict):
            raw = data["parameters"].get("parameter")
        for item in json_list(raw):
            if isinstance(item, dict) and json_scalar(item.get("name")):
                pairs.append((str(json_scalar(item.get("name"))), json_scalar(item.get("value"))))
        return pairs
    root = parse_xml_body(ctx.request, "job")
    for holder in root:
        if isinstance(holder.tag, str) and etree.QName(holder).localname == "parameters":
            for param in holder:
                name = child_text(param, "name") if isinstance(param.tag, str) else None
                if name:
                    pairs.append((name, child_text(param, "value")))
    return pairs


def run_job(ctx: Ctx, job_id: str) -> httpx.Response:
    """``POST /conf/jobs/{id}?op=run``: validate, enforce thresholds, create and schedule an instance."""
    state = ctx.state
    if state.faults.reject_run_before_create > 0:
        state.faults.reject_run_before_create -= 1
        raise ConnectionDrop
    op = ctx.params.get("op")
    if not op:
        raise AlmaFault(400, "402220", "Operation was not provided")
    if op != "run":
        raise AlmaFault(400, "402221", f"Operation is not supported: {op}")
    job = find_job(ctx, job_id)
    if state.scenario.is_multi_task(job):
        raise AlmaFault(400, *MULTI_TASK)
    given = _read_parameters(ctx)
    values = dict(given)
    mandatory = ["set_id"] + ([CONTROL_NUMBER_PARAM] if CONTROL_NUMBER_PARAM in _required_params(ctx, job) else [])
    for name in mandatory:
        if name not in values:
            raise AlmaFault(400, "402228", f"Mandatory parameter is missing from input: {name}")
        if not (values[name] or "").strip():
            raise AlmaFault(400, "402229", f"Mandatory parameter value is empty: {name}")
    set_id = str(values["set_id"]).strip()
    sim_set = state.sets.get(set_id)
    if sim_set is None:
        raise AlmaFault(400, "60107", f"Set not found: Set ID {set_id}")
    _refusals(ctx, job)
    now = state.now()
    job_name = values.get("job_name") or None
    instance = start_instance(
        state,
        job,
        sim_set,
        name=f"{job_name or job.name} - {local_stamp(now, state.zone)}",
        job_name=job_name,
        parameters=[(n, v or "") for n, v in given],
    )
    instance_id = instance.id
    if state.faults.drop_run_reply > 0:
        state.faults.drop_run_reply -= 1
        ctx.drop_reply = True
    elif state.chance(state.faults.drop_run_reply_rate):
        ctx.drop_reply = True
    if state.faults.unreadable_run_reply > 0:  # the run started, but the reply does not say which it is
        state.faults.unreadable_run_reply -= 1
        return ctx.render("job", job_node(ctx, job, parameters=instance.parameters))
    node = job_node(ctx, job, parameters=instance.parameters, instance_id=instance_id, triggered=now)
    return ctx.render("job", node)


def _refusals(ctx: Ctx, job: JobDef) -> None:
    """:raises AlmaFault: 60347 on an overlap, 402222/402223 on the thresholds."""
    state, scenario, now = ctx.state, ctx.state.scenario, ctx.state.now()
    going = [i for i in state.instance_order if not i.applied and i.end > now]
    if state.faults.refuse_run_overlap > 0:
        state.faults.refuse_run_overlap -= 1
        raise AlmaFault(400, *OVERLAP)
    if scenario.refuse_overlapping_runs and any(i.job.id == job.id for i in going):
        raise AlmaFault(400, *OVERLAP)
    if scenario.enforce_job_thresholds:
        if sum(1 for i in going if i.origin == "api") >= scenario.max_running_api_jobs:
            raise AlmaFault(400, "402222", _THRESHOLD)
        hour_ago = now - timedelta(hours=1)
        recent = sum(1 for i in state.instance_order if i.job.id == job.id and i.submitted > hour_ago)
        if recent >= scenario.max_runs_per_hour:
            raise AlmaFault(400, "402223", _THRESHOLD)


def _progress(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


def instance_node(ctx: Ctx, instance: Instance) -> Node:
    """A job instance (``GET /conf/jobs/{job}/instances/{id}``) as seen at the simulator's now."""
    status, progress, start, end, changed = instance.phase(ctx.state.now())
    job = instance.job
    fields: list[tuple[str, Any]] = [
        ("id", instance.id),
        ("external_id", instance.external_id),
        ("name", instance.name),
        ("submitted_by", Coded(*instance.submitted_by)),
        ("submit_time", utc_ms(instance.submitted)),
        ("start_time", utc_ms(start) if start else None),
        ("end_time", utc_ms(end) if end else None),
        ("progress", _progress(progress)),
        ("status", Coded(status, STATUS_DESC[status])),
        ("status_date", changed.strftime("%Y-%m-%dZ")),
        ("alerts", Items("alerts", "alert", [Coded(c, d) for c, d in instance.alerts])),
        (
            "counters",
            Items(
                "counters",
                "counter",
                [
                    Node([("type", Coded(code, desc)), ("value", str(value))])
                    for code, desc, value in live_counters(instance, ctx.state.now())
                ],
            ),
        ),
        (
            "job_info",
            Node(
                [
                    ("id", job.id),
                    ("name", job.name),
                    ("description", job.description or None),
                    ("type", Coded("MANUAL", "Manual")),
                    ("category", Coded(job.category, job.category_desc)),
                ],
                link=ctx.link("conf", "jobs", job.id),
            ),
        ),
    ]
    return Node(fields, link=ctx.link("conf", "jobs", job.id, "instances", instance.id))


def find_instance(ctx: Ctx, job_id: str, instance_id: str) -> Instance:
    """:raises AlmaFault: 402216 unknown job, 402218 unknown instance of that job."""
    job = find_job(ctx, job_id)
    instance = ctx.state.instances.get(instance_id)
    if instance is None or instance.job.id != job.id:
        raise AlmaFault(400, "402218", f"Invalid job instance id: {instance_id}")
    return instance


def get_instance(ctx: Ctx, job_id: str, instance_id: str) -> httpx.Response:
    """``GET /conf/jobs/{id}/instances/{instance_id}``."""
    return ctx.render("job_instance", instance_node(ctx, find_instance(ctx, job_id, instance_id)))


def _date_param(ctx: Ctx, name: str) -> date | None:
    raw = ctx.params.get(name)
    if not raw:
        return None
    try:
        return date.fromisoformat(raw.rstrip("Z"))
    except ValueError:
        raise AlmaFault(400, "40166411", f"Parameter {name} is not a valid date (YYYY-MM-DD): {raw}") from None


def list_instances(ctx: Ctx, job_id: str) -> httpx.Response:
    """``GET /conf/jobs/{id}/instances``: most recent first; dates compared in the institution's time."""
    job = find_job(ctx, job_id)
    limit, offset = paging(ctx)
    since, until = _date_param(ctx, "submit_date_from"), _date_param(ctx, "submit_date_to")
    wanted_status = ctx.params.get("status")
    now = ctx.state.now()
    found = []
    for instance in ctx.state.instance_order:
        if instance.job.id != job.id:
            continue
        day = instance.submitted.astimezone(ctx.state.zone).date()
        if (since and day < since) or (until and day > until):
            continue
        if wanted_status and instance.phase(now)[0] != wanted_status:
            continue
        found.append(instance)
    found.sort(key=lambda i: (i.submitted, i.id), reverse=True)
    page = found[offset : offset + limit]
    return ctx.render_list("job_instances", "job_instance", [_listed(ctx, i) for i in page], len(found))


def _listed(ctx: Ctx, instance: Instance) -> Node:
    """An instance as a list shows it; one named in ``faults.unreadable_listed`` comes without its status."""
    node = instance_node(ctx, instance)
    if instance.id in ctx.state.faults.unreadable_listed:
        node.fields = [(k, v) for k, v in node.fields if k != "status"]
    return node


def instance_events(ctx: Ctx, job_id: str, instance_id: str) -> httpx.Response:
    """The events API serves only USERS/SIS jobs; every job here gets 60332."""
    find_instance(ctx, job_id, instance_id)
    raise AlmaFault(400, "60332", "This service will only work for the job category and type of USERS/SIS.")


def code_table(ctx: Ctx, name: str) -> httpx.Response:
    """``GET /conf/code-tables/systemJobStatus`` (the only table simulated)."""
    if name != "systemJobStatus":
        raise AlmaFault(400, "40166410", f"Invalid code table name: {name}")
    rows = [Node([("code", code), ("description", desc)]) for code, desc in STATUS_DESC.items()]
    node = Node(
        [
            ("code", name),
            ("name", name),
            ("description", "System job status"),
            ("rows", Items("rows", "row", rows)),
        ],
        link=ctx.link("conf", "code-tables", name),
    )
    return ctx.render("code_table", node)
