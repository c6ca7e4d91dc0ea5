"""Deciding a set's next action (``plan_step``) and establishing the facts its transition's guards read
(``step_facts``): one place, used by ``advance``, the scheduler and the dry run alike."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from orchestrator.config import Config
from orchestrator.display import utc_stamp
from orchestrator.domain.attention import Attention, stops
from orchestrator.domain.handles import VERIFIED_VALUES
from orchestrator.domain.jobrules import LONGEST_POLL_SECONDS, poll_due, run_ok
from orchestrator.domain.steps import Stage, Step, StepFacts, next_step
from orchestrator.service import preflight
from orchestrator.service.actions.base import Action, Plan
from orchestrator.service.verification import settle_at
from orchestrator.store.ledger import latest_attempt
from orchestrator.store.models import AlmaSet, Attempt, AttemptState, IntegrationBatch, Record

MAX_POLL_WAIT_SECONDS = LONGEST_POLL_SECONDS


def finished_ok(attempt: Attempt) -> bool:
    """The attempt's run finished well (:func:`orchestrator.domain.jobrules.run_ok`)."""
    return run_ok(attempt.status, attempt.counters)


def poll_due_at(attempt: Attempt, now: datetime) -> datetime:
    """When the attempt's next poll is due: as scheduled, or now if that is further away than the interval
    it was scheduled with (the clock was stepped back: polling now reschedules in the new time)."""
    return poll_due(attempt.next_poll_at, attempt.poll_interval, now, MAX_POLL_WAIT_SECONDS)


def plan_step(config: Config, session: Session, row: AlmaSet, now: datetime, prechecked: set[Step]) -> Plan:
    """The set's next action at ``now``; ``prechecked``: the steps whose precheck this drive has done."""
    if row.stage is Stage.VERIFIED:
        return Plan(Action.DONE)
    if row.attention and stops(row.attention_kind):
        return Plan(Action.ATTENTION, reason=row.attention)
    step = next_step(row.stage)
    assert step is not None
    if row.wait_until is not None and row.wait_until > now and row.waiting:
        person = waits_for_a_person(session, row, step)
        return Plan(Action.WAIT, step=step, wake_at=row.wait_until, reason=row.waiting, person=person)
    if step is Step.VERIFY:
        settled_at = settle_at(session, row, config, row.updated_at)
        if settled_at > now:
            return Plan(
                Action.WAIT,
                step=step,
                wake_at=settled_at,
                reason=f"settling: verification starts at {utc_stamp(settled_at)} "
                f"({config.handles.settle_minutes:g} min after the integration run)",
            )
        return Plan(Action.VERIFY, step=step)
    attempt = latest_attempt(session, row.id, step)
    if (
        attempt is None
        or attempt.state is AttemptState.ABANDONED
        or (attempt.state is AttemptState.FINISHED and not finished_ok(attempt))
    ):
        # A failed attempt reaches here only after `hwf retry` cleared the attention.
        return _first(config, step, prechecked)
    if attempt.batch_id is not None or attempt.state is AttemptState.QUEUED:
        return _batched(attempt, step, now)
    if attempt.state is AttemptState.SUBMITTING:
        return Plan(Action.RECONCILE, step=step, attempt_id=attempt.id)
    if attempt.state is AttemptState.WAITING_OPERATOR:
        due = attempt.next_poll_at
        if due is not None and due > now:
            reason = row.attention or row.waiting or f"needs a person: the {step.value} job run by hand"
            return Plan(Action.WAIT, step=step, attempt_id=attempt.id, wake_at=due, reason=reason, person=True)
        return Plan(Action.MANUAL, step=step, attempt_id=attempt.id)
    if attempt.state is AttemptState.SUBMITTED:
        due = poll_due_at(attempt, now)
        if due > now:
            return Plan(
                Action.WAIT,
                step=step,
                attempt_id=attempt.id,
                wake_at=due,
                reason=f"{step.value} job {attempt.job_id} instance {attempt.instance_id} is "
                f"{(attempt.status or 'submitted').lower()}",
            )
        return Plan(Action.POLL, step=step, attempt_id=attempt.id)
    return Plan(Action.FIRE, step=step, attempt_id=attempt.id)


def waits_for_a_person(session: Session, row: AlmaSet, step: Step) -> bool:
    """The set's step waits for a person's run in Alma (a step run by hand, an integration batch to press Run
    on): hwf looks for the run now and then, but nothing moves until the person acts."""
    if row.attention_kind == Attention.MANUAL_STEP:
        return True
    attempt = latest_attempt(session, row.id, step)
    if attempt is not None and attempt.state is AttemptState.QUEUED:
        return clicks_awaited(session)  # queued behind a batch that waits for its click
    if attempt is None or attempt.state is not AttemptState.WAITING_OPERATOR:
        return False
    if attempt.batch_id is not None:  # a person's run is going on: hwf watches it, the person has done their part
        batch = session.get(IntegrationBatch, attempt.batch_id)
        return batch is None or not batch.watching
    return True


def clicks_awaited(session: Session) -> bool:
    """An integration batch waits for a person's click (announced, and no run of a person's is being watched):
    the queue behind it cannot form the next batch until then."""
    return (
        session.scalar(
            select(IntegrationBatch.id).where(
                IntegrationBatch.state == "announced", IntegrationBatch.watching.is_(None)
            )
        )
        is not None
    )


def _first(config: Config, step: Step, prechecked: set[Step]) -> Plan:
    """The first action of a step no run of which counts yet: its precheck, then its job (by hwf or a person)."""
    if step.spec.prechecks and step not in prechecked:
        return Plan(Action.PRECHECK, step=step)
    if step is Step.INTEGRATE and config.alma.handle_integration_mode == "manual":
        return Plan(Action.BATCH, step=step)
    assert step.job_key is not None
    if config.alma.jobs[step.job_key].manual:
        return Plan(Action.MANUAL, step=step)
    return Plan(Action.SUBMIT, step=step)


def _batched(attempt: Attempt, step: Step, now: datetime) -> Plan:
    """An integration in a batch: a finished batch's run is the step's (fire); otherwise the batch's work (form
    it, make its Alma set, find the person's run, poll it) when it is due."""
    if attempt.state is AttemptState.FINISHED:
        return Plan(Action.FIRE, step=step, attempt_id=attempt.id)
    due = attempt.next_poll_at
    if due is not None and due > now:
        return Plan(Action.WAIT, step=step, attempt_id=attempt.id, wake_at=due, reason="integration batch")
    return Plan(Action.BATCH, step=step, attempt_id=attempt.id)


def step_facts(config: Config, session: Session, row: AlmaSet, step: Step, now: datetime) -> StepFacts:
    """What the guards of ``step``'s transition read, established from the database at ``now``."""
    if step is Step.VERIFY:
        settled = settle_at(session, row, config, now) <= now
        not_ok = session.scalar(
            select(func.count())
            .select_from(Record)
            .where(Record.set_id == row.id, Record.excluded.is_(False))
            .where((Record.verdict.is_(None)) | (Record.verdict.not_in(VERIFIED_VALUES)))
        )
        return StepFacts(settled=settled, all_verified=not not_ok)
    attempt = latest_attempt(session, row.id, step)
    job_ok = attempt is not None and (
        attempt.state is AttemptState.NOT_NEEDED or (attempt.state is AttemptState.FINISHED and finished_ok(attempt))
    )
    return StepFacts(job_ok=job_ok, records_ready=preflight.records_ready(session, row, step))
