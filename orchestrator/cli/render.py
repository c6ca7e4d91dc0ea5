"""Rendering for the terminal with rich: tables, the job progress line, the verification bar."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Column, Table

from orchestrator.alma.types import JobInstance
from orchestrator.cli.text import TimeDisplay, clean, safe, shorten, shorten_middle
from orchestrator.display import duration
from orchestrator.domain.wording import plural

if TYPE_CHECKING:
    from orchestrator.service.preflight import CheckSummary
    from orchestrator.service.repair import FixReport
    from orchestrator.service.views import AttemptView, EventView, SetSummary


class RichReporter:
    """Reports progress to a console. On a terminal: one live row per running set (its step, job status,
    bar, elapsed time); a finished step drops into the scroll-back as one line. Elsewhere (a pipe, a log):
    one line per change. Times are local with their zone (or UTC), with the date once the day changes."""

    def __init__(
        self,
        console: Console,
        *,
        times: TimeDisplay | None = None,
        verbose: bool = False,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.console = console
        self.times = times or TimeDisplay()
        self.now = now
        self.verbose = verbose
        self._progress: Progress | None = None
        self._tasks: dict[str, TaskID] = {}  # one live row per set
        self._last: dict[tuple[str, str], str] = {}

    def _bar(self) -> Progress:
        if self._progress is None:
            self._progress = Progress(
                TextColumn("{task.description}", table_column=Column(no_wrap=True, overflow="ellipsis", ratio=1)),
                BarColumn(bar_width=16),
                TextColumn("{task.percentage:>3.0f}%", table_column=Column(no_wrap=True)),
                TimeElapsedColumn(table_column=Column(no_wrap=True)),
                console=self.console,
                transient=True,
                expand=True,
            )
            self._progress.start()
        return self._progress

    def _row(self, set_name: str, description: str, completed: float, total: float) -> None:
        bar = self._bar()
        if set_name not in self._tasks:
            self._tasks[set_name] = bar.add_task(description, total=total)
        bar.update(self._tasks[set_name], completed=completed, total=total, description=description)

    def _drop(self, set_name: str) -> None:
        """The set's live row ends; the line that says how it ended goes to the scroll-back."""
        if self._progress is not None and set_name in self._tasks:
            self._progress.remove_task(self._tasks.pop(set_name))
            if not self._tasks:
                self._progress.stop()
                self._progress = None

    def note(self, set_name: str, message: str) -> None:
        now = self.now()
        stamp = self.times.stamp(now)
        message = self.times.localize(message, now) if " UTC" in message else message  # one zone per line
        self.console.print(f"[dim]{safe(stamp)}[/dim] [bold]{safe(set_name)}[/bold]: {safe(message)}")

    def job_progress(self, set_name: str, step: str, instance: JobInstance) -> None:
        key = (set_name, step)
        progress = max(0.0, min(float(instance.progress or 0.0), 100.0))
        line = f"{instance.status} {progress:.0f}%"
        changed = self._last.get(key) != line
        self._last[key] = line
        if not self.console.is_terminal or self.verbose:
            if changed:
                self.note(set_name, f"{step}: instance {instance.id} {line}")
        if self.console.is_terminal:
            description = f"{safe(set_name)}: {step} {safe(instance.id)} {safe(instance.status)}"
            self._row(set_name, description, 100 if instance.terminal else progress, 100)
        if instance.terminal:
            self._drop(set_name)
            self._last.pop(key, None)
            counters = ", ".join(f"{c.desc or c.code}: {c.value}" for c in instance.counters)
            self.note(set_name, f"{step}: job ended {instance.status}" + (f" ({counters})" if counters else ""))

    def verify_progress(self, set_name: str, done: int, total: int, tally: Mapping[str, int]) -> None:
        text = ", ".join(f"{k} {v}" for k, v in sorted(tally.items()))
        if not self.console.is_terminal:
            if done == total or done % 500 == 0:
                self.note(set_name, f"verify: {done}/{total} ({text})")
            return
        self._row(set_name, f"{safe(set_name)}: verify {done}/{total} {safe(text)}", done, max(total, 1))
        if done >= total:
            self._drop(set_name)
            self.note(set_name, f"verify: {done}/{total} checked ({text})")


PERSON = "needs a person: "


