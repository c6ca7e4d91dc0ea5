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
    if set_name and (
        f" - {set_name} - " in name or name.endswith(f" - {set_name}") or name.startswith(f"{set_name} - ")
    ):
        return SetMatch.THIS, f"its name {name!r} carries the set name {set_name!r}"
    return SetMatch.UNKNOWN, f"neither its name {name!r} nor anything else in Alma's reply names a set"


def match_instance(inst: JobInstance, job_id: str, step: Step, alma_set_id: str, set_name: str) -> tuple[SetMatch, str]:
    """Whether ``inst`` may be adopted for ``step`` of this set, as far as the instance itself tells:
    it must be a run of the step's job and ran on this set (:func:`match_set`)."""
    if inst.job_id != job_id:
        return SetMatch.OTHER, f"instance {inst.id} is a run of job {inst.job_id}, not of the {step.value} job {job_id}"
    return match_set(inst.name, alma_set_id, set_name, step=step, set_param=inst.set_id)


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
