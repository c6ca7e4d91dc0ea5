"""The dashboard in a real browser: headless Chromium (Debian's ``chromium`` + ``chromium-driver``, driven
by selenium) against the app served by uvicorn on a real socket, over a database the simulator filled.

What a person sees: the text, the charts drawn, the live update arriving after the database changes, the
sets table filtered and sorted, a set's page, and no error in the browser's console (a Content-Security-
Policy violation, such as an inline script, would be one). In CI a missing browser fails these tests.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from orchestrator.display import iso_z
from orchestrator.errors import NeedsAttentionError
from orchestrator.service import workflow
from orchestrator.web import create_app
from tests.support.browser import LiveServer, chrome, page_size, require_browser, screenshot
from tests.support.web import World, build_world, demo_world

# One Chromium for the module, its tests one after another on one worker (beside the other tests: its waits allow
# for a loaded machine).
pytestmark = [pytest.mark.timeout(180), pytest.mark.xdist_group("browser")]

TOKEN = "browser-test-token-0123456789"
ZONE = "America/Chicago"  # the browser's zone (the machine's, and the server's, may be any other)
# Where test_overview_screenshots writes the README's pictures (relative: to the repository), read before the
# tests' isolation clears the HWF_ variables: `HWF_SCREENSHOTS=docs pytest tests/web/test_browser.py -k screenshots`.
REPOSITORY = Path(__file__).resolve().parents[2]
SCREENSHOTS = os.environ.get("HWF_SCREENSHOTS")


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    require_browser()
    with chrome(tmp_path_factory.mktemp("chromium-profile"), tz=ZONE) as d:
        d.implicitly_wait(0)
        yield d


@pytest.fixture(autouse=True)
def _blank_page(driver: Any) -> Iterator[None]:
    """Each test starts on a blank page with an empty console (the last page polled a server now gone)."""
    driver.get("about:blank")
    driver.get_log("browser")
    yield
    driver.get("about:blank")


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = build_world(tmp_path)
    yield w
    w.close()


@pytest.fixture
def server(world: World) -> Iterator[LiveServer]:
    with LiveServer(create_app(world.reader, poll_seconds=0.3)) as live:
        yield live


def _wait(driver: Any, condition: Any, timeout: float = 15.0) -> Any:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    # The live update replaces parts of the page: an element read a moment ago may be gone; read again.
    wait = WebDriverWait(driver, timeout, poll_frequency=0.1, ignored_exceptions=(StaleElementReferenceException,))
    return wait.until(condition)


def _text(driver: Any, css: str) -> str:
    from selenium.webdriver.common.by import By

    return str(driver.find_element(By.CSS_SELECTOR, css).text)


def _console_errors(driver: Any) -> list[dict[str, Any]]:
    return [entry for entry in driver.get_log("browser") if entry["level"] in ("SEVERE", "ERROR")]


def _drawn(driver: Any, image_id: str) -> bool:
    return bool(
        driver.execute_script(
            "const i = document.getElementById(arguments[0]); return i.complete && i.naturalWidth > 0;", image_id
        )
    )


def _visible_rows(driver: Any) -> list[Any]:
    from selenium.webdriver.common.by import By

    return [tr for tr in driver.find_elements(By.CSS_SELECTOR, "#sets-table tbody tr") if tr.is_displayed()]


def test_overview_shows_the_migration_and_updates_itself(driver: Any, world: World, server: LiveServer) -> None:
    driver.get(server.url + "/")
    assert driver.title == "(1 needs you) Overview · hwf dashboard"  # the set in attention
    body = _text(driver, "main")
    assert "Records verified" in body and "39 of 90" in body
    assert "1 of 3 verified" in body
    assert world.attention in _text(driver, "#attention-table") and "Problem titles" in body
    assert f"hwf exclude {world.attention} " in _text(driver, "#attention-table")  # the reason's command to go on
    running = _text(driver, "#running-table")
    assert world.running in running and "migrate" in running
    assert "at most 3 API jobs at once" in body
    _wait(driver, lambda d: _drawn(d, "chart-verified") and _drawn(d, "chart-states"))

    world.finish_running()  # a worker drives the running set to verified meanwhile
    _wait(driver, lambda d: _text(d, '[data-field="records_verified"]') == "59")
    _wait(driver, lambda d: _text(d, '[data-field="verified_sets"]') == "2")  # records first, then the set
    _wait(driver, lambda d: not d.find_element("id", "running-table").is_displayed())
    assert "No job of hwf's is running." in _text(driver, "main")
    assert _text(driver, '[data-field="eta"]') == "unknown"
    assert "1 set needs attention" in _text(driver, '[data-field="eta_note"]')
    # The chart was drawn again for the new figures, and drawn.
    _wait(driver, lambda d: "at=" in d.find_element("id", "chart-verified").get_attribute("src"))
    _wait(driver, lambda d: _drawn(d, "chart-verified"))
    assert driver.current_url == server.url + "/"  # no reload: the page updated itself
    assert _console_errors(driver) == []


def test_sets_table_filters_and_sorts(driver: Any, world: World, server: LiveServer) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    driver.get(server.url + "/sets")
    assert len(_visible_rows(driver)) == 3
    assert _text(driver, "#set-count") == "3 of 3 sets"
    search = driver.find_element(By.ID, "filter-text")
    search.send_keys("problem")
    _wait(driver, lambda d: len(_visible_rows(d)) == 1)
    assert world.attention in _visible_rows(driver)[0].text
    assert _text(driver, "#set-count") == "1 of 3 sets"
    assert driver.current_url.endswith("/sets?q=problem")
    search.clear()
    search.send_keys(" ")  # an input event with an empty filter
    Select(driver.find_element(By.ID, "filter-state")).select_by_value("verified")
    _wait(driver, lambda d: len(_visible_rows(d)) == 1)
    assert "Verified <script>alert('set')</script> titles \u241b[31m" in _visible_rows(driver)[0].text
    Select(driver.find_element(By.ID, "filter-state")).select_by_value("")
    _wait(driver, lambda d: len(_visible_rows(d)) == 3)

    header = driver.find_element(By.CSS_SELECTOR, 'th[data-key="records"] a')
    header.click()
    records = [tr.find_elements(By.TAG_NAME, "td")[3].text for tr in _visible_rows(driver)]
    assert records == ["20", "30", "40"]
    header.click()
    records = [tr.find_elements(By.TAG_NAME, "td")[3].text for tr in _visible_rows(driver)]
    assert records == ["40", "30", "20"]
    assert driver.find_element(By.CSS_SELECTOR, 'th[data-key="records"]').get_attribute("aria-sort") == "descending"
    assert "sort=records&desc=1" in driver.current_url
    assert _console_errors(driver) == []


def test_set_pages(driver: Any, world: World, server: LiveServer) -> None:
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By

    driver.get(f"{server.url}/sets/{world.verified}")
    assert driver.find_element(By.TAG_NAME, "h1").text == "Verified <script>alert('set')</script> titles \u241b[31m"
    jobs = _text(driver, "#jobs-table")
    for run in world.sim.runs_for(world.verified):
        assert run.instance_id in jobs
    assert "COMPLETED_SUCCESS" in jobs
    _wait(driver, lambda d: _drawn(d, "chart-verdicts") and _drawn(d, "chart-timeline"))
    assert "OK 39" in _text(driver, "#verdicts-table")
    operator = _text(driver, "#operator-table")
    assert "withdrawn title" in operator and "librarian" in operator
    link = driver.find_element(By.LINK_TEXT, "report CSV (every record)")
    assert link.get_attribute("href") == f"{server.url}/sets/{world.verified}/report.csv"

    driver.get(f"{server.url}/sets/{world.attention}")
    assert "Needs attention (records)" in _text(driver, "main")
    problems = _text(driver, "#problems-table")
    assert "<script>alert('title')</script> An \u241b[2J escaped title" in problems  # shown as text
    with pytest.raises(NoAlertPresentException):
        driver.switch_to.alert.text  # noqa: B018 (no script from the title ran)
    primo = driver.find_elements(By.LINK_TEXT, "Primo record")[0].get_attribute("href")
    assert primo.startswith("https://grinnell.primo.exlibrisgroup.com/discovery/fulldisplay/alma")

    driver.get(f"{server.url}/sets/424242")
    assert driver.find_element(By.TAG_NAME, "h1").text == "Not found"
    assert "unknown set '424242'" in _text(driver, "main")
    # The 404 itself is a console error in Chromium ("Failed to load resource"); nothing else may be.
    errors = [e for e in _console_errors(driver) if "404" not in e["message"]]
    assert errors == []


def test_token_from_the_address_then_the_cookie(driver: Any, world: World) -> None:
    with LiveServer(create_app(world.reader, token=TOKEN, loopback=False, poll_seconds=0.3)) as live:
        driver.delete_all_cookies()
        driver.get(live.url + "/")
        assert driver.find_element("tag name", "h1").text == "Access token needed"
        driver.get_log("browser")  # the 401 is logged by Chromium as a failed load: not our error
        driver.get(f"{live.url}/?token={TOKEN}")
        assert driver.current_url == live.url + "/"  # the token left the address bar
        assert "Records verified" in _text(driver, "main")
        world.finish_running()
        _wait(driver, lambda d: _text(d, '[data-field="records_verified"]') == "59")  # polling carries the cookie
        assert _console_errors(driver) == []
        driver.delete_all_cookies()


def _script_function(name: str) -> str:
    """The source of one function of the dashboard's script, to run on its own in the browser."""
    import re

    from orchestrator.web import text

    script = (Path(text.__file__).parent / "static" / "hwf.js").read_text(encoding="utf-8")
    match = re.search(rf"^  function {name}\(.*?^  \}}$", script, re.M | re.S)
    assert match is not None, name
    return match.group(0)


