"""Tests for orchestrator.domain.jobrules: Alma's counters read tolerantly, and which set a job run names."""

from __future__ import annotations

import pytest

from orchestrator.domain.jobrules import SetMatch, counted, match_set, names_set_by_hand
from orchestrator.domain.machine import Step


def test_counted():
    assert counted(None) == 0 and counted(5) == 5 and counted("7") == 7 and counted("7.0") == 7
    assert counted("some text") == 0 and counted("some text", text_counts=1) == 1 and counted("nan") == 0


@pytest.mark.parametrize(
    ("name", "set_param", "expected"),
    [
        ("hwf migrate set 123 hwf-00ff - 2026-01-01 1:00 PM", None, SetMatch.THIS),
        ("hwf migrate set 124 hwf-00ff - 2026-01-01 1:00 PM", None, SetMatch.OTHER),
        ("hwf integrate set 123 hwf-00ff - 2026-01-01 1:00 PM", None, SetMatch.OTHER),
        ("DG Handle Migration - Theses - 09/30/2025 11:35:15 CDT", None, SetMatch.THIS),
        ("DG Handle Migration - 09/30/2025 11:35:15 CDT", None, SetMatch.UNKNOWN),
        ("DG Handle Migration - 09/30/2025 11:35:15 CDT", "123", SetMatch.THIS),
        ("hwf migrate set 123 hwf-00ff", "999", SetMatch.OTHER),
    ],
)
def test_match_set(name: str, set_param: str | None, expected: SetMatch) -> None:
    assert match_set(name, "123", "Theses", step=Step.MIGRATE, set_param=set_param)[0] is expected


@pytest.mark.parametrize(
    ("run_name", "set_name", "job_name", "expected"),
    [
        ("Handle Integration - Batch - Old - 12/05/2026 14:33:10 CST", "Batch - Old", "Handle Integration", True),
        # A set whose name another set's name contains never adopts that set's run.
        ("Handle Integration - Batch - Old - 12/05/2026 14:33:10 CST", "Batch", "Handle Integration", False),
        ("Handle Integration - Batch - Old - 12/05/2026 14:33:10 CST", "Old", "Handle Integration", False),
        ("DG Handle Migration - Batch - 2026-12-05 14:33", "Batch", None, True),
        ("DG Handle Migration - Batch", "Batch", None, False),  # no time stamp: not a run made in the UI
        ("DG Handle Migration - Batch - yesterday", "Batch", None, False),
    ],
)
def test_a_run_made_by_hand_names_the_set_only_by_its_whole_name(
    run_name: str, set_name: str, job_name: str | None, expected: bool
) -> None:
    assert names_set_by_hand(run_name, set_name, job_name) is expected
