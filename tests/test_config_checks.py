"""Configuration hardening (issue 13 items 5, 10, 11): plain http to another host refused, non-finite and
absurd numbers and unknown keys refused naming the key, and the key file checked before it is opened."""

from __future__ import annotations

import os
import pwd
from pathlib import Path
from typing import Any

import pytest

from orchestrator.config import parse_config
from orchestrator.errors import ConfigError
from tests.support import config_dict

KEY = "l7xx-config-secret"


def parse(tmp_path: Path, data: dict[str, Any], **env: str) -> Any:
    return parse_config(data, tmp_path / "hwf.toml", environ=env)


def secure_dict(**alma: Any) -> dict[str, Any]:
    return config_dict(url="https://api-na.hosted.exlibrisgroup.com", resolver="https://hdl.handle.net", **alma)


# -- item 5: plain http


@pytest.mark.parametrize(
    ("where", "url"),
    [("alma", "http://api-na.hosted.exlibrisgroup.com"), ("handles", "http://hdl.handle.net")],
)
def test_plain_http_to_another_host_is_refused(tmp_path: Path, where: str, url: str) -> None:
    data = secure_dict()
    data[where]["base_url" if where == "alma" else "resolver_url"] = url
    with pytest.raises(ConfigError, match=f"key {where}.* plain http to another host: .* in clear") as raised:
        parse(tmp_path, data)
    assert "allow_insecure_http = true" in str(raised.value) and "\n" not in str(raised.value)
    data["allow_insecure_http"] = True
    parse(tmp_path, data)


def test_env_base_url_gets_the_same_checks(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="key alma.base_url: http://alma.example.org is plain http"):
        parse(tmp_path, secure_dict(), HWF_ALMA_BASE_URL="http://alma.example.org")
    with pytest.raises(ConfigError, match="key alma.base_url: must be an http"):
        parse(tmp_path, secure_dict(), HWF_ALMA_BASE_URL="ftp://alma.example.org")
    with pytest.raises(ConfigError, match="no valid port"):
        parse(tmp_path, secure_dict(), HWF_ALMA_BASE_URL="https://alma.example.org:99999")


@pytest.mark.parametrize(
    ("where", "key", "url"),
    [
        ("alma", "base_url", "https://user:PW-secret@api-na.hosted.exlibrisgroup.com"),
        ("handles", "resolver_url", "https://user:PW-secret@hdl.handle.net"),
        ("handles", "resolver_url", "https://:PW-secret@hdl.handle.net"),
        ("alma", "base_url", "ftp://user:PW-secret@alma.example.org"),
    ],
)
def test_a_user_or_password_in_a_url_is_refused_in_one_line_without_echoing_it(
    tmp_path: Path, where: str, key: str, url: str
) -> None:
    data = secure_dict()
    data[where][key] = url
    with pytest.raises(ConfigError, match=f"key {where}.{key}: must not carry a user name or password") as raised:
        parse(tmp_path, data)
    assert "PW-secret" not in str(raised.value) and "\n" not in str(raised.value)
    with pytest.raises(ConfigError, match="key alma.base_url: must not carry a user name or password"):
        parse(tmp_path, secure_dict(), HWF_ALMA_BASE_URL="https://u:PW-secret@alma.example.org")


def test_without_userinfo_keeps_the_rest_of_the_url() -> None:
    from orchestrator.config import without_userinfo

    assert without_userinfo("https://u:p@w@host.example:8443/x?y=@z") == "https://host.example:8443/x?y=@z"
    assert without_userinfo("https://host.example/a@b") == "https://host.example/a@b"
    assert without_userinfo("not a url") == "not a url"


@pytest.mark.parametrize("url", ["http://127.0.0.1:8765", "http://localhost:8765", "http://[::1]:8765"])
def test_plain_http_to_this_machine_is_allowed(tmp_path: Path, url: str) -> None:
    assert parse(tmp_path, secure_dict(), HWF_ALMA_BASE_URL=url).alma.base_url == url


# -- item 10: numbers and keys


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf"), 1e300, -5.0])
def test_non_finite_and_absurd_numbers_are_refused(tmp_path: Path, value: float) -> None:
    with pytest.raises(ConfigError, match="key alma.timeout_seconds: must be"):
        parse(tmp_path, secure_dict(timeout_seconds=value))


