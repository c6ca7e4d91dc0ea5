"""The saved search behind a simulated LOGICAL set: a few criteria over the simulated records, ANDed.

A logical set in Alma is a query, not a list: its members are whatever matches when someone reads
them or a job runs on it. ``SetQuery`` is the simulator's stand-in, small enough to write in a
scenario file or send to the admin API as JSON::

    {"title_contains": "Collembola"}                 # case-insensitive substring of the title
    {"record_format": "dcap01"}                      # e.g. "All Digital Titles in DCAP01 Format"
    {"mms_ids": ["991011507293904641", "..."]}       # these records, when they exist
    {"title_contains": "Poweshiek", "record_format": "dcap01"}   # every criterion given must hold

Members come in the order the records were added to the institution.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .records import SimRecord

QUERY_KEYS = ("title_contains", "record_format", "mms_ids")


@dataclass(frozen=True)
class SetQuery:
    """A record matches when it meets every criterion given; at least one must be given."""

    title_contains: str | None = None
    record_format: str | None = None
    mms_ids: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not (self.title_contains or self.record_format or self.mms_ids):
            raise ValueError(f"a logical set query needs at least one of {', '.join(QUERY_KEYS)}")

    @classmethod
    def of(cls, value: SetQuery | Mapping[str, Any] | str) -> SetQuery:
        """A query from itself, a mapping (scenario / JSON), or a bare string (a title substring).

        :raises ValueError: naming the key and the problem.
        """
        if isinstance(value, SetQuery):
            return value
        if isinstance(value, str):
            return cls(title_contains=value)
        unknown = sorted(set(value) - set(QUERY_KEYS))
        if unknown:
            raise ValueError(f"query: unknown key {unknown[0]!r} (known: {', '.join(QUERY_KEYS)})")
        title, fmt, ids = value.get("title_contains"), value.get("record_format"), value.get("mms_ids", [])
        for key, text in (("title_contains", title), ("record_format", fmt)):
            if text is not None and (not isinstance(text, str) or not text.strip()):
                raise ValueError(f"query: {key} must be a non-empty string, not {text!r}")
        if not isinstance(ids, list | tuple) or not all(isinstance(m, str) and m.isdigit() for m in ids):
            raise ValueError("query: mms_ids must be a list of MMS ID strings (digits)")
        return cls(title_contains=title, record_format=fmt, mms_ids=tuple(ids))

    def matches(self, record: SimRecord) -> bool:
        """Does ``record`` meet every criterion?"""
        if self.title_contains and self.title_contains.casefold() not in record.title.casefold():
            return False
        if self.record_format and self.record_format.casefold() != record.record_format.casefold():
            return False
        return not self.mms_ids or record.mms_id in self.mms_ids

    def select(self, records: Iterable[SimRecord]) -> list[str]:
        """The MMS IDs of the matching records, in the order given."""
        return [r.mms_id for r in records if self.matches(r)]

    def alma_text(self, content: str) -> tuple[str, str]:
        """(value, desc) of the set's ``query`` element, in the shape Alma gives a saved search."""
        terms: list[tuple[str, str]] = []
        if self.title_contains:
            terms.append((f'title CONTAIN "{self.title_contains}"', f'Title contains keywords "{self.title_contains}"'))
        if self.record_format:
            terms.append(
                (f'record_format EQUAL "{self.record_format}"', f'Record format equals "{self.record_format}"')
            )
        if self.mms_ids:
            listed = " ".join(self.mms_ids)
            terms.append((f'mms_id EQUAL "{listed}"', f'MMS ID equals "{listed}"'))
        value = f"{content} where {content} (({') AND ('.join(t for t, _ in terms)}))"
        desc = f"where ({') AND ('.join(d for _, d in terms)})"
        return value, desc

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; only the criteria given."""
        out: dict[str, Any] = {}
        if self.title_contains:
            out["title_contains"] = self.title_contains
        if self.record_format:
            out["record_format"] = self.record_format
        if self.mms_ids:
            out["mms_ids"] = list(self.mms_ids)
        return out
