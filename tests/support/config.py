"""Test configurations: ``config_dict`` describes one, ``write_config`` writes it as the ``hwf.toml`` hwf reads.

Both take the same keyword options. A ``preset`` picks the starting point:

- ``"full"`` (the default): every knob set for the in-process world (the simulator at ``http://alma.test`` as
  Alma and as the resolver, the fake clock): fast polls, no settle wait. The ``config`` fixture is this.
- ``"minimal"``: only the required keys, as a user writes them; the Alma URL defaults to ``http://127.0.0.1:9``,
  where nothing answers.
- ``"cli"``: the real CLI on the in-process simulator (``WiredRunner``): minimal, plus polls every 2 s,
  1,000 requests/s, the resolver at the Alma URL and no settle wait (``url`` defaults to the simulator's).
- ``"e2e"``, ``"crash"``: the real ``hwf`` process against ``hwf sim serve`` at ``url``: short polls, a short
  lease; ``"crash"`` also a short reconcile grace, no daily floor and Alma's job limits out of the way.

Then: ``resolver`` sets ``[handles] resolver_url``, ``jobs`` replaces ``[alma.jobs]``, ``integration`` sets
``[alma.jobs] handle_integration_mode`` ("api" unless given: the tests that do not say otherwise run the
integration profile through the API; ``None`` leaves hwf's default, "manual"), ``lease_seconds`` sets
``[workflow] lease_seconds``; any other keyword whose value is a dict is merged into the table of that name
(``notify={...}``, ``log={...}``, ``handles={...}``), any other value is an ``[alma]`` key, and ``None``
removes the key (back to hwf's default). ``allow_insecure_http`` is set when the Alma URL or the resolver is
plain http to a host that is not this machine."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from orchestrator.config import Config, is_loopback, parse_config

API_KEY = "l7xx-test-key-0123456789abcdef"
BASE = "http://alma.test"  # the in-process simulator (never leaves the process)
NOWHERE = "http://127.0.0.1:9"  # nothing answers there

DEFAULT_JOBS = {
    "copy_identifiers": "M1234567890000561",
    "handle_migration": "M2234567890000561",
    "handle_integration": "M50700",
}

_FAST_E2E = {"poll_interval_seconds": 0.3, "poll_max_interval_seconds": 1, "reconcile_grace_seconds": 5}
_FAST_CRASH = {
    "poll_interval_seconds": 0.2,
    "poll_max_interval_seconds": 0.5,
    "reconcile_grace_seconds": 1.5,
    "requests_per_second": 50,
    "threshold_wait_seconds": 1,
    "max_runs_per_job_hour": 1000,
    "daily_call_floor": 0,
    "timeout_seconds": 20,
}
# preset -> (the default Alma URL, whether the resolver is the Alma URL, tables set on top of the required keys)
PRESETS: dict[str, tuple[str, bool, dict[str, dict[str, Any]]]] = {
    "full": (
        BASE,
        True,
        {
            "alma": {
                "poll_interval_seconds": 2,
                "poll_max_interval_seconds": 10,
                "reconcile_grace_seconds": 30,
                "requests_per_second": 1000,
            },
            "handles": {"settle_minutes": 0, "retries": 2},
            "workflow": {"lease_seconds": 60},
        },
    ),
    "minimal": (NOWHERE, False, {}),
    "cli": (
        BASE,
        True,
        {"alma": {"poll_interval_seconds": 2, "requests_per_second": 1000}, "handles": {"settle_minutes": 0}},
    ),
    "e2e": (
        NOWHERE,
        True,
        {
            "alma": {**_FAST_E2E, "requests_per_second": 50},
            "handles": {"settle_minutes": 0, "requests_per_second": 200},
            "workflow": {"lease_seconds": 6},
        },
    ),
    "crash": (
        NOWHERE,
        True,
        {
            "alma": _FAST_CRASH,
            "handles": {"settle_minutes": 0, "requests_per_second": 1000, "concurrency": 8},
            "workflow": {"lease_seconds": 6},
        },
    ),
}


def config_dict(
    db: str = "sqlite:///hwf.db",
    url: str | None = None,
    *,
    preset: str = "full",
    resolver: str | None = None,
    jobs: dict[str, Any] | None = None,
    integration: str | None = "api",
    lease_seconds: float | None = None,
    **settings: Any,
) -> dict[str, Any]:
    """A configuration as the dict ``parse_config`` takes (see the module's docstring for the options)."""
    default_url, resolver_is_alma, tables = PRESETS[preset]
    url = url or default_url
    resolver = resolver or (url if resolver_is_alma else None)
    # Plain http to a host that is not this machine (the in-process simulator's alma.test) must be allowed.
    plain_elsewhere = any(u and not (is_loopback(u) or u.startswith("https:")) for u in (url, resolver))
    data: dict[str, Any] = {"allow_insecure_http": True} if plain_elsewhere else {}
    data["database"] = {"url": db}
    data["alma"] = {"base_url": url, "institution_code": "01GCL_INST"}
    data["handles"] = {"prefix": "11084"}
    if resolver:
        data["handles"]["resolver_url"] = resolver
    data["primo"] = {"domain": "grinnell.primo.exlibrisgroup.com", "view": "01GCL_INST:GCL"}
    for name, values in tables.items():
        data.setdefault(name, {}).update(values)
    for key, value in settings.items():
        if isinstance(value, dict):
            data.setdefault(key, {}).update(value)
        else:
            data["alma"][key] = value
    if lease_seconds is not None:
        data.setdefault("workflow", {})["lease_seconds"] = lease_seconds
    data["alma"]["jobs"] = dict(jobs or DEFAULT_JOBS)
    if integration is not None:
        data["alma"]["jobs"].setdefault("handle_integration_mode", integration)
    for table in data.values():
        if isinstance(table, dict):
            for key in [k for k, v in table.items() if v is None]:
                del table[key]
    return data


def toml_text(data: dict[str, Any], prefix: str = "") -> str:
    """TOML for a config dict (scalars first, then sub-tables), as hwf reads it."""
    lines = [f"{key} = {json.dumps(value)}" for key, value in data.items() if not isinstance(value, dict)]
    for key, value in data.items():
        if isinstance(value, dict):
            name = f"{prefix}{key}"
            lines += ["", f"[{name}]", toml_text(value, name + ".").strip("\n")]
    return "\n".join(lines).strip("\n") + "\n"


def write_config(
    path: Path, url: str | None = None, *, data: dict[str, Any] | None = None, db: str | None = None, **options: Any
) -> Path:
    """Write a config file and return its path: ``data`` as given, else ``config_dict(db, url, **options)``.

    ``path`` is the file, or a folder to write ``hwf.toml`` in. ``db`` defaults to ``hwf.db`` beside the file."""
    path = path / "hwf.toml" if path.is_dir() else path
    if data is None:
        data = config_dict(db or f"sqlite:///{path.parent / 'hwf.db'}", url, **options)
    else:
        assert url is None and db is None and not options, "give either data or the options that build it"
    path.write_text(toml_text(data), encoding="utf-8")
    return path


def parsed_config(tmp_path: Path, **settings: Any) -> Config:
    """``config_dict`` on a SQLite file in ``tmp_path``, parsed as hwf parses it (the key in its environment)."""
    data = config_dict(db=f"sqlite:///{tmp_path / 'hwf.db'}", **settings)
    return parse_config(data, tmp_path / "hwf.toml", environ={"HWF_ALMA_API_KEY": API_KEY})
