from __future__ import annotations

import os
from pathlib import Path

import pytest

from orchestrator.config import find_config_path, load_config, parse_config
from orchestrator.errors import ConfigError
from tests.support import config_dict

KEY = "l7xx-config-secret"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "hwf.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_example_config_loads(tmp_path: Path) -> None:
    example = Path(__file__).parent.parent / "config.example.toml"
    config = load_config(example, environ={"HWF_ALMA_API_KEY": KEY})
    assert config.alma.api_url == "https://api-na.hosted.exlibrisgroup.com/almaws/v1"
    assert config.alma.jobs["handle_integration"].id == "M50700"
    assert config.alma.api_key == KEY
    assert KEY not in repr(config)


def test_precedence_flag_env_default(tmp_path: Path) -> None:
    assert find_config_path(Path("x.toml"), {"HWF_CONFIG": "y.toml"}) == Path("x.toml")
    assert find_config_path(None, {"HWF_CONFIG": "y.toml"}) == Path("y.toml")
    assert find_config_path(None, {}) == Path("hwf.toml")


def test_env_overrides_database_and_base_url(tmp_path: Path) -> None:
    env = {"HWF_DATABASE_URL": "sqlite:///other.db", "HWF_ALMA_BASE_URL": "http://127.0.0.1:9"}
    config = parse_config(config_dict(), tmp_path / "hwf.toml", environ=env)
    assert config.database_url == "sqlite:///other.db"
    assert config.alma.base_url == "http://127.0.0.1:9"


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no configuration file .*nope.toml"):
        load_config(tmp_path / "nope.toml")


def test_malformed_toml_names_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[alma\nbase_url=")
    with pytest.raises(ConfigError, match=r"hwf.toml: not valid TOML"):
        load_config(path)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["alma"].pop("base_url"), "key alma.base_url: is missing"),
        (lambda d: d["alma"].update(base_url="ftp://x"), "key alma.base_url: must be an http"),
        (lambda d: d["alma"].update(institution_code="01 GCL"), "key alma.institution_code"),
        (lambda d: d["alma"]["jobs"].update(handle_migration="12345"), "key alma.jobs.handle_migration"),
        (lambda d: d["alma"]["jobs"].pop("copy_identifiers"), "key alma.jobs.copy_identifiers: is missing"),
        (
            lambda d: d["alma"].update(poll_interval_seconds="soon"),
            "key alma.poll_interval_seconds: must be a number",
        ),
        (lambda d: d["alma"].update(api_key="l7xx"), "key alma.api_key: the key must not be written"),
        (lambda d: d["handles"].update(prefix="hdl"), "key handles.prefix"),
        (lambda d: d["handles"].update(concurrency=0), "key handles.concurrency: must be between 1 and 256"),
        (lambda d: d.pop("primo"), r"missing table \[primo\]"),
        (lambda d: d["alma"].update(format="yaml"), "key alma.format: must be one of json, xml"),
        (lambda d: d["alma"]["jobs"].update(handle_integration_mode="auto"), "handle_integration_mode"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    data = config_dict()
    mutate(data)
    with pytest.raises(ConfigError, match=message) as info:
        parse_config(data, tmp_path / "hwf.toml", environ={})
    assert "hwf.toml" in str(info.value) or "[primo]" in str(info.value)


def test_missing_api_key_says_where_it_looked(tmp_path: Path) -> None:
    config = parse_config(config_dict(), tmp_path / "hwf.toml", environ={})
    with pytest.raises(ConfigError, match="environment variable HWF_ALMA_API_KEY"):
        config.require_api_key()


def test_key_env_name_is_configurable(tmp_path: Path) -> None:
    config = parse_config(config_dict(api_key_env="MY_KEY"), tmp_path / "hwf.toml", environ={"MY_KEY": KEY})
    assert config.require_api_key() == KEY


def test_key_file_must_be_private(tmp_path: Path) -> None:
    key_file = tmp_path / "alma.key"
    key_file.write_text(KEY + "\n")
    os.chmod(key_file, 0o644)
    with pytest.raises(ConfigError, match="readable by others .*chmod 600"):
        parse_config(config_dict(api_key_file="alma.key"), tmp_path / "hwf.toml", environ={})
    os.chmod(key_file, 0o600)
    config = parse_config(config_dict(api_key_file="alma.key"), tmp_path / "hwf.toml", environ={})
    assert config.require_api_key() == KEY


def test_job_as_table_with_parameters_and_payload(tmp_path: Path) -> None:
    (tmp_path / "migration-job.xml").write_text("<job/>")
    data = config_dict()
    data["alma"]["jobs"]["handle_migration"] = {
        "id": "M2234567890000561",
        "parameters": {"task_HandleMigration_controlNumber": "Digital.Grinnell Handles"},
        "payload_file": "migration-job.xml",
    }
    job = parse_config(data, tmp_path / "hwf.toml", environ={}).alma.jobs["handle_migration"]
    assert job.parameters == (("task_HandleMigration_controlNumber", "Digital.Grinnell Handles"),)
    assert job.payload_file == (tmp_path / "migration-job.xml").resolve()
    data["alma"]["jobs"]["handle_migration"]["payload_file"] = "missing.xml"
    with pytest.raises(ConfigError, match="payload_file: file .*missing.xml does not exist"):
        parse_config(data, tmp_path / "hwf.toml", environ={})


def test_primo_record_url(tmp_path: Path) -> None:
    config = parse_config(config_dict(), tmp_path / "hwf.toml", environ={})
    assert (
        config.primo.record_url("991011546573204641")
        == "https://grinnell.primo.exlibrisgroup.com/discovery/fulldisplay/alma991011546573204641/01GCL_INST:GCL"
    )
