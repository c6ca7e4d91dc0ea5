"""First run against a real Alma: regions, `hwf init`, job discovery, `hwf jobs`, `hwf ping`, and the bad
input a first-time user brings (unknown region, institution with spaces, wrong job id, sandbox key,
world-readable key file)."""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from orchestrator.alma.types import JobInfo
from orchestrator.cli import base as cli
from orchestrator.cli import setup as cli_setup
from orchestrator.config import load_config, parse_config
from orchestrator.errors import BadInputError
from orchestrator.service import onboarding
from orchestrator.service.ping import Check, PingReport, ping
from orchestrator.simulator import Scenario, SimServer, Simulator
from orchestrator.simulator.scenario import DEFAULT_JOBS, ApiKey, JobDef
from orchestrator.wiring import Wiring, build_resolver_http, build_setup_alma, build_setup_alma_for
from tests.support import API_KEY, FakeClock, config_dict

runner = CliRunner()
EXAMPLE = Path(__file__).parents[2] / "config.example.toml"


def run(*args: str, env: dict[str, str] | None = None, input: str | None = None) -> Any:
    return runner.invoke(cli.app, list(args), env=env, input=input)


def keys_of(table: dict[str, Any], prefix: str = "") -> set[str]:
    out = set()
    for key, value in table.items():
        name = f"{prefix}{key}"
        out.add(name)
        if isinstance(value, dict):
            out |= keys_of(value, name + ".")
    return out


# ---------------------------------------------------------------------------------------------
# regions, institution codes, job roles


@pytest.mark.parametrize("region", ["na", "eu", "ap", "aps", "ca"])
def test_regional_gateways(region: str) -> None:
    assert onboarding.region_base_url(region) == f"https://api-{region}.hosted.exlibrisgroup.com"
    assert onboarding.region_base_url(region.upper()) == f"https://api-{region}.hosted.exlibrisgroup.com"


def test_china_uses_the_com_cn_gateway() -> None:
    assert onboarding.region_base_url("cn") == "https://api-cn.hosted.exlibrisgroup.com.cn"


def test_unknown_region_lists_the_regions() -> None:
    with pytest.raises(BadInputError) as info:
        onboarding.region_base_url("xx")
    assert str(info.value) == "unknown region 'xx': one of na, eu, ap, aps, ca, cn"


@pytest.mark.parametrize("code", ["01GCL INST", " ", "01GCL-INST", "01GCL_INST;rm"])
def test_bad_institution_codes(code: str) -> None:
    with pytest.raises(BadInputError, match="institution code"):
        onboarding.check_institution(code)


def test_good_institution_code_is_stripped() -> None:
    assert onboarding.check_institution(" 01GCL_INST ") == "01GCL_INST"


@pytest.mark.parametrize(
    ("name", "category", "roles"),
    [
        ("Copy dcterms to dc:identifier", "DCAP01_NORMALIZATION", ("copy_identifiers",)),
        ("copy DCTERM to dc:identifier", "QUALIFIED_DC_NORMALIZATION", ("copy_identifiers",)),
        ("Copy dcterm to dcidentifier", None, ("copy_identifiers",)),
        ("Copy dcterms to dc:identifier (old)", None, ()),
        ("DG Handle Migration", "REPOSITORY", ("handle_migration",)),
        ("handle migration for theses", None, ("handle_migration",)),
        ("Handle Integration", "", ("handle_integration",)),
        ("Persistent handles", "HANDLE_INTEGRATION", ("handle_integration",)),
        ("Export Bibliographic Records", "EXPORT", ()),
    ],
)
def test_roles_by_name_and_category(name: str, category: str | None, roles: tuple[str, ...]) -> None:
    assert onboarding.roles_of(JobInfo(id="M1", name=name, category=category)) == roles


def test_job_id_option_is_checked() -> None:
    assert onboarding.check_job_id(" M50700 ", "--integration-job") == "M50700"
    with pytest.raises(BadInputError, match="--copy-job 'copy' is not an Alma job id"):
        onboarding.check_job_id("copy", "--copy-job")


