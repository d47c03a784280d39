"""``python -m packetflow`` runs the CLI."""

from .cli import main

# The same program name as the installed script: help reads "Usage: packetflow" and shell
# completion answers to _PACKETFLOW_COMPLETE either way.
main(prog_name="packetflow")
