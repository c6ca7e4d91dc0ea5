"""``hwf overview`` (the whole migration in the terminal) and ``hwf serve`` (the read-only web dashboard),
registered on the main ``app``. Both show the one read model, ``overview.overview``."""

from __future__ import annotations

import json
import secrets
import socket
import threading
import time
import webbrowser
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from orchestrator.cli.base import app, config, context, errors, fail, out, time_display
from orchestrator.cli.text import TimeDisplay, clean, shorten, shorten_middle
from orchestrator.config import is_loopback_host
from orchestrator.display import duration
from orchestrator.service import overview as read
from orchestrator.service.overview import Overview
from orchestrator.wiring import read_only_context

DEFAULT_PORT = 8155
MIN_TOKEN_LENGTH = 16
MAX_REFRESH_SECONDS = 86_400

# ---------------------------------------------------------------------------------------------
# hwf overview


def _short(text: str, width: int) -> str:
    return shorten(" ".join(clean(text, keep_newlines=True).split()), width)


def _name(text: str, width: int) -> str:
    return shorten_middle(" ".join(clean(text, keep_newlines=True).split()), width)


def render_overview(ov: Overview, times: TimeDisplay | None = None) -> RenderableType:
    """The overview for a terminal of 80 columns: ids whole, names shortened in the middle and reasons at their
    end; times in the reader's zone (``times``), named, with how far they are."""
    times = times or TimeDisplay()
    now = ov.generated_at
    lines: list[RenderableType] = []
    pct = f" ({100 * ov.records_verified / ov.records:.1f} %)" if ov.records else ""
    head = Text()
    head.append(f"hwf overview, {times.full(ov.generated_at)}\n", style="bold")
    head.append(f"Records verified: {ov.records_verified:,} of {ov.records:,}{pct}")
    head.append(f", {ov.records_excluded:,} excluded\n" if ov.records_excluded else "\n")
    states = ", ".join(f"{state} {n}" for state, n in ov.sets_by_state.items())
    head.append(f"Sets: {ov.sets} ({states})\n")
    eta = times.when(ov.eta, now) if ov.eta else ("done" if ov.done else "unknown")
    head.append(f"ETA: {eta}", style="bold")
    head.append(f" ({ov.eta_note})\n")
    nxt = ov.next
    head.append("Next: ", style="bold")
    head.append(f"{clean(times.next(nxt.what, nxt.when, nxt.at, now))}\n")
    limits = ov.limits
    runs = ", ".join(f"{step} {n}" for step, n in limits.runs_last_hour.items())
    head.append(
        f"Alma: {limits.running_now} of {limits.max_running_jobs} API jobs running; runs in the last hour "
        f"(at most {limits.max_runs_per_job_hour} a job): {runs}\n"
    )
    oldest = ov.oldest_check
    if oldest is not None:
        head.append(f"Oldest full verification: set {oldest[0]}, {times.clock(oldest[1], now)}\n")
    if ov.stale_note:
        head.append(f"Stale in the public proxy's cache: {ov.stale_note}\n")
    if ov.durations:
        measured = ", ".join(f"{step} {duration(d.mean_seconds)} ({d.runs})" for step, d in ov.durations.items())
        head.append(f"Job durations measured (mean, runs): {measured}\n")
    lines.append(head)
    waiting_for_you = [b for b in ov.batches if b.needs_person]
    if waiting_for_you:
        text = Text()
        text.append(f"Waiting for you ({len(waiting_for_you)})\n", style="bold")
        for b in waiting_for_you:
            since = b.announced_at or b.created_at
            waited = duration((ov.generated_at - since).total_seconds())
            text.append(
                f"Integration batch {b.number} ({b.sets} sets, {b.records:,} records; Alma set {b.alma_set_id}), "
                f"waiting since {times.clock(since, now)} ({waited}):\n"
            )
            text.append(f"  {clean(b.clicks or '')}\n")
        lines.append(text)
    if ov.attention:
        table = Table(title=f"Needs attention ({len(ov.attention)})", title_justify="left", expand=False)
        table.add_column("set", no_wrap=True)
        table.add_column("name", no_wrap=True, max_width=18)
        table.add_column("reason / to go on", overflow="fold", ratio=1)
        for a in ov.attention:
            reason = _short(times.localize(a.reason, now), 90)
            table.add_row(a.set, _name(a.name, 18), Text(f"→ {clean(a.command)}\n{reason}"))
        lines.append(table)
    bound = [b for b in ov.batches if b.state == "bound"]
    if ov.running or bound:
        # No lines between the columns: at 80 columns the ids stay whole.
        title = f"Running in Alma ({len(ov.running) + len(bound)})"
        table = Table(title=title, title_justify="left", box=box.SIMPLE, padding=(0, 1), pad_edge=False)
        table.add_column("set", no_wrap=True)
        table.add_column("name", max_width=16)  # the one column that gives way: ids, status and % stay whole
        table.add_column("step", no_wrap=True)
        table.add_column("instance", no_wrap=True)
        table.add_column("status", no_wrap=True, max_width=12)
        table.add_column("%", justify="right", no_wrap=True)
        for r in ov.running:
            progress = f"{r.progress:.0f}" if r.progress is not None else ""
            table.add_row(r.set, _name(r.name, 16), r.step, r.instance_id or "(submitting)", r.status or "", progress)
        for b in bound:
            progress = f"{b.progress:.0f}" if b.progress is not None else ""
            table.add_row(
                b.alma_set_id or "", f"batch {b.number}", "integrate", b.instance_id or "", b.status or "", progress
            )
        lines.append(table)
    return Group(*lines)


