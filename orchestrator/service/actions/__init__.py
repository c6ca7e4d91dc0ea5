"""The workflow's actions, one room each, and the one table that picks the room for a plan.

``advance`` (``service.workflow``) runs a plan's room; the dry run (``service.dryrun``) asks the same room
to describe it, so what the dry run says cannot drift from what runs. Each room implements
:class:`~orchestrator.service.actions.base.Room`: ``run`` and ``describe``. The table is ``actions.rooms``, the
plan ``actions.plan``; this package itself names only the common types, so that a reader of one light
submodule (``actions.gate`` for ``hwf overview``) does not load every room (the Alma client, the verifier).
"""

from __future__ import annotations

from orchestrator.service.actions.base import Action, Plan, PlannedAction, PlannedRequest, Preview, Room, Scene

__all__ = ["Action", "Plan", "PlannedAction", "PlannedRequest", "Preview", "Room", "Scene"]
