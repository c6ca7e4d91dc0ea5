"""What every command module shares: the typer apps and the table of commands, the consoles, the common
options, and the one exit path for errors.

A command parses its options, builds the context through :mod:`orchestrator.wiring`, calls one service
function and renders the result. A domain error becomes one line on stderr (``Error: ...``, its first line
unless -v) and its exit code (:class:`orchestrator.errors.HwfError` ``.exit_code``): 1 operational, 2 bad usage
or input, 3 needs attention, 4 set held by another process; a bug shows its traceback.

This module is imported by every ``hwf`` run, ``hwf --help`` included: it imports no command module and no
service. A command's module is imported when the command runs (:class:`HwfRoot`), and imports what it needs at
its top.
"""

from __future__ import annotations

import gc
import importlib
import json
import sys
from collections.abc import Callable, Iterator, MutableMapping
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NamedTuple, NoReturn

import typer
import typer.main
from rich.console import Console
from typer.core import TyperCommand, TyperGroup

from orchestrator import __version__, logs
from orchestrator.cli.text import TimeDisplay, clean
from orchestrator.config import Config, find_config_path, load_config
from orchestrator.errors import HwfError

if TYPE_CHECKING:
    from orchestrator.service.context import Context
    from orchestrator.wiring import Wiring


class Lazy(NamedTuple):
    """Where a command of ``hwf`` is defined (a module of :mod:`orchestrator.cli`) and its one-line help."""

    module: str
    help: str


# Every command of `hwf`, in the order `hwf --help` lists them: a new user's workflow first, then operations,
# then the tools. Each names the module that defines it, imported only when the command runs, and its
# one-line help for `hwf --help` and shell completion, which therefore import no command module (a test
# holds each help equal to the first sentence of the command's docstring).
COMMANDS: dict[str, Lazy] = {
    "init": Lazy(
        "setup", "Write a commented hwf.toml; with an API key in the environment, look the three job ids up in Alma."
    ),
    "ping": Lazy(
        "setup", "Check, with read-only calls, that the key, the jobs and the handle resolver are ready for a run."
    ),
    "jobs": Lazy("setup", "List the institution's manual jobs (id, name, category), to fill in [alma.jobs]."),
    "add": Lazy("run", "Register an existing Alma set (reads its name and members), or create sets from a CSV."),
    "check": Lazy(
        "run", "Preflight: read every record's Dublin Core and classify it (READY, NEEDS_COPY, NEEDS_FIX, ...)."
    ),
    "fix": Lazy(
        "run",
        "Remove xsi:type from the handle dc:identifier of NEEDS_FIX records; a dry run (a line each) unless --apply.",
    ),
    "exclude": Lazy(
        "run",
        "Leave records out of the workflow: out of every later guard, of verification, and (unless "
        "--keep-in-alma-set) out of the Alma set the jobs run on (audited).",
    ),
    "include": Lazy("run", "Take excluded records back into the workflow (audited)."),
    "advance": Lazy(
        "run", "Run the set forward, step after step, until verified, or until it must wait or needs attention."
    ),
    "resume": Lazy(
        "run",
        "Advance every unfinished set (`hwf resume` and `hwf resume --all` are the same), re-attaching to Alma "
        "jobs already running: a scheduler within Alma's limits.",
    ),
    "status": Lazy("read", "Where each set stands."),
    "overview": Lazy(
        "serve", "The whole migration at a glance: sets per state, records verified, attention, running jobs, ETA."
    ),
    "history": Lazy(
        "read", "The audit trail: every transition, submission, job result and operator action, oldest first."
    ),
    "report": Lazy("read", "Per-record results: MMS ID, handle, preflight class, verdict, resolved and expected URL."),
    "verify": Lazy("run", "Resolve every handle of the set at the handle proxy and compare with its Primo record URL."),
    "retry": Lazy(
        "run", "Clear a set's attention after fixing the cause, so `hwf advance` runs the step again (audited)."
    ),
    "confirm": Lazy(
        "run",
        "Bind a job run you name to the set's waiting step (a step run by hand, an integration batch, an ambiguous "
        "reconciliation).",
    ),
    "sync": Lazy(
        "run",
        "Take the Alma set's members as they are now, after hwf stopped the set because they changed (drift).",
    ),
    "audit": Lazy(
        "ops",
        "What Alma's own job history says ran on a set (including runs made by hand in the UI), in which order, "
        "with which result, and whether the order was valid.",
    ),
    "evidence": Lazy(
        "evidence",
        "A zip for an Ex Libris support case: report, history, raw job instances, preflight, backups, "
        "configuration without the key, hwf's version; times in UTC and the institution's time zone.",
    ),
    "serve": Lazy(
        "serve", "The read-only web dashboard of the migration, from the same database (workers may run meanwhile)."
    ),
    "doctor": Lazy(
        "doctor",
        "Find what crashes and killed processes left behind (stale leases, jobs stuck submitting, instances "
        "Alma no longer knows, inconsistent rows, an old schema) and say what to do.",
    ),
    "graph": Lazy("about", "The state machine as a mermaid diagram."),
    "demo": Lazy("demo", "The whole workflow end to end against the built-in simulator: no Alma account needed."),
    "sim": Lazy("sim", "The built-in Alma simulator."),
    "db": Lazy("sim", "Database maintenance."),
    "version": Lazy("about", "Print hwf's version (also: hwf --version)."),
}


