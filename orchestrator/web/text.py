"""Text from Alma and from operators, made safe to show: control characters (a terminal escape, a NUL)
become visible symbols, so a set name holding ESC shows as ``␛[31m``, not as nothing."""

from __future__ import annotations

import re

_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _picture(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code < 0x20:
        return chr(0x2400 + code)  # the Unicode control pictures: U+241B for ESC
    if code == 0x7F:
        return "\u2421"
    return "\ufffd"  # C1 controls and bidirectional overrides


def clean(text: str) -> str:
    """``text`` with every control character (except tab and newline) replaced by a visible symbol."""
    return _CONTROL.sub(_picture, text)