@pytest.mark.parametrize(
    ("table", "key", "value"),
    [
        ("alma", "requests_per_second", 1e300),
        ("alma", "max_running_jobs", 10**9),
        ("alma", "daily_call_floor", -1),
        ("handles", "settle_minutes", float("nan")),
        ("handles", "concurrency", 100000),
        ("workflow", "lease_seconds", float("inf")),
    ],
)
def test_every_number_has_a_range(tmp_path: Path, table: str, key: str, value: float) -> None:
    data = secure_dict()
    data.setdefault(table, {})[key] = value
    with pytest.raises(ConfigError, match=f"key {table}.{key}: must be"):
        parse(tmp_path, data)


@pytest.mark.parametrize(
    ("path", "key", "expected"),
    [
        (("alma", "jobs"), "handle_integraton_mode", "did you mean alma.jobs.handle_integration_mode"),
        (("alma",), "poll_intervall_seconds", "did you mean alma.poll_interval_seconds"),
        (("handles",), "resolver", "did you mean handles.resolver_url"),
        ((), "allow_insecure_https", "did you mean allow_insecure_http"),
        (("workflow",), "zzz", "unknown key workflow.zzz in [workflow]"),
    ],
)
def test_unknown_keys_are_refused_with_the_closest_one(
    tmp_path: Path, path: tuple[str, ...], key: str, expected: str
) -> None:
    data = secure_dict()
    table = data
    for name in path:
        table = table.setdefault(name, {})
    table[key] = "manual"
    with pytest.raises(ConfigError, match="unknown key") as raised:
        parse(tmp_path, data)
    assert expected in str(raised.value)


def test_unknown_table_is_refused(tmp_path: Path) -> None:
    data = secure_dict()
    data["handle"] = {"prefix": "11084"}
    with pytest.raises(ConfigError, match=r"unknown key handle in the top level; did you mean handles\?"):
        parse(tmp_path, data)


# -- item 11: the key file


def key_config(tmp_path: Path, name: str = "alma.key") -> dict[str, Any]:
    return secure_dict(api_key_file=name)


def test_key_file_directory(tmp_path: Path) -> None:
    (tmp_path / "alma.key").mkdir(mode=0o700)
    with pytest.raises(ConfigError, match="alma.key is a directory"):
        parse(tmp_path, key_config(tmp_path))


def test_key_file_fifo_does_not_hang(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "alma.key", 0o600)
    with pytest.raises(ConfigError, match="is not a regular file"):
        parse(tmp_path, key_config(tmp_path))


def test_key_file_binary(tmp_path: Path) -> None:
    path = tmp_path / "alma.key"
    path.write_bytes(b"\xff\xfe\x00l7xx\x00")
    path.chmod(0o600)
    with pytest.raises(ConfigError, match="is not a text file"):
        parse(tmp_path, key_config(tmp_path))
    path.write_bytes(b"l7xx\x00\x01")
    with pytest.raises(ConfigError, match="one key on one line"):
        parse(tmp_path, key_config(tmp_path))
    path.write_bytes(b"x" * 100_000)
    with pytest.raises(ConfigError, match="not a key file"):
        parse(tmp_path, key_config(tmp_path))


def test_key_file_of_another_user_is_refused_even_as_root(tmp_path: Path) -> None:
    path = tmp_path / "alma.key"
    path.write_text(KEY + "\n")
    path.chmod(0o600)
    if os.geteuid() != 0:
        pytest.skip("only root can give a file to another user")
    other = pwd.getpwnam("nobody").pw_uid
    os.chown(path, other, -1)
    with pytest.raises(ConfigError, match=f"is owned by uid {other}, not by the user running hwf"):
        parse(tmp_path, key_config(tmp_path))


def test_key_file_unreadable(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads a mode-000 file")
    path = tmp_path / "alma.key"
    path.write_text(KEY)
    path.chmod(0o000)
    try:
        with pytest.raises(ConfigError, match="cannot be read: Permission denied"):
            parse(tmp_path, key_config(tmp_path))
    finally:
        path.chmod(0o600)


def test_key_file_good(tmp_path: Path) -> None:
    path = tmp_path / "alma.key"
    path.write_text(KEY + "\n")
    path.chmod(0o600)
    assert parse(tmp_path, key_config(tmp_path)).require_api_key() == KEY
