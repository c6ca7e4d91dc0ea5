"""The terminal surface of every command (issue 11): version, help texts, common options anywhere,
--json outcomes, exit codes, grammar, hints that work as printed, escaping of data, -q/-v, time display."""

from __future__ import annotations

import json
import re
import shlex
import sys
from pathlib import Path
from typing import Any

import pytest

from orchestrator import __version__
from orchestrator.cli import base as cli
from orchestrator.domain.wording import plural
from orchestrator.simulator import Simulator
from tests.support import API_KEY, FakeClock, WiredRunner, config_dict, make_set, sim_wiring, write_config

runner = WiredRunner()
ANSI = re.compile(r"\x1b\[")


@pytest.fixture
def hwf(tmp_path: Path, sim: Simulator, clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> Any:
    """``hwf(*args)``: the real CLI on the in-process simulator, with a config file and the key set."""
    path = write_config(tmp_path, preset="cli")
    monkeypatch.setenv("HWF_ALMA_API_KEY", API_KEY)
    monkeypatch.setattr(runner, "wiring", sim_wiring(sim, clock))

    def invoke(*args: str) -> Any:
        return runner.invoke(cli.app, ["--config", str(path), *args])

    invoke.path = path  # type: ignore[attr-defined]
    return invoke


# ---------------------------------------------------------------------------------------------
# version, completion, help


def test_version_option_and_subcommand() -> None:
    result = runner.invoke(cli.app, ["--version"])
    assert result.exit_code == 0 and result.stdout.strip() == f"hwf {__version__}"
    assert runner.invoke(cli.app, ["version"]).stdout.strip() == __version__


def test_completion_is_enabled() -> None:
    result = runner.invoke(cli.app, ["--help"])
    assert "--install-completion" in result.stdout and "--show-completion" in result.stdout


def _commands() -> list[list[str]]:
    import typer.main

    group = typer.main.get_command(cli.app)
    names: list[list[str]] = []
    for name, command in group.commands.items():  # type: ignore[attr-defined]
        subs = getattr(command, "commands", None)
        names += [[name, sub] for sub in subs] if subs else [[name]]
    return names


@pytest.mark.parametrize("command", _commands(), ids=" ".join)
def test_help_at_80_columns(command: list[str]) -> None:
    """No eaten [brackets], no doubled [[METAVAR]], every argument with a help text, every option name
    whole on an 80-column terminal, no line longer than 80."""
    import typer.main

    result = runner.invoke(cli.app, [*command, "--help"], terminal_width=80, env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.stdout
    text = result.stdout
    assert "[[" not in text
    assert all(len(line) <= 80 for line in text.splitlines()), text
    click_command = typer.main.get_command(cli.app)
    for part in command:
        click_command = click_command.commands[part]  # type: ignore[attr-defined]
    for param in click_command.params:
        for opt in [*getattr(param, "opts", []), *getattr(param, "secondary_opts", [])]:
            if opt.startswith("-"):
                assert opt in text, f"{opt} cut or missing in:\n{text}"
        if param.param_type_name == "argument":
            assert getattr(param, "help", None), f"argument {param.name} of {command} has no help"
    for common in ("--config", "--verbose", "--quiet", "--utc"):
        assert common in text


def test_help_keeps_square_brackets() -> None:
    assert "[alma.jobs]" in runner.invoke(cli.app, ["jobs", "--help"], terminal_width=80).stdout
    add = runner.invoke(cli.app, ["add", "--help"], terminal_width=80).stdout
    assert "add [OPTIONS] [ALMA_SET_ID]\n" in add


def test_docstring_paragraphs_are_rewrapped() -> None:
    """A docstring's line breaks do not land mid-sentence: click re-wraps each paragraph."""
    text = runner.invoke(cli.app, ["exclude", "--help"], terminal_width=80).stdout
    flat = " ".join(text.split())
    assert "out of every later guard, of verification, and (unless --keep-in-alma-set) out of the Alma set" in flat


# ---------------------------------------------------------------------------------------------
# lazy subcommands (issue 19): the table of commands, and what a run imports


def _registered() -> dict[str, str]:
    """Every command and sub-group registered on the app (all modules loaded): name -> defining module."""
    import typer.main

    typer.main.get_command(cli.app).commands.items()  # type: ignore[attr-defined]  # looking up loads them all
    names = {
        info.name or typer.main.get_command_name(info.callback.__name__): info.callback.__module__
        for info in cli.app.registered_commands
        if info.callback is not None
    }
    for group in cli.app.registered_groups:
        assert group.typer_instance is not None and group.name
        [module] = {info.callback.__module__ for info in group.typer_instance.registered_commands if info.callback}
        names[group.name] = module
    return names


def test_the_table_names_every_command_its_module_and_its_own_help() -> None:
    import typer.main

    registered = _registered()
    assert set(registered) == set(cli.COMMANDS)
    group = typer.main.get_command(cli.app)
    for name, lazy in cli.COMMANDS.items():
        assert registered[name] == f"orchestrator.cli.{lazy.module}", name
        own = group.commands[name].get_short_help_str(limit=10_000)  # type: ignore[attr-defined]
        assert lazy.help == own, f"{name}: the table says {lazy.help!r}, the command {own!r}"


def test_help_lists_the_commands_in_workflow_order() -> None:
    text = runner.invoke(cli.app, ["--help"], terminal_width=100).stdout
    listed = [line.split()[0] for line in text.split("Commands:\n", 1)[1].splitlines() if line.startswith("  ")]
    assert listed == list(cli.COMMANDS)
    assert listed[:4] == ["init", "ping", "jobs", "add"] and listed[-1] == "version"
    assert "  status    Where each set stands.\n" in text


def _imported_by(*argv: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``hwf ARGV`` in a fresh interpreter as the console script does; which of hwf's modules it imported."""
    import os
    import subprocess

    code = (
        "import json, sys\n"
        f"sys.argv = ['hwf', *{list(argv)!r}]\n"
        "from orchestrator.cli import main\n"
        "try:\n    main()\nexcept SystemExit as exc:\n    code = exc.code\n"
        "mods = sorted(m for m in sys.modules if m.startswith('orchestrator.'))\n"
        "print(json.dumps({'code': code, 'modules': mods}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})}
    )
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    result["stdout"] = "\n".join(done.stdout.splitlines()[:-1])
    return result


def test_help_version_and_completion_import_no_command_module() -> None:
    commands = {f"orchestrator.cli.{lazy.module}" for lazy in cli.COMMANDS.values()}
    for argv, env in [
        (("--help",), None),
        (("--version",), None),
        ((), {"_HWF_COMPLETE": "complete_zsh", "_TYPER_COMPLETE_ARGS": "hwf st"}),
    ]:
        run = _imported_by(*argv, env=env)
        assert run["code"] in (0, None), run
        assert not commands & set(run["modules"]), (argv, sorted(commands & set(run["modules"])))
        assert not any(m.startswith(("orchestrator.service", "orchestrator.wiring")) for m in run["modules"]), argv
    completion = _imported_by(env={"_HWF_COMPLETE": "complete_zsh", "_TYPER_COMPLETE_ARGS": "hwf st"})
    assert '"status":"Where each set stands."' in completion["stdout"]


def test_a_command_imports_its_own_module_only(tmp_path: Path) -> None:
    version = _imported_by("version")
    assert version["code"] in (0, None) and version["stdout"] == __version__
    assert "orchestrator.cli.about" in version["modules"]
    assert not any(m.startswith("orchestrator.service") for m in version["modules"])
    config = write_config(tmp_path / "hwf.toml", preset="minimal")
    status = _imported_by("--config", str(config), "status")
    assert status["code"] in (0, None), status
    loaded = {m for m in status["modules"] if m.startswith("orchestrator.cli.")}
    assert loaded == {
        "orchestrator.cli.base",
        "orchestrator.cli.read",
        "orchestrator.cli.render",
        "orchestrator.cli.text",
    }
    for argv in (["sim", "serve", "--help"], ["db", "upgrade", "--help"]):
        sub = _imported_by(*argv)
        assert sub["code"] in (0, None) and "orchestrator.cli.sim" in sub["modules"], argv
        assert "Usage: hwf " + " ".join(argv[:2]) in sub["stdout"]


# ---------------------------------------------------------------------------------------------
# common options after the command


def test_config_and_flags_after_the_command(hwf: Any, sim: Simulator) -> None:
    set_id = make_set(sim, 4, name="After the command")
    path = str(hwf.path)
    assert runner.invoke(cli.app, ["add", set_id, "-c", path]).exit_code == 0
    result = runner.invoke(cli.app, ["status", "-c", path, "--json"])
    assert result.exit_code == 0, result.stdout
    assert json.loads(result.stdout)[0]["set"] == set_id
    result = runner.invoke(cli.app, ["status", set_id, "--config", path, "-q", "--utc"])
    assert result.exit_code == 0 and set_id in result.stdout


def test_config_after_the_command_wins_over_the_one_before(hwf: Any, tmp_path: Path) -> None:
    result = runner.invoke(cli.app, ["-c", str(hwf.path), "status", "-c", str(tmp_path / "nope.toml")])
    assert result.exit_code == 2 and "nope.toml" in result.stderr


# ---------------------------------------------------------------------------------------------
# resume


def test_resume_only_matching_nothing_says_so(hwf: Any, sim: Simulator) -> None:
    hwf("add", make_set(sim, 4, name="Batch one"))
    for extra in ([], ["--dry-run"]):
        result = hwf("resume", "--all", "--only", "nomatch*", *extra)
        assert result.exit_code == 2, result.stdout
        assert result.stderr.startswith("Error: no registered set's name matches --only 'nomatch*'")


@pytest.mark.parametrize("extra", [[], ["--dry-run"], ["--follow", "--until-idle"]])
def test_resume_only_that_is_not_a_pattern_is_one_line(hwf: Any, sim: Simulator, extra: list[str]) -> None:
    hwf("add", make_set(sim, 4, name="Batch one"))
    result = hwf("resume", "--only", "[", *extra)
    assert result.exit_code == 2, result.stdout
    assert result.stderr.startswith("Error: --only '[' is not a valid pattern: ")
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_resume_with_nothing_to_do_says_so(hwf: Any) -> None:
    result = hwf("resume")
    assert result.exit_code == 0 and "Nothing to resume" in result.stdout


# ---------------------------------------------------------------------------------------------
# --json outcomes


def test_json_outcomes_of_advance_resume_retry_exclude_include(hwf: Any, sim: Simulator) -> None:
    one = make_set(sim, 4, name="Json one", seed=3)
    two = make_set(sim, 4, name="Json two", seed=4)
    assert json.loads(hwf("add", one, "--json").stdout)["set"] == one
    hwf("add", two)
    member = sim.set_members(one)[0] if hasattr(sim, "set_members") else None
    if member is None:
        member = json.loads(hwf("report", one, "--json").stdout)[0]["mms_id"]
    excluded = json.loads(hwf("exclude", one, member, "--reason", "test", "--json").stdout)
    assert excluded == {"command": "exclude", "set": one, "message": excluded["message"]}
    assert "1 record excluded" in excluded["message"]
    included = json.loads(hwf("include", one, member, "--reason", "back", "--json").stdout)
    assert included["command"] == "include" and "1 record included again" in included["message"]
    advanced = hwf("advance", one, "--json")
    assert advanced.exit_code == 0, advanced.stdout
    assert json.loads(advanced.stdout) == {
        "set": one,
        "name": "Json one",
        "outcome": "verified",
        "state": "verified",
        "message": "verified",
        "wait_until": None,
    }
    resumed = hwf("resume", "--json")
    assert resumed.exit_code == 0, resumed.stdout
    shape = json.loads(resumed.stdout)
    assert set(shape) == {"results", "attention", "skipped"}
    assert [r["set"] for r in shape["results"]] == [two] and shape["results"][0]["state"] == "verified"
    dry = json.loads(hwf("resume", "--dry-run", "--json").stdout)
    assert dry == []
    retried = hwf("retry", one, "--reason", "nothing", "--json")
    assert retried.exit_code == 2 and retried.stdout == ""  # an error: no JSON, one line on stderr


def test_json_of_check_fix_verify_report(hwf: Any, sim: Simulator) -> None:
    set_id = make_set(sim, 4, name="Json reads", seed=5)
    hwf("add", set_id)
    check = json.loads(hwf("check", set_id, "--json").stdout)
    assert check["can_go_on"] is True and check["blocking"] == {}
    assert json.loads(hwf("fix", set_id, "--json").stdout)["mode"] == "dry-run"
    hwf("advance", set_id)
    assert json.loads(hwf("verify", set_id, "--all", "--json").stdout) == {"OK": 4}
    as_json = hwf("report", set_id, "--json")
    assert as_json.exit_code == 0 and as_json.stdout == hwf("report", set_id, "--format", "json").stdout
    clash = hwf("report", set_id, "--json", "--format", "csv")
    assert clash.exit_code == 2 and "--json means --format json" in clash.stderr


def test_every_outcome_command_takes_json() -> None:
    for command in ("advance", "resume", "retry", "exclude", "include", "confirm", "check", "fix", "verify"):
        assert "--json" in runner.invoke(cli.app, [command, "--help"]).stdout, command
    assert "--json" in runner.invoke(cli.app, ["report", "--help"]).stdout


# ---------------------------------------------------------------------------------------------
# hwf check exit codes


def test_check_exits_3_when_the_set_cannot_go_on(hwf: Any, sim: Simulator) -> None:
    good = make_set(sim, 4, name="Good records")
    hwf("add", good)
    result = hwf("check", good)
    assert result.exit_code == 0, result.stdout
    assert "Can go on" in result.stdout
    problems = sim.generate_records(30, profile="problems", seed=9)
    bad = sim.create_set("Problem records", problems)
    hwf("add", bad)
    result = hwf("check", bad)
    assert result.exit_code == 3, result.stdout
    assert "Cannot go on as it is" in result.stdout
    assert hwf("check", bad, "--json").exit_code == 3


# ---------------------------------------------------------------------------------------------
# grammar and doubled prefixes


def test_plural_helper() -> None:
    assert plural(1, "record") == "1 record"
    assert plural(0, "record") == "0 records"
    assert plural(2, "value") == "2 values"
    assert plural(1, "batch", "batches") == "1 batch" and plural(3, "batch", "batches") == "3 batches"


def test_one_record_is_singular_everywhere(hwf: Any, sim: Simulator, tmp_path: Path) -> None:
    set_id = make_set(sim, 1, name="Single")
    added = hwf("add", set_id)
    assert "1 record," in added.stdout and "1 records" not in added.stdout
    csv_file = tmp_path / "ids.csv"
    csv_file.write_text("mms_id\n991011506418804641\nnot-an-id\n", encoding="utf-8")
    result = hwf("add", "--from-csv", str(csv_file), "--name", "Csv")
    assert result.exit_code == 2 and "1 value is not an MMS ID (digits only)" in result.stderr, result.stderr


def test_advance_and_resume_do_not_repeat_themselves(hwf: Any, sim: Simulator) -> None:
    set_id = make_set(sim, 4, name="No echo")
    hwf("add", set_id)
    result = hwf("advance", set_id)
    assert result.stdout.strip() == f"Set {set_id} (No echo): verified"
    again = hwf("advance", set_id)
    assert again.stdout.strip() == f"Set {set_id} (No echo): already verified; nothing to do"
    bad = sim.create_set("Stuck", sim.generate_records(30, profile="problems", seed=9))
    hwf("add", bad)
    resumed = hwf("resume")
    assert resumed.exit_code == 3
    assert "Needs attention: set" not in resumed.stderr
    assert resumed.stderr.count("needs attention") == 1


# ---------------------------------------------------------------------------------------------
# include never clears an attention it does not resolve


def test_include_keeps_an_unrelated_attention(hwf: Any, sim: Simulator) -> None:
    ids = sim.generate_records(30, profile="problems", seed=9)
    set_id = sim.create_set("Keep attention", ids)
    hwf("add", set_id)
    assert hwf("advance", set_id).exit_code == 3
    before = json.loads(hwf("status", set_id, "--json").stdout)[0]["attention"]
    assert before
    ready = [r["mms_id"] for r in json.loads(hwf("check", set_id, "--json").stdout)["problems"]]
    clean_one = next(m for m in ids if m not in ready)
    assert hwf("exclude", set_id, clean_one, "--reason", "t", "--keep-in-alma-set").exit_code == 0
    result = hwf("include", set_id, clean_one, "--reason", "back")
    assert result.exit_code == 0, result.stdout
    assert "attention cleared" not in result.stdout and "still needs attention" in result.stdout
    assert json.loads(hwf("status", set_id, "--json").stdout)[0]["attention"] == before


# ---------------------------------------------------------------------------------------------
# every hint hwf prints is a command that works as printed


HINT = re.compile(r"`(hwf [^`]+)`")


def _run_hint(hint: str, path: Path, sim: Simulator, set_id: str) -> Any:
    words = shlex.split(hint)[1:]
    members = [m for m in sim.records if m]
    words = [{"MMS...": members[0], "ID": "7593466560004641"}.get(w, w) for w in words]
    return runner.invoke(cli.app, ["--config", str(path), *words])


def test_every_hint_runs_as_printed(hwf: Any, sim: Simulator, tmp_path: Path) -> None:
    """Provoke the attentions the tests can (records, job failure, quota, verify) and run every backticked
    `hwf ...` hwf printed: none may be a usage error (unknown command or option, missing option)."""
    hints: dict[str, str] = {}

    def collect(result: Any, set_id: str) -> None:
        for hint in HINT.findall(result.stdout + result.stderr):
            hints.setdefault(hint, set_id)

    problems = sim.create_set("Hints records", sim.generate_records(30, profile="problems", seed=9))
    collect(hwf("add", problems), problems)
    collect(hwf("check", problems), problems)
    collect(hwf("advance", problems), problems)
    collect(hwf("advance", problems, "--dry-run"), problems)
    collect(hwf("status", problems), problems)
    collect(hwf("fix", problems), problems)
    marc = [
        m
        for m in sim.generate_records(40, profile="problems", seed=9)
        if sim.records[m].record_format.startswith("marc")
    ]
    failing = sim.create_set("Hints job", [*sim.generate_records(4, profile="clean", seed=8), marc[0]])
    hwf("add", failing)
    hwf("exclude", failing, marc[0], "--reason", "t", "--keep-in-alma-set")
    failed = hwf("advance", failing)  # the copy job fails on the MARC record's bulk
    assert failed.exit_code == 3, failed.stderr
    collect(failed, failing)
    collect(hwf("advance", failing, "--dry-run"), failing)
    quota = make_set(sim, 4, name="Hints quota", seed=7)
    hwf("add", quota)
    sim.faults.daily_remaining = 10
    collect(hwf("advance", quota), quota)
    collect(hwf("status", quota), quota)
    collect(hwf("advance", quota, "--dry-run"), quota)
    assert sum("retry" in h and "--reason" in h for h in hints) >= 2, hints
    assert len(hints) >= 6, hints
    for hint, set_id in hints.items():
        result = _run_hint(hint, hwf.path, sim, set_id)
        assert "Usage:" not in result.stdout + result.stderr, (hint, result.stdout, result.stderr)
        assert "No such" not in result.stderr and "Missing option" not in result.stderr, (hint, result.stderr)


def test_quota_attention_names_a_working_retry(hwf: Any, sim: Simulator) -> None:
    set_id = make_set(sim, 4, name="Quota")
    hwf("add", set_id)
    sim.faults.daily_remaining = 10
    result = hwf("advance", set_id)
    assert result.exit_code == 3, result.stdout
    attention = json.loads(hwf("status", set_id, "--json").stdout)[0]["attention"]
    assert f"`hwf retry {set_id} --reason TEXT`" in attention
    assert hwf("retry", set_id, "--reason", "TEXT").exit_code == 0


# ---------------------------------------------------------------------------------------------
# database driver


def test_postgres_url_without_the_driver_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if psycopg were not installed
    monkeypatch.setenv("HWF_ALMA_API_KEY", API_KEY)
    path = write_config(tmp_path / "pg.toml", db="postgresql+psycopg://hwf:secret@db.example/hwf", preset="minimal")
    result = runner.invoke(cli.app, ["--config", str(path), "status"])
    assert result.exit_code == 1, result.stdout
    assert "pip install 'hwf[postgres]'" in result.stderr and "secret" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


# ---------------------------------------------------------------------------------------------
# escaping: names and texts from Alma print as text


NASTY = "Bad [/] name [link=http://evil.example]x[/link] \x1b[31mRED\x07"


def _no_control(text: str) -> None:
    assert "\x1b" not in text and "\x07" not in text, repr(text)


def test_markup_and_control_characters_print_as_text(hwf: Any, sim: Simulator) -> None:
    set_id = sim.create_set(NASTY, sim.generate_records(4, profile="clean", seed=1))
    outputs = [hwf("add", set_id)]
    outputs.append(hwf("status"))
    outputs.append(hwf("status", set_id))
    outputs.append(hwf("check", set_id))
    outputs.append(hwf("advance", set_id, "--dry-run"))
    outputs.append(hwf("fix", set_id))
    outputs.append(hwf("advance", set_id))
    outputs.append(hwf("resume"))
    outputs.append(hwf("history", set_id))
    outputs.append(hwf("history", set_id, "--steps"))
    outputs.append(hwf("advance", NASTY))  # by name
    outputs.append(hwf("add", set_id))  # already registered: an error naming the set
    for result in outputs:
        _no_control(result.stdout)
        _no_control(result.stderr)
    shown = outputs[0].stdout + outputs[2].stdout + outputs[6].stdout
    assert "Bad [/] name [link=http://evil.example]x[/link] \\x1b[31mRED\\x07" in shown
    assert json.loads(hwf("status", "--json").stdout)[0]["name"] == NASTY  # JSON keeps the data as is


def test_escape_functions() -> None:
    from orchestrator.cli.text import clean, safe

    assert clean("a\x1b[2Jb\nc") == "a\\x1b[2Jb\\x0ac"
    assert clean("a\nb", keep_newlines=True) == "a\nb"
    assert clean("x\u2028y\x9b") == "x\\u2028y\\x9b"
    assert safe("[bold]x[/bold]") == "\\[bold]x\\[/bold]"
    from rich.console import Console

    console = Console(width=80, record=True, color_system=None)
    console.print(safe(NASTY))
    assert console.export_text().strip() == "Bad [/] name [link=http://evil.example]x[/link] \\x1b[31mRED\\x07"


# ---------------------------------------------------------------------------------------------
# -q / -v


def test_quiet_shows_only_results_and_verbose_shows_more(hwf: Any, sim: Simulator) -> None:
    set_id = make_set(sim, 4, name="Loud and quiet")
    hwf("add", set_id)
    quiet = hwf("advance", set_id, "-q")
    assert quiet.exit_code == 0
    assert quiet.stderr == "" and quiet.stdout.strip() == f"Set {set_id} (Loud and quiet): verified"
    other = make_set(sim, 4, name="Verbose", seed=2)
    hwf("add", other)
    normal = hwf("advance", other)
    assert "copy_identifiers" in normal.stderr or "verify" in normal.stderr
    verbose = hwf("-v", "advance", _add(hwf, sim, "Verbose two"))
    assert len(verbose.stderr.splitlines()) >= len(normal.stderr.splitlines())


def _add(hwf: Any, sim: Simulator, name: str) -> str:
    set_id = make_set(sim, 4, name=name, seed=len(name))
    hwf("add", set_id)
    return set_id


def test_verbose_shows_the_whole_error(capsys: pytest.CaptureFixture[str]) -> None:
    import typer

    from orchestrator.errors import BadInputError

    for verbosity, lines in ((0, 1), (1, 2)):
        cli._state.verbosity = verbosity
        with pytest.raises(typer.Exit) as exit_info:
            with cli.errors():
                raise BadInputError("first line\nsecond line")
        assert exit_info.value.exit_code == 2
        assert len(capsys.readouterr().err.strip().splitlines()) == lines
    cli._state.verbosity = 0


# ---------------------------------------------------------------------------------------------
# status: piped output is tab-separated and never shortened


def test_piped_status_is_tab_separated_and_whole(hwf: Any, sim: Simulator) -> None:
    long_name = "A very long set name that goes on and on " * 3
    set_id = make_set(sim, 4, name=long_name.strip())
    hwf("add", set_id)
    result = hwf("status")
    lines = result.stdout.splitlines()
    assert lines[0].split("\t") == ["set", "name", "state", "records", "excluded", "waiting for / attention"]
    assert lines[1].split("\t")[:4] == [set_id, long_name.strip(), "created", "4"]


# ---------------------------------------------------------------------------------------------
# history: folded repeats, durations, actor; --steps


def test_history_shows_run_times_actor_and_folds_repeats(hwf: Any, sim: Simulator) -> None:
    set_id = make_set(sim, 4, name="Timed")
    hwf("add", set_id)
    hwf("advance", set_id)
    text = hwf("--utc", "history", set_id).stdout
    finished = [line for line in text.splitlines() if "job_finished" in line]
    assert len(finished) == 2 and all(re.search(r"\(ran (\d+m \d\ds|\d+s)\)", line) for line in finished), text
    assert re.search(r"\(by \S+ on \S+ pid \d+\)", text)  # who acted, on which host, which process
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC  added", text)
    lines = [line.split("  ", 1)[1] for line in text.splitlines()]
    assert all(a != b for a, b in zip(lines, lines[1:], strict=False)), "a repeated line was not folded"
    events = json.loads(hwf("history", set_id, "--json").stdout)
    assert len(events) >= len(text.splitlines())  # JSON keeps every event


def test_history_steps_for_any_set(hwf: Any, sim: Simulator) -> None:
    set_id = make_set(sim, 4, name="Steps")
    hwf("add", set_id)
    assert "No job has run" in hwf("history", set_id, "--steps").stdout
    hwf("advance", set_id)
    text = hwf("history", set_id, "--steps").stdout
    assert "Steps of set" in text and "migrate" in text and "integrate" in text
    steps = json.loads(hwf("history", set_id, "--steps", "--json").stdout)
    assert [s["step"] for s in steps] == ["copy_identifiers", "migrate", "integrate"] or [s["step"] for s in steps] == [
        "migrate",
        "integrate",
    ]
    assert all(s["seconds"] is None or s["seconds"] >= 0 for s in steps)


# ---------------------------------------------------------------------------------------------
# time display


def test_time_display_local_with_zone_and_date_when_days_change() -> None:
    from datetime import UTC, datetime
    from zoneinfo import ZoneInfo

    from orchestrator.cli.text import TimeDisplay

    chicago = TimeDisplay(zone=ZoneInfo("America/Chicago"))
    assert chicago.stamp(datetime(2026, 2, 2, 15, 0, 0, tzinfo=UTC)) == "09:00:00 CST"
    assert chicago.stamp(datetime(2026, 2, 3, 7, 0, 0, tzinfo=UTC)) == "2026-02-03 01:00:00 CST"
    utc = TimeDisplay(utc=True, zone=ZoneInfo("America/Chicago"))
    assert utc.stamp(datetime(2026, 2, 2, 15, 0, 0)) == "15:00:00 UTC"


def test_display_utc_in_the_config(tmp_path: Path) -> None:
    from orchestrator.config import parse_config

    data = config_dict("sqlite:///x.db", preset="minimal")
    assert parse_config(data, tmp_path / "a.toml", environ={}).display_utc is False
    data["display"] = {"utc": True}
    assert parse_config(data, tmp_path / "a.toml", environ={}).display_utc is True
    data["display"] = {"utc": "yes"}
    from orchestrator.errors import ConfigError

    with pytest.raises(ConfigError, match="display.utc"):
        parse_config(data, tmp_path / "a.toml", environ={})


# ---------------------------------------------------------------------------------------------
# NO_COLOR and non-tty


def test_piped_output_has_no_escape_codes(hwf: Any, sim: Simulator) -> None:
    set_id = make_set(sim, 4, name="Plain")
    hwf("add", set_id)
    for args in (("status",), ("check", set_id), ("advance", set_id), ("history", set_id, "--steps")):
        result = hwf(*args)
        assert not ANSI.search(result.stdout) and not ANSI.search(result.stderr), args


def test_no_color_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from rich.console import Console

    from orchestrator.cli.render import print_status
    from orchestrator.service.views import SetSummary

    rows = [SetSummary("7593466560004641", "Set", "created", "records need fixing", 4)]
    monkeypatch.setenv("NO_COLOR", "1")
    buffer = io.StringIO()
    print_status(Console(file=buffer, force_terminal=True, width=80), rows)
    assert "\x1b[31m" not in buffer.getvalue() and "ATTENTION" in buffer.getvalue()
    monkeypatch.delenv("NO_COLOR")
    buffer = io.StringIO()
    print_status(Console(file=buffer, force_terminal=True, width=80, color_system="standard"), rows)
    assert "\x1b[31m" in buffer.getvalue()
