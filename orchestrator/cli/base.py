"""What every command module shares: the typer apps, the consoles, and the one exit path for errors.

A command parses its options, builds the context through :mod:`orchestrator.wiring`, calls one service
function and renders the result. Domain errors become one line on stderr and an exit code
(the codes scripts rely on): 1 operational, 2 bad usage or input, 3 needs attention, 4 set held by another process.
"""

from __future__ import annotations

import gc
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
import typer.main
from rich.console import Console
from typer.core import TyperGroup

from orchestrator.cli.text import TimeDisplay, clean
from orchestrator.config import Config, find_config_path, load_config
from orchestrator.errors import HwfError

if TYPE_CHECKING:
    from orchestrator.service.context import Context
    from orchestrator.wiring import Wiring


class HwfGroup(TyperGroup):
    """A command group whose every command also takes the common options (``-c/--config``, ``-v``, ``-q``,
    ``--utc``), so ``hwf status -c hwf.toml`` means what ``hwf -c hwf.toml status`` means."""

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        command = super().get_command(ctx, cmd_name)
        if command is not None and not isinstance(command, TyperGroup):
            add_common_options(command)
        return command


def _typer(help_text: str) -> typer.Typer:
    # rich_markup_mode=None: plain click help, so square brackets ([alma.jobs]) print as written, paragraphs
    # are re-wrapped to the terminal and option names are never cut at 80 columns.
    return typer.Typer(
        cls=HwfGroup,
        no_args_is_help=True,
        pretty_exceptions_show_locals=False,
        rich_markup_mode=None,
        help=help_text,
    )


app = _typer("hwf: give Alma digital titles their existing Handle identifiers, safely and provably.")
sim_app = _typer("The built-in Alma simulator.")
db_app = _typer("Database maintenance.")
app.add_typer(sim_app, name="sim")
app.add_typer(db_app, name="db")

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def fail(message: str, code: int = 1) -> NoReturn:
    """The one exit path for an error: one line on stderr, then the exit code."""
    typer.echo(f"Error: {clean(message, keep_newlines=True)}", err=True)
    raise typer.Exit(code) from None


class _State:
    config_path: Path | None = None
    wiring: object = None
    verbosity: int = 0  # -1 quiet (errors and results only), 0 normal, 1 verbose
    utc: bool = False
    whole_process: bool = False  # the ``hwf`` script owns the process (not a test's or an embedder's app() call)


_state = _State()


def owns_process() -> None:
    """Called by the console script: this run is the whole process, so process-wide tuning is allowed."""
    _state.whole_process = True


def _set_config(click_ctx: Any, param: Any, value: Path | None) -> None:
    if value is not None:
        _state.config_path = value


def _set_verbose(click_ctx: Any, param: Any, value: bool) -> None:
    if value:
        _state.verbosity = 1


def _set_quiet(click_ctx: Any, param: Any, value: bool) -> None:
    if value:
        _state.verbosity = -1


def _set_utc(click_ctx: Any, param: Any, value: bool) -> None:
    if value:
        _state.utc = True


_carrier = typer.Typer()


@_carrier.command()
def _common(
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="Configuration file (default: $HWF_CONFIG, else ./hwf.toml)."),
    ] = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show more: every job status change, whole error messages.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Show only errors and results (no progress).")] = False,
    utc: Annotated[bool, typer.Option("--utc", help="Times in UTC (default: local time with its zone).")] = False,
) -> None:
    """Carries the common options; never run."""


_CALLBACKS: dict[str, Callable[[Any, Any, Any], None]] = {
    "config": _set_config,
    "verbose": _set_verbose,
    "quiet": _set_quiet,
    "utc": _set_utc,
}


def add_common_options(command: Any) -> None:
    """Give ``command`` the common options (once), after its own; they set the same state as the options
    before the command do, and are not passed to the command's function."""
    taken = {name for param in command.params for name in getattr(param, "opts", [])}
    for option in typer.main.get_command(_carrier).params:
        if option.name in _CALLBACKS and not taken & set(getattr(option, "opts", [])):
            option.expose_value = False
            option.callback = _CALLBACKS[option.name]
            command.params.append(option)


def _print_version(value: bool) -> None:
    if value:
        from orchestrator import __version__

        typer.echo(f"hwf {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    click_ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="Configuration file (default: $HWF_CONFIG, else ./hwf.toml)."),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show more detail.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Show only errors and results.")] = False,
    utc: Annotated[bool, typer.Option("--utc", help="Show times in UTC (default: local time and zone).")] = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print hwf's version and exit."),
    ] = False,
) -> None:
    _state.config_path = config
    _state.verbosity = -1 if quiet else 1 if verbose else 0
    _state.utc = utc
    _state.wiring = click_ctx.obj  # a Wiring from app(obj=...) (tests, embedding), else None


def verbosity() -> int:
    """-1 with -q (errors and results only), 1 with -v (more detail), else 0."""
    return _state.verbosity


def config_path() -> Path:
    """The configuration file named by -c/--config (before or after the command), $HWF_CONFIG or ./hwf.toml."""
    return find_config_path(_state.config_path)


def time_display(cfg: Config | None = None) -> TimeDisplay:
    """Local time with its zone, or UTC with --utc or ``[display] utc = true``."""
    return TimeDisplay(utc=_state.utc or bool(cfg is not None and cfg.display_utc))


@contextmanager
def errors() -> Iterator[None]:
    """Turn domain errors into one line on stderr and their exit code; let bugs show a traceback."""
    try:
        yield
    except HwfError as exc:
        text = str(exc) or type(exc).__name__
        fail(text if _state.verbosity > 0 else text.splitlines()[0], exc.exit_code)


def config() -> Config:
    """The configuration named by --config, $HWF_CONFIG or ./hwf.toml. :raises ConfigError:"""
    return load_config(config_path())


def wiring() -> Wiring | None:
    """The Wiring a caller gave ``app(obj=...)`` (tests, the demo), else None: the real network and clock."""
    from orchestrator.wiring import Wiring

    return _state.wiring if isinstance(_state.wiring, Wiring) else None


def build_context(cfg: Config, *, quiet: bool = False) -> Context:
    """The service context for ``cfg``, reporting progress on stderr unless ``quiet``."""
    from orchestrator.wiring import build_context as wire

    reporter = None
    if not quiet and _state.verbosity >= 0:
        from orchestrator.cli.render import RichReporter

        reporter = RichReporter(err, times=time_display(cfg), verbose=_state.verbosity > 0)
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
            if _state.whole_process:
                # What the imports built (modules, classes, SQLAlchemy's tables) lives as long as the process: out
                # of the collector's sight, a full collection in the middle of a verification scans the run's own
                # objects only (it held every worker thread for 50 ms), and the exit has less to look at.
                gc.freeze()
            try:
                yield ctx
            finally:
                ctx.close()
        finally:
            uninstall_log()


def say(message: str) -> None:
    """An informational line on stdout (markup allowed: escape data with ``text.safe``); not with -q."""
    if _state.verbosity >= 0:
        out.print(message)


def dump(data: Any) -> None:
    """JSON for scripts, on stdout."""
    typer.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))
