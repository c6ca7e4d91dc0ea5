"""Submitting a step's Alma job: never two Alma jobs for one step.

``POST /conf/jobs/{id}?op=run`` has no idempotency key, so:

1. the attempt row, with a unique token, is committed before the POST (state ``submitting``);
2. the POST carries the token in ``job_name``; on a 200 with an instance link the instance id is committed
   (``submitted``), and from then on the run is polled;
3. when the POST's outcome is unknown (timeout, reset, 5xx, or a crash found later in ``submitting``) the
   attempt stays ``submitting`` and is reconciled by its token (``reconcile`` room), never sent again blindly.

Before the first submission of a step on a set hwf has no attempt for (a new set, or a database lost and made
again), Alma's recent history of the job is read: a run already on this set is adopted instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from sqlalchemy import func, select

from orchestrator.domain.attention import Attention
from orchestrator.domain.jobrules import (
    CANNOT_RUN_BY_API,
    SetMatch,
    history_window,
    job_name,
    match_instance,
    names_set,
    poll_schedule,
    run_ok,
)
from orchestrator.domain.steps import Step
from orchestrator.errors import AlmaBadReplyError, AlmaError, AlmaUnreachableError, JobThresholdError, LeaseHeldError
from orchestrator.pacing import LONGEST_SET_WAIT_SECONDS
from orchestrator.service.actions.base import Plan, PlannedAction, PlannedRequest, Preview, Scene, job_transition
from orchestrator.service.actions.base import shown_path as _path
from orchestrator.service.actions.gate import JobSlots
from orchestrator.service.actions.instances import adopt_instance, taken_instances
from orchestrator.service.actions.manual import announce
from orchestrator.service.membership import stop_on_drift
from orchestrator.store.leases import holder, try_claim
from orchestrator.store.ledger import Ledger, new_token
from orchestrator.store.models import AlmaSet, Attempt, AttemptState, Event

if TYPE_CHECKING:
    from orchestrator.config import JobSpec
    from orchestrator.service.context import Context

TOKEN_PLACEHOLDER = "hwf-<token>"
INSTANCE_PLACEHOLDER = "<instance id>"


@dataclass(frozen=True)
class _Begun:
    """The committed intent to submit: what the POST needs and what its outcome is recorded on."""

    attempt_id: int
    token: str
    job_name: str
    alma_set_id: str
    set_name: str


class Submit:
    """Run the step's job in Alma, once."""

    def run(self, ctx: Context, set_id: int, plan: Plan) -> None:
        step = plan.step
        assert step is not None and step.job_key is not None
        spec, cfg = ctx.config.alma.jobs[step.job_key], ctx.config.alma
        if _found_earlier_run(ctx, set_id, step, spec.id):
            return
        if _must_wait(ctx, set_id, step, spec.id):
            return
        if stop_on_drift(ctx, set_id, f"submitting the {step.value} job"):
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
        except AlmaBadReplyError as exc:
            # Alma answered 200 but hwf cannot read which run it started: it may have started one. An unknown
            # outcome, reconciled by token like a lost reply; never a refusal (that would invite a second run).
            lost = (
                f"{step.value}: the reply to job {spec.id} cannot be read ({exc}); reconciling by token {begun.token}"
            )
            _record_refusal(ctx, set_id, begun.attempt_id, f"outcome unknown: {exc}", abandon=False, lost=lost)
        except AlmaUnreachableError as exc:
            lost = f"{step.value}: the reply to job {spec.id} was lost ({exc}); reconciling by token {begun.token}"
            later = _told_to_wait(step, exc)
            _record_refusal(
                ctx, set_id, begun.attempt_id, f"outcome unknown: {exc}", abandon=False, lost=lost, wait=later
            )
        except AlmaError as exc:
            if exc.code in CANNOT_RUN_BY_API:
                _record_refusal(ctx, set_id, begun.attempt_id, f"Alma will not run it through the API: {exc}")
                announce(ctx, set_id, step, refused=exc)
                return
            attention = f"Alma refused to run the {step.value} job {spec.id}: {exc}"
            _record_refusal(ctx, set_id, begun.attempt_id, str(exc), attention=attention)
        else:
            adopt_instance(ctx, set_id, begun.attempt_id, run.instance_id, how="submitted", alma_submitted=None)
            ctx.reporter.note(begun.set_name, f"{step.value}: submitted job {spec.id}, instance {run.instance_id}")

    def describe(self, scene: Scene, plan: Plan, when: str) -> Preview:
        step = plan.step
        assert step is not None and step.job_key is not None
        cfg, row = scene.ctx.config.alma, scene.row
        spec = cfg.jobs[step.job_key]
        slots = JobSlots.of(scene.session, scene.now, cfg)
        refused = slots.refusal(step, spec.id, scene.now)
        if refused is not None:
            return Preview((PlannedAction(when, "wait", f"{refused[0]}; nothing is sent yet"),), job_transition(step))
        name = job_name(step, row.alma_set_id, TOKEN_PLACEHOLDER)
        params = [("set_id", row.alma_set_id), ("job_name", name), *spec.parameters]
        template = spec.payload_file.read_bytes() if spec.payload_file else None
        submit = PlannedRequest.of(
            scene.alma.run_job_request(spec.id, params, payload_template=template),
            note=f"{TOKEN_PLACEHOLDER} is a new random token, committed with the attempt before the POST",
        )
        first: tuple[str, ...] = ()
        if not _tried(scene, step):
            date_from, date_to = history_window(scene.now)
            listing = scene.alma.instances_request(spec.id, date_from=date_from, date_to=date_to)
            first = (
                f"first, as hwf has no attempt for this step yet, GET {_path(listing)}: a run already on this set "
                "(a lost database) is adopted instead of submitting",
            )
        notes = (
            *first,
            "if the reply is lost, hwf does not resubmit: it looks for the token in the job's instances",
            f"then polls GET {_path(scene.alma.instance_request(spec.id, INSTANCE_PLACEHOLDER))} "
            f"{poll_schedule(cfg.poll_interval_seconds, cfg.poll_max_interval_seconds)}, until the job ends",
        )
        summary = f"submit {step.value}: run job {spec.id} on set {row.alma_set_id} (once; never re-sent blindly)"
        return Preview((PlannedAction(when, "submit", summary, (submit,), notes),), job_transition(step))


