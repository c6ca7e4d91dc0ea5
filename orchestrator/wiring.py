"""The one place that builds what a command runs on: the database, the Alma client and the verifier.

The outside world comes in through a :class:`Wiring`: the HTTP transports, the clock and the sleep.
The CLI uses the real ones; tests (and the demo) pass the simulator's transport instead of
monkeypatching anything.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from orchestrator import __version__
from orchestrator.config import Config
from orchestrator.service.context import Context
from orchestrator.service.reporting import NullReporter, Reporter

if TYPE_CHECKING:
    import httpx
    from sqlalchemy import Engine

    from orchestrator.alma.client import AlmaClient
    from orchestrator.resolver import Verifier


@dataclass(frozen=True)
class Wiring:
    """What to talk to and how time passes. ``None`` everywhere means the real network and clock."""

    alma_transport: httpx.BaseTransport | None = None
    resolver_transport: httpx.BaseTransport | None = None
    clock: Callable[[], datetime] | None = None
    sleep: Callable[[float], None] | None = None
    resolver_sleep: Callable[[float], None] | None = None
    owner: str | None = None
    verifier_concurrency: int | None = None


def build_alma(config: Config, wiring: Wiring | None = None, engine: Engine | None = None) -> AlmaClient:
    """An Alma client for ``config`` (the key from the environment or the key file). With the database's
    ``engine`` and the real clock, its requests draw on the budget every process sharing the key shares."""
    from orchestrator.alma.client import AlmaClient

    wiring = wiring or Wiring()
    extra: dict[str, object] = {}
    if wiring.sleep is not None:
        extra["sleep"] = wiring.sleep
    elif engine is not None and config.alma.shared_budget:
        # The shared schedule runs in real time: a test's fake clock keeps the process's own bucket.
        from orchestrator.store.budget import shared_gate

        extra["gate"] = shared_gate(
            config.database_url,
            engine,
            config.require_api_key(),
            config.alma.requests_per_second,
            floor=config.alma.daily_call_floor,
        )
    return AlmaClient(
        config.alma.base_url,
        config.require_api_key(),
        timeout=config.alma.timeout_seconds,
        format=config.alma.format,
        requests_per_second=config.alma.requests_per_second,
        daily_call_floor=config.alma.daily_call_floor,
        max_retries=config.alma.max_retries,
        user_agent=f"hwf/{__version__}",
        transport=wiring.alma_transport,
        **extra,  # type: ignore[arg-type]
    )


def build_verifier(config: Config, follow: bool, wiring: Wiring | None = None) -> Verifier:
    """A handle verifier for ``config``'s resolver."""
    from orchestrator.resolver import Verifier

    wiring = wiring or Wiring()
    h = config.handles
    extra: dict[str, object] = {}
    if wiring.resolver_sleep is not None:
        extra["sleep"] = wiring.resolver_sleep
    return Verifier(
        h.resolver_url,
        config.primo,
        concurrency=wiring.verifier_concurrency or h.concurrency,
        requests_per_second=h.requests_per_second,
        retries=h.retries,
        timeout=h.timeout_seconds,
        follow=follow,
        user_agent=f"hwf/{__version__} (handle verification)",
        transport=wiring.resolver_transport,
        **extra,  # type: ignore[arg-type]
    )


def build_context(config: Config, *, reporter: Reporter | None = None, wiring: Wiring | None = None) -> Context:
    """The context every service call runs in: database sessions, lazily built clients, clock."""
    from orchestrator.store.db import open_database

    wiring = wiring or Wiring()
    extra: dict[str, object] = {}
    if wiring.clock is not None:
        extra["clock"] = wiring.clock
    if wiring.sleep is not None:
        extra["sleep"] = wiring.sleep
    if wiring.owner is not None:
        extra["owner"] = wiring.owner
    sessions = open_database(config.database_url)
    engine = sessions.kw.get("bind")
    return Context(
        config=config,
        sessions=sessions,
        alma_factory=lambda: build_alma(config, wiring, engine),
        verifier_factory=lambda follow: build_verifier(config, follow, wiring),
        reporter=reporter or NullReporter(),
        **extra,  # type: ignore[arg-type]
    )
