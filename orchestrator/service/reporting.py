"""The narrow channel through which long-running services tell the operator what is happening.

Library code never prints: services call a ``Reporter``; the CLI supplies one that renders with rich.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from orchestrator.alma.types import JobInstance


class Reporter(Protocol):
    def note(self, set_name: str, message: str) -> None:
        """Something happened to a set (a step submitted, a transition, a wait)."""

    def job_progress(self, set_name: str, step: str, instance: JobInstance) -> None:
        """A poll of a running Alma job returned."""

    def verify_progress(self, set_name: str, done: int, total: int, tally: Mapping[str, int]) -> None:
        """Verification went on: ``done`` of ``total`` records, with the running tally of verdicts."""


class NullReporter:
    """A reporter that says nothing (tests, scripts)."""

    def note(self, set_name: str, message: str) -> None:
        return None

    def job_progress(self, set_name: str, step: str, instance: JobInstance) -> None:
        return None

    def verify_progress(self, set_name: str, done: int, total: int, tally: Mapping[str, int]) -> None:
        return None


class CollectingReporter(NullReporter):
    """Keeps every note (for tests and ``--json`` output)."""

    def __init__(self) -> None:
        self.notes: list[tuple[str, str]] = []

    def note(self, set_name: str, message: str) -> None:
        self.notes.append((set_name, message))
