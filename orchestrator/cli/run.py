"""Commands that move sets forward: add, check, exclude/include, fix, advance, resume, verify, retry, confirm."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from orchestrator.cli.base import app, context, dump, err, errors, fail, out, say, time_display, verbosity
from orchestrator.cli.render import FixProgress, print_check, print_check_all, print_fix
from orchestrator.cli.text import TimeDisplay, clean, safe
from orchestrator.display import iso_z
from orchestrator.domain.handles import VERIFIED_VALUES
from orchestrator.domain.wording import plural
from orchestrator.service import (
    adoption,
    batches,
    dryrun,
    membership,
    preflight,
    repair,
    scheduler,
    verification,
    views,
    worker,
    workflow,
)
from orchestrator.service.actions import confirm as confirming
from orchestrator.service.context import Context
from orchestrator.service.nextstep import Next
from orchestrator.service.workflow import AdvanceResult

SET_HELP = "Alma set id or the local name given at `hwf add`."


def _said(command: str, set_ref: str, message: str, json_output: bool) -> None:
    """A command's one-line outcome: the line, or ``{"command", "set", "message"}`` with --json."""
    if json_output:
        dump({"command": command, "set": set_ref, "message": message})
    else:
        out.print(safe(message))


def result_line(r: AdvanceResult, times: TimeDisplay | None = None) -> str:
    """``Set 123 (name): verified`` or ``Set 123 (name): migrated; waiting for ...`` (never the state twice); the
    moments in the message in the reader's zone (``times``)."""
    head = f"Set {safe(r.set)} ({safe(r.name)})"
    message = times.localize(r.message) if times is not None else r.message
    if r.message in (r.state, "verified") or r.message.startswith(f"already {r.state}"):
        return f"{head}: {safe(message)}"
    return f"{head}: {safe(r.state)}; {safe(message)}"


def result_json(r: AdvanceResult) -> dict[str, object]:
    return {
        "set": r.set,
        "name": r.name,
        "outcome": r.outcome.value,
        "state": r.state,
        "message": r.message,
        "wait_until": iso_z(r.wait_until),
    }


