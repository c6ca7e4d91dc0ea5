"""Rendering for the terminal with rich: tables, the job progress line, the verification bar."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from .alma_types import JobInstance

if TYPE_CHECKING:
    from .preflight import CheckSummary, FixReport
    from .views import SetSummary


def _now() -> str:
    return datetime.now(UTC).strftime("%H:%M:%S")


class RichReporter:
    """Reports progress to a console: a line per event, a bar for jobs and for verification."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._progress: Progress | None = None
        self._tasks: dict[tuple[str, str], TaskID] = {}
        self._last: dict[tuple[str, str], str] = {}

    def _bar(self) -> Progress:
        if self._progress is None:
            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.percentage:>3.0f}%"),
                TimeElapsedColumn(),
                console=self.console,
                transient=False,
            )
            self._progress.start()
        return self._progress

    def _stop(self, key: tuple[str, str]) -> None:
        if self._progress is not None and key in self._tasks:
            self._progress.stop_task(self._tasks.pop(key))
            if not self._tasks:
                self._progress.stop()
                self._progress = None

    def note(self, set_name: str, message: str) -> None:
        self.console.print(f"[dim]{_now()}[/dim] [bold]{set_name}[/bold]: {message}")

    def job_progress(self, set_name: str, step: str, instance: JobInstance) -> None:
        key = (set_name, step)
        progress = max(0.0, min(float(instance.progress or 0.0), 100.0))
        description = f"{set_name}: {step} {instance.id} {instance.status}"
        if not self.console.is_terminal:
            line = f"{instance.status} {progress:.0f}%"
            if self._last.get(key) != line:
                self._last[key] = line
                self.note(set_name, f"{step}: instance {instance.id} {line}")
        else:
            bar = self._bar()
            if key not in self._tasks:
                self._tasks[key] = bar.add_task(description, total=100)
            bar.update(self._tasks[key], completed=100 if instance.terminal else progress, description=description)
        if instance.terminal:
            self._stop(key)
            counters = ", ".join(f"{c.desc or c.code}: {c.value}" for c in instance.counters)
            self.note(set_name, f"{step}: job ended {instance.status}" + (f" ({counters})" if counters else ""))

    def verify_progress(self, set_name: str, done: int, total: int, tally: Mapping[str, int]) -> None:
        key = (set_name, "verify")
        text = ", ".join(f"{k} {v}" for k, v in sorted(tally.items()))
        if not self.console.is_terminal:
            if done == total or done % 500 == 0:
                self.note(set_name, f"verify: {done}/{total} ({text})")
            return
        bar = self._bar()
        if key not in self._tasks:
            self._tasks[key] = bar.add_task(f"{set_name}: verify", total=max(total, 1))
        bar.update(self._tasks[key], completed=done, description=f"{set_name}: verify ({text})")
        if done >= total:
            self._stop(key)


def _status_note(r: SetSummary) -> str:
    if r.attention:
        return f"ATTENTION: {r.attention}"
    if r.waiting:
        return r.waiting + (f" (progress {r.progress:.0f}%)" if r.progress is not None else "")
    if r.instance_id:
        return f"{r.step} instance {r.instance_id} {r.job_status or ''}".rstrip()
    return ""


PLAIN_ABOVE = 200  # rows; a rich table of 10,000 sets takes seconds to lay out


def print_status(console: Console, rows: Sequence[SetSummary]) -> None:
    if not rows:
        console.print("No sets registered yet: `hwf add ALMA_SET_ID` (or try `hwf demo`).")
        return
    if len(rows) > PLAIN_ABOVE or not console.is_terminal:
        name_width = min(max(len(r.name) for r in rows), 40)
        lines = [
            f"{'set':<18} {'name':<{name_width}} {'state':<18} {'records':>7} {'excl':>5}  waiting for / attention"
        ]
        lines += [
            f"{r.set:<18} {r.name[:name_width]:<{name_width}} {r.state:<18} {r.records:>7} {r.excluded or '':>5}  "
            f"{_status_note(r)}".rstrip()
            for r in rows
        ]
        console.file.write("\n".join(lines) + "\n")
        return
    table = Table(title="hwf sets")
    for column in ("set", "name", "state", "records", "excluded", "waiting for / attention"):
        table.add_column(column, overflow="fold")
    for r in rows:
        note = _status_note(r)
        if r.attention:
            note = f"[red]{escape(note)}[/red]"
        table.add_row(r.set, escape(r.name), r.state, str(r.records), str(r.excluded or ""), note)
    console.print(table)


