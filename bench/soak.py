"""Soak: hwf under hundreds of random SIGKILLs, and under a flaky Alma (issue 5's targets).

    .venv/bin/python -m bench.soak                  # both parts, with the issue's numbers
    .venv/bin/python -m bench.soak --kills 40       # a shorter kill soak
    .venv/bin/python -m bench.soak --part faults    # only the fault run

Part 1, kills: 5 sets (2 demo, 3 clean profile) through the whole workflow, driven only by ``hwf resume --all``
processes that are SIGKILLed at random moments (the soak plays the operator with ``hwf fix --apply`` when a set
asks for it), then one last resume. Counted: kill points, duplicate submissions and out-of-order steps (from the
simulator's log of accepted job runs and hwf's audit trail), sets verified.

Part 2, faults: the same 5 sets twice, fault-free and then with 10 % of Alma GETs answering 500, 20 % of job
POSTs losing their reply (the job is created, the connection dropped) and, every 10-20 s, a burst of 1-3 answers
429 PER_SECOND_THRESHOLD; compared: sets verified, duplicates, Alma API calls (fault run / fault-free), and the
peak Alma requests in any one-second window, measured by the simulator, against ``[alma] requests_per_second``.

Everything is real: ``hwf`` executables, ``hwf sim serve`` over HTTP on 127.0.0.1, a SQLite database.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.config import write_config
from tests.support.crash import (
    KillLog,
    add_sets,
    check,
    database_url,
    finish,
    kill_rounds,
    query,
    serve,
)
from tests.support.e2e import Served

PROFILES = ["demo", "clean", "demo", "clean", "clean"]
NOT_ALMA = {"admin", "handles_api", "handle_redirect"}


def alma_calls(served: Served) -> int:
    """Alma API requests the simulator answered (admin and handle-proxy requests left out)."""
    requests: dict[str, int] = served.state()["stats"]["requests"]
    return sum(n for kind, n in requests.items() if kind not in NOT_ALMA)


def peak_per_second(served: Served) -> int:
    peaks: dict[str, int] = served.state()["stats"]["max_per_second"]
    return max(peaks.values(), default=0)


@dataclass
class KillResult:
    kills: int
    ended: int
    fixes: int
    seconds: float
    sets: int
    verified: int
    duplicates: list[str]
    out_of_order: list[str]
    runs: int
    in_doubt: int  # kills that left a job POST with an unknown outcome (attempt in `submitting`)
    reconciled: int
    resubmitted: int
    leftover_problems: list[str] = field(default_factory=list)


def kill_soak(workdir: Path, kills: int, seed: int, job_seconds: float, records: int) -> KillResult:
    """Part 1: ``kills`` random SIGKILLs of ``hwf resume --all`` over one workflow of 5 sets."""
    workdir.mkdir(parents=True, exist_ok=True)
    served = serve(workdir, job_seconds=job_seconds)
    try:
        # Alma holds each job POST's reply for 0.6 s, and hwf paces itself at 8 requests a second: the two
        # windows where a kill leaves a submission in doubt are wide enough for random kills to land in.
        config = write_config(workdir, served.url, preset="crash", lease_seconds=5, requests_per_second=8)
        url = database_url(config)
        sets = add_sets(config, served, PROFILES, records=records, prefix="Soak")
        served.faults(run_reply_delay_s=0.6)
        rng = random.Random(seed)
        log = KillLog()
        in_doubt = 0
        started = time.monotonic()
        while log.killed < kills:
            before = log.killed
            # Half the kills land soon after start-up (claims, planning, submissions, reconciliation happen
            # first in a fresh process), half anywhere later.
            low, high = (0.45, 0.8) if rng.random() < 0.5 else (0.8, 2.5)
            kill_rounds(config, 1, rng, low=low, high=high, log=log)
            if log.killed > before:
                in_doubt += query(url, "SELECT count(*) FROM attempts WHERE state = 'submitting'")[0][0]
            elif log.ended and _all_verified(url, len(sets)):
                break  # the workflow finished before the kill budget was spent
            if log.killed and log.killed % 25 == 0 and log.killed > before:
                print(f"  ... {log.killed} kills, {_verified(url)} of {len(sets)} sets verified", flush=True)
        finish(config, served, sets)
        seconds = time.monotonic() - started
        verdict = check(config, served, sets)
        events = dict(query(url, "SELECT kind, count(*) FROM events GROUP BY kind"))
        return KillResult(
            kills=log.killed,
            ended=log.ended,
            fixes=log.fixes,
            seconds=seconds,
            sets=len(sets),
            verified=_verified(url),
            duplicates=verdict.duplicates,
            out_of_order=verdict.out_of_order,
            runs=verdict.runs,
            in_doubt=in_doubt,
            reconciled=events.get("reconciled", 0),
            resubmitted=events.get("abandoned", 0),
            leftover_problems=verdict.not_verified,
        )
    finally:
        served.stop()


def _verified(url: str) -> int:
    return int(query(url, "SELECT count(*) FROM sets WHERE state = 'verified'")[0][0])


def _all_verified(url: str, total: int) -> bool:
    return _verified(url) == total


@dataclass
class FaultRun:
    label: str
    seconds: float
    calls: int
    peak: int
    verified: int
    duplicates: list[str]
    out_of_order: list[str]
    sent_429: dict[str, int]
    runs: int


def fault_run(workdir: Path, *, faults: bool, seed: int, rps: float, job_seconds: float, records: int) -> FaultRun:
    """One whole workflow of the 5 sets by ``hwf resume --all``, with or without Alma's faults."""
    workdir.mkdir(parents=True, exist_ok=True)
    served = serve(workdir, job_seconds=job_seconds, per_second_limit=25, seed=seed)
    stop = threading.Event()
    try:
        config = write_config(workdir, served.url, preset="crash", requests_per_second=rps, max_retries=8)
        sets = add_sets(config, served, PROFILES, records=records, prefix="Fault")
        calls_before = alma_calls(served)
        if faults:
            served.faults(alma_get_500_rate=0.10, drop_run_reply_rate=0.20)
            threading.Thread(target=_bursts, args=(served, stop, random.Random(seed)), daemon=True).start()
        started = time.monotonic()
        finish(config, served, sets, rounds=10, timeout=900, tries=3)
        seconds = time.monotonic() - started
        stop.set()
        calls = alma_calls(served) - calls_before
        served.faults(alma_get_500_rate=0, drop_run_reply_rate=0, burst_429=0)
        verdict = check(config, served, sets)
        state = served.state()
        return FaultRun(
            label="faults" if faults else "fault-free",
            seconds=seconds,
            calls=calls,
            peak=peak_per_second(served),
            verified=sum(1 for s in sets if s not in " ".join(verdict.not_verified)),
            duplicates=verdict.duplicates,
            out_of_order=verdict.out_of_order,
            sent_429=state["stats"]["sent_429"],
            runs=verdict.runs,
        )
    finally:
        stop.set()
        served.stop()


