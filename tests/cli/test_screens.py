"""The 80-column screens of a migration in its long wait, as snapshots (the pattern of ``test_render.py``): 30
sets with long names, waits for the hourly window and attentions, in ``hwf status`` and ``hwf overview`` (and
``overview --watch``, which wraps as the one-shot view does). Names are shortened in the middle so ``(batch
3/30)`` survives, the useful part of a line comes first, and times are Chicago's, named, with how far they are.
Regenerate with ``UPDATE_SNAPSHOTS=1`` and review the diff."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from rich.console import Console
from rich.live import Live

from orchestrator.cli.render import RichReporter, print_status
from orchestrator.cli.run import result_line
from orchestrator.cli.serve import render_overview, watch_console
from orchestrator.cli.text import TimeDisplay
from orchestrator.service.nextstep import Next, ordinal
from orchestrator.service.overview import AttentionItem, JobLimits, Overview, RunningJob
from orchestrator.service.views import SetSummary
from orchestrator.service.workflow import AdvanceResult, Outcome
from tests.cli.test_render import check_snapshot, screen

NOW = datetime(2026, 12, 5, 20, 38, 0, tzinfo=UTC)
CHICAGO = TimeDisplay(zone=ZoneInfo("America/Chicago"))
NAME = "Handles 2026 rehearsal of the digital collections (batch {k}/30)"
FIX = "29 of 40 records are not ready for the Handle Migration job: 29 NEEDS_FIX (dc:identifier carries xsi:type)"


def _sets() -> list[SetSummary]:
    rows = []
    reset = NOW + timedelta(minutes=52)
    for k in range(1, 31):
        alma_id = f"75934665600{k:05d}"
        if k <= 5:
            nxt = Next(None, "verified", kind="done")
            rows.append(SetSummary(alma_id, NAME.format(k=k), "verified", None, 100, next=nxt))
        elif k in (6, 7):
            nxt = Next(None, f"needs a person: hwf fix {alma_id} --apply", kind="needs a person", person=True)
            rows.append(SetSummary(alma_id, NAME.format(k=k), "identifiers_copied", FIX, 40, next=nxt))
        elif k <= 10:
            nxt = Next(NOW + timedelta(seconds=15), "migrate job running (in progress 40%)", "next poll", kind="poll")
            rows.append(SetSummary(alma_id, NAME.format(k=k), "identifiers_copied", None, 100, next=nxt))
        else:
            hour = (k - 11) // 5
            place = f", {ordinal(k - 10)} in line" if k > 11 else ""
            what = f"migrate: 5 of 5 this hour{place}"
            nxt = Next(reset + timedelta(hours=hour), what, "starts", kind="window")
            waiting = (
                "waiting for a job slot: job M2234567890000561 (migrate) started 5 times in the last hour "
                "(Alma allows 5); next slot at 2026-12-05 21:30:55 UTC"
            )
            rows.append(SetSummary(alma_id, NAME.format(k=k), "identifiers_copied", None, 100, waiting, next=nxt))
    return rows


def _overview() -> Overview:
    sets = _sets()
    attention = tuple(
        AttentionItem(s.set, s.name, s.state, "records", s.attention or "", f"hwf fix {s.set} --apply", "")
        for s in sets
        if s.attention
    )
    running = tuple(
        RunningJob(s.set, s.name, "migrate", "M2234567890000561", f"75934676300{i:05d}", "RUNNING", 40.0, NOW, 10.0)
        for i, s in enumerate(sets[7:10])
    )
    return Overview(
        generated_at=NOW,
        sets=30,
        sets_by_state={"created": 0, "identifiers_copied": 25, "migrated": 0, "integrated": 0, "verified": 5},
        records=2880,
        records_excluded=0,
        records_verified=500,
        attention=attention,
        running=running,
        waiting=20,
        waiting_for_person=0,
        eta=NOW + timedelta(hours=4, minutes=57),
        eta_note="23 set(s) to go; the earliest Alma's limits allow at the job durations measured so far",
        limits=JobLimits(3, 5, 3, {"copy_identifiers": 0, "migrate": 5, "integrate": 5}),
        durations={},
        verified_over_time=(),
        last_checked={},
        next=Next(NOW + timedelta(seconds=15), f"set {sets[7].set} ({sets[7].name}): migrate job running", "next poll"),
    )


def test_status_of_thirty_sets_in_80_columns() -> None:
    text = screen(80, lambda c: print_status(c, _sets(), times=CHICAGO, now=NOW))
    assert "(batch 3/30)" in text and "(batch 30/30)" in text  # every name keeps its batch
    assert "migrate: 5 of 5 this hour, 3rd in line; starts 15:30 CST (in 52 min)" in text
    assert "ATTENTION, to go on: hwf fix 7593466560000006 --apply;" in text
    assert "UTC" not in text
    check_snapshot("status_thirty_80", text, 80)


def test_overview_of_thirty_sets_in_80_columns() -> None:
    text = screen(80, lambda c: c.print(render_overview(_overview(), CHICAGO), soft_wrap=False))
    assert "hwf overview, 2026-12-05 14:38:00 CST" in text and "ETA: 19:35 CST (in 4 h 57 min)" in text
    assert "Next: set 7593466560000008" in text and "next poll 14:38 CST (in 15 s)" in text
    assert "(batch 6/30)" in text and "→ hwf fix 7593466560000006 --apply" in text
    check_snapshot("overview_thirty_80", text, 80)


def test_overview_watch_wraps_as_the_one_shot_view_does() -> None:
    once = screen(80, lambda c: c.print(render_overview(_overview(), CHICAGO), soft_wrap=False))
    buffer = io.StringIO()
    console = watch_console(file=buffer, width=80, force_terminal=True, color_system=None, record=True)
    with Live(render_overview(_overview(), CHICAGO), console=console, auto_refresh=False, transient=False) as live:
        live.refresh()
    watched = console.export_text()
    for line in once.splitlines():
        assert line.rstrip() in watched, line
    assert all(f"759346763000000{i}" in watched for i in range(3))  # ids whole, as in the one-shot view


def test_advance_and_resume_lines_show_the_wait_in_the_readers_zone() -> None:
    message = (
        "waiting for a job slot: job M2234567890000561 (migrate) started 5 times in the last hour (Alma allows 5); "
        "next slot at 2026-12-05 21:30:55 UTC"
    )
    line = result_line(AdvanceResult("7593466560000011", "Batch", Outcome.WAITING, "migrated", message), CHICAGO)
    assert line.endswith("next slot at 2026-12-05 15:30:55 CST") and "UTC" not in line


def test_a_progress_note_shows_one_zone() -> None:
    def draw(console: Console) -> None:
        reporter = RichReporter(console, times=CHICAGO, now=lambda: NOW)
        reporter.note("Batch 6", "waiting for a job slot: ...; next slot at 2026-12-05 21:30:55 UTC")

    text = screen(80, draw)
    assert text.startswith("14:38:00 CST Batch 6: ") and "next slot at 15:30:55 CST" in text and "UTC" not in text