def test_the_script_shows_durations_and_unsafe_text_as_the_server_does(driver: Any) -> None:
    """The live update writes what the page first showed: one duration format, one rule for unsafe text."""
    from orchestrator.display import duration
    from orchestrator.web.text import clean

    seconds = [0, 0.4, 0.5, 2.5, 45, 59.4, 59.5, 245, 3599, 3600, 7400, 86399, 3 * 86400 + 4 * 3600]
    shown = driver.execute_script(_script_function("duration") + "\nreturn arguments[0].map(duration);", seconds)
    assert shown == [duration(s) for s in seconds]
    samples = [
        "a\x00b\x1bc\x7fd\x9be",
        "invoice \u202etxt.exe \u2066x\u2069",
        "line\u2028break\u2029",
        "tab\tnew\nline",
    ]
    samples += ["marks \u200e\u200f\u061c", "plain Thèses 中文 🙂"]
    cleaned = driver.execute_script(_script_function("clean") + "\nreturn arguments[0].map(clean);", samples)
    assert cleaned == [clean(s) for s in samples]


# ---------------------------------------------------------------------------------------------
# the long wait: times in the reader's zone, pages that fit the screen and update themselves


def _local(iso: str) -> str:
    """A moment as the page writes it in the browser's zone: ``2026-02-02 09:02:48 CST``."""
    at = datetime.fromisoformat(iso).astimezone(ZoneInfo(ZONE))
    return at.strftime("%Y-%m-%d %H:%M:%S ") + str(at.tzname())