# ---------------------------------------------------------------------------------------------
# discovery over Alma's paged job list


def many_jobs() -> tuple[JobDef, ...]:
    filler = tuple(JobDef(f"M9{i:04d}", f"Other job {i}", "other", "EXPORT") for i in range(230))
    return filler + DEFAULT_JOBS


def test_discovery_pages_through_every_manual_job(clock: FakeClock) -> None:
    sim = Simulator(Scenario(jobs=many_jobs(), per_second_limit=0), clock=clock)
    seen: list[httpx.URL] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url)
        return sim.handle(request)

    with build_setup_alma("http://alma.test", API_KEY, Wiring(alma_transport=httpx.MockTransport(handler))) as alma:
        found = onboarding.discover_jobs(alma)
    assert len(found.jobs) == 230 + len(DEFAULT_JOBS)
    assert [j.id for j in found.candidates["copy_identifiers"]] == ["M1234567890000561"]
    assert [j.id for j in found.candidates["handle_migration"]] == ["M2234567890000561"]
    assert [j.id for j in found.candidates["handle_integration"]] == ["M50700"]
    assert [u.params["type"] for u in seen] == ["MANUAL"] * 3
    assert [(u.params["limit"], u.params["offset"]) for u in seen] == [("100", "0"), ("100", "100"), ("100", "200")]


# ---------------------------------------------------------------------------------------------
# the file `hwf init` writes


def test_written_file_is_the_example_with_the_values_filled_in(tmp_path: Path) -> None:
    settings = onboarding.InitSettings(
        region="eu",
        institution="44TEST_INST",
        jobs={"copy_identifiers": "M1", "handle_migration": "M2", "handle_integration": "M50700"},
        job_names={"copy_identifiers": 'Copy "dcterms"'},
        key_env="HWF_EU_KEY",
        prefix="20.500.12345",
        primo_domain="test.primo.exlibrisgroup.com",
        primo_view="44TEST_INST:MAIN",
    )
    result = onboarding.write_init_config(tmp_path / "hwf.toml", settings)
    text = result.path.read_text()
    example = EXAMPLE.read_text().splitlines()
    written = text.splitlines()
    assert "\n".join(written[:2]) + "\n" == onboarding.INIT_HEADER  # in place of the example's first line
    assert len(written) == len(example) + 1
    changed = {old: new for old, new in zip(example[1:], written[2:], strict=True) if old != new}
    assert sorted(new for new in changed.values()) == sorted(
        [
            'base_url = "https://api-eu.hosted.exlibrisgroup.com"',
            'api_key_env = "HWF_EU_KEY"',
            'institution_code = "44TEST_INST"',
            'copy_identifiers = "M1"  # "Copy \\"dcterms\\""',  # a job name with quotes stays a comment
            'handle_migration = "M2"',
            'handle_integration = "M50700"',
            'prefix = "20.500.12345"',
            'domain = "test.primo.exlibrisgroup.com"',
            'view = "44TEST_INST:MAIN"',
        ]
    )
    assert all(old.split(" = ")[0] == new.split(" = ")[0] for old, new in changed.items())
    assert keys_of(tomllib.loads(text)) == keys_of(tomllib.loads(EXAMPLE.read_text()))
    config = load_config(result.path, environ={})
    assert config.alma.base_url == "https://api-eu.hosted.exlibrisgroup.com"
    assert config.alma.institution_code == "44TEST_INST"
    assert config.alma.jobs["handle_migration"].id == "M2"
    assert config.handles.prefix == "20.500.12345"
    assert result.placeholders == () and onboarding.placeholders_in(config) == []
    assert "api_key" not in tomllib.loads(text)["alma"]


def test_the_example_at_the_root_is_the_one_hwf_init_fills_in() -> None:
    assert EXAMPLE.is_symlink() and EXAMPLE.resolve() == Path(onboarding.__file__).parent.parent / EXAMPLE.name
    assert onboarding.example_config() == EXAMPLE.read_text()


