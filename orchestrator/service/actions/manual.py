"""Steps a person runs in Alma, and binding what the person did.

In manual integration mode hwf says what to click (the Handle integration profile, run on the set), then
looks for that run among the integration job's instances and adopts it. ``confirm`` is the operator naming
the instance themselves (manual mode, an ambiguous reconciliation, an instance Alma no longer knows): the
instance must be a run of the step's job, on this set, and adopted by no other attempt.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from orchestrator.domain.attention import Attention
from orchestrator.domain.jobrules import UNKNOWN_INSTANCE_CODES, SetMatch, instance_window, match_instance
from orchestrator.domain.steps import Stage, Step, next_step
from orchestrator.errors import AlmaError, BadInputError
from orchestrator.service.actions.base import Plan, PlannedAction, Preview, Scene, job_transition
from orchestrator.service.actions.instances import adopt_instance, adopted_by, listing_request, taken_instances
from orchestrator.service.context import find_set
from orchestrator.store.ledger import Ledger
from orchestrator.store.models import AlmaSet, Attempt, AttemptState

if TYPE_CHECKING:
    from orchestrator.service.context import Context

_INTEGRATION = Step.INTEGRATE.job_key or ""


def manual_instructions(set_name: str, set_id: str = "SET") -> str:
    return (
        "In Alma: Configuration > General > External Systems > Integration Profiles > the Handle profile > "
        f"Actions tab: Set name = {set_name!r}; Action = Create and Update; DC METADATA Upon Create = "
        "Do not add to metadata; press Run (not Save). hwf will find the run, or give it the Job ID from the "
        f"toast with `hwf confirm {set_id} --instance ID`."
    )


class Manual:
    """Tell the operator what to run in Alma, then find their run."""

    def run(self, ctx: Context, set_id: int, plan: Plan) -> None:
        if plan.attempt_id is None:
            _announce(ctx, set_id)
        else:
            _look_for_run(ctx, set_id, plan.attempt_id)

    def describe(self, scene: Scene, plan: Plan, when: str) -> Preview:
        spec = scene.ctx.config.alma.jobs[_INTEGRATION]
        actions: list[PlannedAction] = []
        if plan.attempt_id is None:
            actions.append(
                PlannedAction(
                    when,
                    "manual",
                    "manual integration: tell you what to run in Alma, then wait for your run",
                    notes=(manual_instructions(scene.row.name, scene.row.alma_set_id),),
                )
            )
            since = scene.now
        else:
            since = scene.session.get_one(Attempt, plan.attempt_id).begun_at
        actions.append(
            PlannedAction(
                "then" if plan.attempt_id is None else when,
                "manual",
                f"look for your run of job {spec.id} naming this set (or take `hwf confirm "
                f"{scene.row.alma_set_id} --instance ID`)",
                (listing_request(scene, spec.id, since),),
            )
        )
        return Preview(tuple(actions), job_transition(Step.INTEGRATE))


def _announce(ctx: Context, set_id: int) -> None:
    spec = ctx.config.alma.jobs[_INTEGRATION]
    with ctx.ledger() as book:
        row = book.set(set_id)
        book.new_attempt(row, Step.INTEGRATE, AttemptState.WAITING_OPERATOR, job_id=spec.id, origin="operator")
        text = manual_instructions(row.name, row.alma_set_id)
        book.event(row, "operator_action", text)
        book.wait(
            row,
            f"integrate: waiting for the operator to run the Handle integration profile on set {row.name!r} "
            f"(or `hwf confirm {row.alma_set_id} --instance ID`)",
            book.now + timedelta(seconds=ctx.config.alma.poll_interval_seconds),
        )
        name = row.name
    ctx.reporter.note(name, text)


def _look_for_run(ctx: Context, set_id: int, attempt_id: int) -> None:
    spec = ctx.config.alma.jobs[_INTEGRATION]
    with ctx.sessions() as session:
        row, attempt = session.get_one(AlmaSet, set_id), session.get_one(Attempt, attempt_id)
        begun, alma_set_id, set_name = attempt.begun_at, row.alma_set_id, row.name
        taken = taken_instances(session, spec.id)
    date_from, date_to = instance_window(begun, ctx.clock())
    found = [
        i
        for i in ctx.alma.list_instances(spec.id, date_from=date_from, date_to=date_to)
        if i.id not in taken
        and i.submit_time is not None
        and i.submit_time >= begun - timedelta(minutes=5)
        and match_instance(i, spec.id, Step.INTEGRATE, alma_set_id, set_name)[0] is SetMatch.THIS
    ]
    if len(found) == 1:
        adopt_instance(ctx, set_id, attempt_id, found[0].id, how="operator", alma_submitted=found[0].submit_time)
        return
    with ctx.ledger() as book:
        row = book.set(set_id)
        if len(found) > 1:
            book.attention(
                row,
                Attention.RECONCILE,
                f"integrate: {len(found)} runs of job {spec.id} name this set ({', '.join(i.id for i in found)}); "
                f"pick one with `hwf confirm {alma_set_id} --instance ID`",
            )
            return
        book.wait(row, row.waiting or "", book.now + timedelta(seconds=ctx.config.alma.poll_interval_seconds))


# ---------------------------------------------------------------------------------------------
# confirm


def confirm(ctx: Context, ref: str, instance_id: str, *, force: bool = False) -> str:
    """Adopt an instance the operator names for the set's waiting step (manual integration, an
    ambiguous reconciliation, an instance Alma no longer knows). The instance must be a run of the
    step's job, on this set, and not adopted by any other attempt; ``force`` adopts one whose reply
    names no set at all (recorded in the event).

    :raises BadInputError: no step is waiting, or the instance does not fit (what does not match is named).
    """
    instance_id = instance_id.strip()
    with ctx.ledger() as book:
        row = find_set(book.session, ref)
        step, attempt = _waiting_step(ctx, book, row)
        set_id, attempt_id, job_id = row.id, attempt.id, attempt.job_id
        alma_set_id, set_name = row.alma_set_id, row.name
        taken = adopted_by(book.session, instance_id)
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
    with ctx.ledger() as book:
        row = book.set(set_id)
        book.clear_attention(row)
        text = f"operator confirmed instance {inst.id} of job {job_id} for {step.value}: " + (
            f"forced (--force): {why}" if forced else why
        )
        book.event(row, "confirm", text, instance_id=inst.id, forced=forced)
    adopt_instance(ctx, set_id, attempt_id, inst.id, how="operator", alma_submitted=inst.submit_time)
    return f"adopted job {job_id} instance {inst.id} ({inst.status}) for set {ref}" + (" (forced)" if forced else "")


def _waiting_step(ctx: Context, book: Ledger, row: AlmaSet) -> tuple[Step, Attempt]:
    """The step whose job instance the set waits to have confirmed, and its attempt.

    :raises BadInputError: the set waits for no instance."""
    step = next_step(row.stage)
    attempt = book.latest_attempt(row.id, step) if step is not None and step.job_key is not None else None
    if attempt is None and step is not None and step.job_key and row.attention_kind == Attention.EARLIER_RUNS:
        # Several earlier runs and no attempt: the operator's pick is recorded on a new one (nothing is submitted).
        job_id = ctx.config.alma.jobs[step.job_key].id
        attempt = book.new_attempt(row, step, AttemptState.WAITING_OPERATOR, job_id=job_id, origin="operator")
    waiting = attempt is not None and (
        attempt.state in (AttemptState.WAITING_OPERATOR, AttemptState.SUBMITTING)
        or (attempt.state is AttemptState.SUBMITTED and row.attention_kind == Attention.INSTANCE_UNKNOWN)
    )
    if step is None or attempt is None or not waiting or row.stage not in _CONFIRMABLE:
        raise BadInputError(f"set {row.alma_set_id} is not waiting for a job instance to be confirmed")
    return step, attempt


_CONFIRMABLE = frozenset(s for s in Stage if (n := next_step(s)) is not None and n.job_key is not None)
