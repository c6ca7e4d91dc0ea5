"""Moments and names as the dashboard shows them.

A moment goes to the browser as ISO-8601 in ``<time datetime="…">``, with the UTC stamp as its text for a
reader without script; the page's script (``static/hwf.js``) writes it again in the browser's own zone, the zone
named, with how long ago or how soon it is ("3 min ago", "in 52 min"), and keeps that up to date.

Names sort naturally: ``batch 2`` before ``batch 10``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from markupsafe import Markup

from orchestrator.display import as_utc, iso_z, utc_stamp

# full: 2026-12-05 14:28:58 CST; short: 14:28 CST today, else with its date; rel: "in 52 min" only (in full on hover)
FORMATS = ("full", "short", "rel")
_DIGITS = re.compile(r"(\d+)")


def moment(at: datetime | str | None) -> datetime | None:
    """``at`` as an aware datetime in UTC; an ISO-8601 string (``Z`` or an offset) is read; None stays None."""
    if at is None or at == "":
        return None
    if isinstance(at, str):
        at = datetime.fromisoformat(at)
    return as_utc(at)


def time_tag(at: datetime | str | None, *, rel: bool = False, format: str = "full") -> Markup:
    """``<time datetime="ISO">2026-12-05 20:28:58 UTC</time>``; ``rel``: the script adds how long ago or how
    soon; ``format``: one of ``FORMATS``. Nothing for no moment."""
    when = moment(at)
    if when is None:
        return Markup("")
    if format not in FORMATS:
        raise ValueError(f"unknown time format {format!r}")
    extra = Markup(" data-rel") if rel else Markup("")
    if format != "full":
        extra += Markup(' data-format="%s"') % format
    return Markup('<time datetime="%s"%s>%s</time>') % (iso_z(when), extra, utc_stamp(when))


def zone_of(name: str | None) -> tzinfo:
    """The time zone a page asked for by its IANA name (``America/Chicago``), for the charts it draws; UTC for
    none, or for a name that is not a zone (the stamps name their zone either way)."""
    if not name or len(name) > 64:
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return UTC


def stamp(at: datetime, zone: tzinfo = UTC, *, seconds: bool = True) -> str:
    """A moment in ``zone``, the zone named: ``2026-12-05 14:28:58 CST`` (``… 14:28 CST`` without ``seconds``);
    in UTC exactly as ``display.utc_stamp`` writes it."""
    if zone is UTC:
        return utc_stamp(at, seconds=seconds)
    local = as_utc(at).astimezone(zone)
    return local.strftime("%Y-%m-%d %H:%M:%S " if seconds else "%Y-%m-%d %H:%M ") + (local.tzname() or "")


def natural_key(text: str) -> tuple[tuple[int, int | str], ...]:
    """A sort key that orders the numbers inside a name by value: ``batch 2`` before ``batch 10``; case-blind."""
    return tuple((1, int(part)) if i % 2 else (0, part) for i, part in enumerate(_DIGITS.split(text.casefold())))


@dataclass(frozen=True)
class Next:
    """What happens next, and when (``at`` may be unknown)."""

    at: datetime | None
    what: str


def next_of(*holders: Any) -> Next | None:
    """The first ``next`` a view carries (an attribute or a key ``next`` holding ``{"at", "what"}``, as a dict or
    an object), or None when none carries one."""
    for holder in holders:
        value = holder.get("next") if isinstance(holder, dict) else getattr(holder, "next", None)
        if value is None:
            continue
        if isinstance(value, dict):
            at, what = value.get("at"), value.get("what")
        else:
            at, what = getattr(value, "at", None), getattr(value, "what", None)
        if what or at:
            return Next(moment(at), str(what or ""))
    return None
