"""The in-process world: the simulator as both remotes, a Context wired as the CLI wires it, the real CLI app
handed that wiring, and the one way to make a set of records in the simulator."""

from __future__ import annotations

import dataclasses
from typing import Any

import httpx
from click.testing import Result
from typer.testing import CliRunner

from orchestrator.config import Config
from orchestrator.service.context import Context
from orchestrator.service.reporting import CollectingReporter
from orchestrator.simulator import Scenario, Simulator
from orchestrator.wiring import Wiring, build_context
from tests.support.clock import FakeClock


def make_set(sim: Simulator, n: int = 10, *, profile: str = "clean", name: str = "Test titles", seed: int = 1) -> str:
    """A set of ``n`` generated records (``profile``: clean, demo, problems, ...) in the simulator; its Alma id."""
    return sim.create_set(name, sim.generate_records(n, profile=profile, seed=seed))


def alma_limits(runs_per_hour: int = 5, job_seconds: float = 30.0) -> Scenario:
    """A simulated Alma that keeps Alma's own limits: 3 API jobs running at once, ``runs_per_hour`` runs of a job
    an hour, every job ``job_seconds`` long, no per-second cap."""
    return Scenario(
        job_seconds=dict.fromkeys(("copy", "migration", "integration", "other"), job_seconds),
        per_second_limit=0,
        enforce_job_thresholds=True,
        max_running_api_jobs=3,
        max_runs_per_hour=runs_per_hour,
    )


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


def raw_alma(sim: Any, fmt: str = "json", base: str = "http://alma.test/almaws/v1") -> httpx.Client:
    """A bare HTTP client on the simulated Alma (no hwf in between), asking for ``fmt`` (json or xml)."""
    headers = {"Accept": f"application/{fmt}", "Authorization": "apikey k"}
    return httpx.Client(transport=httpx.MockTransport(sim.handle), base_url=base, headers=headers)


def make_context(config: Config, sim: Any, clock: FakeClock, **overrides: Any) -> Context:
    """A Context wired exactly as the CLI wires it (``orchestrator.wiring``), on the simulator."""
    context = build_context(config, reporter=CollectingReporter(), wiring=sim_wiring(sim, clock))
    return dataclasses.replace(context, **overrides) if overrides else context


class NoAlma:
    """An alma_factory that fails the test if a dry run ever builds a client."""

    def __call__(self) -> Any:
        raise AssertionError("a dry run must not create an Alma client")


def dry_context(ctx: Context) -> Context:
    """``ctx`` for a dry run: the same database and clock, and no Alma client or verifier (building one fails)."""
    return Context(
        config=ctx.config,
        sessions=ctx.sessions,
        alma_factory=NoAlma(),
        verifier_factory=lambda follow: (_ for _ in ()).throw(AssertionError("no verifier in a dry run")),
        clock=ctx.clock,
        owner=ctx.owner,
    )


def close_context(ctx: Context) -> None:
    """Close a Context and dispose of its engine (a test's own database, PostgreSQL's in particular)."""
    ctx.close()
    ctx.sessions.kw["bind"].dispose()


class WiredRunner(CliRunner):
    """A CliRunner that hands the real ``hwf`` app a Wiring (``app(obj=...)``), when one is set."""

    wiring: Wiring | None = None

    def invoke(self, *args: Any, **kwargs: Any) -> Result:  # type: ignore[override]
        if self.wiring is not None:
            kwargs.setdefault("obj", self.wiring)
        return super().invoke(*args, **kwargs)
