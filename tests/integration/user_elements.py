"""User-defined elements registered through the public API (DESIGN §10), loaded by a
reactor process with ``packetflow reactor --module tests.integration.user_elements``:
df:tokenize as a user would write it, and misbehaving handlers for the runtime tests."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from packetflow.protocol.errors import invalid_field
from packetflow.reactor.context import Context
from packetflow.reactor.server import Reactor


def square(data: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """cpu_bound: module level so the reactor's process pool imports it by name."""
    return {"square": data["n"] ** 2, "pid": os.getpid()}


def register(reactor: Reactor) -> None:
    @reactor.element("df", "tokenize", data={"text": "string", "lower": "bool (optional)"},
                     result="tokens, count")  # fmt: skip
    def tokenize(data: dict[str, Any], ctx: Context) -> dict[str, Any]:
        text = data.get("text")
        if not isinstance(text, str):
            raise invalid_field("payload.packet.data.text", "string", type(text).__name__,
                                "type")  # fmt: skip
        tokens = (text.lower() if data.get("lower") else text).split()
        return {"tokens": tokens, "count": len(tokens)}

    @reactor.element("mc", "nap")
    async def nap(data: dict[str, Any], ctx: Context) -> dict[str, Any]:
        await asyncio.sleep(float(data["seconds"]))
        return {"slept": data["seconds"], "pid": os.getpid()}

    @reactor.element("mc", "nap_sync")
    def nap_sync(data: dict[str, Any], ctx: Context) -> dict[str, Any]:
        time.sleep(float(data["seconds"]))
        return {"slept": data["seconds"]}

    @reactor.element("mc", "boom")
    def boom(data: dict[str, Any], ctx: Context) -> dict[str, Any]:
        raise KeyError("no such widget")

    @reactor.element("mc", "garbage")
    async def garbage(data: dict[str, Any], ctx: Context) -> Any:
        return {"handle": object()}

    @reactor.element("mc", "blob")
    async def blob(data: dict[str, Any], ctx: Context) -> dict[str, Any]:
        return {"blob": "x" * int(data["size"])}

    reactor.element("mc", "square", cpu_bound=True)(square)
