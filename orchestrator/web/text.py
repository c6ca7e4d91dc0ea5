"""Text from Alma and from operators, made safe to show on a page: each character
:mod:`orchestrator.display` calls unsafe (a terminal escape, a NUL, a bidirectional override, a line separator)
becomes a visible symbol, so a set name holding ESC shows as ``␛[31m``, not as nothing. Tab and newline pass.

The dashboard's script (``static/hwf.js``) cleans what it shows with the same character class (a test holds
it to this one)."""

from __future__ import annotations

from orchestrator.display import show_unsafe


def _picture(character: str) -> str:
    code = ord(character)
    if code < 0x20:
        return chr(0x2400 + code)  # the Unicode control pictures: U+241B for ESC
    if code == 0x7F:
        return "\u2421"
    return "\ufffd"  # C1 controls, bidirectional controls, line and paragraph separators


def clean(text: str) -> str:
    """``text`` with every unsafe character (tab and newline pass) replaced by a visible symbol."""
    return show_unsafe(text, _picture)
