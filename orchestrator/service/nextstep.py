"""What happens next, and when: one answer per set and one for the whole migration, computed here once and
shown everywhere (``hwf status``, ``hwf overview``, the worker's lines and its status row, the dashboard).

A set's next thing is its own next job start and the hourly window that holds it (``migrate: 5 of 5 runs this
hour, 3rd in line`` starts when the window lets the third run in), the next poll of its running job, the
moment it settles for verification, a wait it recorded (an outage, Alma's threshold), or ``needs a person``.
The rules are those the scheduler acts on: the order it drives sets in (oldest first), Alma's limits as
:class:`~orchestrator.service.actions.gate.JobSlots` counts them, the hourly window, the poll schedule and the
settle time as :mod:`orchestrator.domain.jobrules` writes them.

``what`` never carries a time: ``at`` does (None when nothing is scheduled: a person must act, or nothing is
left), and each view writes it in its reader's zone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from orchestrator.config import Config
from orchestrator.display import iso_z
from orchestrator.domain.attention import next_command, stops
from orchestrator.domain.jobrules import LONGEST_POLL_SECONDS, poll_due, run_ok, settle_until, window_starts
from orchestrator.domain.steps import Stage, Step, next_step
from orchestrator.domain.wording import plural
from orchestrator.service import views
from orchestrator.service.actions.gate import SLOT_WAIT, JobSlots
from orchestrator.service.context import Context
from orchestrator.store.models import AlmaSet, Attempt, AttemptState, IntegrationBatch, Record

PERSON = "needs a person"


@dataclass(frozen=True)
class Next:
    """What happens next and when (``at``; None: nothing is scheduled). ``when`` is the word a view puts
    before the time (``starts``, ``next poll``); ``kind`` says what is waited for (the worker speaks when it
    changes); ``person``: nothing moves until a person acts."""

    at: datetime | None
    what: str
    when: str = ""
    kind: str = ""
    person: bool = False

    def as_json(self) -> dict[str, Any]:
        return {"at": iso_z(self.at), "what": self.what}


def ordinal(n: int) -> str:
    """``1st``, ``2nd``, ``3rd``, ``4th``, ``11th``, ``22nd``."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def per_set(session: Session, config: Config, now: datetime, only: re.Pattern[str] | None = None) -> dict[str, Next]:
    """Every set's next thing (by Alma set id), in one short read."""
    core = session.connection()  # plain rows through Core: no ORM row processing for 10,000 sets
    sets = core.execute(
        select(
            AlmaSet.id,
            AlmaSet.alma_set_id,
            AlmaSet.name,
            AlmaSet.stage.label("stage"),
            AlmaSet.attention,
            AlmaSet.attention_kind,
            AlmaSet.waiting,
            AlmaSet.wait_until,
            AlmaSet.updated_at,
        ).order_by(AlmaSet.created_at, AlmaSet.id)  # the scheduler's order: oldest first
    ).all()
    if only is not None:
        sets = [s for s in sets if only.search(s.name)]
    newest = select(func.max(Attempt.id)).group_by(Attempt.set_id)
    latest = {  # plain columns, not ORM objects: 10,000 sets stay quick
        a.set_id: a
        for a in core.execute(
            select(
                Attempt.set_id,
                Attempt.step,
                Attempt.state,
                Attempt.status,
                Attempt.progress,
                Attempt.counters,
                Attempt.next_poll_at,
                Attempt.poll_interval,
                Attempt.batch_id,
                Attempt.ended_at,
            ).where(Attempt.id.in_(newest.scalar_subquery()))
        )
    }
    no_copy = set(
        session.scalars(
            select(Record.set_id)
            .where(Record.set_id.in_(select(AlmaSet.id).where(AlmaSet.stage == Stage.CREATED)))
            .group_by(Record.set_id)
            .having(
                func.count().filter(Record.preflight.is_not(None)) > 0,
                func.count().filter(Record.preflight == "NEEDS_COPY", ~Record.excluded) == 0,
            )
        )
    )
    slots = JobSlots.of(session, now, config.alma)
    # Integration batches that wait for a person's click: announced, and no run of a person's watched yet (the
    # scheduler's rule, ``plan.clicks_awaited``); the sets queued behind them wait for the same click.
    clicks = dict(
        core.execute(
            select(IntegrationBatch.id, IntegrationBatch.number).where(
                IntegrationBatch.state == "announced", IntegrationBatch.watching.is_(None)
            )
        ).all()
    )
    out: dict[str, Next] = {}
    queues: dict[str, list[tuple[str, Step, datetime | None]]] = {}  # job id -> the sets in line for it, in order
    for s in sets:
        step, decided = _own(config, s, latest.get(s.id), now, clicks)
        if decided is not None:
            out[s.alma_set_id] = decided
            continue
        assert step is not None
        if step is Step.COPY_IDENTIFIERS and s.id in no_copy:
            step = Step.MIGRATE  # no record needs the copy job: it is skipped, the migration is next
        assert step.job_key is not None
        job = config.alma.jobs[step.job_key]
        if job.manual:
            out[s.alma_set_id] = Next(None, f"{PERSON}: run the {step.value} job in Alma", kind=PERSON, person=True)
        elif step is Step.INTEGRATE and config.alma.handle_integration_mode == "manual":
            out[s.alma_set_id] = Next(now, "joins the next integration batch", "now", kind="batch")
        else:
            queues.setdefault(job.id, []).append((s.alma_set_id, step, s.wait_until))
    for job_id, line in queues.items():
        out.update(_in_line(slots, job_id, line, now))
    return out


