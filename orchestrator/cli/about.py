"""Commands about hwf itself, which need no configuration or database: version, graph. This module imports no
service, so ``hwf version`` starts as fast as ``hwf --version``."""

from __future__ import annotations

import typer

from orchestrator import __version__
from orchestrator.cli.base import app
from orchestrator.domain import machine


@app.command()
def graph() -> None:
    """The state machine as a mermaid diagram."""
    typer.echo(machine.mermaid(), nl=False)


@app.command()
def version() -> None:
    """Print hwf's version (also: hwf --version)."""
    typer.echo(__version__)
