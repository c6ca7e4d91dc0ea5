"""Rendering for the terminal with rich: tables, the job progress line, the verification bar."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from orchestrator.alma.types import JobInstance

if TYPE_CHECKING:
    from orchestrator.service.preflight import CheckSummary, FixReport
    from orchestrator.service.views import SetSummary


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


def print_fix(console: Console, report: FixReport) -> None:
    for mms, diff in report.diffs.items():
        if report.mode == "dry-run" or mms in report.changed:
            console.print(f"[bold]{mms}[/bold]")
            console.print(diff, markup=False, highlight=False)
    verb = {"dry-run": "would change", "apply": "changed", "undo": "restored"}[report.mode]
    count = len(report.diffs) if report.mode == "dry-run" else len(report.changed)
    console.print(f"{verb} {count} records in set {report.set}")
    for mms, why in report.refused.items():
        console.print(f"[yellow]refused {mms}: {why}[/yellow]")
    for mms, why in report.failed.items():
        console.print(f"[red]failed {mms}: {why}[/red]")
    if report.mode == "dry-run" and report.diffs:
        console.print(f"Run `hwf fix {report.set} --apply` to write these changes (originals are backed up).")