@app.command()
def add(
    alma_set_id: Annotated[
        str | None, typer.Argument(metavar="ALMA_SET_ID", help="The Alma set id (digits).", show_default=False)
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
        with context(quiet=json_output) as ctx, errors():
            summaries = batches.add_from_csv(ctx, from_csv, name, batch_size=batch_size)
    else:
        if alma_set_id is None:
            fail("give an ALMA_SET_ID, or --from-csv FILE --name NAME", 2)
        with context(quiet=json_output) as ctx, errors():
            if adopt:
                summaries = [adoption.adopt(ctx, alma_set_id, name)]
            else:
                summaries = [workflow.add_set(ctx, alma_set_id, name)]
    summaries = _first_checks(summaries, quiet=json_output)
    if json_output:
        dump([s.as_json() for s in summaries] if from_csv else summaries[0].as_json())
        return
    for summary in summaries:
        out.print(
            f"Registered set {safe(summary.set)} ({safe(summary.name)}): {plural(summary.records, 'record')}, "
            f"state {safe(summary.state)}"
        )
        if summary.attention:
            out.print(f"  needs attention: {safe(summary.attention)}")


def _first_checks(summaries: list[views.SetSummary], *, quiet: bool) -> list[views.SetSummary]:
    """Read the records of every set just registered (problems show on day one); the summaries after it."""
    with context(quiet=quiet) as ctx, errors():
        for summary in summaries:
            if summary.state in ("created", "identifiers_copied"):
                preflight.check_new(ctx, summary.set)
        return [views.status(ctx, s.set)[0] for s in summaries]


@app.command()
def check(
    set_ref: Annotated[str | None, typer.Argument(metavar="SET", help=SET_HELP, show_default=False)] = None,
    *,
    every: Annotated[bool, typer.Option("--all", help="Every set not yet migrated, oldest first.")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="JSON for scripts.")] = False,
) -> None:
    """Preflight: read every record's Dublin Core and classify it (READY, NEEDS_COPY, NEEDS_FIX, ...).

    Exit 0 when the set can go on to its next job, 3 when records stop it (before the copy job: NO_HANDLE,
    BAD_HANDLE, DUPLICATE_HANDLE, NOT_DC, BAD_XML, MISSING; before the migration job: anything not READY). The
    set's attention follows: raised, rewritten or cleared. With --all: every set not yet migrated, one line
    each; exit 3 when any set cannot go on."""
    if every == (set_ref is not None):
        fail("give a SET, or --all", 2)
    with context(quiet=json_output) as ctx, errors():
        summaries = preflight.check_all(ctx) if every else [preflight.check_set(ctx, set_ref or "")]
    if json_output:
        dump([s.as_json() for s in summaries] if every else summaries[0].as_json())
    elif every:
        print_check_all(out, summaries)
    else:
        print_check(out, summaries[0])
    if any(s.blocking() for s in summaries):
        raise typer.Exit(3)


@app.command()
def exclude(
    set_ref: Annotated[str, typer.Argument(metavar="SET", help=SET_HELP)],
    mms_ids: Annotated[list[str], typer.Argument(metavar="MMS...", help="MMS IDs to leave out.")],
    *,
    reason: Annotated[str, typer.Option(help="Why (goes into the audit trail).")],
    keep_in_alma_set: Annotated[
        bool, typer.Option(help="Leave them in the Alma set (the jobs will still process them).")
    ] = False,
    json_output: Annotated[bool, typer.Option("--json", help="JSON for scripts.")] = False,
) -> None:
    """Leave records out of the workflow: out of every later guard, of verification, and (unless
    --keep-in-alma-set) out of the Alma set the jobs run on (audited)."""
    with context(quiet=True) as ctx, errors():
        message = preflight.exclude(ctx, set_ref, mms_ids, reason, keep_in_alma_set=keep_in_alma_set)
    _said("exclude", set_ref, message, json_output)


@app.command()
def include(
    set_ref: Annotated[str, typer.Argument(metavar="SET", help=SET_HELP)],
    mms_ids: Annotated[list[str], typer.Argument(metavar="MMS...", help="MMS IDs to take back in.")],
    *,
    reason: Annotated[str, typer.Option(help="Why (goes into the audit trail).")],
    json_output: Annotated[bool, typer.Option("--json", help="JSON for scripts.")] = False,
) -> None:
    """Take excluded records back into the workflow (audited)."""
    with context(quiet=True) as ctx, errors():
        message = preflight.include(ctx, set_ref, mms_ids, reason)
    _said("include", set_ref, message, json_output)


@app.command()
def fix(
    set_ref: Annotated[str, typer.Argument(metavar="SET", help=SET_HELP)],
    *,
    apply: Annotated[bool, typer.Option("--apply", help="Write the changes to Alma (default: dry run).")] = False,
    undo: Annotated[bool, typer.Option("--undo", help="Restore every record hwf changed from its backup.")] = False,
    diff: Annotated[bool, typer.Option("--diff", help="Show the full unified diff of each record.")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="JSON for scripts.")] = False,
) -> None:
    """Remove xsi:type from the handle dc:identifier of NEEDS_FIX records; a dry run (a line each) unless
    --apply. Records are read 100 at a time and written concurrently within the rate cap, each original
    backed up first."""
    if apply and undo:
        fail("--apply and --undo cannot be used together", 2)
    if undo and diff:
        fail("--diff shows what --apply would change; it does not go with --undo", 2)
    progress = None if json_output else FixProgress(err, "undo" if undo else "fix")
    try:
        with context(quiet=True) as ctx, errors():
            if undo:
                result = repair.undo(ctx, set_ref, progress=progress)
            else:
                result = repair.fix(ctx, set_ref, apply=apply, diff=diff, progress=progress)
    finally:
        if progress is not None:
            progress.close()
    if json_output:
        dump(result.as_json())
    else:
        print_fix(out, result, diff=diff)
    if result.failed or result.refused:
        raise typer.Exit(1)


