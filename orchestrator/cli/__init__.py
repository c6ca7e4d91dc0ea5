"""The ``hwf`` command line, on typer.

:mod:`~orchestrator.cli.base` holds the one ``app``, the table of its commands (the module that defines each,
imported only when one of its commands runs), the common options and the exit path for errors. The command
modules register their commands on ``app``: ``setup`` (init, ping, jobs), ``run`` (add, check, fix, exclude,
include, advance, resume, verify, retry, confirm), ``read`` (status, history, report), ``serve`` (overview, the
dashboard), ``ops`` (audit), ``evidence`` (the support-case bundle), ``doctor``, ``demo``, ``sim`` (the
simulator, db upgrade), ``about`` (version, graph). ``render`` draws tables and progress with rich; ``text``
escapes data for the terminal and shows local times.
"""

from __future__ import annotations

from orchestrator.cli.base import app, owns_process

__all__ = ["app", "main"]


def main() -> None:
    """The console script's entry point."""
    owns_process()
    app()
