"""The ``hwf`` command line: parse, build the context, call one service function, render.

No SQL, no HTTP, no XML here. Domain errors become one line on stderr and an exit code
(INTERFACE.md): 1 operational, 2 bad usage or input, 3 needs attention, 4 set held by another process.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console

# Commands import the service modules they use when they run: `hwf status` should not pay for lxml,
# httpx and the verifier at start-up, nor `hwf verify` for the Alma client and the workflow (start-up is
# most of a status call, and a tenth of a verification of 3,000 handles).
from . import __version__
from .config import Config, find_config_path, load_config
from .errors import HwfError

if TYPE_CHECKING:
    from .service import Context

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
    typer.echo(f"Error: {message}", err=True)
    raise typer.Exit(code) from None


class _State:
    config_path: Path | None = None


_state = _State()


@app.callback()
def _main(
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="Configuration file (default: $HWF_CONFIG, else ./hwf.toml)."),
    ] = None,
) -> None:
    _state.config_path = config


@contextmanager
def _errors() -> Iterator[None]:
    """Turn domain errors into one line on stderr and their exit code; let bugs show a traceback."""
    try:
        yield
    except HwfError as exc:
        fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__, exc.exit_code)


def _config() -> Config:
    return load_config(find_config_path(_state.config_path))


def build_context(config: Config, *, reporter: Any = None) -> Context:
    """The one place where the database, the Alma client and the verifier are wired together."""
    from .db import open_database
    from .render import RichReporter
    from .service import Context

    if TYPE_CHECKING:
        from .alma import AlmaClient
        from .handles import Verifier

    def alma() -> AlmaClient:
        from .alma import AlmaClient

        return AlmaClient(
            config.alma.base_url,
            config.require_api_key(),
            timeout=config.alma.timeout_seconds,
            format=config.alma.format,
            requests_per_second=config.alma.requests_per_second,
            daily_call_floor=config.alma.daily_call_floor,
            max_retries=config.alma.max_retries,
            user_agent=f"hwf/{__version__}",
        )

    def verifier(follow: bool) -> Verifier:
        from .handles import Verifier

        h = config.handles
        return Verifier(
            h.resolver_url,
            config.primo,
            concurrency=h.concurrency,
            requests_per_second=h.requests_per_second,
            retries=h.retries,
            timeout=h.timeout_seconds,
            follow=follow,
            user_agent=f"hwf/{__version__} (handle verification)",
        )

    return Context(
        config=config,
        sessions=open_database(config.database_url),
        alma_factory=alma,
        verifier_factory=verifier,
        reporter=reporter or RichReporter(err),
    )


@contextmanager
def _context(*, quiet: bool = False) -> Iterator[Context]:
    with _errors():
        from .reporting import NullReporter

        ctx = build_context(_config(), reporter=NullReporter() if quiet else None)
        try:
            yield ctx
        finally:
            ctx.close()


def _dump(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


# ---------------------------------------------------------------------------------------------
# commands


@app.command()
def add(
    alma_set_id: Annotated[
        str | None, typer.Argument(metavar="[ALMA_SET_ID]", help="The Alma set id (digits).", show_default=False)
    ] = None,
    *,
    name: Annotated[str | None, typer.Option(help="A local name (default: the Alma set's name).")] = None,
    from_csv: Annotated[
        Path | None, typer.Option("--from-csv", help="Create itemized Alma sets from a CSV of MMS IDs.")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="With --from-csv: at most this many members per set.")] = 500,
    adopt: Annotated[
        bool, typer.Option("--adopt", help="Register a set partly done by hand at the state Alma's history shows.")
    ] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print the set(s) as JSON.")] = False,
) -> None:
    """Register an existing Alma set (reads its name and members), or create sets from a CSV."""
    if from_csv is not None:
        if alma_set_id is not None or adopt:
            fail("--from-csv creates new sets: give no ALMA_SET_ID and no --adopt", 2)
        if not name:
            fail("--from-csv needs --name NAME (sets are named 'NAME (batch k/K)')", 2)
        from . import batches

        with _context(quiet=json_output) as ctx, _errors():
            summaries = batches.add_from_csv(ctx, from_csv, name, batch_size=batch_size)
    else:
        if alma_set_id is None:
            fail("give an ALMA_SET_ID, or --from-csv FILE --name NAME", 2)
        with _context(quiet=json_output) as ctx, _errors():
            if adopt:
                from . import audit

                summaries = [audit.adopt(ctx, alma_set_id, name)]
            else:
                from . import workflow

                summaries = [workflow.add_set(ctx, alma_set_id, name)]
    if json_output:
        _dump([s.as_json() for s in summaries] if from_csv else summaries[0].as_json())
        return
    for summary in summaries:
        out.print(f"Registered set {summary.set} ({summary.name}): {summary.records} records, state {summary.state}")


@app.command()
def advance(
    set_ref: Annotated[str, typer.Argument(metavar="SET", help="Alma set id or local name.")],
    *,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Wait for running jobs (default) or exit 0.")] = True,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the requests hwf would send and the transition; change nothing.")
    ] = False,
) -> None:
    """Run the set forward, step after step, until verified, or until it must wait or needs attention."""
    if dry_run:
        from . import dryrun

        with _context(quiet=True) as ctx, _errors():
            typer.echo(dryrun.describe_advance(ctx, set_ref).text())
        return
    from . import workflow

    with _context() as ctx, _errors():
        result = workflow.advance(ctx, set_ref, wait=wait)
    out.print(f"Set {result.set} ({result.name}): {result.state}: {result.message}")


@app.command()
def resume(
    *,
    all_sets: Annotated[bool, typer.Option("--all", help="Every set that is not verified.")] = False,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Keep going until nothing can move.")] = True,
    only: Annotated[str | None, typer.Option(help="Only sets whose name matches this pattern (* wildcard).")] = None,
    max_running: Annotated[
        int | None, typer.Option(help="At most this many Alma jobs running at once (Alma's own limit is 3).")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print, per set, the requests hwf would send; change nothing.")
    ] = False,
) -> None:
    """Advance every unfinished set, re-attaching to Alma jobs already running: a scheduler within Alma's limits."""
    if not all_sets:
        fail("say --all (resume every set that is not verified), or use `hwf advance SET`", 2)
    if max_running is not None and max_running < 1:
        fail("--max-running must be at least 1", 2)
    if dry_run:
        from . import dryrun

        with _context(quiet=True) as ctx, _errors():
            for plan in dryrun.describe_all(ctx, only=only):
                typer.echo(plan.text())
        return
    from . import scheduler

    with _context() as ctx, _errors():
        summary = scheduler.resume_all(ctx, wait=wait, only=only, max_running=max_running)
    for r in summary.results:
        out.print(f"Set {r.set} ({r.name}): {r.state}: {r.message}")
    for set_id, why in summary.skipped:
        out.print(f"Set {set_id}: skipped: {why}")
    for _set_id, why in summary.attention:
        err.print(f"Needs attention: {why}")
    if summary.attention:
        raise typer.Exit(3)


