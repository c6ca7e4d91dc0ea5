"""Submitting, reconciling and polling Alma jobs: never two Alma jobs for one step (DESIGN.md §3).

1. The attempt row, with a unique token, is committed before the POST (state ``submitting``).
2. The POST carries the token in ``job_name``; on 200 the instance id is committed (``submitted``).
3. If the POST's outcome is unknown (timeout, reset, 5xx, or a crash found later in ``submitting``),
   the job's instances are listed and the token matched in the instance name. One match is adopted;
   none after a grace period lets a new attempt go; several set attention (never guess).
4. The instance is polled with a growing interval until a terminal status, which is recorded.
"""

from __future__ import annotations

import secrets
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from orchestrator.alma.types import GOOD_STATUSES, JobInstance
from orchestrator.config import JobSpec
from orchestrator.domain.jobrules import (
    SetMatch,
    exception_count,
    history_window,
    instance_window,
    job_name,
    match_instance,
    run_ok,
    submitted_by_api,
)
from orchestrator.domain.machine import Stage, Step
from orchestrator.errors import AlmaError, AlmaUnreachableError, BadInputError, JobThresholdError, LeaseHeldError
from orchestrator.service.context import Context, add_event, find_set, set_attention
from orchestrator.store.leases import holder, try_claim
from orchestrator.store.models import AlmaSet, Attempt, AttemptState, Event

MAX_POLL_WAIT_SECONDS = 300.0
UNKNOWN_INSTANCE_CODES = frozenset({"402218"})  # "Invalid job instance id"
INSTANCE_UNKNOWN = "instance_unknown"  # the attention kind: the instance a set waits on is gone from Alma
EARLIER_RUNS = "earlier_runs"  # the attention kind: several runs of a step hwf never submitted (a lost database)


RAW_REPLY_CAP = 1_000_000  # bytes of a finished job instance's reply kept as evidence


def finished_ok(attempt: Attempt) -> bool:
    """The attempt's run finished well (:func:`orchestrator.domain.jobrules.run_ok`)."""
    return run_ok(attempt.status, attempt.counters)


def describe_counters(counters: list[Any] | None) -> str:
    return ", ".join(f"{c.get('desc') or c.get('code')}: {c.get('value')}" for c in counters or []) or "no counters"


def next_attempt_number(session: Session, set_id: int, step: Step) -> int:
    """The number the set's next attempt at ``step`` gets (1 for the first)."""
    latest = session.scalar(
        select(func.max(Attempt.number)).where(Attempt.set_id == set_id, Attempt.step == step.value)
    )
    return int(latest or 0) + 1


def count_limits(session: Session, job_id: str, now: datetime) -> tuple[int, int]:
    """(API jobs hwf has running across every set, runs of ``job_id`` hwf started in the last hour)."""
    running = session.scalar(
        select(func.count())
        .select_from(Attempt)
        .where(Attempt.state.in_([AttemptState.SUBMITTING, AttemptState.SUBMITTED]), Attempt.job_id.is_not(None))
    )
    hour = session.scalar(
        select(func.count())
        .select_from(Attempt)
        .where(
            Attempt.job_id == job_id,
            Attempt.started_at >= now - timedelta(hours=1),
            Attempt.state.not_in([AttemptState.ABANDONED, AttemptState.NOT_NEEDED]),
        )
    )
    return int(running or 0), int(hour or 0)


def _wait(session: Session, row: AlmaSet, reason: str, until: datetime, now: datetime) -> None:
    if row.waiting != reason:
        add_event(session, row, "waiting", reason, at=now)
    row.waiting = reason
    row.wait_until = until


