"""The set's state machine: five milestones, one trigger per step, no way to skip one.

The table is data (``TRANSITIONS``) so it can be printed, drawn (``hwf graph``) and tested without a
database. Guards read a ``StepFacts`` passed to the trigger; they never touch the session.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from transitions import Machine, MachineError

from orchestrator.errors import TransitionNotAllowed


class Stage(enum.Enum):
    CREATED = "created"
    IDENTIFIERS_COPIED = "identifiers_copied"
    MIGRATED = "migrated"
    INTEGRATED = "integrated"
    VERIFIED = "verified"


class Step(enum.Enum):
    """The four steps. Each is a trigger and, except verify, an Alma job."""

    COPY_IDENTIFIERS = "copy_identifiers"
    MIGRATE = "migrate"
    INTEGRATE = "integrate"
    VERIFY = "verify"

    @property
    def job_key(self) -> str | None:
        """The key under [alma.jobs] naming this step's job, or None for verify."""
        return _JOB_KEYS.get(self)

    @property
    def source(self) -> Stage:
        return _SOURCE[self]

    @property
    def dest(self) -> Stage:
        return _DEST[self]


_JOB_KEYS = {
    Step.COPY_IDENTIFIERS: "copy_identifiers",
    Step.MIGRATE: "handle_migration",
    Step.INTEGRATE: "handle_integration",
}
_SOURCE = {
    Step.COPY_IDENTIFIERS: Stage.CREATED,
    Step.MIGRATE: Stage.IDENTIFIERS_COPIED,
    Step.INTEGRATE: Stage.MIGRATED,
    Step.VERIFY: Stage.INTEGRATED,
}
_DEST = {
    Step.COPY_IDENTIFIERS: Stage.IDENTIFIERS_COPIED,
    Step.MIGRATE: Stage.MIGRATED,
    Step.INTEGRATE: Stage.INTEGRATED,
    Step.VERIFY: Stage.VERIFIED,
}


@dataclass(frozen=True)
class StepFacts:
    """What the service has established about a step before firing its trigger."""

    job_ok: bool = False  # the step's Alma job reached a good terminal status (or was not needed)
    records_ready: bool = False  # preflight / post-copy check: every included record is ready
    settled: bool = False  # settle time after the integration run has passed
    all_verified: bool = False  # every included record's handle resolved to its own record


def _job_ok(facts: StepFacts) -> bool:
    return facts.job_ok


def _records_ready(facts: StepFacts) -> bool:
    return facts.records_ready


def _settled(facts: StepFacts) -> bool:
    return facts.settled


def _all_verified(facts: StepFacts) -> bool:
    return facts.all_verified


TRANSITIONS: list[dict[str, Any]] = [
    {
        "trigger": Step.COPY_IDENTIFIERS.value,
        "source": Stage.CREATED,
        "dest": Stage.IDENTIFIERS_COPIED,
        "conditions": [_records_ready, _job_ok],
    },
    {
        "trigger": Step.MIGRATE.value,
        "source": Stage.IDENTIFIERS_COPIED,
        "dest": Stage.MIGRATED,
        "conditions": [_records_ready, _job_ok],
    },
    {
        "trigger": Step.INTEGRATE.value,
        "source": Stage.MIGRATED,
        "dest": Stage.INTEGRATED,
        "conditions": [_job_ok],
    },
    {
        "trigger": Step.VERIFY.value,
        "source": Stage.INTEGRATED,
        "dest": Stage.VERIFIED,
        "conditions": [_settled, _all_verified],
    },
]

MACHINE = Machine(
    model=None,
    states=Stage,
    transitions=TRANSITIONS,
    initial=Stage.CREATED,
    auto_transitions=False,
    ignore_invalid_triggers=False,
    model_attribute="stage",
)


def next_step(stage: Stage) -> Step | None:
    """The one step that can run from ``stage`` (None once verified)."""
    for step in Step:
        if step.source is stage:
            return step
    return None


@contextmanager
def driving(model: Any) -> Iterator[Any]:
    """Attach ``model`` (anything with a ``stage`` attribute) to the machine at its persisted stage."""
    MACHINE.add_model(model, initial=model.stage)
    try:
        yield model
    finally:
        MACHINE.remove_model(model)


def fire(model: Any, step: Step, facts: StepFacts) -> bool:
    """Fire ``step`` on ``model``. True if it moved; False if a guard held it back.

    :raises TransitionNotAllowed: the step cannot run from the model's stage.
    """
    with driving(model):
        try:
            return bool(getattr(model, step.value)(facts))
        except MachineError:
            raise TransitionNotAllowed(
                f"cannot {step.value} from {model.stage.value}"
                f" (next step: {getattr(next_step(model.stage), 'value', 'none')})"
            ) from None


def mermaid() -> str:
    """The state machine as a mermaid diagram."""
    lines = ["stateDiagram-v2", f"    [*] --> {Stage.CREATED.value}"]
    for t in TRANSITIONS:
        guards = " and ".join(c.__name__.lstrip("_") for c in t["conditions"])
        lines.append(f"    {t['source'].value} --> {t['dest'].value}: {t['trigger']} [{guards}]")
    lines.append(f"    {Stage.VERIFIED.value} --> [*]")
    return "\n".join(lines) + "\n"
