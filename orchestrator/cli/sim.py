"""The simulator commands: ``hwf demo``, ``hwf sim serve``; and ``hwf db upgrade``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from orchestrator.cli.base import app, config, db_app, err, errors, fail, out, sim_app, time_display


@app.command()
def demo(
    *,
    records: Annotated[int, typer.Option(help="How many digital titles the demo set has.")] = 300,
    directory: Annotated[Path, typer.Option("--dir", help="Where the demo database and config go.")] = Path("hwf-demo"),
    job_seconds: Annotated[float, typer.Option(help="How long each simulated Alma job runs.")] = 4.0,
) -> None:
    """The whole workflow end to end against the built-in simulator: no Alma account needed."""
    from orchestrator.cli.demo import run_demo

    if not 1 <= records <= 100_000:
        fail(f"--records must be between 1 and 100000, not {records}", 2)
    if not 0 <= job_seconds <= 3600:  # also refuses nan
        fail(f"--job-seconds must be between 0 and 3600, not {job_seconds}", 2)
    with errors():
        run_demo(out, err, directory=directory, records=records, job_seconds=job_seconds, times=time_display())


@sim_app.command("serve")
def sim_serve(
    *,
    port: Annotated[int, typer.Option(help="TCP port on 127.0.0.1 (0 = any free port).")] = 8765,
    host: Annotated[str, typer.Option(help="Address to bind (keep it on loopback).")] = "127.0.0.1",
    scenario: Annotated[Path | None, typer.Option(help="Scenario TOML file.")] = None,
) -> None:
    """Serve the Alma + handle proxy simulator over HTTP until interrupted."""
    from orchestrator.simulator import SimServer, Simulator, load_scenario

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
    from orchestrator.store.db import current_revision, make_engine, upgrade

    with errors():
        engine = make_engine(config().database_url)
        upgrade(engine)
        out.print(f"database at schema {current_revision(engine)}")
