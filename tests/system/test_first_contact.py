"""First contact with a real Alma, end to end: the real ``hwf`` against ``hwf sim serve`` over HTTP.

A logical set is snapshotted (no job ever runs on the logical set); members that join or leave the Alma set
while hwf works stop that set before any submission; manual integration binds a person's click of Run to an
integration batch (two candidate runs need ``hwf confirm``; a run of the wrong job, or on another set, is never
bound); a job Alma will not run through the API (402231) becomes a step run by hand, bound by the set's name;
and SIGKILLs between making a batch's Alma set and recording it, and between the click and the binding, leave
no twin set and no run bound twice. After each: every record went through each step once, in order.
"""

from __future__ import annotations

import csv
import json
import signal
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import write_config
from tests.support.config import DEFAULT_JOBS
from tests.support.crash import Presser, assert_invariants, kill, press_batches, query, register, serve, status
from tests.support.e2e import E2E_KEY, Served, hwf, start, wait_for

MIGRATION_JOB, EXPORT_JOB = "M2234567890000561", "M44"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    server = serve(tmp_path, job_seconds=0.3)
    yield server
    server.stop()


def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'hwf.db'}"


def colleague(served: Served, set_id: str, op: str, mms_ids: list[str]) -> None:
    """A colleague changes the Alma set through Alma's own API (``op``: add_members, delete_members)."""
    reply = httpx.post(
        f"{served.url}/almaws/v1/conf/sets/{set_id}",
        params={"op": op},
        json={"members": {"member": [{"id": m} for m in mms_ids]}},
        headers={"Authorization": f"apikey {E2E_KEY}", "Accept": "application/json"},
        timeout=30,
    )
    assert reply.status_code == 200, reply.text


def new_records(served: Served, count: int, profile: str = "clean", seed: int = 7, prefix: str = "") -> list[str]:
    body = {"count": count, "profile": profile, "seed": seed, "title_prefix": prefix}
    return list(served.call("POST", "/_sim/records", body)["mms_ids"])


def runs(served: Served) -> list[dict[str, Any]]:
    return list(served.call("GET", "/_sim/state?full=1")["job_runs"])


def only_set(config: Path) -> str:
    (row,) = status(config)
    return str(row["set"])


def ok(result: Any) -> Any:
    assert result.returncode == 0, result.stdout + result.stderr
    return result


# ---------------------------------------------------------------------------------------------
# logical sets and drift


def test_a_logical_set_is_snapshotted_and_no_job_ever_runs_on_it(served: Served, tmp_path: Path) -> None:
    config = write_config(tmp_path, served.url, preset="crash")
    new_records(served, 9, prefix="Snapshot me ")
    body = {"name": "All Digital Titles in DCAP01 Format", "query": {"title_contains": "snapshot me"}}
    logical = str(served.call("POST", "/_sim/logical-sets", body)["id"])
    added = ok(hwf(config, "add", logical))
    assert f"Alma set {logical} is LOGICAL" in added.stderr and "itemized snapshot" in added.stderr
    snapshot = only_set(config)
    assert snapshot != logical and "9 records" in added.stdout
    assert "All Digital Titles in DCAP01 Format (hwf snapshot " in added.stdout
    new_records(served, 2, seed=8, prefix="Snapshot me ")  # the saved search grows; the snapshot does not
    ok(hwf(config, "resume", "--all"))
    assert all(r["set_id"] != logical for r in runs(served))
    assert served.state()["sets"][logical]["member_count"] == 11  # never changed by hwf
    history = json.loads(ok(hwf(config, "history", snapshot, "--json")).stdout)
    assert any(f"a snapshot of logical set {logical}" in e["detail"] for e in history if e["kind"] == "added")
    assert_invariants(config, served, {snapshot: "clean"})


