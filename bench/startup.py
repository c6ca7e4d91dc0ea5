"""Start-up of the read commands (issue 21): ``hwf status``, ``hwf overview`` and ``hwf history SET`` on the
database ``hwf demo`` leaves, wall time of the whole process over ``--runs`` runs each, and how many modules
each loads (``python -X importtime``). Also the CPU time (user + system) of each process: on a machine shared with
other work, wall time varies from run to run far more than the CPU an import takes.

Run: ``hwf demo`` first (it prints its config's path), then
``.venv/bin/python -m bench.startup --config hwf-demo/hwf.toml [--runs 10]``. hwf's modules are byte-compiled
first, as ``pip install`` leaves them. ``python -c pass`` is the interpreter's own start-up, for scale.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from .common import Results, header, machine
from .verify_e2e import compile_bytecode

HWF = shutil.which("hwf", path=str(Path(sys.executable).parent)) or "hwf"


def _env() -> dict[str, str]:
    return {**os.environ, "COLUMNS": "120"}


def wall(cmd: list[str], runs: int) -> tuple[list[float], list[float]]:
    """Wall time and CPU time (user + system) of ``cmd`` (a fresh process each run), seconds."""
    times, cpu = [], []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, env=_env())
        times.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return times, cpu


def modules(cmd: list[str]) -> int:
    """How many modules the command imports (lines of ``-X importtime``)."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "orchestrator", *cmd[1:]], capture_output=True)
    return sum(1 for line in done.stderr.decode().splitlines() if line.startswith("import time:")) - 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, required=True, help="the demo's hwf.toml")
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args(argv)
    compile_bytecode()
    res = Results("startup")
    header(f"start-up of the read commands, {args.runs} runs each: {machine()}")
    hwf = [HWF, "--config", str(args.config)]
    listed = subprocess.run([*hwf, "status", "--json"], check=True, capture_output=True, env=_env())
    first = json.loads(listed.stdout)[0]["set"]
    commands = {"python -c pass": [sys.executable, "-c", "pass"], "hwf version": [HWF, "version"]}
    commands |= {"hwf status": [*hwf, "status"], "hwf overview": [*hwf, "overview"]}
    commands["hwf history SET"] = [*hwf, "history", first]
    for name, cmd in commands.items():
        times, cpu = wall(cmd, args.runs)
        count = modules(cmd) if cmd[0] == HWF else 0
        loaded = f"; {count} modules" if count else ""
        res.measure(
            name,
            round(statistics.median(times), 3),
            f"{name}: median {statistics.median(times):.3f} s, best {min(times):.3f} s; CPU median "
            f"{statistics.median(cpu):.3f} s, best {min(cpu):.3f} s{loaded}",
        )
    res.summary()
    return 0


if __name__ == "__main__":
    sys.exit(main())