def _times(driver: Any) -> list[tuple[str, str, bool, str]]:
    script = """return Array.from(document.querySelectorAll('main time[datetime]')).map(
        t => [t.getAttribute('datetime'), t.textContent, t.hasAttribute('data-rel'), t.dataset.format || ''])"""
    return [tuple(t) for t in driver.execute_script(script)]


def test_times_show_in_the_browsers_zone_and_move_on(driver: Any, world: World, server: LiveServer) -> None:
    driver.get(f"{server.url}/sets/{world.running}")
    now = iso_z(world.clock())
    _wait(driver, lambda d: _text(d, "#live-status time") == _local(now) + " (just now)")
    assert _local(now).endswith(" CST")  # February in Chicago
    times = _times(driver)
    assert len(times) >= 5
    for iso, text, relative, form in times:
        assert form == "" and "UTC" not in text
        assert text == _local(iso) if not relative else text.startswith(_local(iso) + " (")
    registered = "#set-state dd:nth-of-type(5) time"
    assert _text(driver, registered).endswith(" CST (3 min ago)")  # registered at 15:00:00 UTC, now 15:02:48
    assert _text(driver, "footer").endswith("times in your zone, America/Chicago (CST)")
    timeline = driver.find_element("id", "chart-timeline").get_attribute("src")
    assert timeline.endswith("/timeline.svg?tz=America%2FChicago")  # the chart writes its moments in CST too
    _wait(driver, lambda d: _drawn(d, "chart-timeline"))

    world.clock.advance(3600)  # an hour passes on the server's clock: the page follows without a reload
    later = iso_z(world.clock())
    _wait(driver, lambda d: _text(d, "#live-status time") == _local(later) + " (just now)")
    _wait(driver, lambda d: _text(d, registered).endswith(" CST (1 h 03 min ago)"))
    assert _console_errors(driver) == []


