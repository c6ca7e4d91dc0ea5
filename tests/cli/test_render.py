"""Snapshots of the main screens at 80 and 120 columns (rich ``Console(width=..., record=True)``): status,
one set's status, check, advance/resume lines, the Steps table and verdicts of the demo, history, and the
progress display. A change in layout fails here; after a deliberate change, regenerate the snapshots with
``UPDATE_SNAPSHOTS=1 pytest tests/cli/test_render.py`` and review the diff of ``tests/cli/snapshots/``."""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from rich.console import Console

from orchestrator.alma.types import Counter, JobInstance
from orchestrator.cli.render import HistoryLines, RichReporter, print_check, print_status, print_steps
from orchestrator.cli.run import result_line
from orchestrator.cli.text import TimeDisplay
from orchestrator.service.preflight import CheckSummary
from orchestrator.service.views import AttemptView, EventView, SetSummary
from orchestrator.service.workflow import AdvanceResult, Outcome

SNAPSHOTS = Path(__file__).parent / "snapshots"
T0 = datetime(2026, 2, 2, 15, 0, 0, tzinfo=UTC)
LONG_ID = "7593466560004641"
ATTENTION = (
    "29 of 40 records are not ready for the Handle Migration job: 29 NEEDS_FIX (dc:identifier carries "
    "xsi:type; run `hwf fix 7593466560004642 --apply`). The migration would skip them silently"
)


def screen(width: int, draw: Callable[[Console], None]) -> str:
    """What ``draw`` shows on a terminal ``width`` columns wide, as plain text."""
    console = Console(width=width, record=True, file=io.StringIO(), force_terminal=True, color_system=None)
    draw(console)
    return console.export_text()


def check_snapshot(name: str, text: str, width: int) -> None:
    for line in text.splitlines():
        assert len(line) <= width, f"{name}: a line is wider than {width} columns:\n{line}"
    path = SNAPSHOTS / f"{name}.txt"
    if os.environ.get("UPDATE_SNAPSHOTS"):
        path.parent.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"no snapshot {path}: run with UPDATE_SNAPSHOTS=1 once and review it"
    assert text == path.read_text(encoding="utf-8"), f"{name} changed; expected:\n{path.read_text()}\ngot:\n{text}"


def _rows() -> list[SetSummary]:
    return [
        SetSummary(LONG_ID, "Digital Grinnell batch 1", "verified", None, 120),
        SetSummary(
            "7593466560004642",
            "Digital Grinnell: Student newspapers, 1894-2010 (scarlet and black) [batch 2/9]",
            "identifiers_copied",
            ATTENTION,
            40,
            excluded=2,
        ),
        SetSummary(
            "7593466560004643",
            "Batch 3",
            "migrated",
            None,
            100,
            waiting="integrate job M50700 instance 7593467630004641 to end",
            progress=45.0,
        ),
    ]


@pytest.mark.parametrize("width", [80, 120])
def test_status_screen(width: int) -> None:
    text = screen(width, lambda c: print_status(c, _rows()))
    assert LONG_ID in text and "7593466560004642" in text  # ids never wrap
    check_snapshot(f"status_{width}", text, width)


@pytest.mark.parametrize("width", [80, 120])
def test_status_of_one_set_shows_everything(width: int) -> None:
    text = screen(width, lambda c: print_status(c, _rows()[1:2], full=True))
    assert " ".join(ATTENTION.split()) in " ".join(text.replace(" \n", " ").split())
    check_snapshot(f"status_one_{width}", text, width)


def _check() -> CheckSummary:
    return CheckSummary(
        set=LONG_ID,
        name="Problem records",
        counts={"READY": 20, "NEEDS_COPY": 5, "NEEDS_FIX": 2, "BAD_HANDLE": 1, "NOT_DC": 1},
        problems=[
            {
                "mms_id": "991011506418804641",
                "class": "BAD_HANDLE",
                "handle": "http://hdl.handle.net/11084/12 34/",
                "detail": "the handle has a space and a trailing slash",
                "title": "x",
            },
            {"mms_id": "991011506418804642", "class": "NOT_DC", "handle": None, "detail": "MARC 21", "title": "y"},
        ],
        excluded=1,
        total=30,
        step="copy_identifiers",
        attention="2 of 29 records cannot go through the workflow: ...",
        command=f"hwf exclude {LONG_ID} 991011506418804641 991011506418804642 --reason TEXT",
    )


@pytest.mark.parametrize("width", [80, 120])
def test_check_screen(width: int) -> None:
    check_snapshot(f"check_{width}", screen(width, lambda c: print_check(c, _check())), width)


def test_advance_and_resume_lines() -> None:
    lines = [
        result_line(AdvanceResult(LONG_ID, "Batch 1", Outcome.VERIFIED, "verified", "verified")),
        result_line(AdvanceResult(LONG_ID, "Batch 1", Outcome.VERIFIED, "verified", "already verified; nothing to do")),
        result_line(AdvanceResult(LONG_ID, "Batch [2]", Outcome.WAITING, "migrated", "waiting for a job slot", T0)),
    ]
    text = screen(80, lambda c: [c.print(line) for line in lines])
    check_snapshot("advance_lines_80", text, 80)


def _steps() -> list[AttemptView]:
    def attempt(step: str, instance: str, start: int, seconds: int, counters: list[dict[str, object]]) -> AttemptView:
        began = T0 + timedelta(seconds=start)
        return AttemptView(
            step,
            1,
            "finished",
            "M1",
            instance,
            "COMPLETED_SUCCESS",
            counters,
            began,
            began + timedelta(seconds=seconds),
            None,
        )

    def c(desc: str, value: int) -> dict[str, object]:
        return {"code": desc.upper(), "desc": desc, "value": value}

    return [
        attempt(
            "copy_identifiers", "7593467120004641", 0, 95, [c("Records processed", 300), c("Records modified", 211)]
        ),
        attempt("migrate", "7593467440004641", 400, 3720, [c("Records processed", 300), c("Records skipped", 0)]),
        attempt(
            "integrate",
            "7593467630004641",
            86_000,
            30,
            [c("Records processed", 300), c("Handles created", 0), c("Handles updated", 300)],
        ),
    ]


