"""``hwf add --adopt``: register a set partly done by hand at the stage Alma's own job history proves.

The history is read and judged by ``service.audit``. The runs that count are recorded as finished attempts
(so hwf never runs those steps again), each step's transition fired as if hwf had run it; the next step's
latest run, if it is still running, is polled from here, and if it failed, the set needs attention. An
invalid order stops the adoption where it breaks, with an attention reason saying what to do.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from sqlalchemy import func, select

from orchestrator.domain.attention import Attention
from orchestrator.domain.steps import JOB_STEPS, Stage, Step, StepFacts
from orchestrator.domain.wording import plural
from orchestrator.errors import BadInputError
from orchestrator.service import membership, preflight, views, workflow
from orchestrator.service.actions.instances import adopted_by
from orchestrator.service.audit import AuditReport, AuditRun, audit_set, reached
from orchestrator.service.context import Context, find_set
from orchestrator.store.ledger import Ledger, new_token
from orchestrator.store.models import AlmaSet, Attempt, AttemptState, Event, Record

_SET_ID = re.compile(r"^\d{1,40}$")


def adopt(ctx: Context, alma_set_id: str, name: str | None = None) -> views.SetSummary:
    """Register a set partly done by hand at the stage Alma's history proves, recording the runs as
    finished attempts; an invalid order stops adoption there with an attention reason.

    :raises BadInputError: not a set id, already registered and moved on, or a run still running that
        is not the set's next step.
    """
    alma_set_id = alma_set_id.strip()
    if not _SET_ID.match(alma_set_id):
        raise BadInputError(f"{alma_set_id!r} is not an Alma set id (digits only)")
    with ctx.sessions() as session:
        row = session.scalar(select(AlmaSet).where(AlmaSet.alma_set_id == alma_set_id))
        if row is not None:
            busy = session.scalar(select(func.count()).select_from(Attempt).where(Attempt.set_id == row.id))
            moved = session.scalar(
                select(func.count()).select_from(Event).where(Event.set_id == row.id, Event.kind == "transition")
            )
            if row.stage is not Stage.CREATED or busy or moved:
                raise BadInputError(
                    f"set {alma_set_id} is already registered and hwf has worked on it; "
                    f"see `hwf audit {alma_set_id}` and `hwf history {alma_set_id}`"
                )
    info = ctx.alma.get_set(alma_set_id)
    if (info.type or "").upper() == "LOGICAL":
        membership.refuse_logical_adoption(info)
    report = audit_set(ctx, alma_set_id)
    taken = [r for r in report.runs if r.known_to_hwf]
    if taken:
        with ctx.sessions() as session:
            owner = adopted_by(session, taken[0].instance_id)
        raise BadInputError(
            f"the {taken[0].step} run {taken[0].instance_id} on set {alma_set_id} is already adopted by {owner}; "
            "one run cannot count for two sets: see `hwf history` of that set"
        )
    stray = [r for r in report.runs if not r.terminal and r is not report.frontier]
    if stray:
        raise BadInputError(
            f"the {stray[0].step} run {stray[0].instance_id} on set {alma_set_id} is still running and is not "
            "the set's next step: adopt the set once it has ended"
        )
    if row is None:
        workflow.add_set(ctx, alma_set_id, name)
    with ctx.sessions() as session:
        set_id = find_set(session, alma_set_id).id
    if report.proven_stage != Stage.CREATED.value:
        preflight.check_records(ctx, set_id, attend_to=False)  # the stage it checks for is the adopted one
    _record_adoption(ctx, set_id, report)
    return views.status(ctx, alma_set_id)[0]


def _run_fields(run: AuditRun, state: AttemptState, now: datetime) -> dict[str, Any]:
    """An adopted run as an attempt's fields: Alma's times in Alma's columns, hwf's clock in its own."""
    return {
        "token": new_token("adopted"),
        "origin": "adopted",
        "job_id": run.job_id,
        "job_name": (run.name or "")[:255] or None,
        "instance_id": run.instance_id,
        "status": run.status,
        "counters": run.counters,
        "note": f"adopted from Alma's job history (run by {run.by})",
        "submitted_at": now,
        "ended_at": now if state is AttemptState.FINISHED else None,
        "alma_submitted_at": run.submit_time,
        "alma_started_at": run.start_time,
        "alma_ended_at": run.end_time,
        "next_poll_at": now if state is AttemptState.SUBMITTED else None,
    }


def _record_adoption(ctx: Context, set_id: int, report: AuditReport) -> None:
    target = reached(Stage(report.proven_stage))
    with ctx.ledger() as book:
        row = book.set(set_id)
        book.event(
            row,
            "audit",
            f"adopting from Alma's job history ({report.date_from} to {report.date_to}): "
            f"{plural(len(report.runs), 'run')}; "
            f"the history proves {report.proven_stage}" + ("" if report.valid else "; the order is INVALID"),
            runs=[r.as_json() for r in report.runs],
            findings=[f.as_json() for f in report.findings],
        )
        done = 0
        for step in JOB_STEPS[:target]:
            if not _adopt_step(book, row, step, report):
                break
            done += 1
        book.session.flush()
        if done == target:
            _frontier(ctx, book, row, report)
        if not report.valid:
            errors = [f for f in report.findings if f.severity == "error"]
            book.attention(
                row,
                Attention.AUDIT,
                f"adopted at {row.stage.value}, not further: {errors[0].message} {errors[0].action}",
            )


def _adopt_step(book: Ledger, row: AlmaSet, step: Step, report: AuditReport) -> bool:
    """Record the runs that count for ``step`` and fire its transition; False when the adoption stops here."""
    runs = report.counted.get(step.value, [])
    if step is Step.COPY_IDENTIFIERS and report.copy_skipped and not runs and not _adopt_skipped_copy(book, row):
        return False
    ready = not step.spec.prechecks or preflight.records_ready(book.session, row, step)
    if not ready:
        book.event(
            row,
            "adopt_stopped",
            f"adopted at {row.stage.value}: the {step.value} job ran in Alma, but the records are not "
            f"ready for it now (see `hwf check {row.alma_set_id}`); hwf will run it again once they are",
        )
        return False
    for run in runs:
        book.new_attempt(row, step, AttemptState.FINISHED, **_run_fields(run, AttemptState.FINISHED, book.now))
        _adopted_run_event(book, row, step, run, f"{run.status} ({run.verdict})")
    book.fire(
        row,
        step,
        StepFacts(job_ok=True, records_ready=ready),
        how=", adopted from Alma's job history",
        adopted=True,
        instance_id=runs[-1].instance_id if runs else None,
    )
    return True


def _adopt_skipped_copy(book: Ledger, row: AlmaSet) -> bool:
    """A migration ran without a copy run: record the copy as not needed if every record had its handle in
    a plain dc:identifier (True); else stop the adoption there (False)."""
    needs_copy = book.session.scalar(
        select(func.count())
        .select_from(Record)
        .where(Record.set_id == row.id, Record.excluded.is_(False), Record.preflight == "NEEDS_COPY")
    )
    if needs_copy:
        book.event(
            row,
            "adopt_stopped",
            f"adopted at {row.stage.value}: the migration ran without a copy run while {needs_copy} "
            "records have their handle only in dcterms:identifier; hwf runs the copy, then the "
            "migration again",
        )
        return False
    book.new_attempt(
        row,
        Step.COPY_IDENTIFIERS,
        AttemptState.NOT_NEEDED,
        token=new_token("not-needed"),
        origin="skipped",
        note="adopted: the migration ran without a copy, and every record is READY",
    )
    return True


def _adopted_run_event(book: Ledger, row: AlmaSet, step: Step, run: AuditRun, outcome: str) -> None:
    """The audit event of a run hwf adopted from Alma's job history instead of submitting it."""
    book.event(
        row,
        "adopted_run",
        f"{step.value}: adopted job {run.job_id} instance {run.instance_id} by {run.by}, {outcome}",
        job_id=run.job_id,
        instance_id=run.instance_id,
        status=run.status,
        by=run.by,
    )


def _frontier(ctx: Context, book: Ledger, row: AlmaSet, report: AuditReport) -> None:
    """The next step's latest run, if it failed (attention) or is running (hwf polls it from here)."""
    run = report.frontier
    if run is None or not report.valid:
        return
    step = Step(run.step)
    if step.source is not row.stage:
        return
    state = AttemptState.FINISHED if run.terminal else AttemptState.SUBMITTED
    attempt = book.new_attempt(row, step, state, **_run_fields(run, state, book.now))
    if state is AttemptState.SUBMITTED:
        attempt.poll_interval = ctx.config.alma.poll_interval_seconds
    _adopted_run_event(book, row, step, run, run.status)
    if run.terminal:
        book.attention(
            row,
            Attention.JOB,
            f"{step.value} job {run.job_id} instance {run.instance_id} (run by {run.by} before hwf adopted the set) "
            f"ended {run.status}; see its report in Alma, fix the cause, then "
            f"`hwf retry {row.alma_set_id} --reason TEXT`",
        )
