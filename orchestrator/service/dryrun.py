"""``advance --dry-run`` and ``resume --all --dry-run``: for each set, the next actions hwf would take,
the exact requests they would send (method, path with query, headers with the key shown as ``***``,
body), and the transition that would follow.

Read-only by construction: one plain session that is never committed (closed, so rolled back), the
workflow's own ``plan_step`` to decide the next action, and no Alma client or HTTP client at all.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import unquote

import httpx
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from orchestrator.alma.client import MAX_BIBS_PER_CALL, AlmaClient
from orchestrator.domain.attention import ATTENTION_ADVICE as _ADVICE
from orchestrator.domain.dc import BLOCKING, Preflight
from orchestrator.domain.handles import Verdict
from orchestrator.domain.jobrules import history_window, instance_window, job_name
from orchestrator.domain.machine import TRANSITIONS, Stage, Step
from orchestrator.domain.wording import plural, verb
from orchestrator.resolver import Verifier
from orchestrator.service import jobs
from orchestrator.service.context import Context, find_set, require_match
from orchestrator.service.workflow import Action, Plan, plan_step, step_facts
from orchestrator.store.models import AlmaSet, Attempt, Record

TOKEN_PLACEHOLDER = "hwf-<token>"
INSTANCE_PLACEHOLDER = "<instance id>"
_SHOWN_IDS = 3
_SHOWN_HEADERS = ("Authorization", "Accept", "Content-Type")


@dataclass(frozen=True)
class PlannedRequest:
    """One request hwf would send (or the first of ``count`` alike ones)."""

    method: str
    path: str  # /almaws/v1/... with the query string, or the resolver's full URL
    headers: tuple[tuple[str, str], ...]
    body: str | None = None
    count: int = 1
    note: str | None = None

    @classmethod
    def of(
        cls, request: httpx.Request, *, count: int = 1, note: str | None = None, full_url: bool = False
    ) -> PlannedRequest:
        """The request exactly as the client built it (the key already ``***`` in a planning client)."""
        path = str(request.url) if full_url else request.url.raw_path.decode("ascii")
        headers = tuple((name, request.headers[name]) for name in _SHOWN_HEADERS if name in request.headers)
        body = request.content.decode("utf-8", "replace") if request.content else None
        return cls(request.method, path, headers, body, count, note)

    def as_json(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "path": self.path,
            "headers": dict(self.headers),
            "body": self.body,
            "count": self.count,
            "note": self.note,
        }

    def lines(self) -> list[str]:
        many = f"   [{self.count} requests like this; the first is shown]" if self.count > 1 else ""
        out = [f"{self.method} {_shorten(self.path)}{many}"]
        out += [f"    {name}: {value}" for name, value in self.headers]
        if self.body is not None:
            out += [f"    {line}" for line in self.body.splitlines()]
        if self.note:
            out.append(f"    ({self.note})")
        return out


@dataclass(frozen=True)
class PlannedAction:
    """One thing ``advance`` would do: when, what, and the requests it would send."""

    when: str  # "next", "then", "after the wait", ...
    action: str  # precheck, submit, poll, reconcile, wait, fire, verify, manual, attention, done
    summary: str
    requests: tuple[PlannedRequest, ...] = ()
    notes: tuple[str, ...] = ()

    def as_json(self) -> dict[str, Any]:
        return {
            "when": self.when,
            "action": self.action,
            "summary": self.summary,
            "requests": [r.as_json() for r in self.requests],
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class DryRunPlan:
    """What ``hwf advance SET`` would do now, described without doing it."""

    set: str
    name: str
    state: str
    attention: str | None
    actions: tuple[PlannedAction, ...]
    transition: str | None
    notes: tuple[str, ...] = field(default=())

    def text(self) -> str:
        """Human-readable lines: the actions, their requests, the transition."""
        lines = [f"Set {self.set} ({self.name}): state {self.state}"]
        for action in self.actions:
            lines.append(f"  {action.when}: {action.summary}")
            for request in action.requests:
                lines += [f"    {line}" for line in request.lines()]
            lines += [f"    - {note}" for note in action.notes]
        if self.transition:
            lines.append(f"  transition: {self.transition}")
        lines += [f"  note: {note}" for note in self.notes]
        lines.append("  (dry run: nothing was sent to Alma or the handle proxy, nothing was written)")
        return "\n".join(lines)

    def as_json(self) -> dict[str, Any]:
        return {
            "set": self.set,
            "name": self.name,
            "state": self.state,
            "attention": self.attention,
            "actions": [a.as_json() for a in self.actions],
            "transition": self.transition,
            "notes": list(self.notes),
            "dry_run": True,
        }


def _shorten(path: str) -> str:
    """Long ``mms_id=`` lists shortened for people (``as_json`` keeps the path exactly as sent)."""

    def cut(match: re.Match[str]) -> str:
        ids = unquote(match.group(1)).split(",")
        if len(ids) <= _SHOWN_IDS + 1:
            return match.group(0)
        return f"mms_id={'%2C'.join(ids[:_SHOWN_IDS])}%2C...({len(ids)} MMS IDs)"

    return re.sub(r"mms_id=([^&]+)", cut, path)


class _Describer:
    """Builds the plan of one set inside a read-only session."""

    def __init__(self, ctx: Context, session: Session, row: AlmaSet, now: datetime, alma: AlmaClient) -> None:
        self.ctx, self.session, self.row, self.now, self.alma = ctx, session, row, now, alma
        self.cfg = ctx.config
        self.actions: list[PlannedAction] = []
        self.notes: list[str] = []
        self.transition: str | None = None

    # -- the plan ----------------------------------------------------------------------------------

    def describe(self) -> None:
        row = self.row
        if row.lease_owner and row.lease_expires_at and row.lease_expires_at > self.now:
            if row.lease_owner != self.ctx.owner:
                self.notes.append(
                    f"another hwf process ({row.lease_owner}) holds this set until "
                    f"{_stamp(row.lease_expires_at)}: `hwf advance` would exit 4 now"
                )
        plan = plan_step(self.ctx, self.session, row, self.now, set())
        self._describe(plan, "next")

    def _describe(self, plan: Plan, when: str, depth: int = 0) -> None:
        action = plan.action
        if action is Action.DONE:
            self.actions.append(PlannedAction(when, "done", "nothing: the set is verified"))
            return
        if action is Action.ATTENTION:
            kind = self.row.attention_kind or "attention"
            advice = _ADVICE.get(kind, "").format(set=self.row.alma_set_id)
            self.actions.append(
                PlannedAction(
                    when,
                    "attention",
                    f"stop (exit 3): the set needs attention ({kind}): {plan.reason}",
                    notes=(f"what to do: {advice}",) if advice else (),
                )
            )
            return
        step = plan.step
        assert step is not None
        if action is Action.WAIT:
            assert plan.wake_at is not None
            self.actions.append(
                PlannedAction(
                    when,
                    "wait",
                    f"wait until {_stamp(plan.wake_at)}: {plan.reason} (with --no-wait, exit 0 now)",
                )
            )
            if depth < 2:
                self._describe(
                    plan_step(self.ctx, self.session, self.row, plan.wake_at, set()), "after the wait", depth + 1
                )
            return
        if action is Action.PRECHECK:
            self._precheck(step, when)
            if depth < 2:
                following = plan_step(self.ctx, self.session, self.row, self.now, {step})
                self._describe(following, "then, if the check finds every record ready", depth + 1)
            return
        if action is Action.SUBMIT:
            self._submit(step, when)
        elif action is Action.RECONCILE:
            assert plan.attempt_id is not None
            self._reconcile(step, plan.attempt_id, when)
        elif action is Action.POLL:
            assert plan.attempt_id is not None
            self._poll(step, plan.attempt_id, when)
        elif action is Action.MANUAL:
            self._manual(step, plan.attempt_id, when)
        elif action is Action.FIRE:
            self._fire(step, when)
            return
        elif action is Action.VERIFY:
            self._verify(when)
            return
        self.transition = _transition_text(step)

    # -- actions -----------------------------------------------------------------------------------

    def _precheck(self, step: Step, when: str) -> None:
        ids = list(self.session.scalars(select(Record.mms_id).where(Record.set_id == self.row.id).order_by(Record.id)))
        batches = math.ceil(len(ids) / MAX_BIBS_PER_CALL)
        requests: tuple[PlannedRequest, ...] = ()
        if ids:
            requests = (
                PlannedRequest.of(
                    self.alma.bibs_request(ids[:MAX_BIBS_PER_CALL]),
                    count=batches,
                    note=f"{plural(len(ids), 'record')}, {MAX_BIBS_PER_CALL} MMS IDs per request",
                ),
            )
        classes = Counter(
            p or "UNCHECKED"
            for p in self.session.scalars(
                select(Record.preflight).where(Record.set_id == self.row.id, Record.excluded.is_(False))
            )
        )
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
                    f"needed: the step is recorded as skipped and the set moves {_arrow(step)} without a job"
                )
        else:
            notes.append(
                "any record not READY (e.g. NEEDS_FIX: xsi:type on dc:identifier) stops the set with attention "
                "(records): the Handle Migration job would skip it silently"
            )
        self.actions.append(
            PlannedAction(
                when,
                "precheck",
                f"precheck {step.value}: read every record's Dublin Core again and classify it",
                requests,
                tuple(notes),
            )
        )

    def _submit(self, step: Step, when: str) -> None:
        key = step.job_key
        assert key is not None
        spec = self.cfg.alma.jobs[key]
        running, hour = jobs.count_limits(self.session, spec.id, self.now)
        if running >= self.cfg.alma.max_running_jobs or hour >= self.cfg.alma.max_runs_per_job_hour:
            why = (
                f"{running} API jobs running (at most {self.cfg.alma.max_running_jobs})"
                if running >= self.cfg.alma.max_running_jobs
                else f"job {spec.id} ran {hour} times in the last hour (at most {self.cfg.alma.max_runs_per_job_hour})"
            )
            self.actions.append(
                PlannedAction(when, "wait", f"wait before submitting {step.value}: {why}; nothing is sent yet")
            )
            return
        name = job_name(step, self.row.alma_set_id, TOKEN_PLACEHOLDER)
        params = [("set_id", self.row.alma_set_id), ("job_name", name), *spec.parameters]
        template = spec.payload_file.read_bytes() if spec.payload_file else None
        submit = PlannedRequest.of(
            self.alma.run_job_request(spec.id, params, payload_template=template),
            note=f"{TOKEN_PLACEHOLDER} is a new random token, committed with the attempt before the POST",
        )
        poll_path = unquote(self.alma.instance_request(spec.id, INSTANCE_PLACEHOLDER).url.raw_path.decode("ascii"))
        first: tuple[str, ...] = ()
        if not self.session.scalar(
            select(func.count()).select_from(Attempt).where(Attempt.set_id == self.row.id, Attempt.step == step.value)
        ):
            date_from, date_to = history_window(self.now)
            listing = self.alma.instances_request(spec.id, date_from=date_from, date_to=date_to)
            first = (
                f"first, as hwf has no attempt for this step yet, GET {unquote(listing.url.raw_path.decode('ascii'))}: "
                "a run already on this set (a lost database) is adopted instead of submitting",
            )
        self.actions.append(
            PlannedAction(
                when,
                "submit",
                f"submit {step.value}: run job {spec.id} on set {self.row.alma_set_id} (once; never re-sent blindly)",
                (submit,),
                (
                    *first,
                    "if the reply is lost, hwf does not resubmit: it looks for the token in the job's instances",
                    f"then polls GET {poll_path} "
                    f"every {self.cfg.alma.poll_interval_seconds:g} s, growing to "
                    f"{self.cfg.alma.poll_max_interval_seconds:g} s, until the job ends",
                ),
            )
        )

    def _instances_request(self, job_id: str, started: datetime) -> PlannedRequest:
        date_from, date_to = instance_window(started, self.now)
        return PlannedRequest.of(
            self.alma.instances_request(job_id, date_from=date_from, date_to=date_to),
            note="more pages follow while Alma has more instances",
        )

    def _reconcile(self, step: Step, attempt_id: int, when: str) -> None:
        attempt = self.session.get_one(Attempt, attempt_id)
        assert attempt.job_id is not None
        grace = self.cfg.alma.reconcile_grace_seconds
        self.actions.append(
            PlannedAction(
                when,
                "reconcile",
                f"reconcile {step.value}: the reply to attempt {attempt.number} (token {attempt.token}) was lost; "
                f"look for the token among job {attempt.job_id}'s instances",
                (self._instances_request(attempt.job_id, attempt.started_at),),
                (
                    "one instance carries the token: adopted, not resubmitted",
                    "several could be it: attention (reconcile); hwf never guesses",
                    f"none after {grace:g} s: the attempt is abandoned and a new one may be submitted",
                ),
            )
        )

    def _poll(self, step: Step, attempt_id: int, when: str) -> None:
        attempt = self.session.get_one(Attempt, attempt_id)
        assert attempt.job_id is not None and attempt.instance_id is not None
        last = attempt.status or "not yet polled"
        if attempt.progress is not None:
            last += f", {attempt.progress:g}%"
        self.actions.append(
            PlannedAction(
                when,
                "poll",
                f"poll {step.value}: job {attempt.job_id} instance {attempt.instance_id} (last seen: {last})",
                (
                    PlannedRequest.of(
                        self.alma.instance_request(attempt.job_id, attempt.instance_id),
                        note="repeated with a growing interval until the job ends",
                    ),
                ),
            )
        )

    def _manual(self, step: Step, attempt_id: int | None, when: str) -> None:
        spec = self.cfg.alma.jobs["handle_integration"]
        if attempt_id is None:
            self.actions.append(
                PlannedAction(
                    when,
                    "manual",
                    "manual integration: tell you what to run in Alma, then wait for your run",
                    notes=(jobs.manual_instructions(self.row.name, self.row.alma_set_id),),
                )
            )
            started = self.now
        else:
            started = self.session.get_one(Attempt, attempt_id).started_at
        self.actions.append(
            PlannedAction(
                "then" if attempt_id is None else when,
                "manual",
                f"look for your run of job {spec.id} naming this set (or take `hwf confirm "
                f"{self.row.alma_set_id} --instance ID`)",
                (self._instances_request(spec.id, started),),
            )
        )

    def _fire(self, step: Step, when: str) -> None:
        facts = step_facts(self.ctx, self.session, self.row, step, self.now)
        conditions = next(t["conditions"] for t in TRANSITIONS if t["trigger"] == step.value)
        holds = all(condition(facts) for condition in conditions)
        attempt = self.session.scalar(
            select(Attempt)
            .where(Attempt.set_id == self.row.id, Attempt.step == step.value)
            .order_by(Attempt.number.desc())
        )
        ended = f"job ended {attempt.status}" if attempt is not None and attempt.status else "step done"
        if holds:
            self.actions.append(PlannedAction(when, "fire", f"{ended}: move {_arrow(step)}; no request"))
            self.transition = f"{_arrow(step)} ({step.value}) now"
        else:
            self.actions.append(
                PlannedAction(
                    when,
                    "fire",
                    f"{ended}, but the guard does not hold ({facts}): attention (guard) instead of {_arrow(step)}",
                )
            )

    def _verify(self, when: str) -> None:
        stmt = (
            select(Record.handle)
            .where(Record.set_id == self.row.id, Record.excluded.is_(False))
            .where((Record.verdict.is_(None)) | (Record.verdict != Verdict.OK.value))
            .order_by(Record.id)
        )
        handles = list(self.session.scalars(stmt))
        with_handle = [h for h in handles if h]
        requests: tuple[PlannedRequest, ...] = ()
        if with_handle:
            with Verifier(self.cfg.handles.resolver_url, self.cfg.primo) as verifier:
                request = verifier.api_request(with_handle[0])
            requests = (
                PlannedRequest.of(
                    request,
                    full_url=True,
                    count=len(with_handle),
                    note=f"no API key is sent to the handle proxy; at most {self.cfg.handles.concurrency} at "
                    f"a time, {self.cfg.handles.requests_per_second:g} per second",
                ),
            )
        notes = []
        if len(handles) > len(with_handle):
            missing = len(handles) - len(with_handle)
            notes.append(f"{plural(missing, 'record')} {verb(missing, 'has')} no handle: NO_HANDLE, no request")
        self.actions.append(
            PlannedAction(
                when,
                "verify",
                f"verify: resolve the handles of {plural(len(handles), 'record')} not yet OK at the handle proxy",
                requests,
                tuple(notes),
            )
        )
        self.transition = (
            f"{_arrow(Step.VERIFY)} (verify) once every included record's handle resolves to its own Primo record; "
            "otherwise attention (verify)"
        )


def _arrow(step: Step) -> str:
    return f"{step.source.value} -> {step.dest.value}"


def _transition_text(step: Step) -> str:
    text = f"{_arrow(step)} ({step.value}) once the job ends COMPLETED_SUCCESS"
    text += " (or COMPLETED_WARNING) without exceptions"
    if step in (Step.COPY_IDENTIFIERS, Step.MIGRATE):
        text += " and every included record is ready"
    return text + "; any other end: attention (job)"


def _stamp(at: datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M:%S UTC")


def _describe_row(ctx: Context, session: Session, row: AlmaSet, now: datetime) -> DryRunPlan:
    with AlmaClient.planner(ctx.config.alma.base_url, format=ctx.config.alma.format) as alma:
        describer = _Describer(ctx, session, row, now, alma)
        describer.describe()
    return DryRunPlan(
        set=row.alma_set_id,
        name=row.name,
        state=row.stage.value,
        attention=row.attention,
        actions=tuple(describer.actions),
        transition=describer.transition,
        notes=tuple(describer.notes),
    )


def describe_advance(ctx: Context, ref: str) -> DryRunPlan:
    """What ``hwf advance REF`` would do now. Reads the database only; sends nothing.

    :raises BadInputError: unknown set.
    """
    now = ctx.clock()
    with ctx.sessions() as session:
        try:
            return _describe_row(ctx, session, find_set(session, ref), now)
        finally:
            session.rollback()


def describe_all(ctx: Context, only: str | None = None) -> list[DryRunPlan]:
    """What ``hwf resume --all [--only PATTERN]`` would do for each set that is not verified."""
    pattern = re.compile(only.replace("*", ".*"), re.IGNORECASE) if only else None
    now = ctx.clock()
    with ctx.sessions() as session:
        try:
            require_match(session, pattern, only)
            rows = session.scalars(
                select(AlmaSet).where(AlmaSet.stage != Stage.VERIFIED).order_by(AlmaSet.created_at, AlmaSet.id)
            ).all()
            return [_describe_row(ctx, session, r, now) for r in rows if not pattern or pattern.search(r.name)]
        finally:
            session.rollback()
