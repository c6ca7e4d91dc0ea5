"""How moments are shown to people and scripts (a placeholder of the shared module; see the cli branch)."""

from __future__ import annotations

from datetime import UTC, datetime


def _utc(at: datetime) -> datetime:
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def utc_stamp(at: datetime) -> str:
    """``2026-02-02 15:04:05 UTC``."""
    return _utc(at).strftime("%Y-%m-%d %H:%M:%S UTC")


def iso_z(at: datetime | None) -> str | None:
    """ISO-8601 UTC with ``Z`` (None stays None)."""
    return _utc(at).isoformat().replace("+00:00", "Z") if at is not None else None