def _status_note(r: SetSummary, times: TimeDisplay | None = None, now: datetime | None = None) -> str:
    """The line under a set: its attention (the command to go on first), or what happens next and when (in the
    reader's zone; what it waits for first, the time last), else what it waits for."""
    nxt = r.next
    if r.attention:
        if times is not None and nxt is not None and nxt.what.startswith(PERSON):
            return f"ATTENTION, to go on: {nxt.what[len(PERSON) :]}; {r.attention}"
        return f"ATTENTION: {r.attention}"
    if times is not None and now is not None and nxt is not None and nxt.at is not None:
        return times.next(nxt.what, nxt.when, nxt.at, now)
    if r.waiting:
        waiting = times.localize(r.waiting, now) if times is not None else r.waiting
        return waiting + (f" (progress {r.progress:.0f}%)" if r.progress is not None else "")
    if r.instance_id:
        return f"{r.step} instance {r.instance_id} {r.job_status or ''}".rstrip()
    return ""


STATUS_COLUMNS = ("set", "name", "state", "records", "excluded", "waiting for / attention")


def print_status(
    console: Console,
    rows: Sequence[SetSummary],
    *,
    full: bool = False,
    times: TimeDisplay | None = None,
    now: datetime | None = None,
) -> None:
    """Where the sets stand. On a terminal: aligned lines whose ids never wrap, long names shortened in the
    middle (so ``(batch 3/30)`` survives) and reasons at their end, to one line, with what happens next and
    when in the reader's zone (``times``, at ``now``); ``full``, as ``hwf status SET`` asks: every field in
    full. Piped: tab-separated, never shortened."""
    if not rows:
        console.print("No sets registered yet: `hwf add ALMA_SET_ID` (or try `hwf demo`).")
        return
    if not console.is_terminal:
        lines = ["\t".join(STATUS_COLUMNS)]
        lines += [
            "\t".join(clean(v) for v in (r.set, r.name, r.state, r.records, r.excluded or "", _status_note(r))).rstrip(
                "\t"
            )
            for r in rows
        ]
        console.file.write("\n".join(lines) + "\n")
        return
    if full:
        for r in rows:
            _print_one_set(console, r, times, now)
        return
    _print_status_lines(console, rows, times, now)


PLAIN_ABOVE = 200  # sets: more are written as plain lines (rich would take seconds over 10,000 of them)


def _print_status_lines(
    console: Console, rows: Sequence[SetSummary], times: TimeDisplay | None, now: datetime | None
) -> None:
    """One line per set (id, state, records, excluded, name shortened to fit), and under it, indented, its
    attention or what it waits for, shortened to one line: nothing wraps, an id is never split."""
    id_width = max(3, *(len(r.set) for r in rows))
    state_width = max(5, *(len(r.state) for r in rows))
    name_width = max(console.width - id_width - state_width - 7 - 4 - 6, 10)
    note_width = max(console.width - 2, 10)  # under the line, from the third column: the whole width
    lines: list[tuple[str, str]] = [
        (f"{'set':<{id_width}}  {'state':<{state_width}} {'records':>7} {'excl':>4}  name", "bold")
    ]
    shortened = False
    for r in rows:
        name, note = clean(r.name), clean(_status_note(r, times, now))
        shortened = shortened or len(name) > name_width or len(note) > note_width
        excl = str(r.excluded or "")
        lines.append(
            (
                f"{r.set:<{id_width}}  {r.state:<{state_width}} {r.records:>7} {excl:>4}  "
                + shorten_middle(name, name_width),
                "",
            )
        )
        if note:
            lines.append((f"  {shorten(note, note_width)}", "red" if r.attention else "dim"))
    if shortened:
        lines.append(("Shortened to fit: `hwf status SET` shows one set in full.", "dim"))
    if len(rows) > PLAIN_ABOVE:
        console.file.write("\n".join(text for text, _ in lines) + "\n")
        return
    for text, style in lines:
        console.print(text, style=style or None, markup=False, highlight=False, soft_wrap=True)


