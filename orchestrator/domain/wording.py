"""How hwf counts things in sentences: ``1 record``, ``2 records``; one helper for every message."""

from __future__ import annotations

_IRREGULAR = {"is": "are", "was": "were", "has": "have", "this": "these", "value": "values"}


def plural(count: int, word: str, many: str | None = None) -> str:
    """``count`` and ``word``, in the plural unless ``count`` is 1: ``plural(1, "record")`` is
    ``1 record``, ``plural(2, "record")`` is ``2 records``; ``many`` for irregular words."""
    return f"{count} {word if count == 1 else (many or _IRREGULAR.get(word) or word + 's')}"


def verb(count: int, singular: str) -> str:
    """``is``/``are``, ``has``/``have``, ... agreeing with ``count``."""
    return singular if count == 1 else _IRREGULAR.get(singular, singular)
