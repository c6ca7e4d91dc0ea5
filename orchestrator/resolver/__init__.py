"""The handle verifier: resolves many handles at a handle proxy and says, for each, whether it leads to
its own record's Primo page (``verifier``, its results in ``results``), from what each reply of the proxy's
API says (``replies``)."""

from __future__ import annotations

from orchestrator.resolver.results import VerifyItem, VerifyResult, VerifyStats
from orchestrator.resolver.verifier import Verifier

__all__ = ["Verifier", "VerifyItem", "VerifyResult", "VerifyStats"]
