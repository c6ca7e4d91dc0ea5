"""Benchmark of the scheduler (issue 6): ``hwf resume --all`` over 100 sets within Alma's job limits.

Run: ``.venv/bin/python -m bench.schedule`` (``--help`` for sizes). 100 sets of 120 records on the
in-process simulator, with Alma's real limits enforced by the simulator (at most 3 API jobs running,
5 runs of one job an hour, 25 requests a second) and jobs of 30 s, on a virtual clock shared by the
simulator and hwf (so 20 hours of Alma time run in a minute or two). Targets:
- every set verified;
- never more than 3 jobs running, never more than 5 runs of a job in any hour (from the simulator's
  own log of runs, not from hwf's bookkeeping), and no run refused by Alma's thresholds;
- total (virtual) wall time within 1.2x of the shortest schedule those limits allow, computed here.

Profile ``demo`` (default): 85 % of the records have their handle only in dcterms:identifier, the copy
job keeps ``xsi:type`` (as Grinnell saw), so each set runs copy, stops for ``hwf fix``, then runs the
migration and the integration. The operator is modelled by the scheduler's sleep: whenever hwf sleeps,
the "operator" runs ``hwf fix --apply`` on every set whose attention is about its records. Profile
``clean``: every record is ready, the copy job is not needed, two jobs per set.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select

from orchestrator.alma.client import AlmaClient
from orchestrator.config import Config, parse_config
from orchestrator.resolver import Verifier
from orchestrator.service import repair, scheduler, views, workflow
from orchestrator.service.context import Context
from orchestrator.service.reporting import NullReporter
from orchestrator.simulator import JobRunLog, ManualClock, Scenario, Simulator
from orchestrator.store.db import open_database
from orchestrator.store.models import AlmaSet, Attempt, AttemptState

from .common import API_KEY, Results, header, machine

JOBS = {
    "copy_identifiers": "M1234567890000561",
    "handle_migration": "M2234567890000561",
    "handle_integration": "M50700",
}
ALMA_MAX_RUNNING = 3
ALMA_RUNS_PER_HOUR = 5
ALMA_RPS = 25.0


def make_config(workdir: Path, *, poll: float, alma_rps: float, integration: str = "api") -> Config:
    """hwf's configuration for the run: real-world poll interval, Alma's limits, no settle time; the integration
    job by API unless ``integration="manual"`` (a person presses Run on an integration batch)."""
    data: dict[str, Any] = {
        "allow_insecure_http": True,  # alma.bench is the in-process simulator
        "database": {"url": f"sqlite:///{workdir / 'hwf.db'}"},
        "alma": {
            "base_url": "http://alma.bench",
            "institution_code": "01GCL_INST",
            "poll_interval_seconds": poll,
            "poll_max_interval_seconds": 300,
            "reconcile_grace_seconds": 120,
            "requests_per_second": alma_rps,
            "daily_call_floor": 0,
            "max_running_jobs": ALMA_MAX_RUNNING,
            "max_runs_per_job_hour": ALMA_RUNS_PER_HOUR,
            "jobs": {**JOBS, "handle_integration_mode": integration},
        },
        "handles": {"prefix": "11084", "resolver_url": "http://alma.bench", "settle_minutes": 0, "retries": 2},
        "primo": {"domain": "grinnell.primo.exlibrisgroup.com", "view": "01GCL_INST:GCL"},
        "workflow": {"lease_seconds": 120},
    }
    return parse_config(data, workdir / "hwf.toml", environ={"HWF_ALMA_API_KEY": API_KEY})


def make_context(config: Config, sim: Simulator, clock: ManualClock, sleep: Any) -> Context:
    """A Context like the CLI's, but on the simulator's transport and the shared virtual clock."""
    transport = httpx.MockTransport(sim.handle)

    def alma() -> AlmaClient:
        return AlmaClient(
            config.alma.base_url,
            API_KEY,
            transport=transport,
            requests_per_second=config.alma.requests_per_second,
            sleep=sleep,  # a retry's wait is time passing in the world too (an outage can end meanwhile)
            monotonic=clock.monotonic,
        )

    def verifier(follow: bool) -> Verifier:
        return Verifier(
            config.handles.resolver_url,
            config.primo,
            concurrency=4,
            requests_per_second=1000,
            retries=config.handles.retries,
            transport=transport,
            sleep=lambda s: None,
            follow=follow,
        )

    return Context(
        config=config,
        sessions=open_database(config.database_url),
        alma_factory=alma,
        verifier_factory=verifier,
        reporter=NullReporter(),
        clock=clock,
        sleep=sleep,
        owner="bench:1",
    )


def schedule_bound(sets: int, steps: int, seconds: float, running: int, per_hour: int) -> float:
    """The shortest makespan Alma's limits allow for ``sets`` chains of ``steps`` jobs of ``seconds`` each.

    Per job: its runs start at most ``per_hour`` in any hour, so the last of ``sets`` runs starts at least
    floor((sets-1)/per_hour) hours after the first; the first run of step p cannot start before p earlier
    steps ran, and the last run of step p is followed by the later steps of its set. Across jobs: at most
    ``running`` at once, so the total job time divided by ``running``. The bound is the larger of the two.
    """
    hourly = max(p * seconds + ((sets - 1) // per_hour) * 3600.0 + (steps - p) * seconds for p in range(steps))
    concurrency = sets * steps * seconds / running
    return max(hourly, concurrency)


def max_running(runs: list[JobRunLog], seconds: float) -> int:
    """The most runs in progress at any moment (a run occupies [submitted, submitted + seconds))."""
    edges = sorted(
        [(r.submitted_at, 1) for r in runs] + [(r.submitted_at + timedelta(seconds=seconds), -1) for r in runs]
    )
    peak = current = 0
    for _, delta in sorted(edges, key=lambda e: (e[0], e[1])):
        current += delta
        peak = max(peak, current)
    return peak


def max_per_hour(runs: list[JobRunLog]) -> dict[str, int]:
    """Per job: the most runs submitted within any one hour, as Alma counts it (the previous hour)."""
    by_job: dict[str, list[datetime]] = defaultdict(list)
    for r in runs:
        by_job[r.job_id].append(r.submitted_at)
    worst: dict[str, int] = {}
    for job, times in by_job.items():
        times.sort()
        start = 0
        best = 0
        for end, t in enumerate(times):
            while times[start] <= t - timedelta(hours=1):
                start += 1
            best = max(best, end - start + 1)
        worst[job] = best
    return worst


def run(res: Results, *, sets: int, records: int, job_seconds: float, profile: str, poll: float) -> None:
    clock = ManualClock(datetime(2026, 2, 2, 14, 0, tzinfo=UTC))
    scenario = Scenario(
        job_seconds={"copy": job_seconds, "migration": job_seconds, "integration": job_seconds, "other": job_seconds},
        per_second_limit=ALMA_RPS,
        max_running_api_jobs=ALMA_MAX_RUNNING,
        max_runs_per_hour=ALMA_RUNS_PER_HOUR,
        enforce_job_thresholds=True,
        copy_keeps_xsi_type=True,
        daily_quota=50_000_000,
    )
    sim = Simulator(scenario, clock=clock, monotonic=clock.monotonic, sleep=clock.sleep)
    fixes = {"sets": 0, "records": 0, "seconds": 0.0}
    sleeps: list[float] = []
    with tempfile.TemporaryDirectory(prefix="hwf-bench-schedule-") as tmp:
        config = make_config(Path(tmp), poll=poll, alma_rps=ALMA_RPS - 5)

        def operator(seconds: float) -> None:
            """hwf sleeps: time passes, and the operator fixes every set that waits for `hwf fix`."""
            sleeps.append(seconds)
            clock.advance(seconds)
            with ctx.sessions() as session:
                waiting = list(session.scalars(select(AlmaSet.alma_set_id).where(AlmaSet.attention_kind == "records")))
            for ref in waiting:
                started = clock.monotonic()
                report = repair.fix(ctx, ref, apply=True)
                fixes["sets"] += 1
                fixes["records"] += len(report.changed)
                fixes["seconds"] += clock.monotonic() - started

        ctx = make_context(config, sim, clock, operator)
        try:
            setup = time.perf_counter()
            for k in range(sets):
                ids = sim.generate_records(records, profile=profile, seed=k)
                workflow.add_set(ctx, sim.create_set(f"Bench batch {k + 1:03d}", ids))
            res.note(f"set-up: {sets} sets of {records} records registered in {time.perf_counter() - setup:.1f} s")
            started_virtual = clock()
            started_real = time.perf_counter()
            passes = 0
            while True:
                passes += 1
                summary = scheduler.resume_all(ctx)
                attention = list(summary.attention)
                records_only = all("records" in why or "NEEDS_FIX" in why for _, why in attention)
                if not attention or not records_only or passes > 5:
                    break
                operator(0.0)
            virtual = (clock() - started_virtual).total_seconds()
            real = time.perf_counter() - started_real
            statuses = views.status(ctx)
            with ctx.sessions() as session:
                refused = session.scalar(
                    select(func.count())
                    .select_from(Attempt)
                    .where(Attempt.state == AttemptState.ABANDONED, Attempt.note.like("Alma refused%"))
                )
        finally:
            ctx.close()
    runs = sim.job_runs
    steps = len({r.kind for r in runs}) or 1
    bound = schedule_bound(sets, steps, job_seconds, ALMA_MAX_RUNNING, ALMA_RUNS_PER_HOUR)
    verified = sum(1 for s in statuses if s.state == "verified")
    peak = max_running(runs, job_seconds)
    hourly = max_per_hour(runs)
    kinds = defaultdict(int)
    for r in runs:
        kinds[r.kind] += 1
    res.measure(
        "runs",
        dict(kinds),
        f"Alma job runs: {dict(kinds)} ({len(runs)} in all; {refused} refused by Alma's thresholds); "
        f"{sum(1 for r in runs if r.status != 'COMPLETED_SUCCESS')} not COMPLETED_SUCCESS",
    )
    res.measure(
        "operator",
        fixes,
        f"operator: `hwf fix --apply` on {fixes['sets']} sets, {fixes['records']} records repaired "
        f"({fixes['seconds']:.0f} virtual s of API calls)",
    )
    res.measure(
        "time",
        {"virtual": virtual, "bound": bound, "real": real},
        f"virtual wall time {virtual:,.0f} s ({virtual / 3600:.2f} h); bound from Alma's limits {bound:,.0f} s "
        f"({bound / 3600:.2f} h); ratio {virtual / bound:.3f}; {passes} resume --all call(s), "
        f"{len(sleeps)} sleeps; real time {real:.1f} s",
    )
    res.target("all verified", verified == sets, f"{verified} of {sets} sets verified")
    res.target(
        f"never more than {ALMA_MAX_RUNNING} jobs running",
        peak <= ALMA_MAX_RUNNING,
        f"peak {peak} running at once (from the simulator's run log)",
    )
    res.target(
        f"never more than {ALMA_RUNS_PER_HOUR} runs of a job an hour",
        all(v <= ALMA_RUNS_PER_HOUR for v in hourly.values()) and not refused,
        f"worst hour per job {hourly}; {refused} submissions refused by Alma",
    )
    res.target("wall time within 1.2x of the bound", virtual <= 1.2 * bound, f"{virtual / bound:.3f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", type=int, default=100)
    parser.add_argument("--records", type=int, default=120)
    parser.add_argument("--job-seconds", type=float, default=30.0)
    parser.add_argument("--profile", choices=("demo", "clean"), default="demo")
    parser.add_argument("--poll", type=float, default=15.0, help="hwf's first poll interval (s), as in production")
    args = parser.parse_args()
    res = Results("scheduler benchmark")
    header(
        f"hwf resume --all: {args.sets} sets x {args.records} records, profile {args.profile}, "
        f"jobs of {args.job_seconds:g} s, Alma limits {ALMA_MAX_RUNNING} running / {ALMA_RUNS_PER_HOUR} per job-hour"
    )
    res.note(machine())
    run(
        res,
        sets=args.sets,
        records=args.records,
        job_seconds=args.job_seconds,
        profile=args.profile,
        poll=args.poll,
    )
    res.summary()
    if not res.all_met:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
