"""The ETA of the whole migration: the earliest moment Alma's job limits allow every set that can move to
finish, at the job durations measured so far.

Three lower bounds, the largest wins: the longest chain of steps one set still has (its running job's
remainder, then its later jobs, then the settle time); all job time left shared by the jobs Alma runs at once;
per job, the runs an hour Alma allows (counting the runs of the last hour), followed by the later steps of the
last set to start it. Sets needing attention are left out.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from orchestrator.config import Config
from orchestrator.domain.jobrules import run_seconds, window_starts
from orchestrator.domain.steps import JOB_STEPS, Stage, Step
from orchestrator.store.models import AttemptState


@dataclass(frozen=True)
class StepDurations:
    """How long a step's Alma job took, over the runs that finished (submission to end)."""

    step: str
    runs: int
    mean_seconds: float
    min_seconds: float
    max_seconds: float

    def as_json(self) -> dict[str, Any]:
        return {
            "runs": self.runs,
            "mean_seconds": round(self.mean_seconds, 1),
            "min_seconds": round(self.min_seconds, 1),
            "max_seconds": round(self.max_seconds, 1),
        }


def estimate_finish(
    now: datetime,
    remaining: list[tuple[float, list[str]]],
    durations: dict[str, float],
    *,
    max_running: int,
    per_hour: int,
    runs_last_hour: dict[str, int],
    settle_seconds: float,
    starts: dict[str, list[datetime]] | None = None,
    not_before: list[datetime | None] | None = None,
) -> datetime:
    """The earliest moment Alma's job limits allow every moving set to finish, at the measured durations.

    ``remaining`` holds, per set, the seconds its running job still needs and the job steps still to run
    (in order). Three lower bounds, the largest wins: the longest chain of one set; all job time left
    shared by ``max_running`` jobs at once; per job, ``per_hour`` starts an hour (counting the starts of
    the last hour), followed by the later steps of the last set to start it. Settle time follows the
    integration run; verification itself takes minutes and is not counted.

    ``starts``: each job step's starts of the last hour (when they are known). The hourly bound then follows
    the windows' resets: each set's jobs, in order, take the first start the hourly window allows once its
    previous job has ended (:func:`~orchestrator.domain.jobrules.window_starts`), so the estimate holds still
    while every set waits for a full window, rather than moving on with ``now``.
    """
    if starts is not None:
        chain_work = _chain_and_work(now, remaining, durations, max_running, settle_seconds)
        waits = not_before or [None] * len(remaining)
        return max(chain_work, _windows(now, remaining, durations, per_hour, starts, settle_seconds, waits))
    order = [s.value for s in JOB_STEPS]
    chain = 0.0
    work = 0.0
    runs: Counter[str] = Counter()
    for running_left, steps in remaining:
        tail = settle_seconds if steps or running_left else 0.0
        chain = max(chain, running_left + sum(durations[s] for s in steps) + tail)
        work += running_left + sum(durations[s] for s in steps)
        runs.update(steps)
    hourly = 0.0
    for step, n in runs.items():
        free_now = max(per_hour - runs_last_hour.get(step, 0), 0)
        hours = 0 if n <= free_now else math.ceil((n - free_now) / per_hour)
        later = order[order.index(step) + 1 :]
        hourly = max(hourly, hours * 3600.0 + durations[step] + sum(durations[s] for s in later) + settle_seconds)
    return now + timedelta(seconds=max(chain, work / max_running, hourly))


def _chain_and_work(
    now: datetime,
    remaining: list[tuple[float, list[str]]],
    durations: dict[str, float],
    max_running: int,
    settle_seconds: float,
) -> datetime:
    chain = work = 0.0
    for running_left, steps in remaining:
        tail = settle_seconds if steps or running_left else 0.0
        chain = max(chain, running_left + sum(durations[s] for s in steps) + tail)
        work += running_left + sum(durations[s] for s in steps)
    return now + timedelta(seconds=max(chain, work / max_running))


def _windows(
    now: datetime,
    remaining: list[tuple[float, list[str]]],
    durations: dict[str, float],
    per_hour: int,
    starts: dict[str, list[datetime]],
    settle_seconds: float,
    not_before: list[datetime | None],
) -> datetime:
    """When the last set finishes if each set's jobs start, in the scheduler's order, at the first moment the
    job's hourly window allows after the set's previous job ended (its running job ends at ``running_left``) and
    its recorded wait (``not_before``) passed."""
    ready = [
        max(now + timedelta(seconds=left), wait or now) for (left, _), wait in zip(remaining, not_before, strict=True)
    ]
    window = {step: list(times) for step, times in starts.items()}
    for step in (s.value for s in JOB_STEPS):
        waiting = sorted((ready[i], i) for i, (_, steps) in enumerate(remaining) if step in steps)
        for at, i in waiting:
            begin = window_starts(per_hour, window.setdefault(step, []), at, 1)[0]
            window[step] = sorted([*window[step], begin])[-per_hour:]  # only the last starts of a full window count
            ready[i] = begin + timedelta(seconds=durations[step])
    finish = now
    for i, (left, steps) in enumerate(remaining):
        if steps or left:
            finish = max(finish, ready[i] + timedelta(seconds=settle_seconds))
    return finish


