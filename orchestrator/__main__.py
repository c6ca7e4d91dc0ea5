"""``python -m orchestrator`` runs the hwf command line."""

from orchestrator.cli import main

main()