def test_members_that_join_after_the_copy_and_after_the_migration_never_meet_a_later_job(
    served: Served, tmp_path: Path
) -> None:
    config = write_config(tmp_path, served.url, preset="crash")
    ids = new_records(served, 8, profile="demo", seed=3)
    (tmp_path / "ids.csv").write_text("mms_id\n" + "\n".join(ids) + "\n")
    ok(hwf(config, "add", "--from-csv", str(tmp_path / "ids.csv"), "--name", "Late joiners"))
    set_id = only_set(config)
    first = hwf(config, "advance", set_id)
    assert first.returncode == 3 and "NEEDS_FIX" in first.stderr  # the copy job ran; the trap needs `hwf fix`
    ok(hwf(config, "fix", set_id, "--apply"))

    after_copy = new_records(served, 1, seed=11)[0]
    colleague(served, set_id, "add_members", [after_copy])
    stopped = hwf(config, "advance", set_id)
    assert stopped.returncode == 3 and "drift" in stopped.stderr and after_copy in stopped.stderr
    assert f"hwf sync {set_id}" in stopped.stderr
    assert [r["kind"] for r in served.runs_for(set_id)] == ["copy"]  # nothing was submitted
    synced = ok(hwf(config, "sync", set_id))  # hwf made this set: it takes the late record out itself
    assert after_copy in synced.stdout and "later set" in synced.stdout

    ok(hwf(config, "advance", set_id, "--no-wait"))  # the migration job is submitted; hwf does not wait
    wait_for(
        lambda: [r for r in served.runs_for(set_id) if r["kind"] == "migration" and r["status"] != "RUNNING"],
        what="the migration run's end",
    )
    after_migration = new_records(served, 1, seed=12)[0]
    colleague(served, set_id, "add_members", [after_migration])
    stopped = hwf(config, "advance", set_id)
    assert stopped.returncode == 3 and "drift" in stopped.stderr and after_migration in stopped.stderr
    assert [r["kind"] for r in served.runs_for(set_id)] == ["copy", "migration"]
    ok(hwf(config, "sync", set_id))
    ok(hwf(config, "advance", set_id))

    for run in runs(served):
        assert after_copy not in run.get("members", []) and after_migration not in run.get("members", []), run
    assert_invariants(config, served, {set_id: "demo"})


def test_a_member_that_left_the_set_is_marked_in_the_report(served: Served, tmp_path: Path) -> None:
    config = write_config(tmp_path, served.url, preset="crash")
    set_id = served.make_set("Shrinking", 6, profile="clean", seed=5)
    ok(hwf(config, "add", set_id))
    gone = served.state()["sets"][set_id]["members"][0]
    colleague(served, set_id, "delete_members", [gone])
    stopped = hwf(config, "advance", set_id)
    assert stopped.returncode == 3 and f"1 removed ({gone})" in stopped.stderr
    assert served.runs_for(set_id) == []
    ok(hwf(config, "sync", set_id))
    ok(hwf(config, "advance", set_id))
    report = ok(hwf(config, "report", set_id, "--format", "csv")).stdout
    rows = {r["MMS ID"]: r for r in csv.DictReader(report.splitlines())}
    assert rows[gone]["Excluded"] == "TRUE" and rows[gone]["Detail"].startswith(f"excluded: left Alma set {set_id}")
    assert_invariants(config, served, {set_id: "clean"})


# ---------------------------------------------------------------------------------------------
# a step Alma will not run by API


def test_402231_on_the_migration_then_a_run_by_hand_is_bound_by_the_set_name(tmp_path: Path) -> None:
    served = serve(tmp_path, job_seconds=0.3, multi_task_jobs=["migration"])
    try:
        config = write_config(tmp_path, served.url, preset="crash")
        set_id = served.make_set("Several tasks", 5, profile="clean", seed=2)
        decoy = served.make_set("Several tasks - Old", 5, profile="clean", seed=3)
        ok(hwf(config, "add", set_id))
        ok(hwf(config, "resume", "--all"))  # refused: the set now waits for a person's run
        (row,) = status(config)
        assert row["state"] == "identifiers_copied" and "402231" in (row["attention"] or "")
        assert "Admin > Run a Job" in row["attention"] and served.runs_for(set_id) == []
        served.call("POST", "/_sim/run-job", {"job_id": MIGRATION_JOB, "set_id": decoy})  # not this set
        ok(hwf(config, "resume", "--all"))
        assert status(config)[0]["state"] == "identifiers_copied"
        mine = served.call("POST", "/_sim/run-job", {"job_id": MIGRATION_JOB, "set_id": set_id})["instance_id"]
        ok(hwf(config, "resume", "--all"))
        assert status(config)[0]["state"] == "verified"
        steps = json.loads(ok(hwf(config, "history", set_id, "--steps", "--json")).stdout)
        assert [s["instance_id"] for s in steps if s["step"] == "migrate" and s["instance_id"]] == [mine]
        assert_invariants(config, served, {set_id: "clean"})
    finally:
        served.stop()


