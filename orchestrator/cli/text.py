"""Text for the terminal: the one escaping function every renderer uses, times, durations.

Everything that comes from Alma, a CSV or an operator (set names, titles, job names, reasons) is data:
``safe`` makes it print as itself on a rich console (markup such as ``[/]`` or ``[link=...]`` escaped,
control characters such as ESC shown as ``\\x1b``); ``clean`` does the second half for plain output.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, tzinfo

from rich.markup import escape

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")
_CONTROL_OR_NEWLINE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _visible(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def clean(text: object, *, keep_newlines: bool = False) -> str:
    """``text`` with every control character (ESC, CR, BEL, ..., and newlines unless ``keep_newlines``)
    replaced by its visible escape, so nothing it contains can move the cursor or restyle the terminal."""
    pattern = _CONTROL if keep_newlines else _CONTROL_OR_NEWLINE
    return pattern.sub(_visible, str(text))


def safe(text: object, *, keep_newlines: bool = False) -> str:
    """``text`` for a rich console: control characters made visible, rich markup escaped."""
    return escape(clean(text, keep_newlines=keep_newlines))


def shorten(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters with an ellipsis (for a screen; never for piped output)."""
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def duration(seconds: float) -> str:
    """``45s``, ``4m 05s``, ``2h 03m``, ``3d 04h``."""
    total = max(int(round(seconds)), 0)
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


class TimeDisplay:
    """How the terminal shows a moment: local time with its zone (``--utc``/``[display] utc``: UTC), the
    date only when it differs from the first moment shown (a run that spans days shows it)."""

    def __init__(self, *, utc: bool = False, zone: tzinfo | None = None) -> None:
        self.zone: tzinfo | None = UTC if utc else zone
        self._first_day: str | None = None

    def local(self, at: datetime) -> datetime:
        at = at.replace(tzinfo=UTC) if at.tzinfo is None else at
        return at.astimezone(self.zone)  # zone None: the machine's local zone

    def stamp(self, at: datetime) -> str:
        """``14:02:05 CST`` (the date before it once the day changes)."""
        moment = self.local(at)
        day = moment.strftime("%Y-%m-%d")
        if self._first_day is None:
            self._first_day = day
        clock = moment.strftime("%H:%M:%S %Z").strip()
        return clock if day == self._first_day else f"{day} {clock}"

    def full(self, at: datetime) -> str:
        """``2026-02-02 14:02:05 CST``."""
        return self.local(at).strftime("%Y-%m-%d %H:%M:%S %Z").strip()
