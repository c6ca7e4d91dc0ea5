"""`hwf ping` and a job for which Alma lists no parameters (issue 13, wire tolerance): not "ok" until a
payload file or parameters are configured, or the operator passes --accept-unknown."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from orchestrator.service.ping import ping
from orchestrator.simulator import Simulator
from orchestrator.wiring import Wiring, build_resolver_http, build_setup_alma_for
from tests.service.test_setup import by_name, ping_with
from tests.support import API_KEY, FakeClock, config_dict

JOB = re.compile(r"/conf/jobs/[^/]+$")


def _no_parameters(sim: Simulator):
    def handler(request: httpx.Request) -> httpx.Response:
        response = sim.handle(request)
        if request.method == "GET" and JOB.search(request.url.path) and response.status_code == 200:
            body = json.loads(response.content)
            body.pop("parameters", None)
            body.pop("parameter", None)
            return httpx.Response(200, json=body, headers={"X-Exl-Api-Remaining": "90000"})
        return response

    return handler


def test_no_parameters_listed_is_not_ok(tmp_path: Path, sim: Simulator, clock: FakeClock) -> None:
    report = ping_with(tmp_path, sim, clock, handler=_no_parameters(sim))
    check = by_name(report)["job handle_migration"]
    assert not report.ok and check.status == "fail"
    assert "parameters unknown" in check.detail and "paste the payload from the job's API Information" in check.detail
    assert "--accept-unknown" in check.detail


def test_accept_unknown_makes_it_a_warning(tmp_path: Path, sim: Simulator, clock: FakeClock) -> None:
    data = config_dict(db=f"sqlite:///{tmp_path / 'hwf.db'}")
    from orchestrator.config import parse_config

    config = parse_config(data, tmp_path / "hwf.toml", environ={"HWF_ALMA_API_KEY": API_KEY})
    transport = httpx.MockTransport(_no_parameters(sim))
    wired = Wiring(alma_transport=transport, resolver_transport=transport, sleep=clock.sleep)
    report = ping(
        config,
        alma=lambda: build_setup_alma_for(config, wired),
        http=lambda: build_resolver_http(config, wired),
        accept_unknown=True,
    )
    check = by_name(report)["job handle_migration"]
    assert report.ok and check.status == "warn" and "accepted with --accept-unknown" in check.detail


def test_configured_parameters_or_payload_settle_it(tmp_path: Path, sim: Simulator, clock: FakeClock) -> None:
    data = config_dict(db=f"sqlite:///{tmp_path / 'hwf.db'}")
    jobs = data["alma"]["jobs"]
    for role in ("copy_identifiers", "handle_migration", "handle_integration"):
        spec = jobs[role] if isinstance(jobs[role], dict) else {"id": jobs[role]}
        jobs[role] = {**spec, "parameters": {"task_x": "y"}}
    report = ping_with(tmp_path, sim, clock, data=data, handler=_no_parameters(sim))
    assert all(c.status == "ok" for c in report.checks if c.name.startswith("job ")), report.as_json()


def test_a_password_in_a_url_that_slipped_past_the_config_is_never_shown(
    tmp_path: Path, sim: Simulator, clock: FakeClock
) -> None:
    """Configuration refuses user:password@ in alma.base_url and handles.resolver_url; one that reaches ping
    anyway (a Config built in code) is dropped from what ping shows, and the key still travels as the key."""
    import dataclasses

    from orchestrator.config import parse_config

    data = config_dict(db=f"sqlite:///{tmp_path / 'hwf.db'}")
    config = parse_config(data, tmp_path / "hwf.toml", environ={"HWF_ALMA_API_KEY": API_KEY})
    secret = "PW-in-the-url-77"
    with_password = {
        "alma": dataclasses.replace(config.alma, base_url=config.alma.base_url.replace("://", f"://u:{secret}@")),
        "handles": dataclasses.replace(
            config.handles, resolver_url=config.handles.resolver_url.replace("://", f"://u:{secret}@")
        ),
    }
    config = dataclasses.replace(config, **with_password)
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return sim.handle(request)

    transport = httpx.MockTransport(handler)
    wired = Wiring(alma_transport=transport, resolver_transport=transport, sleep=clock.sleep)
    report = ping(
        config, alma=lambda: build_setup_alma_for(config, wired), http=lambda: build_resolver_http(config, wired)
    )
    assert secret not in json.dumps(report.as_json())
    assert seen and all(secret not in str(r.url) for r in seen)
    assert all(r.headers["Authorization"] == f"apikey {API_KEY}" for r in seen if "/almaws/" in r.url.path)


@contextlib.contextmanager
def _dripping_server(seconds: float = 40.0) -> Iterator[str]:
    """An HTTP server that answers every request with a promise of 100 kB and then one byte every 0.2 s."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    stop = threading.Event()

    def answer(conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            with contextlib.suppress(OSError):
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n")
                end = time.monotonic() + seconds
                while not stop.is_set() and time.monotonic() < end:
                    conn.sendall(b" ")
                    time.sleep(0.2)

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=answer, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        listener.close()


@pytest.mark.parametrize("command", [["ping"], ["jobs"]])
def test_ping_and_jobs_keep_the_configured_deadline(tmp_path: Path, command: list[str]) -> None:
    """A gateway (and a resolver) that drips its reply: each try ends at [alma] / [handles] deadline_seconds,
    as in every other command, not at five times the read timeout."""
    from typer.testing import CliRunner

    from orchestrator.cli import app as cli_app
    from tests.support import write_config

    with _dripping_server() as url:
        path = write_config(
            tmp_path,
            url,
            preset="minimal",
            resolver=url,
            timeout_seconds=5,
            deadline_seconds=1.5,
            handles={"deadline_seconds": 1.5, "timeout_seconds": 5},
        )
        started = time.monotonic()
        result = CliRunner().invoke(cli_app, ["--config", str(path), *command], env={"HWF_ALMA_API_KEY": API_KEY})
        took = time.monotonic() - started
    assert result.exit_code != 0 and "Traceback" not in result.output, result.output
    assert "1.5 s" in result.output or "ReplyTooSlow" in result.output, result.output
    assert took < 15, took  # two tries of 1.5 s and a back-off; with 5 x the timeout: 25 s a try
