"""Layout figures for the code map: modules and their size, the longest functions, imports inside functions,
import cycles, imports of another file's private names, who writes a set's status fields, and runs of
repeated lines.

``--check`` fails on: a function over the line limit (80), a module over the module limit (500 lines), a
cross-file private import, a write of a set's status fields (``attention``, ``attention_kind``, ``waiting``,
``wait_until``) anywhere but their one owner (``orchestrator/store/ledger.py``), or a citation of a design
note that is not in the repository. The simulator and the migrations are left out of those rules.

Run: ``python .ci/layout.py [--check] [--limit 80] [--module-limit 500] [--long 50] [PACKAGE_DIR]``;
``python .ci/layout.py --repeats tests`` counts repeated runs of lines in any folder.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from collections import defaultdict
from pathlib import Path

EXEMPT = ("simulator", "migrations")
STATUS_FIELDS = ("attention", "attention_kind", "waiting", "wait_until")
STATUS_OWNER = "store/ledger.py"
CITATION = re.compile(r"\b(DESIGN|STYLE|INTERFACE)\.md\b")
WINDOW = 6  # lines in a run that counts as repeated


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def resolve(current: str, is_pkg: bool, level: int, module: str | None) -> str:
    if level == 0:
        return module or ""
    base = current.split(".")
    base = base if is_pkg else base[:-1]
    base = base[: len(base) - (level - 1)] if level > 1 else base
    return ".".join(base + ([module] if module else []))


class Figures:
    """What one pass over the package finds."""

    def __init__(self) -> None:
        self.graph: dict[str, set[str]] = {}
        self.functions: list[tuple[int, str]] = []
        self.private_imports: list[str] = []
        self.inner_imports: list[str] = []
        self.status_writes: list[str] = []
        self.citations: list[str] = []
        self.sizes: list[tuple[int, str]] = []


def _imports(
    fig: Figures, name: str, is_pkg: bool, node: ast.AST, modules: dict[str, Path], where: str | None
) -> None:
    """Record the module edges an import makes, and (unless ``where`` is None) imports of private names."""
    if isinstance(node, ast.ImportFrom):
        target = resolve(name, is_pkg, node.level, node.module)
        for alias in node.names:
            full = f"{target}.{alias.name}"
            dep = full if full in modules else target
            if dep in modules and dep != name:
                fig.graph[name].add(dep)
            if where is not None and alias.name.startswith("_") and not alias.name.startswith("__"):
                fig.private_imports.append(f"{where}: {alias.name} from {target}")
    elif isinstance(node, ast.Import):
        for alias in node.names:
            if alias.name in modules and alias.name != name:
                fig.graph[name].add(alias.name)


def _status_writes(node: ast.AST) -> list[tuple[int, str]]:
    """Assignments to a set's status fields on anything but ``self``."""
    targets: list[ast.expr] = []
    if isinstance(node, ast.Assign):
        targets = node.targets
    elif isinstance(node, ast.AugAssign | ast.AnnAssign):
        targets = [node.target]
    found = []
    for target in targets:
        for part in ast.walk(target):
            if (
                isinstance(part, ast.Attribute)
                and part.attr in STATUS_FIELDS
                and isinstance(part.ctx, ast.Store)
                and not (isinstance(part.value, ast.Name) and part.value.id == "self")
            ):
                found.append((node.lineno, part.attr))
    return found


def measure(root: Path) -> Figures:
    fig = Figures()
    files = sorted(root.rglob("*.py"))
    modules = {module_name(root, p): p for p in files}
    fig.graph = {m: set() for m in modules}
    for name, path in modules.items():
        text = path.read_text(encoding="utf-8")
        tree = ast.parse(text)
        rel = path.relative_to(root.parent)
        exempt = any(part in EXEMPT for part in path.relative_to(root).parts)
        is_pkg = path.name == "__init__.py"
        if not exempt:
            fig.sizes.append((len(text.splitlines()), str(rel)))
            fig.citations += [f"{rel}:{n}" for n, line in enumerate(text.splitlines(), 1) if CITATION.search(line)]
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and not exempt:
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                fig.functions.append((length, f"{rel}:{node.lineno} {node.name}"))
                inner = [n for n in ast.walk(node) if isinstance(n, ast.Import | ast.ImportFrom)]
                fig.inner_imports += [f"{rel}:{n.lineno}" for n in inner]
            _imports(fig, name, is_pkg, node, modules, None if exempt else str(rel))
            if not exempt and not str(rel).endswith(STATUS_OWNER):
                fig.status_writes += [f"{rel}:{line} .{attr}" for line, attr in _status_writes(node)]
    fig.inner_imports = sorted(set(fig.inner_imports))
    return fig


