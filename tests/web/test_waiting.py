"""What the dashboard says while a migration waits, as the server sends it: every moment as ISO-8601 in a
``<time>`` (the page's script writes it in the reader's zone: tests/web/test_browser.py), the tab's title counting
what needs a person, what happens next, a skipped step drawn and named as skipped, names in natural order, an
empty database saying how to add a set, and the charts in the reader's zone."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from orchestrator.display import iso_z
from orchestrator.service import overview, views
from orchestrator.web import create_app
from orchestrator.web.moments import natural_key, next_of, stamp, time_tag, zone_of
from tests.support.web import World

LOCAL = "http://127.0.0.1:8155"


def _title(page: str) -> str:
    match = re.search(r"<title>([^<]*)</title>", page)
    assert match is not None
    return match.group(1)


def test_moments_go_out_as_iso_in_time_elements(client: TestClient, world: World) -> None:
    now = world.clock()
    page = client.get(f"/sets/{world.running}").text
    # The server's clock for relative times, and "Updated" as a moment the script can write in any zone.
    assert f'data-now="{iso_z(now)}"' in page
    assert f'<time datetime="{iso_z(now)}" data-rel>{stamp(now)}</time>' in page
    times = re.findall(r'<time datetime="([^"]+)"[^>]*>([^<]*)</time>', page)
    assert len(times) >= 5
    for iso, text in times:  # without a script: the same moment, in UTC, named
        assert text == stamp(datetime.fromisoformat(iso)) and text.endswith(" UTC")
    overview_page = client.get("/").text
    assert 'data-field="eta"' in overview_page and "UTC (" not in overview_page  # one zone per line
    assert client.get("/sets").text.count('data-format="short">') >= 3


def test_time_tag() -> None:
    at = datetime(2026, 12, 5, 20, 28, 58, tzinfo=UTC)
    assert str(time_tag(at)) == '<time datetime="2026-12-05T20:28:58Z">2026-12-05 20:28:58 UTC</time>'
    assert str(time_tag("2026-12-05T20:28:58Z", rel=True, format="short")) == (
        '<time datetime="2026-12-05T20:28:58Z" data-rel data-format="short">2026-12-05 20:28:58 UTC</time>'
    )
    assert time_tag(None) == "" and time_tag("") == ""
    with pytest.raises(ValueError, match="unknown time format"):
        time_tag(at, format="long")


def test_the_tab_title_counts_what_needs_a_person(client: TestClient, world: World) -> None:
    for path in ("/", "/sets", f"/sets/{world.verified}", f"/sets/{world.attention}"):
        assert _title(client.get(path).text).startswith("(1 needs you) "), path
    assert _title(client.get("/").text) == "(1 needs you) Overview · hwf dashboard"


def test_nothing_needs_you_no_count(tmp_path: Path) -> None:
    from bench.dashboard import fill_sets

    ctx = fill_sets(tmp_path, 3, records=2)  # no set in attention among the first three
    try:
        with TestClient(create_app(ctx), base_url=LOCAL) as c:
            assert _title(c.get("/").text) == "Overview · hwf dashboard"
            assert _title(c.get("/sets").text) == "Sets · hwf dashboard"
    finally:
        ctx.sessions.kw["bind"].dispose()


def test_a_skipped_step_is_drawn_and_named_as_skipped(client: TestClient, world: World) -> None:
    page = client.get(f"/sets/{world.running}").text
    row = re.search(r'<tr class="skipped"><td>copy_identifiers</td>.*?</tr>', page, re.S)
    assert row is not None and "skipped, not needed" in row.group(0) and "not submitted" in row.group(0)
    assert ">not_needed<" not in page and "not_needed" not in re.sub(r"<[^>]+>", "", page)
    svg = client.get(f"/sets/{world.running}/timeline.svg").text
    assert "skipped: not needed</text>" in svg
    assert "copy_identifiers attempt 1: skipped, not needed (decided" in svg
    # Two runs, one bar: the skipped step has no bar running on to now, only its mark.
    assert svg.count("<rect ") == 1 and svg.count('stroke="#7b8794"') == 1


def test_a_set_page_says_what_it_waits_for(client: TestClient, world: World) -> None:
    page = client.get(f"/sets/{world.running}").text
    assert re.search(r'<dd id="running-now">migrate: job \d+', page)
    assert re.search(r'<dd id="waiting-for">migrate job \S+ instance \d+ is submitted', page)


def test_names_sort_naturally(tmp_path: Path) -> None:
    from bench.dashboard import fill_sets

    assert sorted(["batch 10", "Batch 2", "batch 1"], key=natural_key) == ["batch 1", "Batch 2", "batch 10"]
    ctx = fill_sets(tmp_path, 12, records=2)
    try:
        with TestClient(create_app(ctx), base_url=LOCAL) as c:
            page = c.get("/sets?sort=name").text
            names = re.findall(r">Handles 2026 \(batch (\d+)/12\)</a>", page)
            assert names == [str(n) for n in range(1, 13)]
            backwards = c.get("/sets?sort=name&desc=1").text
            assert re.findall(r">Handles 2026 \(batch (\d+)/12\)</a>", backwards) == [str(n) for n in range(12, 0, -1)]
    finally:
        ctx.sessions.kw["bind"].dispose()


def test_the_waiting_filter(client: TestClient, world: World) -> None:
    page = client.get("/sets?state=waiting").text
    shown = re.findall(r'<tr data-state="\w+"[^>]*?( hidden)?>\s*<td class="name"[^>]*><a href="/sets/(\d+)"', page)
    assert [s for hidden, s in shown if not hidden] == [world.running]
    assert "1 of 3 sets" in page


def test_an_empty_database_says_how_to_add_a_set(client: TestClient, tmp_path: Path) -> None:
    from bench.dashboard import fill_sets

    ctx = fill_sets(tmp_path, 0)
    try:
        with TestClient(create_app(ctx), base_url=LOCAL) as c:
            page = c.get("/").text
            assert '<p class="notice" id="no-sets">No set yet: add one with <code>hwf add SET_ID</code>' in page
            assert '<section class="charts" id="charts" hidden>' in page  # no empty chart
            sets = c.get("/sets").text
            assert "<code>hwf add SET_ID</code>" in sets
            assert '<p class="empty" id="sets-empty" hidden>' in sets  # not "No set matches."
    finally:
        ctx.sessions.kw["bind"].dispose()
    with_sets = client.get("/").text
    assert 'id="no-sets" hidden' in with_sets and '<section class="charts" id="charts">' in with_sets


class _WithNext:
    """A view as the read side may hand it over with ``next`` ({"at", "what"}): the rest as it is."""

    def __init__(self, view: Any, next_value: Any) -> None:
        self._view, self.next = view, next_value

    def __getattr__(self, name: str) -> Any:
        return getattr(self._view, name)

    def as_json(self) -> dict[str, Any]:
        return {**self._view.as_json(), "next": self.next}


def test_next_is_shown_when_the_views_carry_it(
    client: TestClient, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert 'id="next-card"' in client.get("/").text
    at = datetime(2026, 2, 2, 21, 30, tzinfo=UTC)
    real_overview, real_status = overview.overview, views.status
    monkeypatch.setattr(
        overview, "overview", lambda ctx: _WithNext(real_overview(ctx), {"at": iso_z(at), "what": "migrate: 5 of 5"})
    )
    page = client.get("/").text
    assert '<div class="card" id="next-card">' in page
    assert '<span data-field="next_what">migrate: 5 of 5</span>' in page
    assert f'<time datetime="{iso_z(at)}" data-rel>' in page

    def status(ctx: Any, ref: str | None = None, **kw: Any) -> list[Any]:
        return [_WithNext(s, {"at": at, "what": "integrate starts"}) for s in real_status(ctx, ref, **kw)]

    monkeypatch.setattr(views, "status", status)
    page = client.get(f"/sets/{world.running}").text
    assert re.search(r'<dd id="next-step">integrate starts, <time datetime="2026-02-02T21:30:00Z" data-rel>', page)
    assert "Next: integrate starts" in client.get("/sets").text


def test_next_of() -> None:
    at = datetime(2026, 2, 2, 21, 30, tzinfo=UTC)
    assert next_of(object()) is None and next_of({"next": None}) is None
    assert next_of({"next": {"at": "2026-02-02T21:30:00Z", "what": "poll"}}) == next_of(
        _WithNext(object(), {"at": at, "what": "poll"})
    )
    found = next_of({}, {"next": {"at": None, "what": "needs a person: hwf fix 1 --apply"}})
    assert found is not None and found.at is None and found.what.startswith("needs a person")


def test_charts_in_the_readers_zone(client: TestClient, world: World) -> None:
    chicago = client.get(f"/sets/{world.verified}/timeline.svg?tz=America/Chicago").text
    assert " CST</text>" in chicago and " UTC</text>" not in chicago
    assert "migrate attempt 1: COMPLETED_SUCCESS, submitted 2026-02-02 09:" in chicago
    assert " UTC</text>" in client.get(f"/sets/{world.verified}/timeline.svg").text
    assert " UTC</text>" in client.get(f"/sets/{world.verified}/timeline.svg?tz=Not/AZone").text
    assert " CST</text>" in client.get("/charts/verified.svg?tz=America/Chicago").text
    assert zone_of("../../etc/passwd") is UTC and zone_of("") is UTC


def test_a_skipped_step_alone_on_the_timeline() -> None:
    from orchestrator.service.setdetail import JobRun
    from orchestrator.web import charts

    at = datetime(2026, 2, 2, 15, 0, tzinfo=UTC)
    skipped = JobRun("copy_identifiers", 1, "not_needed", None, None, None, None, (), at, None, None, None, "none")
    svg = charts.timeline([skipped], [], datetime(2026, 2, 2, 18, 0, tzinfo=UTC), zone_of("America/Chicago"))
    assert "skipped: not needed</text>" in svg and "<rect " not in svg  # no bar on to now (18:00)
    assert re.findall(r">(2026-02-02 [\d:]+ \w+)</text>", svg) == ["2026-02-02 09:00:00 CST"]  # one moment, one label
