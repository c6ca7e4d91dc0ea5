"""SIGKILL a real ``hwf`` in each crash window of the submit/poll/verify/fix protocol, then ``hwf resume --all``.

Each window is reached deterministically, with no test hook in hwf: hwf's own request pacing (a low
``requests_per_second`` holds the next request back for seconds), the simulator holding a reply, the
simulator's handle-proxy latency, or a full stderr pipe (hwf blocks on its next progress line). Every
test first proves the kill landed in its window (the database and the simulator say so), then that the
resume left exactly one Alma job per (set, step), in order, and the set verified (``tests/support/crash.py``).
The window "after the reply, before the instance id is committed" and a kill while polling are in
tests/system/test_crash.py.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import write_config
from tests.support.crash import (
    MODES,
    Presser,
    add_sets,
    assert_invariants,
    kill,
    query,
    resume_until_verified,
    serve,
)
from tests.support.e2e import Served, hwf, start, wait_for

# Both handle integration modes: by API, and by a person pressing Run on an integration batch.
pytestmark = pytest.mark.parametrize("mode", MODES)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    server = serve(tmp_path, job_seconds=0.4)
    yield server
    server.stop()


def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'hwf.db'}"


def attempts(tmp_path: Path, step: str) -> list[tuple[str, str | None]]:
    sql = "SELECT state, instance_id FROM attempts WHERE step = :s ORDER BY id"
    return [(r[0], r[1]) for r in query(db_url(tmp_path), sql, s=step)]


def stage(tmp_path: Path) -> str:
    return str(query(db_url(tmp_path), "SELECT state FROM sets")[0][0])


def test_kill_before_the_post_resubmits_once_after_the_grace(served: Served, tmp_path: Path, mode: str) -> None:
    # 0.8 requests a second: the POST waits ~1.2 s in hwf's own token bucket after the attempt is committed.
    slow = write_config(tmp_path / "slow.toml", served.url, preset="crash", integration=mode, requests_per_second=0.8)
    config = write_config(tmp_path, served.url, preset="crash", integration=mode)
    sets = add_sets(config, served, ["clean"])
    (set_id,) = sets
    proc = start(slow, "advance", set_id)
    wait_for(lambda: attempts(tmp_path, "migrate"), timeout=60, what="the migrate attempt")
    kill(proc)
    assert attempts(tmp_path, "migrate") == [("submitting", None)]
    assert served.runs_for(set_id) == [], "the kill did not land before the POST"

    diagnosis = hwf(config, "doctor", "--json", "--offline")
    assert diagnosis.returncode == 1
    found = {f["kind"]: f for f in json.loads(diagnosis.stdout)["findings"]}
    assert set(found) == {"lease", "submitting"}
    assert "no longer runs" in found["lease"]["problem"] and "submitting for" in found["submitting"]["problem"]

    resume_until_verified(config, served)
    assert_invariants(config, served, sets)
    history = json.loads(hwf(config, "history", set_id, "--json").stdout)
    assert [e["kind"] for e in history].count("abandoned") == 1  # never reached Alma: resubmitted once
    doctor = hwf(config, "doctor")
    assert doctor.returncode == 0, doctor.stdout


def test_kill_after_the_post_reached_alma_before_its_reply(served: Served, tmp_path: Path, mode: str) -> None:
    config = write_config(tmp_path, served.url, preset="crash", integration=mode)
    sets = add_sets(config, served, ["clean"])
    (set_id,) = sets
    served.faults(run_reply_delay_s=4.0)  # Alma creates the instance, then holds the reply
    proc = start(config, "advance", set_id)
    wait_for(lambda: served.runs_for(set_id), timeout=60, what="the migration run in Alma")
    kill(proc)  # the reply is never read: for hwf, the connection dropped
    served.faults(run_reply_delay_s=0)
    assert attempts(tmp_path, "migrate") == [("submitting", None)]
    assert [r["kind"] for r in served.runs_for(set_id)] == ["migration"]

    resume_until_verified(config, served)
    assert_invariants(config, served, sets)
    history = json.loads(hwf(config, "history", set_id, "--json").stdout)
    reconciled = [e for e in history if e["kind"] == "reconciled" and e["detail"].startswith("migrate:")]
    assert len(reconciled) == 1 and reconciled[0]["instance_id"] == served.runs_for(set_id)[0]["instance_id"]
    assert "abandoned" not in [e["kind"] for e in history]


def test_kill_while_polling_a_running_job(tmp_path: Path, mode: str) -> None:
    server = serve(tmp_path, job_seconds=1.5)
    try:
        config = write_config(tmp_path, server.url, preset="crash", integration=mode)
        sets = add_sets(config, server, ["clean"])
        (set_id,) = sets
        proc = start(config, "advance", set_id)
        running = "SELECT count(*) FROM attempts WHERE step = 'migrate' AND status = 'RUNNING' AND progress > 0"
        wait_for(lambda: query(db_url(tmp_path), running)[0][0], timeout=60, what="a RUNNING poll")
        kill(proc)
        assert [r["status"] for r in server.runs_for(set_id)] == ["RUNNING"]
        assert attempts(tmp_path, "migrate")[0][0] == "submitted"
        resume_until_verified(config, server)
        assert_invariants(config, server, sets)
    finally:
        server.stop()


class _StderrTrap:
    """hwf's stderr as a pipe the test reads line by line and can fill, so that hwf blocks on its next
    progress line (the test keeps its own non-blocking write end of the same pipe)."""

    def __init__(self) -> None:
        self.read_fd, self.child_fd = os.pipe()
        # A second open file description of the pipe: O_NONBLOCK on it does not affect the child's.
        self.fill_fd = os.open(f"/proc/self/fd/{self.child_fd}", os.O_WRONLY | os.O_NONBLOCK)
        self._buffer = b""

    def lines(self, until: float) -> Iterator[str]:
        while time.monotonic() < until:
            chunk = os.read(self.read_fd, 4096)
            if not chunk:
                return
            self._buffer += chunk
            while b"\n" in self._buffer:
                line, self._buffer = self._buffer.split(b"\n", 1)
                yield line.decode(errors="replace")

    def fill(self) -> None:
        size = 65536
        while size:
            try:
                os.write(self.fill_fd, b"x" * size)
            except BlockingIOError:
                size //= 2

    def close(self) -> None:
        for fd in (self.read_fd, self.child_fd, self.fill_fd):
            os.close(fd)


def test_kill_after_the_terminal_status_before_the_transition(tmp_path: Path, mode: str) -> None:
    server = serve(tmp_path, job_seconds=2.0)
    trap = _StderrTrap()
    try:
        config = write_config(
            tmp_path,
            server.url,
            preset="crash",
            integration=mode,
            poll_interval_seconds=0.1,
            poll_max_interval_seconds=0.1,
        )
        sets = add_sets(config, server, ["clean"])
        (set_id,) = sets
        proc = start(config, "advance", set_id, stderr=trap.child_fd)
        for line in trap.lines(time.monotonic() + 60):
            if "migrate: instance" in line and "FINALIZING" in line:
                break
        else:
            raise AssertionError("hwf never reported the migration job FINALIZING")
        # hwf prints nothing more until the terminal status is committed; then its next line blocks.
        trap.fill()
        finished = "SELECT count(*) FROM attempts WHERE step = 'migrate' AND state = 'finished'"
        wait_for(lambda: query(db_url(tmp_path), finished)[0][0], timeout=30, what="the terminal status")
        time.sleep(0.3)
        assert proc.poll() is None
        assert stage(tmp_path) == "identifiers_copied", "the kill did not land before the transition"
        kill(proc)
        assert stage(tmp_path) == "identifiers_copied"
        assert [r["kind"] for r in server.runs_for(set_id)] == ["migration"]

        resume_until_verified(config, server)
        assert_invariants(config, server, sets)
    finally:
        trap.close()
        server.stop()


def test_kill_during_verification_rechecks_only_the_rest(tmp_path: Path, mode: str) -> None:
    server = serve(tmp_path, job_seconds=0.3)
    try:
        config = write_config(tmp_path, server.url, preset="crash", integration=mode)
        sets = add_sets(config, server, ["clean"], records=600)
        (set_id,) = sets
        server.faults(proxy_latency_ms=80)  # one request per right handle: as long a window as two at 40 ms
        proc = start(config, "advance", set_id)
        checked = "SELECT count(*) FROM records WHERE verdict IS NOT NULL"
        with Presser(config, server):  # manual integration: the operator presses Run when hwf asks
            wait_for(lambda: query(db_url(tmp_path), checked)[0][0] >= 250, timeout=120, what="a stored batch")
        kill(proc)
        done = query(db_url(tmp_path), checked)[0][0]
        assert 250 <= done < 600 and stage(tmp_path) == "integrated", "the kill did not land during verification"
        server.faults(proxy_latency_ms=0)
        before = server.state()["stats"]["requests"].get("handles_api", 0)

        resume_until_verified(config, server)
        assert_invariants(config, server, sets)
        rechecked = server.state()["stats"]["requests"].get("handles_api", 0) - before
        # One request per right handle: the public proxy's answer is its own record's URL (no auth=true request).
        assert 600 - done <= rechecked <= 600 - done + 8, f"re-checked {rechecked}; {done} were already stored"
    finally:
        server.stop()


def _needs_fix(config: Path, served: Served, tmp_path: Path) -> str:
    sets = add_sets(config, served, ["demo"], records=12)
    (set_id,) = sets
    first = hwf(config, "advance", set_id)
    assert first.returncode == 3 and "hwf fix" in first.stderr, first.stderr
    return set_id


def _backups(tmp_path: Path) -> list[str]:
    return [r[0] for r in query(db_url(tmp_path), "SELECT state FROM backups ORDER BY id")]


def test_kill_during_fix_between_backup_and_put(served: Served, tmp_path: Path, mode: str) -> None:
    config = write_config(tmp_path, served.url, preset="crash", integration=mode)
    slow = write_config(tmp_path / "slow.toml", served.url, preset="crash", integration=mode, requests_per_second=0.8)
    set_id = _needs_fix(config, served, tmp_path)
    puts = served.state()["stats"]["requests"].get("bib_put", 0)
    proc = start(slow, "fix", set_id, "--apply")
    wait_for(lambda: _backups(tmp_path), timeout=60, what="the first backup")
    kill(proc)
    # The backups of a batch are committed together, before any of its PUTs.
    assert set(_backups(tmp_path)) == {"pending"}
    assert served.state()["stats"]["requests"].get("bib_put", 0) == puts, "the kill did not land before the PUT"

    again = hwf(config, "fix", set_id, "--apply")
    assert again.returncode == 0, again.stdout + again.stderr
    backups = _backups(tmp_path)
    assert backups and set(backups) == {"applied"}
    assert served.state()["stats"]["requests"]["bib_put"] - puts == len(backups)  # one PUT per record
    resume_until_verified(config, served)
    assert_invariants(config, served, {set_id: "demo"})


def test_kill_during_fix_after_the_put_reached_alma(served: Served, tmp_path: Path, mode: str) -> None:
    config = write_config(tmp_path, served.url, preset="crash", integration=mode)
    set_id = _needs_fix(config, served, tmp_path)
    puts = served.state()["stats"]["requests"].get("bib_put", 0)
    served.faults(alma_latency_ms=800)  # Alma applies each request at once, then holds its reply
    proc = start(config, "fix", set_id, "--apply")
    wait_for(lambda: served.state()["stats"]["requests"].get("bib_put", 0) > puts, timeout=60, what="a PUT")
    kill(proc)
    served.faults(alma_latency_ms=0)
    assert set(_backups(tmp_path)) == {"pending"}, "the kill did not land between the PUT and its settlement"

    again = hwf(config, "fix", set_id, "--apply")
    assert again.returncode == 0, again.stdout + again.stderr
    backups = _backups(tmp_path)
    assert set(backups) == {"applied"}
    # The record already written is recognised as done, not written again.
    assert served.state()["stats"]["requests"]["bib_put"] - puts == len(backups)
    resume_until_verified(config, served)
    assert_invariants(config, served, {set_id: "demo"})


def test_kill_in_the_middle_of_a_concurrent_batch_of_puts(served: Served, tmp_path: Path, mode: str) -> None:
    config = write_config(tmp_path, served.url, preset="crash", integration=mode)
    sets = add_sets(config, served, ["demo"], records=250)
    (set_id,) = sets
    first = hwf(config, "advance", set_id)
    assert first.returncode == 3 and "hwf fix" in first.stderr, first.stderr
    needs_fix = query(db_url(tmp_path), "SELECT count(*) FROM records WHERE preflight = 'NEEDS_FIX'")[0][0]
    assert needs_fix > 200  # three batches of 100
    puts = served.state()["stats"]["requests"].get("bib_put", 0)
    served.faults(alma_latency_ms=600)  # Alma applies each PUT at once, then holds its reply: many in flight
    proc = start(config, "fix", set_id, "--apply")
    sent = lambda: served.state()["stats"]["requests"].get("bib_put", 0) - puts  # noqa: E731
    wait_for(lambda: sent() >= 120, timeout=120, what="the second batch's PUTs")
    kill(proc)
    served.faults(alma_latency_ms=0)
    at_kill = sent()
    states = _backups(tmp_path)
    assert 120 <= at_kill < needs_fix and "pending" in states, "the kill did not land during the PUTs"
    assert len(states) > 100  # the second batch was backed up before its PUTs

    again = hwf(config, "fix", set_id, "--apply")
    assert again.returncode == 0, again.stdout + again.stderr
    states = _backups(tmp_path)
    assert states == ["applied"] * needs_fix  # one backup per record, no record lost
    # Every record written exactly once: those whose PUT had reached Alma were recognised, not written again.
    assert sent() == needs_fix
    assert query(db_url(tmp_path), "SELECT count(*) FROM records WHERE preflight = 'NEEDS_FIX'")[0][0] == 0
    resume_until_verified(config, served)
    assert_invariants(config, served, sets)
