"""The workflow's actions, one room each, and the one table that picks the room for a plan.

``advance`` (``service.workflow``) runs a plan's room; the dry run (``service.dryrun``) asks the same room
to describe it, so what the dry run says cannot drift from what runs. Each room implements
:class:`~orchestrator.service.actions.base.Room`: ``run`` and ``describe``.
"""

from __future__ import annotations

from orchestrator.service.actions.base import Action, Plan, PlannedAction, PlannedRequest, Preview, Room, Scene
from orchestrator.service.actions.fire import Fire
from orchestrator.service.actions.manual import Manual
from orchestrator.service.actions.plan import plan_step, step_facts
from orchestrator.service.actions.poll import Poll
from orchestrator.service.actions.precheck import Precheck
from orchestrator.service.actions.reconcile import Reconcile
from orchestrator.service.actions.submit import Submit
from orchestrator.service.actions.verify import Verify

ROOMS: dict[Action, Room] = {
    Action.PRECHECK: Precheck(),
    Action.SUBMIT: Submit(),
    Action.RECONCILE: Reconcile(),
    Action.POLL: Poll(),
    Action.MANUAL: Manual(),
    Action.FIRE: Fire(),
    Action.VERIFY: Verify(),
}

__all__ = [
    "ROOMS",
    "Action",
    "Plan",
    "PlannedAction",
    "PlannedRequest",
    "Preview",
    "Room",
    "Scene",
    "plan_step",
    "step_facts",
]
