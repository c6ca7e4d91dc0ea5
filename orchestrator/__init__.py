"""hwf: drive Alma's handle workflow for sets of digital titles, safely and provably."""

import logging

__version__ = "0.1.0"

# Library practice: hwf's log records go nowhere unless a handler is installed (orchestrator.logs, for [log] file).
logging.getLogger("orchestrator").addHandler(logging.NullHandler())
