"""Polling a submitted job: read the instance once, record its progress, or its end (status, counters,
alerts, the instance exactly as Alma returned it); the next poll waits a little longer each time."""

from __future__ import annotations

from dataclasses import asdict
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from orchestrator.alma.types import GOOD_STATUSES, JobInstance
from orchestrator.domain.attention import Attention
from orchestrator.domain.jobrules import UNKNOWN_INSTANCE_CODES, exception_count, next_poll_interval
from orchestrator.errors import AlmaError
from orchestrator.service.actions.base import Plan, PlannedAction, PlannedRequest, Preview, Scene, job_transition
from orchestrator.service.actions.plan import finished_ok
from orchestrator.store.models import RAW_REPLY_CAP, Attempt, AttemptState

if TYPE_CHECKING:
    from orchestrator.service.context import Context


def describe_counters(counters: list[Any] | None) -> str:
    return ", ".join(f"{c.get('desc') or c.get('code')}: {c.get('value')}" for c in counters or []) or "no counters"


class Poll:
    """Read the running job's instance once."""

    def run(self, ctx: Context, set_id: int, plan: Plan) -> None:
        assert plan.attempt_id is not None
        with ctx.ledger() as book:
            row, attempt = book.set(set_id), book.attempt(plan.attempt_id)
            job_id, instance_id, set_name, step = attempt.job_id, attempt.instance_id, row.name, attempt.step
            if job_id is None or instance_id is None:
                book.attention(
                    row,
                    Attention.CORRUPT,
                    f"{step}: attempt {attempt.number} is marked submitted but has no job or instance id; "
                    "see `hwf doctor`",
                )
                return
        try:
            inst, body = ctx.alma.get_instance_reply(job_id, instance_id)
        except AlmaError as exc:
            if exc.status != 400 or exc.code not in UNKNOWN_INSTANCE_CODES:
                raise
            with ctx.ledger() as book:
                row = book.set(set_id)
                book.attention(
                    row,
                    Attention.INSTANCE_UNKNOWN,
                    f"{step}: Alma no longer knows job {job_id} instance {instance_id} ({exc.code}). Look for the run "
                    f"in Monitor Jobs: if it ran under another id, `hwf confirm {row.alma_set_id} --instance ID`; "
                    f"if it never ran, `hwf retry {row.alma_set_id} --reason TEXT` submits the step again",
                )
            return
        record_instance(ctx, set_id, plan.attempt_id, inst, body)
        ctx.reporter.job_progress(set_name, step, inst)

    def describe(self, scene: Scene, plan: Plan, when: str) -> Preview:
        assert plan.step is not None and plan.attempt_id is not None
        attempt = scene.session.get_one(Attempt, plan.attempt_id)
        assert attempt.job_id is not None and attempt.instance_id is not None
        last = attempt.status or "not yet polled"
        if attempt.progress is not None:
            last += f", {attempt.progress:g}%"
        request = PlannedRequest.of(
            scene.alma.instance_request(attempt.job_id, attempt.instance_id),
            note="repeated with a growing interval until the job ends",
        )
        summary = f"poll {plan.step.value}: job {attempt.job_id} instance {attempt.instance_id} (last seen: {last})"
        return Preview((PlannedAction(when, "poll", summary, (request,)),), job_transition(plan.step))


def record_instance(ctx: Context, set_id: int, attempt_id: int, inst: JobInstance, body: bytes | None = None) -> None:
    """Record what the instance says: its progress (and when to poll next), or its end."""
    with ctx.ledger() as book:
        row, attempt = book.set(set_id), book.attempt(attempt_id)
        attempt.status = inst.status
        attempt.progress = inst.progress
        attempt.counters = [asdict(c) for c in inst.counters]
        attempt.alerts = [asdict(a) for a in inst.alerts]
        attempt.alma_submitted_at = inst.submit_time or attempt.alma_submitted_at
        attempt.alma_started_at = inst.start_time or attempt.alma_started_at
        if not inst.terminal:
            attempt.poll_interval = next_poll_interval(attempt.poll_interval, ctx.config.alma.poll_max_interval_seconds)
            attempt.next_poll_at = book.now + timedelta(seconds=attempt.poll_interval)
            return
        attempt.state = AttemptState.FINISHED
        attempt.ended_at = book.now
        attempt.alma_ended_at = inst.end_time
        if body is not None:  # the instance as Alma returned it, for `hwf evidence` (capped)
            attempt.raw_reply = body[:RAW_REPLY_CAP]
        desc = f" ({inst.status_desc})" if inst.status_desc else ""
        counters = describe_counters(attempt.counters)
        book.event(
            row,
            "job_finished",
            f"{attempt.step}: job {attempt.job_id} instance {inst.id} ended {inst.status}{desc}; {counters}",
            job_id=attempt.job_id,
            instance_id=inst.id,
            status=inst.status,
            counters=attempt.counters,
            alerts=attempt.alerts,
            alma_end_time=inst.end_time.isoformat() if inst.end_time else None,
        )
        if not finished_ok(attempt):
            why = (
                f"ended {inst.status}{desc}"
                if inst.status not in GOOD_STATUSES
                else f"had {exception_count(attempt.counters)} exceptions"
            )
            book.attention(
                row,
                Attention.JOB,
                f"{attempt.step} job {attempt.job_id} instance {inst.id} {why} ({counters}); "
                f"see the job report in Alma, fix the cause, then `hwf retry {row.alma_set_id} --reason TEXT`",
            )
