"""An in-process simulator of the Alma REST API subset and the Handle proxy that hwf uses.

Use ``httpx.MockTransport(Simulator().handle)`` in tests, or ``SimServer`` for real HTTP on 127.0.0.1.
"""

from .clock import ManualClock
from .core import ConnectionDropped, JobRunLog, Simulator
from .faults import Faults
from .queries import SetQuery
from .records import SimRecord, dc_record_xml, marc_record_xml
from .scenario import (
    ApiKey,
    JobDef,
    LogicalSetSpec,
    RecordsSpec,
    Scenario,
    SetSpec,
    load_scenario,
    parse_scenario,
)
from .server import SimServer

__all__ = [
    "ApiKey",
    "ConnectionDropped",
    "Faults",
    "JobDef",
    "JobRunLog",
    "LogicalSetSpec",
    "ManualClock",
    "RecordsSpec",
    "Scenario",
    "SetQuery",
    "SetSpec",
    "SimRecord",
    "SimServer",
    "Simulator",
    "dc_record_xml",
    "load_scenario",
    "marc_record_xml",
    "parse_scenario",
]
