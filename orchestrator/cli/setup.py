"""First-run commands (``hwf init``, ``hwf jobs``, ``hwf ping``), registered on the main ``app``."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from orchestrator.cli.base import app, config, config_path, err, errors, fail, out, wiring
from orchestrator.cli.text import safe
from orchestrator.config import STEP_JOB_KEYS, plain_http_elsewhere
from orchestrator.errors import AlmaError

if TYPE_CHECKING:
    from orchestrator.alma.types import JobInfo
    from orchestrator.service.onboarding import InitResult, JobDiscovery

_STATUS_STYLE = {"ok": "green", "warn": "yellow", "fail": "bold red", "skip": "dim"}


def _interactive() -> bool:
    """Ask questions only when a person is at the keyboard."""
    return sys.stdin.isatty()


def _choose(role: str, candidates: tuple[JobInfo, ...]) -> str:
    from orchestrator.service.onboarding import ROLE_TITLES  # lazy: keeps other commands' start-up light

    err.print(f"Several manual jobs could be {safe(role)} ({safe(ROLE_TITLES[role])}):")
    for number, job in enumerate(candidates, start=1):
        err.print(f"  {safe(number)}. {safe(job.id)}  {safe(job.name)}  ({safe(job.category or '-')})")
    while True:
        answer = str(typer.prompt(f"Which one is {role}? (number or job id)", err=True)).strip()
        if answer.isdigit() and 1 <= int(answer) <= len(candidates):
            return candidates[int(answer) - 1].id
        if any(job.id == answer for job in candidates):
            return answer
        err.print(f"Not one of 1-{len(candidates)} or the ids above.")


def _config_path(output: Path | None) -> Path:
    return output if output is not None else config_path()


@app.command()
def init(
    *,
    region: Annotated[
        str, typer.Option(help="Alma region: na, eu, ap, aps, ca or cn (cn uses the .com.cn gateway).")
    ] = "na",
    institution: Annotated[str | None, typer.Option(help="Alma institution code, like 01GCL_INST.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
    copy_job: Annotated[str | None, typer.Option(help='Job id of "Copy dcterms to dc:identifier".')] = None,
    migration_job: Annotated[str | None, typer.Option(help="Job id of the Handle Migration job.")] = None,
    integration_job: Annotated[str | None, typer.Option(help="Job id of the Handle integration job.")] = None,
    key_env: Annotated[
        str, typer.Option(help="Environment variable that holds the Alma API key.")
    ] = "HWF_ALMA_API_KEY",
    prefix: Annotated[str | None, typer.Option(help="Your handle prefix, like 11084.")] = None,
    primo_domain: Annotated[str | None, typer.Option(help="Your Primo VE host name.")] = None,
    primo_view: Annotated[str | None, typer.Option(help="Your Primo view, like 01GCL_INST:GCL.")] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Where to write (default: --config, else ./hwf.toml).")
    ] = None,
) -> None:
    """Write a commented hwf.toml; with an API key in the environment, look the three job ids up in Alma."""
    from orchestrator.service import onboarding  # lazy: keeps other commands' start-up light

    with errors():
        base_url = onboarding.region_base_url(region)
        code = onboarding.check_institution(institution) if institution is not None else None
        given = {"copy_identifiers": copy_job, "handle_migration": migration_job, "handle_integration": integration_job}
        chosen: dict[str, str | None] = {
            role: onboarding.check_job_id(value, onboarding.ROLE_OPTIONS[role]) if value else None
            for role, value in given.items()
        }
        path = _config_path(output)
        onboarding.refuse_overwrite(path, force)
        names: dict[str, str] = {}
        key = os.environ.get(key_env, "").strip()
        found = _look_jobs_up(os.environ.get("HWF_ALMA_BASE_URL") or base_url, key, key_env, chosen, names)
        settings = onboarding.InitSettings(
            region=region,
            institution=code,
            jobs=chosen,
            job_names=names,
            key_env=key_env,
            prefix=prefix,
            primo_domain=primo_domain,
            primo_view=primo_view,
        )
        result = onboarding.write_init_config(path, settings, force=force)
    _print_init(result, names, found, key, key_env)


@app.command("jobs")
def jobs_command(
    *,
    search: Annotated[str | None, typer.Option(help="Only jobs whose id, name or category contains TEXT.")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="JSON array for scripts.")] = False,
) -> None:
    """List the institution's manual jobs (id, name, category), to fill in [alma.jobs]."""
    from orchestrator.service.onboarding import list_jobs  # lazy: keeps other commands' start-up light
    from orchestrator.wiring import build_setup_alma_for

    with errors():
        cfg = config()
        with build_setup_alma_for(cfg, wiring()) as alma:
            listings = list_jobs(cfg, alma, search)
    if json_output:
        typer.echo(json.dumps([listing.as_json() for listing in listings], indent=2, ensure_ascii=False))
        return
    table = Table(title=safe(f"Manual jobs{f' matching {search!r}' if search else ''}: {len(listings)}"))
    for column in ("id", "name", "category", "hwf"):
        table.add_column(column, overflow="fold")
    for listing in listings:
        role = ""
        if listing.configured_as:
            role = "configured as " + ", ".join(listing.configured_as)
        elif listing.looks_like:
            role = "could be " + ", ".join(listing.looks_like)
        table.add_row(safe(listing.job.id), safe(listing.job.name), safe(listing.job.category or ""), role)
    out.print(table)


