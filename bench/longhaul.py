"""Benchmark of the long haul (issue 15): the whole Grinnell migration, unattended, on a virtual clock.

Run: ``.venv/bin/python -m bench.longhaul`` (``--help`` for sizes; ``--titles 600`` for a quick one).
The institution's 11,440 digital titles (``bench/data/grinnell-mms-ids.csv.gz``: the MMS IDs and legacy
handle numbers ``grinnell:N`` -> ``11084/N`` derived from Grinnell's published list; the 160 titles with no
``grinnell:N`` and the 2 that repeat another title's get a number of their own, 900000 + row, so that only
the two problem sets below have problems) are read by ``add --from-csv`` into 115 sets of 100 (the default
batch size); the simulator enforces Alma's limits (3 API jobs running, 5 runs of a job an
hour, 25 requests a second); jobs last 30 s; the worker (``worker.follow``, what ``hwf resume --all
--follow`` runs) drives everything on a clock shared with the simulator, so a day of Alma time runs in
minutes. On the way: one 1-hour Alma outage (every request answers 500 or loses its connection), the daily
quota spent once (the worker waits for the reset and goes on by itself), and two sets with problem
records (a record with no handle), which must end in attention. Figures: total Alma time vs the bound
Alma's job limits allow (plus the outage and the quota wait), duplicate jobs, sets verified, attention
events per set, history events per set.

``--integration manual`` (hwf's default mode) runs the same migration with the handle integration profile run by
a person: hwf makes integration batches and announces each; a simulated operator presses Run once when told,
during working hours (Monday to Friday, 08:00-17:00 UTC) and at most once every 8 working hours. Figures: the
total time, the number of clicks and when, and, per record, that every step ran once and in order (the members
each Alma run started on). ``--integration both`` (the default) runs API mode, then manual mode.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import gzip
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select

from orchestrator.service import batches, overview, views, worker
from orchestrator.service.context import Context
from orchestrator.simulator import ManualClock, Scenario, Simulator
from orchestrator.simulator.records import SimRecord, dc_record_xml
from orchestrator.store.models import AlmaSet, Event

from .common import Results, header, machine
from .schedule import ALMA_MAX_RUNNING, ALMA_RPS, ALMA_RUNS_PER_HOUR, make_config, make_context, schedule_bound

DATA = Path(__file__).parent / "data" / "grinnell-mms-ids.csv.gz"
START = datetime(2026, 2, 2, 14, 0, tzinfo=UTC)
OUTAGE_AT = timedelta(hours=2)  # 16:00-17:00 UTC
OUTAGE = timedelta(hours=1)
QUOTA_AT = timedelta(hours=8)  # 22:00 UTC: spent until the reset at midnight UTC
PROBLEM_SETS = (7, 42)  # batch numbers whose first record has no handle
WORK_START, WORK_END = 8, 17  # the operator's working hours (UTC), Monday to Friday
CLICK_GAP = timedelta(hours=8)  # at most one click every 8 working hours
STEP_ORDER = ("copy", "migration", "integration")


class Operator:
    """The person of manual integration mode: presses Run on the Handle integration profile for an announced
    integration batch, once, when told, within working hours, at most once every ``CLICK_GAP`` of working time."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.clicks: list[tuple[datetime, str]] = []
        self.told: dict[str, datetime] = {}

    def working_time(self, start: datetime, end: datetime) -> timedelta:
        """Working time between two moments (whole minutes are enough at this scale)."""
        total, t = timedelta(), start
        while t < end:
            day_start = t.replace(hour=WORK_START, minute=0, second=0, microsecond=0)
            day_end = t.replace(hour=WORK_END, minute=0, second=0, microsecond=0)
            if t.weekday() < 5:
                total += max(min(end, day_end) - max(t, day_start), timedelta())
            t = (t + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
        return total

    def may_click(self, now: datetime) -> bool:
        in_hours = now.weekday() < 5 and WORK_START <= now.hour < WORK_END
        return in_hours and (not self.clicks or self.working_time(self.clicks[-1][0], now) >= CLICK_GAP)

    def next_chance(self, now: datetime) -> datetime:
        """The first moment from ``now`` (in 5-minute steps) at which the operator may click."""
        t = now
        while not self.may_click(t):
            t += timedelta(minutes=5)
        return t

    def awaited(self, ctx: Context) -> bool:
        """Whether an announced batch waits for this operator's click (one they have not pressed yet)."""
        clicked = {name for _, name in self.clicks}
        return any(b.needs_person and b.name not in clicked for b in overview.batches(ctx))

    def look(self, ctx: Context, now: datetime) -> bool:
        """Told of the announced batches (as the notification and the dashboard tell); press Run if allowed."""
        clicked = {name for _, name in self.clicks}  # a person presses Run once for a batch they were told of
        waiting = [b for b in overview.batches(ctx) if b.needs_person and b.name not in clicked]
        for batch in waiting:
            self.told.setdefault(batch.name, batch.announced_at or now)
        if waiting and self.may_click(now):
            self.sim.press_integration_run(waiting[0].name, user="operator")
            self.clicks.append((now, waiting[0].name))
            return True
        return False


def titles(limit: int | None) -> list[tuple[str, str]]:
    """(MMS ID, legacy handle number) of the institution's digital titles, in their published order."""
    with gzip.open(DATA, "rt", encoding="utf-8", newline="") as handle:
        rows = [(r["MMS Id"], r["Handle Number"]) for r in csv.DictReader(handle)]
    return rows[:limit] if limit else rows


def records(rows: list[tuple[str, str]], problems: set[str]) -> list[SimRecord]:
    """Grinnell-style DC records, the handle in dc:identifier (ready); ``problems`` have none."""
    out = []
    for mms_id, number in rows:
        url = None if mms_id in problems else f"http://hdl.handle.net/11084/{number}"

        def render(m: str = mms_id, u: str | None = url) -> bytes:
            return dc_record_xml(institution="01GCL_INST", mms_id=m, title=f"Title {m}", handle_url=u)

        out.append(SimRecord(mms_id, f"Title {mms_id}", "dcap01", render=render))
    return out


def run(res: Results, *, limit: int | None, job_seconds: float, poll: float, integration: str = "api") -> float:
    """One long haul in ``integration`` mode; returns its Alma time (s)."""
    clock = ManualClock(START)
    scenario = Scenario(
        job_seconds=dict.fromkeys(("copy", "migration", "integration", "other"), job_seconds),
        per_second_limit=ALMA_RPS,
        max_running_api_jobs=ALMA_MAX_RUNNING,
        max_runs_per_hour=ALMA_RUNS_PER_HOUR,
        enforce_job_thresholds=True,
        daily_quota=50_000_000,
    )
    sim = Simulator(scenario, clock=clock, monotonic=clock.monotonic, sleep=clock.sleep)
    rows = titles(limit)
    problems = {rows[(b - 1) * 100][0] for b in PROBLEM_SETS if (b - 1) * 100 < len(rows)}
    sim.add_records(records(rows, problems))
    happened: dict[str, datetime] = {}
    with tempfile.TemporaryDirectory(prefix="hwf-bench-longhaul-") as tmp:
        config = make_config(Path(tmp), poll=poll, alma_rps=ALMA_RPS - 5, integration=integration)
        operator = Operator(sim) if integration == "manual" else None
        looked = [START]
        csv_path = Path(tmp) / "titles.csv"
        csv_path.write_text("MMS Id\n" + "\n".join(m for m, _ in rows) + "\n", encoding="utf-8")

        def world(seconds: float) -> None:
            """hwf sleeps: virtual time passes; the outage and the spent quota happen on schedule."""
            clock.advance(seconds)
            now = clock()
            if "outage" not in happened and now >= START + OUTAGE_AT:
                happened["outage"] = now
                sim.faults.alma_get_500_rate = sim.faults.alma_put_500_rate = 1.0
                sim.faults.reject_run_before_create = 1_000_000
            if "outage" in happened and "outage_end" not in happened and now >= happened["outage"] + OUTAGE:
                happened["outage_end"] = now
                sim.faults.alma_get_500_rate = sim.faults.alma_put_500_rate = 0.0
                sim.faults.reject_run_before_create = 0
            if "quota" not in happened and now >= START + QUOTA_AT:
                happened["quota"] = now
                sim.faults.daily_remaining = 0
            if operator is not None and now - looked[0] >= timedelta(minutes=1):
                looked[0] = now  # the operator reads the announcement once a minute at most
                operator.look(ctx, now)

        ctx = make_context(config, sim, clock, world)
        try:
            setup = time.perf_counter()
            created = batches.add_from_csv(ctx, csv_path, "Grinnell handles")
            res.note(
                f"set-up: {len(rows):,} titles -> {len(created)} sets (add --from-csv, default batch size) "
                f"in {time.perf_counter() - setup:.1f} s"
            )
            started_virtual, started_real = clock(), time.perf_counter()
            summary = worker.follow(ctx, worker.StopFlag(), until_idle=True)
            while operator is not None and operator.awaited(ctx):
                # The worker is idle: only a click is missing. Time passes until the operator may click.
                world((operator.next_chance(clock()) - clock()).total_seconds())
                operator.look(ctx, clock())
                later = worker.follow(ctx, worker.StopFlag(), until_idle=True)
                summary = dataclasses.replace(
                    later,
                    passes=summary.passes + later.passes,
                    outages=summary.outages + later.outages,
                    quota_resets=summary.quota_resets + later.quota_resets,
                )
            virtual = (clock() - started_virtual).total_seconds()
            real = time.perf_counter() - started_real
            statuses = views.status(ctx)
            with ctx.sessions() as session:
                attention_events = Counter(
                    session.scalars(
                        select(AlmaSet.alma_set_id)
                        .join(Event, Event.set_id == AlmaSet.id)
                        .where(Event.kind == "attention", Event.data["attention_kind"].as_string() == "records")
                    )
                )
                quota_events = session.scalar(
                    select(func.count()).select_from(Event).where(Event.kind == "quota-reset")
                )
                events = session.scalar(select(func.count()).select_from(Event)) or 0
        finally:
            ctx.close()
    counts = (attention_events, quota_events or 0, events)
    _figures(res, sim, statuses, summary, counts, virtual, real, happened, integration)
    _order_per_record(res, sim)
    if operator is not None:
        _clicks(res, operator)
    return virtual


def _order_per_record(res: Results, sim: Simulator) -> None:
    """Per record: the Alma runs that started on it (their members), in submission order: each step once, in the
    workflow's order."""
    kinds: dict[str, list[str]] = {}
    for run in sorted(sim.job_runs, key=lambda r: (r.submitted_at, r.instance_id)):
        if run.kind in STEP_ORDER:
            for mms_id in run.members:
                kinds.setdefault(mms_id, []).append(run.kind)
    twice = sum(1 for ks in kinds.values() if len(ks) != len(set(ks)))
    disorder = sum(1 for ks in kinds.values() if ks != sorted(ks, key=STEP_ORDER.index))
    res.target(
        "no record ran a step twice or out of order",
        twice == 0 and disorder == 0,
        f"{len(kinds):,} records; {twice} ran a step twice, {disorder} out of order",
    )


def _clicks(res: Results, operator: Operator) -> None:
    times = [t for t, _ in operator.clicks]
    gaps = [operator.working_time(a, b) for a, b in zip(times, times[1:], strict=False)]
    res.measure(
        "clicks",
        len(times),
        f"{len(times)} clicks of Run by the operator: "
        + "; ".join(
            f"{t:%a %H:%M} UTC on {name!r} (told {operator.told.get(name, t):%a %H:%M})" for t, name in operator.clicks
        ),
    )
    res.target(
        "at most one click every 8 working hours",
        all(g >= CLICK_GAP for g in gaps),
        "working time between clicks: " + (", ".join(f"{g.total_seconds() / 3600:.1f} h" for g in gaps) or "-"),
    )


def _figures(
    res: Results,
    sim: Simulator,
    statuses: list[views.SetSummary],
    summary: worker.WorkerSummary,
    counts: tuple[Counter[str], int, int],
    virtual: float,
    real: float,
    happened: dict[str, datetime],
    integration: str,
) -> None:
    attention_events, quota_resets, events = counts
    runs = sim.job_runs
    sets = len(statuses)
    expected_problems = sum(1 for b in PROBLEM_SETS if b <= sets)
    problem = [s for s in statuses if s.attention and "records" in (s.attention or "") or s.state != "verified"]
    clean = [s for s in statuses if s not in problem]
    steps = 2 if integration == "api" else 1  # manual: the migration by API, the integration by a person
    bound_jobs = schedule_bound(sets - len(problem), steps, 30.0, ALMA_MAX_RUNNING, ALMA_RUNS_PER_HOUR)
    quota_wait = 0.0
    if "quota" in happened:
        reset = worker.next_quota_reset(happened["quota"], "00:00", "UTC") + worker.QUOTA_MARGIN
        quota_wait = (reset - happened["quota"]).total_seconds()
    bound = bound_jobs + OUTAGE.total_seconds() + quota_wait
    per_set_kind = Counter((r.set_id, r.kind) for r in runs if r.origin == "api")
    duplicates = sum(n - 1 for n in per_set_kind.values() if n > 1)
    res.measure(
        "time",
        {"virtual": virtual, "bound": bound, "bound_jobs": bound_jobs, "real": real},
        f"Alma time {virtual:,.0f} s ({virtual / 3600:.2f} h) vs bound {bound:,.0f} s ({bound / 3600:.2f} h: "
        f"{bound_jobs / 3600:.2f} h of job limits + 1 h outage + {quota_wait / 3600:.2f} h quota wait); "
        f"ratio {virtual / bound:.3f}; {summary.passes} worker passes, {summary.outages} outage pauses, "
        f"{summary.quota_resets} sets resumed after the quota reset ({quota_resets} quota-reset events); "
        f"real time {real:.0f} s",
    )
    res.measure("runs", len(runs), f"{len(runs)} Alma job runs, {duplicates} duplicates")
    res.measure(
        "events",
        events / max(sets, 1),
        f"history: {events:,} events, {events / max(sets, 1):.1f} per set",
    )
    if integration == "api":
        res.target("within 1.1x of the bound", virtual <= 1.1 * bound, f"{virtual / bound:.3f}x")
    else:
        res.note(
            f"manual mode: {virtual / bound:.2f}x the bound of the API steps alone (the rest waits for the clicks)"
        )
    res.target("0 duplicate jobs", duplicates == 0, f"{duplicates} duplicates")
    res.target(
        "every clean set verified",
        all(s.state == "verified" for s in clean) and len(clean) == sets - expected_problems,
        f"{sum(1 for s in clean if s.state == 'verified')} of {sets - expected_problems} verified",
    )
    res.target(
        f"the {expected_problems} problem sets in attention",
        len(problem) == expected_problems and all(s.attention for s in problem),
        "; ".join(f"{s.name}: {(s.attention or s.state)[:60]}" for s in problem),
    )
    res.target(
        "exactly one notification (attention event) per attention",
        sorted(attention_events.values()) == [1] * len(problem),
        f"records-attention events per set {dict(attention_events)}",
    )
    res.target("the outage happened", "outage_end" in happened, str({k: v.isoformat() for k, v in happened.items()}))
    if "quota" in happened:
        res.target("the quota was spent and reset", summary.quota_resets >= 1, f"{summary.quota_resets} sets resumed")
    else:
        res.note(f"the run ended before the quota was to be spent ({QUOTA_AT} in): use more titles")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--titles", type=int, default=None, help="only the first N titles (default: all)")
    parser.add_argument("--job-seconds", type=float, default=30.0)
    parser.add_argument("--poll", type=float, default=15.0, help="hwf's first poll interval (s), as in production")
    parser.add_argument(
        "--integration",
        choices=("api", "manual", "both"),
        default="both",
        help="how the handle integration profile runs: by API, by a person pressing Run on integration batches "
        "(hwf's default), or both one after the other (the default)",
    )
    args = parser.parse_args()
    header(
        f"hwf resume --all --follow: Grinnell's digital titles{f' (first {args.titles})' if args.titles else ''}, "
        f"jobs of {args.job_seconds:g} s, 1 h outage, quota spent once, 2 problem sets"
    )
    modes = ("api", "manual") if args.integration == "both" else (args.integration,)
    times, met = {}, True
    for mode in modes:
        res = Results(f"long-haul benchmark, integration {mode}")
        res.note(machine())
        times[mode] = run(res, limit=args.titles, job_seconds=args.job_seconds, poll=args.poll, integration=mode)
        res.summary()
        met = met and res.all_met
    if len(times) == 2:
        print(
            f"\nAlma time: API mode {times['api'] / 3600:.2f} h, manual mode {times['manual'] / 3600:.2f} h "
            f"({times['manual'] / times['api']:.2f}x)"
        )
    if not met:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