def _own(config: Config, s: Any, a: Any, now: datetime, clicks: dict[int, int]) -> tuple[Step | None, Next | None]:
    """The set's next thing when it is its own (verified, a person, a running job, a recorded wait, settling);
    else the step whose job it waits in line for."""
    if s.stage is Stage.VERIFIED:
        return None, Next(None, "verified", kind="done")
    if s.attention and stops(s.attention_kind):
        return None, Next(None, f"{PERSON}: {next_command(s.attention_kind, s.alma_set_id)}", kind=PERSON, person=True)
    step = next_step(s.stage)
    assert step is not None
    if s.waiting and s.wait_until is not None and s.wait_until > now and not s.waiting.startswith(SLOT_WAIT):
        if s.waiting.startswith(PERSON):  # hwf looks again now and then, but only a person moves it
            return step, Next(None, s.waiting, kind=PERSON, person=True)
        return step, Next(s.wait_until, s.waiting, "until", kind="wait")
    if step is Step.VERIFY:
        ended = a.ended_at if a is not None and a.step == Step.INTEGRATE.value and a.ended_at else s.updated_at
        settled = settle_until(ended, config.handles.settle_minutes)
        if settled > now:
            return step, Next(settled, "settling after the integration run", "verification starts", kind="settle")
        return step, Next(now, "verification", "starts now", kind="verify")
    if a is None or a.step != step.value:
        return step, None
    return step, _attempt(s, a, step, now, clicks)


