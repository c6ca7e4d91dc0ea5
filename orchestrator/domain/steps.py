"""The workflow's order, written once.

``ORDER`` is the ordered table of steps: for each, the milestone before and after it, the key under
``[alma.jobs]`` naming its Alma job (none for verification), whether a fresh preflight runs before its
job is submitted, and the guards its transition must pass. Every other view of the order derives from
this table: the state machine's transitions, the configuration's job keys, the audit's walk through
Alma's history, the overview's work left and ETA, ``confirm``'s step, the dry run. Adding a step is a
row here (and the code that runs it).

This module imports nothing else of hwf's, so that the configuration (which sits below the domain)
may read the job keys from it.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass


class Stage(enum.Enum):
    """A set's milestones (the state machine's states; stored as the ``sets.state`` column)."""

    CREATED = "created"
    IDENTIFIERS_COPIED = "identifiers_copied"
    MIGRATED = "migrated"
    INTEGRATED = "integrated"
    VERIFIED = "verified"


class Step(enum.Enum):
    """The steps: each is a trigger of the state machine and, except verify, an Alma job."""

    COPY_IDENTIFIERS = "copy_identifiers"
    MIGRATE = "migrate"
    INTEGRATE = "integrate"
    VERIFY = "verify"

    @property
    def spec(self) -> StepSpec:
        return _SPECS[self]

    @property
    def job_key(self) -> str | None:
        """The key under [alma.jobs] naming this step's job, or None for verify."""
        return self.spec.job_key

    @property
    def source(self) -> Stage:
        return self.spec.before

    @property
    def dest(self) -> Stage:
        return self.spec.after

    @property
    def label(self) -> str:
        return self.spec.label


@dataclass(frozen=True)
class StepFacts:
    """What the service has established about a step before firing its trigger."""

    job_ok: bool = False  # the step's Alma job reached a good terminal status (or was not needed)
    records_ready: bool = False  # preflight / post-copy check: every included record is ready
    settled: bool = False  # settle time after the integration run has passed
    all_verified: bool = False  # every included record's handle resolved to its own record


Guard = Callable[[StepFacts], bool]


def job_ok(facts: StepFacts) -> bool:
    return facts.job_ok


def records_ready(facts: StepFacts) -> bool:
    return facts.records_ready


def settled(facts: StepFacts) -> bool:
    return facts.settled


def all_verified(facts: StepFacts) -> bool:
    return facts.all_verified


@dataclass(frozen=True)
class StepSpec:
    """One row of the order."""

    step: Step
    before: Stage
    after: Stage
    job_key: str | None  # the key under [alma.jobs] naming the step's Alma job; None: no job (verification)
    label: str  # how people call the step: "the copy", "the migration", ...
    prechecks: bool  # every record is read and classified again right before the job is submitted
    guards: tuple[Guard, ...]  # the transition fires only when every guard holds

    def holds(self, facts: StepFacts) -> bool:
        return all(guard(facts) for guard in self.guards)


ORDER: tuple[StepSpec, ...] = (
    StepSpec(
        Step.COPY_IDENTIFIERS,
        Stage.CREATED,
        Stage.IDENTIFIERS_COPIED,
        "copy_identifiers",
        "copy",
        prechecks=True,
        guards=(records_ready, job_ok),
    ),
    StepSpec(
        Step.MIGRATE,
        Stage.IDENTIFIERS_COPIED,
        Stage.MIGRATED,
        "handle_migration",
        "migration",
        prechecks=True,
        guards=(records_ready, job_ok),
    ),
    StepSpec(
        Step.INTEGRATE,
        Stage.MIGRATED,
        Stage.INTEGRATED,
        "handle_integration",
        "integration",
        prechecks=False,
        guards=(job_ok,),
    ),
    StepSpec(
        Step.VERIFY,
        Stage.INTEGRATED,
        Stage.VERIFIED,
        None,
        "verification",
        prechecks=False,
        guards=(settled, all_verified),
    ),
)

_SPECS = {spec.step: spec for spec in ORDER}
JOB_STEPS: tuple[Step, ...] = tuple(spec.step for spec in ORDER if spec.job_key is not None)
JOB_KEYS: tuple[str, ...] = tuple(spec.job_key for spec in ORDER if spec.job_key is not None)
STAGES: tuple[Stage, ...] = (ORDER[0].before, *(spec.after for spec in ORDER))  # in the order they are reached


def _check_chain() -> None:
    """The table is one chain: each step starts where the one before it ends, every stage once."""
    for earlier, later in zip(ORDER, ORDER[1:], strict=False):
        if earlier.after is not later.before:
            raise AssertionError(f"the order breaks between {earlier.step.value} and {later.step.value}")
    if set(STAGES) != set(Stage) or len(STAGES) != len(Stage) or set(_SPECS) != set(Step):
        raise AssertionError("the order must name every stage once and every step once")


_check_chain()


def next_step(stage: Stage) -> Step | None:
    """The one step that can run from ``stage`` (None once verified)."""
    for spec in ORDER:
        if spec.before is stage:
            return spec.step
    return None


def steps_left(stage: Stage) -> tuple[Step, ...]:
    """The steps a set at ``stage`` still has to go through, in order."""
    return tuple(spec.step for spec in ORDER[STAGES.index(stage) :])


def job_steps_left(stage: Stage) -> tuple[Step, ...]:
    """The Alma jobs a set at ``stage`` still has to run, in order."""
    return tuple(step for step in steps_left(stage) if step.job_key is not None)


def step_for_job(job_key: str) -> Step:
    """The step whose job is configured under ``[alma.jobs] job_key``."""
    for spec in ORDER:
        if spec.job_key == job_key:
            return spec.step
    raise KeyError(job_key)