def _print_one_set(console: Console, r: SetSummary, times: TimeDisplay | None, now: datetime | None) -> None:
    fields = [
        ("set", r.set),
        ("name", r.name),
        ("state", r.state),
        ("records", f"{r.records}" + (f" ({r.excluded} excluded)" if r.excluded else "")),
    ]
    if r.step:
        fields.append(("job", f"{r.step} instance {r.instance_id or '-'} {r.job_status or ''}".rstrip()))
    if r.waiting:
        fields.append(("waiting for", times.localize(r.waiting, now) if times is not None else r.waiting))
    if times is not None and now is not None and r.next is not None:
        fields.append(("next", times.next(r.next.what, r.next.when, r.next.at, now)))
    if r.lease_owner:
        fields.append(("held by", r.lease_owner))
    if r.attention:
        fields.append(("ATTENTION", r.attention))
    grid = Table.grid(padding=(0, 2))
    grid.add_column(justify="right", no_wrap=True)
    grid.add_column(ratio=1)
    for label, value in fields:
        style = "bold red" if label == "ATTENTION" else "bold"
        grid.add_row(f"[{style}]{label}[/{style}]", safe(value))
    console.print(grid)


def print_check(console: Console, summary: CheckSummary) -> None:
    console.print(f"[bold]Preflight of set {safe(summary.set)}[/bold] ({safe(summary.name)})")
    table = Table()
    table.add_column("class", no_wrap=True)
    table.add_column("records", justify="right", no_wrap=True)
    for cls, count in sorted(summary.counts.items()):
        table.add_row(cls, str(count))
    if summary.excluded:
        table.add_row("(excluded)", str(summary.excluded))
    console.print(table)
    if summary.problems:
        console.print("[bold]Records that need something[/bold]")
        problems = Table()
        problems.add_column("MMS ID", no_wrap=True)
        problems.add_column("class", no_wrap=True)
        problems.add_column("handle", overflow="fold")
        problems.add_column("detail", overflow="fold", ratio=1)
        for p in summary.problems[:200]:
            problems.add_row(*(safe(p[key] or "") for key in ("mms_id", "class", "handle", "detail")))
        console.print(problems)
        if len(summary.problems) > 200:
            more = len(summary.problems) - 200
            console.print(f"... and {more:d} more (`hwf check {safe(summary.set)} --json` lists all)")
    blocking = summary.blocking()
    if blocking:
        listed = ", ".join(f"{n} {c}" for c, n in blocking.items())
        console.print(f"[bold red]Cannot go on as it is:[/bold red] {safe(listed)} (exit 3).")
    else:
        console.print("Can go on: `hwf advance " + summary.set + "`.")


def print_fix(console: Console, report: FixReport, *, diff: bool = False) -> None:
    """A line per record for a dry run (the unified diff with ``diff``), counts, then refusals and failures."""
    if report.mode == "dry-run" or diff:
        for mms, line in report.summaries.items():
            if report.mode != "dry-run" and mms not in report.changed:
                continue
            if diff and mms in report.diffs:
                console.print(f"[bold]{safe(mms)}[/bold]")
                console.print(clean(report.diffs[mms], keep_newlines=True), markup=False, highlight=False)
            else:
                console.print(clean(line), markup=False, highlight=False)
    verb = {"dry-run": "would change", "apply": "changed", "undo": "restored"}[report.mode]
    count = len(report.summaries) if report.mode == "dry-run" else len(report.changed)
    took = f" in {report.seconds:.1f} s" if report.mode != "dry-run" and report.seconds else ""
    console.print(f"{safe(verb)} {plural(count, 'record')} in set {safe(report.set)}{safe(took)}")
    for mms, why in report.refused.items():
        console.print(f"[yellow]refused {safe(mms)}: {safe(why)}[/yellow]")
    for mms, why in report.failed.items():
        console.print(f"[red]failed {safe(mms)}: {safe(why)}[/red]")
    if report.mode == "dry-run" and report.summaries:
        console.print(f"Run `hwf fix {safe(report.set)} --apply` to write these changes (originals are backed up).")


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
                BarColumn(bar_width=20),
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
        eta = f", ETA {duration((total - done) / rate)}" if 0 < rate and done < total else ""
        line = f"{clean(self.label)}: {done:d}/{total:d} records, {rate:.1f}/s{clean(eta)}"
        self.console.print(line, markup=False, highlight=False)

    def close(self) -> None:
        """Stop the bar (idempotent)."""
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