def _attempt(s: Any, a: Any, step: Step, now: datetime, clicks: dict[int, int]) -> Next | None:
    if a.state is AttemptState.SUBMITTED:
        progress = f" {a.progress:.0f}%" if a.progress is not None else ""
        status = (a.status or "submitted").lower()
        return Next(
            poll_due(a.next_poll_at, a.poll_interval, now, LONGEST_POLL_SECONDS),
            f"{step.value} job running ({status}{progress})",
            "next poll",
            kind="poll",
        )
    if a.state is AttemptState.SUBMITTING:
        return Next(now, f"{step.value}: looking up a submission whose reply was lost", "now", kind="reconcile")
    if a.state is AttemptState.WAITING_OPERATOR and a.batch_id is None:
        why = s.attention or s.waiting or f"the {step.value} job run by hand in Alma"
        return Next(None, f"{PERSON}: {why}", kind=PERSON, person=True)
    if a.state is AttemptState.QUEUED or a.batch_id is not None:
        if a.state is AttemptState.FINISHED:
            return Next(now, f"{step.value}: the batch's run ended", "now", kind="batch")
        number = clicks.get(a.batch_id) if a.batch_id is not None else min(clicks.values(), default=None)
        if number is not None:
            what = f"{PERSON}: press Run on integration batch {number} in Alma (`hwf overview` shows the clicks)"
            return Next(None, what, kind=PERSON, person=True)
        return Next(a.next_poll_at or now, s.waiting or "integration batch", "looks again", kind="batch")
    if a.state is AttemptState.NOT_NEEDED or (a.state is AttemptState.FINISHED and run_ok(a.status, a.counters)):
        return Next(now, f"{step.value} done: the next step starts", "now", kind="fire")
    return None  # never run, abandoned, or failed and retried: in line for the job


def _in_line(
    slots: JobSlots, job_id: str, line: list[tuple[str, Step, datetime | None]], now: datetime
) -> dict[str, Next]:
    """When each set in line for ``job_id`` starts it: in the scheduler's order, at the first moment the hourly
    window allows (as the gate frees it) and the set's own recorded wait has passed, and not before a running
    job ends while Alma runs as many jobs as it allows."""
    window = list(slots.recent.get(job_id, []))
    used = len([t for t in window if t >= now - timedelta(hours=1)])
    full = slots.running >= slots.max_running
    out = {}
    for i, (alma_id, step, not_before) in enumerate(line):
        ready = max(now, not_before or now)
        at = window_starts(slots.per_hour, window, ready, 1)[0]
        window = sorted([*window, at])[-slots.per_hour :]  # only the last starts of a full window count
        place = f", {ordinal(i + 1)} in line" if i else ""
        if at > now:
            what = f"{step.value}: {used} of {slots.per_hour} this hour{place}"
            out[alma_id] = Next(at, what, "starts", kind="window")
        elif full:
            what = f"{step.value}: {slots.running} of {slots.max_running} Alma jobs running{place}"
            out[alma_id] = Next(slots.slot_may_free(now), what, "looks again", kind="slots")
        else:
            out[alma_id] = Next(now, f"{step.value} job{place.replace(',', ';')}", "starts now", kind="start")
    return out


def overall(nexts: dict[str, Next], names: dict[str, str]) -> Next:
    """The whole migration's earliest next thing (of ``nexts``, by set id; ``names``: set id -> name)."""
    timed = [(n.at, alma_id, n) for alma_id, n in nexts.items() if n.at is not None]
    if timed:
        at, alma_id, n = min(timed, key=lambda t: (t[0], t[1]))
        return Next(at, f"set {alma_id} ({names.get(alma_id, '')}): {n.what}", n.when, kind=n.kind)
    people = sum(1 for n in nexts.values() if n.person)
    if people:
        return Next(None, f"{PERSON}: {plural(people, 'set')} wait for someone to act", kind=PERSON, person=True)
    if nexts:
        return Next(None, "every set is verified", kind="done")
    return Next(None, "no sets registered yet", kind="empty")


def migration(session: Session, config: Config, now: datetime, only: re.Pattern[str] | None = None) -> Next:
    """The whole migration's earliest next thing (of the sets ``only`` matches)."""
    nexts = per_set(session, config, now, only)
    names = {row.alma_set_id: row.name for row in session.execute(select(AlmaSet.alma_set_id, AlmaSet.name))}
    return overall(nexts, names)


def status(ctx: Context, ref: str | None = None) -> list[views.SetSummary]:
    """Where each set stands (or one set), with what happens next to it and when (``views.status`` and
    ``next``)."""
    now = ctx.clock()
    return views.status(ctx, ref, nexts=lambda session: per_set(session, ctx.config, now))
