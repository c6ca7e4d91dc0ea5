"""Rules about Alma job runs, in one place: the name hwf gives a run, whether a run finished well,
whether an instance is one of this set's, and the time windows hwf reads Alma's history in.

Pure functions on plain values: the service layer applies them to attempts (rows) and to instances
(from the client) alike.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping
from datetime import date, datetime, timedelta
from typing import Any

from orchestrator.alma.types import GOOD_STATUSES, Counter, JobInstance
from orchestrator.domain.steps import Step

API_SUBMITTERS = ("exl_api", "api")
UNKNOWN_INSTANCE_CODES = frozenset({"402218"})  # Alma's "Invalid job instance id": it knows no such run
# Alma will not run the job through the API: 402231 "Job consisted of more than one task - executing such job is
# currently not supported via the API" (a normalization process of several tasks), 402221 "Operation is not
# supported", 402248 "Cannot submit scheduled job". A person runs such a step in Admin > Run a Job.
CANNOT_RUN_BY_API = frozenset({"402231", "402221", "402248"})
# The time stamp Alma appends to a run's name: "09/30/2025 11:35:15 CDT" (a run from Admin > Run a Job) or
# "2025-10-05 4:11 AM" (a run submitted through the API).
RUN_STAMP = (
    r"(?:\d{1,2}/\d{1,2}/\d{4}|\d{4}-\d{2}-\d{2})[ T]\d{1,2}:\d{2}(?::\d{2})?(?:\.\d+)?"
    r"(?: ?[AaPp][Mm])?(?: ?(?:[A-Z]{2,5}|[+-]\d{2}:?\d{2}|Z))?"
)
# hwf's job_name: "hwf <step> set <alma set id> hwf-<token>" (see job_name); Alma appends " - <timestamp>".
HWF_NAME = re.compile(r"\bhwf (copy_identifiers|migrate|integrate) set (\d+) (hwf-[0-9a-f]+)")
_EXCEPTION_WORDS = ("exception", "fail", "error")


def job_name(step: Step, alma_set_id: str, token: str) -> str:
    """The ``job_name`` hwf submits: short, ASCII, carrying the attempt token."""
    return f"hwf {step.value} set {alma_set_id} {token}"


def _counter_fields(counter: Counter | Mapping[str, Any]) -> tuple[str, str, Any]:
    if isinstance(counter, Counter):
        return counter.code, counter.desc, counter.value
    return str(counter.get("code") or ""), str(counter.get("desc") or ""), counter.get("value")


def exception_count(counters: Iterable[Counter | Mapping[str, Any]] | None) -> int:
    """Records with exceptions (or failed, or in error) that a run's counters report."""
    total = 0
    for counter in counters or ():
        code, desc, value = _counter_fields(counter)
        if any(word in f"{code} {desc}".lower() for word in _EXCEPTION_WORDS):
            total += counted(value, text_counts=1)
    return total


def counted(value: Any, *, text_counts: int = 0) -> int:
    """A counter's value as a count: numbers (and numeric text) as they are; a message Alma put in the
    counter (``"Download zip file for manual FTP."``) counts ``text_counts``; nothing counts 0.

    A text value in an exception counter counts as one exception: something went wrong, and hwf would
    rather stop a set than call a run with a failure message clean."""
    if value is None or isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return value
    try:
        number = float(str(value).strip())
    except ValueError:
        return text_counts if str(value).strip() else 0
    return int(number) if number == number and abs(number) != float("inf") else 0


def run_ok(status: str | None, counters: Iterable[Counter | Mapping[str, Any]] | None) -> bool:
    """A run finished well: a good terminal status and no record with exceptions."""
    return status in GOOD_STATUSES and exception_count(counters) == 0


def submitted_by_api(submitted_by: str | None) -> bool:
    """Alma's ``submitted_by`` for runs started through the API (``exl_api``, desc "Ex Libris, API")."""
    return (submitted_by or "").strip().lower() in API_SUBMITTERS


class SetMatch(enum.Enum):
    """What a job instance says about the set it ran on."""

    THIS = "this"  # it names this set (and, in hwf's form, this step)
    OTHER = "other"  # it names another set or another step
    UNKNOWN = "unknown"  # nothing in it ties the run to a set