def print_check(console: Console, summary: CheckSummary) -> None:
    table = Table(title=f"Preflight of set {summary.set} ({summary.name})")
    table.add_column("class")
    table.add_column("records", justify="right")
    for cls, count in sorted(summary.counts.items()):
        table.add_row(cls, str(count))
    if summary.excluded:
        table.add_row("(excluded)", str(summary.excluded))
    console.print(table)
    if summary.problems:
        problems = Table(title="Records that need something")
        for column in ("MMS ID", "class", "handle", "detail"):
            problems.add_column(column, overflow="fold")
        for p in summary.problems[:200]:
            problems.add_row(p["mms_id"] or "", p["class"] or "", p["handle"] or "", p["detail"] or "")
        console.print(problems)
        if len(summary.problems) > 200:
            console.print(f"... and {len(summary.problems) - 200} more (`hwf check --json` lists all)")


def print_fix(console: Console, report: FixReport, *, diff: bool = False) -> None:
    """A line per record for a dry run (the unified diff with ``diff``), counts, then refusals and failures."""
    if report.mode == "dry-run" or diff:
        for mms, line in report.summaries.items():
            if report.mode != "dry-run" and mms not in report.changed:
                continue
            if diff and mms in report.diffs:
                console.print(f"[bold]{mms}[/bold]")
                console.print(report.diffs[mms], markup=False, highlight=False)
            else:
                console.print(line, markup=False, highlight=False)
    verb = {"dry-run": "would change", "apply": "changed", "undo": "restored"}[report.mode]
    count = len(report.summaries) if report.mode == "dry-run" else len(report.changed)
    took = f" in {report.seconds:.1f} s" if report.mode != "dry-run" and report.seconds else ""
    console.print(f"{verb} {count} records in set {report.set}{took}")
    for mms, why in report.refused.items():
        console.print(f"[yellow]refused {mms}: {escape(why)}[/yellow]")
    for mms, why in report.failed.items():
        console.print(f"[red]failed {mms}: {escape(why)}[/red]")
    if report.mode == "dry-run" and report.summaries:
        console.print(f"Run `hwf fix {report.set} --apply` to write these changes (originals are backed up).")


class FixProgress:
    """``progress(done, total)`` for ``hwf fix``: a bar with records, rate and ETA on a terminal; plain lines
    (every 10 % or 10 s) otherwise. Safe to call from several threads."""

    def __init__(self, console: Console, label: str) -> None:
        self.console = console
        self.label = label
        self._lock = threading.Lock()
        self._bar: Progress | None = None
        self._task: TaskID | None = None
        self._started = time.monotonic()
        self._last_line = self._started
        self._last_done = -1

    def __call__(self, done: int, total: int) -> None:
        with self._lock:
            if self.console.is_terminal:
                self._draw(done, total)
            else:
                self._line(done, total)

    def _draw(self, done: int, total: int) -> None:
        if self._bar is None:
            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("records"),
                TextColumn("{task.fields[rate]}"),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=self.console,
                transient=False,
            )
            self._bar.start()
            self._task = self._bar.add_task(self.label, total=max(total, 1), rate="")
        assert self._task is not None
        self._bar.update(self._task, completed=done, total=max(total, 1), rate=f"{self._rate(done):.1f}/s")
        if done >= total:
            self.close()

    def _rate(self, done: int) -> float:
        elapsed = time.monotonic() - self._started
        return done / elapsed if elapsed > 0 else 0.0

    def _line(self, done: int, total: int) -> None:
        now = time.monotonic()
        step = max(1, total // 10)
        crossed = done // step != max(self._last_done, 0) // step
        if done == self._last_done or not (done >= total or crossed or now - self._last_line >= 10):
            return
        self._last_done, self._last_line = done, now
        rate = self._rate(done)
        eta = f", ETA {_duration((total - done) / rate)}" if 0 < rate and done < total else ""
        self.console.print(f"{self.label}: {done}/{total} records, {rate:.1f}/s{eta}", markup=False, highlight=False)

    def close(self) -> None:
        """Stop the bar (idempotent)."""
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"
