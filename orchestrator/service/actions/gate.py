"""Alma's job limits, written once: at most ``max_running_jobs`` API jobs running at once, and at most
``max_runs_per_job_hour`` runs of one job in any hour, counted across every set in the database.

Submission, the dry run and the scheduler all ask the same :class:`JobSlots`. A job counts as running from
the moment its attempt is committed (``submitting``) until hwf reads its end; a start counts for the hour
from the moment its attempt was committed, unless Alma never took it (abandoned) or it was never a run
(a step recorded as not needed).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from orchestrator.config import AlmaConfig
from orchestrator.display import utc_stamp
from orchestrator.domain.jobrules import window_free_at
from orchestrator.domain.steps import Step
from orchestrator.store.models import Attempt, AttemptState

SLOT_WAIT = "waiting for a job slot"  # how every wait for Alma's job limits begins
RESCAN_SECONDS = 60.0  # the longest to wait before looking again for a running-job slot

_RUNNING = (AttemptState.SUBMITTING, AttemptState.SUBMITTED)
_NOT_A_RUN = (AttemptState.ABANDONED, AttemptState.NOT_NEEDED)
# When a run started, for the hourly count: a run hwf submitted counts from the moment its attempt was
# committed; a run hwf took over from Alma's history counts from when Alma says it was submitted.
STARTED = case(
    (
        Attempt.origin.in_(("found", "adopted")),
        func.coalesce(Attempt.alma_submitted_at, Attempt.alma_started_at, Attempt.begun_at),
    ),
    else_=Attempt.begun_at,
)


@dataclass
class JobSlots:
    """Alma's job limits as they stand: jobs running, and each job's starts in the last hour."""

    max_running: int
    per_hour: int
    running: int = 0
    recent: dict[str, list[datetime]] = field(default_factory=dict)  # job id -> starts in the last hour, oldest first
    next_poll: datetime | None = None  # the soonest poll of a running job (when a slot may free)

    @classmethod
    def load(cls, session: Session, now: datetime, *, max_running: int, per_hour: int) -> JobSlots:
        """The limits as the database shows them at ``now``."""
        slots = cls(max_running, per_hour)
        slots.running = int(
            session.scalar(
                select(func.count())
                .select_from(Attempt)
                .where(Attempt.state.in_(_RUNNING), Attempt.job_id.is_not(None))
            )
            or 0
        )
        slots.next_poll = session.scalar(
            select(func.min(Attempt.next_poll_at)).where(
                Attempt.state == AttemptState.SUBMITTED, Attempt.job_id.is_not(None)
            )
        )
        for job_id, started in session.execute(
            select(Attempt.job_id, STARTED)
            .where(Attempt.job_id.is_not(None), STARTED >= now - timedelta(hours=1), Attempt.state.not_in(_NOT_A_RUN))
            .order_by(STARTED)
        ):
            slots.recent.setdefault(job_id or "", []).append(started)
        return slots

    @classmethod
    def of(cls, session: Session, now: datetime, alma: AlmaConfig, *, max_running: int | None = None) -> JobSlots:
        """The limits of ``[alma]`` (``max_running``: a lower cap on running jobs, ``--max-running``)."""
        cap = min(max_running, alma.max_running_jobs) if max_running else alma.max_running_jobs
        return cls.load(session, now, max_running=cap, per_hour=alma.max_runs_per_job_hour)

    def refusal(self, step: Step, job_id: str, now: datetime) -> tuple[str, datetime | None] | None:
        """Why ``step``'s job cannot start now, and when it can (None: when a running job ends)."""
        if self.running >= self.max_running:
            return f"{SLOT_WAIT}: {self.running} Alma jobs running (at most {self.max_running} at once)", None
        starts = self.recent.get(job_id, [])
        free = window_free_at(starts, self.per_hour)
        if free is not None:
            return (
                f"{SLOT_WAIT}: job {job_id} ({step.value}) started {len(starts)} times in the last hour "
                f"(Alma allows {self.per_hour}); next slot at {utc_stamp(free)}",
                free,
            )
        return None

    def slot_may_free(self, now: datetime) -> datetime:
        """When to look again for a running-job slot: just after the soonest poll of a running job (whoever
        drives it, maybe another process), at most a rescan away."""
        latest = now + timedelta(seconds=RESCAN_SECONDS)
        if self.next_poll is None:
            return latest
        return min(max(self.next_poll + timedelta(seconds=0.5), now + timedelta(seconds=0.5)), latest)

    def take(self, job_id: str, now: datetime) -> None:
        """Count a start this pass has admitted, before it is committed."""
        self.running += 1
        self.recent.setdefault(job_id, []).append(now)
