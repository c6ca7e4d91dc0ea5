"""Issue 13 item 13: small ways of going wrong, each one line and the right exit code."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.errors import BadInputError
from orchestrator.service import batches, preflight, views, workflow
from orchestrator.service.context import Context
from orchestrator.simulator import Simulator

runner = CliRunner()


def test_a_padded_name_is_stored_stripped(ctx: Context, sim: Simulator) -> None:
    set_id = sim.create_set("Theses", sim.generate_records(3, profile="clean"))
    assert workflow.add_set(ctx, set_id, "  Padded name \t").name == "Padded name"
    assert views.status(ctx, set_id)[0].name == "Padded name"
    other = sim.create_set("Other", sim.generate_records(3, profile="clean", seed=9))
    with pytest.raises(BadInputError, match="already used"):
        workflow.add_set(ctx, other, " Padded name ")
    with pytest.raises(BadInputError, match="--name must not be empty"):
        workflow.add_set(ctx, other, "   ")


def test_include_of_a_record_never_excluded_says_so(ctx: Context, sim: Simulator) -> None:
    ids = sim.generate_records(3, profile="clean")
    set_id = sim.create_set("Theses", ids)
    workflow.add_set(ctx, set_id)
    message = preflight.include(ctx, set_id, [ids[0]], reason="oops")
    assert "nothing included" in message and f"1 not excluded (left as they are): {ids[0]}" in message
    assert "included again" not in message
    assert [e.kind for e in views.history(ctx, set_id) if e.kind == "include"] == []

    preflight.exclude(ctx, set_id, [ids[1]], reason="MARC record")
    message = preflight.include(ctx, set_id, [ids[0], ids[1]], reason="fixed in Alma")
    assert (
        message.startswith(f"1 record included again in set {set_id}")
        and f"not excluded (left as they are): {ids[0]}" in message
    )
    event = [e for e in views.history(ctx, set_id) if e.kind == "include"][-1]
    assert ids[1] in event.detail and ids[0] not in event.detail


def test_a_huge_csv_cell_is_rejected_with_its_line(ctx: Context, tmp_path: Path) -> None:
    path = tmp_path / "ids.csv"
    path.write_text("MMS Id\n991011507133404641\n" + "9" * 131_073 + "\n", encoding="utf-8")
    with pytest.raises(BadInputError, match=r"ids.csv: line 3: a cell is longer than 131,072 characters"):
        batches.add_from_csv(ctx, path, "Huge")


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


def _freeze_count_after_status(tmp_path: Path, *, as_script: bool) -> int:
    """``hwf status`` in a fresh interpreter, called the way the console script calls it (``main``) or the way a
    test or an embedder does (``app()``); the number of objects frozen out of the collector's sight after it."""
    import subprocess
    import sys

    from tests.conftest import minimal_config, write_config

    config = write_config(tmp_path / "hwf.toml", minimal_config(f"sqlite:///{tmp_path / 'hwf.db'}"))
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
