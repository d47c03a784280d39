"""A user element for the memory benchmark, loaded with ``packetflow reactor --module
benchmarks.hold_elements``: ``df:hold`` keeps its slot for ``seconds`` so that everything
sent after it waits in the gateway's queue."""

from __future__ import annotations

import asyncio
from typing import Any

from packetflow.reactor.context import Context
from packetflow.reactor.server import Reactor


def register(reactor: Reactor) -> None:
    @reactor.element("df", "hold")
    async def hold(data: dict[str, Any], ctx: Context) -> dict[str, Any]:
        await asyncio.sleep(float(data.get("seconds", 0)))
        return {"held": data.get("seconds", 0)}
