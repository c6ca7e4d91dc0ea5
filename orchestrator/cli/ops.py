"""``hwf audit``: what Alma's own job history says ran on a set, registered on the main ``app``."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from orchestrator.cli.base import app, context, errors, out, time_display
from orchestrator.cli.text import safe
from orchestrator.service.audit import AuditReport, audit_set

_SEVERITY_STYLE = {"error": "bold red", "warning": "yellow", "note": "dim"}


@app.command()
def audit(
    set_ref: Annotated[str, typer.Argument(metavar="SET", help="Alma set id, or the set's local or Alma name.")],
    *,
    days: Annotated[int, typer.Option(help="How far back to read Alma's job history, in days.")] = 365,
    json_output: Annotated[bool, typer.Option("--json", help="JSON for scripts.")] = False,
) -> None:
    """What Alma's own job history says ran on a set (including runs made by hand in the UI), in which
    order, with which result, and whether the order was valid. Exit 3 if it was not."""
    with context(quiet=True) as ctx, errors():
        report = audit_set(ctx, set_ref, days=days)
    if json_output:
        typer.echo(json.dumps(report.as_json(), indent=2, ensure_ascii=False))
    else:
        _print_audit(report)
    if not report.valid:
        raise typer.Exit(3)


def _print_audit(report: AuditReport) -> None:
    registered = "" if report.registered else " (not registered in hwf)"
    table = Table(
        title=safe(
            f"Alma job history of set {report.set} {report.name!r}{registered}, {report.date_from} to {report.date_to}"
        )
    )
    times = time_display()
    for column in ("submitted", "step", "instance", "by", "status", "counters", "verdict"):
        table.add_column(column, overflow="fold")
    for r in report.runs:
        counters = ", ".join(f"{c.get('desc') or c.get('code')} {c.get('value')}" for c in r.counters)
        cells = (
            times.full(r.submit_time) if r.submit_time else "?",
            r.step,
            r.instance_id,
            r.by,
            r.status,
            counters,
            r.verdict,
        )
        table.add_row(*(safe(c) for c in cells))
    out.print(table)
    for f in report.findings:
        style = _SEVERITY_STYLE.get(f.severity, "")
        out.print(f"[{style}]{safe(f.severity.upper())}[/{style}] {safe(f.code)}: {safe(f.message)}")
        out.print(f"  What to do: {safe(f.action)}")
    if report.valid:
        out.print(f"Order: valid. The history proves the set reached {safe(report.proven_stage)}.")
    else:
        out.print(
            f"[bold red]Order: INVALID.[/bold red] The history proves {safe(report.proven_stage)} at most; "
            "`hwf add --adopt` stops there with the reason as attention."
        )