@app.command()
def advance(
    set_ref: Annotated[str, typer.Argument(metavar="SET", help=SET_HELP)],
    *,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Wait for running jobs (default) or exit 0.")] = True,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the requests hwf would send and the transition; change nothing.")
    ] = False,
    json_output: Annotated[bool, typer.Option("--json", help="The outcome as JSON (no progress display).")] = False,
) -> None:
    """Run the set forward, step after step, until verified, or until it must wait or needs attention.

    Exit 0 when verified (or waiting, with --no-wait), 3 when the set needs attention (the reason is on
    stderr), 4 when another hwf process holds it."""
    if dry_run:
        with context(quiet=True) as ctx, errors():
            plan = dryrun.describe_advance(ctx, set_ref)
        if json_output:
            dump(plan.as_json())
        else:
            typer.echo(clean(plan.text(), keep_newlines=True))
        return
    with context(quiet=json_output) as ctx, errors():
        result = workflow.advance(ctx, set_ref, wait=wait)
    if json_output:
        dump(result_json(result))
    else:
        out.print(result_line(result, time_display(ctx.config)))


@app.command()
def resume(
    *,
    all_sets: Annotated[
        bool, typer.Option("--all", help="Every set that is not verified (the default; kept for scripts).")
    ] = True,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Keep going until nothing can move.")] = True,
    only: Annotated[str | None, typer.Option(help="Only sets whose name matches this pattern (* wildcard).")] = None,
    max_running: Annotated[
        int | None, typer.Option(help="At most this many Alma jobs running at once (Alma's own limit is 3).")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print, per set, the requests hwf would send; change nothing.")
    ] = False,
    json_output: Annotated[bool, typer.Option("--json", help="The outcome of every set as JSON.")] = False,
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
    """Advance every unfinished set (`hwf resume` and `hwf resume --all` are the same), re-attaching to
    Alma jobs already running: a scheduler within Alma's limits. One set: `hwf advance SET`.

    Exit 0 when no set needs attention, 3 when one does (each reason on stderr), 2 when --only matches
    no set."""
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
        with context(quiet=True) as ctx, errors():
            plans = dryrun.describe_all(ctx, only=only)
        if json_output:
            dump([plan.as_json() for plan in plans])
        for plan in [] if json_output else plans:
            typer.echo(clean(plan.text(), keep_newlines=True))
        if not plans and not json_output:
            say("Nothing to resume: every set is verified.")
        return
    with context(quiet=json_output) as ctx, errors():
        summary = scheduler.resume_all(ctx, wait=wait, only=only, max_running=max_running)
    if json_output:
        dump(
            {
                "results": [result_json(r) for r in summary.results],
                "attention": [{"set": s, "reason": why} for s, why in summary.attention],
                "skipped": [{"set": s, "reason": why} for s, why in summary.skipped],
            }
        )
    else:
        _print_resume(summary, time_display(ctx.config))
    if summary.attention:
        raise typer.Exit(3)


def _print_resume(summary: scheduler.ResumeSummary, times: TimeDisplay) -> None:
    for r in summary.results:
        out.print(result_line(r, times))
    for set_id, why in summary.skipped:
        out.print(f"Set {safe(set_id)}: skipped: {safe(why)}")
    for _set_id, why in summary.attention:
        err.print(safe(why))  # "set 123 (name) needs attention: ..." already
    if not (summary.results or summary.skipped or summary.attention):
        say("Nothing to resume: every set is verified.")


def _speaker(ctx: Context) -> Callable[[Next], None]:
    """The worker's lines, where its progress goes (stderr; stdout keeps the summary): the local time, what it
    says, and until when (in the reader's zone)."""
    times = time_display(ctx.config)

    def speak(said: Next) -> None:
        now = ctx.clock()
        err.print(f"[dim]{safe(times.stamp(now))}[/dim] {safe(times.next(said.what, said.when, said.at, now))}")

    return speak


def _follow(only: str | None, max_running: int | None, until_idle: bool) -> None:
    stop = worker.StopFlag()

    def on_signal(number: int, _frame: object) -> None:
        stop.set(signal.Signals(number).name)
        signal.signal(number, signal.SIG_DFL)  # a second signal ends the process at once

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        with context() as ctx, errors():
            speak = _speaker(ctx) if verbosity() >= 0 else None
            summary = worker.follow(ctx, stop, only=only, max_running=max_running, until_idle=until_idle, speak=speak)
        # A signal while the worker closes and prints its summary (it ran out of work at that moment) is noted,
        # not fatal: the summary is printed whole and the exit code is the worker's.
        out.print(f"Worker {safe(worker.describe(summary))}")
        for set_id, why in summary.attention:
            out.print(f"Needs attention: set {safe(set_id)}: {safe(why)}")
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    if until_idle and summary.stopped is None and summary.attention:
        raise typer.Exit(3)  # like `hwf resume --all`; stopped by a signal, the worker always exits 0


@app.command()
def verify(
    set_ref: Annotated[str, typer.Argument(metavar="SET", help=SET_HELP)],
    *,
    recheck_all: Annotated[bool, typer.Option("--all", help="Re-check every record, not only those not OK.")] = False,
    follow: Annotated[bool, typer.Option("--follow", help="Also check the plain redirect and its Location.")] = False,
    authoritative: Annotated[
        bool,
        typer.Option(
            "--authoritative",
            help="Ask the primary handle server (auth=true) for every handle, not the public proxy first.",
        ),
    ] = False,
    json_output: Annotated[bool, typer.Option("--json", help="JSON for scripts.")] = False,
) -> None:
    """Resolve every handle of the set at the handle proxy and compare with its Primo record URL."""
    with context(quiet=json_output) as ctx, errors():
        counts = verification.verify_set(
            ctx, set_ref, recheck_all=recheck_all, follow=follow, authoritative=authoritative
        )
    if json_output:
        dump(counts)
    else:
        out.print("Verdicts: " + (", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "nothing to check"))
    if set(counts) - VERIFIED_VALUES:
        raise typer.Exit(3)


@app.command()
def retry(
    set_ref: Annotated[str, typer.Argument(metavar="SET", help=SET_HELP)],
    *,
    reason: Annotated[str, typer.Option(help="What was fixed (goes into the audit trail).")],
    step: Annotated[str | None, typer.Option(help="The step to retry (must be the set's next step).")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="JSON for scripts.")] = False,
) -> None:
    """Clear a set's attention after fixing the cause, so `hwf advance` runs the step again (audited)."""
    with context(quiet=True) as ctx, errors():
        message = workflow.retry(ctx, set_ref, reason=reason, step=step)
    _said("retry", set_ref, message, json_output)


@app.command()
def confirm(
    set_ref: Annotated[str, typer.Argument(metavar="SET", help=SET_HELP)],
    *,
    instance: Annotated[str, typer.Option(help="The job instance id (Alma's Job ID / Process ID).")],
    force: Annotated[
        bool,
        typer.Option("--force", help="Adopt an instance whose reply names no set (checked by you in Monitor Jobs)."),
    ] = False,
    json_output: Annotated[bool, typer.Option("--json", help="JSON for scripts.")] = False,
) -> None:
    """Bind a job run you name to the set's waiting step (a step run by hand, an integration batch, an ambiguous
    reconciliation).

    For a set's own step the run must be of the step's job, on this set, and adopted by no other set. For a set
    in an integration batch (SET may also be the batch's name), it must be a person's run of the handle
    integration job, on as many records as the batch holds, bound to no other batch or set."""
    with context(quiet=True) as ctx, errors():
        message = confirming.confirm(ctx, set_ref, instance, force=force)
    _said("confirm", set_ref, message, json_output)


@app.command()
def sync(
    set_ref: Annotated[str, typer.Argument(metavar="SET", help=SET_HELP)],
    *,
    json_output: Annotated[bool, typer.Option("--json", help="JSON for scripts.")] = False,
) -> None:
    """Take the Alma set's members as they are now, after hwf stopped the set because they changed (drift).

    Before the copy job, new records join the set (they are checked like the rest). After it, records that joined
    late are taken out of the Alma set (hwf's own sets; for others you remove them, as it says) and listed for a
    later set, and records that left are marked so in the report. Exit 0 when the set can go on, 3 when it still
    needs you."""
    with context(quiet=True) as ctx, errors():
        report = membership.sync(ctx, set_ref)
    if json_output:
        dump(report.as_json())
    else:
        out.print(safe(report.message))
    if report.to_remove:
        raise typer.Exit(3)
