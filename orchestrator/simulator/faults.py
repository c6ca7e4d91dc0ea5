"""Fault injection knobs of the simulator: one mutable dataclass, validated updates.

Tests flip fields on ``sim.faults`` directly; a scenario file and ``POST /_sim/faults`` go through
``update_faults``, which checks every name and type. All randomness is drawn by the simulator
from one seeded ``random.Random``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

BAD_XML_KINDS = ("malformed", "doctype")


@dataclass
class Faults:
    """What should go wrong, and how often. Rates are probabilities in [0, 1]."""

    alma_get_500_rate: float = 0.0
    alma_put_500_rate: float = 0.0
    alma_latency_ms: float = 0.0
    drop_run_reply: int = 0  # next N op=run POSTs: create the instance, then lose the reply
    drop_run_reply_rate: float = 0.0
    run_reply_delay_s: float = 0.0  # op=run POSTs: create the instance, then wait this long before answering
    create_set_reply_delay_s: float = 0.0  # POST /conf/sets: make the set, then wait this long before answering
    unreadable_run_reply: int = 0  # next N op=run POSTs: start the run, answer 200 without its instance link
    reject_run_before_create: int = 0  # next N op=run POSTs: drop the connection before anything happens
    refuse_run_overlap: int = 0  # next N op=run POSTs answer 400 60347 (overlaps with a running job)
    burst_429: int = 0  # next N Alma requests answer 429 PER_SECOND_THRESHOLD
    daily_remaining: int | None = None  # when set, the daily counter is set to it (then this resets to None)
    corrupt_set_members: list[str] = field(default_factory=list)  # a members page holding one fails
    bad_xml_records: dict[str, str] = field(default_factory=dict)  # MMS ID -> "malformed" | "doctype"
    unreadable_listed: list[str] = field(default_factory=list)  # instance ids listed without their status
    # path fragment -> seconds: every Alma request whose path holds the fragment answers 503 with that Retry-After
    unavailable_paths: dict[str, int] = field(default_factory=dict)
    proxy_latency_ms: float = 0.0
    proxy_error_rate: float = 0.0
    proxy_rate_429: float = 0.0
    proxy_retry_after: int = 1
    proxy_html_garbage_rate: float = 0.0
    proxy_timeout_rate: float = 0.0
    proxy_timeout_sleep_s: float = 30.0  # served over HTTP: how long the server stalls
    proxy_per_second_cap: float = 0.0  # 0 = no cap

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy of every field."""
        return asdict(self)


_RATES = {f.name for f in fields(Faults) if f.name.endswith("_rate")}


def _check_number(name: str, value: Any, where: str, *, integer: bool) -> float | int:
    if isinstance(value, bool) or not isinstance(value, int | float) or (integer and not isinstance(value, int)):
        kind = "a whole number" if integer else "a number"
        raise ValueError(f"{where}{name}: must be {kind}, not {value!r}")
    if value < 0:
        raise ValueError(f"{where}{name}: must not be negative, not {value!r}")
    if name in _RATES and value > 1:
        raise ValueError(f"{where}{name}: is a probability, must be between 0 and 1, not {value!r}")
    return value


def update_faults(faults: Faults, changes: Mapping[str, Any], where: str = "") -> None:
    """Apply a partial mapping of fault settings to ``faults`` after checking every name and type.

    :raises ValueError: naming the key (prefixed with ``where``) and the problem; nothing is changed then.
    """
    known = {f.name: f for f in fields(Faults)}
    staged: dict[str, Any] = {}
    for name, value in changes.items():
        if name not in known:
            raise ValueError(f"{where}{name}: unknown fault (known: {', '.join(sorted(known))})")
        if name in ("corrupt_set_members", "unreadable_listed"):
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ValueError(f"{where}{name}: must be a list of id strings")
            staged[name] = list(value)
        elif name == "bad_xml_records":
            if not isinstance(value, dict) or not all(
                isinstance(k, str) and v in BAD_XML_KINDS for k, v in value.items()
            ):
                raise ValueError(f"{where}{name}: must map MMS IDs to one of {', '.join(BAD_XML_KINDS)}")
            staged[name] = dict(value)
        elif name == "unavailable_paths":
            if not isinstance(value, dict) or not all(
                isinstance(k, str) and k and isinstance(v, int) and not isinstance(v, bool) and v >= 0
                for k, v in value.items()
            ):
                raise ValueError(f"{where}{name}: must map path fragments to whole seconds (Retry-After)")
            staged[name] = dict(value)
        elif name == "daily_remaining" and value is None:
            staged[name] = None
        else:
            integer = known[name].type in ("int", "int | None")
            staged[name] = _check_number(name, value, where, integer=integer)
    for name, value in staged.items():
        setattr(faults, name, value)
