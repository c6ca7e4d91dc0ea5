"""Commands that move sets forward: add, check, exclude/include, fix, advance, resume, verify, retry, confirm."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from orchestrator.cli.base import app, context, dump, err, errors, fail, out
from orchestrator.service import scheduler, workflow


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
    batch_size: Annotated[
        int,
        typer.Option(
            help="With --from-csv: at most this many members per set. Default 100: Grinnell's CABB guidance "
            "for the handle workflow keeps handle sets under 100 records (Alma jobs in bulks of 100); any size works."
        ),
    ] = 100,
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
        from orchestrator.service import batches

        with context(quiet=json_output) as ctx, errors():
            summaries = batches.add_from_csv(ctx, from_csv, name, batch_size=batch_size)
    else:
        if alma_set_id is None:
            fail("give an ALMA_SET_ID, or --from-csv FILE --name NAME", 2)
        with context(quiet=json_output) as ctx, errors():
            if adopt:
                from orchestrator.service import audit

                summaries = [audit.adopt(ctx, alma_set_id, name)]
            else:
                summaries = [workflow.add_set(ctx, alma_set_id, name)]
    if json_output:
        dump([s.as_json() for s in summaries] if from_csv else summaries[0].as_json())
        return
    for summary in summaries:
        out.print(f"Registered set {summary.set} ({summary.name}): {summary.records} records, state {summary.state}")


@app.command()
def check(
    set_ref: Annotated[str, typer.Argument(metavar="SET")],
    *,
    json_output: Annotated[bool, typer.Option("--json", help="JSON for scripts.")] = False,
) -> None:
    """Preflight: read every record's Dublin Core and classify it (READY, NEEDS_COPY, NEEDS_FIX, ...)."""
    from orchestrator.cli.render import print_check
    from orchestrator.service import preflight

    with context(quiet=json_output) as ctx, errors():
        summary = preflight.check_set(ctx, set_ref)
    if json_output:
        dump(summary.as_json())
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
    from orchestrator.service import preflight

    with context(quiet=True) as ctx, errors():
        out.print(preflight.exclude(ctx, set_ref, mms_ids, reason, keep_in_alma_set=keep_in_alma_set))


@app.command()
def include(
    set_ref: Annotated[str, typer.Argument(metavar="SET")],
    mms_ids: Annotated[list[str], typer.Argument(metavar="MMS...", help="MMS IDs to take back in.")],
    *,
    reason: Annotated[str, typer.Option(help="Why (goes into the audit trail).")],
) -> None:
    """Take excluded records back into the workflow (audited)."""
    from orchestrator.service import preflight

    with context(quiet=True) as ctx, errors():
        out.print(preflight.include(ctx, set_ref, mms_ids, reason))


@app.command()
def fix(
    set_ref: Annotated[str, typer.Argument(metavar="SET")],
    *,
    apply: Annotated[bool, typer.Option("--apply", help="Write the changes to Alma (default: dry run).")] = False,
    undo: Annotated[bool, typer.Option("--undo", help="Restore every record hwf changed from its backup.")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="JSON for scripts.")] = False,
) -> None:
    """Remove xsi:type from the handle dc:identifier of NEEDS_FIX records; dry run unless --apply."""
    from orchestrator.cli.render import print_fix
    from orchestrator.service import preflight

    if apply and undo:
        fail("--apply and --undo cannot be used together", 2)
    with context(quiet=True) as ctx, errors():
        result = preflight.undo(ctx, set_ref) if undo else preflight.fix(ctx, set_ref, apply=apply)
    if json_output:
        dump(result.as_json())
    else:
        print_fix(out, result)
    if result.failed or result.refused:
        raise typer.Exit(1)


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
        from orchestrator.service import dryrun

        with context(quiet=True) as ctx, errors():
            typer.echo(dryrun.describe_advance(ctx, set_ref).text())
        return
    with context() as ctx, errors():
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
    follow: Annotated[
        bool,
        typer.Option(
            "--follow",
            help="The unattended worker: keep going (outages, quota resets, re-verification) until "
            "SIGTERM/SIGINT, then finish the step in hand, release the leases and exit 0 with a summary.",
        ),
    ] = False,
    until_idle: Annotated[
        bool, typer.Option("--until-idle", help="With --follow: exit 0 once no set can move without a person.")
    ] = False,
) -> None:
    """Advance every unfinished set, re-attaching to Alma jobs already running: a scheduler within Alma's limits."""
    if not all_sets:
        fail("say --all (resume every set that is not verified), or use `hwf advance SET`", 2)
    if max_running is not None and max_running < 1:
        fail("--max-running must be at least 1", 2)
    if until_idle and not follow:
        fail("--until-idle goes with --follow", 2)
    if follow:
        if dry_run or not wait:
            fail("--follow keeps going: it cannot be combined with --dry-run or --no-wait", 2)
        _follow(only, max_running, until_idle)
        return
    if dry_run:
        from orchestrator.service import dryrun

        with context(quiet=True) as ctx, errors():
            for plan in dryrun.describe_all(ctx, only=only):
                typer.echo(plan.text())
        return
    with context() as ctx, errors():
        summary = scheduler.resume_all(ctx, wait=wait, only=only, max_running=max_running)
    for r in summary.results:
        out.print(f"Set {r.set} ({r.name}): {r.state}: {r.message}")
    for set_id, why in summary.skipped:
        out.print(f"Set {set_id}: skipped: {why}")
    for _set_id, why in summary.attention:
        err.print(f"Needs attention: {why}")
    if summary.attention:
        raise typer.Exit(3)


def _follow(only: str | None, max_running: int | None, until_idle: bool) -> None:
    import signal

    from orchestrator.service import worker

    stop = worker.StopFlag()

    def on_signal(number: int, _frame: object) -> None:
        stop.set(signal.Signals(number).name)
        signal.signal(number, signal.SIG_DFL)  # a second signal ends the process at once

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        with context() as ctx, errors():
            summary = worker.follow(ctx, stop, only=only, max_running=max_running, until_idle=until_idle)
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    out.print(f"Worker {worker.describe(summary)}")
    for set_id, why in summary.attention:
        out.print(f"Needs attention: set {set_id}: {why}")
    if until_idle and summary.stopped is None and summary.attention:
        raise typer.Exit(3)  # like `hwf resume --all`; stopped by a signal, the worker always exits 0


@app.command()
def verify(
    set_ref: Annotated[str, typer.Argument(metavar="SET")],
    *,
    recheck_all: Annotated[bool, typer.Option("--all", help="Re-check every record, not only those not OK.")] = False,
    follow: Annotated[bool, typer.Option("--follow", help="Also check the plain redirect and its Location.")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="JSON for scripts.")] = False,
) -> None:
    """Resolve every handle of the set at the handle proxy and compare with its Primo record URL."""
    from orchestrator.service import verification

    with context(quiet=json_output) as ctx, errors():
        counts = verification.verify_set(ctx, set_ref, recheck_all=recheck_all, follow=follow)
    if json_output:
        dump(counts)
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
    with context(quiet=True) as ctx, errors():
        out.print(workflow.retry(ctx, set_ref, reason=reason, step=step))


@app.command()
def confirm(
    set_ref: Annotated[str, typer.Argument(metavar="SET")],
    *,
    instance: Annotated[str, typer.Option(help="The job instance id (Alma's Job ID / Process ID).")],
) -> None:
    """Adopt a job instance for the set's waiting step (manual integration, ambiguous reconciliation)."""
    from orchestrator.service import jobs

    with context(quiet=True) as ctx, errors():
        out.print(jobs.confirm(ctx, set_ref, instance))
