"""bench/longhaul.py keeps working: the first 1,200 titles (12 sets of 100, batch 7 with a problem record),
through the 1-hour outage, on the virtual clock. No timing asserts: the figures that do not depend on the
machine (duplicates, verdicts, attention, events) must hold."""

from __future__ import annotations

import pytest

from bench import longhaul
from bench.common import Results


@pytest.mark.parametrize("integration", ["api", "manual"])
def test_longhaul_at_toy_size_verifies_the_clean_sets_and_stops_the_problem_set(integration: str) -> None:
    res = Results("long-haul smoke")
    longhaul.run(res, limit=1200, job_seconds=30.0, poll=15.0, integration=integration)
    met = dict(res.targets)
    for name in (
        "0 duplicate jobs",
        "every clean set verified",
        "the 1 problem sets in attention",
        "exactly one notification (attention event) per attention",
        "the outage happened",
        "no record ran a step twice or out of order",
    ):
        assert met.get(name) is True, (name, res.targets)
    if integration == "manual":
        assert met.get("at most one click every 8 working hours") is True, res.targets
        assert 1 <= res.values["clicks"] <= 2
    assert len(longhaul.titles(None)) == 11_440  # the institution's digital titles, from the fixture
