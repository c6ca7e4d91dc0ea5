"""The fresh check before the copy or the migration job: every record read and classified again, right
before its job would be submitted.

Before the copy job, a record that would fail or be skipped (no handle, a malformed or shared handle, not
Dublin Core, unreadable, missing) stops the set; when no record has its handle only in dcterms:identifier,
the copy job is not needed and the step is recorded as skipped. Before the migration job, any record not
READY stops the set: the Handle Migration job would skip it silently.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import TYPE_CHECKING

from sqlalchemy import select

from orchestrator.alma.client import MAX_BIBS_PER_CALL
from orchestrator.domain.attention import Attention
from orchestrator.domain.dc import BLOCKING, Preflight
from orchestrator.domain.steps import Step
from orchestrator.domain.wording import plural
from orchestrator.service import attend, preflight
from orchestrator.service.actions.base import Plan, PlannedAction, PlannedRequest, Preview, Scene, arrow
from orchestrator.service.actions.plan import plan_step
from orchestrator.service.membership import stop_on_drift
from orchestrator.store.ledger import Ledger, new_token
from orchestrator.store.models import AlmaSet, AttemptState, Record

if TYPE_CHECKING:
    from orchestrator.service.context import Context


class Precheck:
    """Read every record again and decide whether the step's job may run."""

    def run(self, ctx: Context, set_id: int, plan: Plan) -> None:
        assert plan.step is not None
        if plan.step is Step.COPY_IDENTIFIERS and stop_on_drift(ctx, set_id, "checking the records for the copy job"):
            return  # the copy step's decision (run it, or skip it) is taken on the members Alma has
        preflight.check_records(ctx, set_id)
        with ctx.ledger() as book:
            row = book.set(set_id)
            classes = attend.included_classes(book.session, set_id)
            if plan.step is Step.COPY_IDENTIFIERS:
                _before_copy(book, row, classes)
            elif plan.step is Step.MIGRATE:
                _before_migration(book, row, classes)

    def describe(self, scene: Scene, plan: Plan, when: str) -> Preview:
        step = plan.step
        assert step is not None
        session, row = scene.session, scene.row
        ids = list(session.scalars(select(Record.mms_id).where(Record.set_id == row.id).order_by(Record.id)))
        requests: tuple[PlannedRequest, ...] = ()
        if ids:
            requests = (
                PlannedRequest.of(
                    scene.alma.bibs_request(ids[:MAX_BIBS_PER_CALL]),
                    count=math.ceil(len(ids) / MAX_BIBS_PER_CALL),
                    note=f"{plural(len(ids), 'record')}, {MAX_BIBS_PER_CALL} MMS IDs per request",
                ),
            )
        classes = Counter(
            p or "UNCHECKED"
            for p in session.scalars(
                select(Record.preflight).where(Record.set_id == row.id, Record.excluded.is_(False))
            )
        )
        summary = f"precheck {step.value}: read every record's Dublin Core again and classify it"
        action = PlannedAction(when, "precheck", summary, requests, tuple(_notes(step, classes)))
        following = plan_step(scene.ctx.config, session, row, scene.now, {step})
        return Preview((action,), then=(following, "then, if the check finds every record ready"))


def _notes(step: Step, classes: Counter[str]) -> list[str]:
    notes = [
        "last check: " + (", ".join(f"{n} {c}" for c, n in sorted(classes.items())) or "no records")
        if set(classes) != {"UNCHECKED"}
        else "the records were never checked (`hwf check` shows the classes without changing anything)"
    ]
    if step is Step.COPY_IDENTIFIERS:
        blocking = ", ".join(sorted(p.value for p in BLOCKING))
        notes.append(f"a record in {blocking} stops the set with attention (records): nothing is submitted")
        if classes and Preflight.NEEDS_COPY.value not in classes and "UNCHECKED" not in classes:
            notes.append(
                "if, as last time, no record has its handle only in dcterms:identifier, the copy job is not "
                f"needed: the step is recorded as skipped and the set moves {arrow(step)} without a job"
            )
    else:
        notes.append(
            "any record not READY (e.g. NEEDS_FIX: xsi:type on dc:identifier) stops the set with attention "
            "(records): the Handle Migration job would skip it silently"
        )
    return notes


def _before_copy(book: Ledger, row: AlmaSet, classes: Counter[str]) -> None:
    total = sum(classes.values())
    if _stopped(book, row, Step.COPY_IDENTIFIERS):
        return
    if classes.get(Preflight.NEEDS_COPY.value, 0) == 0:
        book.new_attempt(
            row,
            Step.COPY_IDENTIFIERS,
            AttemptState.NOT_NEEDED,
            token=new_token("not-needed"),
            origin="skipped",
            note="no record has its handle only in dcterms:identifier",
        )
        book.event(
            row,
            "step_skipped",
            f"copy_identifiers: not needed: none of the {total} included records has its handle only in "
            "dcterms:identifier; the copy job was not submitted",
        )


def _before_migration(book: Ledger, row: AlmaSet, classes: Counter[str]) -> None:
    _stopped(book, row, Step.MIGRATE)


def _stopped(book: Ledger, row: AlmaSet, step: Step) -> bool:
    """Stop the set when records stop ``step``'s job (the check that just ran raised the attention already,
    unless another one was there); True when it stops."""
    reason = attend.records_reason(book.session, row, step)
    if reason is None:
        return False
    if row.attention != reason:
        book.attention(row, Attention.RECORDS, reason)
    return True
