"""The one table that picks the room for a plan's action."""

from __future__ import annotations

from orchestrator.service.actions.base import Action, Room
from orchestrator.service.actions.batch import Batch
from orchestrator.service.actions.fire import Fire
from orchestrator.service.actions.manual import Manual
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
    Action.BATCH: Batch(),
    Action.FIRE: Fire(),
    Action.VERIFY: Verify(),
}
