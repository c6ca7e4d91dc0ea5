"""``hwf doctor``: find what a crash, a killed process or a hand edit left behind, and say what to do.

Reads the database without changing it (the schema is checked *before* anything would upgrade it), and
asks Alma about the job instances sets are waiting on. Each finding is a ``problem`` (something needs
doing: the command exits 1) or a ``note`` (worth knowing, nothing to do).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from alembic.script import ScriptDirectory
from sqlalchemy import Engine, String, select, type_coerce
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from orchestrator.alma.types import TERMINAL_STATUSES
from orchestrator.display import duration, utc_stamp
from orchestrator.domain.jobrules import UNKNOWN_INSTANCE_CODES
from orchestrator.domain.steps import ORDER, STAGES, Stage, Step, next_step
from orchestrator.errors import AlmaError, DatabaseError
from orchestrator.service.context import Context
from orchestrator.store import db
from orchestrator.store.leases import dead_local_owner
from orchestrator.store.models import AlmaSet, Attempt, AttemptState

PROBLEM = "problem"
NOTE = "note"
_STEP_ORDER = {spec.step.value: i for i, spec in enumerate(ORDER)}  # positions in the workflow's order
_STAGE_ORDER = {s.value: i for i, s in enumerate(STAGES)}
_STATES = {s.value for s in AttemptState}


@dataclass(frozen=True)
class DoctorFinding:
    """One thing the doctor found: what, on which set, and what the operator should do about it."""

    kind: str  # schema, database, lease, submitting, unknown_instance, corrupt_attempt, corrupt_set, alma
    severity: str  # problem | note
    problem: str
    action: str
    set: str | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "severity": self.severity,
            "set": self.set,
            "problem": self.problem,
            "action": self.action,
            **({"data": self.data} if self.data else {}),
        }


@dataclass
class Diagnosis:
    """Everything ``hwf doctor`` found; ``healthy`` when nothing needs doing."""

    schema: str | None
    head: str
    findings: list[DoctorFinding] = field(default_factory=list)
    sets: int = 0
    attempts: int = 0
    instances_checked: int = 0

    @property
    def problems(self) -> list[DoctorFinding]:
        return [f for f in self.findings if f.severity == PROBLEM]

    @property
    def healthy(self) -> bool:
        return not self.problems

    def as_json(self) -> dict[str, Any]:
        return {
            "healthy": self.healthy,
            "schema": self.schema,
            "head": self.head,
            "sets": self.sets,
            "attempts": self.attempts,
            "instances_checked": self.instances_checked,
            "findings": [f.as_json() for f in self.findings],
        }


def _hhmm(at: datetime) -> str:
    return utc_stamp(at)


def check_schema(url: str) -> tuple[Diagnosis, Engine | None]:
    """Where the database's schema stands, read without upgrading it. The engine is returned (for the
    caller to dispose) only when the schema is at head and the other checks can run."""
    head = db.head_revision()
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        path = Path(parsed.database or "").expanduser()
        if not path.exists():
            diagnosis = Diagnosis(schema=None, head=head)
            diagnosis.findings.append(
                DoctorFinding(
                    "database",
                    NOTE,
                    f"no database at {path} yet",
                    "nothing to do: `hwf add` creates it",
                )
            )
            return diagnosis, None
    engine = db.make_engine(url)
    try:
        current = db.current_revision(engine)
    except SQLAlchemyError as exc:
        engine.dispose()
        if db.database_failure(exc, url) is None:
            raise DatabaseError(f"cannot read the database schema: {str(exc).splitlines()[0]}") from None
        return _unreadable(head, [str(getattr(exc, "orig", None) or exc).splitlines()[0]]), None
    diagnosis = Diagnosis(schema=current, head=head)
    if current == head:
        problems = db.integrity_problems(engine)
        if problems:
            engine.dispose()
            diagnosis.findings.append(_corrupt_finding(problems))
            return diagnosis, None
        return diagnosis, engine
    engine.dispose()
    script = ScriptDirectory.from_config(db.alembic_config())
    known = {rev.revision for rev in script.walk_revisions()}
    if current is None:
        diagnosis.findings.append(
            DoctorFinding("schema", NOTE, "the database is empty (no hwf schema yet)", "nothing to do: hwf creates it")
        )
    elif current not in known:
        diagnosis.findings.append(
            DoctorFinding(
                "schema",
                PROBLEM,
                f"the database is at schema {current}, written by a newer hwf; this hwf knows up to {head}",
                "upgrade hwf on this machine (every hwf sharing the database must be at least as new)",
                data={"current": current, "head": head},
            )
        )
    else:
        diagnosis.findings.append(
            DoctorFinding(
                "schema",
                PROBLEM,
                f"the database schema is at {current}, not at {head}",
                "run `hwf db upgrade` (any hwf command also upgrades it on open)",
                data={"current": current, "head": head},
            )
        )
    return diagnosis, None


def _corrupt_finding(problems: list[str]) -> DoctorFinding:
    shown = "; ".join(problems[:3]) + (f"; +{len(problems) - 3} more" if len(problems) > 3 else "")
    return DoctorFinding(
        "database",
        PROBLEM,
        f"the database is damaged: {shown}",
        "stop every hwf using it, keep a copy of the file, restore the latest backup (SQLite: or try "
        "`sqlite3 FILE .recover`), then run `hwf doctor` again",
        data={"integrity": problems[:20]},
    )


def _unreadable(head: str, problems: list[str]) -> Diagnosis:
    diagnosis = Diagnosis(schema=None, head=head)
    diagnosis.findings.append(_corrupt_finding(problems))
    return diagnosis


@dataclass(frozen=True)
class _SetRow:
    id: int
    alma_set_id: str
    name: str
    stage: str
    attention: str | None
    lease_owner: str | None
    lease_expires_at: datetime | None


@dataclass(frozen=True)
class _AttemptRow:
    id: int
    set_id: int
    step: str
    number: int
    state: str
    job_id: str | None
    instance_id: str | None
    status: str | None
    begun_at: datetime | None
    ended_at: datetime | None


def _read(ctx: Context) -> tuple[list[_SetRow], list[_AttemptRow]]:
    """Sets and attempts as plain strings: a corrupted enum value must be reported, not crash the read."""
    s, a = AlmaSet.__table__.c, Attempt.__table__.c
    with ctx.sessions() as session:
        sets = [
            _SetRow(*r)
            for r in session.execute(
                select(
                    s.id,
                    s.alma_set_id,
                    s.name,
                    type_coerce(s.state, String),
                    s.attention,
                    s.lease_owner,
                    s.lease_expires_at,
                ).order_by(s.id)
            )
        ]
        attempts = [
            _AttemptRow(*r)
            for r in session.execute(
                select(
                    a.id,
                    a.set_id,
                    a.step,
                    a.number,
                    type_coerce(a.state, String),
                    a.job_id,
                    a.instance_id,
                    a.status,
                    a.begun_at,
                    a.ended_at,
                ).order_by(a.set_id, a.id)
            )
        ]
    return sets, attempts


def _live_lease(row: _SetRow, now: datetime) -> bool:
    return (
        row.lease_owner is not None
        and row.lease_expires_at is not None
        and row.lease_expires_at >= now
        and not dead_local_owner(row.lease_owner)
    )


def _lease_findings(row: _SetRow, now: datetime) -> list[DoctorFinding]:
    if row.lease_owner is None or _live_lease(row, now):
        return []
    if dead_local_owner(row.lease_owner):
        why = f"held by {row.lease_owner}, a process on this host that no longer runs (killed?)"
    else:
        expired = row.lease_expires_at
        why = f"held by {row.lease_owner}, expired {_hhmm(expired)}" if expired else f"held by {row.lease_owner}"
    return [
        DoctorFinding(
            "lease",
            PROBLEM,
            f"set {row.alma_set_id} ({row.name}): stale lease, {why}",
            f"`hwf advance {row.alma_set_id}` or `hwf resume --all` takes it over and goes on where it stopped",
            set=row.alma_set_id,
            data={"owner": row.lease_owner, "expires": row.lease_expires_at},
        )
    ]


def _corruption(row: _SetRow, a: _AttemptRow) -> list[str]:
    """What is inconsistent in one attempt row (empty when nothing)."""
    wrong: list[str] = []
    if a.step not in _STEP_ORDER or a.step == Step.VERIFY.value:
        wrong.append(f"unknown step {a.step!r}")
    if a.state not in _STATES:
        wrong.append(f"unknown state {a.state!r}")
    if a.begun_at is None:
        wrong.append("no start time")
    active = a.state in (AttemptState.SUBMITTING.value, AttemptState.SUBMITTED.value, AttemptState.FINISHED.value)
    if active and not a.job_id:
        wrong.append(f"{a.state} without a job id")
    if a.state in (AttemptState.SUBMITTED.value, AttemptState.FINISHED.value) and not a.instance_id:
        wrong.append(f"{a.state} without an instance id")
    if a.state == AttemptState.FINISHED.value:
        if not a.status:
            wrong.append("finished without a status")
        elif a.status not in TERMINAL_STATUSES:
            wrong.append(f"finished with the non-terminal status {a.status}")
    stage = _STAGE_ORDER.get(row.stage)
    current = next_step(Stage(row.stage)) if stage is not None else None
    if (
        a.step in _STEP_ORDER
        and stage is not None
        and current is not None
        and _STEP_ORDER[a.step] > _STEP_ORDER[current.value]
        and a.state in (AttemptState.SUBMITTED.value, AttemptState.FINISHED.value)
    ):
        wrong.append(f"a {a.step} job although the set is only at {row.stage} (out of order)")
    return wrong


def diagnose(ctx: Context, *, check_alma: bool = True, schema: Diagnosis | None = None) -> Diagnosis:
    """Look at every set and attempt; with ``check_alma``, ask Alma about the instances sets wait on."""
    diagnosis = schema or Diagnosis(schema=db.head_revision(), head=db.head_revision())
    now = ctx.clock()
    sets, attempts = _read(ctx)
    diagnosis.sets, diagnosis.attempts = len(sets), len(attempts)
    by_set: dict[int, list[_AttemptRow]] = {}
    for a in attempts:
        by_set.setdefault(a.set_id, []).append(a)
    grace = ctx.config.alma.reconcile_grace_seconds + ctx.config.alma.timeout_seconds
    to_ask: list[tuple[_SetRow, _AttemptRow]] = []
    for row in sets:
        diagnosis.findings.extend(_lease_findings(row, now))
        if row.stage not in _STAGE_ORDER:
            diagnosis.findings.append(
                DoctorFinding(
                    "corrupt_set",
                    PROBLEM,
                    f"set {row.alma_set_id} ({row.name}) has the unknown state {row.stage!r}",
                    "set the state by hand to the last milestone `hwf history` shows (hwf will not move it)",
                    set=row.alma_set_id,
                )
            )
            continue
        current = next_step(Stage(row.stage))
        latest: dict[str, _AttemptRow] = {}
        for a in by_set.get(row.id, []):
            wrong = _corruption(row, a)
            if wrong:
                diagnosis.findings.append(
                    DoctorFinding(
                        "corrupt_attempt",
                        PROBLEM,
                        f"set {row.alma_set_id}: attempt {a.number} of {a.step} (row {a.id}) is inconsistent: "
                        + "; ".join(wrong),
                        f"compare with `hwf history {row.alma_set_id} --steps` and Alma's Monitor Jobs, then "
                        "correct the row by hand (or remove it if the job never ran); "
                        "hwf cannot safely go on with this set",
                        set=row.alma_set_id,
                        data={"attempt_row": a.id, "problems": wrong},
                    )
                )
                continue
            if latest.get(a.step) is None or a.number > latest[a.step].number:
                latest[a.step] = a
        attempt = latest.get(current.value) if current is not None else None
        if attempt is None:
            continue
        if attempt.state == AttemptState.SUBMITTING.value and attempt.begun_at is not None:
            age = (now - attempt.begun_at).total_seconds()
            live = _live_lease(row, now)
            if live and age <= grace:
                continue
            where = f"while {row.lease_owner} holds the set" if live else "and no hwf process is working on it"
            diagnosis.findings.append(
                DoctorFinding(
                    "submitting",
                    PROBLEM,
                    f"set {row.alma_set_id}: the {attempt.step} job (attempt {attempt.number}) has been submitting "
                    f"for {duration(age)} {where}: the POST's outcome is unknown",
                    f"`hwf resume --all` (or `hwf advance {row.alma_set_id}`) looks the job up by its token and "
                    "adopts it, or resubmits once it has surely not reached Alma; do not run the job by hand",
                    set=row.alma_set_id,
                    data={"attempt": attempt.number, "step": attempt.step, "age_seconds": round(age, 1)},
                )
            )
        elif attempt.state == AttemptState.SUBMITTED.value and attempt.job_id and attempt.instance_id:
            to_ask.append((row, attempt))
    if check_alma and to_ask:
        _ask_alma(ctx, diagnosis, to_ask)
    return diagnosis


def _ask_alma(ctx: Context, diagnosis: Diagnosis, to_ask: list[tuple[_SetRow, _AttemptRow]]) -> None:
    for row, attempt in to_ask:
        assert attempt.job_id is not None and attempt.instance_id is not None
        try:
            ctx.alma.get_instance(attempt.job_id, attempt.instance_id)
            diagnosis.instances_checked += 1
        except AlmaError as exc:
            if exc.status == 400 and exc.code in UNKNOWN_INSTANCE_CODES:
                diagnosis.instances_checked += 1
                diagnosis.findings.append(
                    DoctorFinding(
                        "unknown_instance",
                        PROBLEM,
                        f"set {row.alma_set_id} waits on {attempt.step} job {attempt.job_id} instance "
                        f"{attempt.instance_id}, which Alma no longer knows ({exc.code})",
                        f"look for the run in Alma (Monitor Jobs > History): if it ran under another id, "
                        f"`hwf confirm {row.alma_set_id} --instance ID`; if it never ran, "
                        f"`hwf retry {row.alma_set_id} --reason TEXT` submits the step again",
                        set=row.alma_set_id,
                        data={"job_id": attempt.job_id, "instance_id": attempt.instance_id},
                    )
                )
                continue
            diagnosis.findings.append(
                DoctorFinding(
                    "alma",
                    PROBLEM,
                    f"could not ask Alma about {len(to_ask) - diagnosis.instances_checked} job instance(s): {exc}",
                    "check the network and [alma] settings, then run `hwf doctor` again "
                    "(or `hwf doctor --offline` to skip Alma)",
                )
            )
            return


def run(
    url: str,
    context_for: Callable[[], Context],
    *,
    check_alma: bool = True,
) -> Diagnosis:
    """The whole check: the schema first, without upgrading; the rest only when the schema is at head.

    ``context_for`` builds the Context (it opens the database, which is at head by then).
    """
    schema, engine = check_schema(url)
    if engine is None:
        return schema
    engine.dispose()
    ctx = context_for()
    try:
        return diagnose(ctx, check_alma=check_alma, schema=schema)
    finally:
        ctx.close()
