"""The kinds of attention a set can need, and what an operator does about each: one table, used by
``--dry-run``, ``hwf overview``, the dashboard and the notifications, so the advice is written once.

A set that cannot go on keeps its milestone and carries one attention: a kind (stored in
``sets.attention_kind``) and a one-line reason."""

from __future__ import annotations

import enum
import re


class Attention(enum.StrEnum):
    """Why a set stopped. The values are stored, so they never change."""

    RECORDS = "records"  # records that would fail or be skipped by the next job
    JOB = "job"  # an Alma job ended badly, or Alma refused to start it
    VERIFY = "verify"  # handles that do not resolve to their own record
    RECONCILE = "reconcile"  # a lost submission (or an operator's run) matches several instances
    QUOTA = "quota"  # Alma's daily API quota is spent
    GUARD = "guard"  # a step's job ended well but its guard does not hold
    AUDIT = "audit"  # Alma's own job history shows an invalid order
    FAULT = "fault"  # an error on this set alone (a bad reply, a 4xx, a bug in hwf)
    EARLIER_RUNS = "earlier_runs"  # several runs of a step hwf never submitted (a lost database)
    INSTANCE_UNKNOWN = "instance_unknown"  # the instance a set waits on is gone from Alma
    CORRUPT = "corrupt"  # an attempt row that contradicts itself
    REGRESSION = "regression"  # a verified set's handle no longer resolves to its record
    DRIFT = "drift"  # the Alma set's members are not the records hwf checked: nothing is submitted
    MANUAL_STEP = "manual_step"  # Alma will not run a step's job by API: a person runs it, hwf binds the run


# Attentions that wait for a person's run in Alma: hwf keeps looking for that run and binds it by itself (the
# attention clears then); every other attention stops the set until an operator acts.
WAITS_FOR_A_RUN = frozenset({Attention.MANUAL_STEP})


# How a set's wait reason starts when the set waits for a person's run in Alma (a batch to click, a step by hand).
PERSON_WAIT = "needs a person"

# Attentions about the records themselves: excluding the records concerned can resolve them.
RECORD_KINDS = frozenset({Attention.RECORDS, Attention.VERIFY, Attention.GUARD})

ADVICE: dict[Attention, str] = {
    Attention.RECORDS: "fix the records (`hwf check {set}`, `hwf fix {set} --apply`) or leave them out "
    "(`hwf exclude {set} MMS... --reason TEXT`), then `hwf advance {set}`",
    Attention.JOB: "read the job report in Alma (Monitor Jobs), fix the cause, then `hwf retry {set} --reason TEXT`",
    Attention.VERIFY: "see `hwf report {set} --problems`, fix the registrations, then `hwf advance {set}` re-checks "
    "those",
    Attention.RECONCILE: "check the instances in Alma (Monitor Jobs), abort extras, then "
    "`hwf confirm {set} --instance ID`",
    Attention.QUOTA: "wait for Alma's daily quota reset (midnight, institution time), then "
    "`hwf retry {set} --reason TEXT`",
    Attention.GUARD: "see `hwf check {set}` and `hwf history {set}`, then `hwf retry {set} --reason TEXT`",
    Attention.AUDIT: "see `hwf audit {set}` (Alma's own job history for the set) and do what it says",
    Attention.FAULT: "see the reason and `hwf history {set}` (the log has the details), fix the cause or report the "
    "fault, then `hwf retry {set} --reason TEXT`",
    Attention.EARLIER_RUNS: "check the runs in Alma (Monitor Jobs), then `hwf confirm {set} --instance ID` for the "
    "one that counts",
    Attention.INSTANCE_UNKNOWN: "check the job in Alma (Monitor Jobs), then `hwf confirm {set} --instance ID`, or "
    "`hwf retry {set} --reason TEXT` to run the step again",
    Attention.DRIFT: "`hwf sync {set}` takes the Alma set's members as they are now (new records are checked "
    "like the rest; records that joined after the copy job are left for a later set), then `hwf advance {set}`",
    Attention.MANUAL_STEP: "run the step by hand in Alma as the reason says: hwf finds the run by the set's name "
    "(or `hwf confirm {set} --instance ID`)",
    Attention.REGRESSION: "see `hwf report {set} --problems`, fix the registrations, then `hwf verify {set}`",
}
_FALLBACK = "see `hwf status {set}` and `hwf history {set}`, fix the cause, then `hwf retry {set} --reason TEXT`"
_COMMAND = re.compile(r"`(hwf [^`]+)`")


def stops(kind: str | None) -> bool:
    """Whether an attention of ``kind`` stops the set until an operator acts (see WAITS_FOR_A_RUN)."""
    return kind_of(kind) not in WAITS_FOR_A_RUN


def kind_of(value: str | None) -> Attention | None:
    """The stored kind as an Attention (None for none, or for a kind this version does not know)."""
    try:
        return Attention(value) if value else None
    except ValueError:
        return None


def advice(kind: str | None, set_id: str) -> str:
    """The sentence saying what to do about a set's attention of ``kind``."""
    known = kind_of(kind)
    return ADVICE.get(known, _FALLBACK).format(set=set_id) if known else _FALLBACK.format(set=set_id)


def next_command(kind: str | None, set_id: str) -> str:
    """The command that gets the set going again (the first one the advice names)."""
    found = _COMMAND.search(advice(kind, set_id))
    assert found is not None  # every advice names a command
    return found.group(1)
