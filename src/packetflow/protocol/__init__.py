"""PFAP rules without I/O: messages, errors, chemistry, packets, routing, health, molecules.

Nothing in this package imports asyncio, socket, ssl, time or random (STYLE 1): time and
randomness arrive as arguments, so every rule is testable without a socket or a sleep.
"""