@pytest.mark.parametrize("width", [80, 120])
def test_steps_screen(width: int) -> None:
    text = screen(width, lambda c: print_steps(c, _steps(), TimeDisplay(utc=True), "Steps of set " + LONG_ID))
    assert "1h 02m" in text and "handles updated 300" in text
    check_snapshot(f"steps_{width}", text, width)


def _events() -> list[EventView]:
    at = T0.replace(tzinfo=None)

    def e(seconds: int, kind: str, detail: str, actor: str | None = None, data: str | None = None) -> EventView:
        return EventView((at + timedelta(seconds=seconds)).isoformat(sep=" "), kind, detail, actor, data)

    return [
        e(0, "added", "registered Alma set 7593466560004641 'Batch 1' with 1 member", "vm:1"),
        e(1, "check", "preflight: READY 1"),
        e(1, "check", "preflight: READY 1"),
        e(2, "submitted", "migrate: job M2 submitted, instance 77", "vm:1", '{"instance_id": "77"}'),
        e(3725, "job_finished", "migrate: job M2 instance 77 ended COMPLETED_SUCCESS", None, '{"instance_id": "77"}'),
        e(86_500, "transition", "identifiers_copied -> migrated (migrate)", "vm:1"),
    ]


def test_history_screen() -> None:
    lines = HistoryLines(TimeDisplay(utc=True))
    text = "".join(filter(None, [*(lines.line(e) for e in _events()), lines.flush()]))
    assert "(2x)" in text and "(ran 1h 02m)" in text and "(by vm:1)" in text
    check_snapshot("history", text, 200)


def test_progress_display_at_80_columns() -> None:
    """One live row per running set that never wraps; a finished step leaves one line in the scroll-back."""
    buffer = io.StringIO()
    console = Console(width=80, file=buffer, force_terminal=True, color_system=None, record=True)
    reporter = RichReporter(console, times=TimeDisplay(utc=True), now=lambda: T0)
    long_name = "Digital Grinnell: Student newspapers, 1894-2010 (batch 2/9)"
    running = JobInstance("7593467440004641", "M2", None, "RUNNING", progress=45.0)
    reporter.job_progress(long_name, "migrate", running)
    reporter.job_progress("Batch 3", "integrate", JobInstance("7593467630004641", "M5", None, "QUEUED", progress=0))
    progress = reporter._progress
    assert progress is not None and len(progress.tasks) == 2  # one row per set
    rows = Console(width=80, record=True, file=io.StringIO(), color_system=None)
    rows.print(progress.make_tasks_table(progress.tasks))
    table = rows.export_text()
    assert len(table.splitlines()) == 2, table  # no row wraps
    assert all(len(line) <= 80 for line in table.splitlines())
    done = JobInstance(
        "7593467440004641",
        "M2",
        None,
        "COMPLETED_SUCCESS",
        progress=100.0,
        counters=(Counter("P", "Records processed", 40),),
    )
    reporter.job_progress(long_name, "migrate", done)
    assert len(progress.tasks) == 1  # the finished set left the live area
    reporter.job_progress("Batch 3", "integrate", JobInstance("7593467630004641", "M5", None, "COMPLETED_SUCCESS"))
    assert reporter._progress is None  # nothing running: the live display is gone
    scroll = " ".join(console.export_text().split())
    assert f"15:00:00 UTC {long_name}: migrate: job ended COMPLETED_SUCCESS (Records processed: 40)" in scroll
    assert "15:00:00 UTC Batch 3: integrate: job ended COMPLETED_SUCCESS" in scroll


def test_progress_lines_when_piped() -> None:
    buffer = io.StringIO()
    console = Console(width=80, file=buffer, color_system=None)
    reporter = RichReporter(console, times=TimeDisplay(utc=True), now=lambda: T0)
    for status in ("QUEUED", "RUNNING", "RUNNING", "COMPLETED_SUCCESS"):
        reporter.job_progress("Batch [1]", "copy_identifiers", JobInstance("77", "M1", None, status, progress=50))
    check_snapshot("progress_piped", buffer.getvalue(), 200)


def test_check_all_is_a_line_per_set_with_its_command_to_go_on() -> None:
    from orchestrator.cli.render import print_check_all

    stopped = _check()
    fine = CheckSummary("7593466560004643", "Fine", {"READY": 3, "NEEDS_FIX": 1}, [], 0, 4, step="copy_identifiers")
    job = CheckSummary(
        "7593466560004644", "Job failed", {"READY": 4}, [], 0, 4, step="migrate",
        attention="the migrate job ended COMPLETED_FAILED", command="hwf retry 7593466560004644 --reason TEXT",
    )  # fmt: skip
    text = screen(200, lambda c: print_check_all(c, [stopped, fine, job]))
    lines = text.splitlines()
    assert lines[0].startswith(f"{LONG_ID} (Problem records): cannot go on: 1 BAD_HANDLE, 1 NOT_DC; to go on: `hwf ")
    assert lines[1] == "7593466560004643 (Fine): can go on (before the migration job: 1 NEEDS_FIX)"
    assert lines[2].endswith("to go on: `hwf retry 7593466560004644 --reason TEXT`")
    assert lines[3] == "3 sets checked: 1 cannot go on (exit 3)."
    assert screen(80, lambda c: print_check_all(c, [])).startswith("No set before its migration job")