def _bursts(served: Served, stop: threading.Event, rng: random.Random) -> None:
    """Every 10-20 s, Alma answers the next 1-3 requests with 429 PER_SECOND_THRESHOLD (another application
    of the institution spent the second's quota)."""
    while not stop.wait(rng.uniform(10.0, 20.0)):
        try:
            served.faults(burst_429=rng.randint(1, 3))
        except OSError:
            return


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=("all", "kills", "faults"), default="all")
    parser.add_argument("--kills", type=int, default=200, help="kill points in the kill soak (default 200)")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--job-seconds", type=float, default=None, help="simulated job length (kill soak)")
    parser.add_argument("--records", type=int, default=40, help="records per set")
    parser.add_argument("--rps", type=float, default=10.0, help="[alma] requests_per_second in the fault run")
    args = parser.parse_args(argv)
    # The workflow must outlast the kill budget: each round lives ~1 s, jobs run 3 at a time.
    job_seconds = args.job_seconds if args.job_seconds is not None else max(1.0, args.kills * 0.3)
    ok = True
    with tempfile.TemporaryDirectory(prefix="hwf-soak-") as tmp:
        root = Path(tmp)
        if args.part in ("all", "kills"):
            print(
                f"Kill soak: {args.kills} random SIGKILLs of `hwf resume --all` over 5 sets "
                f"({args.records} records each, jobs of {job_seconds:.0f} s)",
                flush=True,
            )
            k = kill_soak(root / "kills", args.kills, args.seed, job_seconds, args.records)
            ok &= _report_kills(k, args.kills)
        if args.part in ("all", "faults"):
            print(f"Fault run: 5 sets, [alma] requests_per_second = {args.rps:g}", flush=True)
            clean = fault_run(
                root / "clean", faults=False, seed=args.seed, rps=args.rps, job_seconds=1.0, records=args.records
            )
            flaky = fault_run(
                root / "flaky", faults=True, seed=args.seed, rps=args.rps, job_seconds=1.0, records=args.records
            )
            ok &= _report_faults(clean, flaky, args.rps)
    print("ALL TARGETS MET" if ok else "SOME TARGETS MISSED")
    return 0 if ok else 1


