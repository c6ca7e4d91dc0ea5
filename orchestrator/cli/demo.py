"""``hwf demo``: the whole workflow on the built-in simulator, narrated, with a summary at the end."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from orchestrator.cli.base import app, err, errors, fail, out, time_display
from orchestrator.cli.render import RichReporter, print_fix, print_steps
from orchestrator.cli.text import TimeDisplay, safe
from orchestrator.config import load_config
from orchestrator.domain.wording import plural
from orchestrator.errors import NeedsAttentionError
from orchestrator.service import overview, preflight, repair, verification, views, workflow
from orchestrator.service.context import Context
from orchestrator.simulator import Scenario, SimServer, Simulator
from orchestrator.wiring import build_context

DEMO_KEY_ENV = "HWF_DEMO_API_KEY"
DEMO_SET_NAME = "Demo digital titles"


@app.command()
def demo(
    *,
    records: Annotated[int, typer.Option(help="How many digital titles the demo set has.")] = 300,
    directory: Annotated[Path, typer.Option("--dir", help="Where the demo database and config go.")] = Path("hwf-demo"),
    job_seconds: Annotated[float, typer.Option(help="How long each simulated Alma job runs.")] = 4.0,
) -> None:
    """The whole workflow end to end against the built-in simulator: no Alma account needed."""
    if not 1 <= records <= 100_000:
        fail(f"--records must be between 1 and 100000, not {records}", 2)
    if not 0 <= job_seconds <= 3600:  # also refuses nan
        fail(f"--job-seconds must be between 0 and 3600, not {job_seconds}", 2)
    with errors():
        run_demo(out, err, directory=directory, records=records, job_seconds=job_seconds, times=time_display())


def _write_config(path: Path, url: str, database: Path, job_ids: dict[str, str]) -> None:
    path.write_text(
        f"""# Written by `hwf demo`: points hwf at the built-in simulator, which stops when the demo ends.
[database]
url = "sqlite:///{database}"

[alma]
base_url = "{url}"
api_key_env = "{DEMO_KEY_ENV}"
institution_code = "01GCL_INST"
poll_interval_seconds = 0.5
poll_max_interval_seconds = 2
reconcile_grace_seconds = 10
# The simulator is local: hwf may go faster than it would against Alma (whose limit is 25 calls a second).
requests_per_second = 100

[alma.jobs]
copy_identifiers = "{job_ids["copy"]}"
handle_migration = "{job_ids["migration"]}"
handle_integration = "{job_ids["integration"]}"
# As with a real Alma: a person presses Run on the Handle integration profile, once per integration batch, and
# hwf finds that run. In the demo the simulator presses it for you.
handle_integration_mode = "manual"

[handles]
prefix = "11084"
resolver_url = "{url}"
settle_minutes = 0
concurrency = 8
requests_per_second = 400

