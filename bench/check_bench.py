"""Benchmark of the DC preflight (issue 3): API calls, wall time and classification rate of ``hwf check``.

Run: ``.venv/bin/python -m bench.check_bench`` (``--help`` for sizes). Targets:
- ``hwf check`` on N records makes at most ceil(N/100) member-page calls + ceil(N/100) bib calls + 2;
- 12,000 records at 50 ms per Alma call, over real HTTP, in under 15 s; the naive one-GET-per-record
  way (measured on a sample, extrapolated) takes over 10 minutes;
- ``dc.classify_bib`` alone runs at 5,000 records/s or better on one core.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx

from orchestrator.alma.client import AlmaClient
from orchestrator.alma.types import Bib
from orchestrator.domain import dc
from orchestrator.service import preflight, workflow

from .common import API_KEY, Results, header, machine, make_config, make_context, make_simulator, new_set, served


def _calls(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {
        k: after.get(k, 0) - before.get(k, 0) for k in set(before) | set(after) if after.get(k, 0) != before.get(k, 0)
    }


def bench_calls(res: Results, n: int, profile: str, fmt: str, workdir: Path) -> None:
    """``hwf add`` + ``hwf check`` on ``n`` records: Alma requests by path, counted by the simulator."""
    sim = make_simulator()
    ref = new_set(sim, n, profile=profile, name=f"calls-{profile}-{n}")
    with served(sim) as server:
        ctx = make_context(make_config(workdir, server.url, alma_rps=1000, alma_format=fmt))
        try:
            before = dict(sim.stats["requests"])
            workflow.add_set(ctx, ref)
            mid = dict(sim.stats["requests"])
            summary = preflight.check_set(ctx, ref)
            after = dict(sim.stats["requests"])
        finally:
            ctx.close()
    add_calls, check_calls = _calls(before, mid), _calls(mid, after)
    total = sum(add_calls.values()) + sum(check_calls.values())
    limit = 2 * math.ceil(n / 100) + 2
    res.measure(
        f"calls_{profile}_{fmt}",
        {"add": add_calls, "check": check_calls, "total": total, "limit": limit},
        f"{profile} profile, {fmt} replies, N={n}: add_set {add_calls}, check {check_calls}; classes {summary.counts}",
    )
    detail = (
        f"{total} calls (member pages {add_calls.get('set_members', 0)}, bib batches {check_calls.get('bibs', 0)}, "
        f"single bibs {check_calls.get('bib', 0)}, set {add_calls.get('set', 0)}); "
        f"ceil(N/100)*2 + 2 = {limit}"
    )
    unreadable = summary.counts.get("BAD_XML", 0)
    if fmt == "xml" and unreadable:
        extra = total - (limit - 1)
        res.limit(
            f"API calls ({profile} profile, {fmt} replies, {unreadable} unreadable records, N={n:,})",
            f"{detail}; an unreadable record makes its whole XML batch reply unreadable, so hwf halves the batch "
            f"until it stands alone: {extra} extra calls = {extra / unreadable:.1f} per unreadable record",
        )
    else:
        res.target(f"API calls ({profile} profile, {fmt} replies, N={n:,})", total <= limit, detail)


def bench_speed(res: Results, n: int, latency_ms: float, naive_sample: int, workdir: Path) -> None:
    """``hwf check`` on ``n`` records with ``latency_ms`` per Alma call over real HTTP, and the naive way."""
    sim = make_simulator(per_second_limit=25.0)  # Alma's own per-second limit, as the client sees it
    ref = new_set(sim, n, profile="demo", name=f"speed-{n}")
    with served(sim) as server:
        ctx = make_context(make_config(workdir, server.url, alma_rps=25.0))
        try:
            sim.faults.alma_latency_ms = latency_ms
            start = time.perf_counter()
            workflow.add_set(ctx, ref)
            add_s = time.perf_counter() - start
            start = time.perf_counter()
            summary = preflight.check_set(ctx, ref)
            check_s = time.perf_counter() - start
            res.measure("add_seconds", add_s, f"hwf add (set + {math.ceil(n / 100)} member pages): {add_s:.2f} s")
            res.measure(
                "check_seconds",
                check_s,
                f"hwf check on {n:,} records at {latency_ms:g} ms per Alma call (real HTTP, 25 req/s cap): "
                f"{check_s:.2f} s = {n / check_s:,.0f} records/s; classes {summary.counts}",
            )
            res.target(f"check {n:,} records < 15 s", check_s < 15.0, f"{check_s:.2f} s")

            # The naive way: one GET /bibs/{mms} per record, one after another, then classify.
            sample = sim.set_members(ref)[:naive_sample]
            prefix = ctx.config.handles.prefix
            start = time.perf_counter()
            for mms in sample:
                dc.classify_bib(ctx.alma.get_bib_xml(mms), prefix)
            naive_s = time.perf_counter() - start
        finally:
            ctx.close()
    per = naive_s / len(sample)
    projected = per * 12_000
    res.measure(
        "naive_projected_seconds",
        projected,
        f"naive one-GET-per-record: {len(sample)} records measured in {naive_s:.2f} s ({per * 1000:.1f} ms each); "
        f"EXTRAPOLATED to 12,000 records: {projected:,.0f} s = {projected / 60:.1f} min "
        f"(hwf check is {projected / max(check_s * 12_000 / n, 1e-9):.0f}x faster)",
    )
    res.target("naive one-GET-per-record > 10 min (extrapolated)", projected > 600, f"{projected / 60:.1f} min")


def bench_classify(res: Results, n: int) -> None:
    """``dc.classify_bib`` alone on ``n`` bibs fetched once (in process, no latency), one core."""
    sim = make_simulator()
    ids = sim.generate_records(n, profile="demo", seed=7)
    client = AlmaClient(
        "http://alma.bench", API_KEY, transport=httpx.MockTransport(sim.handle), requests_per_second=1e9
    )
    ids += sim.generate_records(max(n // 10, 1), profile="problems", seed=11)
    bibs: list[Bib] = []
    with client:
        for start in range(0, len(ids), 100):
            bibs.extend(client.get_bibs(ids[start : start + 100]).bibs)
    best = math.inf
    classes: Counter[str] = Counter()
    for _ in range(3):
        began = time.process_time()
        checks = [dc.classify_bib(b, "11084") for b in bibs]
        best = min(best, time.process_time() - began)
        classes = Counter(c.preflight.value for c in checks)
    rate = len(bibs) / best
    res.measure(
        "classify_rate",
        rate,
        f"dc.classify_bib on {len(bibs):,} bibs (JSON bibs with embedded DC XML; demo + problems mix "
        f"{dict(classes)}): best of 3 = {best:.3f} s CPU = {rate:,.0f} records/s",
    )
    res.target("classification >= 5,000 records/s on one core", rate >= 5000, f"{rate:,.0f} records/s")


def run(
    *,
    n: int = 12_000,
    latency_ms: float = 50.0,
    naive_sample: int = 200,
    calls_n: int | None = None,
    classify_n: int | None = None,
) -> Results:
    """Run every measurement; returns the results (also printed as they come)."""
    res = Results("check benchmark (issue 3)")
    header(f"hwf check benchmark: {machine()}")
    with tempfile.TemporaryDirectory(prefix="hwf-bench-") as tmp:
        base = Path(tmp)
        for profile, fmt in (("demo", "json"), ("problems", "json"), ("demo", "xml"), ("problems", "xml")):
            workdir = base / f"calls-{profile}-{fmt}"
            workdir.mkdir()
            bench_calls(res, calls_n or n, profile, fmt, workdir)
        workdir = base / "speed"
        workdir.mkdir()
        bench_speed(res, n, latency_ms, naive_sample, workdir)
    bench_classify(res, classify_n or n)
    res.summary()
    return res


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.check_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=12_000, help="records in the timed set (default 12000)")
    parser.add_argument("--latency-ms", type=float, default=50.0, help="simulated latency per Alma call")
    parser.add_argument("--naive-sample", type=int, default=200, help="records read one by one (extrapolated)")
    args = parser.parse_args(argv)
    res = run(n=args.n, latency_ms=args.latency_ms, naive_sample=args.naive_sample)
    return 0 if res.all_met else 1


if __name__ == "__main__":
    raise SystemExit(main())