def _look_jobs_up(
    lookup: str, key: str, key_env: str, chosen: dict[str, str | None], names: dict[str, str]
) -> JobDiscovery | None:
    """With a key, find the three jobs in Alma by name (asking when several match and a person is there);
    fills ``chosen`` and ``names``. None without a key."""
    from orchestrator.service.onboarding import discover_jobs
    from orchestrator.service.ping import explain_alma_error
    from orchestrator.wiring import build_setup_alma

    if not key:
        return None
    _refuse_plain_http(lookup, key_env)
    try:
        with build_setup_alma(lookup, key, wiring()) as alma:
            found = discover_jobs(alma)
    except AlmaError as exc:
        fail(
            f"could not look the jobs up in Alma ({lookup}): {explain_alma_error(exc)}. "
            f"Fix the key, or unset {key_env} to write the file with placeholders; nothing was written",
            1,
        )
    _pick_jobs(found, chosen, names)
    return found


def _refuse_plain_http(lookup: str, key_env: str) -> None:
    """Exit 2 before the key is sent anywhere but an https URL (or plain http to this machine)."""
    web = lookup.lower().startswith(("http://", "https://"))
    if not web or plain_http_elsewhere(lookup):
        # The config's own check (allow_insecure_http) cannot apply: there is no file yet.
        problem = (
            "is plain http to another host: the Alma key would travel in clear" if web else "is not an http(s) URL"
        )
        fail(
            f"$HWF_ALMA_BASE_URL {safe(lookup)} {problem}, so hwf did not send the key. Use https://, or "
            f"unset {key_env} to write the file with placeholders; nothing was written",
            2,
        )


def _pick_jobs(found: JobDiscovery, chosen: dict[str, str | None], names: dict[str, str]) -> None:
    """Fill ``chosen`` and ``names`` from what Alma lists: the job given by option (named if Alma has it),
    else the one job that matches by name, else the one a person picks; exit 2 when several match and no
    one is at the terminal."""
    from orchestrator.service.onboarding import ROLE_OPTIONS

    ambiguous = []
    for role in STEP_JOB_KEYS:
        if chosen[role] is not None:
            known = found.by_id(chosen[role] or "")
            if known is None:
                err.print(f"Note: {safe(chosen[role])} is not among this Alma's manual jobs (see `hwf jobs`).")
            else:
                names[role] = known.name
            continue
        candidates = found.candidates[role]
        if len(candidates) == 1:
            chosen[role], names[role] = candidates[0].id, candidates[0].name
        elif len(candidates) > 1:
            if _interactive():
                picked = _choose(role, candidates)
                chosen[role] = picked
                names[role] = next(j.name for j in candidates if j.id == picked)
            else:
                listed = "; ".join(f"{j.id} {j.name!r}" for j in candidates)
                ambiguous.append(f"several jobs could be {role}: {listed}: pass {ROLE_OPTIONS[role]} ID")
    if ambiguous:
        fail(". ".join(ambiguous) + "; nothing was written", 2)


def _print_init(result: InitResult, names: dict[str, str], found: JobDiscovery | None, key: str, key_env: str) -> None:
    out.print(f"Wrote {safe(result.path)} (Alma gateway {safe(result.base_url)})")
    for role in STEP_JOB_KEYS:
        job_id = result.jobs.get(role)
        if job_id:
            out.print(safe(f"  {role:<19} {job_id}  {names.get(role, '')}".rstrip()))
        elif found is not None:
            out.print(f"  {role:<19} not found by name: pick it with `hwf jobs`")
    if not key:
        out.print(
            f"No API key in ${safe(key_env)}: the job ids are placeholders. Set the key "
            f"(Bibs and Configuration, Read/write), run `hwf jobs` to find the ids, and edit {safe(result.path)}"
        )
    if result.placeholders:
        out.print("Still to fill in (marked TODO): " + ", ".join(result.placeholders))
    out.print(f"Then check everything with: hwf --config {safe(result.path)} ping")


@app.command()
def ping(
    *,
    json_output: Annotated[bool, typer.Option("--json", help="JSON for scripts.")] = False,
    accept_unknown: Annotated[
        bool,
        typer.Option("--accept-unknown", help="A job for which Alma lists no parameters is a warning, not a failure."),
    ] = False,
) -> None:
    """Check, with read-only calls, that the key, the jobs and the handle resolver are ready for a run."""
    from orchestrator.service.ping import ping as run_checks  # lazy: keeps other commands' start-up light
    from orchestrator.wiring import build_resolver_http, build_setup_alma_for

    with errors():
        cfg, given = config(), wiring()
        report = run_checks(
            cfg,
            alma=lambda: build_setup_alma_for(cfg, given),
            http=lambda: build_resolver_http(cfg, given),
            accept_unknown=accept_unknown,
        )
    if json_output:
        typer.echo(json.dumps(report.as_json(), indent=2, ensure_ascii=False))
    else:
        table = Table(title=f"hwf ping: {safe(report.base_url)}")
        for column in ("check", "result", "detail"):
            table.add_column(column, overflow="fold")
        for check in report.checks:
            style = _STATUS_STYLE.get(check.status, "")
            table.add_row(safe(check.name), f"[{style}]{safe(check.status)}[/{style}]", safe(check.detail))
        out.print(table)
        if report.remaining is not None:
            out.print(f"X-Exl-Api-Remaining: {safe(report.remaining)}")
        out.print(
            "Ready for a run." if report.ok else "Not ready: fix the lines marked fail, then run `hwf ping` again."
        )
    if not report.ok:
        raise typer.Exit(1)
