"""The set's state machine: five milestones, one trigger per step, no way to skip one.

The transitions are derived from the one ordered table of steps (``domain.steps.ORDER``), so they can be
printed, drawn (``hwf graph``) and tested without a database. Guards read a ``StepFacts`` passed to the
trigger; they never touch the session.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from transitions import Machine, MachineError

from orchestrator.domain.steps import ORDER, Stage, Step, StepFacts, next_step
from orchestrator.errors import TransitionNotAllowed

__all__ = ["MACHINE", "TRANSITIONS", "Stage", "Step", "StepFacts", "driving", "fire", "mermaid", "next_step"]

TRANSITIONS: list[dict[str, Any]] = [
    {"trigger": spec.step.value, "source": spec.before, "dest": spec.after, "conditions": list(spec.guards)}
    for spec in ORDER
]

MACHINE = Machine(
    model=None,
    states=Stage,
    transitions=TRANSITIONS,
    initial=ORDER[0].before,
    auto_transitions=False,
    ignore_invalid_triggers=False,
    model_attribute="stage",
)


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
    lines = ["stateDiagram-v2", f"    [*] --> {ORDER[0].before.value}"]
    for spec in ORDER:
        guards = " and ".join(guard.__name__ for guard in spec.guards)
        lines.append(f"    {spec.before.value} --> {spec.after.value}: {spec.step.value} [{guards}]")
    lines.append(f"    {ORDER[-1].after.value} --> [*]")
    return "\n".join(lines) + "\n"
