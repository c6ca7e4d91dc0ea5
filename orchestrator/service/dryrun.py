"""``advance --dry-run`` and ``resume --all --dry-run``: for each set, the next actions hwf would take,
the exact requests they would send (method, path with query, headers with the key shown as ``***``,
body), and the transition that would follow.

Read-only by construction: one plain session that is never committed (closed, so rolled back), the
workflow's own ``plan_step`` to decide the next action, each action described by its own room (the code
that would run it), and a planning Alma client that builds requests and cannot send them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from orchestrator.alma.client import AlmaClient
from orchestrator.display import utc_stamp
from orchestrator.domain.attention import advice
from orchestrator.domain.steps import Stage
from orchestrator.service.actions import Action, Plan, PlannedAction, Scene
from orchestrator.service.actions.plan import plan_step
from orchestrator.service.actions.rooms import ROOMS
from orchestrator.service.context import Context, find_set, only_pattern, require_match
from orchestrator.store.models import AlmaSet

_DEPTH = 2  # how many actions after the next one the plan follows (after a wait, after a precheck)


@dataclass(frozen=True)
class DryRunPlan:
    """What ``hwf advance SET`` would do now, described without doing it."""

    set: str
    name: str
    state: str
    attention: str | None
    actions: tuple[PlannedAction, ...]
    transition: str | None
    notes: tuple[str, ...] = field(default=())

    def text(self) -> str:
        """Human-readable lines: the actions, their requests, the transition."""
        lines = [f"Set {self.set} ({self.name}): state {self.state}"]
        for action in self.actions:
            lines.append(f"  {action.when}: {action.summary}")
            for request in action.requests:
                lines += [f"    {line}" for line in request.lines()]
            lines += [f"    - {note}" for note in action.notes]
        if self.transition:
            lines.append(f"  transition: {self.transition}")
        lines += [f"  note: {note}" for note in self.notes]
        lines.append("  (dry run: nothing was sent to Alma or the handle proxy, nothing was written)")
        return "\n".join(lines)

    def as_json(self) -> dict[str, Any]:
        return {
            "set": self.set,
            "name": self.name,
            "state": self.state,
            "attention": self.attention,
            "actions": [a.as_json() for a in self.actions],
            "transition": self.transition,
            "notes": list(self.notes),
            "dry_run": True,
        }


def _describe(scene: Scene, plan: Plan, when: str, depth: int, out: list[PlannedAction]) -> str | None:
    """Add what ``plan`` would do to ``out`` (and what would follow it); return the transition it leads to."""
    row = scene.row
    if plan.action is Action.DONE:
        out.append(PlannedAction(when, "done", "nothing: the set is verified"))
        return None
    if plan.action is Action.ATTENTION:
        kind = row.attention_kind or "attention"
        out.append(
            PlannedAction(
                when,
                "attention",
                f"stop (exit 3): the set needs attention ({kind}): {plan.reason}",
                notes=(f"what to do: {advice(row.attention_kind, row.alma_set_id, row.attention)}",),
            )
        )
        return None
    if plan.action is Action.WAIT:
        assert plan.wake_at is not None
        out.append(
            PlannedAction(
                when, "wait", f"wait until {utc_stamp(plan.wake_at)}: {plan.reason} (with --no-wait, exit 0 now)"
            )
        )
        if depth >= _DEPTH:
            return None
        later = plan_step(scene.ctx.config, scene.session, row, plan.wake_at, set())
        return _describe(scene, later, "after the wait", depth + 1, out)
    preview = ROOMS[plan.action].describe(scene, plan, when)
    out.extend(preview.actions)
    if preview.then is not None and depth < _DEPTH:
        return _describe(scene, preview.then[0], preview.then[1], depth + 1, out)
    return preview.transition


def _describe_row(ctx: Context, session: Session, row: AlmaSet, now: datetime) -> DryRunPlan:
    notes: list[str] = []
    if row.lease_owner and row.lease_expires_at and row.lease_expires_at > now and row.lease_owner != ctx.owner:
        notes.append(
            f"another hwf process ({row.lease_owner}) holds this set until "
            f"{utc_stamp(row.lease_expires_at)}: `hwf advance` would exit 4 now"
        )
    actions: list[PlannedAction] = []
    with AlmaClient.planner(ctx.config.alma.base_url, format=ctx.config.alma.format) as alma:
        scene = Scene(ctx, session, row, now, alma)
        transition = _describe(scene, plan_step(ctx.config, session, row, now, set()), "next", 0, actions)
    return DryRunPlan(
        set=row.alma_set_id,
        name=row.name,
        state=row.stage.value,
        attention=row.attention,
        actions=tuple(actions),
        transition=transition,
        notes=tuple(notes),
    )


def describe_advance(ctx: Context, ref: str) -> DryRunPlan:
    """What ``hwf advance REF`` would do now. Reads the database only; sends nothing.

    :raises BadInputError: unknown set.
    """
    now = ctx.clock()
    with ctx.sessions() as session:
        try:
            return _describe_row(ctx, session, find_set(session, ref), now)
        finally:
            session.rollback()


def describe_all(ctx: Context, only: str | None = None) -> list[DryRunPlan]:
    """What ``hwf resume --all [--only PATTERN]`` would do for each set that is not verified."""
    pattern = only_pattern(only)
    now = ctx.clock()
    with ctx.sessions() as session:
        try:
            require_match(session, pattern, only)
            rows = session.scalars(
                select(AlmaSet).where(AlmaSet.stage != Stage.VERIFIED).order_by(AlmaSet.created_at, AlmaSet.id)
            ).all()
            return [_describe_row(ctx, session, r, now) for r in rows if not pattern or pattern.search(r.name)]
        finally:
            session.rollback()
