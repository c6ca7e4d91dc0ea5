"""The repair behind ``hwf fix`` (dry run), ``hwf fix --apply`` and ``hwf fix --undo``.

Records go through in batches of 100. For each batch: one ``GET /bibs?mms_id=`` for the diff, one
transaction committing every backup of the batch, one more bulk GET right before the writes (a record
that changed since the first read is refused, not overwritten), the PUTs (concurrent, a bounded number in
flight, all paced by the Alma client's one token bucket, so a 429 slows every worker), then one bulk GET
to confirm and one transaction settling the batch. The next batch is read and backed up while this one's
PUTs are on their way: the rate cap, not the round trips, sets the pace. So N records cost N PUTs and
3 * ceil(N / 100) reads (undo: 2 reads, nothing to back up).

No transaction is open during an Alma call (worker threads only talk HTTP; the calling thread alone
touches the database), and a PUT is never sent for a record whose backup is not committed.

A crash at any moment leaves each backup of the batches in flight ``pending``. The next ``--apply`` reads
every pending record again: still the original -> written now; already the repaired record -> ``applied``
(its PUT reached Alma; not sent again); anything else -> ``conflict`` (changed in Alma since; not written).
An undo interrupted after its PUT is recognised the same way (the record is the original again).
"""

from __future__ import annotations

from orchestrator.service.repair.engine import BATCH, MAX_IN_FLIGHT, FixReport, Progress, in_flight_for
from orchestrator.service.repair.fix import fix
from orchestrator.service.repair.undo import undo

__all__ = ["BATCH", "MAX_IN_FLIGHT", "FixReport", "Progress", "fix", "in_flight_for", "undo"]
