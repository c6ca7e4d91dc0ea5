"""``hwf add --from-csv``: reading the CSV, creating and filling the Alma sets crash-safely, registering them."""

from __future__ import annotations

import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.errors import AlmaError, AlmaUnreachableError, BadInputError
from orchestrator.service import batches, views
from orchestrator.service.context import Context
from orchestrator.simulator import Simulator
from orchestrator.store.models import SetCreation
from tests.support import write_config

# The header line of Alma's "MMS Id" export, as in the real file (UTF-8 BOM, CRLF).
ALMA_HEADER = (
    "\ufeffMMS Id,Network Number,Bibliographic Lifecycle,Collection Name,Suppressed From Discovery,"
    "Num Digital Representations  (In Repository),Title\r\n"
)


def write(tmp_path: Path, text: str, name: str = "ids.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8"))
    return path


def export_row(mms: str, number: int, title: str = "A title") -> str:
    return f'{mms},grinnell:{number},In Repository,"Syllabi, Curricular Materials",No,1,"{title}"\r\n'


# ---------------------------------------------------------------------------------------------
# reading


def test_one_column_without_header(tmp_path: Path) -> None:
    ids = batches.read_ids(write(tmp_path, "991011506418804641\n991011506418904641\n"))
    assert ids.ids == ["991011506418804641", "991011506418904641"]
    assert list(ids.lines) == [1, 2]
    assert ids.column is None


def test_alma_export_with_bom_crlf_quotes_and_a_multiline_title(tmp_path: Path) -> None:
    text = (
        ALMA_HEADER
        + export_row("991011506418804641", 10001)
        + export_row("991011506418904641", 10002, "Two\r\nlines")
        + "\r\n"
        + export_row("991011506419004641", 54)
    )
    ids = batches.read_ids(write(tmp_path, text))
    assert ids.column == "MMS Id"
    assert ids.ids == ["991011506418804641", "991011506418904641", "991011506419004641"]
    # The quoted title spans lines 3-4, line 5 is blank: the third id is on line 6.
    assert list(ids.lines) == [2, 4, 6]


def test_mms_id_column_found_anywhere_case_and_space_insensitive(tmp_path: Path) -> None:
    text = "Title;mms_ID;Other\nA;991011506418804641;x\nB; 991011506418904641 ;y\n"
    ids = batches.read_ids(write(tmp_path, text))
    assert ids.ids == ["991011506418804641", "991011506418904641"]
    assert ids.column == "mms_ID"


def test_single_word_header_is_skipped(tmp_path: Path) -> None:
    ids = batches.read_ids(write(tmp_path, "identifier\n991011506418804641\n"))
    assert ids.ids == ["991011506418804641"] and ids.column == "identifier"


def test_duplicates_are_dropped_and_listed_with_lines(tmp_path: Path) -> None:
    ids = batches.read_ids(write(tmp_path, "MMS ID\n11\n22\n11\n\n22\n33\n"))
    assert ids.ids == ["11", "22", "33"]
    assert ids.duplicates == [(4, "11", 2), (6, "22", 3)]


def test_header_without_mms_id_column_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="line 1: the header has no 'MMS Id' column"):
        batches.read_ids(write(tmp_path, "Title,Creator\nA,B\n"))


def test_non_utf8_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes("MMS Id,Titre\n991011506418804641,Caf\xe9\n".encode("latin-1"))
    with pytest.raises(BadInputError, match="not UTF-8"):
        batches.read_ids(path)


def test_missing_file_is_bad_input(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="cannot read"):
        batches.read_ids(tmp_path / "nope.csv")