def submit(ctx: Context, set_id: int, step: Step) -> None:
    """Commit an attempt, then POST ``op=run`` once; record the instance id, or leave the attempt
    in ``submitting`` for reconciliation if the outcome is unknown."""
    key = step.job_key
    assert key is not None
    spec, cfg = ctx.config.alma.jobs[key], ctx.config.alma
    if _found_earlier_run(ctx, set_id, step, spec.id):
        return
    begun = _begin_attempt(ctx, set_id, step, spec)
    if begun is None:
        return
    template = spec.payload_file.read_bytes() if spec.payload_file else None
    params = [("set_id", begun.alma_set_id), ("job_name", begun.job_name), *spec.parameters]
    try:
        run = ctx.alma.run_job(spec.id, params, payload_template=template)
    except JobThresholdError as exc:
        wait = (f"waiting to submit {step.value}: Alma's job threshold ({exc.code})", cfg.threshold_wait_seconds)
        _record_refusal(ctx, set_id, begun.attempt_id, f"Alma refused to start the job now: {exc}", wait=wait)
    except AlmaUnreachableError as exc:
        lost = f"{step.value}: the reply to job {spec.id} was lost ({exc}); reconciling by token {begun.token}"
        _record_refusal(ctx, set_id, begun.attempt_id, f"outcome unknown: {exc}", abandon=False, lost=lost)
    except AlmaError as exc:
        attention = f"Alma refused to run the {step.value} job {spec.id}: {exc}"
        _record_refusal(ctx, set_id, begun.attempt_id, str(exc), attention=attention)
    else:
        _adopt(ctx, set_id, begun.attempt_id, run.instance_id, how="submitted", submit_time=None)
        ctx.reporter.note(begun.set_name, f"{step.value}: submitted job {spec.id}, instance {run.instance_id}")


def _found_earlier_run(ctx: Context, set_id: int, step: Step, job_id: str) -> bool:
    """Before the first submission of ``step`` on a set hwf has no attempt for (a new set, or a database
    lost and re-created), look in Alma's recent history of the job for a run on this set: adopt the one
    running or finished well, or stop with attention when there are several. True when the step must not
    be submitted now.

    :raises LeaseHeldError: this process lost the set's lease.
    """
    with ctx.sessions() as session:
        tried = session.scalar(
            select(func.count()).select_from(Attempt).where(Attempt.set_id == set_id, Attempt.step == step.value)
        )
        if tried:
            return False
        row = session.get_one(AlmaSet, set_id)
        alma_set_id, set_name = row.alma_set_id, row.name
        taken = set(session.scalars(select(Attempt.instance_id).where(Attempt.instance_id.is_not(None))))
        # Runs `add --adopt` already judged (and did not count) are not found again here.
        for data in session.scalars(select(Event.data).where(Event.set_id == set_id, Event.kind == "audit")):
            taken.update(str(run.get("instance_id")) for run in (data or {}).get("runs") or ())
    date_from, date_to = history_window(ctx.clock())
    found = [
        i
        for i in ctx.alma.list_instances(job_id, date_from=date_from, date_to=date_to)
        if i.id not in taken
        and match_instance(i, job_id, step, alma_set_id, set_name)[0] is SetMatch.THIS
        and (not i.terminal or run_ok(i.status, i.counters))
    ]
    if not found:
        return False
    now = ctx.clock()
    with ctx.sessions.begin() as session:
        row = session.get_one(AlmaSet, set_id)
        if not try_claim(session, set_id, ctx.owner, now, ctx.config.lease_seconds):
            owner, _ = holder(session, set_id)
            raise LeaseHeldError(f"lost the lease on set {alma_set_id} to {owner}; not adopting")
        if len(found) > 1:
            set_attention(
                session,
                row,
                EARLIER_RUNS,
                f"{step.value}: hwf has no attempt for this step, but Alma already ran job {job_id} on this set "
                f"{len(found)} times ({', '.join(i.id for i in found)}); hwf will not guess or run it again. "
                f"Check them in Alma (Monitor Jobs), then `hwf confirm {alma_set_id} --instance ID`",
                now,
            )
            return True
        inst = found[0]
        attempt = Attempt(
            set_id=set_id,
            step=step.value,
            number=next_attempt_number(session, set_id, step),
            token="found-" + secrets.token_hex(6),
            job_id=job_id,
            job_name=(inst.name or "")[:255] or None,
            instance_id=inst.id,
            state=AttemptState.SUBMITTED,
            started_at=inst.submit_time or now,
            submitted_at=inst.submit_time or now,
            poll_interval=ctx.config.alma.poll_interval_seconds,
            next_poll_at=now,
            note="found in Alma's job history before a first submission; not submitted again",
        )
        session.add(attempt)
        add_event(
            session,
            row,
            "reconciled",
            f"{step.value}: job {job_id} already ran on this set (instance {inst.id}, {inst.status}, "
            f"name {inst.name!r}) although hwf had no attempt for it; adopted, not submitted again",
            at=now,
            actor=ctx.owner,
            job_id=job_id,
            instance_id=inst.id,
        )
    ctx.reporter.note(set_name, f"{step.value}: found an earlier run, instance {inst.id}; not submitting again")
    return True


