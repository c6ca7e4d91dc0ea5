"""Commands that read: status, history, report, graph, version."""

from __future__ import annotations

import csv
import io
import itertools
import json
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
        if set_ref is None:
            from orchestrator.service import worker

            with context(quiet=True) as ctx, errors():
                for w in worker.workers(ctx):
                    out.print(w.text(), markup=False)


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
            chunk.append(f"{at}Z  {e.kind:<16} {e.detail}\n")
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
) -> None:
    """Per-record results: MMS ID, handle, preflight class, verdict, resolved and expected URL."""
    from orchestrator.service import verification

    if format not in ("csv", "json"):
        fail(f"--format must be csv or json, not {format!r}", 2)
    with context(quiet=True) as ctx, errors():
        rows = verification.report(ctx, set_ref, problems_only=problems)
        buffer = io.StringIO()
        if format == "csv":
            writer = csv.writer(buffer, lineterminator="\n")
            writer.writerow(verification.CSV_COLUMNS)
            for r in rows:
                writer.writerow(verification.csv_row(r))
        else:
            json.dump([r.as_json() for r in rows], buffer, indent=2, ensure_ascii=False)
            buffer.write("\n")
    text = buffer.getvalue()
    if output is None:
        sys.stdout.write(text)
        return
    try:
        tmp = output.with_name(output.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(output)
    except OSError as exc:
        fail(f"cannot write {output}: {exc.strerror}", 1)
    err.print(f"Wrote {output}")


@app.command()
def graph() -> None:
    """The state machine as a mermaid diagram."""
    from orchestrator.domain import machine

    typer.echo(machine.mermaid(), nl=False)


@app.command()
def version() -> None:
    """Print hwf's version."""
    typer.echo(__version__)
