"""orchestrator.display (issue 19, point 5): one rule for the characters unsafe to show, used by the terminal and
the dashboard alike, and one way of writing a moment and a duration."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from orchestrator import display
from orchestrator.cli import text as terminal
from orchestrator.web import text as page

# The characters that reorder or break a line without being seen, which the two cleaners once disagreed on.
REORDERING = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c"
SEPARATORS = "\u2028\u2029"


@pytest.mark.parametrize("character", list(REORDERING + SEPARATORS), ids=lambda c: f"U+{ord(c):04X}")
def test_bidi_controls_and_separators_are_made_visible_everywhere(character: str) -> None:
    name = f"Theses {character}2024 fdp"
    shown = terminal.clean(name)
    assert character not in shown and f"\\u{ord(character):04x}" in shown
    assert character not in terminal.clean(name, keep_newlines=True)
    assert character not in terminal.safe(name)
    assert page.clean(name) == "Theses \ufffd2024 fdp"


def test_a_set_name_cannot_reorder_the_status_line() -> None:
    """An RLO in a set name would show ``exe.txt`` as ``txt.exe``; both cleaners show it as a mark instead."""
    name = "invoice \u202etxt.exe"
    assert terminal.clean(name) == "invoice \\u202etxt.exe"
    assert page.clean(name) == "invoice \ufffdtxt.exe"


def test_both_cleaners_use_the_one_rule() -> None:
    for code in range(0x3000):
        character = chr(code)
        unsafe = display.UNSAFE.fullmatch(character) is not None
        assert (page.clean(character) != character) == unsafe, f"U+{code:04X}"
        assert (terminal.clean(character, keep_newlines=True) != character) == unsafe, f"U+{code:04X}"
        one_line = display.UNSAFE_IN_A_LINE.fullmatch(character) is not None
        assert (terminal.clean(character) != character) == one_line, f"U+{code:04X}"


def test_each_keeps_its_own_rendering() -> None:
    text = "a\x00b\x1bc\x7fd\x9be\u202ef\u2028g\th\ni"
    assert terminal.clean(text) == "a\\x00b\\x1bc\\x7fd\\x9be\\u202ef\\u2028g\\x09h\\x0ai"
    assert terminal.clean(text, keep_newlines=True) == "a\\x00b\\x1bc\\x7fd\\x9be\\u202ef\\u2028g\th\ni"
    assert page.clean(text) == "a\u2400b\u241bc\u2421d\ufffde\ufffdf\ufffdg\th\ni"
    assert terminal.safe("[bold]x\x1b[/]") == "\\[bold]x\\x1b\\[/]"


def test_ordinary_text_passes_unchanged() -> None:
    text = "Thèses numérisées, 2024 – ‘final’ 🙂 עברית العربية 中文"
    assert terminal.clean(text) == page.clean(text) == text


def test_the_dashboard_script_uses_the_same_character_class() -> None:
    script = (Path(page.__file__).parent / "static" / "hwf.js").read_text(encoding="utf-8")
    match = re.search(r"function clean\(value\) \{.*?replace\(\s*/(\[[^\]]*\])/g", script, re.S)
    assert match is not None
    js = re.compile(match.group(1))  # \uXXXX means the same in a Python pattern
    for code in range(0x10000):
        character = chr(code)
        assert (js.fullmatch(character) is None) == (display.UNSAFE.fullmatch(character) is None), f"U+{code:04X}"


# ---------------------------------------------------------------------------------------------
# times and durations


def test_utc_stamp() -> None:
    at = datetime(2026, 2, 2, 15, 4, 5, 250_000, tzinfo=UTC)
    assert display.utc_stamp(at) == "2026-02-02 15:04:05 UTC"
    assert display.utc_stamp(at, seconds=False) == "2026-02-02 15:04 UTC"
    assert display.utc_stamp(at.replace(tzinfo=None)) == "2026-02-02 15:04:05 UTC"  # naive: taken as UTC
    chicago = at.astimezone(timezone(timedelta(hours=-6)))
    assert display.utc_stamp(chicago) == "2026-02-02 15:04:05 UTC"


def test_iso_z() -> None:
    assert display.iso_z(None) is None
    at = datetime(2026, 2, 2, 15, 4, 5, tzinfo=UTC)
    assert display.iso_z(at) == "2026-02-02T15:04:05Z"
    assert display.iso_z(at.replace(microsecond=250_000)) == "2026-02-02T15:04:05.250000Z"
    assert display.iso_z(at.replace(tzinfo=None)) == "2026-02-02T15:04:05Z"
    assert display.iso_z(at.astimezone(timezone(timedelta(hours=5, minutes=30)))) == "2026-02-02T15:04:05Z"


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (0, "0s"),
        (-3, "0s"),
        (0.4, "0s"),
        (0.5, "1s"),
        (2.5, "3s"),
        (45, "45s"),
        (59.6, "1m 00s"),
        (245, "4m 05s"),
        (3599, "59m 59s"),
        (3600, "1h 00m"),
        (2 * 3600 + 3 * 60 + 20, "2h 03m"),
        (86399, "23h 59m"),
        (3 * 86400 + 4 * 3600, "3d 04h"),
    ],
)
def test_duration(seconds: float, shown: str) -> None:
    assert display.duration(seconds) == shown


def test_times_for_a_reader_in_chicago_are_local_named_and_relative() -> None:
    from zoneinfo import ZoneInfo

    chicago = ZoneInfo("America/Chicago")
    now = datetime(2026, 12, 5, 20, 38, tzinfo=UTC)
    reset = datetime(2026, 12, 5, 21, 30, 55, tzinfo=UTC)
    assert display.clock_time(reset, chicago, now) == "15:30 CST"
    assert display.clock_time(reset, chicago) == "2026-12-05 15:30 CST"  # no day to compare with: the date
    assert display.clock_time(reset + timedelta(days=1), chicago, now) == "2026-12-06 15:30 CST"
    assert display.when(reset, chicago, now) == "15:30 CST (in 52 min)"
    assert display.clock_time(reset, UTC, now) == "21:30 UTC"
    assert display.relative(now - timedelta(minutes=3), now) == "3 min ago"
    assert display.relative(now + timedelta(seconds=40), now) == "in 40 s"
    assert display.relative(now + timedelta(hours=2, minutes=5), now) == "in 2 h 05 min"
    assert display.relative(now, now) == "now"
    assert display.clock_time(reset, timezone(timedelta(hours=5, minutes=30)), now) == "03:00 UTC+05:30"


def test_localize_rewrites_stored_utc_moments_in_the_readers_zone() -> None:
    from zoneinfo import ZoneInfo

    chicago = ZoneInfo("America/Chicago")
    now = datetime(2026, 12, 5, 20, 38, tzinfo=UTC)
    stored = "job M1 (migrate) started 5 times in the last hour (Alma allows 5); next slot at 2026-12-05 21:30:55 UTC"
    assert display.localize(stored, chicago, now).endswith("next slot at 15:30:55 CST")
    assert display.localize("settles at 2026-12-06 03:00 UTC", chicago, now) == "settles at 21:00 CST"
    assert "UTC" not in display.localize(stored, chicago)
    assert display.localize("no time here", chicago) == "no time here"


def test_names_are_shortened_in_the_middle_so_the_batch_survives() -> None:
    name = "Handles 2026 rehearsal of the digital collections (batch 3/30)"
    assert terminal.shorten_middle(name, 30) == "Handles 2026 rehe…(batch 3/30)"
    assert terminal.shorten_middle("Grinnell: Student newspapers [batch 2/9]", 24) == "Grinnell: St…[batch 2/9]"
    assert terminal.shorten_middle("no brackets in this rather long name", 20) == "no bracket…long name"
    assert terminal.shorten_middle("short (batch 1/2)", 30) == "short (batch 1/2)"
    assert all(len(terminal.shorten_middle(name, w)) <= w for w in range(1, len(name)))
    assert all(terminal.shorten_middle(name, w).endswith("(batch 3/30)") for w in range(17, len(name)))


def test_next_text_says_when_in_the_readers_zone_or_now() -> None:
    from zoneinfo import ZoneInfo

    chicago = ZoneInfo("America/Chicago")
    now = datetime(2026, 12, 5, 20, 38, tzinfo=UTC)
    later = now + timedelta(minutes=52)
    assert display.next_text("migrate: 5 of 5 this hour", "starts", later, chicago, now) == (
        "migrate: 5 of 5 this hour; starts 15:30 CST (in 52 min)"
    )
    assert display.next_text("migrate job", "starts now", now, chicago, now) == "migrate job; starts now"
    assert display.next_text("set 1: poll", "next poll", now, chicago, now) == "set 1: poll; next poll now"
    assert display.next_text("needs a person: hwf retry 1", "", None, chicago, now) == "needs a person: hwf retry 1"