@dataclass(frozen=True)
class _Begun:
    """The committed intent to submit: what the POST needs and what its outcome is recorded on."""

    attempt_id: int
    token: str
    job_name: str
    alma_set_id: str
    set_name: str


def _begin_attempt(ctx: Context, set_id: int, step: Step, spec: JobSpec) -> _Begun | None:
    """Commit the ``submitting`` attempt and its event, or record why the set must wait (None).

    :raises LeaseHeldError: this process lost the set's lease (submitting could start a second job).
    """
    cfg = ctx.config.alma
    now = ctx.clock()
    with ctx.sessions.begin() as session:
        row = session.get_one(AlmaSet, set_id)
        running, hour = count_limits(session, spec.id, now)
        if running >= cfg.max_running_jobs or hour >= cfg.max_runs_per_job_hour:
            why = (
                f"{running} API jobs running (Alma allows {cfg.max_running_jobs})"
                if running >= cfg.max_running_jobs
                else f"job {spec.id} ran {hour} times in the last hour (Alma allows {cfg.max_runs_per_job_hour})"
            )
            until = now + timedelta(seconds=min(cfg.threshold_wait_seconds, 60.0 if running else 600.0))
            _wait(session, row, f"waiting to submit {step.value}: {why}", until, now)
            return None
        if not try_claim(session, set_id, ctx.owner, now, ctx.config.lease_seconds):
            # This process was suspended past its lease and another took the set over: submitting now
            # could start a second job for the step. The check and the attempt commit together.
            owner, _ = holder(session, set_id)
            raise LeaseHeldError(f"lost the lease on set {row.alma_set_id} to {owner}; not submitting")
        number = next_attempt_number(session, set_id, step)
        token = "hwf-" + secrets.token_hex(6)
        name = job_name(step, row.alma_set_id, token)
        attempt = Attempt(
            set_id=set_id,
            step=step.value,
            number=number,
            token=token,
            job_id=spec.id,
            job_name=name,
            state=AttemptState.SUBMITTING,
            started_at=now,
        )
        session.add(attempt)
        row.waiting = None
        row.wait_until = None
        add_event(
            session,
            row,
            "submitting",
            f"{step.value}: submitting job {spec.id} (attempt {number}, token {token})",
            at=now,
            actor=ctx.owner,
            job_id=spec.id,
            token=token,
            attempt=number,
        )
        session.flush()
        return _Begun(attempt.id, token, name, row.alma_set_id, row.name)


def _record_refusal(
    ctx: Context,
    set_id: int,
    attempt_id: int,
    note: str,
    *,
    abandon: bool = True,
    wait: tuple[str, float] | None = None,
    lost: str | None = None,
    attention: str | None = None,
) -> None:
    """Record, in one transaction, what became of an attempt whose POST returned no instance: abandoned
    (Alma refused it: wait, or attention), or left ``submitting`` for reconciliation (the reply was lost)."""
    later = ctx.clock()
    with ctx.sessions.begin() as session:
        row = session.get_one(AlmaSet, set_id)
        attempt = session.get_one(Attempt, attempt_id)
        attempt.note = note
        if abandon:
            attempt.state = AttemptState.ABANDONED
        if wait is not None:
            _wait(session, row, wait[0], later + timedelta(seconds=wait[1]), later)
        if lost is not None:
            add_event(session, row, "submit_unknown", lost, at=later, job_id=attempt.job_id, token=attempt.token)
        if attention is not None:
            set_attention(session, row, "job", attention, later)


