"""A step a person runs in Alma, and binding that run.

A copy or migration step runs by hand when the configuration says so (``[alma.jobs.<role>] mode = "manual"``) or
when Alma refuses to run its job through the API (402231: a normalization process of several tasks). hwf first
compares the Alma set's members with its records (nothing is asked of a person on a set that changed), then says
exactly what to click in Admin > Run a Job, and looks for the run in the job's history. Such runs are named
``<job name> - <set name> - <time stamp>``: a run is bound when it is not one Alma already had when hwf asked,
not one hwf or another set adopted, not submitted through the API, and its whole name is that of this set. One
such run is adopted and polled like hwf's own; several are attention (hwf never guesses).

(The handle integration profile's run, which names no set, is bound by its integration batch: ``batch``.)
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from orchestrator.domain.attention import Attention
from orchestrator.domain.clicks import run_a_job_clicks
from orchestrator.domain.jobrules import (
    SetMatch,
    history_window,
    instance_window,
    match_instance,
    names_set,
    next_poll_interval,
    submitted_by_api,
)
from orchestrator.domain.steps import Step
from orchestrator.errors import AlmaError
from orchestrator.service.actions.base import Plan, PlannedAction, Preview, Scene, job_transition
from orchestrator.service.actions.instances import adopt_instance, listing_request, taken_instances
from orchestrator.service.membership import stop_on_drift
from orchestrator.store.models import AlmaSet, Attempt, AttemptState

if TYPE_CHECKING:
    from orchestrator.service.context import Context


class Manual:
    """Ask a person to run the step in Alma, then find their run."""

    def run(self, ctx: Context, set_id: int, plan: Plan) -> None:
        assert plan.step is not None
        if plan.attempt_id is None:
            announce(ctx, set_id, plan.step)
        else:
            _look_for_run(ctx, set_id, plan.attempt_id)

    def describe(self, scene: Scene, plan: Plan, when: str) -> Preview:
        step = plan.step
        assert step is not None and step.job_key is not None
        spec = scene.ctx.config.alma.jobs[step.job_key]
        row = scene.row
        actions: list[PlannedAction] = []
        if plan.attempt_id is None:
            members = f"GET /almaws/v1/conf/sets/{row.alma_set_id}/members"
            actions.append(
                PlannedAction(
                    when,
                    "manual",
                    f"{step.value} by hand: compare the Alma set's members with hwf's records ({members}, every "
                    "page; any difference stops the set: drift), then ask you to run the job in Alma",
                    notes=(run_a_job_clicks(f"<the name of job {spec.id}>", row.name, row.alma_set_id),),
                )
            )
            since = scene.now
        else:
            since = scene.session.get_one(Attempt, plan.attempt_id).begun_at
        actions.append(
            PlannedAction(
                "then" if plan.attempt_id is None else when,
                "manual",
                f"look for your run of job {spec.id} named after set {row.name!r} (or take `hwf confirm "
                f"{row.alma_set_id} --instance ID`)",
                (listing_request(scene, spec.id, since),),
            )
        )
        return Preview(tuple(actions), job_transition(step))


def announce(ctx: Context, set_id: int, step: Step, *, refused: AlmaError | None = None) -> None:
    """Ask a person to run ``step``'s job on the set in Admin > Run a Job (after the members were compared), and
    remember which runs of the job Alma already has. ``refused``: Alma would not run it by API (the set then
    carries the ``manual_step`` attention, which hwf clears itself once it has bound the run)."""
    assert step.job_key is not None
    spec = ctx.config.alma.jobs[step.job_key]
    if stop_on_drift(ctx, set_id, f"asking for the {step.value} job to be run by hand"):
        return
    try:
        job_name = ctx.alma.get_job(spec.id).name
    except AlmaError:
        job_name = None  # the run is still found by the set's name and the time stamp's shape
    date_from, date_to = history_window(ctx.clock())
    seen = sorted({i.id for i in ctx.alma.list_instances(spec.id, date_from=date_from, date_to=date_to)})
    with ctx.ledger() as book:
        row = book.set(set_id)
        attempt = book.new_attempt(
            row,
            step,
            AttemptState.WAITING_OPERATOR,
            job_id=spec.id,
            job_name=job_name,
            origin="operator",
            seen_before=seen,
            poll_interval=ctx.config.alma.poll_interval_seconds,
            next_poll_at=book.now + timedelta(seconds=ctx.config.alma.poll_interval_seconds),
        )
        clicks = run_a_job_clicks(job_name or f"job {spec.id}", row.name, row.alma_set_id)
        book.event(row, "operator_action", clicks, job_id=spec.id, attempt=attempt.number)
        if refused is not None:
            book.attention(
                row,
                Attention.MANUAL_STEP,
                f"Alma will not run the {step.value} job {spec.id} through the API ({refused.code}: "
                f"{refused.alma_message or refused}). Run it by hand: {clicks} To run this step by hand for every "
                f'set from now on: [alma.jobs.{step.job_key}] mode = "manual"',
            )
        else:
            book.wait(
                row,
                f"needs a person: run the {step.value} job ({job_name or spec.id}) on set {row.name!r} in Alma "
                "(Admin > Run a Job); hwf finds the run by the set's name",
                book.now + timedelta(seconds=ctx.config.alma.poll_interval_seconds),
            )
        name = row.name
    ctx.reporter.note(name, clicks)


def _look_for_run(ctx: Context, set_id: int, attempt_id: int) -> None:
    with ctx.sessions() as session:
        row, attempt = session.get_one(AlmaSet, set_id), session.get_one(Attempt, attempt_id)
        job_id, step, begun = attempt.job_id, Step(attempt.step), attempt.begun_at
        alma_set_id, set_name, job_name = row.alma_set_id, row.name, attempt.job_name
        seen = set(attempt.seen_before or ())
        taken = taken_instances(session, job_id) | seen
    assert job_id is not None
    date_from, date_to = instance_window(begun, ctx.clock())
    found = [
        i
        for i in ctx.alma.list_instances(
            job_id, date_from=date_from, date_to=date_to, wanted=lambda name: names_set(name, alma_set_id, set_name)
        )
        if i.id not in taken
        and not submitted_by_api(i.submitted_by)
        and match_instance(i, job_id, step, alma_set_id, set_name, job_name)[0] is SetMatch.THIS
    ]
    if len(found) == 1:
        adopt_instance(ctx, set_id, attempt_id, found[0].id, how="operator", alma_submitted=found[0].submit_time)
        with ctx.ledger() as book:
            row = book.set(set_id)
            if row.attention_kind == Attention.MANUAL_STEP:
                book.event(
                    row, "attention_cleared", f"cleared: found the run {found[0].id}: {book.clear_attention(row)}"
                )
        ctx.reporter.note(set_name, f"{step.value}: found your run, instance {found[0].id}")
        return
    with ctx.ledger() as book:
        row, attempt = book.set(set_id), book.attempt(attempt_id)
        if found:
            book.attention(
                row,
                Attention.RECONCILE,
                f"{step.value}: {len(found)} runs of job {job_id} are named after this set "
                f"({', '.join(i.id for i in found)}); hwf will not guess. Pick one with "
                f"`hwf confirm {alma_set_id} --instance ID`",
            )
            return
        attempt.poll_interval = next_poll_interval(attempt.poll_interval, ctx.config.alma.poll_max_interval_seconds)
        attempt.next_poll_at = book.now + timedelta(seconds=attempt.poll_interval)
        if row.attention_kind != Attention.MANUAL_STEP and row.waiting:
            book.wait(row, row.waiting, attempt.next_poll_at)
