"""Plain, frozen shapes of the Alma objects hwf reads. No XML or HTTP here.

The client (``alma.py``) builds these from XML or JSON replies; the workflow only ever sees these.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

TERMINAL_STATUSES = frozenset(
    {
        "COMPLETED_SUCCESS",
        "COMPLETED_WARNING",
        "COMPLETED_FAILED",
        "COMPLETED_NO_BULKS",
        "FAILED",
        "SKIPPED",
        "SYSTEM_ABORTED",
        "USER_ABORTED",
        "MANUAL_HANDLING_REQUIRED",
    }
)
GOOD_STATUSES = frozenset({"COMPLETED_SUCCESS", "COMPLETED_WARNING"})


@dataclass(frozen=True)
class AlmaSetInfo:
    """An Alma set as ``GET /conf/sets/{id}`` describes it."""

    id: str
    name: str
    type: str | None = None  # ITEMIZED / LOGICAL
    content: str | None = None  # BIB_MMS, IED, ...
    member_count: int | None = None


@dataclass(frozen=True)
class SetMember:
    """One member of a set: for title sets, the MMS ID and Alma's description (the title)."""

    id: str
    description: str | None = None


@dataclass(frozen=True)
class Counter:
    """A job-instance counter; ``code`` is job-specific, ``desc`` is the UI text.

    ``value`` is a count, or text where Alma puts a message in a counter (real instances carry
    ``{"type": {"value": "FTP has failed."}, "value": "Download zip file for manual FTP."}``)."""

    code: str
    desc: str
    value: int | str


@dataclass(frozen=True)
class Alert:
    code: str
    desc: str


@dataclass(frozen=True)
class JobInstance:
    """One run of a job (``GET /conf/jobs/{job}/instances/{id}``)."""

    id: str
    job_id: str
    name: str | None
    status: str  # systemJobStatus code, e.g. RUNNING, COMPLETED_SUCCESS
    status_desc: str | None = None
    progress: float | None = None
    submitted_by: str | None = None
    submit_time: datetime | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    counters: tuple[Counter, ...] = ()
    alerts: tuple[Alert, ...] = ()
    # The set the run was on, when a reply carries it (a set_id parameter or the instance's own set
    # information); None when it does not, as in every reply seen so far (Alma's documented instance has no set).
    set_id: str | None = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES


@dataclass(frozen=True)
class JobRun:
    """What ``POST /conf/jobs/{id}?op=run`` answered: the new instance id."""

    job_id: str
    instance_id: str
    info: str | None = None


@dataclass(frozen=True)
class JobParameter:
    name: str
    value: str | None = None
    description: str | None = None


@dataclass(frozen=True)
class JobInfo:
    """A job definition (``GET /conf/jobs`` or ``/conf/jobs/{id}``)."""

    id: str
    name: str
    type: str | None = None  # MANUAL / SCHEDULED / OTHER
    category: str | None = None
    description: str | None = None
    parameters: tuple[JobParameter, ...] = ()


@dataclass(frozen=True)
class Bib:
    """A bibliographic record. ``xml`` is the whole ``<bib>`` element exactly as Alma sent it
    (or, for JSON replies, rebuilt around the ``anies`` record string)."""

    mms_id: str
    record_format: str | None
    title: str | None
    xml: bytes
    record_xml: bytes | None = None  # the <record> element alone, as sent


@dataclass(frozen=True)
class BibBatch:
    """The answer to ``GET /bibs?mms_id=...``: the bibs found and the ids Alma silently left out."""

    bibs: tuple[Bib, ...]
    missing: tuple[str, ...] = field(default=())
