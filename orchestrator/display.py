"""What hwf shows people, written once: which characters are unsafe to show as they are, how a moment is
written for people (``2026-02-02 15:04:05 UTC`` where it is stored; ``15:30 CST (in 52 min)`` on a screen, in the
reader's zone, always named) and for scripts (ISO-8601 with ``Z``), and how a duration is written (``4m 05s``).

The terminal (``cli/text.py``) and the dashboard (``web/text.py``) each choose how an unsafe character looks
(``\\x1b`` on a terminal, ``␛`` on a page); which characters are unsafe is decided here only.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import UTC, datetime, tzinfo
from typing import overload

# Unsafe to show as they are, in text from Alma, a CSV or an operator (set names, titles, reasons):
# - the C0 controls, DEL and the C1 controls: ESC and CSI (U+009B) restyle a terminal or move its cursor, CR
#   overwrites a line, NEL (U+0085) breaks one;
# - the bidirectional embeddings and overrides (U+202A-U+202E), isolates (U+2066-U+2069) and marks (U+200E LRM,
#   U+200F RLM, U+061C ALM): invisible, they reorder what is shown around them, so a set name could make a line
#   read differently from what it says;
# - the line and paragraph separators U+2028 and U+2029, which break a line as a newline does.
# Tab and newline are unsafe only where the caller wants one line (a table cell, a row of `hwf status`).
_UNSAFE = "\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069"
UNSAFE = re.compile(f"[{_UNSAFE}]")
"""One unsafe character; tab and newline pass."""
UNSAFE_IN_A_LINE = re.compile(f"[\t\n{_UNSAFE}]")
"""One unsafe character, tab and newline included."""


def show_unsafe(text: str, visible: Callable[[str], str], *, keep_newlines: bool = True) -> str:
    """``text`` with each unsafe character replaced by ``visible(character)``; tab and newline kept unless
    ``keep_newlines`` is False."""
    pattern = UNSAFE if keep_newlines else UNSAFE_IN_A_LINE
    return pattern.sub(lambda match: visible(match.group()), text)


def as_utc(at: datetime) -> datetime:
    """``at`` in UTC; a naive datetime is taken to be UTC already (as the database stores them)."""
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def utc_stamp(at: datetime, *, seconds: bool = True) -> str:
    """A moment for people, in UTC: ``2026-02-02 15:04:05 UTC`` (``2026-02-02 15:04 UTC`` without ``seconds``)."""
    return as_utc(at).strftime("%Y-%m-%d %H:%M:%S UTC" if seconds else "%Y-%m-%d %H:%M UTC")


@overload
def iso_z(at: datetime) -> str: ...


@overload
def iso_z(at: None) -> None: ...


@overload
def iso_z(at: datetime | None) -> str | None: ...


def iso_z(at: datetime | None) -> str | None:
    """A moment for scripts (JSON): ISO-8601 in UTC ending ``Z``, like ``2026-02-02T15:04:05.250000Z``; None stays
    None."""
    return None if at is None else as_utc(at).isoformat().replace("+00:00", "Z")


def duration(seconds: float) -> str:
    """A length of time for people: ``45s``, ``4m 05s``, ``2h 03m``, ``3d 04h`` (to the nearest second, a half
    up, as the dashboard's script rounds; never negative)."""
    total = max(math.floor(seconds + 0.5), 0)
    if total < 60:
        return f"{total}s"
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours:02d}h"


def in_zone(at: datetime, zone: tzinfo | None) -> datetime:
    """``at`` in ``zone`` (None: the machine's local zone, as ``TZ`` sets it)."""
    return as_utc(at).astimezone(zone)


def zone_name(moment: datetime) -> str:
    """The zone's short name (``CST``, ``UTC``), or its offset (``+05:30``) where it has none."""
    name = moment.strftime("%Z")
    if name and not name.startswith(("+", "-")):
        return name
    return moment.strftime("%z")[:3] + ":" + moment.strftime("%z")[3:]


def clock_time(at: datetime, zone: tzinfo | None, now: datetime | None = None, *, seconds: bool = False) -> str:
    """A moment for a reader: ``15:30 CST`` (the date first, ``2026-02-03 15:30 CST``, unless it is the day of
    ``now`` in that zone)."""
    moment = in_zone(at, zone)
    clock = moment.strftime("%H:%M:%S" if seconds else "%H:%M") + " " + zone_name(moment)
    if now is not None and in_zone(now, zone).date() == moment.date():
        return clock
    return moment.strftime("%Y-%m-%d ") + clock


def relative(at: datetime, now: datetime) -> str:
    """How far ``at`` is from ``now``: ``in 52 min``, ``3 min ago``, ``in 40 s``, ``in 2 h 05 min``, ``now``."""
    seconds = (as_utc(at) - as_utc(now)).total_seconds()
    size = abs(seconds)
    if size < 1:
        return "now"
    if size < 60:
        amount = f"{size:.0f} s"
    elif size < 3600:
        amount = f"{size // 60:.0f} min"
    elif size < 86400:
        amount = f"{size // 3600:.0f} h {size % 3600 // 60:02.0f} min"
    else:
        amount = f"{size // 86400:.0f} d {size % 86400 // 3600:.0f} h"
    return f"in {amount}" if seconds > 0 else f"{amount} ago"


def when(at: datetime, zone: tzinfo | None, now: datetime) -> str:
    """``15:30 CST (in 52 min)``: the moment in the reader's zone, and how far it is."""
    return f"{clock_time(at, zone, now)} ({relative(at, now)})"


_STORED = re.compile(r"\b(\d{4}-\d{2}-\d{2}) (\d{2}:\d{2})(:\d{2})? UTC\b")


def localize(text: str, zone: tzinfo | None, now: datetime | None = None) -> str:
    """``text`` with each moment written as :func:`utc_stamp` writes it (the form hwf stores in its reasons)
    rewritten in ``zone`` with its name, so that one line shows one zone."""

    def local(match: re.Match[str]) -> str:
        at = datetime.fromisoformat(f"{match.group(1)}T{match.group(2)}{match.group(3) or ''}+00:00")
        return clock_time(at, zone, now, seconds=match.group(3) is not None)

    return _STORED.sub(local, text)


def next_text(what: str, verb: str, at: datetime | None, zone: tzinfo | None, now: datetime) -> str:
    """What happens next and when, for a reader: ``migrate: 5 of 5 this hour; starts 15:30 CST (in 52 min)``
    (``verb``: the word before the time); ``what`` alone when nothing is scheduled (``at`` None), and no clock
    time for what is due now (``starts now``)."""
    if at is None:
        return what
    word = verb or "at"
    if as_utc(at) <= as_utc(now):
        return f"{what}; {word if word.endswith('now') else word + ' now'}"
    return f"{what}; {word} {when(at, zone, now)}"
