"""The whole migration at a glance (``hwf overview``, the dashboard's overview and sets pages): sets per
state, records verified of total, the attention list with what to do, the jobs running in Alma now, Alma's
job limits and the job durations measured so far, an ETA from what is left, and verified records over time.

The read side only: short read transactions of plain column reads, frozen dataclasses out, no rendering.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select

from orchestrator.display import iso_z
from orchestrator.domain.attention import PERSON_WAIT, advice, next_command
from orchestrator.domain.clicks import profile_clicks
from orchestrator.domain.steps import JOB_STEPS, Stage, Step, job_steps_left
from orchestrator.domain.wording import plural
from orchestrator.service import nextstep, views
from orchestrator.service.actions.gate import JobSlots
from orchestrator.service.context import Context
from orchestrator.service.eta import StepDurations, mean_durations, time_left
from orchestrator.service.eta import eta as estimate
from orchestrator.service.nextstep import Next
from orchestrator.service.stale import StaleRecheck, stale_rechecks
from orchestrator.store.models import AlmaSet, Attempt, AttemptState, IntegrationBatch, Record

_ACTIVE = (AttemptState.SUBMITTING, AttemptState.SUBMITTED, AttemptState.WAITING_OPERATOR)
SERIES_POINTS = 200
_OPEN = ("creating", "announced", "bound")  # integration batches not finished


@dataclass(frozen=True)
class AttentionItem:
    set: str
    name: str
    state: str
    kind: str | None
    reason: str
    command: str  # the command that gets the set going again
    advice: str  # the whole sentence: what to look at, what to run

    def as_json(self) -> dict[str, Any]:
        return {
            "set": self.set,
            "name": self.name,
            "state": self.state,
            "kind": self.kind,
            "reason": self.reason,
            "command": self.command,
            "advice": self.advice,
        }


@dataclass(frozen=True)
class RunningJob:
    set: str
    name: str
    step: str
    job_id: str | None
    instance_id: str | None
    status: str | None
    progress: float | None
    submitted_at: datetime | None
    elapsed_seconds: float | None

    def as_json(self) -> dict[str, Any]:
        return {
            "set": self.set,
            "name": self.name,
            "step": self.step,
            "job_id": self.job_id,
            "instance_id": self.instance_id,
            "status": self.status,
            "progress": self.progress,
            "submitted_at": iso_z(self.submitted_at),
            "elapsed_seconds": self.elapsed_seconds,
        }


@dataclass(frozen=True)
class JobLimits:
    max_running_jobs: int
    max_runs_per_job_hour: int
    running_now: int
    runs_last_hour: dict[str, int]  # step -> runs started in the last hour

    def as_json(self) -> dict[str, Any]:
        return {
            "max_running_jobs": self.max_running_jobs,
            "max_runs_per_job_hour": self.max_runs_per_job_hour,
            "running_now": self.running_now,
            "runs_last_hour": dict(self.runs_last_hour),
        }


@dataclass(frozen=True)
class SeriesPoint:
    at: datetime
    records: int  # records verified OK by then (cumulative)


@dataclass(frozen=True)
class BatchItem:
    """An open integration batch: one itemized Alma set on which a person presses Run of the handle integration
    profile once for all its sets."""

    number: int
    name: str
    alma_set_id: str | None
    state: str  # creating, announced (waits for a person), bound (its run goes on)
    sets: int
    records: int
    created_at: datetime
    announced_at: datetime | None
    instance_id: str | None
    status: str | None
    progress: float | None
    clicks: str | None  # what the person does in Alma, while the batch waits for them

    @property
    def needs_person(self) -> bool:
        return self.state == "announced"

    def as_json(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "name": self.name,
            "alma_set_id": self.alma_set_id,
            "state": self.state,
            "sets": self.sets,
            "records": self.records,
            "created_at": iso_z(self.created_at),
            "announced_at": iso_z(self.announced_at),
            "instance_id": self.instance_id,
            "status": self.status,
            "progress": self.progress,
            "needs_person": self.needs_person,
            "clicks": self.clicks,
        }


@dataclass(frozen=True)
class Overview:
    generated_at: datetime
    sets: int
    sets_by_state: dict[str, int]
    records: int
    records_excluded: int
    records_verified: int
    attention: tuple[AttentionItem, ...]
    running: tuple[RunningJob, ...]
    waiting: int  # sets waiting (settle time, a job slot, a poll) without a job of theirs running
    waiting_for_person: int  # sets waiting for a person's run in Alma (an integration batch's click, a step by hand)
    eta: datetime | None
    eta_note: str
    limits: JobLimits
    durations: dict[str, StepDurations]
    verified_over_time: tuple[SeriesPoint, ...]
    last_checked: dict[str, datetime | None]  # set -> when every included record was last verified
    batches: tuple[BatchItem, ...] = ()  # open integration batches (manual integration)
    next: Next = Next(None, "no sets registered yet")  # the whole migration's earliest next thing
    stale: tuple[StaleRecheck, ...] = ()  # verified sets with handles stale in the public cache, soonest first

    @property
    def stale_note(self) -> str | None:
        """The next re-check of stale handles: ``re-check of 12 stale handles at ... (set X)``, ``+N more sets``."""
        if not self.stale:
            return None
        first, rest = self.stale[0], len(self.stale) - 1
        return f"{first.phrase()} (set {first.set})" + (f"; then {plural(rest, 'more set')}" if rest else "")

    @property
    def oldest_check(self) -> tuple[str, datetime] | None:
        """The set whose last full verification is the oldest, and when that was."""
        checked = [(at, s) for s, at in self.last_checked.items() if at is not None]
        return (min(checked)[1], min(checked)[0]) if checked else None

    @property
    def done(self) -> bool:
        return self.sets > 0 and self.sets_by_state.get(Stage.VERIFIED.value, 0) == self.sets

    def as_json(self) -> dict[str, Any]:
        return {
            "generated_at": iso_z(self.generated_at),
            "sets": self.sets,
            "sets_by_state": dict(self.sets_by_state),
            "records": self.records,
            "records_excluded": self.records_excluded,
            "records_verified": self.records_verified,
            "attention": [a.as_json() for a in self.attention],
            "running": [r.as_json() for r in self.running],
            "waiting": self.waiting,
            "waiting_for_person": self.waiting_for_person,
            "eta": iso_z(self.eta),
            "eta_note": self.eta_note,
            "done": self.done,
            "limits": self.limits.as_json(),
            "durations": {step: d.as_json() for step, d in self.durations.items()},
            "verified_over_time": [{"at": iso_z(p.at), "records": p.records} for p in self.verified_over_time],
            "last_checked": {s: iso_z(at) for s, at in self.last_checked.items()},
            "batches": [b.as_json() for b in self.batches],
            "next": self.next.as_json(),
            "stale": [r.as_json() for r in self.stale],
            "stale_note": self.stale_note,
        }


@dataclass(frozen=True)
class SetRow:
    """One line of the sets table: ``hwf status`` plus verified records, last change and last check."""

    summary: views.SetSummary
    verified: int
    updated_at: datetime
    last_checked: datetime | None

    @property
    def note(self) -> str:
        s = self.summary
        if s.attention:
            return s.attention
        if s.step:
            progress = f" {s.progress:.0f}%" if s.progress is not None else ""
            return f"{s.step}: job {s.instance_id or '(submitting)'} {s.job_status or ''}{progress}".strip()
        return s.waiting or ""

    def as_json(self) -> dict[str, Any]:
        return {
            **self.summary.as_json(),
            "verified": self.verified,
            "updated_at": iso_z(self.updated_at),
            "last_checked": iso_z(self.last_checked),
        }


# ---------------------------------------------------------------------------------------------
# the read


def _series(times: list[datetime]) -> tuple[SeriesPoint, ...]:
    """Cumulative verified records at each verification time, thinned to at most ``SERIES_POINTS``."""
    if not times:
        return ()
    stride = max(1, math.ceil(len(times) / SERIES_POINTS))
    points = [SeriesPoint(times[i], i + 1) for i in range(stride - 1, len(times), stride)]
    if points[-1].records != len(times):
        points.append(SeriesPoint(times[-1], len(times)))
    return tuple(points)


def overview(ctx: Context) -> Overview:
    """The whole migration, read in one short transaction."""
    now = ctx.clock()
    cfg = ctx.config.alma
    with ctx.sessions() as session:
        facts = _read_facts(session)
        slots = JobSlots.of(session, now, cfg)
        nexts = nextstep.per_set(session, ctx.config, now)
    latest = {a.set_id: a for a in facts.attempts}
    durations = mean_durations(facts.attempts)
    runs_last_hour = Counter(
        {step.value: len(slots.recent.get(cfg.jobs[step.job_key].id, [])) for step in JOB_STEPS if step.job_key}
    )
    tally = _Tally(now, durations)
    for s in facts.sets:
        tally.add(s, facts.per_set.get(s.id), latest.get(s.id))
    starts = {step.value: slots.recent.get(cfg.jobs[step.job_key].id, []) for step in JOB_STEPS if step.job_key}
    eta, note = estimate(
        ctx.config,
        now,
        tally.remaining,
        durations,
        runs_last_hour,
        len(tally.attention),
        len(facts.sets),
        starts,
        tally.not_before,
    )
    if tally.person_sets:  # the time a person takes is nobody's estimate: say what the ETA leaves out
        people = plural(tally.person_sets, "set")
        if tally.remaining:
            note = f"{note}; {people} waiting for a person's run in Alma are not counted"
        else:
            eta, note = None, f"{people} wait for a person's run in Alma (see Waiting for you): no estimate until then"
    return Overview(
        generated_at=now,
        sets=len(facts.sets),
        sets_by_state=tally.by_state,
        records=sum(s.record_count for s in facts.sets),
        records_excluded=sum(c.excluded for c in facts.per_set.values()),
        records_verified=sum(c.ok for c in facts.per_set.values()),
        attention=tuple(tally.attention),
        running=tuple(tally.running),
        waiting=tally.waiting_sets,
        waiting_for_person=tally.person_sets,
        eta=eta,
        eta_note=note,
        limits=JobLimits(
            max_running_jobs=cfg.max_running_jobs,
            max_runs_per_job_hour=cfg.max_runs_per_job_hour,
            running_now=sum(1 for r in tally.running if r.job_id),
            runs_last_hour={step.value: runs_last_hour.get(step.value, 0) for step in JOB_STEPS},
        ),
        durations=durations,
        verified_over_time=_series([t for t in facts.times if t is not None]),
        last_checked=tally.last_checked,
        batches=open_batches(facts.batches),
        next=nextstep.overall(nexts, {s.alma_set_id: s.name for s in facts.sets}),
        stale=facts.stale,
    )


@dataclass(frozen=True)
class _Facts:
    """The plain rows the overview is computed from."""

    sets: list[Any]
    per_set: dict[int, Any]
    attempts: list[Any]
    times: list[datetime | None]
    batches: list[Any]
    stale: tuple[StaleRecheck, ...] = ()


def _read_facts(session: Any) -> _Facts:
    sets = session.execute(
        select(
            AlmaSet.id,
            AlmaSet.alma_set_id,
            AlmaSet.name,
            AlmaSet.stage,
            AlmaSet.attention,
            AlmaSet.attention_kind,
            AlmaSet.record_count,
            AlmaSet.waiting,
            AlmaSet.wait_until,
        ).order_by(AlmaSet.created_at, AlmaSet.id)
    ).all()
    per_set = {
        row.set_id: row
        for row in session.execute(
            select(
                Record.set_id,
                func.count().filter(Record.excluded).label("excluded"),
                func.count().filter(Record.verdict == "OK", ~Record.excluded).label("ok"),
                func.count().filter(~Record.excluded).label("included"),
                func.count().filter(~Record.excluded, Record.verified_at.is_not(None)).label("checked"),
                func.min(Record.verified_at).filter(~Record.excluded).label("oldest_check"),
                func.count().filter(Record.preflight == "NEEDS_COPY", ~Record.excluded).label("copy"),
                func.count().filter(Record.preflight.is_not(None)).label("preflighted"),
            ).group_by(Record.set_id)
        )
    }
    attempts = session.execute(
        select(
            Attempt.set_id,
            Attempt.step,
            Attempt.job_id,
            Attempt.instance_id,
            Attempt.status,
            Attempt.progress,
            Attempt.state,
            Attempt.begun_at,
            Attempt.submitted_at,
            Attempt.ended_at,
            Attempt.alma_submitted_at,
            Attempt.alma_ended_at,
            Attempt.batch_id,
        ).order_by(Attempt.id)
    ).all()
    times = list(
        session.scalars(
            select(Record.verified_at)
            .where(Record.verdict == "OK", ~Record.excluded, Record.verified_at.is_not(None))
            .order_by(Record.verified_at)
        )
    )
    open_rows = session.scalars(
        select(IntegrationBatch).where(IntegrationBatch.state.in_(_OPEN)).order_by(IntegrationBatch.number)
    ).all()
    stale = tuple(sorted(stale_rechecks(session).values(), key=lambda r: (r.at, r.set_id)))
    return _Facts(list(sets), per_set, list(attempts), times, list(open_rows), stale)


def batches(ctx: Context) -> tuple[BatchItem, ...]:
    """The open integration batches (manual integration), oldest first."""
    with ctx.sessions() as session:
        return open_batches(
            list(
                session.scalars(
                    select(IntegrationBatch).where(IntegrationBatch.state.in_(_OPEN)).order_by(IntegrationBatch.number)
                )
            )
        )


def open_batches(rows: list[Any]) -> tuple[BatchItem, ...]:
    """The open integration batches, with the clicks of those that wait for a person."""
    return tuple(
        BatchItem(
            number=b.number,
            name=b.name,
            alma_set_id=b.alma_set_id,
            state=b.state,
            sets=b.sets,
            records=b.records,
            created_at=b.created_at,
            announced_at=b.announced_at,
            instance_id=b.instance_id,
            status=b.status,
            progress=b.progress,
            clicks=profile_clicks(b.name) if b.state == "announced" else None,
        )
        for b in rows
    )


class _Tally:
    """Sets per state, attention, running jobs and the work left, set by set."""

    def __init__(self, now: datetime, durations: dict[str, StepDurations]) -> None:
        self.now, self.durations = now, durations
        self.by_state = {stage.value: 0 for stage in Stage}
        self.attention: list[AttentionItem] = []
        self.running: list[RunningJob] = []
        self.remaining: list[tuple[float, list[str]]] = []
        self.not_before: list[datetime | None] = []  # per set of ``remaining``: the wait it recorded, if any
        self.last_checked: dict[str, datetime | None] = {}
        self.waiting_sets = 0
        self.person_sets = 0

    def add(self, s: Any, counts: Any, a: Any) -> None:
        self.by_state[s.stage.value] += 1
        complete = counts is not None and counts.included > 0 and counts.checked == counts.included
        self.last_checked[s.alma_set_id] = counts.oldest_check if complete and counts is not None else None
        # A set in an integration batch: the batch's run is shown once, as the batch.
        active = a if a is not None and a.state in _ACTIVE and a.batch_id is None else None
        if active is not None:
            self.running.append(self._running(s, active))
        elif s.waiting and not s.attention and s.waiting.startswith(PERSON_WAIT):
            self.person_sets += 1
            return  # from here on its time is a person's: not part of the estimate
        elif s.waiting and not s.attention:
            self.waiting_sets += 1
        if s.attention:
            self.attention.append(
                AttentionItem(
                    set=s.alma_set_id,
                    name=s.name,
                    state=s.stage.value,
                    kind=s.attention_kind,
                    reason=s.attention,
                    command=next_command(s.attention_kind, s.alma_set_id),
                    advice=advice(s.attention_kind, s.alma_set_id),
                )
            )
            return
        if s.stage is Stage.VERIFIED:
            return
        steps = [step.value for step in job_steps_left(s.stage)]
        if s.stage is Stage.CREATED and counts is not None and counts.preflighted and not counts.copy:
            steps.remove(Step.COPY_IDENTIFIERS.value)  # no record needs the copy job: it is skipped
        running_left = 0.0
        if active is not None and active.step in steps:
            steps.remove(active.step)
            elapsed = self.running[-1].elapsed_seconds or 0.0
            running_left = time_left(active.step, active.progress, elapsed, self.durations)
        self.remaining.append((running_left, steps))
        self.not_before.append(s.wait_until if s.waiting and s.wait_until and s.wait_until > self.now else None)

    def _running(self, s: Any, active: Any) -> RunningJob:
        start = active.submitted_at or active.begun_at
        return RunningJob(
            set=s.alma_set_id,
            name=s.name,
            step=active.step,
            job_id=active.job_id,
            instance_id=active.instance_id,
            status=active.status
            or ("waiting for the operator's run" if active.state is AttemptState.WAITING_OPERATOR else None),
            progress=active.progress,
            submitted_at=start,
            elapsed_seconds=round(max((self.now - start).total_seconds(), 0.0), 1),
        )


def set_rows(ctx: Context) -> list[SetRow]:
    """Every set, for the sets table: its status line, verified records, last change and last full check."""
    summaries = nextstep.status(ctx)
    with ctx.sessions() as session:
        extra = {
            row.alma_set_id: row
            for row in session.execute(
                select(
                    AlmaSet.alma_set_id,
                    AlmaSet.updated_at,
                    func.count(Record.id).filter(Record.verdict == "OK", ~Record.excluded).label("ok"),
                    func.count(Record.id).filter(~Record.excluded).label("included"),
                    func.count(Record.id).filter(~Record.excluded, Record.verified_at.is_not(None)).label("checked"),
                    func.min(Record.verified_at).filter(~Record.excluded).label("oldest_check"),
                )
                .outerjoin(Record, Record.set_id == AlmaSet.id)
                .group_by(AlmaSet.id)
            )
        }
    rows = []
    for s in summaries:
        e = extra.get(s.set)
        if e is None:  # registered between the two reads
            continue
        complete = e.included > 0 and e.checked == e.included
        rows.append(
            SetRow(summary=s, verified=e.ok, updated_at=e.updated_at, last_checked=e.oldest_check if complete else None)
        )
    return rows
