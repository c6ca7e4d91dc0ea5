"""``python -m orchestrator`` runs the hwf command line."""

from .cli import main

main()
