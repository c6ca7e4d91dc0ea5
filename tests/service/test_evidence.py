"""``hwf evidence SET -o FILE.zip``: the support-case bundle, its contents, times in UTC and the institution's
zone, and no key or other secret anywhere in it."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path

import pytest

from orchestrator.simulator import Simulator
from tests.support import API_KEY, FakeClock, sim_wiring, write_config
from tests.support.ops import run, runner

WEBHOOK_TOKEN = "T0KEN-in-the-webhook-url-4242"


@pytest.fixture
def wired(sim: Simulator, clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> Simulator:
    monkeypatch.setenv("HWF_ALMA_API_KEY", API_KEY)
    monkeypatch.setattr(runner, "wiring", sim_wiring(sim, clock))
    return sim


def _repaired_set(path: Path, sim: Simulator) -> str:
    """A set that needed `hwf fix` (the demo profile's xsi:type trap), repaired and verified."""
    set_id = sim.create_set("Evidence titles", sim.generate_records(12, profile="demo", seed=3))
    assert run(path, "add", set_id).exit_code == 0
    assert run(path, "advance", set_id).exit_code == 3
    assert run(path, "fix", set_id, "--apply").exit_code == 0
    result = run(path, "advance", set_id)
    assert result.exit_code in (0, 3), result.output
    return set_id


def test_the_bundle_holds_everything_a_support_case_needs(tmp_path: Path, wired: Simulator) -> None:
    path = write_config(
        tmp_path,
        preset="cli",
        alma={"timezone": "America/Chicago"},
        notify={"urls": [f"json://127.0.0.1:9/{WEBHOOK_TOKEN}"]},
        operator={"name": "Ada"},
    )
    set_id = _repaired_set(path, wired)
    out = tmp_path / "case.zip"
    result = run(path, "evidence", set_id, "-o", str(out), "--json")
    assert result.exit_code == 0, result.output
    described = json.loads(result.output)
    with zipfile.ZipFile(out) as bundle:
        names = bundle.namelist()
        files = {name: bundle.read(name) for name in names}
    assert described["set"] == set_id and sorted(described["files"]) == sorted(names)
    for expected in (
        "README.txt",
        "set.json",
        "report.csv",
        "history.json",
        "history.txt",
        "attempts.json",
        "preflight.json",
        "backups.json",
        "config.json",
        "version.txt",
        "manifest.json",
    ):
        assert expected in names, names
    assert names[0] == "README.txt"

    attempts = json.loads(files["attempts.json"])
    finished = [a for a in attempts if a["raw_reply"]]
    assert {a["step"] for a in finished} == {"copy_identifiers", "migrate", "integrate"}
    for a in finished:
        raw = files[a["raw_reply"]]
        assert a["instance_id"].encode() in raw and a["status"].encode() in raw  # Alma's own reply
        assert a["finished_at"].endswith("Z") and a["finished_at_local"].endswith("-06:00")

    backups = json.loads(files["backups.json"])
    assert backups and all(b["state"] == "applied" for b in backups)
    before, after = files[backups[0]["before"]], files[backups[0]["after"]]
    assert before.count(b"xsi:type=") == after.count(b"xsi:type=") + 1  # the repair removed exactly one

    history = json.loads(files["history.json"])
    assert all(e["actor"] == "Ada" and e["host"] and e["at_local"].endswith("-06:00") for e in history)
    assert "CST" in files["history.txt"].decode() and "Z  " in files["history.txt"].decode()
    report = files["report.csv"].decode().splitlines()
    assert report[0].startswith("MMS ID,Handle URL") and len(report) == 13
    preflight = json.loads(files["preflight.json"])
    assert len(preflight) == 12 and {p["preflight"] for p in preflight} <= {"READY", "NEEDS_FIX", "NEEDS_COPY"}
    config = json.loads(files["config.json"])
    assert config["alma"]["timezone"] == "America/Chicago" and config["notify"]["urls"] == ["json://***"]
    assert files["version.txt"].startswith(b"hwf ")
    manifest = {m["file"]: m for m in json.loads(files["manifest.json"])}
    assert set(manifest) == set(names) - {"manifest.json"}
    assert all(hashlib.sha256(files[f]).hexdigest() == m["sha256"] for f, m in manifest.items())
    readme = files["README.txt"].decode()
    assert set_id in readme and "America/Chicago" in readme and "attempts.json" in readme

    everything = b"".join(files.values()) + out.read_bytes()
    assert API_KEY.encode() not in everything and WEBHOOK_TOKEN.encode() not in everything


def test_evidence_for_an_unknown_set_is_exit_2(tmp_path: Path, wired: Simulator) -> None:
    path = write_config(tmp_path, preset="cli")
    result = run(path, "evidence", "424242", "-o", str(tmp_path / "x.zip"))
    assert result.exit_code == 2 and result.output.startswith("Error: unknown set '424242'")
    assert not (tmp_path / "x.zip").exists()


def test_evidence_wants_a_zip_in_an_existing_folder(tmp_path: Path, wired: Simulator) -> None:
    path = write_config(tmp_path, preset="cli")
    set_id = wired.create_set("Small", wired.generate_records(3, profile="clean", seed=1))
    assert run(path, "add", set_id).exit_code == 0
    assert run(path, "evidence", set_id, "-o", str(tmp_path / "x.tar")).exit_code == 2
    missing = run(path, "evidence", set_id, "-o", str(tmp_path / "no" / "x.zip"))
    assert missing.exit_code == 2 and "does not exist" in missing.output


def test_an_unknown_time_zone_is_named_exit_2(tmp_path: Path, wired: Simulator) -> None:
    path = write_config(tmp_path, preset="cli", alma={"timezone": "America/Chicagoo"})
    result = run(path, "status")
    assert result.exit_code == 2
    assert result.output.strip() == (
        f"Error: {path}: key alma.timezone: unknown time zone 'America/Chicagoo' (an IANA name like America/Chicago)"
    )


def _verified_set(path: Path, sim: Simulator) -> str:
    set_id = sim.create_set("Bundled", sim.generate_records(4, profile="clean", seed=2))
    assert run(path, "add", set_id).exit_code == 0
    assert run(path, "advance", set_id).exit_code == 0
    return set_id


@pytest.mark.parametrize("instance_id", ["../../../../x", "..\\..\\..\\evil", "/etc/passwd", "a/../../b"])
def test_member_names_come_from_a_fixed_alphabet(tmp_path: Path, wired: Simulator, instance_id: str) -> None:
    """An instance id is Alma's word: in a member name it can never climb out of the folder the zip unpacks in."""
    import re
    import sqlite3

    path = write_config(tmp_path, preset="cli")
    set_id = _verified_set(path, wired)
    with sqlite3.connect(tmp_path / "hwf.db") as db:
        db.execute("UPDATE attempts SET instance_id = ?", (instance_id,))
        db.execute("UPDATE backups SET mms_id = ?", (instance_id,))
    out = tmp_path / "case.zip"
    assert run(path, "evidence", set_id, "-o", str(out)).exit_code == 0
    with zipfile.ZipFile(out) as bundle:
        names = bundle.namelist()
        attempts = json.loads(bundle.read("attempts.json"))
    jobs = [n for n in names if n.startswith("jobs/")]
    assert jobs and all(re.fullmatch(r"jobs/[A-Za-z0-9_-]+\.(json|xml)", n) for n in jobs), jobs
    assert all(re.fullmatch(r"[A-Za-z0-9_./-]+", n) and ".." not in n and not n.startswith("/") for n in names)
    assert {a["raw_reply"] for a in attempts if a["raw_reply"]} == set(jobs)
    assert all(a["instance_id"] == instance_id for a in attempts)  # the data itself is kept, as data


def test_evidence_is_written_as_report_writes_never_through_a_planted_link(tmp_path: Path, wired: Simulator) -> None:
    """`-o` makes its temporary file new (never one planted beside it), writes a symlink's target and keeps the
    link, and writes a FIFO in place."""
    import os
    import stat
    import threading

    path = write_config(tmp_path, preset="cli")
    set_id = _verified_set(path, wired)
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me\n")
    out = tmp_path / "case.zip"
    for planted in (tmp_path / "case.zip.tmp", tmp_path / ".case.zip.tmp"):
        planted.symlink_to(victim)
    assert run(path, "evidence", set_id, "-o", str(out)).exit_code == 0
    assert victim.read_text() == "keep me\n" and zipfile.is_zipfile(out)

    target = tmp_path / "real.zip"
    link = tmp_path / "link.zip"
    link.symlink_to(target)
    assert run(path, "evidence", set_id, "-o", str(link)).exit_code == 0
    assert link.is_symlink() and zipfile.is_zipfile(target)

    fifo = tmp_path / "pipe.zip"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    assert run(path, "evidence", set_id, "-o", str(fifo)).exit_code == 0
    reader.join(10)
    assert stat.S_ISFIFO(fifo.stat().st_mode) and got and got[0].startswith(b"PK")
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp") and not p.is_symlink()]
    assert leftovers == []


def test_a_password_in_a_url_that_slipped_past_the_config_is_not_in_the_bundle(
    tmp_path: Path, sim: Simulator, clock: FakeClock
) -> None:
    """The configuration refuses user:password@ in alma.base_url and handles.resolver_url; one that reaches the
    bundle anyway (a Config built in code) is dropped from config.json and scrubbed everywhere else."""
    import dataclasses

    from orchestrator.config import parse_config
    from orchestrator.service import evidence, workflow
    from tests.support import close_context, config_dict, make_context

    secret = "PW-in-the-url-99"
    config = parse_config(
        config_dict(db=f"sqlite:///{tmp_path / 'hwf.db'}"), tmp_path / "hwf.toml", environ={"HWF_ALMA_API_KEY": API_KEY}
    )
    ctx = make_context(config, sim, clock)
    set_id = sim.create_set("Slipped", sim.generate_records(3, profile="clean", seed=3))
    workflow.add_set(ctx, set_id)
    alma = dataclasses.replace(config.alma, base_url=config.alma.base_url.replace("://", f"://u:{secret}@"))
    handles = dataclasses.replace(
        config.handles, resolver_url=config.handles.resolver_url.replace("://", f"://u:{secret}@")
    )
    ctx = dataclasses.replace(ctx, config=dataclasses.replace(config, alma=alma, handles=handles))
    try:
        _, data = evidence.zip_bytes(ctx, set_id)
    finally:
        close_context(ctx)
    with zipfile.ZipFile(io.BytesIO(data)) as bundle:
        everything = b"".join(bundle.read(n) for n in bundle.namelist())
        saved = json.loads(bundle.read("config.json"))
    assert secret.encode() not in everything
    assert saved["alma"]["base_url"] == config.alma.base_url
    assert saved["handles"]["resolver_url"] == config.handles.resolver_url
