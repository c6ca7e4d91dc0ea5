"""Rules about Alma job runs, in one place: the name hwf gives a run, whether a run finished well,
whether an instance is one of this set's, and the time windows hwf reads Alma's history in.

Pure functions on plain values: the service layer applies them to attempts (rows) and to instances
(from the client) alike.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import date, datetime, timedelta
from typing import Any

from orchestrator.alma.types import GOOD_STATUSES, Counter
from orchestrator.domain.machine import Step

API_SUBMITTERS = ("exl_api", "api")
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


def names_set(instance_name: str | None, alma_set_id: str, set_name: str) -> bool:
    """The instance's name names this set: hwf's token form (exactly this set id), the set id on its
    own, or the UI's ``<job> - <set name> - <timestamp>``."""
    name = instance_name or ""
    hwf = HWF_NAME.search(name)
    if hwf:
        return hwf.group(2) == alma_set_id
    if re.search(rf"(?<!\d){re.escape(alma_set_id)}(?!\d)", name):
        return True
    if not set_name:
        return False
    return f" - {set_name} - " in name or name.endswith(f" - {set_name}") or name.startswith(f"{set_name} - ")


def instance_window(started: datetime, now: datetime) -> tuple[date, date]:
    """The ``submit_date_from/to`` to list instances in: Alma's date filter has an undocumented time
    zone, so widen by a day on both sides."""
    return (started - timedelta(days=1)).date(), (max(now, started) + timedelta(days=1)).date()


def settle_until(integration_ended: datetime, settle_minutes: float) -> datetime:
    """When verification may start: ``settle_minutes`` after the integration run ended."""
    return integration_ended + timedelta(minutes=settle_minutes)