def match_set(
    instance_name: str | None,
    alma_set_id: str,
    set_name: str,
    *,
    step: Step | None = None,
    set_param: str | None = None,
    job_name: str | None = None,
) -> tuple[SetMatch, str]:
    """Whether an instance ran on this set, and why: the set parameter or the instance's own set
    information if the reply carries one (``set_param``), else hwf's token form (exactly this set id,
    and ``step`` when given), else the set id on its own or the UI's ``<job> - <set name> - <timestamp>``
    in the name. A name that names nothing is UNKNOWN, never THIS."""
    name = instance_name or ""
    if set_param is not None and set_param.strip():
        if set_param.strip() == alma_set_id:
            return SetMatch.THIS, f"its set parameter is {alma_set_id}"
        return SetMatch.OTHER, f"it ran on set {set_param.strip()}, not {alma_set_id}"
    hwf = HWF_NAME.search(name)
    if hwf:
        if hwf.group(2) != alma_set_id:
            return SetMatch.OTHER, f"its name {name!r} names set {hwf.group(2)}, not {alma_set_id}"
        if step is not None and hwf.group(1) != step.value:
            return SetMatch.OTHER, f"its name {name!r} names the {hwf.group(1)} step, not {step.value}"
        return SetMatch.THIS, f"its name {name!r} carries hwf's name for set {alma_set_id}"
    if re.search(rf"(?<!\d){re.escape(alma_set_id)}(?!\d)", name):
        return SetMatch.THIS, f"its name {name!r} carries the set id {alma_set_id}"
    if set_name and names_set_by_hand(name, set_name, job_name):
        return SetMatch.THIS, f"its name {name!r} carries the set name {set_name!r}"
    return SetMatch.UNKNOWN, f"neither its name {name!r} nor anything else in Alma's reply names a set"


def names_set_by_hand(instance_name: str, set_name: str, job_name: str | None = None) -> bool:
    """A run made in Admin > Run a Job is named ``<job name> - <set name> - <time stamp>``: the whole name must be
    that, so that a set named ``Batch`` is not found in the run of ``Batch - Old``. With the job's name known,
    exactly it; without, any job name (then a set whose name ends another's, ``Old`` and ``Batch - Old``, is
    told apart only by the job's name)."""
    job = re.escape(job_name.strip()) if job_name and job_name.strip() else r".+?"
    pattern = rf"{job} - {re.escape(set_name.strip())} - {RUN_STAMP}"
    return re.fullmatch(pattern, instance_name.strip()) is not None


def match_instance(
    inst: JobInstance, job_id: str, step: Step, alma_set_id: str, set_name: str, job_name: str | None = None
) -> tuple[SetMatch, str]:
    """Whether ``inst`` may be adopted for ``step`` of this set, as far as the instance itself tells:
    it must be a run of the step's job and ran on this set (:func:`match_set`)."""
    if inst.job_id != job_id:
        return SetMatch.OTHER, f"instance {inst.id} is a run of job {inst.job_id}, not of the {step.value} job {job_id}"
    return match_set(inst.name, alma_set_id, set_name, step=step, set_param=inst.set_id, job_name=job_name)


_PROCESSED_WORDS = ("processed", "total", "handled")


def records_processed(counters: Iterable[Counter | Mapping[str, Any]] | None) -> int | None:
    """How many records a run went through, as its counters say ("Records processed", a total), or None when no
    counter says it (Alma's counter codes differ per job: they are matched by their words)."""
    found = None
    for counter in counters or ():
        code, desc, value = _counter_fields(counter)
        words = f"{code} {desc}".lower()
        if any(w in words for w in _PROCESSED_WORDS) and not any(w in words for w in _EXCEPTION_WORDS):
            found = (found or 0) + counted(value)
    return found


def handles_created(counters: Iterable[Counter | Mapping[str, Any]] | None) -> int | None:
    """How many new handles a run of the handle integration profile minted, as its counters say ("Handles
    created"), or None when no counter says it. After the migration job every record of a batch has its handle,
    so a run on the batch creates none: a run that created some ran on other records."""
    found = None
    for counter in counters or ():
        code, desc, value = _counter_fields(counter)
        words = f"{code} {desc}".lower()
        if (
            "handle" in words
            and ("creat" in words or "mint" in words)
            and not any(w in words for w in _EXCEPTION_WORDS)
        ):
            found = (found or 0) + counted(value)
    return found


