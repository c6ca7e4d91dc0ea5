"""hwf: drive Alma's handle workflow for sets of digital titles, safely and provably."""

__version__ = "0.1.0"
