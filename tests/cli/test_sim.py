"""The simulator commands (orchestrator.cli.sim): ``hwf sim serve`` and ``hwf demo`` refuse impossible values in one
line, exit 2 (issue 13 item 13)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from orchestrator.cli import app

runner = CliRunner()


@pytest.mark.parametrize("port", ["99999", "-1"])
def test_sim_serve_with_an_impossible_port(port: str) -> None:
    result = runner.invoke(app, ["sim", "serve", "--port", port])
    assert result.exit_code == 2
    assert result.stderr.strip() == f"Error: --port must be between 0 and 65535 (0 = any free port), not {port}"


@pytest.mark.parametrize("records", ["-5", "0"])
def test_demo_with_no_records_is_refused(records: str, tmp_path: Path) -> None:
    result = runner.invoke(app, ["demo", "--records", records, "--dir", str(tmp_path / "demo")])
    assert result.exit_code == 2
    assert result.stderr.strip() == f"Error: --records must be between 1 and 100000, not {records}"
    assert not (tmp_path / "demo").exists()


def test_demo_shows_the_trap_a_line_per_record_as_hwf_fix_does(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["demo", "--records", "8", "--job-seconds", "0", "--dir", str(tmp_path / "demo")], env={"COLUMNS": "80"}
    )
    assert result.exit_code == 0, result.output
    assert "<bib><mms_id>" not in result.stdout and "@@" not in result.stdout  # no whole one-line record, twice
    trap = result.stdout.split("This is the trap", 1)[1].split("--apply`:", 1)[0]
    fixes = [line for line in trap.splitlines() if ': remove xsi:type="dcterms:URI"' in line]
    assert 1 <= len(fixes) <= 3 and all(line.startswith("99") for line in fixes)