def _line(name: str, value: Any, target: str, met: bool) -> bool:
    print(f"  {name:<44} {value!s:<22} target {target:<14} {'ok' if met else 'MISSED'}")
    return met


def _report_kills(k: KillResult, wanted: int) -> bool:
    print(f"Kill soak results ({k.seconds:.0f} s, {k.runs} Alma job runs, {k.fixes} `hwf fix --apply` by the operator)")
    ok = _line("kill points", k.kills, f">= {wanted}", k.kills >= wanted)
    ok &= _line("duplicate submissions", len(k.duplicates), "0", not k.duplicates)
    ok &= _line("out-of-order steps", len(k.out_of_order), "0", not k.out_of_order)
    ok &= _line("sets verified", f"{k.verified} of {k.sets}", f"{k.sets} of {k.sets}", k.verified == k.sets)
    print(
        f"  kills that left a job POST in doubt: {k.in_doubt}; found again by token: {k.reconciled}; "
        f"never reached Alma, resubmitted: {k.resubmitted}; rounds that ended by themselves: {k.ended}"
    )
    for problem in k.duplicates + k.out_of_order + k.leftover_problems:
        print(f"  ! {problem}")
    return ok


def _report_faults(clean: FaultRun, flaky: FaultRun, rps: float) -> bool:
    ratio = flaky.calls / clean.calls if clean.calls else float("inf")
    print(
        f"Fault run results (fault-free {clean.seconds:.0f} s, with faults {flaky.seconds:.0f} s; "
        f"429 sent: {flaky.sent_429})"
    )
    ok = _line(
        "sets verified (fault-free / faults)",
        f"{clean.verified} / {flaky.verified} of 5",
        "5 / 5",
        clean.verified == flaky.verified == 5,
    )
    ok &= _line(
        "duplicate submissions",
        len(flaky.duplicates) + len(clean.duplicates),
        "0",
        not (flaky.duplicates or clean.duplicates),
    )
    ok &= _line(
        "out-of-order steps",
        len(flaky.out_of_order) + len(clean.out_of_order),
        "0",
        not (flaky.out_of_order or clean.out_of_order),
    )
    ok &= _line(
        "Alma API calls (faults / fault-free)", f"{flaky.calls} / {clean.calls} = {ratio:.2f}x", "<= 1.5x", ratio <= 1.5
    )
    peak = max(clean.peak, flaky.peak)
    ok &= _line("peak Alma requests in any 1 s window", f"{peak} (cap {rps:g}/s)", f"<= {rps:g}", peak <= rps)
    for problem in clean.duplicates + flaky.duplicates + clean.out_of_order + flaky.out_of_order:
        print(f"  ! {problem}")
    return ok


if __name__ == "__main__":
    sys.exit(main())
