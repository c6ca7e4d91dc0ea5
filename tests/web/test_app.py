"""The dashboard over HTTP (Starlette's TestClient): every route, the token and Host rules, the security
headers, escaping of what Alma sends, CSV injection, read-only-ness, and ``hwf serve``'s bad input."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError, OperationalError
from starlette.testclient import TestClient
from typer.testing import CliRunner

from orchestrator.cli import app as cli_app
from orchestrator.errors import ServeError
from orchestrator.service.report import csv_safe as spreadsheet_safe
from orchestrator.store.models import AlmaSet, Record
from orchestrator.web import TOKEN_COOKIE, create_app
from orchestrator.web.text import clean
from tests.support import API_KEY, write_config
from tests.support.web import FORMULA_TITLE, HOSTILE_NAME, HOSTILE_TITLE, World, build_world

LOCAL = "http://127.0.0.1:8155"
TOKEN = "s3cret-token-for-the-tests-0123"


def _pages(world: World) -> list[str]:
    """Every GET route, with every set, and the error cases."""
    pages = ["/", "/sets", "/sets?state=verified&q=titles&sort=records&desc=1", "/api/overview", "/api/sets"]
    pages += ["/charts/verified.svg", "/charts/states.svg", "/static/hwf.css", "/static/hwf.js"]
    for set_id in (world.verified, world.attention, world.running):
        pages += [
            f"/sets/{set_id}",
            f"/api/sets/{set_id}",
            f"/sets/{set_id}/verdicts.svg",
            f"/sets/{set_id}/timeline.svg",
        ]
        pages += [f"/sets/{set_id}/report.csv", f"/sets/{set_id}/report.csv?problems=1", f"/sets/{set_id}/evidence.zip"]
    return pages + ["/sets/424242", "/api/sets/424242", "/no/such/page", "/sets/424242/report.csv"]


# ---------------------------------------------------------------------------------------------
# the pages


def test_overview_page(client: TestClient, world: World) -> None:
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    page = r.text
    assert "The migration at a glance" in page
    assert 'data-field="records_verified">39</span> of <span data-field="records">90</span>' in page
    assert f'<a href="/sets/{world.attention}">{world.attention}</a>' in page
    assert f"<code>hwf exclude {world.attention} " in page  # the reason's one command to go on
    assert f'<a href="/sets/{world.running}">{world.running}</a>' in page and "<td>migrate</td>" in page
    assert 'src="/charts/verified.svg"' in page and 'src="/charts/states.svg"' in page
    assert 'Oldest full verification: <span data-field="oldest_check">' in page and f"(set {world.verified})" in page
    assert "at most <strong>3</strong> API jobs at once" in page and "<strong>5</strong> runs of one job" in page
    assert 'data-poll-ms="5000"' in page
    assert 'data-charted="90|1|39|1,1,0,0,1"' in page  # the script redraws the charts when this changes
    assert '<script src="/static/hwf.js" defer></script>' in page
    assert len(re.findall(r"<script", page)) == 1  # no inline script


def test_sets_page_lists_filters_and_sorts(client: TestClient, world: World) -> None:
    page = client.get("/sets").text
    assert "3 of 3 sets" in page
    for set_id in (world.verified, world.attention, world.running):
        assert f'<a href="/sets/{set_id}">' in page
    assert "Problem titles" in page and "cannot go through the workflow" in page
    checked = re.findall(r'<td data-label="Last fully checked" class="when" data-v="([^"]*)">', page)
    assert len(checked) == 3 and checked[0] and checked[1:] == ["", ""]  # last fully checked: the verified set
    filtered = client.get("/sets?state=verified").text
    assert "1 of 3 sets" in filtered
    rows = re.findall(r"<tr data-state=\"(\w+)\"[^>]*?( hidden)?>", filtered)
    assert sorted(rows) == [("created", " hidden"), ("identifiers_copied", " hidden"), ("verified", "")]
    assert "1 of 3 sets" in client.get("/sets?q=problem").text
    assert "1 of 3 sets" in client.get("/sets?state=attention").text
    by_records = client.get("/sets?sort=records").text
    order = re.findall(r'<td data-label="Records" class="n" data-n="(\d+)">', by_records)
    assert order == ["20", "30", "40"]
    descending = client.get("/sets?sort=records&desc=1").text
    assert re.findall(r'<td data-label="Records" class="n" data-n="(\d+)">', descending) == ["40", "30", "20"]
    assert 'aria-sort="descending"' in descending


def test_set_page_of_the_verified_set(client: TestClient, world: World) -> None:
    page = client.get(f"/sets/{world.verified}").text
    for milestone in ("identifiers_copied", "migrated", "integrated", "verified"):
        assert f"→ <strong>{milestone}</strong>" in page
    jobs = world.sim.runs_for(world.verified)
    assert [j.kind for j in jobs] == ["copy", "migration", "integration"]
    for job in jobs:
        assert f"<td>{job.instance_id}</td>" in page
    assert "COMPLETED_SUCCESS" in page
    assert f'src="/sets/{world.verified}/verdicts.svg"' in page
    assert '<tr><td>OK</td><td class="n">39</td></tr>' in page
    assert '<tr><td>EXCLUDED</td><td class="n">1</td></tr>' in page
    assert "withdrawn title" in page and "librarian" in page  # the exclusion, and who did it
    assert "<td>fix</td>" in page and "Bib backups" in page  # the repair and its backups
    assert f'href="/sets/{world.verified}/report.csv"' in page
    assert f'href="/sets/{world.verified}/evidence.zip"' in page
    assert "Last fully checked" in page and "not yet" not in page


def test_set_page_of_the_attention_set(client: TestClient, world: World) -> None:
    page = client.get(f"/sets/{world.attention}").text
    assert "Needs attention (records)" in page
    assert f"<code>hwf exclude {world.attention} " in page  # the reason's one command to go on
    classes = client.get(f"/api/sets/{world.attention}").json()["preflight_classes"]
    problems = sum(n for cls, n in classes.items() if cls not in ("READY", "NEEDS_COPY"))
    assert problems >= 5 and f"Problem records ({problems})" in page
    for cls in ("NOT_DC", "NO_HANDLE", "BAD_HANDLE", "DUPLICATE_HANDLE", "BAD_XML"):
        assert f"<td>{cls}</td>" in page
    assert f"<td>{world.hostile_mms}</td>" in page
    assert "https://grinnell.primo.exlibrisgroup.com/discovery/fulldisplay/alma" in page
    assert "No Alma job submitted yet." in page


def test_set_page_of_the_running_set(client: TestClient, world: World) -> None:
    page = client.get(f"/sets/{world.running}").text
    [run] = world.sim.runs_for(world.running)
    assert f"<td>{run.instance_id}</td>" in page and "<td>migrate</td>" in page
    assert "Waiting for" in page


def test_set_by_local_name(client: TestClient) -> None:
    assert client.get("/sets/Problem titles").status_code == 200


def test_unknown_set_is_a_404_page(client: TestClient) -> None:
    r = client.get("/sets/424242")
    assert r.status_code == 404 and r.headers["content-type"].startswith("text/html")
    assert "<h1>Not found</h1>" in r.text and "unknown set &#39;424242&#39;" in r.text
    assert "Traceback" not in r.text
    api = client.get("/api/sets/424242")
    assert api.status_code == 404 and "unknown set" in api.json()["error"]
    assert client.get("/sets/424242/verdicts.svg").status_code == 404
    assert client.get("/sets/424242/timeline.svg").status_code == 404
    assert client.get("/sets/424242/report.csv").status_code == 404
    assert client.get("/nothing/here").status_code == 404


def test_only_get(client: TestClient, world: World) -> None:
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        for path in ("/", "/api/overview", f"/api/sets/{world.verified}", f"/sets/{world.verified}"):
            assert client.request(method, path).status_code == 405, (method, path)


# ---------------------------------------------------------------------------------------------
# JSON and charts


def test_api_overview_has_the_interface_fields(client: TestClient, world: World) -> None:
    data = client.get("/api/overview").json()
    for key in ("sets_by_state", "records", "records_verified", "attention", "running", "eta", "last_checked"):
        assert key in data
    assert {"set", "name", "reason"} <= set(data["attention"][0])
    assert {"set", "step", "instance_id", "status", "progress"} <= set(data["running"][0])
    assert data["records_verified"] == 39


def test_api_sets_and_one_set(client: TestClient, world: World) -> None:
    sets = client.get("/api/sets").json()
    assert [s["set"] for s in sets] == [world.verified, world.attention, world.running]
    assert sets[0]["name"] == HOSTILE_NAME  # JSON carries the exact value
    assert sets[0]["verified"] == 39 and sets[0]["last_checked"]
    one = client.get(f"/api/sets/{world.attention}").json()
    # The one command to go on is the one the reason names (it names every record that stops the set).
    assert one["state"] == "created" and one["attention_command"].startswith(f"hwf exclude {world.attention} ")
    assert f"To go on: `{one['attention_command']}`" in one["attention"]
    blocking = sum(n for cls, n in one["preflight_classes"].items() if cls not in ("READY", "NEEDS_COPY"))
    assert one["problems_total"] == blocking == len(one["problems"])
    assert one["preflight_classes"]["NOT_DC"] >= 1
    verified = client.get(f"/api/sets/{world.verified}").json()
    assert [m["to"] for m in verified["milestones"]] == ["identifiers_copied", "migrated", "integrated", "verified"]
    assert all(j["instance_id"] and j["duration_seconds"] is not None for j in verified["jobs"])
    assert verified["verdicts"] == {"OK": 39, "EXCLUDED": 1}


def test_charts_are_svg_with_text_alternatives(client: TestClient, world: World) -> None:
    charts = ("/charts/verified.svg", "/charts/states.svg", f"/sets/{world.verified}/verdicts.svg")
    for path in (*charts, f"/sets/{world.verified}/timeline.svg", f"/sets/{world.attention}/timeline.svg"):
        r = client.get(path)
        assert r.status_code == 200 and r.headers["content-type"].startswith("image/svg+xml")
        assert re.search(r"<title id=\"t\">[^<]+</title>", r.text) and re.search(r"<desc id=\"d\">[^<]+</desc>", r.text)
        assert "<script" not in r.text and "style=" not in r.text
    assert "39 of 89 records verified" in client.get("/charts/verified.svg").text
    assert "OK: 39, EXCLUDED: 1" in client.get(f"/sets/{world.verified}/verdicts.svg").text
    timeline = client.get(f"/sets/{world.verified}/timeline.svg").text
    assert timeline.count("<rect ") == 3 and "migrate attempt 1: COMPLETED_SUCCESS" in timeline
    assert ">verified</text>" in timeline
    assert "no job submitted yet" in client.get(f"/sets/{world.attention}/timeline.svg").text


def test_report_csv_is_the_report_and_spreadsheet_safe(client: TestClient, world: World) -> None:
    r = client.get(f"/sets/{world.verified}/report.csv")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert r.headers["content-disposition"] == f'attachment; filename="hwf-report-{world.verified}.csv"'
    rows = list(csv.reader(io.StringIO(r.text)))
    assert rows[0][:3] == ["MMS ID", "Handle URL", "dc:title"]
    assert len(rows) == 41
    titles = [row[2] for row in rows[1:]]
    assert "'" + FORMULA_TITLE in titles and FORMULA_TITLE not in titles
    assert not any(cell.startswith(("=", "+", "-", "@")) for row in rows for cell in row)
    problems = list(csv.reader(io.StringIO(client.get(f"/sets/{world.verified}/report.csv?problems=1").text)))
    assert len(problems) == 2 and problems[1][-1] == "TRUE"  # the one excluded record


def test_commands_in_reasons_are_code_and_escaped(client: TestClient, world: World) -> None:
    from orchestrator.web.routes import code_spans

    page = client.get("/").text
    assert f"<code>hwf exclude {world.attention} MMS... --reason TEXT</code>" in page
    assert str(code_spans("run `hwf <b>` then <i>")) == "run <code>hwf &lt;b&gt;</code> then &lt;i&gt;"
    assert str(code_spans("one ` only <x>\x1b")) == "one ` only &lt;x&gt;\u241b"


def test_spreadsheet_safe() -> None:
    for cell in ("=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx"):
        assert spreadsheet_safe(cell) == "'" + cell
    assert spreadsheet_safe("Grinnell") == "Grinnell" and spreadsheet_safe("") == ""


# ---------------------------------------------------------------------------------------------
# escaping and headers


def test_values_from_alma_are_escaped_and_controls_shown(client: TestClient, world: World) -> None:
    pages = {p: client.get(p).text for p in ("/", "/sets", f"/sets/{world.verified}", f"/sets/{world.attention}")}
    for path, page in pages.items():
        assert "<script>alert" not in page, path
        assert "\x1b" not in page, path
    assert "Verified &lt;script&gt;alert(&#39;set&#39;)&lt;/script&gt; titles \u241b[31m" in pages["/sets"]
    assert (
        "&lt;script&gt;alert(&#39;title&#39;)&lt;/script&gt; An \u241b[2J escaped title"
        in pages[f"/sets/{world.attention}"]
    )
    assert clean("a\x00b\x1bc\x7fd\x9be\u202ef\tg\nh") == "a\u2400b\u241bc\u2421d\ufffde\ufffdf\tg\nh"
    assert HOSTILE_TITLE  # planted by the world


def test_security_headers_on_every_response(client: TestClient, world: World) -> None:
    for path in ("/", "/api/overview", "/static/hwf.js", "/charts/states.svg", "/sets/424242"):
        headers = client.get(path).headers
        csp = headers["content-security-policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "no-referrer"
        assert headers["x-frame-options"] == "DENY"


def test_no_secret_in_any_page(client: TestClient, world: World) -> None:

    for path in _pages(world):
        assert API_KEY not in client.get(path).text, path


# ---------------------------------------------------------------------------------------------
# the token and Host rules


def test_loopback_answers_loopback_names_only(world: World) -> None:
    app = create_app(world.reader)
    for base in ("http://127.0.0.1:8155", "http://localhost:8155", "http://[::1]:8155"):
        assert TestClient(app, base_url=base).get("/").status_code == 200, base
    rebound = TestClient(app, base_url="http://attacker.example:8155").get("/")
    assert rebound.status_code == 400
    assert rebound.headers["x-content-type-options"] == "nosniff"


LOOPBACK_HOSTS = ["127.0.0.1", "localhost", "LocalHost", "[::1]", "::1", "127.0.0.2", "127.255.255.254"]
OTHER_HOSTS = [
    "attacker.example",
    "localhost.attacker.example",
    "127.0.0.1.attacker.example",
    "app.localhost",  # a name is only as local as what resolves it
    "localhost.localdomain",
    "0.0.0.0",
    "10.0.0.1",
    "2130706433",
    "",
]


@pytest.mark.parametrize("host", LOOPBACK_HOSTS + OTHER_HOSTS)
def test_one_loopback_rule(host: str) -> None:
    """config.is_loopback_host decides for the config (plain http allowed), the transport (never proxied),
    `hwf serve --host` (no token needed) and the dashboard's Host check: the same answer everywhere."""
    from orchestrator.config import is_loopback, is_loopback_host

    expected = host in LOOPBACK_HOSTS
    assert is_loopback_host(host) is expected
    if host:
        bracketed = f"[{host}]" if ":" in host and not host.startswith("[") else host
        assert is_loopback(f"http://{bracketed}:8155/api") is expected