def _overflow(driver: Any) -> list[int]:
    return list(driver.execute_script("return [document.documentElement.scrollWidth, window.innerWidth]"))


def test_no_page_scrolls_sideways_on_a_phone(driver: Any, world: World, server: LiveServer) -> None:
    pages = ["/", "/sets", "/sets?state=attention", "/sets/424242"]
    pages += [f"/sets/{s}" for s in (world.verified, world.attention, world.running)]
    page_size(driver, 420)
    try:
        for path in pages:
            driver.get(server.url + path)
            width, inner = _overflow(driver)
            assert inner == 420 and width <= inner, path
        # The wide tables stack: one block per set, each value with its label, all of it on screen.
        driver.get(server.url + "/")
        cells = driver.execute_script(
            """return Array.from(document.querySelectorAll('#attention-table td')).map(td => [
                getComputedStyle(td).display, td.getBoundingClientRect().right, td.dataset.label])"""
        )
        assert [c[2] for c in cells] == ["Set", "Name", "State", "Reason", "To go on"]
        assert all(display == "block" and right <= 420 for display, right, _ in cells)
        driver.get(server.url + "/sets")
        rows = driver.execute_script(
            "return Array.from(document.querySelectorAll('#sets-table tbody tr')).map(tr => tr.offsetHeight)"
        )
        assert len(rows) == 3
    finally:
        page_size(driver, 0)
    assert [e for e in _console_errors(driver) if "404" not in e["message"]] == []


def test_the_command_to_go_on_stays_on_screen_at_1280(driver: Any, world: World, server: LiveServer) -> None:
    page_size(driver, 1280)
    try:
        driver.get(server.url + "/")
        assert _overflow(driver)[0] <= 1280
        right = driver.execute_script(
            "return document.querySelector('#attention-table td.command').getBoundingClientRect().right"
        )
        assert right <= 1280
        # A name takes one or two lines on /sets, not four or five.
        driver.get(server.url + "/sets")
        heights = driver.execute_script(
            """const a = document.querySelector('#sets-table td.name a');
            return [a.getBoundingClientRect().height, parseFloat(getComputedStyle(a).lineHeight)]"""
        )
        assert heights[0] <= 3.5 * heights[1]  # the hostile name is long: at most three lines
        assert _overflow(driver)[0] <= 1280  # the table scrolls inside its box, if at all
    finally:
        page_size(driver, 0)


def test_the_sets_table_and_a_set_page_update_themselves(driver: Any, world: World, server: LiveServer) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    driver.get(f"{server.url}/sets/{world.running}")
    assert _text(driver, ".facts .state") == "identifiers_copied"
    world.finish_running()
    _wait(driver, lambda d: _text(d, ".facts .state") == "verified")
    _wait(driver, lambda d: "integrate" in _text(d, "#jobs-table"))
    assert driver.current_url == f"{server.url}/sets/{world.running}"  # no reload

    driver.get(server.url + "/sets")
    Select(driver.find_element(By.ID, "filter-state")).select_by_value("attention")
    _wait(driver, lambda d: len(_visible_rows(d)) == 1)
    assert driver.title == "(1 needs you) Sets · hwf dashboard"
    more = world.sim.create_set("More problem titles", world.sim.generate_records(10, profile="problems", seed=5))
    workflow.add_set(world.writer, more)
    with pytest.raises(NeedsAttentionError):
        workflow.advance(world.writer, more)
    # The new set, under the filter chosen here (rows read in one go: the live update replaces them).
    shown = "return Array.from(document.querySelectorAll('#sets-table tbody tr:not([hidden])')).map(tr => tr.innerText)"
    _wait(driver, lambda d: len(d.execute_script(shown)) == 2)
    assert _text(driver, "#set-count") == "2 of 4 sets"
    assert more in driver.execute_script(shown)[1]
    _wait(driver, lambda d: d.title == "(2 need you) Sets · hwf dashboard")
    assert driver.current_url.endswith("/sets?state=attention")
    assert _console_errors(driver) == []