def _adopt(
    ctx: Context, set_id: int, attempt_id: int, instance_id: str, *, how: str, submit_time: datetime | None
) -> None:
    now = ctx.clock()
    with ctx.sessions.begin() as session:
        row = session.get_one(AlmaSet, set_id)
        attempt = session.get_one(Attempt, attempt_id)
        attempt.instance_id = instance_id
        attempt.state = AttemptState.SUBMITTED
        attempt.submitted_at = submit_time or now
        attempt.poll_interval = ctx.config.alma.poll_interval_seconds
        attempt.next_poll_at = now + timedelta(seconds=ctx.config.alma.poll_interval_seconds)
        row.waiting = None
        row.wait_until = None
        detail = {
            "submitted": f"{attempt.step}: job {attempt.job_id} submitted, instance {instance_id}",
            "reconciled": f"{attempt.step}: found the lost submission: job {attempt.job_id} instance {instance_id} "
            f"carries token {attempt.token}; adopted, not resubmitted",
            "fallback": f"{attempt.step}: adopted job {attempt.job_id} instance {instance_id} "
            "(submitted by the API after this attempt, for this set; the token was not echoed)",
            "operator": f"{attempt.step}: adopted the operator's run, job {attempt.job_id} instance {instance_id}",
        }[how]
        add_event(
            session,
            row,
            "submitted" if how == "submitted" else "reconciled",
            detail,
            at=now,
            actor=ctx.owner,
            job_id=attempt.job_id,
            instance_id=instance_id,
            token=attempt.token,
            attempt=attempt.number,
        )


def reconcile(ctx: Context, set_id: int, attempt_id: int) -> None:
    """Find the instance a lost POST may have created; adopt it, wait, abandon, or set attention."""
    with ctx.sessions.begin() as session:
        row = session.get_one(AlmaSet, set_id)
        attempt = session.get_one(Attempt, attempt_id)
        job_id, token, started = attempt.job_id, attempt.token, attempt.started_at
        alma_set_id, set_name, step = row.alma_set_id, row.name, Step(attempt.step)
        taken = set(
            session.scalars(
                select(Attempt.instance_id).where(Attempt.job_id == job_id, Attempt.instance_id.is_not(None))
            )
        )
    assert job_id is not None
    now = ctx.clock()
    date_from, date_to = instance_window(started, now)
    instances = list(ctx.alma.list_instances(job_id, date_from=date_from, date_to=date_to))
    matches = [
        i
        for i in instances
        if token in (i.name or "")
        and i.id not in taken
        and match_instance(i, job_id, step, alma_set_id, set_name)[0] is not SetMatch.OTHER
    ]
    how = "reconciled"
    if not matches:
        how = "fallback"
        earliest = started - timedelta(minutes=2)
        matches = [
            i
            for i in instances
            if i.id not in taken
            and submitted_by_api(i.submitted_by)
            and i.submit_time is not None
            and i.submit_time >= earliest
            and match_instance(i, job_id, step, alma_set_id, set_name)[0] is SetMatch.THIS
        ]
    if len(matches) == 1:
        _adopt(ctx, set_id, attempt_id, matches[0].id, how=how, submit_time=matches[0].submit_time)
        ctx.reporter.note(set_name, f"found lost submission: instance {matches[0].id} (not resubmitted)")
        return
    now = ctx.clock()
    with ctx.sessions.begin() as session:
        row = session.get_one(AlmaSet, set_id)
        attempt = session.get_one(Attempt, attempt_id)
        if len(matches) > 1:
            ids = ", ".join(i.id for i in matches)
            set_attention(
                session,
                row,
                "reconcile",
                f"{attempt.step}: {len(matches)} instances of job {job_id} could be attempt {attempt.number} "
                f"({ids}); hwf will not guess. Check them in Alma (Monitor Jobs), abort extras, then "
                f"`hwf confirm {alma_set_id} --instance ID`",
                now,
            )
            return
        elapsed = (now - started).total_seconds()
        grace = ctx.config.alma.reconcile_grace_seconds
        if elapsed < grace:
            until = now + timedelta(seconds=max(1.0, min(grace - elapsed, 15.0)))
            _wait(
                session,
                row,
                f"{attempt.step}: looking for the submission with token {token} in Alma's job list",
                until,
                now,
            )
            return
        attempt.state = AttemptState.ABANDONED
        attempt.note = f"no instance of job {job_id} carries token {token} after {elapsed:.0f} s"
        add_event(
            session,
            row,
            "abandoned",
            f"{attempt.step}: attempt {attempt.number} never reached Alma (no instance with token {token} "
            f"after {elapsed:.0f} s); a new attempt may be submitted",
            at=now,
            job_id=job_id,
            token=token,
        )


