"""What an operator does about each kind of attention: one table, used by ``--dry-run``, ``hwf overview``
and the dashboard, so the advice is written once."""

from __future__ import annotations

import re

ATTENTION_ADVICE = {
    "records": "fix the records (`hwf check {set}`, `hwf fix {set} --apply`) or leave them out "
    "(`hwf exclude {set} MMS... --reason TEXT`), then `hwf advance {set}`",
    "job": "read the job report in Alma (Monitor Jobs), fix the cause, then `hwf retry {set} --reason TEXT`",
    "verify": "see `hwf report {set} --problems`, fix the registrations, then `hwf advance {set}` re-checks those",
    "reconcile": "check the instances in Alma (Monitor Jobs), abort extras, then `hwf confirm {set} --instance ID`",
    "quota": "wait for Alma's daily quota reset (midnight, institution time), then `hwf retry {set} --reason TEXT`",
    "guard": "see `hwf check {set}` and `hwf history {set}`, then `hwf retry {set} --reason TEXT`",
    "audit": "see `hwf audit {set}` (Alma's own job history for the set) and do what it says",
    "fault": "see the reason and `hwf history {set}` (the log has the details), fix the cause or report the fault, "
    "then `hwf retry {set} --reason TEXT`",
    "earlier_runs": "check the runs in Alma (Monitor Jobs), then `hwf confirm {set} --instance ID` for the one "
    "that counts",
    "instance_unknown": "check the job in Alma (Monitor Jobs), then `hwf confirm {set} --instance ID`, or "
    "`hwf retry {set} --reason TEXT` to run the step again",
}
_FALLBACK = "see `hwf status {set}` and `hwf history {set}`, fix the cause, then `hwf retry {set} --reason TEXT`"
_COMMAND = re.compile(r"`(hwf [^`]+)`")


def advice(kind: str | None, set_id: str) -> str:
    """The sentence saying what to do about a set's attention of ``kind``."""
    return ATTENTION_ADVICE.get(kind or "", _FALLBACK).format(set=set_id)


def next_command(kind: str | None, set_id: str) -> str:
    """The command that gets the set going again (the first one the advice names)."""
    found = _COMMAND.search(advice(kind, set_id))
    assert found is not None  # every advice names a command
    return found.group(1)
