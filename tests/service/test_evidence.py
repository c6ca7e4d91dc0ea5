"""``hwf evidence SET -o FILE.zip``: the support-case bundle, its contents, times in UTC and the institution's
zone, and no key or other secret anywhere in it."""

from __future__ import annotations

import hashlib
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
