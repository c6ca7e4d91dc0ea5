"""The worker end to end: README's systemd unit and cron line, parsed and run against ``hwf sim serve``.

The unit's ExecStart (``hwf resume --all --follow``) is started as a real process on several sets and sent
SIGTERM (its KillSignal) mid-run: it exits 0 with a summary and its leases released; started again it
finishes, every step submitted once. The cron line's command (``flock -n ... --until-idle``) runs too.
"""

from __future__ import annotations

import configparser
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.support import write_config
from tests.support.crash import add_sets, check, query, serve
from tests.support.e2e import HWF, Served, hwf_env, start_hwf, wait_for

README = Path(__file__).parents[2] / "README.md"


def _block(language: str) -> str:
    blocks = re.findall(rf"```{language}\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
    assert len(blocks) == 1, f"README should have one ```{language} block, has {len(blocks)}"
    return str(blocks[0])


def _unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(_block("ini"))
    return parser


def _command(argv: list[str], config: Path) -> list[str]:
    """The unit's or cron line's command with this machine's paths: hwf in the venv, the test config."""
    return [HWF if a == "/opt/hwf/bin/hwf" else str(config) if a == "/etc/hwf/hwf.toml" else a for a in argv]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    server = serve(tmp_path, job_seconds=0.5)
    yield server
    server.stop()


def test_the_systemd_unit_has_the_keys_a_worker_needs() -> None:
    unit = _unit()
    service = unit["Service"]
    assert shlex.split(service["ExecStart"])[1:] == ["resume", "--all", "--follow"]
    assert service["KillSignal"] == "SIGTERM" and service["Restart"] == "on-failure"
    assert int(service["TimeoutStopSec"]) >= 90 and service["Type"] == "exec"
    assert service["Environment"].startswith("HWF_CONFIG=")
    assert unit["Install"]["WantedBy"] == "multi-user.target"
    assert "network-online.target" in unit["Unit"]["After"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verify_finds_no_error_in_the_unit(tmp_path: Path) -> None:
    unit = tmp_path / "hwf-worker.service"
    text = _block("ini").replace("/opt/hwf/bin/hwf", HWF).replace("User=hwf\n", "")
    unit.write_text(text)
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False
    )
    problems = [
        line
        for line in (result.stdout + result.stderr).splitlines()
        if "hwf-worker.service" in line and not re.search(r"(No such file|Failed to|not found|/etc/hwf)", line)
    ]
    assert problems == [], result.stdout + result.stderr


def test_the_cron_line_parses_and_its_command_finishes_the_sets(served: Served, tmp_path: Path) -> None:
    line = _block("cron").strip()
    fields = line.split(None, 5)
    minute, hour, day, month, weekday, command = fields
    assert minute == "*/15" and (hour, day, month, weekday) == ("*", "*", "*", "*")
    config = write_config(tmp_path, served.url, preset="crash")
    sets = add_sets(config, served, ["clean", "clean"], records=4, prefix="Cron")
    argv = shlex.split(command.split(">>")[0])
    assert argv[:2] == ["flock", "-n"]
    argv[2] = str(tmp_path / "worker.lock")
    result = subprocess.run(_command(argv, config), capture_output=True, text=True, timeout=120, env=hwf_env())
    assert result.returncode == 0, result.stderr
    assert "nothing left to do" in result.stdout and "2 verified" in result.stdout
    assert check(config, served, sets).ok


def test_sigterm_mid_run_exits_0_with_a_summary_and_leases_released_and_a_restart_finishes(
    served: Served, tmp_path: Path
) -> None:
    config = write_config(tmp_path, served.url, preset="crash")
    sets = add_sets(config, served, ["clean"] * 4, records=4, prefix="Worker")
    service = _unit()["Service"]
    argv = _command(shlex.split(service["ExecStart"]), config)
    env = {**hwf_env(), "HWF_CONFIG": str(config)}
    url = f"sqlite:///{tmp_path / 'hwf.db'}"
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        wait_for(lambda: len(served.state()["job_runs"]) >= 2, timeout=60)
        proc.send_signal(getattr(signal, service["KillSignal"]))
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "Worker stopped: SIGTERM" in out, out
    assert query(url, "SELECT count(*) FROM sets WHERE lease_owner IS NOT NULL") == [(0,)]
    assert query(url, "SELECT state FROM workers") == [("stopped",)]
    states = [r[0] for r in query(url, "SELECT state FROM sets")]
    assert states.count("verified") < len(sets), "the worker finished before the signal: nothing tested"
    shown = subprocess.run([HWF, "status"], capture_output=True, text=True, env=env, timeout=60)
    assert "stopped: SIGTERM" in shown.stdout, shown.stdout

    started = time.monotonic()
    again = subprocess.run([*argv, "--until-idle"], capture_output=True, text=True, env=env, timeout=180)
    assert again.returncode == 0, again.stderr
    assert "4 verified" in again.stdout, again.stdout
    verdict = check(config, served, sets)
    assert verdict.ok, str(verdict)  # every step ran once, in order
    print(f"\nrestarted worker finished 4 sets in {time.monotonic() - started:.1f} s")
    assert os.environ.get("HWF_CONFIG") is None


def _stop_within(proc: subprocess.Popen[str], seconds: float) -> tuple[str, float]:
    """SIGTERM the worker; its output and how long it took to exit (it must within ``seconds``)."""
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        out, err = proc.communicate(timeout=seconds)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise AssertionError(f"the worker did not end within {seconds:.0f} s of SIGTERM") from None
    assert proc.returncode == 0, err
    return out, time.monotonic() - started


def test_a_day_long_retry_after_on_one_set_makes_that_set_wait_and_the_others_finish(
    served: Served, tmp_path: Path
) -> None:
    """A hostile ``503`` with ``Retry-After: 86400`` on every request about one set: that set waits (an hour at
    most), the worker goes on with the others, and SIGTERM ends it at once."""
    config = write_config(tmp_path, served.url, preset="crash")
    sets = add_sets(config, served, ["clean"] * 3, records=4, prefix="Hostile")
    bad = next(iter(sets))
    served.faults(unavailable_paths={f"/conf/sets/{bad}": 86400})
    url = f"sqlite:///{tmp_path / 'hwf.db'}"
    proc = start_hwf(config, "resume", "--all", "--follow")
    try:
        wait_for(
            lambda: query(url, "SELECT count(*) FROM sets WHERE state = 'verified'") == [(2,)],
            timeout=90,
            what="the two other sets verified",
        )
        [(waiting, until)] = query(url, "SELECT waiting, wait_until FROM sets WHERE alma_set_id = :s", s=bad)
        out, took = _stop_within(proc, 20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert "Retry-After" in waiting and "86400 s" in waiting, waiting
    wait = datetime.fromisoformat(str(until)).replace(tzinfo=UTC) - datetime.now(UTC)
    assert timedelta(minutes=55) < wait <= timedelta(hours=1), wait  # capped at an hour, not a day
    assert served.state()["stats"]["sent_503"] >= 1
    assert "stopped: SIGTERM" in out, out
    print(f"\nworker ended {took:.1f} s after SIGTERM")


def test_sigterm_ends_an_alma_retry_wait_at_once(served: Served, tmp_path: Path) -> None:
    """A ``Retry-After`` short enough to be waited in place (under 300 s) is waited with the worker's sleep:
    SIGTERM ends it at once, not when the wait is over."""
    config = write_config(tmp_path, served.url, preset="crash")
    sets = add_sets(config, served, ["clean"], records=4, prefix="Patient")
    served.faults(unavailable_paths={f"/conf/sets/{next(iter(sets))}": 250})
    proc = start_hwf(config, "resume", "--all", "--follow")
    try:
        wait_for(lambda: served.state()["stats"]["sent_503"] >= 1, timeout=60, what="the 503 answered")
        time.sleep(1.0)  # the worker is now in its 250 s wait before the retry
        out, took = _stop_within(proc, 15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert "stopped: SIGTERM" in out, out
    assert served.state()["stats"]["sent_503"] == 1  # no retry was sent after the stop
    print(f"\nworker ended {took:.1f} s after SIGTERM")
