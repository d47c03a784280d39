"""Elements for gateway tests, loaded by `packetflow reactor --module`: each group's
`whoami` answers which reactor ran it, cf:sleep holds a packet for `ms`, and cf:hold holds
it until cancelled on the reactor named `hold_on` (a handler that never returns there),
cf:boom always fails as a broken reactor would."""

from __future__ import annotations

import asyncio
from typing import Any

from packetflow.protocol.chemistry import GROUPS
from packetflow.protocol.errors import ProcessingFailed
from packetflow.reactor.context import Context
from packetflow.reactor.server import Reactor


async def whoami(data: dict[str, Any], ctx: Context) -> dict[str, Any]:
    assert ctx.runtime is not None
    return {"reactor_id": ctx.runtime.config.reactor_id, "group": ctx.group}


async def sleep(data: dict[str, Any], ctx: Context) -> dict[str, Any]:
    assert ctx.runtime is not None
    await asyncio.sleep(float(data.get("ms", 100)) / 1000.0)
    return {"reactor_id": ctx.runtime.config.reactor_id, "slept_ms": data.get("ms", 100)}


async def hold(data: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """Never return on the reactor named ``hold_on``; answer whoami anywhere else, so a
    packet failed over from the holder completes on the next reactor."""
    assert ctx.runtime is not None
    if ctx.runtime.config.reactor_id == data.get("hold_on"):
        await asyncio.Event().wait()
    return await whoami(data, ctx)


async def boom(data: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """Fail like a broken reactor would (PF005, retryable): counts against the reactor."""
    raise ProcessingFailed("boom", retryable=True, details={"reason": "boom"})


async def emit(data: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """Publish an event cluster-wide from inside a reactor, through its gateway link."""
    res = await ctx.require_gateway().submit("ed", "publish", data)
    return dict(res.data)


def register(reactor: Reactor) -> None:
    for group in GROUPS:
        reactor.element(group, "whoami")(whoami)
    reactor.element("cf", "sleep")(sleep)
    reactor.element("cf", "hold")(hold)
    reactor.element("ed", "emit")(emit)
    reactor.element("cf", "boom")(boom)
