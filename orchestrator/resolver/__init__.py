"""The handle verifier: resolves many handles at a handle proxy and says, for each, whether it leads to
its own record's Primo page (``verifier``, its results in ``results``), from what each reply of the proxy's
API says (``replies``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from orchestrator.resolver.results import VerifyItem, VerifyResult, VerifyStats

if TYPE_CHECKING:
    from orchestrator.resolver.verifier import Verifier

__all__ = ["Verifier", "VerifyItem", "VerifyResult", "VerifyStats"]


def __getattr__(name: str) -> object:
    if name == "Verifier":
        # Loaded when first asked for: it brings httpx, which the read commands (their results only) never need.
        from orchestrator.resolver.verifier import Verifier

        return Verifier
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
