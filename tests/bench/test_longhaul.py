"""bench/longhaul.py keeps working: the first 1,200 titles (12 sets of 100, batch 7 with a problem record),
through the 1-hour outage, on the virtual clock. No timing asserts: the figures that do not depend on the
machine (duplicates, verdicts, attention, events) must hold."""

from __future__ import annotations

from bench import longhaul
from bench.common import Results


def test_longhaul_at_toy_size_verifies_the_clean_sets_and_stops_the_problem_set() -> None:
    res = Results("long-haul smoke")
    longhaul.run(res, limit=1200, job_seconds=30.0, poll=15.0)
    met = dict(res.targets)
    for name in (
        "0 duplicate jobs",
        "every clean set verified",
        "the 1 problem sets in attention",
        "exactly one notification (attention event) per attention",
        "the outage happened",
    ):
        assert met.get(name) is True, (name, res.targets)
    assert len(longhaul.titles(None)) == 11_440  # the institution's digital titles, from the fixture
