"""Runs made by a person in Alma's UI, as Alma's job history shows them.

- Admin > Run a Job: the operator picks a job and a set; the instance is named
  ``<job name> - <set name> - <MM/DD/YYYY HH:MM:SS TZ>`` (institution time).
- Configuration > Integration Profiles > the Handle profile > Actions > Run: an instance of the
  scenario's integration job named exactly ``Handle integration``, no set name, no time stamp.

Both are submitted by the person (``submitted_by`` their primary id, with a desc), not ``exl_api``;
they run, end and change the records exactly as an API run does, and count for the per-hour rule
(402223) but not for the three running API jobs (402222). No API fault touches them.
"""

from __future__ import annotations

from .jobs import start_instance
from .state import Instance, SimState
from .wire import ui_stamp

DEFAULT_USER = "jdoe"
INTEGRATION_RUN_NAME = "Handle integration"


def _person(user: str, user_desc: str | None) -> tuple[str, str]:
    if not isinstance(user, str) or not user.strip():
        raise ValueError("user must be a staff user's primary id (a non-empty string)")
    if user.strip() == "exl_api":
        raise ValueError("exl_api is the API's own user, not a person")
    return user.strip(), user_desc or "Operator, Simulated"


def run_job_by_hand(
    state: SimState, job_id: str, set_id: str, user: str = DEFAULT_USER, user_desc: str | None = None
) -> Instance:
    """Admin > Run a Job. :raises ValueError: unknown job or set, or no user."""
    job = state.jobs.get(job_id)
    if job is None:
        raise ValueError(f"no job {job_id!r} in the catalogue")
    sim_set = state.sets.get(set_id)
    if sim_set is None:
        raise ValueError(f"no set with id {set_id!r}")
    person = _person(user, user_desc)
    name = f"{job.name} - {sim_set.name} - {ui_stamp(state.now(), state.zone)}"
    return start_instance(
        state,
        job,
        sim_set,
        name=name,
        parameters=[("set_id", set_id)],
        origin="run_a_job",
        submitted_by=person,
    )


def press_integration_run(
    state: SimState, set_name: str, user: str = DEFAULT_USER, user_desc: str | None = None
) -> Instance:
    """The handle integration profile's Run, with ``set_name`` as the profile's set.

    :raises ValueError: no set of that name, no integration job in the catalogue, or no user.
    """
    job = state.scenario.job("integration")
    if job is None:
        raise ValueError("the job catalogue has no integration job")
    sim_set = state.set_named(set_name)
    if sim_set is None:
        raise ValueError(f"no set named {set_name!r}")
    person = _person(user, user_desc)
    return start_instance(
        state,
        job,
        sim_set,
        name=INTEGRATION_RUN_NAME,
        origin="integration_profile",
        submitted_by=person,
    )
