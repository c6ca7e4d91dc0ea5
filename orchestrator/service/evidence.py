"""``hwf evidence SET -o FILE.zip``: everything an Ex Libris support case needs about one set, in one zip.

The bundle holds the per-record report (CSV), the history (JSON and readable text), every job attempt with
the job instance exactly as Alma returned it when the job ended, the preflight results, the repair backups
(the ``<bib>`` before and after ``hwf fix``), the configuration without the key or any other secret, hwf's
version, and a README.txt that lists the files. Every time is given in UTC and in the institution's time
zone (``[alma] timezone``). Before the zip is written, every file is scanned for the Alma key and the
notification URLs (which may carry tokens): any found is replaced by ``***``.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import re
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from orchestrator import __version__
from orchestrator.config import Config, without_userinfo
from orchestrator.display import iso_z
from orchestrator.errors import BadInputError
from orchestrator.service import verification, views
from orchestrator.service.context import Context, find_set
from orchestrator.service.output import write_output
from orchestrator.store.models import RAW_REPLY_CAP, Attempt, Backup, Record

REDACTED = "***"


@dataclass
class Evidence:
    """What was written: the zip, the set, and each file in it with its size."""

    path: Path | None  # None for a bundle made in memory (the dashboard's download)
    set: str
    name: str
    files: dict[str, int] = field(default_factory=dict)
    redacted: int = 0

    def as_json(self) -> dict[str, Any]:
        path = str(self.path) if self.path is not None else None
        return {"path": path, "set": self.set, "name": self.name, "files": self.files}


class _Times:
    """One moment in UTC and in the institution's zone."""

    def __init__(self, zone: str) -> None:
        self.name = zone
        self.zone = ZoneInfo(zone)

    def utc(self, at: datetime | None) -> str | None:
        return iso_z(at)

    def local(self, at: datetime | None) -> str | None:
        return at.astimezone(self.zone).isoformat() if at else None

    def both(self, key: str, at: datetime | None) -> dict[str, str | None]:
        return {key: self.utc(at), f"{key}_local": self.local(at)}

    def text(self, at: datetime) -> str:
        local = at.astimezone(self.zone)
        return f"{at.astimezone(UTC):%Y-%m-%d %H:%M:%S}Z  {local:%Y-%m-%d %H:%M:%S %Z}"


def build(ctx: Context, ref: str, output: Path) -> Evidence:
    """Write the support-case bundle of set ``ref`` to ``output`` (a zip, replaced atomically).

    :raises BadInputError: unknown set, or an output that is not a writable ``.zip`` path.
    """
    if output.suffix.lower() != ".zip":
        raise BadInputError(f"evidence output {output} must be a .zip file")
    if not output.parent.is_dir():
        raise BadInputError(f"evidence output folder {output.parent} does not exist")
    result, data = zip_bytes(ctx, ref)
    result.path = output
    # Written as `hwf report -o` writes (one writer): atomically, never through a planted temp file or symlink,
    # a FIFO or device in place.
    write_output([data], output, what="the evidence")
    return result


def zip_bytes(ctx: Context, ref: str) -> tuple[Evidence, bytes]:
    """The same bundle in memory (the dashboard's download): nothing is written anywhere.

    :raises BadInputError: unknown set.
    """
    result, files, now = collect(ctx, ref)
    buffer = io.BytesIO()
    _zip_into(buffer, files, now)
    return result, buffer.getvalue()


def collect(ctx: Context, ref: str) -> tuple[Evidence, dict[str, bytes], datetime]:
    """Every file of the bundle of set ``ref``, secrets scrubbed, with its manifest (read-only)."""
    times = _Times(ctx.config.alma.timezone)
    now = ctx.clock()
    with ctx.sessions() as session:
        row = find_set(session, ref)
        set_id, alma_id, name, state = row.id, row.alma_set_id, row.name, row.stage.value
        summary: dict[str, Any] = {"set": alma_id, "name": name, "state": state, "attention": row.attention}
        summary |= {"attention_kind": row.attention_kind, "records": row.record_count, "waiting": row.waiting}
        summary |= times.both("created_at", row.created_at) | times.both("updated_at", row.updated_at)
    files: dict[str, bytes] = {}
    files["set.json"] = _json(summary)
    files["report.csv"] = _report_csv(ctx, alma_id)
    files.update(_history(ctx, alma_id, times))
    files.update(_jobs(ctx, set_id, times))
    files["preflight.json"] = _preflight(ctx, set_id, times)
    files.update(_backups(ctx, set_id, times))
    files["config.json"] = _json(redacted_config(ctx.config))
    files["version.txt"] = f"hwf {__version__}\n".encode()
    files = {"README.txt": _readme(alma_id, name, state, now, times, {**files, "manifest.json": b""}), **files}
    result = Evidence(path=None, set=alma_id, name=name)
    files, result.redacted = _scrub(files, _secrets(ctx.config))
    files["manifest.json"] = _json(
        [{"file": m, "bytes": len(d), "sha256": hashlib.sha256(d).hexdigest()} for m, d in files.items()]
    )
    result.files = {name_: len(data) for name_, data in files.items()}
    return result, files, now


