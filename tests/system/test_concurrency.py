"""Several ``hwf`` processes on one database: four ``hwf resume --all`` sharing one PostgreSQL database split the
sets without overlap, and a set leased by a live process elsewhere is refused with exit 4 naming it.

The proof of "no two processes ever advanced the same set at once" comes from PostgreSQL itself: a trigger
(installed by the test, not part of hwf) checks, for every submission and transition hwf records, that the
process recording it (the event's ``host`` and ``pid``) holds the set's lease at that moment (for a person's run
bound to an integration batch, recorded on each set of the batch: the batch's lease).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from tests.support import write_config
from tests.support.crash import MODES, check, kill, press_batches, query, register, serve
from tests.support.e2e import Served, start, wait_for

# Four hwf processes and a PostgreSQL server at full speed: nothing else may load the machine meanwhile.
pytestmark = pytest.mark.serial

PROCESSES = 4
SETS = 20

LEASE_AUDIT = """
CREATE TABLE lease_violations (event_id integer, set_id integer, kind text, actor text, holder text);
CREATE FUNCTION hwf_test_check_lease() RETURNS trigger AS $$
DECLARE current_holder text;
BEGIN
  IF NEW.kind IN ('submitting', 'submitted', 'reconciled', 'transition') THEN
    IF NEW.data IS NOT NULL AND (NEW.data->>'batch') IS NOT NULL AND NEW.kind = 'reconciled' THEN
      -- a person's run bound to an integration batch: written for every set of the batch by the batch's holder
      SELECT lease_owner INTO current_holder FROM integration_batches WHERE number = (NEW.data->>'batch')::int;
    ELSE
      SELECT lease_owner INTO current_holder FROM sets WHERE id = NEW.set_id;
    END IF;
    IF current_holder IS DISTINCT FROM (NEW.host || ':' || NEW.pid) THEN
      INSERT INTO lease_violations VALUES (NEW.id, NEW.set_id, NEW.kind, NEW.host || ':' || NEW.pid, current_holder);
    END IF;
  END IF;
  RETURN NEW;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER hwf_test_lease_audit AFTER INSERT ON events FOR EACH ROW EXECUTE FUNCTION hwf_test_check_lease();
"""


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    server = serve(tmp_path, job_seconds=0.3)  # Alma's own limit of 3 running API jobs stays on
    yield server
    server.stop()


@pytest.mark.postgres
@pytest.mark.parametrize("mode", MODES)
def test_four_resume_processes_share_twenty_sets(served: Served, pg_url: str, tmp_path: Path, mode: str) -> None:
    config_path = write_config(tmp_path, served.url, preset="crash", db=pg_url, lease_seconds=6, integration=mode)
    ids = [served.make_set(f"Shared {i:02d}", 5, profile="clean", seed=i) for i in range(SETS)]
    register(config_path, ids)
    engine = create_engine(pg_url, poolclass=NullPool)
    with engine.begin() as conn:
        conn.execute(text(LEASE_AUDIT))
    engine.dispose()

    started = time.monotonic()
    logs = [(tmp_path / f"resume-{n}.err").open("w") for n in range(PROCESSES)]
    procs = [start(config_path, "resume", "--all", stderr=log) for log in logs]
    verified = "SELECT count(*) FROM sets WHERE state = 'verified'"
    try:
        if mode == "manual":
            # The sets wait for a person's click once the batch is announced (a process then ends, or sleeps until
            # its next rescan): the operator presses Run, and four more processes go on from there.
            announced = "SELECT count(*) FROM integration_batches WHERE state = 'announced'"
            wait_for(lambda: query(pg_url, announced)[0][0], timeout=50, interval=0.1, what="the batch announced")
            assert press_batches(config_path, served)
            more = [(tmp_path / f"resume-{n}-after-click.err").open("w") for n in range(PROCESSES)]
            logs += more
            procs += [start(config_path, "resume", "--all", stderr=log) for log in more]
        wait_for(
            lambda: all(p.poll() is not None for p in procs) or query(pg_url, verified)[0][0] == SETS,
            timeout=50,
            interval=0.1,
            what="every set verified",
        )
        elapsed = time.monotonic() - started
        # A process that found every set taken by the others may be asleep until its next rescan (up to a
        # minute): once every set is verified it has nothing left to do, so it is not waited for.
        time.sleep(2.0)
        codes = [p.poll() for p in procs]
    finally:
        for p in procs:
            kill(p)
        for log in logs:
            log.close()
    errors = [_failure(Path(log.name)) for log, code in zip(logs, codes, strict=True) if code]
    assert set(codes) <= {0, None}, errors

    verdict = check(config_path, served, dict.fromkeys(ids, "clean"))
    assert verdict.ok, str(verdict)
    batches = query(pg_url, "SELECT count(*) FROM integration_batches")[0][0]
    assert verdict.runs == (2 * SETS if mode == "api" else SETS + batches)  # each step of each set once
    assert query(pg_url, "SELECT * FROM lease_violations") == []
    actors = query(
        pg_url, "SELECT host || ':' || pid, count(*) FROM events WHERE kind = 'submitting' GROUP BY host, pid"
    )
    assert sum(n for _, n in actors) >= (2 if mode == "api" else 1) * SETS
    assert len(actors) >= 2, f"the sets were not shared between processes: {actors}"
    idle = codes.count(None)
    print(
        f"\n{PROCESSES} processes, {SETS} sets on PostgreSQL: all verified in {elapsed:.1f} s; submissions per "
        f"process {[n for _, n in actors]}; {idle} still asleep at the end"
    )


def _failure(log: Path) -> str:
    """What a process that exited non-zero said: its lines of error first (they may be anywhere), then its end."""
    text = log.read_text()
    said = [line for line in text.splitlines() if "rror" in line or "Traceback" in line or "attention" in line]
    return f"{log.name}: " + "\n".join(said[-20:]) + "\n...\n" + text[-1500:]
