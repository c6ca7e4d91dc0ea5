"""Tests for orchestrator.domain.jobrules: Alma's counters read tolerantly, and which set a job run names."""

from __future__ import annotations

import pytest

from orchestrator.domain.jobrules import SetMatch, counted, match_set
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
