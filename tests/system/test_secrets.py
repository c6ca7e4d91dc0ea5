"""The planted-key scan: a distinctive API key goes through a whole workflow (with Alma errors, an
unreachable Alma, dry runs, history, status, report) and must appear nowhere but the Authorization
header: not in any output, URL, log line, exception, traceback, or byte of the database."""

from __future__ import annotations

import logging
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from orchestrator.alma import caller as alma_module
from orchestrator.alma.client import AlmaClient
from orchestrator.cli import base as cli
from orchestrator.errors import AlmaError
from orchestrator.simulator import Scenario, SimServer, Simulator
from orchestrator.simulator.scenario import ApiKey

PLANTED = "l7xx-PLANTED-SECRET-4b1d"
SECRET = PLANTED.encode()


class RecordingSimulator(Simulator):
    """A simulator that keeps every request it was sent (URL, headers, body)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seen: list[tuple[str, list[tuple[str, str]], bytes]] = []

    def respond(self, request: httpx.Request, *, over_http: bool) -> httpx.Response:
        request.read()
        self.seen.append((str(request.url), list(request.headers.multi_items()), request.content))
        return super().respond(request, over_http=over_http)


def serve(stack: list[SimServer], **scenario: Any) -> tuple[RecordingSimulator, str]:
    sim = RecordingSimulator(Scenario(per_second_limit=0, **scenario))
    server = SimServer(sim, host="127.0.0.1", port=0)
    server.start()
    stack.append(server)
    return sim, server.url


@pytest.fixture
def servers() -> Iterator[list[SimServer]]:
    stack: list[SimServer] = []
    yield stack
    for server in stack:
        server.stop()


def assert_only_in_authorization(sim: RecordingSimulator) -> None:
    assert sim.seen, "the simulator saw no request"
    alma_requests = 0
    for url, headers, body in sim.seen:
        assert PLANTED not in url, url
        assert SECRET not in body
        is_alma = httpx.URL(url).path.startswith("/almaws/")
        for name, value in headers:
            if is_alma and name.lower() == "authorization":
                assert value == f"apikey {PLANTED}"
                alma_requests += 1
            else:
                assert PLANTED not in value, (name, url)
        if not is_alma:
            assert all(name.lower() != "authorization" for name, _ in headers), url
    assert alma_requests > 0


def test_planted_key_leaks_nowhere(
    tmp_path: Path,
    servers: list[SimServer],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setattr(alma_module, "backoff_delay", lambda attempt, jitter: 0.0)
    seconds = {"copy": 0.2, "migration": 0.2, "integration": 0.2, "other": 0.2}
    sim, url = serve(servers, api_keys=(ApiKey(key=PLANTED, name="planted"),), job_seconds=seconds)
    env = {"HWF_ALMA_API_KEY": PLANTED}
    runner = CliRunner()
    outputs: list[str] = []

    def hwf(*args: str, code: int | None = 0, extra_env: dict[str, str] | None = None) -> Any:
        result = runner.invoke(cli.app, list(args), env={**env, **(extra_env or {})}, catch_exceptions=False)
        outputs.append(result.stdout + result.stderr)
        if code is not None:
            assert result.exit_code == code, (args, result.stdout, result.stderr)
        return result

    hwf(
        "init",
        "--institution",
        "01GCL_INST",
        "--prefix",
        "11084",
        "--primo-domain",
        "grinnell.primo.exlibrisgroup.com",
        "--primo-view",
        "01GCL_INST:GCL",
        extra_env={"HWF_ALMA_BASE_URL": url},
    )
    config = tmp_path / "hwf.toml"
    text = config.read_text()
    for old, new in [
        ('"https://api-na.hosted.exlibrisgroup.com"', f'"{url}"'),
        ('"https://hdl.handle.net"', f'"{url}"'),
        ("settle_minutes = 15", "settle_minutes = 0"),
        ("poll_interval_seconds = 15", "poll_interval_seconds = 0.05"),
        ("poll_max_interval_seconds = 300", "poll_max_interval_seconds = 0.2"),
        ("max_retries = 6", "max_retries = 1"),
        ("requests_per_second = 10\n", "requests_per_second = 1000\n"),
        ("timeout_seconds = 60", "timeout_seconds = 5"),
        ('handle_integration_mode = "manual"', 'handle_integration_mode = "api"'),
    ]:
        assert old in text
        text = text.replace(old, new)
    config.write_text(text)

    set_id = sim.create_set("Planted titles", sim.generate_records(10, profile="demo", seed=5))
    hwf("ping")
    hwf("ping", "--json")
    hwf("jobs", "--json")
    hwf("add", set_id)
    hwf("check", set_id)
    hwf("advance", set_id, "--dry-run")
    hwf("resume", "--all", "--dry-run")
    for _ in range(3):
        if hwf("advance", set_id, code=None).exit_code == 0:
            break
        hwf("fix", set_id)
        hwf("fix", set_id, "--apply")
    hwf("advance", set_id, "--dry-run")
    hwf("status", "--json")
    hwf("status")
    assert '"state": "verified"' in hwf("status", set_id, "--json").stdout
    hwf("history", set_id, "--json")
    hwf("history", set_id)
    hwf("report", set_id)
    hwf("report", set_id, "--format", "json")

    # error paths: Alma's 400 for an unknown set, a key without the Configuration area, no Alma at all
    unknown = hwf("add", "99999999", code=None)
    assert unknown.exit_code in (1, 2) and "99999999" in unknown.stderr
    _, bibs_only = serve(servers, api_keys=(ApiKey(key=PLANTED, areas=("bibs",)),))
    assert "UNAUTHORIZED" in hwf("jobs", code=1, extra_env={"HWF_ALMA_BASE_URL": bibs_only}).stderr
    hwf("ping", code=1, extra_env={"HWF_ALMA_BASE_URL": bibs_only})
    dead = {"HWF_ALMA_BASE_URL": "http://127.0.0.1:9"}
    assert "could not" in hwf("add", "12345", code=1, extra_env=dead).stderr
    hwf("ping", "--json", code=1, extra_env=dead)

    joined = "\n".join(outputs)
    assert "Set " in joined and "apikey ***" in joined  # the scan looked at real output
    assert PLANTED not in joined
    assert PLANTED not in caplog.text
    assert "HTTP Request" in caplog.text  # httpx did log each request, without the key
    for path in tmp_path.glob("hwf.db*"):
        assert SECRET not in path.read_bytes(), path.name
    assert (tmp_path / "hwf.db").stat().st_size > 0
    assert SECRET not in config.read_bytes()
    assert_only_in_authorization(sim)


def test_exceptions_and_tracebacks_never_carry_the_key() -> None:
    echoing = (
        '{"errorsExist":true,"errorList":{"error":[{"errorCode":"UNAUTHORIZED","errorMessage":'
        f'"API-key {PLANTED} not defined or not configured to allow this API.","trackingId":"E01"}}]}}}}'
    )

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/unreachable"):
            raise httpx.ConnectError(f"cannot connect ({request.headers['authorization']})", request=request)
        return httpx.Response(400, text=echoing, headers={"Content-Type": "application/json"})

    client = AlmaClient(
        "http://alma.test", PLANTED, transport=httpx.MockTransport(handler), max_retries=0, sleep=lambda s: None
    )
    assert PLANTED not in repr(client)
    caught: list[AlmaError] = []
    for call in (lambda: client.get_set("1"), lambda: client.get_job("unreachable")):
        with pytest.raises(AlmaError) as info:
            call()
        caught.append(info.value)
    for exc in caught:
        assert PLANTED not in str(exc) and PLANTED not in repr(exc.args)
        assert PLANTED not in (exc.alma_message or "")
        assert PLANTED not in "".join(traceback.format_exception_only(type(exc), exc))
    assert "UNAUTHORIZED" in str(caught[0])


def test_typer_never_shows_locals() -> None:
    for typer_app in (cli.app, cli.sim_app, cli.db_app):
        assert typer_app.pretty_exceptions_show_locals is False