class HwfGroup(TyperGroup):
    """A command group whose every command also takes the common options (``-c/--config``, ``-v``, ``-q``,
    ``--utc``), so ``hwf status -c hwf.toml`` means what ``hwf -c hwf.toml status`` means."""

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        command = super().get_command(ctx, cmd_name)
        if command is not None and not isinstance(command, TyperGroup):
            add_common_options(command)
        return command


class _Commands(MutableMapping[str, Any]):
    """The commands of ``hwf`` by name, in :data:`COMMANDS` order. Looking a command up imports the module that
    defines it (once) and builds the command from what that module registered on :data:`app`; listing the
    names imports nothing. Within :meth:`summaries`, a command not loaded yet is looked up as a stand-in that
    has only its name and its help from the table."""

    def __init__(self, built: MutableMapping[str, Any]) -> None:
        self._built = dict(built)  # what typer built from the commands registered so far
        self._loaded = {
            name
            for name, lazy in COMMANDS.items()
            if name in self._built and f"{__package__}.{lazy.module}" in sys.modules
        }
        self._summaries = False

    def __getitem__(self, name: str) -> Any:
        lazy = COMMANDS.get(name)
        if lazy is not None and name not in self._loaded:
            if self._summaries:
                return TyperCommand(name=name, help=lazy.help)
            self._load(lazy.module)
        return self._built[name]

    def _load(self, module: str) -> None:
        importlib.import_module(f"{__package__}.{module}")
        fresh = typer.main.get_group(app).commands
        assert isinstance(fresh, _Commands)
        for name, lazy in COMMANDS.items():
            if lazy.module == module:
                if name not in fresh._built:  # a bug, not a user's typo: not the KeyError that means "no such command"
                    raise RuntimeError(f"{__package__}.{module} defines no command {name!r}")
                self._built[name] = fresh._built[name]
                self._loaded.add(name)

    def __contains__(self, name: object) -> bool:
        return name in COMMANDS or name in self._built

    def __iter__(self) -> Iterator[str]:
        yield from COMMANDS
        yield from (name for name in self._built if name not in COMMANDS)

    def __len__(self) -> int:
        return len(COMMANDS) + sum(1 for name in self._built if name not in COMMANDS)

    def __setitem__(self, name: str, command: Any) -> None:
        self._built[name] = command
        self._loaded.add(name)

    def __delitem__(self, name: str) -> None:
        del self._built[name]
        self._loaded.discard(name)

    @contextmanager
    def summaries(self) -> Iterator[None]:
        """Within: a command not loaded yet is a stand-in (its name and one-line help), for listing it."""
        self._summaries = True
        try:
            yield
        finally:
            self._summaries = False


class HwfRoot(HwfGroup):
    """The ``hwf`` group, its subcommands loaded lazily (click's "Lazily Loading Subcommands"): ``hwf status``
    imports the module of ``status`` and what it needs, not every command's services; ``hwf --help`` and shell
    completion list the commands from :data:`COMMANDS` without importing any."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        self.commands = _Commands(self.commands)

    def list_commands(self, ctx: Any) -> list[str]:
        return list(self.commands)

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        with self._summaries():
            super().format_commands(ctx, formatter)

    def shell_complete(self, ctx: Any, incomplete: str) -> Any:
        with self._summaries():
            return super().shell_complete(ctx, incomplete)

    def _summaries(self) -> AbstractContextManager[None]:
        assert isinstance(self.commands, _Commands)
        return self.commands.summaries()


def _typer(help_text: str, group: type[TyperGroup] = HwfGroup) -> typer.Typer:
    # rich_markup_mode=None: plain click help, so square brackets ([alma.jobs]) print as written, paragraphs
    # are re-wrapped to the terminal and option names are never cut at 80 columns.
    return typer.Typer(
        cls=group,
        no_args_is_help=True,
        pretty_exceptions_show_locals=False,
        rich_markup_mode=None,
        help=help_text,
    )


app = _typer("hwf: give Alma digital titles their existing Handle identifiers, safely and provably.", HwfRoot)
sim_app = _typer(COMMANDS["sim"].help)
db_app = _typer(COMMANDS["db"].help)
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
    logs.new_command()
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


# The three functions below import orchestrator.wiring (and through it the services, SQLAlchemy, httpx) and the
# renderer when a command asks for its context: this module is imported by `hwf --help` and `hwf --version` too.


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