# ---------------------------------------------------------------------------------------------
# integration batches


def test_twenty_sets_in_manual_mode_two_batches_two_clicks_under_the_worker(served: Served, tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        served.url,
        preset="crash",
        integration="manual",
        jobs={**DEFAULT_JOBS, "integration_batch_max_records": 50},
    )
    ids = [served.make_set(f"Daily {n:02d}", 5, profile="clean", seed=40 + n) for n in range(20)]
    register(config, ids)
    log = (tmp_path / "worker.log").open("w")
    worker = start(config, "resume", "--all", "--follow", stdout=log, stderr=log)
    verified = "SELECT count(*) FROM sets WHERE state = 'verified'"
    try:
        with Presser(config, served) as operator:
            wait_for(lambda: query(db_url(tmp_path), verified)[0][0] == 20, timeout=240, what="twenty sets verified")
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=60) == 0
    finally:
        kill(worker)
        log.close()
    assert len(operator.pressed) == 2, operator.pressed
    integrations = [r for r in runs(served) if r["kind"] == "integration"]
    assert len(integrations) == 2 and {r["member_count"] for r in integrations} == {50}
    assert all(r["origin"] != "api" for r in integrations)  # both pressed by a person
    assert_invariants(config, served, dict.fromkeys(ids, "clean"))
    output = (tmp_path / "worker.log").read_text()
    assert "integration batch 1" in output and "integration batch 2" in output


