"""Layout figures for the code map (issue 10): modules, the longest functions, import cycles and
imports of another file's private names. ``--check`` fails on a function over the line limit or a
cross-file private import (outside the simulator and the migrations).

Run: ``python .ci/layout.py [--check] [--limit 80] [PACKAGE_DIR]``
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

EXEMPT = ("simulator", "migrations")


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


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("package", nargs="?", default="orchestrator")
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--limit", type=int, default=80)
    args = ap.parse_args()
    root = Path(args.package).resolve()
    files = sorted(p for p in root.rglob("*.py"))
    modules = {module_name(root, p): p for p in files}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    long_functions: list[tuple[int, str]] = []
    private_imports: list[str] = []
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        exempt = any(part in EXEMPT for part in path.relative_to(root).parts)
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and not exempt:
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                long_functions.append((length, f"{path.relative_to(root.parent)}:{node.lineno} {node.name}"))
            if isinstance(node, ast.ImportFrom):
                target = resolve(name, is_pkg, node.level, node.module)
                for alias in node.names:
                    full = f"{target}.{alias.name}"
                    dep = full if full in modules else target
                    if dep in modules and dep != name:
                        graph[name].add(dep)
                    if alias.name.startswith("_") and not alias.name.startswith("__") and not exempt:
                        private_imports.append(f"{path.relative_to(root.parent)}: {alias.name} from {target}")
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name in modules and alias.name != name:
                        graph[name].add(alias.name)
    cycles = find_cycles(graph)
    long_functions.sort(reverse=True)
    over = [f for f in long_functions if f[0] > args.limit]
    print(f"modules: {len(modules)} ({sum(1 for m in modules if '.simulator' not in m)} outside the simulator)")
    print("longest functions: " + "; ".join(f"{n} lines {where}" for n, where in long_functions[:5]))
    print(f"functions over {args.limit} lines: {len(over)}")
    for n, where in over:
        print(f"  {n:4d} {where}")
    print(f"import cycles (module level and in functions): {len(cycles)}")
    for cycle in cycles[:20]:
        print("  " + " -> ".join(cycle))
    print(f"cross-file private imports: {len(private_imports)}")
    for line in private_imports:
        print("  " + line)
    if args.check and (over or private_imports):
        return 1
    return 0


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
