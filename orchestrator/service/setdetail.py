"""One set in full, for the dashboard's set page and ``/api/sets/{id}``: its milestones and job runs, the
verdict and preflight breakdowns, the problem records, the operator's actions (exclusions, repairs,
retries, confirmations, with who did them) and the bib backups.

The read side only: short read transactions, frozen dataclasses out, no rendering.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select

from orchestrator.display import iso_z
from orchestrator.domain.attention import advice, next_command
from orchestrator.domain.jobrules import run_seconds
from orchestrator.service import verification, views
from orchestrator.service.context import Context, find_set
from orchestrator.store.models import Attempt, Backup, Event, Record

PROBLEMS_SHOWN = 500
OPERATOR_KINDS = (
    "exclude",
    "include",
    "fix",
    "fix_undo",
    "retry",
    "confirm",
    "operator_action",
    "attention_cleared",
    "adopted_run",
    "added",
)
_OPERATOR_EVENTS_SHOWN = 500


@dataclass(frozen=True)
class Milestone:
    at: datetime
    from_state: str | None
    to_state: str | None
    detail: str
    actor: str | None

    def as_json(self) -> dict[str, Any]:
        return {"at": iso_z(self.at), "from": self.from_state, "to": self.to_state, "detail": self.detail}


@dataclass(frozen=True)
class JobRun:
    """One submission of a step: when hwf sent it, when Alma started it, when it ended, and what it did."""

    step: str
    number: int
    state: str
    job_id: str | None
    instance_id: str | None
    status: str | None
    progress: float | None
    counters: tuple[tuple[str, str], ...]  # (description, value)
    begun_at: datetime  # hwf's clock: the attempt was committed and its POST sent
    alma_started_at: datetime | None  # Alma's clock: the run started (unknown until Alma says)
    ended_at: datetime | None  # hwf's clock: hwf read the run's end
    duration_seconds: float | None  # submission to end, on one clock (domain.jobrules.run_seconds)
    note: str | None

    def as_json(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "attempt": self.number,
            "state": self.state,
            "job_id": self.job_id,
            "instance_id": self.instance_id,
            "status": self.status,
            "progress": self.progress,
            "counters": [{"desc": d, "value": v} for d, v in self.counters],
            "submitted_at": iso_z(self.begun_at),
            "started_at": iso_z(self.alma_started_at),
            "ended_at": iso_z(self.ended_at),
            "duration_seconds": self.duration_seconds,
            "note": self.note,
        }


@dataclass(frozen=True)
class OperatorEvent:
    at: datetime
    kind: str
    detail: str
    actor: str | None

    def as_json(self) -> dict[str, Any]:
        return {"at": iso_z(self.at), "kind": self.kind, "detail": self.detail, "actor": self.actor}


@dataclass(frozen=True)
class BackupView:
    mms_id: str
    state: str
    detail: str | None
    created_at: datetime
    updated_at: datetime

    def as_json(self) -> dict[str, Any]:
        return {
            "mms_id": self.mms_id,
            "state": self.state,
            "detail": self.detail,
            "created_at": iso_z(self.created_at),
            "updated_at": iso_z(self.updated_at),
        }


@dataclass(frozen=True)
class SetDetail:
    summary: views.SetSummary
    created_at: datetime
    updated_at: datetime
    attention_kind: str | None
    attention_command: str | None
    attention_advice: str | None
    last_checked: datetime | None
    milestones: tuple[Milestone, ...]
    jobs: tuple[JobRun, ...]
    verdicts: dict[str, int]  # verdict (or UNCHECKED, EXCLUDED) -> records
    preflight: dict[str, int]  # preflight class (or UNCHECKED) -> records
    problems: tuple[verification.ReportRow, ...]  # the first PROBLEMS_SHOWN
    problems_total: int
    operator_events: tuple[OperatorEvent, ...]
    backups: tuple[BackupView, ...]

    @property
    def backup_states(self) -> dict[str, int]:
        return dict(Counter(b.state for b in self.backups))

    def as_json(self) -> dict[str, Any]:
        return {
            **self.summary.as_json(),
            "created_at": iso_z(self.created_at),
            "updated_at": iso_z(self.updated_at),
            "attention_kind": self.attention_kind,
            "attention_command": self.attention_command,
            "attention_advice": self.attention_advice,
            "last_checked": iso_z(self.last_checked),
            "milestones": [m.as_json() for m in self.milestones],
            "jobs": [j.as_json() for j in self.jobs],
            "verdicts": dict(self.verdicts),
            "preflight_classes": dict(self.preflight),
            "problems": [p.as_json() for p in self.problems],
            "problems_total": self.problems_total,
            "operator_events": [e.as_json() for e in self.operator_events],
            "backups": [b.as_json() for b in self.backups],
        }


def _counters(raw: list[Any] | None) -> tuple[tuple[str, str], ...]:
    out = []
    for c in raw or []:
        if isinstance(c, dict):
            out.append(
                (str(c.get("desc") or c.get("code") or ""), str(c.get("value") if c.get("value") is not None else ""))
            )
    return tuple(out)


def _is_problem(r: verification.ReportRow) -> bool:
    """Excluded, checked and not OK, or (not yet checked) of a preflight class the jobs would not take."""
    if r.excluded or r.verdict not in (None, "OK"):
        return True
    return r.verdict is None and r.preflight not in (None, "READY", "NEEDS_COPY")


def _milestones(session: Any, set_id: int) -> tuple[Milestone, ...]:
    return tuple(
        Milestone(
            at=e.at,
            from_state=(e.data or {}).get("from"),
            to_state=(e.data or {}).get("to"),
            detail=e.detail,
            actor=e.actor,
        )
        for e in session.scalars(
            select(Event).where(Event.set_id == set_id, Event.kind == "transition").order_by(Event.id)
        )
    )


def _jobs(session: Any, set_id: int) -> tuple[JobRun, ...]:
    return tuple(
        JobRun(
            step=a.step,
            number=a.number,
            state=a.state.value,
            job_id=a.job_id,
            instance_id=a.instance_id,
            status=a.status,
            progress=a.progress,
            counters=_counters(a.counters),
            begun_at=a.begun_at,
            alma_started_at=a.alma_started_at,
            ended_at=a.ended_at,
            duration_seconds=run_seconds(a.alma_submitted_at, a.alma_ended_at, a.submitted_at, a.ended_at),
            note=a.note,
        )
        for a in session.scalars(select(Attempt).where(Attempt.set_id == set_id).order_by(Attempt.id))
    )


def set_detail(ctx: Context, ref: str) -> SetDetail:
    """Everything the set page shows. :raises BadInputError: unknown set."""
    with ctx.sessions() as session:
        row = find_set(session, ref)
        set_id, alma_id = row.id, row.alma_set_id
        created_at, updated_at, kind = row.created_at, row.updated_at, row.attention_kind
        milestones = _milestones(session, set_id)
        jobs = _jobs(session, set_id)
        verdicts: Counter[str] = Counter()
        preflight: Counter[str] = Counter()
        for verdict, cls, excluded, n in session.execute(
            select(Record.verdict, Record.preflight, Record.excluded, func.count())
            .where(Record.set_id == set_id)
            .group_by(Record.verdict, Record.preflight, Record.excluded)
        ):
            verdicts["EXCLUDED" if excluded else (verdict or "UNCHECKED")] += n
            preflight[cls or "UNCHECKED"] += n
        included, checked, oldest = session.execute(
            select(
                func.count(),
                func.count(Record.verified_at),
                func.min(Record.verified_at),
            ).where(Record.set_id == set_id, ~Record.excluded)
        ).one()
        operator_events = tuple(
            OperatorEvent(at=e.at, kind=e.kind, detail=e.detail, actor=e.actor)
            for e in session.scalars(
                select(Event)
                .where(Event.set_id == set_id, Event.kind.in_(OPERATOR_KINDS))
                .order_by(Event.id.desc())
                .limit(_OPERATOR_EVENTS_SHOWN)
            )
        )[::-1]
        backups = tuple(
            BackupView(
                mms_id=b.mms_id, state=b.state, detail=b.detail, created_at=b.created_at, updated_at=b.updated_at
            )
            for b in session.scalars(select(Backup).where(Backup.set_id == set_id).order_by(Backup.id))
        )
    problems: list[verification.ReportRow] = []
    total = 0
    for r in verification.report(ctx, alma_id, problems_only=True):
        if not _is_problem(r):
            continue
        total += 1
        if len(problems) < PROBLEMS_SHOWN:
            problems.append(r)
    summary = views.status(ctx, alma_id)[0]
    return SetDetail(
        summary=summary,
        created_at=created_at,
        updated_at=updated_at,
        attention_kind=kind if summary.attention else None,
        attention_command=next_command(kind, alma_id, summary.attention) if summary.attention else None,
        attention_advice=advice(kind, alma_id, summary.attention) if summary.attention else None,
        last_checked=oldest if included and checked == included else None,
        milestones=milestones,
        jobs=jobs,
        verdicts=dict(sorted(verdicts.items(), key=lambda kv: (kv[0] != "OK", kv[0]))),
        preflight=dict(sorted(preflight.items())),
        problems=tuple(problems),
        problems_total=total,
        operator_events=operator_events,
        backups=backups,
    )