def _counters_text(counters: Sequence[Mapping[str, object]] | None) -> str:
    parts = []
    for c in counters or []:
        label = str(c.get("desc") or c.get("code") or "").removeprefix("Records ").removeprefix("with ").lower()
        parts.append(f"{label} {c.get('value')}")
    return ", ".join(parts)


def print_steps(console: Console, steps: Sequence[AttemptView], times: TimeDisplay, title: str) -> None:
    """The Steps table (the demo's summary, and ``hwf history SET --steps``): one row per job attempt, its
    counters below the table, one line per step, so no cell wraps; the start time from 110 columns up
    (``hwf history`` always has it)."""
    wide = console.width >= 110
    console.print(f"[bold]{safe(title)}[/bold]")
    table = Table()
    for column in ("step", "instance", "status", *(("started",) if wide else ()), "took"):
        table.add_column(column, no_wrap=True)
    below = []
    for a in steps:
        counters = _counters_text(a.counters)
        took = duration((a.ended_at - a.begun_at).total_seconds()) if a.ended_at else "-"
        started = (times.stamp(a.begun_at),) if wide else ()
        table.add_row(a.step, safe(a.instance_id or "-"), safe(a.status or a.state), *started, took)
        if counters:
            below.append(f"  {a.step}: {safe(counters)}")
    console.print(table)
    for line in below:
        console.print(line)


_JOB_START_KINDS = ("submitted", "reconciled")


class HistoryLines:
    """``hwf history`` as text, streamed: one line per event with its time (local with zone, or UTC), the
    job's run time (submitted -> ended) on its ``job_finished`` line, who acted, and one line (``(2x)``)
    for an event repeated in the same second (``--json`` keeps every event as stored)."""

    def __init__(self, times: TimeDisplay) -> None:
        self.times = times
        self._started: dict[str, datetime] = {}
        self._pending: tuple[str, str] | None = None  # (key, line)
        self._repeats = 0
        self._stamps: dict[str, str] = {}

    def _stamp(self, e: EventView) -> tuple[str, str]:
        raw = e.at[:19] if isinstance(e.at, str) else e.at_utc.isoformat(timespec="seconds")[:19]
        hour = raw[:13]
        if hour not in self._stamps:
            # Events come in order: the zone's offset is looked up once an hour, not per event (100,000
            # events). Offsets of whole hours keep minutes and seconds: ``raw`` gives them as they are.
            at = e.at_utc
            whole = (self.times.local(at).utcoffset() or timedelta()) % timedelta(hours=1) == timedelta()
            start = at.replace(minute=0, second=0, microsecond=0)
            local = self.times.full(start)
            self._stamps = {hour: local[:13] + "\0" + local[19:] if whole else ""}
        template = self._stamps[hour]
        if not template:
            return raw, self.times.full(e.at_utc)
        head, zone = template.split("\0")
        return raw, head + raw[13:19] + zone

    def _extra(self, e: EventView) -> str:
        if e.kind not in (*_JOB_START_KINDS, "job_finished"):
            return ""
        data = e.data or {}
        instance = str(data.get("instance_id") or "")
        if e.kind in _JOB_START_KINDS:
            self._started.setdefault(instance, e.at_utc)
            return ""
        began = self._started.get(instance)
        return f" (ran {duration((e.at_utc - began).total_seconds())})" if began is not None else ""

    def line(self, e: EventView) -> str | None:
        """The finished line the previous event makes, now that ``e`` follows it (None: not yet)."""
        raw, stamp = self._stamp(e)
        who = e.who()
        actor = f"  ({clean(who)})" if who else ""
        detail = self.times.localize(e.detail) if " UTC" in e.detail else e.detail  # one zone per line
        text = f"{stamp}  {e.kind:<16} {clean(detail)}{self._extra(e)}{actor}"
        key = f"{raw}\0{e.kind}\0{e.detail}"
        if self._pending is not None and self._pending[0] == key:
            self._repeats += 1
            return None
        done = self.flush()
        self._pending = (key, text)
        return done

    def flush(self) -> str | None:
        """The last line held back (to see whether the next event repeats it)."""
        if self._pending is None:
            return None
        text = self._pending[1] + (f" ({self._repeats + 1}x)" if self._repeats else "")
        self._pending, self._repeats = None, 0
        return text + "\n"