@app.command()
def status(
    set_ref: Annotated[str | None, typer.Argument(metavar="[SET]", help="One set (default: all).")] = None,
    *,
    json_output: Annotated[bool, typer.Option("--json", help="JSON array for scripts.")] = False,
) -> None:
    """Where each set stands."""
    from . import views
    from .render import print_status

    with _context(quiet=True) as ctx, _errors():
        rows = views.status(ctx, set_ref)
    if json_output:
        _dump([r.as_json() for r in rows])
    else:
        print_status(out, rows)


@app.command()
def history(
    set_ref: Annotated[str, typer.Argument(metavar="SET")],
    *,
    json_output: Annotated[bool, typer.Option("--json", help="JSON array for scripts.")] = False,
) -> None:
    """The audit trail: every transition, submission, job result and operator action, oldest first."""
    from . import views

    with _context(quiet=True) as ctx, _errors():
        events = iter(views.history(ctx, set_ref))
        first = next(events, None)  # an unknown set fails here, before anything is written
        everything = itertools.chain([first], events) if first is not None else iter(())
        write = sys.stdout.write
        chunk: list[str] = []
        if json_output:
            write("[")
            for i, e in enumerate(everything):
                chunk.append(("," if i else "") + "\n  " + e.json_text())
                if len(chunk) >= 5000:
                    write("".join(chunk))
                    chunk.clear()
            write("".join(chunk) + "\n]\n")
            return
        for e in everything:
            at = e.at[:19] if isinstance(e.at, str) else e.at_utc.isoformat(sep=" ", timespec="seconds")[:19]
            chunk.append(f"{at}Z  {e.kind:<16} {e.detail}\n")
            if len(chunk) >= 5000:
                write("".join(chunk))
                chunk.clear()
        write("".join(chunk))


