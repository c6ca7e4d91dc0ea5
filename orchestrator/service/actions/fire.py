"""Firing a step's transition once its job has ended well (or was not needed): the guards read the facts
established from the database, and the transition and its event commit together. A guard that does not
hold stops the set (attention ``guard``) instead of moving it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import select

from orchestrator.domain.attention import GO_ON, Attention
from orchestrator.domain.steps import Step
from orchestrator.service.actions.base import Plan, PlannedAction, Preview, Scene, arrow
from orchestrator.service.actions.plan import step_facts
from orchestrator.store.models import Attempt

if TYPE_CHECKING:
    from orchestrator.service.context import Context


def fire_step(ctx: Context, set_id: int, step: Step) -> str:
    """Fire ``step``'s trigger on the set: its transition and event, or the ``guard`` attention. Returns
    what happened, for the progress display."""
    with ctx.ledger() as book:
        row = book.set(set_id)
        facts = step_facts(ctx.config, book.session, row, step, book.now)
        before = row.stage
        if not book.fire(row, step, facts):
            reason = (
                f"{step.value}: guard not met ({facts}); see `hwf check {row.alma_set_id}` and "
                f"`hwf history {row.alma_set_id}`. {GO_ON}`hwf retry {row.alma_set_id} --reason TEXT`"
            )
            book.attention(row, Attention.GUARD, reason)
            message, name = reason, row.name
        else:
            message, name = f"{before.value} -> {row.stage.value}", row.name
    ctx.reporter.note(name, message)
    return message


class Fire:
    """Move the set to the step's milestone."""

    def run(self, ctx: Context, set_id: int, plan: Plan) -> None:
        assert plan.step is not None
        fire_step(ctx, set_id, plan.step)

    def describe(self, scene: Scene, plan: Plan, when: str) -> Preview:
        step = plan.step
        assert step is not None
        facts = step_facts(scene.ctx.config, scene.session, scene.row, step, scene.now)
        attempt = scene.session.scalar(
            select(Attempt)
            .where(Attempt.set_id == scene.row.id, Attempt.step == step.value)
            .order_by(Attempt.number.desc())
        )
        ended = f"job ended {attempt.status}" if attempt is not None and attempt.status else "step done"
        if step.spec.holds(facts):
            action = PlannedAction(when, "fire", f"{ended}: move {arrow(step)}; no request")
            return Preview((action,), f"{arrow(step)} ({step.value}) now")
        summary = f"{ended}, but the guard does not hold ({facts}): attention (guard) instead of {arrow(step)}"
        return Preview((PlannedAction(when, "fire", summary),))