def poll_due_at(attempt: Attempt, now: datetime) -> datetime:
    """When the attempt's next poll is due: as scheduled, or now if that is further away than the interval
    it was scheduled with (the clock was stepped back: polling now reschedules in the new time)."""
    due = attempt.next_poll_at or now
    if due > now + timedelta(seconds=attempt.poll_interval or MAX_POLL_WAIT_SECONDS):
        return now
    return due


def poll(ctx: Context, set_id: int, attempt_id: int) -> None:
    """Read the instance once; record progress or the terminal result; schedule the next poll."""
    with ctx.sessions.begin() as session:
        attempt = session.get_one(Attempt, attempt_id)
        job_id, instance_id = attempt.job_id, attempt.instance_id
        row = session.get_one(AlmaSet, set_id)
        set_name, step = row.name, attempt.step
        if job_id is None or instance_id is None:
            set_attention(
                session,
                row,
                "corrupt",
                f"{step}: attempt {attempt.number} is marked submitted but has no job or instance id; see `hwf doctor`",
                ctx.clock(),
            )
            return
    try:
        inst, body = ctx.alma.get_instance_reply(job_id, instance_id)
    except AlmaError as exc:
        if exc.status != 400 or exc.code not in UNKNOWN_INSTANCE_CODES:
            raise
        with ctx.sessions.begin() as session:
            row = session.get_one(AlmaSet, set_id)
            set_attention(
                session,
                row,
                INSTANCE_UNKNOWN,
                f"{step}: Alma no longer knows job {job_id} instance {instance_id} ({exc.code}). Look for the run "
                f"in Monitor Jobs: if it ran under another id, `hwf confirm {row.alma_set_id} --instance ID`; "
                f"if it never ran, `hwf retry {row.alma_set_id} --reason TEXT` submits the step again",
                ctx.clock(),
            )
        return
    _record_instance(ctx, set_id, attempt_id, inst, body)
    ctx.reporter.job_progress(set_name, step, inst)


def _record_instance(ctx: Context, set_id: int, attempt_id: int, inst: JobInstance, body: bytes | None = None) -> None:
    now = ctx.clock()
    with ctx.sessions.begin() as session:
        row = session.get_one(AlmaSet, set_id)
        attempt = session.get_one(Attempt, attempt_id)
        attempt.status = inst.status
        attempt.progress = inst.progress
        attempt.counters = [asdict(c) for c in inst.counters]
        attempt.alerts = [asdict(a) for a in inst.alerts]
        if not inst.terminal:
            interval = min((attempt.poll_interval or 1.0) * 1.5, ctx.config.alma.poll_max_interval_seconds)
            attempt.poll_interval = interval
            attempt.next_poll_at = now + timedelta(seconds=interval)
            return
        attempt.state = AttemptState.FINISHED
        attempt.finished_at = now
        if body is not None:  # the instance as Alma returned it, for `hwf evidence` (capped)
            attempt.raw_reply = body[:RAW_REPLY_CAP]
        desc = f" ({inst.status_desc})" if inst.status_desc else ""
        counters = describe_counters(attempt.counters)
        add_event(
            session,
            row,
            "job_finished",
            f"{attempt.step}: job {attempt.job_id} instance {inst.id} ended {inst.status}{desc}; {counters}",
            at=now,
            job_id=attempt.job_id,
            instance_id=inst.id,
            status=inst.status,
            counters=attempt.counters,
            alerts=attempt.alerts,
            alma_end_time=inst.end_time.isoformat() if inst.end_time else None,
        )
        if not finished_ok(attempt):
            exceptions = exception_count(attempt.counters)
            why = f"ended {inst.status}{desc}" if inst.status not in GOOD_STATUSES else f"had {exceptions} exceptions"
            set_attention(
                session,
                row,
                "job",
                f"{attempt.step} job {attempt.job_id} instance {inst.id} {why} ({counters}); "
                f"see the job report in Alma, fix the cause, then `hwf retry {row.alma_set_id} --reason TEXT`",
                now,
            )


