"""Randomized crash test (seeded, bounded): rounds of ``hwf resume --all`` over several sets, each SIGKILLed at a
random moment, the test playing the operator (``hwf fix --apply``) where a set asks for it; then a final
resume. After it: every set verified, one Alma job per (set, step), steps in order. The long version with
200 kill points is bench/soak.py."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from tests.support import write_config
from tests.support.crash import MODES, add_sets, check, database_url, finish, kill_rounds, query, serve

SEED = 20260202
ROUNDS = 16


@pytest.mark.parametrize("mode", MODES)
def test_random_kills_over_three_sets_leave_every_invariant(tmp_path: Path, mode: str) -> None:
    server = serve(tmp_path, job_seconds=1.5)
    try:
        config = write_config(tmp_path, server.url, preset="crash", lease_seconds=5, integration=mode)
        sets = add_sets(config, server, ["clean", "demo", "clean"], records=12)
        log = kill_rounds(config, ROUNDS, random.Random(SEED), low=0.4, high=1.6, served=server)
        assert log.killed >= 6, f"most rounds should have been killed mid-work: {log}"
        print(
            f"random kills ({mode}): {log.killed} killed, {log.ended} ended by themselves, {log.fixes} fixes, "
            f"{log.presses} presses of Run"
        )
        finish(config, server, sets)
        verdict = check(config, server, sets)
        assert verdict.ok, f"{verdict} (after {log.killed} kills)"
        integrations = 3  # one per set by API; one per integration batch by hand
        if mode == "manual":
            integrations = query(database_url(config), "SELECT count(*) FROM integration_batches")[0][0]
            assert 1 <= integrations <= 3
        assert verdict.runs == 1 + 3 + integrations  # copy (the demo set), migration of each set, integration
    finally:
        server.stop()
