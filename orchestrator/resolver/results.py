"""What the verifier hands back: the records to check, one result per record, and running counts."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from orchestrator.domain.handles import Verdict


@dataclass(frozen=True)
class VerifyItem:
    """One record to check; ``handle`` None means the record has none (NO_HANDLE, no request)."""

    mms_id: str
    handle: str | None


@dataclass(frozen=True)
class VerifyResult:
    """The outcome of checking one record's handle."""

    mms_id: str
    handle: str | None
    verdict: Verdict
    resolved_url: str | None
    expected_url: str
    detail: str | None
    attempts: int  # HTTP requests made for this record, retries included
    checked_at: datetime
    redirect_ok: bool | None = None  # only with follow=True and a URL to follow
    stale_until: datetime | None = None  # STALE_CACHE only: the latest time the proxy serves its cached value


@dataclass
class VerifyStats:
    """Running counts of one Verifier: items, HTTP requests, retries, and results per verdict."""

    items: int = 0
    requests: int = 0
    retries: int = 0
    circuit_pauses: int = 0
    verdicts: dict[Verdict, int] = field(default_factory=lambda: dict.fromkeys(Verdict, 0))

    def as_dict(self) -> dict[str, Any]:
        """Plain counts for a report or a log line."""
        return {
            "items": self.items,
            "requests": self.requests,
            "retries": self.retries,
            "circuit_pauses": self.circuit_pauses,
            "verdicts": {v.value: n for v, n in self.verdicts.items()},
        }
