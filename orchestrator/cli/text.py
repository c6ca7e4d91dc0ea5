"""Text for the terminal: the one escaping function every renderer uses, and local times.

Everything that comes from Alma, a CSV or an operator (set names, titles, job names, reasons) is data:
``safe`` makes it print as itself on a rich console (markup such as ``[/]`` or ``[link=...]`` escaped, the
characters :mod:`orchestrator.display` calls unsafe shown as escapes such as ``\\x1b`` or ``\\u202e``);
``clean`` does the second half for plain output.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, tzinfo

from rich.markup import escape

from orchestrator.display import as_utc, clock_time, localize, next_text, show_unsafe, when


def _escape(character: str) -> str:
    code = ord(character)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def clean(text: object, *, keep_newlines: bool = False) -> str:
    """``text`` with every unsafe character (ESC, CR, BEL, a bidirectional override, ..., and tab and newline
    unless ``keep_newlines``) replaced by its escape, so nothing it contains can move the cursor, restyle the
    terminal or reorder the line."""
    return show_unsafe(str(text), _escape, keep_newlines=keep_newlines)


def safe(text: object, *, keep_newlines: bool = False) -> str:
    """``text`` for a rich console: unsafe characters made visible, rich markup escaped."""
    return escape(clean(text, keep_newlines=keep_newlines))


def shorten(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters with an ellipsis (for a screen; never for piped output)."""
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


_TAIL = re.compile(r"[(\[][^()\[\]]*[)\]]\s*$")  # a name's last bracketed part: "(batch 3/30)"


def shorten_middle(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters in the middle, so that its end survives: a name's last bracketed
    part (``(batch 3/30)``) whole when it leaves room for a few characters of the start."""
    if len(text) <= width:
        return text
    if width < 8:
        return shorten(text, width)
    tail = _TAIL.search(text)
    keep = len(tail.group()) if tail and len(tail.group()) <= width - 5 else (width - 1) // 2
    return text[: width - 1 - keep].rstrip() + "…" + text[len(text) - keep :]


class TimeDisplay:
    """How the terminal shows a moment: local time with its zone (``--utc``/``[display] utc``: UTC), the
    date only when it differs from the first moment shown (a run that spans days shows it)."""

    def __init__(self, *, utc: bool = False, zone: tzinfo | None = None) -> None:
        self.zone: tzinfo | None = UTC if utc else zone
        self._first_day: str | None = None

    def local(self, at: datetime) -> datetime:
        return as_utc(at).astimezone(self.zone)  # zone None: the machine's local zone

    def stamp(self, at: datetime) -> str:
        """``14:02:05 CST`` (the date before it once the day changes)."""
        moment = self.local(at)
        day = moment.strftime("%Y-%m-%d")
        if self._first_day is None:
            self._first_day = day
        clock = moment.strftime("%H:%M:%S %Z").strip()
        return clock if day == self._first_day else f"{day} {clock}"

    def when(self, at: datetime, now: datetime) -> str:
        """``15:30 CST (in 52 min)``."""
        return when(at, self.zone, now)

    def next(self, what: str, verb: str, at: datetime | None, now: datetime) -> str:
        """``migrate: 5 of 5 this hour; starts 15:30 CST (in 52 min)`` (``display.next_text``)."""
        return next_text(localize(what, self.zone, now), verb, at, self.zone, now)

    def clock(self, at: datetime, now: datetime | None = None) -> str:
        """``15:30 CST`` (with the date unless it is the day of ``now``)."""
        return clock_time(at, self.zone, now)

    def localize(self, text: str, now: datetime | None = None) -> str:
        """``text`` with the UTC moments hwf stores in its reasons written in this zone."""
        return localize(text, self.zone, now)

    def full(self, at: datetime) -> str:
        """``2026-02-02 14:02:05 CST``."""
        return self.local(at).strftime("%Y-%m-%d %H:%M:%S %Z").strip()
