"""What a job run does to the simulated institution, applied exactly once when the run ends.

A run works on the set's members as they were when it was submitted (for a LOGICAL set: the records
its query matched at that moment), whoever submitted it: the API, an operator in Admin > Run a Job,
or an operator pressing Run on the handle integration profile.

Counters, as ``GET …/instances/{id}`` shows them: none while the run is QUEUED or INITIALIZING; one
counter while it is RUNNING, ``<prefix>.records_processed`` "Records processed", counting the bulks
of 100 done so far (so 0 until the first bulk of a small set is done); the total number of members
once it is FINALIZING; the full list when it has ended (records processed, records with exceptions,
and per kind: records modified / records skipped / handles created and handles updated). The prefix
is per kind: ``dcap01_normalization``, ``handle_migration``, ``handle_integration``, ``job``. A
client can thus tell how many records a run worked on once its processed count stops moving
(from FINALIZING on), but not before.

Records are processed in bulks of 100; a record the job cannot handle (not Dublin Core, or XML that
does not parse) fails its whole bulk. The three kinds:

- copy: a handle only in ``dcterms:identifier`` is copied into a new ``dc:identifier`` (keeping
  ``xsi:type="dcterms:URI"`` when the scenario says so, as Grinnell saw);
- migration: a plain ``dc:identifier`` handle URL with the institution's prefix becomes the hidden
  handle, unless the record already has one; the job says "success" either way;
- integration (Create and Update, Do not add metadata): every record's hidden handle is registered
  with the Primo URL; a record without one gets a freshly minted handle.
"""

from __future__ import annotations

import heapq
import re
from datetime import datetime

from lxml import etree

from ..errors import UnsafeXmlError
from ..xmlsafe import parse_xml
from .records import DC_NS, DCTERMS_NS, XSI_NS, SimRecord
from .scenario import JobDef
from .state import EVENT_ALREADY, EVENT_NO_HANDLE, Instance, SimSet, SimState
from .wire import alma_date

BULK_SIZE = 100
_HANDLE_URL = re.compile(r"^https?://hdl\.handle\.net/(.+)$")
_DC_IDENTIFIER = f"{{{DC_NS}}}identifier"
_DCTERMS_IDENTIFIER = f"{{{DCTERMS_NS}}}identifier"
_XSI_TYPE = f"{{{XSI_NS}}}type"
_COUNTER_PREFIX = {
    "copy": "dcap01_normalization",
    "migration": "handle_migration",
    "integration": "handle_integration",
    "other": "job",
}
_SUCCESS_ALERT = (
    "alert_general_success",
    "The job completed successfully. For more information view the report details.",
)
_ERROR_ALERT = (
    "alert_general_error",
    "The job completed with errors. For more information view the report details.",
)


def start_instance(
    state: SimState,
    job: JobDef,
    sim_set: SimSet,
    *,
    name: str,
    job_name: str | None = None,
    parameters: list[tuple[str, str]] | None = None,
    origin: str = "api",
    submitted_by: tuple[str, str] = ("exl_api", "Ex Libris, API"),
) -> Instance:
    """Create, record and schedule a run of ``job`` on the set's members as they are now."""
    now = state.now()
    scenario = state.scenario
    instance_id = state.new_id()
    members = tuple(state.members_of(sim_set))
    instance = Instance(
        id=instance_id,
        external_id=f"{int(instance_id[:9]) - 1:09d}000{scenario.id_suffix}",
        job=job,
        set_id=sim_set.id,
        job_name=job_name,
        name=name,
        parameters=list(parameters or []),
        submitted=now,
        seconds=scenario.seconds_for(job.kind) + scenario.job_seconds_per_record * len(members),
        members=members,
        origin=origin,
        submitted_by=submitted_by,
    )
    state.instances[instance_id] = instance
    state.instance_order.append(instance)
    schedule(state, instance)
    return instance


