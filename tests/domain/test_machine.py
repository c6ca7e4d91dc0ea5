from __future__ import annotations

import pytest

from orchestrator.domain.machine import MACHINE, TRANSITIONS, Stage, Step, StepFacts, fire, mermaid, next_step
from orchestrator.errors import TransitionNotAllowed

ALL_OK = StepFacts(job_ok=True, records_ready=True, settled=True, all_verified=True)


class Row:
    def __init__(self, stage: Stage = Stage.CREATED) -> None:
        self.stage = stage


def test_states_are_exactly_the_five_milestones() -> None:
    assert [s.value for s in Stage] == ["created", "identifiers_copied", "migrated", "integrated", "verified"]
    assert set(MACHINE.states) == {s.name for s in Stage}


def test_one_trigger_per_step_and_no_auto_transitions() -> None:
    assert [t["trigger"] for t in TRANSITIONS] == [s.value for s in Step]
    assert not any(name.startswith("to_") for name in MACHINE.events)


def test_the_only_path_is_in_order() -> None:
    row = Row()
    for step in Step:
        assert next_step(row.stage) is step
        assert fire(row, step, ALL_OK)
    assert row.stage is Stage.VERIFIED
    assert next_step(Stage.VERIFIED) is None


@pytest.mark.parametrize("stage", list(Stage))
@pytest.mark.parametrize("step", list(Step))
def test_out_of_order_triggers_raise(stage: Stage, step: Step) -> None:
    row = Row(stage)
    if step.source is stage:
        assert fire(row, step, ALL_OK)
        assert row.stage is step.dest
    else:
        with pytest.raises(TransitionNotAllowed, match=f"cannot {step.value} from {stage.value}"):
            fire(row, step, ALL_OK)
        assert row.stage is stage


@pytest.mark.parametrize(
    ("step", "facts"),
    [
        (Step.COPY_IDENTIFIERS, StepFacts(job_ok=True, records_ready=False)),
        (Step.COPY_IDENTIFIERS, StepFacts(job_ok=False, records_ready=True)),
        (Step.MIGRATE, StepFacts(job_ok=True, records_ready=False)),
        (Step.INTEGRATE, StepFacts(job_ok=False)),
        (Step.VERIFY, StepFacts(settled=False, all_verified=True)),
        (Step.VERIFY, StepFacts(settled=True, all_verified=False)),
    ],
)
def test_guards_hold_the_set_back(step: Step, facts: StepFacts) -> None:
    row = Row(step.source)
    assert fire(row, step, facts) is False
    assert row.stage is step.source


def test_model_is_detached_after_firing() -> None:
    row = Row()
    fire(row, Step.COPY_IDENTIFIERS, ALL_OK)
    assert row not in MACHINE.models


def test_mermaid_lists_every_transition() -> None:
    text = mermaid()
    assert text.startswith("stateDiagram-v2")
    for t in TRANSITIONS:
        assert f"{t['source'].value} --> {t['dest'].value}: {t['trigger']}" in text
