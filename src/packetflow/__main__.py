"""``python -m packetflow`` runs the CLI."""

from .cli import main

main()
