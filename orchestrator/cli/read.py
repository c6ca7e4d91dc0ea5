"""Commands that read: status, history, report, graph, version."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path
from typing import Annotated

import typer

from orchestrator import __version__
from orchestrator.cli.base import app, context, dump, err, errors, fail, out
from orchestrator.service import views


@app.command()
def status(
    set_ref: Annotated[str | None, typer.Argument(metavar="[SET]", help="One set (default: all).")] = None,
    *,
    json_output: Annotated[bool, typer.Option("--json", help="JSON array for scripts.")] = False,
) -> None:
    """Where each set stands."""
    from orchestrator.cli.render import print_status

    with context(quiet=True) as ctx, errors():
        rows = views.status(ctx, set_ref)
    if json_output:
        dump([r.as_json() for r in rows])
    else:
        print_status(out, rows)


@app.command()
def history(
    set_ref: Annotated[str, typer.Argument(metavar="SET")],
    *,
    json_output: Annotated[bool, typer.Option("--json", help="JSON array for scripts.")] = False,
) -> None:
    """The audit trail: every transition, submission, job result and operator action, oldest first."""
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
        for e in everything:
            at = e.at[:19] if isinstance(e.at, str) else e.at_utc.isoformat(sep=" ", timespec="seconds")[:19]
            who = e.who()
            chunk.append(f"{at}Z  {e.kind:<16} {e.detail}{'  (' + who + ')' if who else ''}\n")
            if len(chunk) >= 5000:
                write("".join(chunk))
                chunk.clear()
        write("".join(chunk))


@app.command()
def report(
    set_ref: Annotated[str, typer.Argument(metavar="SET")],
    *,
    format: Annotated[str, typer.Option("--format", help="csv or json.")] = "csv",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to FILE instead of stdout.")] = None,
    problems: Annotated[bool, typer.Option("--problems", help="Only records that are not OK.")] = False,
    raw: Annotated[
        bool, typer.Option("--raw", help="CSV cells verbatim (no ' before =, +, -, @): for scripts, not spreadsheets.")
    ] = False,
) -> None:
    """Per-record results: MMS ID, handle, preflight class, verdict, resolved and expected URL."""
    from orchestrator.service import report as reports

    with context(quiet=True) as ctx, errors():
        chunks = reports.report_chunks(ctx, set_ref, format=format, problems_only=problems, raw=raw)
        if output is not None:
            reports.write_report(chunks, output)
        else:
            try:
                for chunk in chunks:
                    sys.stdout.write(chunk)
                sys.stdout.flush()
            except OSError as exc:  # `> /dev/full`, a closed pipe: one line, not a traceback
                fail(f"cannot write the report to standard output: {exc.strerror or exc}", 1)
    if output is not None:
        err.print(f"Wrote {output}", markup=False)


@app.command()
def graph() -> None:
    """The state machine as a mermaid diagram."""
    from orchestrator.domain import machine

    typer.echo(machine.mermaid(), nl=False)


@app.command()
def version() -> None:
    """Print hwf's version."""
    typer.echo(__version__)
