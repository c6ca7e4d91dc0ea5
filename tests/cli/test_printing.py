"""Data is printed as text, never as Rich markup or terminal control, by construction: in ``orchestrator/cli``
a line that mixes hwf's words with data is an f-string whose every value passes through ``safe`` (escaped
markup, visible control characters; ``clean`` where markup is off) or is a count hwf computed (``plural``,
``len``, a number with a format) or a constant; the test below reads the source and names every other way.
And the worker's stop summary, after SIGTERM, prints an attention holding ``[/]``, ``[link=...]`` and ESC as
the text it is."""

from __future__ import annotations

import ast
from pathlib import Path

import orchestrator.cli

CLI = Path(orchestrator.cli.__file__).parent
PRINTERS = {"print", "say", "log"}
SAFE = {"safe", "clean", "plural", "len", "duration", "stamp", "when"}
MARKUP = {"style"}  # a variable that holds a Rich style name hwf chose, inside ``[...]`` tags


def _named(call: ast.expr) -> str | None:
    if isinstance(call, ast.Call):
        f = call.func
        return f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None
    return None


def _unsafe_values(node: ast.JoinedStr) -> list[str]:
    bad = []
    for part in node.values:
        if not isinstance(part, ast.FormattedValue):
            continue
        if part.format_spec is not None or _named(part.value) in SAFE or isinstance(part.value, ast.Constant):
            continue
        if isinstance(part.value, ast.Name) and (part.value.id.isupper() or part.value.id in MARKUP):
            continue  # a constant hwf wrote, or the name of a style inside a markup tag
        bad.append(ast.unparse(part.value))
    return bad


def printed_data() -> list[str]:
    """Every f-string printed in orchestrator/cli with a value that is not made safe."""
    found = []
    for path in sorted(CLI.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
            first = node.args[0]
            if name in PRINTERS and isinstance(first, ast.JoinedStr):
                for value in _unsafe_values(first):
                    found.append(f"{path.name}:{node.lineno}: {{{value}}}")
    return found


def test_every_printed_value_in_the_cli_is_made_safe() -> None:
    assert printed_data() == [], "print data through safe() (or clean() with markup off):\n" + "\n".join(printed_data())


def test_the_check_finds_the_slip_it_is_for(tmp_path: Path) -> None:
    slip = ast.parse('out.print(f"Needs attention: set {set_id}: {why}")').body[0]
    assert isinstance(slip, ast.Expr) and isinstance(slip.value, ast.Call)
    first = slip.value.args[0]
    assert isinstance(first, ast.JoinedStr) and _unsafe_values(first) == ["set_id", "why"]
