"""The ``hwf`` command line. Each module registers its commands on the one typer ``app``:
``run`` (moving sets forward), ``read`` (status, history, report), ``setup`` (init, jobs, ping),
``ops`` (audit), ``doctor``, ``evidence`` (support-case bundle), ``serve`` (overview, the dashboard), ``sim``
(demo, simulator, db upgrade)."""

from __future__ import annotations

from orchestrator.cli import doctor, evidence, ops, read, run, serve, setup, sim
from orchestrator.cli.base import app, owns_process

__all__ = ["app", "main", "doctor", "evidence", "ops", "read", "run", "serve", "setup", "sim"]


def main() -> None:
    """The console script's entry point."""
    owns_process()
    app()
