"""``hwf doctor``, registered on the main ``app``."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from orchestrator.cli.base import app, build_context, config, errors, out
from orchestrator.cli.text import safe
from orchestrator.domain.wording import plural
from orchestrator.service import doctor as checks


@app.command()
def doctor(
    *,
    json_output: Annotated[bool, typer.Option("--json", help="JSON for scripts.")] = False,
    offline: Annotated[bool, typer.Option("--offline", help="Do not ask Alma about the jobs sets wait on.")] = False,
) -> None:
    """Find what crashes and killed processes left behind (stale leases, jobs stuck submitting, instances Alma
    no longer knows, inconsistent rows, an old schema) and say what to do. Exit 0 if healthy, 1 if not."""
    with errors():
        cfg = config()
        diagnosis = checks.run(
            cfg.database_url,
            lambda: build_context(cfg, quiet=True),
            check_alma=not offline,
        )
    if json_output:
        typer.echo(json.dumps(diagnosis.as_json(), indent=2, ensure_ascii=False, default=str))
    else:
        out.print(
            f"Schema {safe(diagnosis.schema or '(none)')} (this hwf: {safe(diagnosis.head)}); "
            f"{plural(diagnosis.sets, 'set')}, "
            f"{plural(diagnosis.attempts, 'job attempt')}, "
            f"{plural(diagnosis.instances_checked, 'instance')} checked in Alma"
        )
        for finding in diagnosis.findings:
            label = "[bold red]PROBLEM[/bold red]" if finding.severity == checks.PROBLEM else "[dim]note[/dim]"
            out.print(f"{safe(label)} {safe(finding.problem)}")
            out.print(f"    what to do: {safe(finding.action)}")
        out.print(
            "Healthy: nothing to do." if diagnosis.healthy else f"{plural(len(diagnosis.problems), 'problem')} to fix."
        )
    if not diagnosis.healthy:
        raise typer.Exit(1)