def test_until_idle_exits_once_only_the_click_is_missing(served: Served, tmp_path: Path) -> None:
    config = write_config(tmp_path, served.url, preset="crash", integration="manual")
    set_id = served.make_set("Idle", 4, profile="clean", seed=9)
    ok(hwf(config, "add", set_id))
    result = hwf(config, "resume", "--all", "--follow", "--until-idle", timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    (row,) = status(config)
    assert row["state"] == "migrated" and "press Run on the Handle integration profile" in (row["waiting"] or "")
    overview = json.loads(ok(hwf(config, "overview", "--json")).stdout)
    (batch,) = overview["batches"]
    assert batch["needs_person"] and "Create and Update" in batch["clicks"] and "Do not add" in batch["clicks"]


def test_two_candidate_runs_are_attention_and_confirm_by_the_batch_name_binds_one(
    served: Served, tmp_path: Path
) -> None:
    config = write_config(tmp_path, served.url, preset="crash", integration="manual")
    set_id = served.make_set("Twice pressed", 4, profile="clean", seed=9)
    ok(hwf(config, "add", set_id))
    ok(hwf(config, "resume", "--all"))
    (batch,) = json.loads(ok(hwf(config, "overview", "--json")).stdout)["batches"]
    first = served.call("POST", "/_sim/press-run", {"set_name": batch["name"]})["instance_id"]
    second = served.call("POST", "/_sim/press-run", {"set_name": batch["name"], "user": "asmith"})["instance_id"]
    wait_for(lambda: all(r["status"] != "RUNNING" for r in runs(served)), what="both runs' end")
    stuck = hwf(config, "resume", "--all")
    assert stuck.returncode == 3, stuck.stdout + stuck.stderr
    assert first in stuck.stderr and second in stuck.stderr and "hwf confirm" in stuck.stderr
    ok(hwf(config, "confirm", batch["name"], "--instance", second))
    refused = hwf(config, "confirm", set_id, "--instance", first)  # the batch is bound: no second binding
    assert refused.returncode != 0
    ok(hwf(config, "resume", "--all"))
    assert status(config)[0]["state"] == "verified"
    history = json.loads(ok(hwf(config, "history", set_id, "--json")).stdout)
    bound = [e for e in history if e["kind"] == "reconciled" and e.get("batch")]
    assert [e["instance_id"] for e in bound] == [second]


def test_a_person_run_of_the_wrong_job_or_on_another_set_is_never_bound(served: Served, tmp_path: Path) -> None:
    config = write_config(tmp_path, served.url, preset="crash", integration="manual")
    set_id = served.make_set("Mine", 4, profile="clean", seed=9)
    ok(hwf(config, "add", set_id))
    served.make_set("Someone else's, same size", 4, profile="clean", seed=10)
    ok(hwf(config, "resume", "--all"))
    (batch,) = json.loads(ok(hwf(config, "overview", "--json")).stdout)["batches"]
    served.call("POST", "/_sim/run-job", {"job_id": EXPORT_JOB, "set_id": batch["alma_set_id"]})  # wrong job
    served.call("POST", "/_sim/press-run", {"set_name": "Someone else's, same size"})  # on another set
    wait_for(lambda: all(r["status"] != "RUNNING" for r in runs(served)), what="the runs' end")
    ok(hwf(config, "resume", "--all"))
    (row,) = status(config)
    assert row["state"] == "migrated" and row["attention"] is None and "press Run" in (row["waiting"] or "")
    right = served.call("POST", "/_sim/press-run", {"set_name": batch["name"]})["instance_id"]
    ok(hwf(config, "resume", "--all"))
    assert status(config)[0]["state"] == "verified"
    history = json.loads(ok(hwf(config, "history", set_id, "--json")).stdout)
    assert [e["instance_id"] for e in history if e["kind"] == "reconciled" and e.get("batch")] == [right]
    assert_invariants(config, served, {set_id: "clean"})


# ---------------------------------------------------------------------------------------------
# crashes around the batch


def test_kill_between_making_the_batch_set_and_recording_it_leaves_no_twin(served: Served, tmp_path: Path) -> None:
    config = write_config(tmp_path, served.url, preset="crash", integration="manual")
    ids = [served.make_set(f"Twin check {n}", 4, profile="clean", seed=60 + n) for n in range(2)]
    for set_id in ids:
        ok(hwf(config, "add", set_id))
    served.faults(create_set_reply_delay_s=60)  # Alma makes the batch's set, and its reply is slow to come back
    proc = start(config, "resume", "--all")
    made = lambda: [s for s in served.state()["sets"].values() if s["name"].startswith("hwf integration batch 1 ")]  # noqa: E731
    wait_for(made, timeout=120, what="the batch's Alma set")
    kill(proc)
    served.faults(create_set_reply_delay_s=0)
    assert query(db_url(tmp_path), "SELECT state, alma_set_id FROM integration_batches") == [("creating", None)]

    ok(hwf(config, "resume", "--all"))
    assert len(made()) == 1  # found again by its name: no twin
    assert press_batches(config, served)
    ok(hwf(config, "resume", "--all"))
    assert {row["state"] for row in status(config)} == {"verified"}
    assert query(db_url(tmp_path), "SELECT count(*) FROM integration_batches")[0][0] == 1
    assert_invariants(config, served, dict.fromkeys(ids, "clean"))


def test_kill_between_the_click_and_the_binding_binds_the_run_once(served: Served, tmp_path: Path) -> None:
    config = write_config(tmp_path, served.url, preset="crash", integration="manual")
    set_id = served.make_set("Click then crash", 4, profile="clean", seed=9)
    ok(hwf(config, "add", set_id))
    ok(hwf(config, "resume", "--all"))
    assert press_batches(config, served)
    wait_for(lambda: all(r["status"] != "RUNNING" for r in runs(served)), what="the person's run's end")
    served.faults(alma_latency_ms=1500)  # hwf's look at the job's runs takes 1.5 s ...
    proc = start(config, "resume", "--all")
    db = tmp_path / "hwf.db"
    claimed = "SELECT count(*) FROM integration_batches WHERE lease_owner IS NOT NULL"
    wait_for(lambda: query(db_url(tmp_path), claimed)[0][0], timeout=60, what="hwf at the batch")
    lock = sqlite3.connect(db, timeout=30, isolation_level=None)
    lock.execute("BEGIN IMMEDIATE")  # ... and then it cannot record what it found
    try:
        time.sleep(2.5)
        kill(proc)
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    served.faults(alma_latency_ms=0)
    assert query(db_url(tmp_path), "SELECT state, instance_id FROM integration_batches") == [("announced", None)]

    ok(hwf(config, "resume", "--all"))
    assert status(config)[0]["state"] == "verified"
    history = json.loads(ok(hwf(config, "history", set_id, "--json")).stdout)
    assert len([e for e in history if e["kind"] == "reconciled" and e.get("batch")]) == 1
    assert len([r for r in runs(served) if r["kind"] == "integration"]) == 1
    assert_invariants(config, served, {set_id: "clean"})
