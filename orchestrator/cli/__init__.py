"""The ``hwf`` command line. Each module registers its commands on the one typer ``app``:
``run`` (moving sets forward), ``read`` (status, history, report), ``setup`` (init, jobs, ping),
``ops`` (audit), ``doctor``, ``serve`` (overview, the dashboard), ``sim`` (demo, simulator, db upgrade)."""

from __future__ import annotations

from orchestrator.cli import doctor, ops, read, run, serve, setup, sim
from orchestrator.cli.base import app

__all__ = ["app", "main", "doctor", "ops", "read", "run", "serve", "setup", "sim"]


def main() -> None:
    """The console script's entry point."""
    app()
