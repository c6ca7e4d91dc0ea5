"""Reconciling a submission whose outcome is unknown (a lost reply, a crash after the POST).

The job's instances are listed and the attempt's token looked for in their names. One match is adopted; with
no token echoed, one run submitted by the API after the attempt, on this set, is adopted instead; several
candidates are attention (hwf never guesses); none after the grace period means the POST never reached
Alma, and a new attempt may be submitted.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from orchestrator.alma.types import JobInstance
from orchestrator.domain.attention import Attention
from orchestrator.domain.jobrules import SetMatch, instance_window, match_instance, submitted_by_api
from orchestrator.domain.steps import Step
from orchestrator.service.actions.base import Plan, PlannedAction, Preview, Scene, job_transition
from orchestrator.service.actions.instances import adopt_instance, listing_request, taken_instances
from orchestrator.store.ledger import Ledger
from orchestrator.store.models import AlmaSet, Attempt, AttemptState

if TYPE_CHECKING:
    from orchestrator.service.context import Context


@dataclass(frozen=True)
class _Lost:
    """The attempt in doubt, as read before the remote call."""

    job_id: str
    token: str
    begun: datetime
    alma_set_id: str
    set_name: str
    step: Step
    taken: set[str]


class Reconcile:
    """Find the run a lost POST may have started; adopt it, wait, abandon the attempt, or stop the set."""

    def run(self, ctx: Context, set_id: int, plan: Plan) -> None:
        assert plan.attempt_id is not None
        lost = _read(ctx, set_id, plan.attempt_id)
        date_from, date_to = instance_window(lost.begun, ctx.clock())
        instances = list(
            ctx.alma.list_instances(
                lost.job_id, date_from=date_from, date_to=date_to, wanted=lambda name: lost.token in name
            )
        )
        how, matches = _candidates(lost, instances)
        if how == "contradicts":
            with ctx.ledger() as book:
                _contradicted(book, set_id, plan.attempt_id, lost, matches)
            return
        if len(matches) == 1:
            found = matches[0]
            adopt_instance(ctx, set_id, plan.attempt_id, found.id, how=how, alma_submitted=found.submit_time)
            ctx.reporter.note(lost.set_name, f"found lost submission: instance {found.id} (not resubmitted)")
            return
        with ctx.ledger() as book:
            _unresolved(ctx, book, set_id, plan.attempt_id, lost, matches)

    def describe(self, scene: Scene, plan: Plan, when: str) -> Preview:
        assert plan.step is not None and plan.attempt_id is not None
        attempt = scene.session.get_one(Attempt, plan.attempt_id)
        assert attempt.job_id is not None
        grace = scene.ctx.config.alma.reconcile_grace_seconds
        action = PlannedAction(
            when,
            "reconcile",
            f"reconcile {plan.step.value}: the reply to attempt {attempt.number} (token {attempt.token}) was lost; "
            f"look for the token among job {attempt.job_id}'s instances",
            (listing_request(scene, attempt.job_id, attempt.begun_at),),
            (
                "one instance carries the token: adopted, not resubmitted",
                "several could be it: attention (reconcile); hwf never guesses",
                f"none after {grace:g} s: the attempt is abandoned and a new one may be submitted",
            ),
        )
        return Preview((action,), job_transition(plan.step))


def _read(ctx: Context, set_id: int, attempt_id: int) -> _Lost:
    with ctx.sessions() as session:
        row, attempt = session.get_one(AlmaSet, set_id), session.get_one(Attempt, attempt_id)
        assert attempt.job_id is not None
        return _Lost(
            job_id=attempt.job_id,
            token=attempt.token,
            begun=attempt.begun_at,
            alma_set_id=row.alma_set_id,
            set_name=row.name,
            step=Step(attempt.step),
            taken=taken_instances(session, attempt.job_id),
        )


def _candidates(lost: _Lost, instances: list[JobInstance]) -> tuple[str, list[JobInstance]]:
    """The instances that could be the lost submission: those carrying its token, else (``fallback``) runs
    submitted by the API on this set after the attempt began."""

    def fits(i: JobInstance, strict: bool) -> bool:
        match = match_instance(i, lost.job_id, lost.step, lost.alma_set_id, lost.set_name)[0]
        return i.id not in lost.taken and (match is SetMatch.THIS if strict else match is not SetMatch.OTHER)

    carrying = [i for i in instances if lost.token in (i.name or "")]
    odd = [i for i in carrying if not fits(i, strict=False)]
    if odd:  # the token is this attempt's alone: on another set's run (or one already taken) it contradicts
        return "contradicts", odd
    matches = carrying
    if matches:
        return "reconciled", matches
    earliest = lost.begun - timedelta(minutes=2)
    return "fallback", [
        i
        for i in instances
        if submitted_by_api(i.submitted_by)
        and i.submit_time is not None
        and i.submit_time >= earliest
        and fits(i, True)
    ]


def _contradicted(book: Ledger, set_id: int, attempt_id: int, lost: _Lost, odd: list[JobInstance]) -> None:
    """An instance carries this attempt's own token but names another set (or step), or another attempt took
    it: Alma's list contradicts itself or hwf's records. Attention; never "not sent", never a resubmission."""
    row, attempt = book.set(set_id), book.attempt(attempt_id)
    found = odd[0]
    why = match_instance(found, lost.job_id, lost.step, lost.alma_set_id, lost.set_name)[1]
    if found.id in lost.taken:
        why = f"instance {found.id} is already adopted by another attempt"
    book.attention(
        row,
        Attention.RECONCILE,
        f"{attempt.step}: instance {found.id} of job {lost.job_id} carries attempt {attempt.number}'s own token "
        f"{lost.token}, but {why}; hwf will not call the attempt unsent nor submit again. Check it in Alma "
        f"(Monitor Jobs), then `hwf confirm {lost.alma_set_id} --instance ID`",
    )


def _unresolved(
    ctx: Context, book: Ledger, set_id: int, attempt_id: int, lost: _Lost, matches: list[JobInstance]
) -> None:
    """No single candidate: several are attention; none yet is a wait, and none after the grace period
    means the POST never reached Alma."""
    row, attempt = book.set(set_id), book.attempt(attempt_id)
    if matches:
        book.attention(
            row,
            Attention.RECONCILE,
            f"{attempt.step}: {len(matches)} instances of job {lost.job_id} could be attempt {attempt.number} "
            f"({', '.join(i.id for i in matches)}); hwf will not guess. Check them in Alma (Monitor Jobs), abort "
            f"extras, then `hwf confirm {lost.alma_set_id} --instance ID`",
        )
        return
    elapsed = (book.now - lost.begun).total_seconds()
    grace = ctx.config.alma.reconcile_grace_seconds
    if elapsed < grace:
        until = book.now + timedelta(seconds=max(1.0, min(grace - elapsed, 15.0)))
        book.wait(row, f"{attempt.step}: looking for the submission with token {lost.token} in Alma's job list", until)
        return
    attempt.state = AttemptState.ABANDONED
    attempt.note = f"no instance of job {lost.job_id} carries token {lost.token} after {elapsed:.0f} s"
    book.event(
        row,
        "abandoned",
        f"{attempt.step}: attempt {attempt.number} never reached Alma (no instance with token {lost.token} "
        f"after {elapsed:.0f} s); a new attempt may be submitted",
        job_id=lost.job_id,
        token=lost.token,
    )
