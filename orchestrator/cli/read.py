"""Commands that read the database: status, history, report."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path
from typing import Annotated

import typer

from orchestrator.cli.base import app, context, dump, err, errors, fail, out, time_display, verbosity
from orchestrator.cli.render import HistoryLines, print_status, print_steps
from orchestrator.cli.text import clean, safe
from orchestrator.service import nextstep, views
from orchestrator.service import report as reports
from orchestrator.service.workers import workers


@app.command()
def status(
    set_ref: Annotated[
        str | None, typer.Argument(metavar="SET", help="Alma set id or local name (default: every set).")
    ] = None,
    *,
    json_output: Annotated[bool, typer.Option("--json", help="JSON array for scripts.")] = False,
) -> None:
    """Where each set stands. On a terminal, long names and reasons are shortened to one line;
    `hwf status SET` shows one set in full. Piped, the output is tab-separated and never shortened."""
    with context(quiet=True) as ctx, errors():
        rows = nextstep.status(ctx, set_ref)
        times, now = time_display(ctx.config), ctx.clock()
    if json_output:
        dump([r.as_json() for r in rows])
    else:
        print_status(out, rows, full=set_ref is not None, times=times, now=now)
        if set_ref is None:
            with context(quiet=True) as ctx, errors():
                for w in workers(ctx):
                    out.print(clean(times.localize(w.text(), now)), markup=False)


@app.command()
def history(
    set_ref: Annotated[str, typer.Argument(metavar="SET", help="Alma set id or local name.")],
    *,
    json_output: Annotated[bool, typer.Option("--json", help="JSON array for scripts.")] = False,
    steps: Annotated[
        bool, typer.Option("--steps", help="The Steps table instead: one row per job run, with its time.")
    ] = False,
) -> None:
    """The audit trail: every transition, submission, job result and operator action, oldest first.
    Times are local with their zone (--utc: UTC); a job's line says how long it ran."""
    if steps:
        _steps(set_ref, json_output)
        return
    with context(quiet=True) as ctx, errors():
        events = iter(views.history(ctx, set_ref))
        first = next(events, None)  # an unknown set fails here, before anything is written
        everything = itertools.chain([first], events) if first is not None else iter(())
        write = sys.stdout.write
        chunk: list[str] = []
        if json_output:
            write("[")
            for i, e in enumerate(everything):
                chunk.append(("," if i else "") + "\n  " + e.json_text())
                if len(chunk) >= 5000:
                    write("".join(chunk))
                    chunk.clear()
            write("".join(chunk) + "\n]\n")
            return
        lines = HistoryLines(time_display(ctx.config))
        for e in everything:
            line = lines.line(e)
            if line is not None:
                chunk.append(line)
            if len(chunk) >= 5000:
                write("".join(chunk))
                chunk.clear()
        chunk.append(lines.flush() or "")
        write("".join(chunk))


def _steps(set_ref: str, json_output: bool) -> None:
    with context(quiet=True) as ctx, errors():
        steps = views.attempts(ctx, set_ref)
        times = time_display(ctx.config)
    if json_output:
        dump([a.as_json() for a in steps])
    elif not steps:
        out.print(f"No job has run on set {safe(set_ref)} yet.")
    else:
        print_steps(out, steps, times, f"Steps of set {set_ref}")


@app.command()
def report(
    set_ref: Annotated[str, typer.Argument(metavar="SET", help="Alma set id or local name.")],
    *,
    format: Annotated[str | None, typer.Option("--format", help="csv (default) or json.")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="The same as --format json.")] = False,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to FILE instead of stdout.")] = None,
    problems: Annotated[bool, typer.Option("--problems", help="Only records that are not OK.")] = False,
    raw: Annotated[
        bool, typer.Option("--raw", help="CSV cells verbatim (no ' before =, +, -, @): for scripts, not spreadsheets.")
    ] = False,
) -> None:
    """Per-record results: MMS ID, handle, preflight class, verdict, resolved and expected URL."""
    if json_output and format not in (None, "json"):
        fail(f"--json means --format json, not --format {format}: give one of them", 2)
    format = "json" if json_output else format or "csv"
    with context(quiet=True) as ctx, errors():
        chunks = reports.report_chunks(ctx, set_ref, format=format, problems_only=problems, raw=raw)
        if output is not None:
            reports.write_report(chunks, output)
        else:
            tty = sys.stdout.isatty()
            try:
                for chunk in chunks:
                    sys.stdout.write(clean(chunk, keep_newlines=True) if tty else chunk)  # a file gets the data
                sys.stdout.flush()
            except OSError as exc:  # `> /dev/full`, a closed pipe: one line, not a traceback
                fail(f"cannot write the report to standard output: {exc.strerror or exc}", 1)
    if output is not None and verbosity() >= 0:
        err.print(f"Wrote {safe(output)}")
