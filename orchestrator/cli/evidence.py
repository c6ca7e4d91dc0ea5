"""``hwf evidence``: the support-case bundle of one set."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from orchestrator.cli.base import app, context, dump, err, errors
from orchestrator.cli.text import clean
from orchestrator.service import evidence as service


@app.command()
def evidence(
    set_ref: Annotated[str, typer.Argument(metavar="SET", help="The Alma set id or local name.")],
    *,
    output: Annotated[Path, typer.Option("--output", "-o", help="The zip file to write (FILE.zip).")],
    json_output: Annotated[bool, typer.Option("--json", help="Describe the bundle as JSON on stdout.")] = False,
) -> None:
    """A zip for an Ex Libris support case: report, history, raw job instances, preflight, backups,
    configuration without the key, hwf's version; times in UTC and the institution's time zone."""
    with context(quiet=True) as ctx, errors():
        result = service.build(ctx, set_ref, output)
    if json_output:
        dump(result.as_json())
        return
    err.print(f"Wrote {clean(output)} ({len(result.files)} files) for set {clean(result.set)}", markup=False)
