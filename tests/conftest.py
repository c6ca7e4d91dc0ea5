"""The test world's fixtures: a fake clock, the simulator as an httpx transport, a migrated SQLite database, and
a Context wired like the CLI's; ``bctx`` is that Context on SQLite and then on PostgreSQL (``db_url``, from the
``tests.support.pg`` plugin). An autouse fixture keeps every test off real config and network. The helpers these
use, and tests import, are in ``tests/support/``; ``tests.support.parallel`` is the plugin for running the suite
in parallel (one PostgreSQL server per run, the ``serial`` marker)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import alembic.config  # noqa: F401  (see below)
import pytest

from orchestrator.config import Config, parse_config
from orchestrator.service.context import Context
from orchestrator.simulator import Scenario, Simulator
from tests.support import API_KEY, FakeClock, close_context, config_dict, make_context
from tests.support.people import first_contact_context

pytest_plugins = ["tests.support.parallel", "tests.support.pg"]

# alembic.config is imported above, at the start of the session, on purpose: alembic's Config takes the sys.stdout
# of the moment alembic.config is first imported as its default output. First imported inside a CliRunner.invoke
# (hwf init, hwf report, ...), it would keep that call's buffer, closed afterwards, and a later `alembic check`
# (tests/store/test_migrations.py) in the same process would fail writing to it, depending on which tests ran
# before it in that process (xdist's distribution made this show).


@pytest.fixture(autouse=True)
def _isolate(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("HWF_") or name.lower() in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def scenario() -> Scenario:
    return Scenario(job_seconds={"copy": 30, "migration": 60, "integration": 45, "other": 10}, per_second_limit=0)


@pytest.fixture
def sim(scenario: Scenario, clock: FakeClock) -> Simulator:
    return Simulator(scenario, clock=clock)


@pytest.fixture
def config(tmp_path: Path) -> Config:
    data = config_dict(db=f"sqlite:///{tmp_path / 'hwf.db'}")
    return parse_config(data, tmp_path / "hwf.toml", environ={"HWF_ALMA_API_KEY": API_KEY})


@pytest.fixture
def ctx(config: Config, sim: Simulator, clock: FakeClock) -> Iterator[Context]:
    context = make_context(config, sim, clock)
    yield context
    context.close()


@pytest.fixture
def bctx(db_url: str, sim: Simulator, clock: FakeClock, tmp_path: Path) -> Iterator[Context]:
    """``ctx`` on a fresh database of each backend: SQLite, then PostgreSQL (marked ``postgres``)."""
    config = parse_config(config_dict(db=db_url), tmp_path / "hwf.toml", environ={"HWF_ALMA_API_KEY": API_KEY})
    context = make_context(config, sim, clock)
    yield context
    close_context(context)


@pytest.fixture
def api(tmp_path: Path, sim: Simulator, clock: FakeClock) -> Iterator[Context]:
    """Integration by API (an institution whose sandbox proved op=run of the integration job)."""
    ctx = first_contact_context(tmp_path, sim, clock, handle_integration_mode="api")
    yield ctx
    ctx.close()


@pytest.fixture
def manual(tmp_path: Path, sim: Simulator, clock: FakeClock) -> Iterator[Context]:
    """hwf's default: a person presses Run on the Handle integration profile, once per integration batch."""
    ctx = first_contact_context(tmp_path, sim, clock)
    assert ctx.config.alma.jobs["handle_integration"].manual, "manual integration is the default"
    yield ctx
    ctx.close()
