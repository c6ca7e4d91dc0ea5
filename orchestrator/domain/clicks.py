"""What a person does in Alma's own screens for a step hwf cannot run itself, written once: the terminal, ``hwf
status``, ``hwf overview``, the dashboard and the notifications all show these words."""

from __future__ import annotations


def run_a_job_clicks(job_name: str, set_name: str, set_id: str) -> str:
    """What a person does in Alma to run a job on a set by hand, and how hwf then finds the run."""
    return (
        f"In Alma: Admin > Run a Job > find the job {job_name!r} > Next > select the set {set_name!r} > Next > "
        "the job's parameters as your institution runs it > Submit. hwf finds the run by the set's name (Alma "
        f"names it '{job_name} - {set_name} - <date and time>'), or give it the Job ID with "
        f"`hwf confirm {set_id} --instance ID`."
    )


def profile_clicks(set_name: str) -> str:
    """What a person does in Alma to run the handle integration profile on a set."""
    return (
        "In Alma: Configuration > General > External Systems > Integration Profiles > the Handle profile > "
        f"Actions tab: Set name = {set_name!r}; Action = Create and Update; DC METADATA Upon Create = "
        "Do not add to metadata; press Run (not Save)."
    )