[primo]
domain = "grinnell.primo.exlibrisgroup.com"
view = "01GCL_INST:GCL"
""",
        encoding="utf-8",
    )


def run_demo(
    out: Console,
    err: Console,
    *,
    directory: Path,
    records: int,
    job_seconds: float,
    times: TimeDisplay | None = None,
) -> None:
    """Start the simulator, create a set of realistic titles, and drive it to ``verified``."""
    directory = directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    database = directory / "hwf.db"
    for stale in (database, database.with_name("hwf.db-wal"), database.with_name("hwf.db-shm")):
        if stale.exists():
            stale.unlink()
    scenario = Scenario(
        job_seconds={
            "copy": job_seconds,
            "migration": job_seconds,
            "integration": job_seconds,
            "other": job_seconds,
        },
        copy_keeps_xsi_type=True,
        per_second_limit=0,
    )
    sim = Simulator(scenario)
    job_ids = {job.kind: job.id for job in scenario.jobs}
    with SimServer(sim, host="127.0.0.1", port=0) as server:
        config_path = directory / "hwf.toml"
        _write_config(config_path, server.url, database, job_ids)
        config = load_config(config_path, environ={DEMO_KEY_ENV: "demo-key-not-secret"})
        mms_ids = sim.generate_records(records, profile="demo", seed=7)
        set_id = sim.create_set(DEMO_SET_NAME, mms_ids)
        out.print(f"[bold]hwf demo[/bold]: simulator on {safe(server.url)}; database {safe(database)}")
        out.print(
            f"Alma set {safe(set_id)} {DEMO_SET_NAME!r}: {len(mms_ids)} digital titles shaped like Grinnell's; "
            f"each simulated job runs {job_seconds:g} s.\n"
        )
        times = times or TimeDisplay()
        ctx = build_context(config, reporter=RichReporter(out, times=times))
        try:
            workflow.add_set(ctx, set_id)
            summary = preflight.check_set(ctx, set_id)
            out.print("Preflight: " + ", ".join(f"{k} {v}" for k, v in sorted(summary.counts.items())))
            for _ in range(3):
                try:
                    _drive(out, ctx, sim, set_id)
                    break
                except NeedsAttentionError as exc:
                    out.print(f"[yellow]{safe(exc)}[/yellow]")
                    if not _show_and_fix_the_trap(out, ctx, set_id):
                        raise
            _summary(out, ctx, set_id, times)
        finally:
            ctx.close()
    out.print(
        f"\nThe simulator has stopped; the database stays. Look around:\n"
        f"  hwf --config {safe(config_path)} status\n"
        f"  hwf --config {safe(config_path)} history {safe(set_id)}\n"
        f"  hwf --config {safe(config_path)} report {safe(set_id)} --format csv\n"
        f"The dashboard on this database (read-only; then open http://127.0.0.1:8155/):\n"
        f"  hwf --config {safe(config_path)} serve --open"
    )


def _drive(out: Console, ctx: Context, sim: Simulator, set_id: str) -> None:
    """Advance the set to verified; when an integration batch waits for a person, the simulator presses Run."""
    pressed: set[int] = set()
    while True:
        result = workflow.advance(ctx, set_id, wait=False)
        if result.outcome is workflow.Outcome.VERIFIED:
            return
        for batch in overview.batches(ctx):
            if batch.needs_person and batch.number not in pressed:
                pressed.add(batch.number)
                out.print(
                    f"\n[bold]Integration batch {batch.number:d}[/bold] waits for a person to press Run (the "
                    "clicks "
                    "above). In your Alma a person does this once for every set that reached `migrated` (one click "
                    "a day); here the simulator presses Run for you, and hwf finds the run by itself.\n"
                )
                sim.press_integration_run(batch.name, user="demo-operator")
        wake = result.wait_until or ctx.clock()
        ctx.sleep(min(max((wake - ctx.clock()).total_seconds(), 0.1), 2.0))


def _show_and_fix_the_trap(out: Console, ctx: Context, set_id: str) -> bool:
    """The seed case's trap: show one record's diff, then repair every record (False: nothing to fix)."""
    dry = repair.fix(ctx, set_id, apply=False, diff=True)
    if not dry.diffs:
        return False
    first = next(iter(dry.diffs))
    out.print(
        '\nThis is the trap from the real case: the copy job carried xsi:type="dcterms:URI" '
        "onto dc:identifier, and the Handle Migration job would skip those records while "
        "reporting success. `hwf fix` removes only that attribute (diff of one record):"
    )
    one = repair.FixReport(
        set=dry.set, mode="dry-run", summaries={first: dry.summaries[first]}, diffs={first: dry.diffs[first]}
    )
    print_fix(out, one, diff=True)
    applied = repair.fix(ctx, set_id, apply=True)
    out.print(
        f"`hwf fix {safe(set_id)} --apply`: {plural(len(applied.changed), 'record')} repaired "
        "(each original <bib> backed up first; `hwf fix --undo` restores them).\n"
    )
    return True


def _summary(out: Console, ctx: Context, set_id: str, times: TimeDisplay) -> None:
    print_steps(out, views.attempts(ctx, set_id), times, "Steps (`hwf history SET --steps` shows this for any set)")
    verdicts = Counter(r.verdict or "UNCHECKED" for r in verification.report(ctx, set_id))
    state = views.status(ctx, set_id)[0]
    result = Table(title=f"Set {state.set}: {state.state}", title_justify="left")
    result.add_column("verdict")
    result.add_column("records", justify="right")
    for verdict, count in sorted(verdicts.items()):
        result.add_row(verdict, str(count))
    out.print(result)