def names_set(instance_name: str | None, alma_set_id: str, set_name: str, *, set_param: str | None = None) -> bool:
    """The instance names this set (:func:`match_set` is THIS)."""
    return match_set(instance_name, alma_set_id, set_name, set_param=set_param)[0] is SetMatch.THIS


def instance_window(started: datetime, now: datetime) -> tuple[date, date]:
    """The ``submit_date_from/to`` to list instances in: Alma's date filter has an undocumented time
    zone, so widen by a day on both sides."""
    return (started - timedelta(days=1)).date(), (max(now, started) + timedelta(days=1)).date()


# Alma's clock has been seen ~30 hours behind the local one: look back at least this far for runs that
# a lost database no longer knows about, so that no step is submitted again after the database was lost.
HISTORY_LOOKBACK = timedelta(days=3)


def history_window(now: datetime) -> tuple[date, date]:
    """The ``submit_date_from/to`` to look for a step's earlier runs in, before its first submission."""
    return (now - HISTORY_LOOKBACK).date(), (now + timedelta(days=1)).date()


def settle_until(integration_ended: datetime, settle_minutes: float) -> datetime:
    """When verification may start: ``settle_minutes`` after the integration run ended."""
    return integration_ended + timedelta(minutes=settle_minutes)


WINDOW = timedelta(hours=1)  # Alma counts the runs of one job in any hour
LONGEST_POLL_SECONDS = 300.0  # the longest wait between two polls of a running job


def window_free_at(starts: list[datetime], per_hour: int) -> datetime | None:
    """When Alma's hourly limit lets the next run of a job start, given its ``starts`` of the last hour (oldest
    first): None when fewer than ``per_hour``; else just after the hour of the start that fills the window (a
    start counts while it is at most an hour old)."""
    if len(starts) < per_hour:
        return None
    return starts[len(starts) - per_hour] + WINDOW + timedelta(seconds=1)


def window_starts(per_hour: int, starts: list[datetime], now: datetime, runs: int) -> list[datetime]:
    """The earliest moments the next ``runs`` runs of one job can start under the hourly limit, one after the
    other from ``now``, given its earlier ``starts`` (any order): they follow the window's resets, not ``now``."""
    window = sorted(starts)
    out: list[datetime] = []
    at = now
    for _ in range(runs):
        while True:
            window = [t for t in window if t >= at - WINDOW]
            free = window_free_at(window, per_hour)
            if free is None or free <= at:
                break
            at = free
        window.append(at)
        out.append(at)
    return out


def poll_due(next_poll_at: datetime | None, poll_interval: float | None, now: datetime, longest: float) -> datetime:
    """When a running job's next poll is due: as scheduled, or now if that is further away than the interval it
    was scheduled with (``longest`` when none is recorded: the clock was stepped back, polling now reschedules)."""
    due = next_poll_at or now
    if due > now + timedelta(seconds=poll_interval or longest):
        return now
    return due


POLL_GROWTH = 1.5  # each poll of a running job waits this much longer than the one before, up to the maximum


def next_poll_interval(current: float | None, maximum: float) -> float:
    """The wait before the next poll of a job still running: the last wait grown, at most ``maximum``."""
    return min((current or 1.0) * POLL_GROWTH, maximum)


def poll_schedule(first: float, maximum: float) -> str:
    """How the polls of a running job are spaced, for people: ``every 15 s, growing to 300 s``."""
    return f"every {first:g} s, growing to {maximum:g} s"


def run_seconds(
    alma_submitted: datetime | None,
    alma_ended: datetime | None,
    submitted: datetime | None,
    ended: datetime | None,
) -> float | None:
    """How long a run took, submission to end: by Alma's clock when Alma gave both times, else by hwf's
    (never one of each: the two clocks have been seen hours apart). None while it has not ended."""
    if alma_submitted is not None and alma_ended is not None:
        return max((alma_ended - alma_submitted).total_seconds(), 0.0)
    if submitted is not None and ended is not None:
        return max((ended - submitted).total_seconds(), 0.0)
    return None


def describe_counters(counters: Iterable[Counter | Mapping[str, Any]] | None) -> str:
    """A run's counters for people: ``Records processed: 100, Records with exceptions: 0``."""
    parts = []
    for counter in counters or ():
        code, desc, value = _counter_fields(counter)
        parts.append(f"{desc or code}: {value}")
    return ", ".join(parts) or "no counters"