@pytest.mark.parametrize("host", LOOPBACK_HOSTS + OTHER_HOSTS)
def test_loopback_dashboard_checks_the_host_by_the_one_rule(world: World, host: str) -> None:
    """DNS rebinding: a page elsewhere that points its own name at 127.0.0.1 sends that name as the Host, and
    gets nothing; only the name localhost and loopback addresses, which no DNS answer can change, get through."""
    client = TestClient(create_app(world.reader), base_url="http://127.0.0.1:8155")
    with_port = f"[{host}]:8155" if host.count(":") > 1 and not host.startswith("[") else f"{host}:8155"
    for header in (host, with_port):
        status = client.get("/api/overview", headers={"host": header}).status_code
        assert status == (200 if host in LOOPBACK_HOSTS else 400), header


def test_token_rule(world: World) -> None:
    app = create_app(world.reader, token=TOKEN, loopback=False)
    anonymous = TestClient(app, base_url="http://dashboard.library.example:8155")
    for path in ("/", "/sets", f"/sets/{world.verified}", "/static/hwf.js", "/charts/states.svg"):
        r = anonymous.get(path)
        assert r.status_code == 401, path
        assert r.headers["www-authenticate"] == 'Bearer realm="hwf"'
        assert "Access token needed" in r.text and TOKEN not in r.text
    api = anonymous.get("/api/overview")
    assert api.status_code == 401 and "token" in api.json()["error"]
    assert anonymous.get("/api/overview", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert anonymous.get("/?token=wrong").status_code == 401
    assert anonymous.get("/api/overview", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    anonymous.cookies.set(TOKEN_COOKIE, "wrong")
    assert anonymous.get("/").status_code == 401

    browser = TestClient(app, base_url="http://dashboard.library.example:8155", follow_redirects=False)
    first = browser.get(f"/sets?token={TOKEN}&state=verified")
    assert first.status_code == 303
    assert first.headers["location"] == "/sets?state=verified"  # the token leaves the address bar
    cookie = first.headers["set-cookie"]
    assert cookie.startswith(f"{TOKEN_COOKIE}={TOKEN};") and "HttpOnly" in cookie and "SameSite=strict" in cookie
    after = browser.get("/sets?state=verified")
    assert after.status_code == 200 and "1 of 3 sets" in after.text


@pytest.mark.parametrize("path", ["//evil.example/x", "/\\evil.example/x", "///evil.example/x", "/\\/evil.example/x"])
def test_the_token_redirect_stays_on_this_site(world: World, path: str) -> None:
    app = create_app(world.reader, token=TOKEN, loopback=False)
    browser = TestClient(app, base_url="http://dashboard.library.example:8155", follow_redirects=False)
    first = browser.get(f"http://dashboard.library.example:8155{path}?token={TOKEN}&q=1")
    assert first.status_code == 303
    location = first.headers["location"]
    assert location.startswith("/") and location[1:2] not in ("/", "\\"), location
    assert location.endswith("evil.example/x?q=1"), location


def test_token_on_loopback_when_given(world: World) -> None:
    c = TestClient(create_app(world.reader, token=TOKEN), base_url=LOCAL)
    assert c.get("/").status_code == 401
    assert c.get("/", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200


# ---------------------------------------------------------------------------------------------
# read-only


def _digest(db: Path) -> str:
    h = hashlib.sha256()
    for path in (db, db.with_name(db.name + "-wal")):
        if path.exists():
            h.update(path.read_bytes())
    return h.hexdigest()


def _dump(db: Path) -> list[str]:
    import sqlite3

    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        return list(conn.iterdump())


def test_a_crawl_of_every_page_leaves_the_database_as_it_was(tmp_path: Path) -> None:
    world = build_world(tmp_path)
    try:
        # The worker is gone and every connection closed, so the WAL is checkpointed: the file is all there is.
        world.writer.sessions.kw["bind"].dispose()
        world.reader.sessions.kw["bind"].dispose()
        before, rows_before = _digest(world.db), _dump(world.db)
        with TestClient(create_app(world.reader), base_url=LOCAL) as c:
            statuses = {path: c.get(path).status_code for path in _pages(world)}
            for method in ("POST", "PUT", "DELETE"):
                c.request(method, "/api/overview")
        assert [p for p, s in statuses.items() if s >= 500] == []
        assert sum(1 for s in statuses.values() if s == 200) == len(statuses) - 4
        world.reader.sessions.kw["bind"].dispose()
        assert _dump(world.db) == rows_before
        assert _digest(world.db) == before
    finally:
        world.close()


def test_the_dashboards_sessions_cannot_write(world: World) -> None:
    with world.reader.sessions() as session:
        row = session.scalars(select(AlmaSet)).first()
        assert row is not None
        row.name += " (changed)"
        with pytest.raises(OperationalError, match="readonly"):
            session.flush()
        session.rollback()
        with pytest.raises(OperationalError, match="readonly"):
            session.execute(text("DELETE FROM records"))
    with world.reader.sessions() as session:
        assert session.scalar(select(Record.id).limit(1)) is not None
    with pytest.raises(ServeError, match="never calls Alma"):
        world.reader.alma_factory()


def test_a_database_that_breaks_meanwhile_is_a_503_page(tmp_path: Path) -> None:
    import sqlite3

    world = build_world(tmp_path)
    try:
        world.writer.sessions.kw["bind"].dispose()
        world.reader.sessions.kw["bind"].dispose()
        with contextlib.closing(sqlite3.connect(world.db)) as conn:
            conn.execute("DROP TABLE events")
        c = TestClient(create_app(world.reader), base_url=LOCAL)
        r = c.get(f"/sets/{world.verified}")
        assert r.status_code == 503 and "is missing a table (no such table: events)" in r.text
        assert "Traceback" not in r.text
        assert c.get(f"/api/sets/{world.verified}").json()["status"] == 503
    finally:
        world.close()


def test_read_only_on_sqlite_and_postgresql(db_url: str, tmp_path: Path) -> None:
    world = build_world(tmp_path, url=db_url)
    try:
        c = TestClient(create_app(world.reader), base_url=LOCAL)
        assert c.get("/api/overview").json()["records_verified"] == 39
        assert c.get(f"/sets/{world.attention}").status_code == 200
        assert "3 of 3 sets" in c.get("/sets").text
        assert [r["verified"] for r in c.get("/api/sets").json()] == [39, 0, 0]
        with world.reader.sessions() as session:
            with pytest.raises(DBAPIError, match="(?i)read.?only"):
                session.execute(text("UPDATE sets SET name = 'changed'"))
    finally:
        world.close()


# ---------------------------------------------------------------------------------------------
# 500 sets


def test_500_sets_render_whole(tmp_path: Path) -> None:
    from bench.dashboard import fill_sets

    ctx = fill_sets(tmp_path, 500)
    c = TestClient(create_app(ctx), base_url=LOCAL)
    c.get("/sets")  # templates compiled, connections open
    page = c.get("/sets")
    assert page.status_code == 200 and "500 of 500 sets" in page.text
    assert page.text.count("<tr data-state=") == 500  # how fast: bench.dashboard (README's performance table)
    ctx.sessions.kw["bind"].dispose()


# ---------------------------------------------------------------------------------------------
# hwf serve: the command


def _config(world: World, tmp_path: Path) -> Path:
    return write_config(tmp_path / "serve.toml", db=f"sqlite:///{world.db}", preset="minimal")


def test_serve_refuses_a_port_in_use(world: World, tmp_path: Path) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    try:
        result = CliRunner().invoke(cli_app, ["--config", str(_config(world, tmp_path)), "serve", "--port", str(port)])
    finally:
        taken.close()
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        f"Error: port {port} on 127.0.0.1 is in use (another hwf serve?): choose another with --port"
    ]


def test_serve_needs_an_existing_database(tmp_path: Path) -> None:
    missing = tmp_path / "missing.db"
    config = write_config(tmp_path / "hwf.toml", db=f"sqlite:///{missing}", preset="minimal")
    result = CliRunner().invoke(cli_app, ["--config", str(config), "serve"])
    assert result.exit_code == 1
    [line] = result.stderr.strip().splitlines()
    assert "does not exist: run `hwf db upgrade`" in line
    assert not missing.exists()  # serve creates nothing


def test_serve_needs_the_current_schema(tmp_path: Path) -> None:
    import sqlite3

    old = tmp_path / "old.db"
    with sqlite3.connect(old) as conn:
        conn.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)")
        conn.execute("INSERT INTO alembic_version VALUES ('0000')")
    config = write_config(tmp_path / "hwf.toml", db=f"sqlite:///{old}", preset="minimal")
    result = CliRunner().invoke(cli_app, ["--config", str(config), "serve"])
    assert result.exit_code == 1
    [line] = result.stderr.strip().splitlines()
    assert "is at schema 0000" in line and "run `hwf db upgrade`" in line
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    config = write_config(tmp_path / "hwf.toml", db=f"sqlite:///{empty}", preset="minimal")
    result = CliRunner().invoke(cli_app, ["--config", str(config), "serve"])
    assert result.exit_code == 1 and "has no hwf schema" in result.stderr and "hwf db upgrade" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--port", "70000"], "--port must be between 0 and 65535"),
        (["--token", "short"], "--token must be at least 16 characters"),
        (["--refresh", "0"], "--refresh must be a positive number"),
        (["--refresh", "inf"], "--refresh must be a positive number of seconds up to 86400, not inf"),
        (["--refresh", "nan"], "--refresh must be a positive number of seconds up to 86400, not nan"),
        (["--refresh", "1e9"], "--refresh must be a positive number of seconds up to 86400"),
    ],
)
def test_serve_bad_options(world: World, tmp_path: Path, args: list[str], message: str) -> None:
    result = CliRunner().invoke(cli_app, ["--config", str(_config(world, tmp_path)), "serve", *args])
    assert result.exit_code == 2 and message in result.stderr


