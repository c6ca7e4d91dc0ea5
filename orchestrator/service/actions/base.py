"""What every workflow action shares: the plan that names it, the one small interface each room implements
(run it; say what it would send), and the shapes a dry run is described in.

A room is one action of the workflow (precheck, submit, reconcile, poll, manual, fire, verify). ``run`` does
it for real: short transactions through the ledger, remote calls outside them. ``describe`` says, from a
read-only session and a planning Alma client that sends nothing, what ``run`` would do now: the requests it
would send (built by the same client code that would send them), what follows, and the transition.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import unquote

from sqlalchemy.orm import Session

from orchestrator.domain.steps import Step
from orchestrator.store.models import AlmaSet

if TYPE_CHECKING:
    import httpx

    from orchestrator.alma.client import AlmaClient
    from orchestrator.service.context import Context

_SHOWN_IDS = 3
_SHOWN_HEADERS = ("Authorization", "Accept", "Content-Type")


class Action(enum.Enum):
    DONE = "done"
    ATTENTION = "attention"
    WAIT = "wait"
    PRECHECK = "precheck"  # fresh preflight before submitting the copy or migration job
    SUBMIT = "submit"
    RECONCILE = "reconcile"
    POLL = "poll"
    MANUAL = "manual"  # a step run by a person in Alma: say what to click, then find the run
    BATCH = "batch"  # manual integration: the integration batches' work (form, announce, bind the run, poll)
    FIRE = "fire"
    VERIFY = "verify"


@dataclass(frozen=True)
class Plan:
    """The next thing to do for a set: an action, the step it belongs to, the attempt it concerns, and
    for a wait, until when and why."""

    action: Action
    step: Step | None = None
    attempt_id: int | None = None
    wake_at: datetime | None = None
    reason: str = ""
    person: bool = False  # a wait for a person's run in Alma (not for Alma or the clock)


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


def _shorten(path: str) -> str:
    """Long ``mms_id=`` lists shortened for people (``as_json`` keeps the path exactly as sent)."""

    def cut(match: re.Match[str]) -> str:
        ids = unquote(match.group(1)).split(",")
        if len(ids) <= _SHOWN_IDS + 1:
            return match.group(0)
        return f"mms_id={'%2C'.join(ids[:_SHOWN_IDS])}%2C...({len(ids)} MMS IDs)"

    return re.sub(r"mms_id=([^&]+)", cut, path)


def shown_path(request: httpx.Request) -> str:
    """A request's path and query as a person reads it (percent-escapes undone)."""
    return unquote(request.url.raw_path.decode("ascii"))


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
class Scene:
    """What a room describes from: the command's context, a read-only session, the set, the moment, and an
    Alma client that builds requests and never sends them."""

    ctx: Context
    session: Session
    row: AlmaSet
    now: datetime
    alma: AlmaClient


@dataclass(frozen=True)
class Preview:
    """What a room would do: its actions (with their requests), the transition that would follow, and the
    plan to describe after it, if any, with when it would come."""

    actions: tuple[PlannedAction, ...]
    transition: str | None = None
    then: tuple[Plan, str] | None = None


class Room(Protocol):
    """One workflow action."""

    def run(self, ctx: Context, set_id: int, plan: Plan) -> None:
        """Do it: short transactions, no transaction open during a remote call."""

    def describe(self, scene: Scene, plan: Plan, when: str) -> Preview:
        """Say what ``run`` would do now, reading the database only and sending nothing."""


def arrow(step: Step) -> str:
    """``created -> identifiers_copied``."""
    return f"{step.source.value} -> {step.dest.value}"


def job_transition(step: Step) -> str:
    """The transition a job step leads to, and when, for the dry run."""
    text = f"{arrow(step)} ({step.value}) once the job ends COMPLETED_SUCCESS (or COMPLETED_WARNING) without exceptions"
    if step.spec.prechecks:
        text += " and every included record is ready"
    return text + "; any other end: attention (job)"
