"""The simulator and database commands: ``hwf sim serve``, ``hwf db upgrade``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from orchestrator.cli.base import config, db_app, errors, fail, out, sim_app
from orchestrator.cli.text import safe
from orchestrator.simulator import SimServer, Simulator, load_scenario
from orchestrator.store.db import current_revision, make_engine, upgrade


@sim_app.command("serve")
def sim_serve(
    *,
    port: Annotated[int, typer.Option(help="TCP port on 127.0.0.1 (0 = any free port).")] = 8765,
    host: Annotated[str, typer.Option(help="Address to bind (keep it on loopback).")] = "127.0.0.1",
    scenario: Annotated[Path | None, typer.Option(help="Scenario TOML file.")] = None,
) -> None:
    """Serve the Alma + handle proxy simulator over HTTP until interrupted."""
    if not 0 <= port <= 65535:
        fail(f"--port must be between 0 and 65535 (0 = any free port), not {port}", 2)
    with errors():
        sim = Simulator(load_scenario(scenario) if scenario else None)
        try:
            server = SimServer(sim, host=host, port=port)
        except OSError as exc:
            fail(f"cannot listen on {host}:{port}: {exc.strerror}", 1)
    typer.echo(f"hwf simulator listening on {server.url}", err=True)
    sys.stdout.write(server.url + "\n")
    sys.stdout.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Bring the database schema to the current version (hwf also does this on every open)."""
    with errors():
        engine = make_engine(config().database_url)
        upgrade(engine)
        out.print(f"database at schema {safe(current_revision(engine))}")
