"""Reading one TOML table of the configuration with types and ranges, naming the file and the dotted key in every
error; and the rules a configured URL must follow (an http(s) URL without a key in it; plain http only to this
machine, the one loopback rule)."""

from __future__ import annotations

import difflib
import ipaddress
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from orchestrator.errors import ConfigError


class Reader:
    """Typed access to one TOML table that names the file and dotted key in every error, and remembers
    which keys were read, so that :meth:`check_unknown` can refuse the ones nobody reads (a misspelt
    key is an error, not a silently used default)."""

    def __init__(self, path: Path, data: Mapping[str, Any], prefix: str) -> None:
        self.path, self.data, self.prefix = path, data, prefix
        self.seen: set[str] = set()
        self.tables: list[Reader] = []

    def _name(self, key: str) -> str:
        return f"{self.prefix}.{key}" if self.prefix else key

    def get(self, key: str, default: Any = None) -> Any:
        """The raw value of ``key`` (marking it as known)."""
        self.seen.add(key)
        return self.data.get(key, default)

    def fail(self, key: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.path}: key {self._name(key)}: {problem}")

    def table(self, key: str, required: bool = True) -> Reader:
        value = self.get(key)
        if value is None:
            if required:
                raise ConfigError(f"{self.path}: missing table [{self._name(key)}]")
            value = {}
        if not isinstance(value, dict):
            raise self.fail(key, "must be a table")
        child = Reader(self.path, value, self._name(key))
        self.tables.append(child)
        return child

    def check_unknown(self) -> None:
        """:raises ConfigError: naming the first key no one read, and the closest known one."""
        for key in self.data:
            if key not in self.seen:
                close = difflib.get_close_matches(key, sorted(self.seen), n=1, cutoff=0.6)
                hint = f"; did you mean {self._name(close[0])}?" if close else ""
                where = f"[{self.prefix}]" if self.prefix else "the top level"
                raise ConfigError(f"{self.path}: unknown key {self._name(key)} in {where}{hint}")
        for child in self.tables:
            child.check_unknown()

    def string(self, key: str, default: str | None = None) -> str:
        value = self.get(key, default)
        if value is None:
            raise self.fail(key, "is missing")
        if not isinstance(value, str) or not value.strip():
            raise self.fail(key, f"must be a non-empty string, not {value!r}")
        return value.strip()

    def optional_string(self, key: str) -> str | None:
        if self.get(key) is None:
            return None
        return self.string(key)

    def number(self, key: str, default: float, minimum: float = 0.0, maximum: float = 86400.0) -> float:
        value = self.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(key, f"must be a number, not {value!r}")
        if not math.isfinite(value):
            raise self.fail(key, f"must be a finite number, not {value!r}")
        if value < minimum or value > maximum:
            raise self.fail(key, f"must be between {minimum:g} and {maximum:g}, not {value!r}")
        return float(value)

    def integer(self, key: str, default: int, minimum: int = 0, maximum: int = 1000) -> int:
        value = self.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(key, f"must be a whole number, not {value!r}")
        if value < minimum or value > maximum:
            raise self.fail(key, f"must be between {minimum} and {maximum}, not {value!r}")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self.get(key, default)
        if not isinstance(value, bool):
            raise self.fail(key, f"must be true or false, not {value!r}")
        return value

    def choice(self, key: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.string(key, default)
        if value not in choices:
            raise self.fail(key, f"must be one of {', '.join(choices)}, not {value!r}")
        return value


def url_value(reader: Reader, key: str, default: str | None = None, *, value: str | None = None) -> str:
    """A base URL from ``key`` (or ``value``, from the environment, checked the same way)."""
    value = (reader.string(key, default) if value is None else value.strip()).rstrip("/")
    if without_userinfo(value) != value:
        # A name and password in the URL would reach logs and bundles, and httpx would send them as Basic
        # auth in place of the key header: refused, and the value is not repeated (it holds a password).
        raise reader.fail(key, "must not carry a user name or password (user:password@); remove them from the URL")
    if not re.match(r"^https?://[^/\s]+", value):
        raise reader.fail(key, f"must be an http(s) URL, not {value!r}")
    if "apikey" in value.lower():
        raise reader.fail(key, "must not carry an API key; hwf sends the key only in a header")
    try:
        urlsplit(value).port  # noqa: B018 (a port out of range raises)
    except ValueError:
        raise reader.fail(key, f"{value!r} has no valid port") from None
    return value


def without_userinfo(url: str) -> str:
    """``url`` without a ``user:password@`` before its host (the rest as it was): what may be shown or sent."""
    match = re.match(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<authority>[^/?#]*)(?P<rest>.*)$", url, re.DOTALL)
    if match is None or "@" not in match["authority"]:
        return url
    return match["scheme"] + match["authority"].rsplit("@", 1)[1] + match["rest"]


def is_loopback_host(host: str) -> bool:
    """``host`` is this machine: the name ``localhost`` (any case), or an address in 127.0.0.0/8 or ::1 (an IPv6
    address with or without its brackets). No other name counts, ``*.localhost`` included: a name is only as
    local as whatever resolves it.

    The one loopback rule: plain http to a loopback URL needs no ``allow_insecure_http`` (config), a loopback URL
    is never sent through a proxy (transport), a dashboard bound to a loopback address needs no token and answers
    only requests whose Host is loopback, so a page elsewhere that points its own name at 127.0.0.1 (DNS
    rebinding) gets nothing (web)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.removeprefix("[").removesuffix("]")).is_loopback
    except ValueError:
        return False


def is_loopback(url: str) -> bool:
    """The URL's host is this machine (:func:`is_loopback_host`): nothing it carries leaves it."""
    return is_loopback_host(urlsplit(url).hostname or "")


def plain_http_elsewhere(url: str) -> bool:
    """Plain ``http://`` to a host that is not this machine: what the request carries would travel in clear."""
    return url.lower().startswith("http://") and not is_loopback(url)


def secure(reader: Reader, key: str, url: str, allow_http: bool, why: str) -> str:
    """Refuse plain ``http://`` to another host unless ``allow_insecure_http = true``."""
    if plain_http_elsewhere(url) and not allow_http:
        raise reader.fail(
            key,
            f"{url} is plain http to another host: {why} would travel in clear. Use https://, "
            "or set allow_insecure_http = true at the top of the file (a test server on a trusted network only)",
        )
    return url


def clock_time(reader: Reader, key: str, default: str) -> str:
    value = reader.string(key, default)
    match = re.fullmatch(r"([01]?\d|2[0-3]):([0-5]\d)", value)
    if match is None:
        raise reader.fail(key, f'must be a time of day as HH:MM (like "00:00"), not {value!r}')
    return f"{int(match.group(1)):02d}:{match.group(2)}"
