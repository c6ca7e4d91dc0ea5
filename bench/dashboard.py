"""The dashboard: how long the sets table, the overview and their JSON take for N sets (issue 14: 500 sets
"in well under a second"), and a screenshot of the overview, made by headless Chromium from the database
``hwf demo`` leaves (the README's pictures: ``HWF_SCREENSHOTS=docs pytest tests/web/test_browser.py -k screenshots``).

    python -m bench.dashboard                  # --sets 500 --records 100 --repeat 5 --browser
    python -m bench.dashboard --screenshot /tmp/demo-overview.png
"""

from __future__ import annotations

import argparse
import base64
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import insert

from orchestrator.config import parse_config
from orchestrator.domain.steps import Stage
from orchestrator.service.context import Context
from orchestrator.store.db import open_database
from orchestrator.store.models import AlmaSet, Attempt, AttemptState, Record

_STAGES = list(Stage)


def fill_sets(folder: Path, sets: int, records: int = 100) -> Context:
    """A database of ``sets`` sets of ``records`` records in every state (some in attention, some running),
    and a read-only context over it, as ``hwf serve`` builds one."""
    from orchestrator.wiring import read_only_context

    db = folder / "dash.db"
    config = parse_config(
        {
            "database": {"url": f"sqlite:///{db}"},
            "alma": {
                "base_url": "http://127.0.0.1:9",
                "institution_code": "01GCL_INST",
                "jobs": {"copy_identifiers": "M1", "handle_migration": "M2", "handle_integration": "M3"},
            },
            "handles": {"prefix": "11084"},
            "primo": {"domain": "grinnell.primo.exlibrisgroup.com", "view": "01GCL_INST:GCL"},
        },
        folder / "hwf.toml",
        environ={},
    )
    start = datetime(2026, 2, 2, 8, 0, tzinfo=UTC)
    sessions = open_database(config.database_url)
    with sessions.begin() as session:
        for i in range(sets):
            stage = _STAGES[i % len(_STAGES)]
            attention = f"job: migration instance {i} ended COMPLETED_FAILED" if i % 17 == 3 else None
            row = AlmaSet(
                alma_set_id=str(7_593_466_560_004_641 + i * 1000),
                name=f"Handles 2026 (batch {i + 1}/{sets})",
                stage=stage,
                attention=attention,
                attention_kind="job" if attention else None,
                record_count=records,
                created_at=start + timedelta(minutes=i),
                updated_at=start + timedelta(minutes=i, seconds=30),
            )
            session.add(row)
            session.flush()
            done = stage is Stage.VERIFIED
            session.execute(
                insert(Record),
                [
                    {
                        "set_id": row.id,
                        "mms_id": f"99{i:06d}{r:04d}04641",
                        "title": f"Title {r} of set {i}",
                        "handle": f"11084/{i * records + r}",
                        "preflight": "READY",
                        "excluded": r == 0 and i % 5 == 0,
                        "verdict": "OK" if done else None,
                        "verified_at": start + timedelta(minutes=i, seconds=r) if done else None,
                    }
                    for r in range(records)
                ],
            )
            if stage is Stage.IDENTIFIERS_COPIED and i % 10 == 1:
                session.add(
                    Attempt(
                        set_id=row.id,
                        step="migrate",
                        number=1,
                        token=f"hwf-{i:012x}",
                        job_id="M2",
                        instance_id=str(8_000_000 + i),
                        state=AttemptState.SUBMITTED,
                        status="RUNNING",
                        progress=40.0,
                        begun_at=start + timedelta(minutes=i),
                        submitted_at=start + timedelta(minutes=i, seconds=2),
                    )
                )
    sessions.kw["bind"].dispose()
    return read_only_context(config)


def _time(client: object, path: str, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        response = client.get(path)  # type: ignore[attr-defined]
        times.append(time.perf_counter() - started)
        assert response.status_code == 200, (path, response.status_code)
    return times


def measure(sets: int, records: int, repeat: int, browser: bool) -> None:
    import warnings

    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from starlette.testclient import TestClient

    from orchestrator.web import create_app

    with tempfile.TemporaryDirectory() as tmp:
        built = time.perf_counter()
        ctx = fill_sets(Path(tmp), sets, records)
        print(f"{sets} sets of {records} records written in {time.perf_counter() - built:.1f} s")
        client = TestClient(create_app(ctx), base_url="http://127.0.0.1:8155")
        client.get("/sets")
        for path in ("/sets", "/api/sets", "/", "/api/overview"):
            times = _time(client, path, repeat)
            size = len(client.get(path).content)
            print(
                f"GET {path:<14} median {statistics.median(times) * 1000:7.1f} ms, "
                f"max {max(times) * 1000:7.1f} ms ({repeat} requests, {size:,} bytes)"
            )
        if browser:
            _in_browser(create_app(ctx), Path(tmp), repeat)
        ctx.sessions.kw["bind"].dispose()


def _in_browser(app: object, folder: Path, repeat: int) -> None:
    """Headless Chromium's own clock: request sent to the page fully loaded (scripts run) and rendered."""
    from tests.support.browser import LiveServer, chrome

    with LiveServer(app) as live, chrome(folder / "profile") as driver:
        for path in ("/sets", "/"):
            loads = []
            for _ in range(repeat):
                driver.get(live.url + path)
                loads.append(
                    driver.execute_script(
                        "const t = performance.getEntriesByType('navigation')[0]; return t.loadEventEnd - t.startTime;"
                    )
                )
            print(f"Chromium {path:<6} loaded in median {statistics.median(loads):6.1f} ms, max {max(loads):6.1f} ms")
            driver.get("about:blank")


def screenshot(target: Path) -> None:
    """Run ``hwf demo``, serve its database, and let headless Chromium photograph the overview."""
    from tests.support.browser import chrome, free_port, wait_for

    with tempfile.TemporaryDirectory() as tmp:
        demo = Path(tmp) / "demo"
        subprocess.run(
            [sys.executable, "-m", "orchestrator", "demo", "--dir", str(demo), "--job-seconds", "2"],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "orchestrator", "--config", str(demo / "hwf.toml"), "serve", "--port", str(port)],
            stdout=subprocess.DEVNULL,
        )
        try:
            wait_for(f"http://127.0.0.1:{port}/api/overview")
            with chrome(Path(tmp) / "profile", width=1280, height=1000) as driver:
                driver.get(f"http://127.0.0.1:{port}/")
                driver.execute_script("return document.fonts.ready")
                time.sleep(0.5)
                shot = driver.execute_cdp_cmd(
                    "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True}
                )
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(base64.b64decode(shot["data"]))
        finally:
            server.terminate()
            server.wait(15)
    print(f"wrote {target}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", type=int, default=500)
    parser.add_argument("--records", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--browser", action="store_true", help="also time the pages in headless Chromium")
    parser.add_argument("--screenshot", type=Path, help="write a screenshot of the demo's overview here instead")
    args = parser.parse_args()
    if args.screenshot:
        screenshot(args.screenshot)
    else:
        measure(args.sets, args.records, args.repeat, args.browser)


if __name__ == "__main__":
    main()
