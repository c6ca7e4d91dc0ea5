"""The CLI through typer's CliRunner and the real app: exit codes, one-line errors, JSON shapes."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest

from orchestrator.cli import base as cli
from orchestrator.config import load_config
from orchestrator.simulator import Simulator
from tests.support import API_KEY, FakeClock, WiredRunner, sim_wiring, write_config

runner = WiredRunner()


@pytest.fixture
def wired(tmp_path: Path, sim: Simulator, clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Simulator]:
    """The real CLI, with build_context wired to the in-process simulator and the fake clock."""
    path = write_config(tmp_path, preset="cli")
    monkeypatch.setenv("HWF_ALMA_API_KEY", API_KEY)

    monkeypatch.setattr(runner, "wiring", sim_wiring(sim, clock))
    return path, sim


def run(*args: str) -> Any:
    return runner.invoke(cli.app, list(args))


def test_help_and_no_args() -> None:
    result = run("--help")
    assert result.exit_code == 0 and "advance" in result.output
    assert run().exit_code == 2  # no_args_is_help


def test_app_never_shows_locals() -> None:
    assert cli.app.pretty_exceptions_show_locals is False


def test_graph_prints_mermaid() -> None:
    result = run("graph")
    assert result.exit_code == 0
    assert "created --> identifiers_copied: copy_identifiers" in result.output


def test_full_run_status_history_report(wired: tuple[Path, Simulator]) -> None:
    path, sim = wired
    set_id = sim.create_set("CLI titles", sim.generate_records(25, profile="clean", seed=1))
    assert run("--config", str(path), "add", set_id).exit_code == 0
    result = run("--config", str(path), "advance", set_id)
    assert result.exit_code == 0, result.output
    assert "verified" in result.output
    status = json.loads(run("--config", str(path), "status", "--json").output)
    assert status == [
        {
            **status[0],
            "set": set_id,
            "name": "CLI titles",
            "state": "verified",
            "attention": None,
            "records": 25,
        }
    ]
    events = json.loads(run("--config", str(path), "history", set_id, "--json").output)
    assert all({"at", "kind", "detail"} <= set(e) for e in events)
    assert events[0]["at"].endswith("Z")
    transitions = [(e["from"], e["to"]) for e in events if e["kind"] == "transition"]
    assert transitions == [
        ("created", "identifiers_copied"),
        ("identifiers_copied", "migrated"),
        ("migrated", "integrated"),
        ("integrated", "verified"),
    ]
    submissions = [e for e in events if e["kind"] == "submitted"]
    assert len(submissions) == 2 and all(e["job_id"] and e["instance_id"] for e in submissions)
    report = run("--config", str(path), "report", set_id, "--format", "csv")
    assert report.exit_code == 0
    lines = report.output.strip().splitlines()
    assert lines[0].startswith("MMS ID,Handle URL,dc:title,Preflight,Verdict")
    assert len(lines) == 26 and all(",OK," in line for line in lines[1:])
    again = run("--config", str(path), "advance", set_id)
    assert again.exit_code == 0 and "already verified" in again.output


def test_report_to_file_and_json(wired: tuple[Path, Simulator], tmp_path: Path) -> None:
    path, sim = wired
    set_id = sim.create_set("R", sim.generate_records(5, profile="clean", seed=2))
    run("--config", str(path), "add", set_id)
    out_file = tmp_path / "report.json"
    result = run("--config", str(path), "report", set_id, "--format", "json", "--output", str(out_file))
    assert result.exit_code == 0
    rows = json.loads(out_file.read_text())
    assert len(rows) == 5 and {"mms_id", "handle", "verdict", "resolved_url", "expected_url"} <= set(rows[0])
    assert run("--config", str(path), "report", set_id, "--format", "xlsx").exit_code == 2


def test_missing_config_file(tmp_path: Path) -> None:
    result = run("--config", str(tmp_path / "none.toml"), "status")
    assert result.exit_code == 2
    assert "no configuration file" in result.stderr and "none.toml" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_malformed_config_names_the_key(tmp_path: Path) -> None:
    path = write_config(tmp_path, preset="cli", timeout_seconds="soon")
    result = run("--config", str(path), "status")
    assert result.exit_code == 2
    assert "key alma.timeout_seconds" in result.stderr


def test_missing_api_key(tmp_path: Path) -> None:
    path = write_config(tmp_path, preset="cli")
    result = run("--config", str(path), "add", "123")
    assert result.exit_code == 2
    assert "HWF_ALMA_API_KEY" in result.stderr
    database = tmp_path / "hwf.db"
    if database.exists():  # the schema may be there (the database was opened); no set was written
        with sqlite3.connect(database) as conn:
            assert conn.execute("SELECT count(*) FROM sets").fetchone() == (0,)


def test_non_numeric_set_id(wired: tuple[Path, Simulator]) -> None:
    path, _ = wired
    result = run("--config", str(path), "add", "12x")
    assert result.exit_code == 2
    assert "not an Alma set id" in result.stderr


def test_unknown_alma_set(wired: tuple[Path, Simulator]) -> None:
    path, _ = wired
    result = run("--config", str(path), "add", "99999999")
    assert result.exit_code == 2, result.output
    assert "Alma has no set 99999999" in result.stderr
    assert json.loads(run("--config", str(path), "status", "--json").output) == []


def test_unknown_registered_set(wired: tuple[Path, Simulator]) -> None:
    path, _ = wired
    result = run("--config", str(path), "advance", "nope")
    assert result.exit_code == 2 and "unknown set 'nope'" in result.stderr


def test_alma_unreachable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_config(tmp_path, preset="cli", timeout_seconds=2, max_retries=1)
    text = path.read_text().replace("http://alma.test", "http://127.0.0.1:9")
    path.write_text(text)
    monkeypatch.setenv("HWF_ALMA_API_KEY", API_KEY)
    result = run("--config", str(path), "add", "123")
    assert result.exit_code == 1
    assert "could not reach http://127.0.0.1:9" in result.stderr
    assert API_KEY not in result.output + result.stderr


def _reply(status: int, body: str, content_type: str) -> Any:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, text=body, headers={"Content-Type": content_type})

    return handler


@pytest.mark.parametrize(
    ("status", "body", "ctype", "exit_code", "needle"),
    [
        (
            400,
            '{"errorsExist":true,"errorList":{"error":[{"errorCode":"UNAUTHORIZED","errorMessage":"API-key not '
            'defined or not configured to allow this API.","trackingId":"E01-1"}]},"result":null}',
            "application/json",
            1,
            "UNAUTHORIZED",
        ),
        (200, "<set><id>1</id><name>unclosed", "application/xml", 1, "not well-formed"),
        (200, '{"id": "1", "name": ', "application/json", 1, "bad reply"),
    ],
)
def test_bad_alma_replies(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    clock: FakeClock,
    status: int,
    body: str,
    ctype: str,
    exit_code: int,
    needle: str,
) -> None:
    path = write_config(tmp_path, preset="cli")
    monkeypatch.setenv("HWF_ALMA_API_KEY", API_KEY)

    class Broken:
        handle = staticmethod(_reply(status, body, ctype))

    monkeypatch.setattr(runner, "wiring", sim_wiring(Broken, clock))
    result = run("--config", str(path), "add", "123")
    assert result.exit_code == exit_code, result.output
    assert needle in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert json.loads(run("--config", str(path), "status", "--json").output) == []


def test_failed_job_sets_attention_naming_instance(wired: tuple[Path, Simulator]) -> None:
    path, sim = wired
    ids = sim.generate_records(8, profile="demo", seed=5)
    marc = [m for m, r in sim.records.items() if r.record_format.lower().startswith("marc")]
    if not marc:
        marc = sim.generate_records(40, profile="problems", seed=9)
        marc = [m for m in marc if sim.records[m].record_format.lower().startswith("marc")][:1]
    set_id = sim.create_set("With MARC", [*ids, *marc[:1]])
    run("--config", str(path), "add", set_id)
    result = run("--config", str(path), "exclude", set_id, marc[0], "--reason", "test", "--keep-in-alma-set")
    assert result.exit_code == 0, result.output
    result = run("--config", str(path), "advance", set_id)
    assert result.exit_code == 3, result.output
    runs = sim.runs_for(set_id)
    assert len(runs) == 1
    assert runs[0].instance_id in result.stderr and "COMPLETED_FAILED" in result.stderr
    status = json.loads(run("--config", str(path), "status", set_id, "--json").output)[0]
    assert status["state"] == "created" and runs[0].instance_id in status["attention"]


def test_database_that_is_not_a_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_config(tmp_path, preset="cli")
    (tmp_path / "hwf.db").write_bytes(b"this is not sqlite at all" * 100)
    result = run("--config", str(path), "status")
    assert result.exit_code == 1
    assert "hwf.db" in result.stderr and "not a database" in result.stderr


def test_resume_without_all_resumes_every_set(wired: tuple[Path, Simulator]) -> None:
    path, sim = wired
    set_id = sim.create_set("Implicit all", sim.generate_records(5, profile="clean", seed=2))
    assert run("--config", str(path), "add", set_id).exit_code == 0
    result = run("--config", str(path), "resume")
    assert result.exit_code == 0, result.output
    assert f"Set {set_id} (Implicit all): verified" in result.output


def test_retry_on_set_that_needs_nothing(wired: tuple[Path, Simulator]) -> None:
    path, sim = wired
    set_id = sim.create_set("Fine", sim.generate_records(3, profile="clean", seed=4))
    run("--config", str(path), "add", set_id)
    result = run("--config", str(path), "retry", set_id, "--reason", "just because")
    assert result.exit_code == 2 and "needs nothing" in result.stderr


def test_loaded_example_config_matches_interface(tmp_path: Path) -> None:
    config = load_config(Path(__file__).parents[2] / "config.example.toml", environ={})
    assert config.handles.settle_minutes == 15
    assert config.alma.poll_interval_seconds == 15


def _freeze_count_after_status(tmp_path: Path, *, as_script: bool) -> int:
    """``hwf status`` in a fresh interpreter, called the way the console script calls it (``main``) or the way a
    test or an embedder does (``app()``); the number of objects frozen out of the collector's sight after it."""
    import subprocess
    import sys

    config = write_config(tmp_path / "hwf.toml", preset="minimal")
    entry = "main()" if as_script else "app()"
    code = (
        "import gc, sys\n"
        "from orchestrator.cli import app, main\n"
        f"sys.argv = ['hwf', '--config', {str(config)!r}, 'status']\n"
        f"try:\n    {entry}\nexcept SystemExit as exc:\n    assert not exc.code, exc.code\n"
        "print(gc.get_freeze_count())\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    return int(done.stdout.split()[-1])


def test_the_collector_is_tuned_only_when_the_script_owns_the_process(tmp_path: Path) -> None:
    assert _freeze_count_after_status(tmp_path, as_script=True) > 10_000  # the imports' objects
    assert _freeze_count_after_status(tmp_path, as_script=False) == 0  # app() in a test or an embedder: untouched
