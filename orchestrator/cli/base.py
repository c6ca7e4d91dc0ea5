"""What every command module shares: the typer apps, the consoles, and the one exit path for errors.

A command parses its options, builds the context through :mod:`orchestrator.wiring`, calls one service
function and renders the result. Domain errors become one line on stderr and an exit code
(INTERFACE.md): 1 operational, 2 bad usage or input, 3 needs attention, 4 set held by another process.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console

from orchestrator.config import Config, find_config_path, load_config
from orchestrator.errors import HwfError

if TYPE_CHECKING:
    from orchestrator.service.context import Context
    from orchestrator.wiring import Wiring

app = typer.Typer(
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
    help="hwf: give Alma digital titles their existing Handle identifiers, safely and provably.",
)
sim_app = typer.Typer(no_args_is_help=True, pretty_exceptions_show_locals=False, help="The built-in Alma simulator.")
db_app = typer.Typer(no_args_is_help=True, pretty_exceptions_show_locals=False, help="Database maintenance.")
app.add_typer(sim_app, name="sim")
app.add_typer(db_app, name="db")

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def fail(message: str, code: int = 1) -> NoReturn:
    """The one exit path for an error: one line on stderr, then the exit code."""
    typer.echo(f"Error: {message}", err=True)
    raise typer.Exit(code) from None


class _State:
    config_path: Path | None = None
    wiring: object = None


_state = _State()


@app.callback()
def _main(
    click_ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="Configuration file (default: $HWF_CONFIG, else ./hwf.toml)."),
    ] = None,
) -> None:
    _state.config_path = config
    _state.wiring = click_ctx.obj  # a Wiring from app(obj=...) (tests, embedding), else None


@contextmanager
def errors() -> Iterator[None]:
    """Turn domain errors into one line on stderr and their exit code; let bugs show a traceback."""
    try:
        yield
    except HwfError as exc:
        fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__, exc.exit_code)


def config() -> Config:
    """The configuration named by --config, $HWF_CONFIG or ./hwf.toml. :raises ConfigError:"""
    return load_config(find_config_path(_state.config_path))


def wiring() -> Wiring | None:
    """The Wiring a caller gave ``app(obj=...)`` (tests, the demo), else None: the real network and clock."""
    from orchestrator.wiring import Wiring

    return _state.wiring if isinstance(_state.wiring, Wiring) else None


def build_context(cfg: Config, *, quiet: bool = False) -> Context:
    """The service context for ``cfg``, reporting progress on stderr unless ``quiet``."""
    from orchestrator.wiring import build_context as wire

    reporter = None
    if not quiet:
        from orchestrator.cli.render import RichReporter

        reporter = RichReporter(err)
    return wire(cfg, reporter=reporter, wiring=wiring())


@contextmanager
def context(*, quiet: bool = False) -> Iterator[Context]:
    """A service context for one command, closed (Alma client included) when the command ends."""
    from orchestrator.wiring import install_log, uninstall_log

    with errors():
        cfg = config()
        install_log(cfg)
        try:
            ctx = build_context(cfg, quiet=quiet)
            try:
                yield ctx
            finally:
                ctx.close()
        finally:
            uninstall_log()


def dump(data: Any) -> None:
    """JSON for scripts, on stdout."""
    typer.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))
