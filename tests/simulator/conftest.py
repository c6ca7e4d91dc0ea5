"""The simulator's own tests drive it on a ManualClock (time moves only when a test moves it); a module that needs
another simulator (its own scenario, handles registered) defines its own ``sim``."""

from __future__ import annotations

import pytest

from orchestrator.simulator import ManualClock, Scenario, Simulator


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def sim(clock: ManualClock) -> Simulator:
    return Simulator(Scenario(per_second_limit=0), clock=clock)
