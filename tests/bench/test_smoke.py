"""The benchmarks in bench/ keep working: each runs at toy size without latency, and the checks that do
not depend on timing (API call counts, verdicts, every result stored) must hold. No timing asserts."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from bench import check_bench, fix_bench, startup, verify_bench, verify_e2e


def _passed(res: object, prefix: str) -> list[bool]:
    return [ok for name, ok in res.targets if name.startswith(prefix)]  # type: ignore[attr-defined]


def test_check_bench_counts_calls_at_toy_size(capsys: pytest.CaptureFixture[str]) -> None:
    res = check_bench.run(n=200, latency_ms=0, naive_sample=5)
    calls = _passed(res, "API calls")
    assert len(calls) == 3 and all(calls), capsys.readouterr().out
    # An unreadable record breaks its whole XML batch: bisection reads it alone, not the batch one by one.
    problems_xml = res.values["calls_problems_xml"]
    assert problems_xml["check"].get("bib", 0) == 0
    assert problems_xml["check"]["bibs"] < 200
    assert res.values["check_seconds"] > 0 and res.values["classify_rate"] > 0


def test_verify_bench_streams_and_survives_faults_at_toy_size(capsys: pytest.CaptureFixture[str]) -> None:
    # 300 > verification.FLUSH_EVERY and 1,100 > verification.PAGE: results are written while the
    # records are still being read, which once deadlocked SQLite (BEGIN IMMEDIATE) past 250 records.
    res = verify_bench.run(
        n=300,
        latency_ms=0,
        seq_sample=10,
        rate_429=0.02,
        retry_after=0,
        wrong=3,
        memory_n=1100,
    )
    out = capsys.readouterr().out
    for name in (
        "every handle OK",
        "zero ERROR verdicts under 2 % transient errors",
        "zero false WRONG_* verdicts (and every real one found)",
        "every one of 1,100 results stored",
    ):
        assert _passed(res, name) == [True], out
    assert res.values["memory"]["peak_mb"] > 0


def test_dashboard_bench_at_toy_size(capsys: pytest.CaptureFixture[str]) -> None:
    from bench import dashboard

    dashboard.measure(sets=12, records=5, repeat=1, browser=False)
    out = capsys.readouterr().out
    assert "12 sets of 5 records written" in out
    for path in ("/sets", "/api/sets", "/", "/api/overview"):
        assert f"GET {path} " in out


def test_fix_bench_runs_the_cli_and_counts_calls_at_toy_size(capsys: pytest.CaptureFixture[str]) -> None:
    res = fix_bench.run([(130, 1000.0)], latency_ms=0)
    out = capsys.readouterr().out
    for name in ("Alma calls", "never above the cap", "every record repaired"):
        assert _passed(res, f"130@1000: {name}") == [True], out
    assert res.values["130@1000.calls"] == 130 + 3 * 2


def test_verify_e2e_runs_hwf_and_the_script_against_the_stdlib_server(capsys: pytest.CaptureFixture[str]) -> None:
    assert verify_e2e.main(["--n", "40", "--runs", "1", "--latency-ms", "1"]) in (0, 1), capsys.readouterr().out


def test_verify_e2e_counts_the_requests_with_handles_stale_in_the_public_cache(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = tmp_path / "e2e.json"
    code = verify_e2e.main(["--n", "30", "--stale", "4", "--runs", "1", "--latency-ms", "1", "--json", str(out)])
    assert code == 0, capsys.readouterr().out  # no timing target: the request count and the verdicts
    assert json.loads(out.read_text())["stale_requests"] == 34


def test_startup_measures_the_read_commands_on_the_demo(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    demo = tmp_path / "demo"
    subprocess.run([startup.HWF, "demo", "--records", "5", "--job-seconds", "0.2", "--dir", str(demo)], check=True)
    assert startup.main(["--config", str(demo / "hwf.toml"), "--runs", "1"]) == 0
    text = capsys.readouterr().out
    assert all(f"hwf {name}: median" in text for name in ("status", "overview", "history SET")), text
