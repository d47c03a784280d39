"""Elements for gateway tests, loaded by `packetflow reactor --module`: each group's
`whoami` answers which reactor ran it, and cf:sleep holds a packet for `ms`."""

from __future__ import annotations

import asyncio
from typing import Any

from packetflow.protocol.chemistry import GROUPS
from packetflow.reactor.context import Context
from packetflow.reactor.server import Reactor


async def whoami(data: dict[str, Any], ctx: Context) -> dict[str, Any]:
    assert ctx.runtime is not None
    return {"reactor_id": ctx.runtime.config.reactor_id, "group": ctx.group}


async def sleep(data: dict[str, Any], ctx: Context) -> dict[str, Any]:
    assert ctx.runtime is not None
    await asyncio.sleep(float(data.get("ms", 100)) / 1000.0)
    return {"reactor_id": ctx.runtime.config.reactor_id, "slept_ms": data.get("ms", 100)}


async def emit(data: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """Publish an event cluster-wide from inside a reactor, through its gateway link."""
    res = await ctx.require_gateway().submit("ed", "publish", data)
    return dict(res.data)


def register(reactor: Reactor) -> None:
    for group in GROUPS:
        reactor.element(group, "whoami")(whoami)
    reactor.element("cf", "sleep")(sleep)
    reactor.element("ed", "emit")(emit)