@app.command()
def report(
    set_ref: Annotated[str, typer.Argument(metavar="SET")],
    *,
    format: Annotated[str, typer.Option("--format", help="csv or json.")] = "csv",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to FILE instead of stdout.")] = None,
    problems: Annotated[bool, typer.Option("--problems", help="Only records that are not OK.")] = False,
) -> None:
    """Per-record results: MMS ID, handle, preflight class, verdict, resolved and expected URL."""
    from . import verification

    if format not in ("csv", "json"):
        fail(f"--format must be csv or json, not {format!r}", 2)
    with _context(quiet=True) as ctx, _errors():
        rows = verification.report(ctx, set_ref, problems_only=problems)
        buffer = io.StringIO()
        if format == "csv":
            writer = csv.writer(buffer, lineterminator="\n")
            writer.writerow(verification.CSV_COLUMNS)
            for r in rows:
                writer.writerow(verification.csv_row(r))
        else:
            json.dump([r.as_json() for r in rows], buffer, indent=2, ensure_ascii=False)
            buffer.write("\n")
    text = buffer.getvalue()
    if output is None:
        sys.stdout.write(text)
        return
    try:
        tmp = output.with_name(output.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(output)
    except OSError as exc:
        fail(f"cannot write {output}: {exc.strerror}", 1)
    err.print(f"Wrote {output}")


@app.command()
def check(
    set_ref: Annotated[str, typer.Argument(metavar="SET")],
    *,
    json_output: Annotated[bool, typer.Option("--json", help="JSON for scripts.")] = False,
) -> None:
    """Preflight: read every record's Dublin Core and classify it (READY, NEEDS_COPY, NEEDS_FIX, ...)."""
    from . import preflight
    from .render import print_check

    with _context(quiet=json_output) as ctx, _errors():
        summary = preflight.check_set(ctx, set_ref)
    if json_output:
        _dump(summary.as_json())
    else:
        print_check(out, summary)


@app.command()
def exclude(
    set_ref: Annotated[str, typer.Argument(metavar="SET")],
    mms_ids: Annotated[list[str], typer.Argument(metavar="MMS...", help="MMS IDs to leave out.")],
    *,
    reason: Annotated[str, typer.Option(help="Why (goes into the audit trail).")],
    keep_in_alma_set: Annotated[
        bool, typer.Option(help="Leave them in the Alma set (the jobs will still process them).")
    ] = False,
) -> None:
    """Leave records out of the workflow: out of every later guard, of verification, and (unless
    --keep-in-alma-set) out of the Alma set the jobs run on (audited)."""
    from . import preflight

    with _context(quiet=True) as ctx, _errors():
        out.print(preflight.exclude(ctx, set_ref, mms_ids, reason, keep_in_alma_set=keep_in_alma_set))


@app.command()
def include(
    set_ref: Annotated[str, typer.Argument(metavar="SET")],
    mms_ids: Annotated[list[str], typer.Argument(metavar="MMS...", help="MMS IDs to take back in.")],
    *,
    reason: Annotated[str, typer.Option(help="Why (goes into the audit trail).")],
) -> None:
    """Take excluded records back into the workflow (audited)."""
    from . import preflight

    with _context(quiet=True) as ctx, _errors():
        out.print(preflight.include(ctx, set_ref, mms_ids, reason))


@app.command()
def fix(
    set_ref: Annotated[str, typer.Argument(metavar="SET")],
    *,
    apply: Annotated[bool, typer.Option("--apply", help="Write the changes to Alma (default: dry run).")] = False,
    undo: Annotated[bool, typer.Option("--undo", help="Restore every record hwf changed from its backup.")] = False,
    diff: Annotated[bool, typer.Option("--diff", help="Show the full unified diff of each record.")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="JSON for scripts.")] = False,
) -> None:
    """Remove xsi:type from the handle dc:identifier of NEEDS_FIX records; a dry run (a line each) unless --apply."""
    from . import preflight
    from .render import FixProgress, print_fix

    if apply and undo:
        fail("--apply and --undo cannot be used together", 2)
    if undo and diff:
        fail("--diff shows what --apply would change; it does not go with --undo", 2)
    progress = None if json_output else FixProgress(err, "undo" if undo else "fix")
    try:
        with _context(quiet=True) as ctx, _errors():
            if undo:
                result = preflight.undo(ctx, set_ref, progress=progress)
            else:
                result = preflight.fix(ctx, set_ref, apply=apply, diff=diff, progress=progress)
    finally:
        if progress is not None:
            progress.close()
    if json_output:
        _dump(result.as_json())
    else:
        print_fix(out, result, diff=diff)
    if result.failed or result.refused:
        raise typer.Exit(1)