def manual_integration(ctx: Context, set_id: int, attempt_id: int | None) -> None:
    """Manual mode: tell the operator what to click, then find their run among the job's instances."""
    spec = ctx.config.alma.jobs["handle_integration"]
    now = ctx.clock()
    if attempt_id is None:
        with ctx.sessions.begin() as session:
            row = session.get_one(AlmaSet, set_id)
            number = next_attempt_number(session, set_id, Step.INTEGRATE)
            session.add(
                Attempt(
                    set_id=set_id,
                    step=Step.INTEGRATE.value,
                    number=number,
                    token="hwf-" + secrets.token_hex(6),
                    job_id=spec.id,
                    state=AttemptState.WAITING_OPERATOR,
                    started_at=now,
                )
            )
            text = manual_instructions(row.name, row.alma_set_id)
            add_event(session, row, "operator_action", text, at=now)
            _wait(
                session,
                row,
                f"integrate: waiting for the operator to run the Handle integration profile on set {row.name!r} "
                f"(or `hwf confirm {row.alma_set_id} --instance ID`)",
                now + timedelta(seconds=ctx.config.alma.poll_interval_seconds),
                now,
            )
        ctx.reporter.note(row.name, text)
        return
    with ctx.sessions.begin() as session:
        row = session.get_one(AlmaSet, set_id)
        attempt = session.get_one(Attempt, attempt_id)
        started, alma_set_id, set_name = attempt.started_at, row.alma_set_id, row.name
        taken = set(
            session.scalars(
                select(Attempt.instance_id).where(Attempt.job_id == spec.id, Attempt.instance_id.is_not(None))
            )
        )
    date_from, date_to = instance_window(started, now)
    found = [
        i
        for i in ctx.alma.list_instances(spec.id, date_from=date_from, date_to=date_to)
        if i.id not in taken
        and i.submit_time is not None
        and i.submit_time >= started - timedelta(minutes=5)
        and match_instance(i, spec.id, Step.INTEGRATE, alma_set_id, set_name)[0] is SetMatch.THIS
    ]
    if len(found) == 1:
        _adopt(ctx, set_id, attempt_id, found[0].id, how="operator", submit_time=found[0].submit_time)
        return
    with ctx.sessions.begin() as session:
        row = session.get_one(AlmaSet, set_id)
        if len(found) > 1:
            set_attention(
                session,
                row,
                "reconcile",
                f"integrate: {len(found)} runs of job {spec.id} name this set ({', '.join(i.id for i in found)}); "
                f"pick one with `hwf confirm {alma_set_id} --instance ID`",
                now,
            )
            return
        row.wait_until = now + timedelta(seconds=ctx.config.alma.poll_interval_seconds)


def manual_instructions(set_name: str, set_id: str = "SET") -> str:
    return (
        "In Alma: Configuration > General > External Systems > Integration Profiles > the Handle profile > "
        f"Actions tab: Set name = {set_name!r}; Action = Create and Update; DC METADATA Upon Create = "
        "Do not add to metadata; press Run (not Save). hwf will find the run, or give it the Job ID from the "
        f"toast with `hwf confirm {set_id} --instance ID`."
    )


