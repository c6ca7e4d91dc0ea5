"""The handle verifier: resolves many handles at a handle proxy and says, for each, whether it leads to
its own record's Primo page (``verifier``), from what each reply of the proxy's API says (``replies``)."""

from __future__ import annotations

from orchestrator.resolver.verifier import Verifier, VerifyItem, VerifyResult, VerifyStats

__all__ = ["Verifier", "VerifyItem", "VerifyResult", "VerifyStats"]