def _told_to_wait(step: Step, exc: AlmaError) -> tuple[str, float] | None:
    """Alma's reply asked (``Retry-After``) for a longer wait than hwf takes in place: the set waits that long
    (at most ``LONGEST_SET_WAIT_SECONDS``) before it reconciles."""
    if exc.retry_after is None:
        return None
    reason = f"{step.value}: Alma asked to wait {exc.retry_after:.0f} s (Retry-After) before reconciling"
    return reason, min(exc.retry_after, LONGEST_SET_WAIT_SECONDS)


def _tried(scene: Scene, step: Step) -> bool:
    return bool(
        scene.session.scalar(
            select(func.count()).select_from(Attempt).where(Attempt.set_id == scene.row.id, Attempt.step == step.value)
        )
    )


def _claim_or_raise(ctx: Context, book: Ledger, row: AlmaSet, doing: str) -> None:
    """Renew the set's lease in this transaction. :raises LeaseHeldError: another process took the set over
    (this one was suspended past its lease): going on could start a second job for the step."""
    if not try_claim(book.session, row.id, ctx.owner, book.now, ctx.config.lease_seconds):
        owner, _ = holder(book.session, row.id)
        raise LeaseHeldError(f"lost the lease on set {row.alma_set_id} to {owner}; not {doing}")