def time_left(step: str, progress: float | None, elapsed: float, durations: dict[str, StepDurations]) -> float:
    """Seconds a running job still needs: from its measured mean, its elapsed time and its progress."""
    measured = durations.get(step)
    if measured is None:
        return 0.0
    by_time = measured.mean_seconds - elapsed
    by_progress = measured.mean_seconds * (1 - min(max(progress or 0.0, 0.0), 100.0) / 100.0)
    return max(min(by_time, by_progress) if progress else by_time, 0.0)


def eta(
    config: Config,
    now: datetime,
    remaining: list[tuple[float, list[str]]],
    durations: dict[str, StepDurations],
    runs_last_hour: Counter[str],
    attention: int,
    total: int,
    starts: dict[str, list[datetime]] | None = None,
    not_before: list[datetime | None] | None = None,
) -> tuple[datetime | None, str]:
    held = f"; {attention} set(s) needing attention are not counted" if attention else ""
    if not total:
        return None, "no sets registered yet"
    if not remaining:
        if attention:
            return None, f"nothing can move until someone acts: {attention} set(s) need attention"
        return None, "every set is verified"
    needed = {s for _, steps in remaining for s in steps}
    means = {step: d.mean_seconds for step, d in durations.items()}
    if needed - set(means):
        if not means:
            return None, "no Alma job has finished yet: no durations measured to estimate from" + held
        fallback = sum(means.values()) / len(means)
        means = {step.value: means.get(step.value, fallback) for step in JOB_STEPS}
    cfg = config.alma
    eta = estimate_finish(
        now,
        remaining,
        means,
        max_running=cfg.max_running_jobs,
        per_hour=cfg.max_runs_per_job_hour,
        runs_last_hour=dict(runs_last_hour),
        settle_seconds=config.handles.settle_minutes * 60.0,
        starts=starts,
        not_before=not_before,
    )
    sets = len(remaining)
    return eta, (
        f"{sets} set(s) to go; the earliest Alma's limits ({cfg.max_running_jobs} jobs at once, "
        f"{cfg.max_runs_per_job_hour} runs of a job an hour) allow at the job durations measured so far" + held
    )


def mean_durations(attempts: list[Any]) -> dict[str, StepDurations]:
    """How long each step's finished runs took, submission to end (``jobrules.run_seconds``); ``attempts`` are
    rows with step, state and the attempt's times."""
    seconds: dict[str, list[float]] = defaultdict(list)
    for a in attempts:
        took = run_seconds(a.alma_submitted_at, a.alma_ended_at, a.submitted_at or a.begun_at, a.ended_at)
        if a.state is AttemptState.FINISHED and took is not None:
            seconds[a.step].append(took)
    return {
        step: StepDurations(step, len(v), sum(v) / len(v), min(v), max(v))
        for step in (s.value for s in JOB_STEPS)
        if (v := seconds.get(step))
    }


@dataclass(frozen=True)
class OnTheWay:
    """A set still on its way to ``migrated``: its stage, the job it has running (step, seconds run so far),
    and the moment before which it does not move (a wait for a job slot, a quota, an outage)."""

    stage: Stage
    running: str | None = None
    elapsed: float = 0.0
    not_before: datetime | None = None


def soonest_migrated(now: datetime, sets: list[OnTheWay], durations: dict[str, StepDurations]) -> datetime | None:
    """The earliest moment one of ``sets`` can reach ``migrated``, at the job durations measured so far (a job
    whose duration nobody measured yet may end any moment: now). None when no set is on its way."""
    if not sets:
        return None
    copy, migrate = Step.COPY_IDENTIFIERS.value, Step.MIGRATE.value

    def mean(step: str) -> float:
        measured = durations.get(step)
        return measured.mean_seconds if measured is not None else 0.0

    soonest = None
    for s in sets:
        left = mean(migrate)
        if s.running == migrate:
            left = max(mean(migrate) - s.elapsed, 0.0)
        elif s.stage is Stage.CREATED:
            left += max(mean(copy) - s.elapsed, 0.0) if s.running == copy else mean(copy)
        at = max(now, s.not_before or now) + timedelta(seconds=left)
        soonest = at if soonest is None else min(soonest, at)
    return soonest
