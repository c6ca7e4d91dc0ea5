"""What the tests share: clocks, configurations, the in-process simulator world (imported from here), and, in
their own modules, the real ``hwf`` process (``e2e``), crash tools (``crash``), operations helpers (``ops``),
the dashboard's world (``web``), headless Chromium (``browser``) and the PostgreSQL plugin (``pg``).

Fixtures live in ``tests/conftest.py``; these are plain functions and classes."""

from tests.support.clock import FakeClock, MonotonicClock
from tests.support.config import (
    API_KEY,
    BASE,
    DEFAULT_JOBS,
    NOWHERE,
    config_dict,
    parsed_config,
    toml_text,
    write_config,
)
from tests.support.sim import WiredRunner, alma_limits, close_context, dry_context, make_context, make_set, sim_wiring

__all__ = [
    "API_KEY",
    "BASE",
    "DEFAULT_JOBS",
    "NOWHERE",
    "FakeClock",
    "MonotonicClock",
    "WiredRunner",
    "alma_limits",
    "close_context",
    "config_dict",
    "dry_context",
    "make_context",
    "make_set",
    "parsed_config",
    "sim_wiring",
    "toml_text",
    "write_config",
]
