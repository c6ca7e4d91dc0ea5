"""``hwf audit``: what Alma's own job history says happened to a set (``hwf add --adopt`` builds on it).

The instances of the three configured jobs over a window are listed and kept when their name names
the set: hwf's runs carry ``hwf <step> set <id> <token>``, runs made in the Alma UI are named
``<job> - <set name> - <timestamp>``. The runs, in submission order, are walked through the workflow's
order (copy, migration, integration): each run counts, is harmless, or breaks the order, and every
finding says what is wrong and what to do. ``service.adoption`` registers a set at the stage the history
proves.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from orchestrator.alma.types import JobInstance
from orchestrator.display import iso_z, utc_stamp
from orchestrator.domain.jobrules import HWF_NAME, SetMatch, counted, match_instance, run_ok, submitted_by_api
from orchestrator.domain.steps import JOB_STEPS, Stage, Step
from orchestrator.domain.wording import plural
from orchestrator.errors import BadInputError
from orchestrator.service.context import Context, find_set
from orchestrator.store.models import AlmaSet, Attempt, AttemptState

DEFAULT_DAYS = 365
# The walk's positions in the order of the jobs (domain.steps.ORDER): the index of each job step, and DONE
# once every job has run. _REACHED[i] is the milestone a set reaches once the first i jobs have run.
COPY, MIGRATION, INTEGRATION = (JOB_STEPS.index(s) for s in (Step.COPY_IDENTIFIERS, Step.MIGRATE, Step.INTEGRATE))
DONE = len(JOB_STEPS)
_REACHED = (JOB_STEPS[0].source, *(step.dest for step in JOB_STEPS))
_SET_ID = re.compile(r"^\d{1,40}$")


def reached(stage: Stage) -> int:
    """How many of the jobs a set at ``stage`` has run."""
    return _REACHED.index(stage)


@dataclass(frozen=True)
class AuditRun:
    """One run of one of the three jobs that names the set, with what the audit made of it."""

    step: str
    job_id: str
    instance_id: str
    name: str | None
    by: str  # "hwf", "API" (another program), or "UI (user)"
    submit_time: datetime | None
    start_time: datetime | None
    end_time: datetime | None
    status: str
    ok: bool
    terminal: bool
    counters: list[dict[str, Any]]
    known_to_hwf: bool = False
    verdict: str = ""  # counts, harmless, not counted, breaks the order, failed, running

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("submit_time", "start_time", "end_time"):
            value = out[key]
            out[key] = iso_z(value)
        return out


@dataclass(frozen=True)
class AuditFinding:
    """Something about the order of the runs: ``error`` breaks it, ``warning`` and ``note`` do not."""

    severity: str
    code: str
    message: str
    action: str
    instances: tuple[str, ...] = ()

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "instances": list(self.instances)}


@dataclass
class AuditReport:
    set: str
    name: str
    registered: bool
    date_from: str
    date_to: str
    runs: list[AuditRun] = field(default_factory=list)
    findings: list[AuditFinding] = field(default_factory=list)
    proven_stage: str = Stage.CREATED.value  # the last milestone the history proves, in a valid order
    copy_skipped: bool = False  # the migration ran with no copy run before it
    frontier: AuditRun | None = None  # the latest run of the next step, if it failed or is still running
    counted: dict[str, list[AuditRun]] = field(default_factory=dict)  # step -> its runs up to the proven stage

    @property
    def valid(self) -> bool:
        """No run broke the order."""
        return not any(f.severity == "error" for f in self.findings)

    def as_json(self) -> dict[str, Any]:
        return {
            "set": self.set,
            "name": self.name,
            "registered": self.registered,
            "window": {"from": self.date_from, "to": self.date_to},
            "valid": self.valid,
            "proven_state": self.proven_stage,
            "copy_skipped": self.copy_skipped,
            "runs": [r.as_json() for r in self.runs],
            "findings": [f.as_json() for f in self.findings],
        }


# ---------------------------------------------------------------------------------------------
# reading Alma's history


def _by(inst: JobInstance) -> str:
    if HWF_NAME.search(inst.name or ""):
        return "hwf"
    who = (inst.submitted_by or "").strip()
    if submitted_by_api(who):
        return "API"
    return f"UI ({who})" if who else "UI"


def _ok(inst: JobInstance) -> bool:
    """A good terminal status and no record with exceptions (as hwf judges its own runs)."""
    return run_ok(inst.status, inst.counters)


def _counter(run: AuditRun, word: str) -> int | None:
    values = [counted(c.get("value")) for c in run.counters if word in f"{c.get('code')} {c.get('desc')}".lower()]
    return sum(values) if values else None


def _resolve(ctx: Context, ref: str) -> tuple[str, str, bool]:
    """(Alma set id, Alma set name, registered in hwf) for a registered set, an Alma set id, or a name."""
    with ctx.sessions() as session:
        try:
            row = find_set(session, ref)
        except BadInputError:
            row = None
        registered = row is not None
        alma_id = row.alma_set_id if row is not None else ref.strip()
    if registered or _SET_ID.match(alma_id):
        return alma_id, ctx.alma.get_set(alma_id).name, registered
    found = [s for s in ctx.alma.find_sets(alma_id) if s.name == alma_id]
    if len(found) != 1:
        what = "no Alma set" if not found else f"{len(found)} Alma sets"
        raise BadInputError(f"{ref!r} is not a registered set and {what} has that exact name; give the set id")
    return found[0].id, found[0].name, False


def audit_set(ctx: Context, ref: str, *, days: int = DEFAULT_DAYS) -> AuditReport:
    """Reconstruct from Alma's job history which steps ran on a set, when, in which order and with which
    result, including runs made by hand in the Alma UI, and whether the order was valid.

    :raises BadInputError: unknown set, or ``days`` < 1. :raises AlmaError: Alma refused or failed.
    """
    if days < 1:
        raise BadInputError(f"--days must be at least 1, not {days}")
    alma_id, set_name, registered = _resolve(ctx, ref)
    now = ctx.clock()
    date_from, date_to = (now - timedelta(days=days + 1)).date(), (now + timedelta(days=1)).date()
    instances: list[tuple[Step, JobInstance]] = []
    for step in JOB_STEPS:
        key = step.job_key
        assert key is not None
        job_id = ctx.config.alma.jobs[key].id
        for inst in ctx.alma.list_instances(job_id, date_from=date_from, date_to=date_to):
            if match_instance(inst, job_id, step, alma_id, set_name)[0] is SetMatch.THIS:
                instances.append((step, inst))
    with ctx.sessions() as session:
        skipped_by_hwf = registered and bool(
            session.scalar(
                select(func.count())
                .select_from(Attempt)
                .join(AlmaSet, AlmaSet.id == Attempt.set_id)
                .where(
                    AlmaSet.alma_set_id == alma_id,
                    Attempt.step == Step.COPY_IDENTIFIERS.value,
                    Attempt.state == AttemptState.NOT_NEEDED,
                )
            )
        )
        known = {
            (job, instance)
            for job, instance in session.execute(
                select(Attempt.job_id, Attempt.instance_id).where(Attempt.instance_id.is_not(None))
            )
        }
    runs = [
        AuditRun(
            step=step.value,
            job_id=inst.job_id,
            instance_id=inst.id,
            name=inst.name,
            by=_by(inst),
            submit_time=inst.submit_time,
            start_time=inst.start_time,
            end_time=inst.end_time,
            status=inst.status,
            ok=_ok(inst),
            terminal=inst.terminal,
            counters=[asdict(c) for c in inst.counters],
            known_to_hwf=(inst.job_id, inst.id) in known,
        )
        for step, inst in instances
    ]
    runs.sort(key=lambda r: (r.submit_time or r.start_time or now, r.instance_id))
    report = AuditReport(alma_id, set_name, registered, date_from.isoformat(), date_to.isoformat())
    analyse(report, runs, copy_not_needed=skipped_by_hwf)
    return report


# ---------------------------------------------------------------------------------------------
# the order


_INTEGRATION_FIRST = (
    "Alma minted handles of its own (control-number sequences such as PREFIX/1742400039) for every record "
    "that had no handle identifier yet, and the Handle Migration job now skips those records ('already has "
    "a handle identifier'): their legacy handles never resolve."
)
_INTEGRATION_FIRST_ACTION = (
    "Run no more jobs on this set. Open a case with Ex Libris support to remove the Alma-minted handle "
    "identifiers from its records (quote the instance ids), then run the Handle Migration job, then the "
    "integration profile (Create and Update, Do not add to metadata), then `hwf verify {set}`. "
    "`hwf retry {set} --reason TEXT` lets hwf go on once that is done."
)


def _ended_before(earlier: AuditRun | None, later: AuditRun) -> bool:
    if earlier is None or earlier.end_time is None or later.submit_time is None:
        return True
    return earlier.end_time <= later.submit_time


def analyse(report: AuditReport, runs: list[AuditRun], *, copy_not_needed: bool = False) -> None:
    """Walk the runs in submission order through copy -> migration -> integration; fill the report's
    runs (each with its verdict), findings, proven stage, frontier run and counted runs.

    ``copy_not_needed``: hwf's preflight found every record ready and skipped the copy job itself.
    """
    walk = _Walk(report, copy_not_needed)
    for run in runs:
        walk.step(run)
    walk.finish(bool(runs))


class _Walk:
    """The state of :func:`analyse`'s walk: which step the history has proven so far, and the verdicts."""

    def __init__(self, report: AuditReport, copy_not_needed: bool) -> None:
        self.report = report
        self.copy_not_needed = copy_not_needed
        self.done: dict[int, AuditRun] = {}  # step index -> the run that made it count
        self.counted: dict[int, list[AuditRun]] = {i: [] for i in range(DONE)}
        self.following = COPY  # index of the next step the history still has to show
        self.broken = False
        self.frontier: AuditRun | None = None
        self.out: list[AuditRun] = []

    def judge(self, run: AuditRun, verdict: str) -> None:
        self.out.append(AuditRun(**{**asdict(run), "verdict": verdict}))

    def add(self, severity: str, code: str, message: str, action: str, *instances: str) -> None:
        action = action.replace("{set}", self.report.set)
        self.report.findings.append(AuditFinding(severity, code, message, action, tuple(instances)))

    def count(self, idx: int, run: AuditRun, following: int) -> None:
        """``run`` makes step ``idx`` done; the history must next show step ``following``."""
        self.done[idx] = run
        self.counted[idx].append(run)
        self.following = following
        self.frontier = None

    def step(self, run: AuditRun) -> None:
        idx = JOB_STEPS.index(Step(run.step))
        if self.broken:
            self.judge(run, "after the broken order: not counted")
        elif not run.terminal:
            self.running(run, idx)
        elif not run.ok:
            self.failed(run, idx)
        elif idx == self.following:
            self.expected(run, idx)
        elif idx == MIGRATION and self.following == COPY:
            self.migration_without_copy(run)
        elif idx > self.following:
            self.broken = True
            self.judge(run, "breaks the order")
            self.add(
                "error",
                "integration_before_migration",
                f"the integration run {run.instance_id} ({_hm(run.submit_time)}, by {run.by}) ran before any "
                f"migration of this set had completed. {_INTEGRATION_FIRST}",
                _INTEGRATION_FIRST_ACTION,
                run.instance_id,
            )
        elif idx == COPY and self.following > MIGRATION:
            self.copy_after_migration(run)
        elif idx == MIGRATION and self.following == DONE:
            self.judge(run, "counts (the integration must run again)")
            self.count(MIGRATION, run, INTEGRATION)
            self.counted[INTEGRATION].clear()
            self.add(
                "warning",
                "migration_after_integration",
                f"the migration run {run.instance_id} ran after the integration: the handle identifiers it set "
                "reach the handle server only when the integration runs again.",
                "Run the integration again (Create and Update); hwf does this once the set is adopted.",
                run.instance_id,
            )
        else:
            self.judge(run, "harmless (ran again)")
            self.counted[idx].append(run)
            self.add(
                "note",
                f"{run.step}_again",
                f"the {JOB_STEPS[idx].label} ran again (instance {run.instance_id}): harmless.",
                "Nothing to do.",
                run.instance_id,
            )

    def running(self, run: AuditRun, idx: int) -> None:
        if idx == self.following:
            self.frontier = run
            self.judge(run, "running")
        elif idx == INTEGRATION and self.following < INTEGRATION:
            self.broken = True
            self.judge(run, "breaks the order")
            self.add(
                "error",
                "integration_before_migration",
                f"the integration run {run.instance_id} is running on a set with no completed "
                f"migration. {_INTEGRATION_FIRST}",
                "Abort it in Alma (Monitor Jobs) if you still can. " + _INTEGRATION_FIRST_ACTION,
                run.instance_id,
            )
        else:
            self.judge(run, "running (a step already done)")

    def failed(self, run: AuditRun, idx: int) -> None:
        self.judge(run, f"failed ({run.status})")
        if idx == self.following:
            self.frontier = run
        self.counted[idx].append(run)
        self.add(
            "note",
            "run_failed",
            f"the {JOB_STEPS[idx].label} run {run.instance_id} ended {run.status}"
            + (f" ({_counters(run)})" if run.counters else ""),
            "See its report in Alma (Monitor Jobs > History); it does not count as done.",
            run.instance_id,
        )

    def expected(self, run: AuditRun, idx: int) -> None:
        """The run of the step the history has to show next: it counts if the step before it had ended."""
        before = self.done.get(idx - 1)
        if idx == COPY or _ended_before(before, run):
            self.judge(run, "counts")
            self.count(idx, run, idx + 1)
            return
        assert before is not None
        if idx == INTEGRATION:
            self.broken = True
            self.judge(run, "breaks the order")
            self.add(
                "error",
                "integration_before_migration",
                f"the integration run {run.instance_id} started at {_hm(run.submit_time)}, before the "
                f"migration run {before.instance_id} ended ({_hm(before.end_time)}). {_INTEGRATION_FIRST}",
                _INTEGRATION_FIRST_ACTION,
                before.instance_id,
                run.instance_id,
            )
            return
        self.judge(run, "not counted")
        self.add(
            "warning",
            "migration_during_copy",
            f"the migration run {run.instance_id} started at {_hm(run.submit_time)}, before the "
            f"copy run {before.instance_id} ended ({_hm(before.end_time)}): it may have read records "
            "before the copy put their handle in dc:identifier, and skipped them.",
            "Run the migration again, then the integration (hwf does this once the set is adopted).",
            before.instance_id,
            run.instance_id,
        )

    def migration_without_copy(self, run: AuditRun) -> None:
        self.judge(run, "counts (copy not needed)" if self.copy_not_needed else "counts (no copy run before it)")
        self.count(MIGRATION, run, INTEGRATION)
        self.report.copy_skipped = True
        if self.copy_not_needed:
            return
        self.add(
            "note",
            "no_copy_before_migration",
            f"the migration run {run.instance_id} had no copy run before it: right only if every record "
            "already had its handle in a plain dc:identifier.",
            "`hwf add --adopt` reads the records and adopts the migration only if they are all READY; "
            "otherwise hwf runs the copy and the migration again.",
            run.instance_id,
        )

    def copy_after_migration(self, run: AuditRun) -> None:
        modified = _counter(run, "modified")
        if modified == 0:
            self.judge(run, "harmless (changed nothing)")
            self.add(
                "warning",
                "copy_after_migration",
                f"the copy run {run.instance_id} ran after the migration: pointless, the migration had "
                "already read dc:identifier, and the copy changed no record.",
                "Nothing to undo. Next time the order is copy, then migration, then integration.",
                run.instance_id,
            )
            return
        self.judge(run, "counts (the migration must run again)")
        self.count(COPY, run, MIGRATION)
        self.counted[MIGRATION].clear()
        self.counted[INTEGRATION].clear()
        changed = f"changed {plural(modified, 'record')}" if modified is not None else "may have changed records"
        self.add(
            "warning",
            "copy_after_migration",
            f"the copy run {run.instance_id} ran after the migration and {changed}: the migration "
            "never saw the handles it put in dc:identifier, so those records have no handle identifier.",
            "Run the migration again, then the integration (hwf does this once the set is adopted).",
            run.instance_id,
        )

    def finish(self, any_runs: bool) -> None:
        report = self.report
        report.runs = self.out
        report.proven_stage = _REACHED[self.following].value
        verdicts = {r.instance_id: r for r in self.out}
        report.frontier = verdicts[self.frontier.instance_id] if self.frontier is not None else None
        report.counted = {
            JOB_STEPS[i].value: [verdicts[r.instance_id] for r in self.counted[i]]
            for i in range(len(JOB_STEPS))
            if i < self.following
        }
        if not any_runs:
            self.add(
                "note",
                "no_runs",
                "no run of the three configured jobs names this set in the window.",
                "Widen the window with --days, or check the job ids under [alma.jobs] (`hwf jobs`).",
            )


def _counters(run: AuditRun) -> str:
    return ", ".join(f"{c.get('desc') or c.get('code')}: {c.get('value')}" for c in run.counters)


def _hm(at: datetime | None) -> str:
    return utc_stamp(at, seconds=False) if at else "?"