def _json(data: Any) -> bytes:
    return (json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n").encode("utf-8")


def _report_csv(ctx: Context, alma_id: str) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(verification.CSV_COLUMNS)
    for r in verification.report(ctx, alma_id):
        writer.writerow(verification.csv_row(r))
    return buffer.getvalue().encode("utf-8")


def _history(ctx: Context, alma_id: str, times: _Times) -> dict[str, bytes]:
    events: list[dict[str, Any]] = []
    lines = [f"History of set {alma_id}: UTC, then {times.name}; kind; what happened; who\n"]
    for e in views.history(ctx, alma_id):
        at = e.at_utc
        events.append(e.as_json() | {"at_local": times.local(at)})
        who = e.who()
        lines.append(f"{times.text(at)}  {e.kind:<16} {e.detail}{'  (' + who + ')' if who else ''}\n")
    return {"history.json": _json(events), "history.txt": "".join(lines).encode("utf-8")}


def _jobs(ctx: Context, set_id: int, times: _Times) -> dict[str, bytes]:
    """``attempts.json`` (every submission of every step) and ``jobs/`` (each instance as Alma returned it)."""
    out: dict[str, bytes] = {}
    listing: list[dict[str, Any]] = []
    with ctx.sessions() as session:
        attempts = session.scalars(select(Attempt).where(Attempt.set_id == set_id).order_by(Attempt.id)).all()
    for a in attempts:
        entry: dict[str, Any] = {"step": a.step, "attempt": a.number, "state": a.state.value, "job_id": a.job_id}
        entry |= {"job_name": a.job_name, "instance_id": a.instance_id, "status": a.status, "progress": a.progress}
        entry |= {"counters": a.counters, "alerts": a.alerts, "note": a.note}
        # hwf's clock: attempt committed (before the POST), instance id known, end read; then Alma's own times.
        for key, value in (("started_at", a.begun_at), ("submitted_at", a.submitted_at), ("finished_at", a.ended_at)):
            entry |= times.both(key, value)
        for key in ("alma_submitted_at", "alma_started_at", "alma_ended_at"):
            entry |= times.both(key, getattr(a, key))
        entry["raw_reply"] = None
        if a.raw_reply:
            ext = "xml" if a.raw_reply.lstrip()[:1] == b"<" else "json"
            member = f"jobs/{_part(a.step)}-{a.number}-{_part(a.instance_id or 'none')}.{ext}"
            out[member] = a.raw_reply
            entry["raw_reply"] = member
            entry["raw_reply_truncated"] = len(a.raw_reply) >= RAW_REPLY_CAP
        listing.append(entry)
    out["attempts.json"] = _json(listing)
    return out


def _part(text: str) -> str:
    """A piece of a member name from data (an instance id is Alma's word): letters, digits, ``_`` and ``-`` only,
    so no ``/``, ``\\`` or ``..`` can make a member that unpacks outside the folder it is unpacked in."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", text)[:64] or "_"


def _preflight(ctx: Context, set_id: int, times: _Times) -> bytes:
    with ctx.sessions() as session:
        records = session.scalars(select(Record).where(Record.set_id == set_id).order_by(Record.id)).all()
    return _json(
        [
            {"mms_id": r.mms_id, "title": r.title, "record_format": r.record_format, "handle": r.handle}
            | {"handle_in_metadata": r.handle_raw, "preflight": r.preflight, "detail": r.preflight_detail}
            | {"excluded": r.excluded, "exclude_reason": r.exclude_reason}
            | times.both("checked_at", r.checked_at)
            for r in records
        ]
    )


def _backups(ctx: Context, set_id: int, times: _Times) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    listing: list[dict[str, Any]] = []
    with ctx.sessions() as session:
        backups = session.scalars(select(Backup).where(Backup.set_id == set_id).order_by(Backup.id)).all()
    for b in backups:
        stem = f"backups/{_part(b.mms_id)}-{b.id}"
        out[f"{stem}-before.xml"] = b.original_xml
        out[f"{stem}-after.xml"] = b.new_xml
        entry = {"mms_id": b.mms_id, "state": b.state, "detail": b.detail, "before": f"{stem}-before.xml"}
        listing.append(entry | {"after": f"{stem}-after.xml"} | times.both("created_at", b.created_at))
    out["backups.json"] = _json(listing)
    return out


def redacted_config(config: Config) -> dict[str, Any]:
    """The configuration as hwf read it, without the key and without any secret (URL passwords, tokens)."""
    data = dataclasses.asdict(config)
    data["alma"].pop("api_key", None)
    data["alma"]["api_key"] = "(not included)"
    data["database_url"] = _safe_url(config.database_url)
    data["alma"]["base_url"] = without_userinfo(config.alma.base_url)
    data["handles"]["resolver_url"] = without_userinfo(config.handles.resolver_url)
    data["notify"]["urls"] = [url.split(":", 1)[0] + "://" + REDACTED for url in config.notify.urls]
    return data


def _safe_url(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return REDACTED


def _secrets(config: Config) -> list[bytes]:
    found = [config.alma.api_key or ""] + list(config.notify.urls)
    try:
        password = make_url(config.database_url).password
    except ArgumentError:
        password = None
    found.append(str(password or ""))
    for url in (config.alma.base_url, config.handles.resolver_url):  # a user:password@ that slipped past the config
        found.append(urlsplit(url).password or "")
    return [s.encode("utf-8") for s in found if len(s) >= 4]


def _scrub(files: dict[str, bytes], secrets: Iterable[bytes]) -> tuple[dict[str, bytes], int]:
    """Replace every secret found in any file by ``***`` (a last line of defence); count the replacements."""
    count = 0
    out: dict[str, bytes] = {}
    for member, data in files.items():
        for secret in secrets:
            if secret in data:
                count += data.count(secret)
                data = data.replace(secret, REDACTED.encode())
        out[member] = data
    return out, count


def _zip_into(target: Any, files: dict[str, bytes], now: datetime) -> None:
    stamp = now.astimezone(UTC).timetuple()[:6]
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
        for member, data in files.items():
            bundle.writestr(zipfile.ZipInfo(member, date_time=stamp), data, compress_type=zipfile.ZIP_DEFLATED)


_ABOUT = {
    "set.json": "the set as hwf holds it: state, attention, record count",
    "report.csv": "one row per record: handle, preflight class, verification verdict, resolved and expected URL",
    "history.json": "every event, oldest first, with actor (who), host and pid; at (UTC) and at_local",
    "history.txt": "the same history, readable",
    "attempts.json": "every submission of every step: job id, instance id, status, counters, alerts, times",
    "jobs/": "each job instance exactly as Alma returned it when the job ended (GET .../instances/{id})",
    "preflight.json": "what hwf found in each record's Dublin Core before running any job",
    "backups.json": "the records hwf fix changed; backups/ holds each <bib> before and after the repair",
    "config.json": "the configuration hwf ran with, without the API key or any other secret",
    "version.txt": "the hwf version that wrote this bundle",
    "manifest.json": "every file with its size and SHA-256, to show the bundle arrived whole",
}


def _readme(alma_id: str, name: str, state: str, now: datetime, times: _Times, files: dict[str, bytes]) -> bytes:
    lines = [
        f"hwf evidence for Alma set {alma_id} ({name})",
        f"State: {state}",
        f"Written: {times.text(now)} by hwf {__version__}",
        f"Times: UTC (Z) and the institution's time zone {times.name}; *_local fields are in that zone.",
        "",
        "Files:",
    ]
    shown: set[str] = set()
    for member in files:
        key = member.split("/", 1)[0] + "/" if "/" in member else member
        if key in shown or key not in _ABOUT:
            continue
        shown.add(key)
        lines.append(f"  {key:<16} {_ABOUT[key]}")
    lines += [
        "",
        "For an Ex Libris support case, attach this zip and quote, from attempts.json, the job id and",
        "instance id of each run in question (Alma > Monitor Jobs shows the same instance ids).",
        "The API key is not in this bundle; nor are passwords or tokens from the configuration.",
        "",
    ]
    return "\n".join(lines).encode("utf-8")
