"""Helpers for end-to-end tests: the real ``hwf`` executable against ``hwf sim serve`` on 127.0.0.1 (their
configuration: ``write_config(..., preset="e2e")`` or ``preset="crash"``, from ``tests.support.config``)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

HWF = shutil.which("hwf", path=str(Path(sys.executable).parent)) or "hwf"
E2E_KEY = "l7xx-e2e-key-not-secret"


def scenario_file(tmp_path: Path, job_seconds: float = 1.0, **extra: Any) -> Path:
    lines = [f"{k} = {json.dumps(v)}" for k, v in extra.items()]
    lines += ["[job_seconds]", *(f"{k} = {job_seconds}" for k in ("copy", "migration", "integration", "other"))]
    path = tmp_path / "scenario.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


class Served:
    """A running ``hwf sim serve`` process and its admin endpoints."""

    def __init__(self, tmp_path: Path, **scenario: Any) -> None:
        job_seconds = scenario.pop("job_seconds", 1.0)
        self.proc = subprocess.Popen(
            [HWF, "sim", "serve", "--port", "0", "--scenario", str(scenario_file(tmp_path, job_seconds, **scenario))],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if not line.startswith("http://127.0.0.1:"):
            self.proc.kill()
            raise RuntimeError(
                f"simulator did not start: {line!r} {self.proc.stderr.read() if self.proc.stderr else ''}"
            )
        self.url = line

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=30) as reply:
            return json.loads(reply.read())

    def state(self) -> Any:
        return self.call("GET", "/_sim/state")

    def make_set(self, name: str, count: int, profile: str = "clean", seed: int = 1) -> str:
        ids = self.call("POST", "/_sim/records", {"count": count, "profile": profile, "seed": seed})["mms_ids"]
        return str(self.call("POST", "/_sim/sets", {"name": name, "mms_ids": ids})["id"])

    def runs_for(self, set_id: str) -> list[dict[str, Any]]:
        return [r for r in self.state()["job_runs"] if r["set_id"] == set_id]

    def faults(self, **changes: Any) -> Any:
        return self.call("POST", "/_sim/faults", changes)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()


def hwf_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HWF_") and "proxy" not in k.lower()}
    env["HWF_ALMA_API_KEY"] = E2E_KEY
    env["COLUMNS"] = "200"
    return env


def hwf(config: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [HWF, "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=hwf_env(),
    )


def start_hwf(config: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [HWF, "--config", str(config), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=hwf_env(),
    )


def start(config: Path, *args: str, **popen: Any) -> subprocess.Popen[str]:
    """Start ``hwf --config CONFIG ARGS...`` with output discarded unless redirected."""
    popen.setdefault("stdout", subprocess.DEVNULL)
    popen.setdefault("stderr", subprocess.DEVNULL)
    return subprocess.Popen([HWF, "--config", str(config), *args], text=True, env=hwf_env(), **popen)


def wait_for(predicate: Any, timeout: float = 60.0, interval: float = 0.02, what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something true (returned), or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"{what} not reached in {timeout:.0f} s")
