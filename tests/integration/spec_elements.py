"""Elements for the partial-sections tests (issue 13), loaded with
``packetflow reactor --module tests.integration.spec_elements``: a handler that runs out of
memory for real (PF501) and a slow one that holds a slot (capacity and queueing)."""

from __future__ import annotations

import asyncio
from typing import Any

from packetflow.reactor.context import Context
from packetflow.reactor.server import Reactor


def register(reactor: Reactor) -> None:
    @reactor.element("df", "hog")
    def hog(data: dict[str, Any], ctx: Context) -> dict[str, Any]:
        """Asks the allocator for 4 EiB: a real MemoryError, at once."""
        return {"len": len(bytearray(2**62))}

    @reactor.element("df", "hold")
    async def hold(data: dict[str, Any], ctx: Context) -> dict[str, Any]:
        await asyncio.sleep(float(data.get("seconds", 1.0)))
        return {"held": data.get("seconds", 1.0)}