def test_serve_open_and_generated_token(world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import webbrowser

    import orchestrator.web

    served: list[Any] = []
    opened: list[str] = []
    done = threading.Event()

    def fake_serve(app: Any, sock: socket.socket) -> None:
        served.append((app, sock.getsockname()))

    def fake_open(url: str) -> bool:
        opened.append(url)
        done.set()
        return True

    monkeypatch.setattr(orchestrator.web, "serve", fake_serve)
    monkeypatch.setattr(webbrowser, "open", fake_open)
    args = ["--config", str(_config(world, tmp_path)), "serve", "--host", "0.0.0.0", "--port", "0", "--open"]
    result = CliRunner().invoke(cli_app, args)
    assert result.exit_code == 0, result.output
    assert done.wait(5)
    [(_app, (host, port))] = served
    assert host == "0.0.0.0" and port > 0
    token = result.stdout.strip().split("?token=")[1]
    assert len(token) >= 24 and f"  {token}" in result.stderr and "shown only now" in result.stderr
    assert opened == [result.stdout.strip()]


def test_serve_for_real_on_all_interfaces(world: World, tmp_path: Path) -> None:
    """The real command in its own process: a token is generated, required, and the server stops on SIGTERM."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "--config", str(_config(world, tmp_path)), "serve", "--host", "0.0.0.0"]
        + ["--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        port = int(url.split(":")[2].split("/")[0])
        token = url.split("?token=")[1]
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 15
        while True:
            try:
                anonymous = httpx.get(f"{base}/api/overview", timeout=2)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "hwf serve did not answer"
                time.sleep(0.1)
        assert anonymous.status_code == 401
        ok = httpx.get(f"{base}/api/overview", headers={"Authorization": f"Bearer {token}"}, timeout=5)
        assert ok.status_code == 200 and ok.json()["records_verified"] == 39
    finally:
        proc.terminate()
        _, log = proc.communicate(timeout=15)
    assert proc.returncode == 0
    assert token in log and log.count(token) == 2  # printed once as itself, once in the address to open
    assert "GET /api/overview" not in log  # no access log: a first visit's address holds the token


def test_evidence_bundle_download_is_the_bundle_hwf_evidence_writes(client: TestClient, world: World) -> None:
    import io
    import zipfile

    r = client.get(f"/sets/{world.verified}/evidence.zip")
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    assert "attachment" in r.headers["content-disposition"]
    with zipfile.ZipFile(io.BytesIO(r.content)) as bundle:
        names = set(bundle.namelist())
        assert {"README.txt", "report.csv", "history.json", "config.json", "manifest.json"} <= names
        assert API_KEY.encode() not in b"".join(bundle.read(n) for n in names)
    assert client.get("/sets/424242/evidence.zip").status_code == 404