def test_placeholders_load_and_are_flagged(tmp_path: Path) -> None:
    result = onboarding.write_init_config(tmp_path / "hwf.toml", onboarding.InitSettings())
    config = load_config(result.path, environ={})
    expected = [
        "alma.institution_code",
        "alma.jobs.copy_identifiers",
        "alma.jobs.handle_migration",
        "alma.jobs.handle_integration",
        "handles.prefix",
        "primo.domain",
        "primo.view",
    ]
    assert list(result.placeholders) == expected
    assert onboarding.placeholders_in(config) == expected
    assert result.path.read_text().count("# TODO") == len(expected)


def test_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    path = tmp_path / "hwf.toml"
    path.write_text("# mine\n")
    with pytest.raises(BadInputError, match=f"{path} already exists.*--force"):
        onboarding.write_init_config(path, onboarding.InitSettings())
    assert path.read_text() == "# mine\n"
    onboarding.write_init_config(path, onboarding.InitSettings(), force=True)
    assert "[alma.jobs]" in path.read_text()


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [
        ("prefix", "11084/", "not a handle prefix"),
        ("primo_view", 'GCL"; x = "1', "without quotes"),
        ("key_env", "MY KEY", "not an environment variable name"),
    ],
)
def test_bad_settings_are_refused(tmp_path: Path, field: str, value: str, needle: str) -> None:
    with pytest.raises(BadInputError, match=needle):
        onboarding.write_init_config(tmp_path / "hwf.toml", onboarding.InitSettings(**{field: value}))
    assert not (tmp_path / "hwf.toml").exists()


# ---------------------------------------------------------------------------------------------
# `hwf init` through the CLI


@pytest.fixture
def served() -> Iterator[Callable[..., tuple[Simulator, str]]]:
    """Start simulators on 127.0.0.1 (real HTTP, real clock) on demand."""
    servers: list[SimServer] = []

    def start(**scenario: Any) -> tuple[Simulator, str]:
        sim = Simulator(Scenario(per_second_limit=0, **scenario))
        server = SimServer(sim, host="127.0.0.1", port=0)
        server.start()
        servers.append(server)
        return sim, server.url

    yield start
    for server in servers:
        server.stop()


def test_init_without_key_writes_placeholders(tmp_path: Path) -> None:
    result = run("init", "--institution", "01GCL_INST")
    assert result.exit_code == 0, result.output
    assert "No API key in $HWF_ALMA_API_KEY" in result.stdout and "hwf jobs" in result.stdout
    config = load_config(tmp_path / "hwf.toml", environ={})
    assert config.alma.institution_code == "01GCL_INST"
    assert {spec.id for spec in config.alma.jobs.values()} == {onboarding.PLACEHOLDER_JOB_ID}
    assert config.alma.base_url == "https://api-na.hosted.exlibrisgroup.com"


def test_init_unknown_region_is_bad_input(tmp_path: Path) -> None:
    result = run("init", "--region", "xx")
    assert result.exit_code == 2
    assert "unknown region 'xx': one of na, eu, ap, aps, ca, cn" in result.stderr
    assert not (tmp_path / "hwf.toml").exists()


def test_init_institution_with_spaces_is_bad_input(tmp_path: Path) -> None:
    result = run("init", "--institution", "01GCL INST")
    assert result.exit_code == 2
    assert "no spaces" in result.stderr
    assert not (tmp_path / "hwf.toml").exists()


def test_init_refuses_to_overwrite_and_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "hwf.toml").write_text("# keep me\n")
    result = run("init")
    assert result.exit_code == 2
    assert "hwf.toml already exists" in result.stderr and "--force" in result.stderr
    assert (tmp_path / "hwf.toml").read_text() == "# keep me\n"
    assert run("init", "--force").exit_code == 0
    assert "[alma.jobs]" in (tmp_path / "hwf.toml").read_text()


