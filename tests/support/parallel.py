"""A pytest plugin for running the suite in parallel with pytest-xdist (``-n`` in pyproject's ``addopts``).

- The controller makes one folder for the run and names it to its workers in ``HWF_TEST_RUN_DIR``: the
  PostgreSQL server of the run lives in it (``tests.support.pg``: the first worker that needs it starts it, the
  others use it, the last one stops it), and so do the locks below. At the end the controller stops a server
  a worker left running and removes the folder.
- A test marked ``serial`` runs with no other test beside it: before it starts, the other workers finish the
  test they are running and wait until it has ended. For the tests that count requests per second across
  processes and the four-process tests, which a loaded machine could make fail. (The browser tests share one
  worker, ``xdist_group``, beside the others: their waits allow for a loaded machine.)

Without xdist (``-p no:xdist``, ``-n 0``) nothing of this applies: one process, its own PostgreSQL server.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

RUN_DIR_VARIABLE = "HWF_TEST_RUN_DIR"
# Read once at import: the autouse isolation fixture strips HWF_* variables from every test.
RUN_DIR = Path(os.environ[RUN_DIR_VARIABLE]) if os.environ.get(RUN_DIR_VARIABLE) else None


def _is_controller(config: pytest.Config) -> bool:
    """The xdist controller of a parallel run (not a worker, not a run in one process)."""
    if hasattr(config, "workerinput"):
        return False
    return config.getoption("dist", "no") != "no" and bool(config.getoption("tx", None))


def pytest_configure(config: pytest.Config) -> None:
    if _is_controller(config):
        # A short path: the PostgreSQL server's Unix socket lives in it (socket paths are limited to ~100 bytes).
        run_dir = Path(tempfile.mkdtemp(prefix="hwf-tests-"))
        run_dir.chmod(0o755)  # the server may run as another user (pgserver does, under root)
        (run_dir / "pg").mkdir(mode=0o700)
        os.environ[RUN_DIR_VARIABLE] = str(run_dir)  # the workers, started after this, inherit it
        config.stash[_run_dir_key] = run_dir


def pytest_unconfigure(config: pytest.Config) -> None:
    run_dir = config.stash.get(_run_dir_key, None)
    if run_dir is None:
        return
    _stop_leftover_postgres(run_dir / "pg")
    shutil.rmtree(run_dir, ignore_errors=True)
    os.environ.pop(RUN_DIR_VARIABLE, None)


_run_dir_key = pytest.StashKey[Path]()


def _stop_leftover_postgres(pgdata: Path, wait: float = 15.0) -> None:
    """Stop the run's PostgreSQL server if a worker left it running (a worker killed before its clean-up)."""
    try:
        pid = int((pgdata / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return  # never started, or stopped by the last worker that used it
    try:
        os.kill(pid, signal.SIGINT)  # PostgreSQL's fast shutdown
    except ProcessLookupError:
        return
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)


@contextmanager
def _turn(run_dir: Path, alone: bool) -> Iterator[None]:
    """A readers-writer lock over every worker's tests: shared for a test, exclusive for a ``serial`` one.

    Everyone passes a turnstile first; a serial test keeps it while it waits and runs, so no new test starts
    meanwhile and it cannot be kept waiting for ever."""
    with open(run_dir / "turnstile.lock", "a") as turnstile, open(run_dir / "tests.lock", "a") as tests:
        fcntl.flock(turnstile, fcntl.LOCK_EX)
        try:
            fcntl.flock(tests, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
        finally:
            if not alone:
                fcntl.flock(turnstile, fcntl.LOCK_UN)
        try:
            yield
        finally:
            fcntl.flock(tests, fcntl.LOCK_UN)
            if alone:
                fcntl.flock(turnstile, fcntl.LOCK_UN)


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    if RUN_DIR is None or not hasattr(item.config, "workerinput"):
        yield
        return
    with _turn(RUN_DIR, alone=item.get_closest_marker("serial") is not None):
        yield