@app.command()
def verify(
    set_ref: Annotated[str, typer.Argument(metavar="SET")],
    *,
    recheck_all: Annotated[bool, typer.Option("--all", help="Re-check every record, not only those not OK.")] = False,
    follow: Annotated[bool, typer.Option("--follow", help="Also check the plain redirect and its Location.")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="JSON for scripts.")] = False,
) -> None:
    """Resolve every handle of the set at the handle proxy and compare with its Primo record URL."""
    from . import verification

    with _context(quiet=json_output) as ctx, _errors():
        counts = verification.verify_set(ctx, set_ref, recheck_all=recheck_all, follow=follow)
    if json_output:
        _dump(counts)
    else:
        out.print("Verdicts: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    if set(counts) - {"OK"}:
        raise typer.Exit(3)


@app.command()
def retry(
    set_ref: Annotated[str, typer.Argument(metavar="SET")],
    *,
    reason: Annotated[str, typer.Option(help="What was fixed (goes into the audit trail).")],
    step: Annotated[str | None, typer.Option(help="The step to retry (must be the set's next step).")] = None,
) -> None:
    """Clear a set's attention after fixing the cause, so `hwf advance` runs the step again (audited)."""
    from . import workflow

    with _context(quiet=True) as ctx, _errors():
        out.print(workflow.retry(ctx, set_ref, reason=reason, step=step))


@app.command()
def confirm(
    set_ref: Annotated[str, typer.Argument(metavar="SET")],
    *,
    instance: Annotated[str, typer.Option(help="The job instance id (Alma's Job ID / Process ID).")],
) -> None:
    """Adopt a job instance for the set's waiting step (manual integration, ambiguous reconciliation)."""
    from . import jobs

    with _context(quiet=True) as ctx, _errors():
        out.print(jobs.confirm(ctx, set_ref, instance))


@app.command()
def graph() -> None:
    """The state machine as a mermaid diagram."""
    from . import machine

    typer.echo(machine.mermaid(), nl=False)


@app.command()
def demo(
    *,
    records: Annotated[int, typer.Option(help="How many digital titles the demo set has.")] = 300,
    directory: Annotated[Path, typer.Option("--dir", help="Where the demo database and config go.")] = Path("hwf-demo"),
    job_seconds: Annotated[float, typer.Option(help="How long each simulated Alma job runs.")] = 4.0,
) -> None:
    """The whole workflow end to end against the built-in simulator: no Alma account needed."""
    from .demo import run_demo

    with _errors():
        run_demo(out, err, directory=directory, records=records, job_seconds=job_seconds)


@sim_app.command("serve")
def sim_serve(
    *,
    port: Annotated[int, typer.Option(help="TCP port on 127.0.0.1 (0 = any free port).")] = 8765,
    host: Annotated[str, typer.Option(help="Address to bind (keep it on loopback).")] = "127.0.0.1",
    scenario: Annotated[Path | None, typer.Option(help="Scenario TOML file.")] = None,
) -> None:
    """Serve the Alma + handle proxy simulator over HTTP until interrupted."""
    from .simulator import SimServer, Simulator, load_scenario

    with _errors():
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
    from .db import current_revision, make_engine, upgrade

    with _errors():
        engine = make_engine(_config().database_url)
        upgrade(engine)
        out.print(f"database at schema {current_revision(engine)}")


@app.command()
def version() -> None:
    """Print hwf's version."""
    typer.echo(__version__)


def main() -> None:
    app()


# Commands kept in their own modules register themselves on `app` when imported.
from . import cli_doctor, cli_ops, cli_setup  # noqa: E402,F401