def watch_console(**options: Any) -> Console:
    """The console ``overview --watch`` draws on: one of its own that wraps long lines as the one-shot view does
    (``out`` leaves a line whole, and a live display would crop it)."""
    return Console(highlight=False, soft_wrap=False, **options)


@app.command()
def overview(
    *,
    json_output: Annotated[bool, typer.Option("--json", help="One JSON object for scripts.")] = False,
    watch: Annotated[
        float | None, typer.Option(help="Redraw every SECONDS until interrupted.", metavar="SECONDS")
    ] = None,
) -> None:
    """The whole migration at a glance: sets per state, records verified, attention, running jobs, ETA."""
    if watch is not None and not 0 < watch <= MAX_REFRESH_SECONDS:  # inf and nan too: a redraw must come
        fail(f"--watch must be a positive number of seconds up to {MAX_REFRESH_SECONDS}, not {watch:g}", 2)
    with context(quiet=True) as ctx, errors():
        ov = read.overview(ctx)
        if json_output and watch is None:
            typer.echo(json.dumps(ov.as_json(), indent=2, ensure_ascii=False))
            return
        times = time_display(ctx.config)
        if watch is None:
            out.print(render_overview(ov, times), soft_wrap=False)
            return
        try:
            if json_output:
                while True:  # one JSON object per line, for a pipe
                    typer.echo(json.dumps(ov.as_json(), ensure_ascii=False))
                    time.sleep(watch)
                    ov = read.overview(ctx)
            screen = watch_console()
            with Live(render_overview(ov, times), console=screen, auto_refresh=False, transient=False) as live:
                while True:
                    time.sleep(watch)
                    live.update(render_overview(read.overview(ctx), times), refresh=True)
        except KeyboardInterrupt:
            return


# ---------------------------------------------------------------------------------------------
# hwf serve


def _display_host(host: str) -> str:
    if host in ("0.0.0.0", "::", ""):
        return socket.gethostname()
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


@app.command()
def serve(
    *,
    host: Annotated[
        str, typer.Option(help="Address to listen on. Any other than 127.0.0.1/localhost needs a token.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port (0: any free port).")] = DEFAULT_PORT,
    token: Annotated[
        str | None,
        typer.Option(
            envvar="HWF_SERVE_TOKEN",
            help="Access token every request must carry (default off 127.0.0.1: one is generated and printed once).",
        ),
    ] = None,
    open_browser: Annotated[bool, typer.Option("--open", help="Open the dashboard in a web browser.")] = False,
    refresh: Annotated[float, typer.Option(help="How often the overview page updates itself, in seconds.")] = 5.0,
) -> None:
    """The read-only web dashboard of the migration, from the same database (workers may run meanwhile)."""
    # Imported here, not at the top: `hwf overview` shares this module and needs none of Starlette and Jinja
    # (0.1 s of start-up). `web.serve` is looked up when called: a test replaces it.
    from orchestrator import web

    if not 0 <= port <= 65535:
        fail(f"--port must be between 0 and 65535, not {port}", 2)
    if not 0 < refresh <= MAX_REFRESH_SECONDS:  # inf and nan too: the page's timer needs a number it can keep
        fail(f"--refresh must be a positive number of seconds up to {MAX_REFRESH_SECONDS}, not {refresh:g}", 2)
    if token is not None and len(token) < MIN_TOKEN_LENGTH:
        fail(f"--token must be at least {MIN_TOKEN_LENGTH} characters long", 2)
    loopback = is_loopback_host(host)
    generated = token is None and not loopback
    if generated:
        token = secrets.token_urlsafe(24)
    with errors():
        ctx = read_only_context(config())
        sock = web.bind(host, port)
    try:
        actual = sock.getsockname()[1]
        base = f"http://{_display_host(host)}:{actual}/"
        url = base + (f"?token={token}" if token else "")
        typer.echo(f"hwf dashboard (read-only) on {base}", err=True)
        if generated:
            typer.echo("Access token (shown only now; every request needs it):", err=True)
            typer.echo(f"  {token}", err=True)
        if token:
            typer.echo(f"Open {url} (the token then lives in a cookie) or send Authorization: Bearer TOKEN.", err=True)
        typer.echo(url)
        if open_browser:
            threading.Timer(0.5, webbrowser.open, args=(url,)).start()
        app_ = web.create_app(ctx, token=token, loopback=loopback, poll_seconds=refresh)
        try:
            web.serve(app_, sock)
        except KeyboardInterrupt:
            pass
    finally:
        sock.close()
        ctx.sessions.kw["bind"].dispose()