def _png_width(path: Path) -> int:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(data[16:20], "big")


def test_overview_screenshots(driver: Any, tmp_path: Path) -> None:
    """The README's pictures of the overview at 1280 and 420 px, of a migration mid-way (waits, jobs running, a
    set in attention): ``HWF_SCREENSHOTS=docs`` writes them into docs/, otherwise they are made and checked only."""
    target = REPOSITORY / SCREENSHOTS if SCREENSHOTS else tmp_path / "shots"
    demo = demo_world(tmp_path)
    try:
        with LiveServer(create_app(demo.reader, poll_seconds=0.5)) as live:
            for width in (1280, 420):
                page_size(driver, width, 900)
                driver.get(live.url + "/")
                _wait(driver, lambda d: _drawn(d, "chart-verified") and _drawn(d, "chart-states"))
                assert _overflow(driver)[0] <= width
                assert driver.title == "(1 needs you) Overview · hwf dashboard"
                assert "waiting for a job slot" in _text(driver, "main") or "4 waiting" in _text(driver, "main")
                screenshot(driver, target / f"overview-{width}.png")
                assert _png_width(target / f"overview-{width}.png") == width
            assert _console_errors(driver) == []
            driver.get("about:blank")  # before the server goes
    finally:
        page_size(driver, 0)
        demo.close()


def test_the_script_writes_how_long_ago_or_how_soon(driver: Any) -> None:
    minute, hour, day = 60_000, 3_600_000, 86_400_000
    cases = {
        -10_000: "just now",
        500: "just now",
        20_000: "in under a minute",
        -3 * minute: "3 min ago",
        52 * minute: "in 52 min",
        62.8 * minute: "in 1 h 03 min",
        2 * hour: "in 2 h",
        -47 * hour: "47 h ago",
        -3 * day: "3 days ago",
    }
    source = _script_function("pad") + "\n" + _script_function("relative")
    shown = driver.execute_script(source + "\nreturn arguments[0].map(relative);", list(cases))
    assert shown == list(cases.values())


def test_names_sort_naturally_in_the_page(driver: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    demo = demo_world(tmp_path)
    names = "return Array.from(document.querySelectorAll('#sets-table tbody td.name')).map(td => td.innerText)"
    try:
        with LiveServer(create_app(demo.reader, poll_seconds=0.5)) as live:
            driver.get(live.url + "/sets")
            driver.find_element(By.CSS_SELECTOR, 'th[data-key="name"] a').click()
            expected = [f"Handles 2026 rehearsal (batch {n}/10)" for n in range(1, 11)]
            assert driver.execute_script(names) == expected  # batch 2 before batch 10
            driver.find_element(By.CSS_SELECTOR, 'th[data-key="name"] a').click()
            assert driver.execute_script(names) == expected[::-1]
            # At 1280 px a name takes two lines at most, and the whole table fits: nothing to scroll sideways.
            lines = driver.execute_script(
                """return Array.from(document.querySelectorAll('#sets-table td.name a')).map(
                    a => a.getClientRects().length)"""
            )
            assert max(lines) <= 2
            box = "const b = document.querySelector('.scroll'); return [b.scrollWidth, b.clientWidth];"
            width, shown = driver.execute_script(box)
            assert width <= shown
            assert _console_errors(driver) == []
            driver.get("about:blank")
    finally:
        demo.close()


def test_an_empty_database_then_its_first_set(driver: Any, tmp_path: Path) -> None:
    demo = demo_world(tmp_path, sets=0)
    try:
        with LiveServer(create_app(demo.reader, poll_seconds=0.3)) as live:
            driver.get(live.url + "/")
            notice = driver.find_element("id", "no-sets")
            assert notice.is_displayed() and "No set yet: add one with hwf add SET_ID" in notice.text
            assert not driver.find_element("id", "charts").is_displayed()  # no empty chart
            first = demo.sim.create_set("First titles", demo.sim.generate_records(5, profile="clean", seed=1))
            workflow.add_set(demo.writer, first)
            _wait(driver, lambda d: _text(d, '[data-field="sets"]') == "1")
            assert not driver.find_element("id", "no-sets").is_displayed()
            assert driver.find_element("id", "charts").is_displayed()
            assert _console_errors(driver) == []
            driver.get("about:blank")
    finally:
        demo.close()