def repeats(folder: Path) -> list[tuple[str, str]]:
    """Pairs of places (file:line) that share a run of ``WINDOW`` identical lines of code (blank lines, comments
    and imports left out, white space folded), one pair per two files and first shared run."""
    places: dict[tuple[str, ...], list[tuple[str, int]]] = defaultdict(list)
    for path in sorted(folder.rglob("*.py")):
        lines = []
        for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            text = " ".join(raw.split())
            if not text or text.startswith(("#", "import ", "from ")) or text in ("(", ")", "]", "}", "):", "],"):
                continue
            lines.append((number, text))
        for i in range(len(lines) - WINDOW + 1):
            places[tuple(t for _, t in lines[i : i + WINDOW])].append((str(path.relative_to(folder)), lines[i][0]))
    pairs: dict[tuple[str, str], tuple[str, str]] = {}
    for where in places.values():
        if len(where) < 2 or len(where) > 8:  # a run in more than eight places is boilerplate, not a copy
            continue
        for a in range(len(where)):
            for b in range(a + 1, len(where)):
                key = (where[a][0], where[b][0])
                pairs.setdefault(key, (f"{where[a][0]}:{where[a][1]}", f"{where[b][0]}:{where[b][1]}"))
    return sorted(pairs.values())


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("package", nargs="?", default="orchestrator")
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--limit", type=int, default=80)
    ap.add_argument("--module-limit", type=int, default=500)
    ap.add_argument("--long", type=int, default=50, help="functions longer than this are listed")
    ap.add_argument("--repeats", metavar="FOLDER", help="only count repeated runs of lines in FOLDER")
    args = ap.parse_args()
    if args.repeats:
        found = repeats(Path(args.repeats))
        print(f"pairs of places sharing {WINDOW} or more repeated lines in {args.repeats}: {len(found)}")
        for a, b in found:
            print(f"  {a} ~ {b}")
        return 0
    root = Path(args.package).resolve()
    fig = measure(root)
    fig.functions.sort(reverse=True)
    over = [f for f in fig.functions if f[0] > args.limit]
    long = [f for f in fig.functions if f[0] > args.long]
    big = sorted((s for s in fig.sizes if s[0] > args.module_limit), reverse=True)
    cycles = find_cycles(fig.graph)
    print(f"modules: {len(fig.graph)} ({len(fig.sizes)} outside the simulator and the migrations)")
    print(f"modules over {args.module_limit} lines: {len(big)}" + "".join(f"\n  {n:5d} {p}" for n, p in big))
    print(f"functions over {args.long} lines: {len(long)}; over {args.limit}: {len(over)}")
    for n, where in over:
        print(f"  {n:4d} {where}")
    print(f"imports inside functions: {len(fig.inner_imports)}")
    print(f"import cycles (module level and in functions): {len(cycles)}")
    for cycle in cycles[:20]:
        print("  " + " -> ".join(cycle))
    print(f"cross-file private imports: {len(fig.private_imports)}")
    for line in fig.private_imports:
        print("  " + line)
    print(f"writes of a set's status fields outside {STATUS_OWNER}: {len(fig.status_writes)}")
    for line in fig.status_writes:
        print("  " + line)
    print(f"citations of design notes that are not in the repository: {len(fig.citations)}")
    for line in fig.citations:
        print("  " + line)
    failed = over or big or fig.private_imports or fig.status_writes or fig.citations
    return 1 if args.check and failed else 0


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each as a sample path."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]
    sys.setrecursionlimit(10000)

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


if __name__ == "__main__":
    raise SystemExit(main())
