"""Simulator scenarios (TOML loading and errors), admin endpoints, and a full demo run (record profiles are in
test_records.py)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from lxml import etree

from orchestrator.errors import ConfigError
from orchestrator.simulator import ManualClock, Scenario, Simulator, load_scenario
from orchestrator.xmlsafe import parse_xml

EXAMPLE = Path(__file__).resolve().parents[2] / "orchestrator" / "simulator" / "data" / "example-scenario.toml"
DC = "{http://purl.org/dc/elements/1.1/}"
XSI_TYPE = "{http://www.w3.org/2001/XMLSchema-instance}type"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "scenario.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_example_scenario_loads_and_builds(tmp_path: Path) -> None:
    scenario = load_scenario(EXAMPLE)
    assert scenario.institution_code == "01GCL_INST" and scenario.per_second_limit == 25
    assert [j.kind for j in scenario.jobs][:3] == ["copy", "migration", "integration"]
    assert scenario.job_seconds["copy"] == 3.0 and scenario.records is not None
    sim = Simulator(scenario)
    sets = sim.set_ids()
    assert set(sets) == {"Demo set 1", "Problem records"}
    assert len(sim.set_members(sets["Demo set 1"])) == 60 and len(sim.records) == 40 + 60 + 24
    assert sim.handles["11084/11789"] == sim.primo_url("991011591572104641")


def test_scenario_values_and_faults(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
per_second_limit = 0
copy_keeps_xsi_type = false
[job_seconds]
migration = 0.5
[[api_keys]]
key = "secret-key"
areas = ["bibs"]
[faults]
proxy_error_rate = 0.1
corrupt_set_members = ["991011506418804641"]
""",
    )
    scenario = load_scenario(path)
    assert scenario.per_second_limit == 0 and scenario.copy_keeps_xsi_type is False
    assert scenario.seconds_for("migration") == 0.5 and scenario.seconds_for("copy") == 3.0
    assert scenario.api_keys[0].areas == ("bibs",) and "secret-key" not in repr(scenario)
    assert scenario.faults.proxy_error_rate == 0.1
    sim = Simulator(scenario)
    sim.faults.proxy_error_rate = 0.0
    assert scenario.faults.proxy_error_rate == 0.1  # the simulator works on a copy


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("bogus = 1", "key bogus: unknown key"),
        ("per_second_limit = 'fast'", "key per_second_limit: has the wrong type"),
        ("max_running_api_jobs = 0", "key max_running_api_jobs: must be at least 1"),
        ("copy_keeps_xsi_type = 1", "key copy_keeps_xsi_type: has the wrong type"),
        ("timezone = 'Mars/Olympus'", "key timezone:"),
        ("[records]\ncount = 5\nprofile = 'weird'", "key records.profile: must be one of"),
        ("[[sets]]\nname = 'x'", "key sets[0].count:"),
        ("[[sets]]\nname = 'x'\ncount = 2\ncolour = 'red'", "key sets[0].colour: unknown key"),
        ("[[jobs]]\nid = 'Q1'\nname = 'x'", "key jobs[0].id:"),
        ("[faults]\nproxy_error_rate = 2", "key faults.proxy_error_rate: is a probability"),
        ("[faults]\nno_such = 1", "key faults.no_such: unknown fault"),
        ("[faults]\ndrop_run_reply = 0.5", "key faults.drop_run_reply: must be a whole number"),
        ("[job_seconds]\ncopy = -1", "key job_seconds.copy: must be at least 0"),
    ],
)
def test_scenario_errors_name_file_and_key(tmp_path: Path, text: str, key: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_scenario(path)
    assert str(path) in str(caught.value) and key in str(caught.value)


def test_unreadable_and_invalid_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read scenario file"):
        load_scenario(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_scenario(write(tmp_path, "x = [1,"))


# --- admin endpoints and the whole workflow ---------------------------------------------------------


def test_admin_endpoints_in_process() -> None:
    sim = Simulator()
    admin = httpx.Client(transport=httpx.MockTransport(sim.handle), base_url="http://sim.test/_sim")
    ids = admin.post("/records", json={"count": 2, "profile": "problems"}).json()["mms_ids"]
    assert len(ids) == 2
    set_id = admin.post("/sets", json={"name": "a", "mms_ids": ids}).json()["id"]
    assert admin.post("/sets", json={"name": "a", "mms_ids": ids}).status_code == 400
    assert admin.post("/records", json={"count": 1, "profile": "nope"}).status_code == 400
    state = admin.get("/state").json()
    assert state["sets"][set_id] == {"name": "a", "member_count": 2, "members": ids}
    assert admin.post("/faults", json={"burst_429": 2}).json()["burst_429"] == 2
    assert admin.post("/faults", json={"burst_429": -1}).status_code == 400
    assert admin.get("/nowhere").status_code == 404


def test_demo_profile_reaches_verified_when_run_in_order() -> None:
    clock = ManualClock()
    sim = Simulator(
        Scenario(per_second_limit=0, job_seconds={"copy": 1, "migration": 1, "integration": 1}), clock=clock
    )
    ids = sim.generate_records(30, profile="demo", seed=2)
    set_id = sim.create_set("demo", ids)
    alma = httpx.Client(
        transport=httpx.MockTransport(sim.handle),
        base_url="http://sim.test/almaws/v1",
        headers={"Authorization": "apikey k"},
    )

    def run(job_id: str) -> None:
        param = f"<parameter><name>set_id</name><value>{set_id}</value></parameter>"
        body = f"<job><parameters>{param}</parameters></job>"
        assert alma.post(f"/conf/jobs/{job_id}", params={"op": "run"}, content=body).status_code == 200
        clock.advance(5)

    run("M1234567890000561")
    for mms in ids:  # the fix hwf makes after the copy: drop xsi:type from dc:identifier
        bib = parse_xml(alma.get(f"/bibs/{mms}").content)
        changed = False
        for element in bib.iter(f"{DC}identifier"):
            if element.attrib.pop(XSI_TYPE, None):
                changed = True
        if changed:
            body = etree.tostring(bib, encoding="unicode").encode()
            assert (
                alma.put(f"/bibs/{mms}", content=body, headers={"Content-Type": "application/xml"}).status_code == 200
            )
    run("M2234567890000561")
    run("M50700")
    proxy = httpx.Client(transport=httpx.MockTransport(sim.handle), base_url="http://sim.test")
    for mms in ids:
        legacy = sim.records[mms].local_id.replace("grinnell:", "11084/")
        values = proxy.get(f"/api/handles/{legacy}", params={"type": "URL"}).json()["values"]
        assert values[0]["data"]["value"] == sim.primo_url(mms)
    assert [r.status for r in sim.runs_for(set_id)] == ["COMPLETED_SUCCESS"] * 3