def test_init_writes_where_config_points(tmp_path: Path) -> None:
    assert run("--config", str(tmp_path / "site.toml"), "init", "--region", "cn").exit_code == 0
    config = load_config(tmp_path / "site.toml", environ={})
    assert config.alma.base_url == "https://api-cn.hosted.exlibrisgroup.com.cn"
    assert not (tmp_path / "hwf.toml").exists()
    assert run("init", "--output", str(tmp_path / "other.toml")).exit_code == 0
    assert (tmp_path / "other.toml").exists()


def test_init_looks_the_jobs_up_with_a_key(tmp_path: Path, served: Callable[..., tuple[Simulator, str]]) -> None:
    _sim, url = served()
    env = {"HWF_ALMA_API_KEY": API_KEY, "HWF_ALMA_BASE_URL": url}
    result = run("init", "--institution", "01GCL_INST", "--prefix", "11084", env=env)
    assert result.exit_code == 0, result.output
    config = load_config(tmp_path / "hwf.toml", environ={})
    assert {role: spec.id for role, spec in config.alma.jobs.items()} == {
        "copy_identifiers": "M1234567890000561",
        "handle_migration": "M2234567890000561",
        "handle_integration": "M50700",
    }
    assert "DG Handle Migration" in result.stdout
    assert '# "DG Handle Migration"' in (tmp_path / "hwf.toml").read_text()
    assert API_KEY not in result.stdout + result.stderr + (tmp_path / "hwf.toml").read_text()


def test_init_with_a_key_named_by_key_env(tmp_path: Path, served: Callable[..., tuple[Simulator, str]]) -> None:
    _sim, url = served()
    env = {"MY_ALMA_KEY": API_KEY, "HWF_ALMA_BASE_URL": url}
    assert run("init", "--key-env", "MY_ALMA_KEY", env=env).exit_code == 0
    config = load_config(tmp_path / "hwf.toml", environ={"MY_ALMA_KEY": API_KEY})
    assert config.alma.api_key_env == "MY_ALMA_KEY" and config.alma.api_key == API_KEY
    assert config.alma.jobs["copy_identifiers"].id == "M1234567890000561"


def two_migrations() -> tuple[JobDef, ...]:
    return (*DEFAULT_JOBS, JobDef("M3334567890000561", "Theses Handle Migration", "migration", "REPOSITORY"))


def test_init_with_several_matches_and_no_terminal_says_which_option(
    tmp_path: Path, served: Callable[..., tuple[Simulator, str]]
) -> None:
    _sim, url = served(jobs=two_migrations())
    env = {"HWF_ALMA_API_KEY": API_KEY, "HWF_ALMA_BASE_URL": url}
    result = run("init", env=env)
    assert result.exit_code == 2
    assert "several jobs could be handle_migration" in result.stderr
    assert "M2234567890000561" in result.stderr and "M3334567890000561" in result.stderr
    assert "--migration-job" in result.stderr
    assert not (tmp_path / "hwf.toml").exists()
    chosen = run("init", "--migration-job", "M3334567890000561", env=env)
    assert chosen.exit_code == 0, chosen.output
    assert load_config(tmp_path / "hwf.toml", environ={}).alma.jobs["handle_migration"].id == "M3334567890000561"