def live_counters(instance: Instance, now: datetime) -> list[tuple[str, str, int]]:
    """(code, desc, value) of the counters as seen at ``now`` (see the module docstring)."""
    if instance.applied:
        return list(instance.counters)
    status, progress, *_ = instance.phase(now)
    if status in ("QUEUED", "INITIALIZING"):
        return []
    total = len(instance.members)
    done = total if status == "FINALIZING" else min(total, int(total * progress / 100) // BULK_SIZE * BULK_SIZE)
    return [(f"{_COUNTER_PREFIX[instance.job.kind]}.records_processed", "Records processed", done)]


def schedule(state: SimState, instance: Instance) -> None:
    """Queue ``instance`` so its effects are applied when the clock passes its end."""
    heapq.heappush(state.pending, (instance.end, len(state.instance_order), instance.id))


def advance(state: SimState, now: datetime) -> None:
    """Apply, in end-time order, every run that has ended by ``now`` and was not applied yet."""
    while state.pending and state.pending[0][0] <= now:
        _, _, instance_id = heapq.heappop(state.pending)
        instance = state.instances[instance_id]
        if not instance.applied:
            _apply(state, instance)


def _handle_urls(root: etree._Element, tag: str) -> list[tuple[etree._Element, str]]:
    found = []
    for element in root.iter(tag):
        text = (element.text or "").strip()
        if _HANDLE_URL.match(text):
            found.append((element, text))
    return found


def _serialize(root: etree._Element) -> bytes:
    return etree.tostring(root, encoding="unicode").encode("utf-8")


def _copy(state: SimState, record: SimRecord, root: etree._Element) -> bool:
    """Copy a dcterms-only handle into dc:identifier. True when the record changed."""
    if _handle_urls(root, _DC_IDENTIFIER):
        return False
    sources = _handle_urls(root, _DCTERMS_IDENTIFIER)
    if not sources:
        return False
    source, url = sources[0]
    parent = source.getparent()
    assert parent is not None
    # SubElement reuses the prefix declared on the record; a local declaration avoids lxml's ns0.
    declared = DC_NS in (parent.nsmap or {}).values()
    copy = etree.SubElement(parent, _DC_IDENTIFIER, nsmap=None if declared else {"dc": DC_NS})
    copy.text = url
    if state.scenario.copy_keeps_xsi_type and source.get(_XSI_TYPE) is not None:
        copy.set(_XSI_TYPE, source.get(_XSI_TYPE, ""))
    copy.tail = source.tail
    source.addnext(copy)
    record.xml = _serialize(root)
    return True


def metadata_handle(root: etree._Element, prefix: str) -> str | None:
    """The handle a Handles Migration Task finds: a plain dc:identifier URL with the given prefix."""
    for element, url in _handle_urls(root, _DC_IDENTIFIER):
        if element.get(_XSI_TYPE) is not None:
            continue
        match = _HANDLE_URL.match(url)
        if match and match.group(1).startswith(prefix + "/"):
            return match.group(1)
    return None


def _apply(state: SimState, instance: Instance) -> None:
    kind = instance.job.kind
    prefix = _COUNTER_PREFIX[kind]
    members = [state.records[m] for m in instance.members if m in state.records]
    tally = {"processed": 0, "exceptions": 0, "modified": 0, "skipped": 0, "created": 0, "updated": 0}
    for start in range(0, len(members), BULK_SIZE):
        bulk = members[start : start + BULK_SIZE]
        tally["processed"] += len(bulk)
        if kind == "other":
            continue
        parsed: list[tuple[SimRecord, etree._Element | None]] = []
        failure: str | None = None
        for record in bulk:
            if not record.is_dc:
                failure = f"record {record.mms_id} is not a Dublin Core record ({record.record_format})"
                break
            root = None
            if kind in ("copy", "migration"):
                try:
                    root = parse_xml(record.xml, f"record {record.mms_id}")
                except UnsafeXmlError:
                    failure = f"record {record.mms_id} could not be read"
                    break
            parsed.append((record, root))
        if failure is not None:
            tally["exceptions"] += len(bulk)
            instance.events.append(f"Bulk of {len(bulk)} records failed: {failure}")
            continue
        for record, root in parsed:
            _apply_one(state, instance, kind, record, root, tally)
    if not members:
        status = "COMPLETED_NO_BULKS"
    elif tally["exceptions"]:
        status = "COMPLETED_FAILED"
        instance.alerts.append(_ERROR_ALERT)
    else:
        status = "COMPLETED_SUCCESS"
        instance.alerts.append(_SUCCESS_ALERT)
    counters = [("records_processed", "Records processed", tally["processed"])]
    counters.append(("records_with_exceptions", "Records with exceptions", tally["exceptions"]))
    if kind == "copy":
        counters.append(("records_modified", "Records modified", tally["modified"]))
    elif kind == "migration":
        counters.append(("records_skipped", "Records skipped", tally["skipped"]))
    elif kind == "integration":
        counters.append(("handles_created", "Handles created", tally["created"]))
        counters.append(("handles_updated", "Handles updated", tally["updated"]))
    instance.counters = [(f"{prefix}.{code}", desc, value) for code, desc, value in counters]
    instance.final_status = status
    instance.applied = True


def _apply_one(
    state: SimState,
    instance: Instance,
    kind: str,
    record: SimRecord,
    root: etree._Element | None,
    tally: dict[str, int],
) -> None:
    if kind == "copy":
        assert root is not None
        if _copy(state, record, root):
            tally["modified"] += 1
            record.last_modified_by = "System"
            record.last_modified_date = alma_date(instance.end)
    elif kind == "migration":
        assert root is not None
        if record.hidden_handle:
            tally["skipped"] += 1
            instance.events.append(EVENT_ALREADY.format(mms=record.mms_id, handle=record.hidden_handle))
            return
        handle = metadata_handle(root, state.scenario.handle_prefix)
        if handle is None:
            tally["skipped"] += 1
            instance.events.append(EVENT_NO_HANDLE.format(mms=record.mms_id))
        else:
            record.hidden_handle = handle
    elif kind == "integration":
        if record.hidden_handle:
            tally["updated"] += 1
        else:
            record.hidden_handle = state.mint()
            tally["created"] += 1
        state.register(record.hidden_handle, record.mms_id, instance.end)