def test_hundred_thousand_ids_are_streamed(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    with path.open("w", encoding="utf-8", newline="") as handle:
        handle.write(ALMA_HEADER)
        for n in range(100_000):
            handle.write(export_row(f"99{n:014d}4641", n, f"Title number {n}"))
    size = path.stat().st_size
    tracemalloc.start()
    ids = batches.read_ids(path)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(ids.ids) == 100_000 and ids.lines[-1] == 100_001
    # The file is ~11 MB; the ids, their lines and the duplicate index need ~20 MB, never the whole
    # file plus per-row objects.
    assert size > 9_000_000
    assert peak < 24_000_000, f"peak {peak / 1e6:.1f} MB"  # (its speed is a benchmark's business, not a test's)


# ---------------------------------------------------------------------------------------------
# add_from_csv


def test_empty_csv_is_refused_and_creates_nothing(ctx: Context, sim: Simulator, tmp_path: Path) -> None:
    before = sim.set_ids()
    for text in ("", "\n\n", "MMS Id\r\n\r\n"):
        with pytest.raises(BadInputError, match="has no MMS IDs"):
            batches.add_from_csv(ctx, write(tmp_path, text), "Theses")
    assert sim.set_ids() == before


def test_non_numeric_ids_are_listed_by_line_and_nothing_is_created(
    ctx: Context, sim: Simulator, tmp_path: Path
) -> None:
    ids = sim.generate_records(3, profile="clean")
    rows = [ids[0], "99101150641880464l", ids[1], "9.91011E+17", ids[2]] + [f"bad{n}" for n in range(30)]
    with pytest.raises(BadInputError) as caught:
        batches.add_from_csv(ctx, write(tmp_path, "\n".join(rows) + "\n"), "Theses")
    message = str(caught.value)
    assert "32 values are not MMS IDs" in message
    assert "line 2: '99101150641880464l'" in message
    assert "line 4: '9.91011E+17' (a spreadsheet turned the id into a number" in message
    assert "and 12 more" in message and "Nothing was created" in message
    assert sim.set_ids() == {}
    with ctx.sessions() as session:
        assert session.scalars(select(SetCreation)).all() == []


def test_creates_named_batches_registers_them_and_reports_rejected_ids(
    ctx: Context, sim: Simulator, tmp_path: Path
) -> None:
    ids = sim.generate_records(25, profile="clean")
    unknown = "991234567890004641"
    lines = ["MMS Id", *ids[:12], unknown, *ids[12:], ids[3]]
    summaries = batches.add_from_csv(ctx, write(tmp_path, "\r\n".join(lines) + "\r\n"), "Theses", batch_size=10)
    assert [s.name for s in summaries] == ["Theses (batch 1/3)", "Theses (batch 2/3)", "Theses (batch 3/3)"]
    assert [s.records for s in summaries] == [10, 9, 6]
    assert all(s.state == "created" for s in summaries)
    alma = sim.set_ids()
    assert sorted(alma) == [s.name for s in summaries]
    assert sim.set_members(alma["Theses (batch 1/3)"]) == ids[:10]
    assert sim.set_members(alma["Theses (batch 2/3)"]) == ids[10:19]
    batch_two = [e for e in views.history(ctx, summaries[1].set) if e.kind == "batch"]
    assert len(batch_two) == 1
    assert batch_two[0].data is not None and batch_two[0].data["rejected"] == [{"line": 14, "mms_id": unknown}]
    assert "Alma rejected 1 MMS IDs: line 14" in batch_two[0].detail
    notes = [m for _, m in ctx.reporter.notes]  # type: ignore[attr-defined]
    assert any("dropped 1 duplicate MMS IDs: line 28 repeats line 5" in m for m in notes)
    assert any("Alma rejected 1 MMS IDs: line 14" in m for m in notes)


def test_rerun_finds_everything_and_creates_no_twins(ctx: Context, sim: Simulator, tmp_path: Path) -> None:
    ids = sim.generate_records(12, profile="clean")
    path = write(tmp_path, "\n".join(ids) + "\n")
    first = batches.add_from_csv(ctx, path, "Run", batch_size=5)
    requests = dict(sim.stats["requests"])
    again = batches.add_from_csv(ctx, path, "Run", batch_size=5)
    assert [s.set for s in again] == [s.set for s in first]
    assert len(sim.set_ids()) == 3
    after = sim.stats["requests"]
    assert after.get("set_create", 0) == requests.get("set_create", 0)
    assert [name for name, state, _ in batches.iter_batches(ctx, "Run")] == [
        "Run (batch 1/3)",
        "Run (batch 2/3)",
        "Run (batch 3/3)",
    ]


def test_lost_reply_to_set_creation_is_found_by_name(ctx: Context, sim: Simulator, tmp_path: Path) -> None:
    ids = sim.generate_records(6, profile="clean")
    real_create = ctx.alma.create_set

    def create_then_lose_reply(name: str, **kwargs: Any) -> Any:
        real_create(name, **kwargs)
        raise AlmaUnreachableError("the reply was lost")

    ctx.alma.create_set = create_then_lose_reply  # type: ignore[method-assign]
    summaries = batches.add_from_csv(ctx, write(tmp_path, "\n".join(ids) + "\n"), "Lost", batch_size=3)
    assert [s.records for s in summaries] == [3, 3]
    assert sorted(sim.set_ids()) == ["Lost (batch 1/2)", "Lost (batch 2/2)"]


def test_crash_after_creating_a_set_resumes_without_a_twin(ctx: Context, sim: Simulator, tmp_path: Path) -> None:
    ids = sim.generate_records(6, profile="clean")
    path = write(tmp_path, "\n".join(ids) + "\n")
    real_create = ctx.alma.create_set
    calls = {"n": 0}

    def create_then_die(name: str, **kwargs: Any) -> Any:
        calls["n"] += 1
        info = real_create(name, **kwargs)
        if calls["n"] == 2:
            raise KeyboardInterrupt("killed after Alma created the set, before hwf recorded it")
        return info

    ctx.alma.create_set = create_then_die  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        batches.add_from_csv(ctx, path, "Crash", batch_size=3)
    ctx.alma.create_set = real_create  # type: ignore[method-assign]
    assert len(sim.set_ids()) == 2
    summaries = batches.add_from_csv(ctx, path, "Crash", batch_size=3)
    assert len(sim.set_ids()) == 2
    assert [s.records for s in summaries] == [3, 3]


def test_unknown_outcome_of_add_members_is_diffed_not_resent(ctx: Context, sim: Simulator, tmp_path: Path) -> None:
    ids = sim.generate_records(1200, profile="clean")
    real_add = ctx.alma.add_members
    sent: list[int] = []

    def add_then_lose_first_reply(info: Any, chunk: Any, **kwargs: Any) -> Any:
        sent.append(len(chunk))
        result = real_add(info, chunk, **kwargs)
        if len(sent) == 1:
            raise AlmaUnreachableError("reset after Alma added the members")
        return result

    ctx.alma.add_members = add_then_lose_first_reply  # type: ignore[method-assign]
    summaries = batches.add_from_csv(ctx, write(tmp_path, "\n".join(ids) + "\n"), "Big", batch_size=1200)
    # 1000 then 200: the lost first chunk is found in Alma by listing the members, never sent again.
    assert sent == [1000, 200]
    assert summaries[0].records == 1200
    assert sim.set_members(summaries[0].set) == ids


def test_crash_while_filling_resumes_with_the_missing_members_only(
    ctx: Context, sim: Simulator, tmp_path: Path
) -> None:
    ids = sim.generate_records(1100, profile="clean")
    path = write(tmp_path, "\n".join(ids) + "\n")
    real_add = ctx.alma.add_members
    sent: list[int] = []

    def add_then_die(info: Any, chunk: Any, **kwargs: Any) -> Any:
        sent.append(len(chunk))
        result = real_add(info, chunk, **kwargs)
        if len(sent) == 1:
            raise KeyboardInterrupt("killed between two chunks")
        return result

    ctx.alma.add_members = add_then_die  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        batches.add_from_csv(ctx, path, "Half", batch_size=2000)
    summaries = batches.add_from_csv(ctx, path, "Half", batch_size=2000)
    assert sent == [1000, 100]
    assert summaries[0].records == 1100


def test_alma_refusing_invalid_ids_anyway_is_narrowed_down(ctx: Context, sim: Simulator, tmp_path: Path) -> None:
    ids = sim.generate_records(8, profile="clean")
    bad = ["991234567890004641", "991234567890104641"]
    real_add = ctx.alma.add_members
    calls: list[int] = []

    def strict_add(info: Any, chunk: Any, **kwargs: Any) -> Any:
        calls.append(len(chunk))
        if any(m in bad for m in chunk):
            raise AlmaError("400 60116", status=400, code="60116")
        return real_add(info, chunk, **kwargs)

    ctx.alma.add_members = strict_add  # type: ignore[method-assign]
    rows = ids[:3] + [bad[0]] + ids[3:6] + [bad[1]] + ids[6:]
    summaries = batches.add_from_csv(ctx, write(tmp_path, "\n".join(rows) + "\n"), "Strict", batch_size=100)
    assert summaries[0].records == 8
    assert sorted(sim.set_members(summaries[0].set)) == sorted(ids)
    event = next(e for e in views.history(ctx, summaries[0].set) if e.kind == "batch")
    assert event.data is not None and event.data["rejected"] == [
        {"line": 4, "mms_id": bad[0]},
        {"line": 8, "mms_id": bad[1]},
    ]
    assert len(calls) <= 17  # halving: about 2 x (bad ids) x log2(chunk) calls, not one per id


def test_a_batch_alma_rejects_entirely_is_not_registered(ctx: Context, sim: Simulator, tmp_path: Path) -> None:
    ids = sim.generate_records(2, profile="clean")
    rows = [*ids, "991234567890004641", "991234567890104641"]
    summaries = batches.add_from_csv(ctx, write(tmp_path, "\n".join(rows) + "\n"), "Half bad", batch_size=2)
    assert [s.name for s in summaries] == ["Half bad (batch 1/2)"]
    assert [(n, state) for n, state, _ in batches.iter_batches(ctx, "Half bad")] == [
        ("Half bad (batch 1/2)", "registered"),
    ]
    assert "Half bad (batch 2/2)" not in sim.set_ids()  # the empty Alma set was deleted
    notes = [m for _, m in ctx.reporter.notes]  # type: ignore[attr-defined]
    assert any("not registered: Alma rejected all 2 MMS IDs (lines 3-4" in m and "was deleted" in m for m in notes)


def test_a_csv_alma_rejects_entirely_exits_2_and_leaves_nothing(ctx: Context, sim: Simulator, tmp_path: Path) -> None:
    before = sim.set_ids()
    rows = ["991234567890004641", "991234567890104641", "991234567890204641"]
    with pytest.raises(BadInputError, match="Alma rejected every one of the 3 MMS IDs") as raised:
        batches.add_from_csv(ctx, write(tmp_path, "\n".join(rows) + "\n"), "All bad", batch_size=2)
    assert raised.value.exit_code == 2
    assert sim.set_ids() == before  # no empty set left in Alma
    assert list(batches.iter_batches(ctx, "All bad")) == [] and views.status(ctx) == []


def test_name_alma_already_has_is_refused_and_named(ctx: Context, sim: Simulator, tmp_path: Path) -> None:
    ids = sim.generate_records(4, profile="clean")
    theirs = sim.create_set("Theses (batch 2/2)", ids[:1])
    with pytest.raises(BadInputError, match=rf"'Theses \(batch 2/2\)' \(set {theirs}\), which hwf did not create"):
        batches.add_from_csv(ctx, write(tmp_path, "\n".join(ids) + "\n"), "Theses", batch_size=2)
    assert list(sim.set_ids()) == ["Theses (batch 2/2)"]
    with ctx.sessions() as session:
        assert session.scalars(select(SetCreation)).all() == []


def test_rerun_with_another_batch_size_is_refused(ctx: Context, sim: Simulator, tmp_path: Path) -> None:
    ids = sim.generate_records(6, profile="clean")
    path = write(tmp_path, "\n".join(ids) + "\n")
    batches.add_from_csv(ctx, path, "Sized", batch_size=3)
    with pytest.raises(BadInputError, match="planned 2 batches"):
        batches.add_from_csv(ctx, path, "Sized", batch_size=2)
    other = write(tmp_path, "\n".join(reversed(ids)) + "\n", "other.csv")
    with pytest.raises(BadInputError, match="with other MMS IDs"):
        batches.add_from_csv(ctx, other, "Sized", batch_size=3)
    assert len(sim.set_ids()) == 2


def test_bad_arguments(ctx: Context, tmp_path: Path) -> None:
    path = write(tmp_path, "991011506418804641\n")
    with pytest.raises(BadInputError, match="at least 1"):
        batches.add_from_csv(ctx, path, "X", batch_size=0)
    with pytest.raises(BadInputError, match="all digits"):
        batches.add_from_csv(ctx, path, "12345")
    with pytest.raises(BadInputError, match="too long"):
        batches.add_from_csv(ctx, path, "x" * 250)


# ---------------------------------------------------------------------------------------------
# the command line


def test_cli_empty_and_malformed_csv_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HWF_ALMA_API_KEY", "l7xx-cli-test-key")
    config = write_config(tmp_path / "cli.toml", preset="minimal")
    runner = CliRunner()
    empty = write(tmp_path, "", "empty.csv")
    result = runner.invoke(app, ["--config", str(config), "add", "--from-csv", str(empty), "--name", "X"])
    assert result.exit_code == 2, result.output
    assert "has no MMS IDs" in result.stderr
    bad = write(tmp_path, "MMS Id\n991011506418804641\nabc\n", "bad.csv")
    result = runner.invoke(app, ["--config", str(config), "add", "--from-csv", str(bad), "--name", "X"])
    assert result.exit_code == 2, result.output
    assert "line 3: 'abc'" in result.stderr
    result = runner.invoke(app, ["--config", str(config), "add", "--from-csv", str(bad)])
    assert result.exit_code == 2
    assert "--name" in result.stderr


def test_csv_batches_default_to_100_members(ctx: Context, sim: Simulator, tmp_path: Path) -> None:
    """Grinnell's CABB guidance: handle sets of at most 100 records; 250 ids make sets of 100, 100 and 50."""
    ids = sim.generate_records(250, profile="clean")
    summaries = batches.add_from_csv(ctx, write(tmp_path, "\n".join(ids) + "\n"), "Default")
    assert [s.records for s in summaries] == [100, 100, 50]


def test_add_help_gives_the_reason_for_100() -> None:
    result = CliRunner().invoke(app, ["add", "--help"], env={"COLUMNS": "200"})
    assert "default: 100" in result.output.lower() and "CABB" in result.output


def test_a_huge_csv_cell_is_rejected_with_its_line(ctx: Context, tmp_path: Path) -> None:
    path = tmp_path / "ids.csv"
    path.write_text("MMS Id\n991011507133404641\n" + "9" * 131_073 + "\n", encoding="utf-8")
    with pytest.raises(BadInputError, match=r"ids.csv: line 3: a cell is longer than 131,072 characters"):
        batches.add_from_csv(ctx, path, "Huge")
