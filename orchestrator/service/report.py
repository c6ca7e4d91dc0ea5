"""The per-record report as text (CSV or JSON), safe to open in a spreadsheet, and written safely to a file.

- CSV cells that a spreadsheet would run as a formula (starting with ``=``, ``+``, ``-``, ``@``, tab or carriage
  return: OWASP's list) get a leading single quote, unless the caller asks for ``raw`` output (scripts).
  ``csv_safe`` is the one rule; the dashboard's download uses it too.
- ``write_report`` writes through the one ``-o`` writer (``service.output``): a regular file (or a new one)
  atomically, so a crash or a full disk never leaves half a report where the old one was; a FIFO,
  ``/dev/stdout``, ``/dev/full`` or a terminal in place, never replaced; a symlink's target, the link kept.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from pathlib import Path

from orchestrator.errors import BadInputError
from orchestrator.service import verification
from orchestrator.service.context import Context
from orchestrator.service.output import write_output

FORMATS = ("csv", "json")
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
ROWS_PER_CHUNK = 500


def csv_safe(value: str) -> str:
    """A CSV cell a spreadsheet shows as text: a leading ``'`` before a formula-like start (OWASP)."""
    return "'" + value if value.startswith(FORMULA_STARTS) else value


def report_chunks(
    ctx: Context, ref: str, *, format: str, problems_only: bool = False, raw: bool = False
) -> Iterator[str]:
    """The report as text, in chunks, streamed from the database.

    The set is looked up before the first chunk is returned, so an unknown set fails before anything
    is written. :raises BadInputError: unknown format or set.
    """
    if format not in FORMATS:
        raise BadInputError(f"--format must be csv or json, not {format!r}")
    rows = verification.report(ctx, ref, problems_only=problems_only)
    first = next(rows, None)  # find_set runs here
    every: Iterator[verification.ReportRow] = iter(()) if first is None else _chain(first, rows)
    return _csv(every, raw) if format == "csv" else _json(every)


def _chain(first: verification.ReportRow, rest: Iterator[verification.ReportRow]) -> Iterator[verification.ReportRow]:
    yield first
    yield from rest


def _csv(rows: Iterable[verification.ReportRow], raw: bool) -> Iterator[str]:
    lines = [_csv_line(verification.CSV_COLUMNS)]
    for row in rows:
        cells = verification.csv_row(row)
        lines.append(_csv_line(cells if raw else [csv_safe(cell) for cell in cells]))
        if len(lines) >= ROWS_PER_CHUNK:
            yield "".join(lines)
            lines.clear()
    yield "".join(lines)


def _csv_line(cells: list[str]) -> str:
    """One CSV row ending in ``\n``. Written with a ``\r\n`` terminator so that the csv module quotes
    cells holding a carriage return too (with ``\n`` alone it leaves a bare CR unquoted, which splits the
    row in a spreadsheet), then the terminator is put back to ``\n``."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerow(cells)
    return buffer.getvalue()[:-2] + "\n"


def _json(rows: Iterable[verification.ReportRow]) -> Iterator[str]:
    """The same text as ``json.dump(list, indent=2)``, one row at a time."""
    opened = False
    for row in rows:
        text = json.dumps(row.as_json(), indent=2, ensure_ascii=False).replace("\n", "\n  ")
        yield ("[\n  " if not opened else ",\n  ") + text
        opened = True
    yield "\n]\n" if opened else "[]\n"


def write_report(chunks: Iterable[str], path: Path) -> None:
    """Write ``chunks`` to ``path``: atomically for a regular file, in place for anything else.

    :raises BadInputError: ``path`` is a directory, or its directory does not exist.
    :raises OutputError: the write failed (no space, no permission, ...), in one line.
    """
    write_output((chunk.encode("utf-8") for chunk in chunks), path, what="the report")
