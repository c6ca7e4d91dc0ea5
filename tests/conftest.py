"""The test world: a fake clock, the simulator as an httpx transport, a migrated SQLite database,
and a Context wired like the CLI's. An autouse fixture keeps every test off real config and network."""

from __future__ import annotations

import dataclasses
import json
import os
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import Result
from typer.testing import CliRunner

from orchestrator.config import Config, is_loopback, parse_config
from orchestrator.service.context import Context
from orchestrator.service.reporting import CollectingReporter
from orchestrator.simulator import Scenario, Simulator
from orchestrator.wiring import Wiring, build_context

pytest_plugins = ["tests.pg"]

API_KEY = "l7xx-test-key-0123456789abcdef"
BASE = "http://alma.test"


class FakeClock:
    """A clock that only moves when someone sleeps (or a test advances it). Thread-safe."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 2, 2, 15, 0, 0, tzinfo=UTC)
        self._lock = threading.Lock()
        self.slept = 0.0

    def __call__(self) -> datetime:
        with self._lock:
            return self._now

    def sleep(self, seconds: float) -> None:
        self.advance(max(seconds, 0.0))
        self.slept += max(seconds, 0.0)

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += timedelta(seconds=seconds)


@pytest.fixture(autouse=True)
def _isolate(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("HWF_") or name.lower() in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


def config_dict(
    base: str = BASE, resolver: str | None = None, db: str = "sqlite:///hwf.db", **alma: Any
) -> dict[str, Any]:
    return {
        "allow_insecure_http": True,  # the simulator's http://alma.test never leaves the process
        "database": {"url": db},
        "alma": {
            "base_url": base,
            "institution_code": "01GCL_INST",
            "poll_interval_seconds": 2,
            "poll_max_interval_seconds": 10,
            "reconcile_grace_seconds": 30,
            "requests_per_second": 1000,
            **alma,
            "jobs": {
                "copy_identifiers": "M1234567890000561",
                "handle_migration": "M2234567890000561",
                "handle_integration": "M50700",
                # the tests that do not say otherwise run the integration profile through the API; the
                # manual mode (the default) has its own tests
                "handle_integration_mode": "api",
            },
        },
        "handles": {"prefix": "11084", "resolver_url": resolver or base, "settle_minutes": 0, "retries": 2},
        "primo": {"domain": "grinnell.primo.exlibrisgroup.com", "view": "01GCL_INST:GCL"},
        "workflow": {"lease_seconds": 60},
    }


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


def sim_wiring(sim: Any, clock: FakeClock, **overrides: Any) -> Wiring:
    """The simulator as both remotes (in process, no sockets), the fake clock, and no real sleeping."""
    transport = httpx.MockTransport(sim.handle)
    values: dict[str, Any] = {
        "alma_transport": transport,
        "resolver_transport": transport,
        "clock": clock,
        "sleep": clock.sleep,
        "resolver_sleep": lambda seconds: None,
        "owner": "test-host:1",
        "verifier_concurrency": 4,
    }
    values.update(overrides)
    return Wiring(**values)


def make_context(config: Config, sim: Any, clock: FakeClock, **overrides: Any) -> Context:
    """A Context wired exactly as the CLI wires it (``orchestrator.wiring``), on the simulator."""
    context = build_context(config, reporter=CollectingReporter(), wiring=sim_wiring(sim, clock))
    return dataclasses.replace(context, **overrides) if overrides else context


class WiredRunner(CliRunner):
    """A CliRunner that hands the real ``hwf`` app a Wiring (``app(obj=...)``), when one is set."""

    wiring: Wiring | None = None

    def invoke(self, *args: Any, **kwargs: Any) -> Result:  # type: ignore[override]
        if self.wiring is not None:
            kwargs.setdefault("obj", self.wiring)
        return super().invoke(*args, **kwargs)


@pytest.fixture
def ctx(config: Config, sim: Simulator, clock: FakeClock) -> Iterator[Context]:
    context = make_context(config, sim, clock)
    yield context
    context.close()


DEFAULT_JOBS = {
    "copy_identifiers": "M1234567890000561",
    "handle_migration": "M2234567890000561",
    "handle_integration": "M50700",
    "handle_integration_mode": "api",
}


def toml_text(data: dict[str, Any], prefix: str = "") -> str:
    """TOML for a config dict (scalars first, then sub-tables), as hwf reads it."""
    lines = [f"{key} = {json.dumps(value)}" for key, value in data.items() if not isinstance(value, dict)]
    for key, value in data.items():
        if isinstance(value, dict):
            name = f"{prefix}{key}"
            lines += ["", f"[{name}]", toml_text(value, name + ".").strip("\n")]
    return "\n".join(lines).strip("\n") + "\n"


def write_config(path: Path, data: dict[str, Any]) -> Path:
    """The one writer of test configuration files: ``data`` is shaped like ``config_dict()``."""
    path.write_text(toml_text(data), encoding="utf-8")
    return path


def minimal_config(
    database_url: str, base_url: str = "http://127.0.0.1:9", jobs: dict[str, str] | None = None, **alma: Any
) -> dict[str, Any]:
    """Only the required keys (plus ``alma``), for tests that drive the real CLI; plain http to a host
    that is not this machine (the in-process simulator's ``alma.test``) also needs allow_insecure_http."""
    insecure = {} if is_loopback(base_url) or base_url.startswith("https:") else {"allow_insecure_http": True}
    return {
        **insecure,
        "database": {"url": database_url},
        "alma": {"base_url": base_url, "institution_code": "01GCL_INST", **alma, "jobs": dict(jobs or DEFAULT_JOBS)},
        "handles": {"prefix": "11084"},
        "primo": {"domain": "grinnell.primo.exlibrisgroup.com", "view": "01GCL_INST:GCL"},
    }


def write_minimal_config(
    path: Path, database_url: str, base_url: str = "http://127.0.0.1:9", jobs: dict[str, str] | None = None
) -> Path:
    """A small hwf.toml with only the required keys, for tests that drive the real CLI."""
    return write_config(path, minimal_config(database_url, base_url, jobs))