def confirm(ctx: Context, ref: str, instance_id: str, *, force: bool = False) -> str:
    """Adopt an instance the operator names for the set's waiting step (manual integration, an
    ambiguous reconciliation, an instance Alma no longer knows). The instance must be a run of the
    step's job, on this set, and not adopted by any other attempt; ``force`` adopts one whose reply
    names no set at all (recorded in the event).

    :raises BadInputError: no step is waiting, or the instance does not fit (what does not match is named).
    """
    instance_id = instance_id.strip()
    with ctx.sessions.begin() as session:
        row = find_set(session, ref)
        step = {Stage.CREATED: Step.COPY_IDENTIFIERS, Stage.IDENTIFIERS_COPIED: Step.MIGRATE}.get(
            row.stage, Step.INTEGRATE
        )
        attempt = session.scalar(
            select(Attempt).where(Attempt.set_id == row.id, Attempt.step == step.value).order_by(Attempt.number.desc())
        )
        if attempt is None and row.attention_kind == EARLIER_RUNS and step.job_key is not None:
            attempt = _operator_attempt(session, row.id, step, ctx.config.alma.jobs[step.job_key].id, ctx.clock())
        if (
            row.stage not in (Stage.CREATED, Stage.IDENTIFIERS_COPIED, Stage.MIGRATED)
            or attempt is None
            or (
                attempt.state not in (AttemptState.WAITING_OPERATOR, AttemptState.SUBMITTING)
                and not (attempt.state is AttemptState.SUBMITTED and row.attention_kind == INSTANCE_UNKNOWN)
            )
        ):
            raise BadInputError(f"set {row.alma_set_id} is not waiting for a job instance to be confirmed")
        set_id, attempt_id, job_id = row.id, attempt.id, attempt.job_id
        alma_set_id, set_name = row.alma_set_id, row.name
        taken = adopted_by(session, instance_id)
        if taken is not None:
            raise BadInputError(f"instance {instance_id} is already adopted by {taken}; it cannot be this set's too")
    assert job_id is not None
    try:
        inst = ctx.alma.get_instance(job_id, instance_id)
    except AlmaError as exc:
        if exc.status == 400 and exc.code in UNKNOWN_INSTANCE_CODES:
            raise BadInputError(
                f"Alma knows no instance {instance_id} of the {step.value} job {job_id} ({exc.code}): "
                "check the Job ID in Monitor Jobs"
            ) from None
        raise
    match, why = match_instance(inst, job_id, step, alma_set_id, set_name)
    if match is SetMatch.OTHER:
        raise BadInputError(f"instance {inst.id} is not set {alma_set_id}'s {step.value} run: {why}")
    forced = match is SetMatch.UNKNOWN
    if forced and not force:
        raise BadInputError(
            f"nothing ties instance {inst.id} to set {alma_set_id}: {why}. Check in Alma (Monitor Jobs) that "
            f"it ran on set {set_name!r}, then add --force"
        )
    with ctx.sessions.begin() as session:
        row = session.get_one(AlmaSet, set_id)
        row.attention = None
        row.attention_kind = None
        text = f"operator confirmed instance {inst.id} of job {job_id} for {step.value}: " + (
            f"forced (--force): {why}" if forced else why
        )
        add_event(session, row, "confirm", text, at=ctx.clock(), actor=ctx.owner, instance_id=inst.id, forced=forced)
    _adopt(ctx, set_id, attempt_id, inst.id, how="operator", submit_time=inst.submit_time)
    return f"adopted job {job_id} instance {inst.id} ({inst.status}) for set {ref}" + (" (forced)" if forced else "")


def _operator_attempt(session: Session, set_id: int, step: Step, job_id: str, now: datetime) -> Attempt:
    """The attempt an operator's pick among several earlier runs is recorded on (nothing is submitted)."""
    attempt = Attempt(
        set_id=set_id,
        step=step.value,
        number=next_attempt_number(session, set_id, step),
        token="hwf-" + secrets.token_hex(6),
        job_id=job_id,
        state=AttemptState.WAITING_OPERATOR,
        started_at=now,
    )
    session.add(attempt)
    session.flush()
    return attempt


def adopted_by(session: Session, instance_id: str) -> str | None:
    """Which set and step already adopted ``instance_id`` (``"set 123's migrate attempt 1"``), or None."""
    found = session.execute(
        select(AlmaSet.alma_set_id, Attempt.step, Attempt.number)
        .join(AlmaSet, AlmaSet.id == Attempt.set_id)
        .where(Attempt.instance_id == instance_id)
    ).first()
    if found is None:
        return None
    return f"set {found[0]}'s {found[1]} attempt {found[2]}"