def test_init_asks_when_someone_is_at_the_terminal(
    tmp_path: Path, served: Callable[..., tuple[Simulator, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    _sim, url = served(jobs=two_migrations())
    monkeypatch.setattr(cli_setup, "_interactive", lambda: True)
    env = {"HWF_ALMA_API_KEY": API_KEY, "HWF_ALMA_BASE_URL": url}
    result = run("init", env=env, input="7\n2\n")
    assert result.exit_code == 0, result.output
    assert "Theses Handle Migration" in result.stderr and "Not one of 1-2" in result.stderr
    assert load_config(tmp_path / "hwf.toml", environ={}).alma.jobs["handle_migration"].id == "M3334567890000561"


def test_init_with_a_key_alma_refuses_writes_nothing(
    tmp_path: Path, served: Callable[..., tuple[Simulator, str]]
) -> None:
    _sim, url = served(api_keys=(ApiKey(key=API_KEY, areas=("bibs",)),))
    result = run("init", env={"HWF_ALMA_API_KEY": API_KEY, "HWF_ALMA_BASE_URL": url})
    assert result.exit_code == 1
    assert "UNAUTHORIZED" in result.stderr and "sandbox" in result.stderr and "Configuration" in result.stderr
    assert not (tmp_path / "hwf.toml").exists()


@pytest.mark.parametrize(
    ("url", "problem"),
    [("http://alma.example.org", "is plain http to another host"), ("ftp://alma.example.org", "is not an http(s) URL")],
)
def test_init_never_sends_the_key_to_a_plain_http_base_url(tmp_path: Path, url: str, problem: str) -> None:
    result = run("init", env={"HWF_ALMA_API_KEY": API_KEY, "HWF_ALMA_BASE_URL": url})
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and problem in result.stderr and "nothing was written" in result.stderr
    assert API_KEY not in result.output
    assert not (tmp_path / "hwf.toml").exists()


# ---------------------------------------------------------------------------------------------
# hwf ping, as a service


def ping_with(
    tmp_path: Path,
    sim: Simulator,
    clock: FakeClock,
    *,
    data: dict[str, Any] | None = None,
    environ: dict[str, str] | None = None,
    handler: Callable[[httpx.Request], httpx.Response] | None = None,
) -> PingReport:
    data = data or config_dict(db=f"sqlite:///{tmp_path / 'hwf.db'}")
    env = {"HWF_ALMA_API_KEY": API_KEY} if environ is None else environ
    config = parse_config(data, tmp_path / "hwf.toml", environ=env)
    transport = httpx.MockTransport(handler or sim.handle)
    wired = Wiring(alma_transport=transport, resolver_transport=transport, sleep=clock.sleep)
    return ping(
        config, alma=lambda: build_setup_alma_for(config, wired), http=lambda: build_resolver_http(config, wired)
    )


def by_name(report: PingReport) -> dict[str, Check]:
    return {c.name: c for c in report.checks}


def test_ping_all_in_place(tmp_path: Path, sim: Simulator, clock: FakeClock) -> None:
    report = ping_with(tmp_path, sim, clock)
    checks = by_name(report)
    assert report.ok, report.as_json()
    assert {checks[n].status for n in ("gateway", "key: Bibs area", "key: Configuration area")} == {"ok"}
    assert (
        checks["job handle_migration"].status == "ok" and "DG Handle Migration" in checks["job handle_migration"].detail
    )
    assert checks["handle resolver"].status == "ok" and "responseCode 100" in checks["handle resolver"].detail
    assert report.remaining is not None and report.remaining > 0
    assert f"X-Exl-Api-Remaining: {report.remaining:,}" in checks["API quota"].detail
    assert checks["key: read/write"].status == "warn"
    assert report.as_json()["ok"] is True


def test_ping_only_reads(tmp_path: Path, sim: Simulator, clock: FakeClock) -> None:
    methods: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        methods.append(request.method)
        return sim.handle(request)

    assert ping_with(tmp_path, sim, clock, handler=handler).ok
    assert methods and set(methods) == {"GET"}
    assert sim.job_runs == []


def test_ping_names_a_wrong_job_id(tmp_path: Path, sim: Simulator, clock: FakeClock) -> None:
    data = config_dict(db=f"sqlite:///{tmp_path / 'hwf.db'}")
    data["alma"]["jobs"]["handle_migration"] = "M2234567890000999"
    report = ping_with(tmp_path, sim, clock, data=data)
    assert not report.ok
    check = by_name(report)["job handle_migration"]
    assert check.status == "fail"
    assert "M2234567890000999" in check.detail and "alma.jobs.handle_migration" in check.detail
    assert "hwf jobs" in check.detail
    assert by_name(report)["job copy_identifiers"].status == "ok"


def test_ping_explains_a_sandbox_key_against_production(tmp_path: Path, clock: FakeClock) -> None:
    sandbox_key = ApiKey(key=API_KEY, name="sandbox", environment="sandbox")
    sim = Simulator(Scenario(api_keys=(sandbox_key,), environment="production", per_second_limit=0), clock=clock)
    report = ping_with(tmp_path, sim, clock)
    assert not report.ok
    check = by_name(report)["key areas"]
    assert check.status == "fail"
    assert "sandbox used against production" in check.detail and "Bibs and Configuration" in check.detail
    assert by_name(report)["gateway"].status == "ok"
    assert {by_name(report)[f"job {r}"].status for r in ("copy_identifiers", "handle_migration")} == {"skip"}


@pytest.mark.parametrize(
    ("areas", "missing", "probe"),
    [(("conf",), "Bibs", "GET /almaws/v1/bibs?mms_id="), (("bibs",), "Configuration", "GET /almaws/v1/conf/jobs")],
)
def test_ping_says_which_area_is_missing(
    tmp_path: Path, clock: FakeClock, areas: tuple[str, ...], missing: str, probe: str
) -> None:
    sim = Simulator(Scenario(api_keys=(ApiKey(key=API_KEY, areas=areas),), per_second_limit=0), clock=clock)
    report = ping_with(tmp_path, sim, clock)
    assert not report.ok
    check = by_name(report)[f"key: {missing} area"]
    assert check.status == "fail"
    assert f"lacks the {missing} area" in check.detail and probe in check.detail
    assert "sandbox" in check.detail  # the same error for the other environment
    present = "Configuration" if missing == "Bibs" else "Bibs"
    assert by_name(report)[f"key: {present} area"].status == "ok"


def test_ping_with_an_unknown_key(tmp_path: Path, clock: FakeClock) -> None:
    sim = Simulator(Scenario(api_keys=(ApiKey(key="l7xx-someone-else"),), per_second_limit=0), clock=clock)
    report = ping_with(tmp_path, sim, clock)
    assert not report.ok
    assert by_name(report)["gateway"].status == "fail"
    assert "403" in by_name(report)["gateway"].detail and "unknown to Alma" in by_name(report)["gateway"].detail


def test_ping_reports_parameters_the_config_does_not_supply(tmp_path: Path, clock: FakeClock) -> None:
    sim = Simulator(Scenario(migration_requires_control_number=True, per_second_limit=0), clock=clock)
    report = ping_with(tmp_path, sim, clock)
    check = by_name(report)["job handle_migration"]
    assert not report.ok and check.status == "fail"
    assert "task_HandleMigration_controlNumber" in check.detail and "402228" in check.detail
    assert "set_id" not in check.detail.split("supply:")[1].split(".")[0]

    data = config_dict(db=f"sqlite:///{tmp_path / 'hwf.db'}")
    data["alma"]["jobs"]["handle_migration"] = {
        "id": "M2234567890000561",
        "parameters": {"task_HandleMigration_controlNumber": "Digital.Grinnell Handles"},
    }
    assert ping_with(tmp_path, sim, clock, data=data).ok

    (tmp_path / "migration-job.xml").write_text(
        "<job><parameters><parameter><name>task_HandleMigration_controlNumber</name>"
        "<value>Digital.Grinnell Handles</value></parameter></parameters></job>"
    )
    data["alma"]["jobs"]["handle_migration"] = {"id": "M2234567890000561", "payload_file": "migration-job.xml"}
    assert ping_with(tmp_path, sim, clock, data=data).ok


def test_ping_refuses_a_job_that_is_not_manual(tmp_path: Path, sim: Simulator, clock: FakeClock) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/conf/jobs/M50700"):
            body = {"id": "M50700", "name": "Handle Integration", "type": {"value": "SCHEDULED", "desc": "Scheduled"}}
            return httpx.Response(200, json=body, headers={"X-Exl-Api-Remaining": "123456"})
        return sim.handle(request)

    report = ping_with(tmp_path, sim, clock, handler=handler)
    check = by_name(report)["job handle_integration"]
    assert not report.ok and check.status == "fail" and "SCHEDULED" in check.detail


def test_ping_when_the_gateway_is_unreachable(tmp_path: Path, sim: Simulator, clock: FakeClock) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.startswith("/almaws"):
            raise httpx.ConnectError("connection refused", request=request)
        return sim.handle(request)

    report = ping_with(tmp_path, sim, clock, handler=handler)
    checks = by_name(report)
    assert not report.ok
    assert checks["gateway"].status == "fail" and "could not" in checks["gateway"].detail
    assert {checks[f"job {r}"].status for r in ("copy_identifiers", "handle_migration", "handle_integration")} == {
        "skip"
    }
    assert checks["handle resolver"].status == "ok"


@pytest.mark.parametrize(
    ("reply", "needle"),
    [
        (httpx.ConnectError("refused"), "could not reach it"),
        (httpx.Response(404, text="<html>Not Found</html>"), "without a handle JSON reply"),
    ],
)
def test_ping_when_the_resolver_does_not_answer(
    tmp_path: Path, sim: Simulator, clock: FakeClock, reply: Any, needle: str
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.startswith("/api/handles/"):
            if isinstance(reply, Exception):
                raise reply
            return reply
        return sim.handle(request)

    report = ping_with(tmp_path, sim, clock, handler=handler)
    assert not report.ok
    assert by_name(report)["handle resolver"].status == "fail" and needle in by_name(report)["handle resolver"].detail


def test_ping_without_a_key_still_checks_the_resolver(tmp_path: Path, sim: Simulator, clock: FakeClock) -> None:
    report = ping_with(tmp_path, sim, clock, environ={})
    checks = by_name(report)
    assert not report.ok
    assert checks["API key"].status == "fail" and "HWF_ALMA_API_KEY" in checks["API key"].detail
    assert "gateway" not in checks
    assert checks["handle resolver"].status == "ok"


def test_ping_flags_placeholders(tmp_path: Path, sim: Simulator, clock: FakeClock) -> None:
    data = config_dict(db=f"sqlite:///{tmp_path / 'hwf.db'}")
    data["alma"]["jobs"]["copy_identifiers"] = onboarding.PLACEHOLDER_JOB_ID
    data["primo"]["view"] = "01GCL_INST:" + onboarding.PLACEHOLDER_VIEW
    report = ping_with(tmp_path, sim, clock, data=data)
    checks = by_name(report)
    assert not report.ok
    assert "alma.jobs.copy_identifiers, primo.view" in checks["configuration"].detail
    assert checks["job copy_identifiers"].status == "fail" and "placeholder" in checks["job copy_identifiers"].detail
    assert checks["job handle_migration"].status == "ok"


def test_ping_when_the_quota_is_under_the_floor(tmp_path: Path, sim: Simulator, clock: FakeClock) -> None:
    sim.faults.daily_remaining = 100
    data = config_dict(db=f"sqlite:///{tmp_path / 'hwf.db'}", daily_call_floor=5000)
    report = ping_with(tmp_path, sim, clock, data=data)
    check = by_name(report)["API quota"]
    assert not report.ok and check.status == "fail" and "daily_call_floor" in check.detail


# ---------------------------------------------------------------------------------------------
# hwf ping / hwf jobs through the CLI, over real HTTP on 127.0.0.1


def init_for(url: str, tmp_path: Path, *extra: str, lookup: bool = True) -> Path:
    env = {"HWF_ALMA_API_KEY": API_KEY, "HWF_ALMA_BASE_URL": url} if lookup else {}
    args = ["init", "--institution", "01GCL_INST", "--prefix", "11084", "--primo-domain", "g.primo.example"]
    result = run(*args, "--primo-view", "01GCL_INST:GCL", *extra, env=env)
    assert result.exit_code == 0, result.output
    path = tmp_path / "hwf.toml"
    text = path.read_text().replace('"https://hdl.handle.net"', json.dumps(url))
    text = text.replace('"https://api-na.hosted.exlibrisgroup.com"', json.dumps(url))
    path.write_text(text)
    return path


def test_cli_ping_after_init(tmp_path: Path, served: Callable[..., tuple[Simulator, str]]) -> None:
    _sim, url = served()
    init_for(url, tmp_path)
    env = {"HWF_ALMA_API_KEY": API_KEY}
    result = run("ping", env=env)
    assert result.exit_code == 0, result.output
    assert "Ready for a run." in result.stdout and "X-Exl-Api-Remaining:" in result.stdout
    data = json.loads(run("ping", "--json", env=env).stdout)
    assert data["ok"] is True and data["api_remaining"] > 0
    assert not (tmp_path / "hwf.db").exists()  # ping touches no database
    assert {"check", "status", "detail"} <= set(data["checks"][0])
    assert API_KEY not in result.stdout + result.stderr


def test_cli_ping_names_a_job_id_edited_wrong(tmp_path: Path, served: Callable[..., tuple[Simulator, str]]) -> None:
    _sim, url = served()
    path = init_for(url, tmp_path)
    path.write_text(path.read_text().replace('"M2234567890000561"', '"M2234567890000562"'))
    result = run("ping", env={"HWF_ALMA_API_KEY": API_KEY})
    assert result.exit_code == 1
    assert "M2234567890000562" in result.stdout and "alma.jobs.handle_migration" in result.stdout
    assert "Not ready" in result.stdout


def test_cli_ping_with_a_sandbox_key_against_production(
    tmp_path: Path, served: Callable[..., tuple[Simulator, str]]
) -> None:
    _sim, url = served(api_keys=(ApiKey(key=API_KEY, environment="sandbox"),), environment="production")
    init_for(url, tmp_path, "--copy-job", "M1", "--migration-job", "M2", "--integration-job", "M3", lookup=False)
    result = run("ping", "--json", env={"HWF_ALMA_API_KEY": API_KEY})
    assert result.exit_code == 1
    checks = {c["check"]: c for c in json.loads(result.stdout)["checks"]}
    assert (
        checks["key areas"]["status"] == "fail" and "sandbox used against production" in checks["key areas"]["detail"]
    )


def test_cli_jobs_lists_and_searches(tmp_path: Path, served: Callable[..., tuple[Simulator, str]]) -> None:
    _sim, url = served()
    init_for(url, tmp_path)
    env = {"HWF_ALMA_API_KEY": API_KEY}
    everything = json.loads(run("jobs", "--json", env=env).stdout)
    assert {j["id"] for j in everything} == {j.id for j in DEFAULT_JOBS}
    found = json.loads(run("jobs", "--search", "handle", "--json", env=env).stdout)
    assert [(j["id"], j["configured_as"]) for j in found] == [
        ("M2234567890000561", ["handle_migration"]),
        ("M50700", ["handle_integration"]),
    ]
    table = run("jobs", "--search", "EXPORT", env=env)
    assert table.exit_code == 0 and "M44" in table.stdout and "M50700" not in table.stdout


def test_key_file_readable_by_others_is_refused_with_chmod_advice(tmp_path: Path) -> None:
    assert run("init", "--institution", "01GCL_INST").exit_code == 0
    key_file = tmp_path / "alma.key"
    key_file.write_text("l7xx-from-a-file\n")
    os.chmod(key_file, 0o644)
    path = tmp_path / "hwf.toml"
    path.write_text(path.read_text().replace('# api_key_file = "~/.config/hwf/alma.key"', 'api_key_file = "alma.key"'))
    result = run("status")
    assert result.exit_code == 2
    assert "readable by others" in result.stderr and "chmod 600 alma.key" in result.stderr
    assert "l7xx-from-a-file" not in result.stdout + result.stderr
    os.chmod(key_file, 0o600)
    assert run("status").exit_code == 0
