"""The one place that builds what a command runs on: the database, the Alma clients, the verifier and the
handle resolver's client for ``hwf ping``.

The outside world comes in through a :class:`Wiring`: the HTTP transports, the clock and the sleep.
The CLI uses the real ones; tests (and the demo) pass the simulator's transport instead of
monkeypatching anything.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, NoReturn

from orchestrator import __version__
from orchestrator.config import Config, NotifyConfig, without_userinfo
from orchestrator.errors import ServeError
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
        max_reply_bytes=int(config.alma.max_reply_mb * 1024 * 1024),
        deadline=config.alma.deadline_seconds,
        user_agent=f"hwf/{__version__}",
        transport=wiring.alma_transport,
        **extra,  # type: ignore[arg-type]
    )


def build_setup_alma(
    base_url: str, api_key: str, wiring: Wiring | None = None, *, timeout: float = 30.0, deadline: float | None = None
) -> AlmaClient:
    """An Alma client for set-up and checks (``hwf init``, ``hwf jobs``, ``hwf ping``), from a gateway and a
    key alone (``hwf init`` has no configuration yet): one retry (an unreachable gateway is said at once),
    no daily floor (``ping`` reports the quota instead of stopping at it), the process's own pacing.
    ``deadline``: each reply whole within it (``[alma] deadline_seconds``; without a configuration, the
    timeout: a set-up reply is small). :raises ConfigError: the key cannot travel in an HTTP header."""
    from orchestrator.alma.client import AlmaClient

    wiring = wiring or Wiring()
    extra: dict[str, object] = {}
    if wiring.sleep is not None:
        extra["sleep"] = wiring.sleep
    return AlmaClient(
        base_url,
        api_key,
        transport=wiring.alma_transport,
        timeout=timeout,
        deadline=deadline if deadline is not None else timeout,
        max_retries=1,
        daily_call_floor=0,
        user_agent=f"hwf/{__version__} (setup)",
        **extra,  # type: ignore[arg-type]
    )


def build_setup_alma_for(config: Config, wiring: Wiring | None = None) -> AlmaClient:
    """:func:`build_setup_alma` for ``config``'s gateway, key, timeout and deadline. :raises ConfigError: no key."""
    return build_setup_alma(
        config.alma.base_url,
        config.require_api_key(),
        wiring,
        timeout=config.alma.timeout_seconds,
        deadline=config.alma.deadline_seconds,
    )


def build_resolver_http(config: Config, wiring: Wiring | None = None) -> httpx.Client:
    """A plain HTTP client for one look at ``config``'s handle resolver (``hwf ping``): redirects followed,
    the resolver's timeout."""
    import httpx

    wiring = wiring or Wiring()
    return httpx.Client(
        timeout=config.handles.timeout_seconds,
        follow_redirects=True,
        headers={"User-Agent": f"hwf/{__version__} (ping)"},
        transport=wiring.resolver_transport,
    )


def build_verifier(config: Config, follow: bool, wiring: Wiring | None = None) -> Verifier:
    """A handle verifier for ``config``'s resolver."""
    from orchestrator.resolver import Verifier

    wiring = wiring or Wiring()
    h = config.handles
    extra: dict[str, object] = {}
    if wiring.resolver_sleep is not None:
        extra["sleep"] = wiring.resolver_sleep
    if wiring.clock is not None:
        extra["now"] = wiring.clock  # a test's fake clock: check times and cache expiries on the same clock
    return Verifier(
        without_userinfo(h.resolver_url),  # never a user:password@ (refused by the config; stripped if it slips by)
        config.primo,
        concurrency=wiring.verifier_concurrency or h.concurrency,
        requests_per_second=h.requests_per_second,
        retries=h.retries,
        timeout=h.timeout_seconds,
        max_reply_bytes=int(h.max_reply_kb * 1024),
        deadline=h.deadline_seconds,
        check_public=h.public_cache_check,
        authoritative=h.authoritative,
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


def install_log(config: Config) -> None:
    """Send hwf's structured log to ``[log] file`` (JSON lines, rotated), the Alma key redacted from every
    line. :raises ConfigError: the file cannot be written (one line naming it, exit 2). :raises DatabaseError: an
    SQLite database's folder does not exist."""
    from orchestrator import logs
    from orchestrator.store.db import require_folder

    require_folder(config.database_url)  # before the log, which would make the folder of a log beside it
    if config.log.file is None:
        return
    secrets = [config.alma.api_key] if config.alma.api_key else []
    logs.install(config.log.file, max_bytes=config.log.max_bytes, backups=config.log.backups, secrets=secrets)


def uninstall_log() -> None:
    from orchestrator import logs

    logs.uninstall()


def _no_alma() -> NoReturn:
    raise ServeError("the dashboard reads the database only; it never calls Alma")


def _no_verifier(_follow: bool) -> Verifier:
    _no_alma()


def read_only_context(config: Config) -> Context:
    """A context whose sessions cannot write and which has no Alma client or verifier to call."""
    from orchestrator.store.db import open_database_read_only

    quiet = dataclasses.replace(config, notify=NotifyConfig())  # a reader never sends notifications
    return Context(
        config=quiet,
        sessions=open_database_read_only(config.database_url),
        alma_factory=_no_alma,
        verifier_factory=_no_verifier,
    )