def _found_earlier_run(ctx: Context, set_id: int, step: Step, job_id: str) -> bool:
    """Before the first submission of ``step`` on a set hwf has no attempt for, look in Alma's recent history
    of the job for a run on this set: adopt the one running or finished well, or stop with attention when
    there are several. True when the step must not be submitted now.

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
        taken = taken_instances(session)
        # Runs `add --adopt` already judged (and did not count) are not found again here.
        for data in session.scalars(select(Event.data).where(Event.set_id == set_id, Event.kind == "audit")):
            taken.update(str(run.get("instance_id")) for run in (data or {}).get("runs") or ())
    date_from, date_to = history_window(ctx.clock())
    found = [
        i
        for i in ctx.alma.list_instances(
            job_id, date_from=date_from, date_to=date_to, wanted=lambda name: names_set(name, alma_set_id, set_name)
        )
        if i.id not in taken
        and match_instance(i, job_id, step, alma_set_id, set_name)[0] is SetMatch.THIS
        and (not i.terminal or run_ok(i.status, i.counters))
    ]
    if not found:
        return False
    with ctx.ledger() as book:
        row = book.set(set_id)
        _claim_or_raise(ctx, book, row, "adopting")
        if len(found) > 1:
            book.attention(
                row,
                Attention.EARLIER_RUNS,
                f"{step.value}: hwf has no attempt for this step, but Alma already ran job {job_id} on this set "
                f"{len(found)} times ({', '.join(i.id for i in found)}); hwf will not guess or run it again. "
                f"Check them in Alma (Monitor Jobs), then `hwf confirm {alma_set_id} --instance ID`",
            )
            return True
        inst = found[0]
        book.new_attempt(
            row,
            step,
            AttemptState.SUBMITTED,
            token=new_token("found"),
            origin="found",
            job_id=job_id,
            job_name=(inst.name or "")[:255] or None,
            instance_id=inst.id,
            submitted_at=book.now,
            alma_submitted_at=inst.submit_time,
            poll_interval=ctx.config.alma.poll_interval_seconds,
            next_poll_at=book.now,
            note="found in Alma's job history before a first submission; not submitted again",
        )
        book.event(
            row,
            "reconciled",
            f"{step.value}: job {job_id} already ran on this set (instance {inst.id}, {inst.status}, "
            f"name {inst.name!r}) although hwf had no attempt for it; adopted, not submitted again",
            job_id=job_id,
            instance_id=inst.id,
        )
    ctx.reporter.note(set_name, f"{step.value}: found an earlier run, instance {inst.id}; not submitting again")
    return True


def _must_wait(ctx: Context, set_id: int, step: Step, job_id: str) -> bool:
    """Alma's job limits, looked at before the members are read: True (and the set waits) when the job cannot
    start now. ``_begin_attempt`` looks again, in the transaction that commits the attempt."""
    cfg = ctx.config.alma
    with ctx.sessions() as session:
        slots = JobSlots.of(session, ctx.clock(), cfg)
    if slots.refusal(step, job_id, ctx.clock()) is None:
        return False
    with ctx.ledger() as book:
        refused = slots.refusal(step, job_id, book.now)
        if refused is not None:
            book.wait(book.set(set_id), refused[0], refused[1] or slots.slot_may_free(book.now))
    return True


def _begin_attempt(ctx: Context, set_id: int, step: Step, spec: JobSpec) -> _Begun | None:
    """Commit the ``submitting`` attempt and its event, or record why the set must wait for a job slot (None).

    :raises LeaseHeldError: this process lost the set's lease (submitting could start a second job).
    """
    cfg = ctx.config.alma
    with ctx.ledger() as book:
        row = book.set(set_id)
        slots = JobSlots.of(book.session, book.now, cfg)
        refused = slots.refusal(step, spec.id, book.now)
        if refused is not None:
            reason, until = refused
            book.wait(row, reason, until or slots.slot_may_free(book.now))
            return None
        _claim_or_raise(ctx, book, row, "submitting")
        token = new_token()
        name = job_name(step, row.alma_set_id, token)
        attempt = book.new_attempt(row, step, AttemptState.SUBMITTING, token=token, job_id=spec.id, job_name=name)
        book.stop_waiting(row)
        book.event(
            row,
            "submitting",
            f"{step.value}: submitting job {spec.id} (attempt {attempt.number}, token {token})",
            job_id=spec.id,
            token=token,
            attempt=attempt.number,
        )
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
    with ctx.ledger() as book:
        row, attempt = book.set(set_id), book.attempt(attempt_id)
        attempt.note = note
        if abandon:
            attempt.state = AttemptState.ABANDONED
        if wait is not None:
            book.wait(row, wait[0], book.now + timedelta(seconds=wait[1]))
        if lost is not None:
            book.event(row, "submit_unknown", lost, job_id=attempt.job_id, token=attempt.token)
        if attention is not None:
            book.attention(row, Attention.JOB, attention)
