"""Headless Chromium for the dashboard's browser tests and its screenshot: the Debian ``chromium`` and
``chromium-driver`` packages driven by selenium (no browser download: `.ci/run` installs the packages).

In CI (``CI=true``) a missing browser fails the tests; elsewhere it skips them."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

CHROMIUM = os.environ.get("HWF_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("HWF_CHROMEDRIVER", "/usr/bin/chromedriver")
FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)


def require_browser() -> None:
    """Skip (or, in CI, fail) when Chromium or its driver is not installed."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not (Path(p).exists() or shutil.which(p))]
    if not missing:
        return
    message = f"{', '.join(missing)} missing: apt-get install chromium chromium-driver (.ci/run does)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@contextmanager
def chrome(profile: Path, *, width: int = 1280, height: int = 900, tz: str | None = None) -> Iterator[Any]:
    """A headless Chromium with a fresh profile, its console log kept; quit on exit. ``tz``: the browser's time
    zone (``TZ`` of chromedriver, which Chromium inherits), e.g. ``America/Chicago``."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    env = {**os.environ, "TZ": tz} if tz else None
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER, env=env))
    try:
        yield driver
    finally:
        driver.quit()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(url: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def page_size(driver: Any, width: int, height: int = 900) -> None:
    """The page's viewport as a screen of ``width`` x ``height`` CSS pixels (a phone at 420), whatever the window;
    ``width`` 0: back to the window's own size."""
    if width:
        metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 700}
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
    else:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    # No scroll bar takes its 15 px of the width: the page gets all of it, as on a phone or a Mac.
    driver.execute_cdp_cmd("Emulation.setScrollbarsHidden", {"hidden": bool(width)})


def screenshot(driver: Any, target: Path) -> None:
    """The whole page (beyond the viewport) as a PNG."""
    import base64

    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(base64.b64decode(shot["data"]))


class LiveServer:
    """The dashboard app on a real socket (uvicorn in a thread), as ``hwf serve`` runs it."""

    def __init__(self, app: Any, **limits: Any) -> None:
        import uvicorn

        from orchestrator.web import bind, server_config

        self.sock = bind("127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(server_config(app, **limits))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        wait_for(self.url + "/static/hwf.css")
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()
