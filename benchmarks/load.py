"""A load generator: one WebSocket, a fixed number of frames in flight, counted replies."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
from aiohttp import WSMsgType


@dataclass(frozen=True)
class LoadResult:
    messages: int
    seconds: float
    latencies_ms: list[float]

    @property
    def rate(self) -> float:
        return self.messages / self.seconds


async def run_load(
    url: str,
    frame: Callable[[int], bytes],
    *,
    count: int,
    in_flight: int,
    connections: int = 1,
    warmup: int = 200,
) -> LoadResult:
    """Send ``count`` frames per connection keeping ``in_flight`` unanswered on each."""
    async with aiohttp.ClientSession() as session:
        sockets = [await session.ws_connect(url, decode_text=False, max_msg_size=0)
                   for _ in range(connections)]  # fmt: skip
        serial = 0

        async def drive(ws: aiohttp.ClientWebSocketResponse, n: int, lat: list[float]) -> None:
            nonlocal serial
            sent_at: list[float] = []
            sent = received = 0
            while sent < min(in_flight, n):
                serial += 1
                sent_at.append(time.perf_counter())
                await ws.send_frame(frame(serial), WSMsgType.TEXT)
                sent += 1
            while received < n:
                msg = await ws.receive()
                if msg.type != WSMsgType.TEXT:
                    raise RuntimeError(f"connection ended: {msg.type} {msg.data!r}")
                if in_flight == 1:
                    lat.append((time.perf_counter() - sent_at[-1]) * 1000.0)
                received += 1
                if sent < n:
                    serial += 1
                    if in_flight == 1:
                        sent_at.append(time.perf_counter())
                    await ws.send_frame(frame(serial), WSMsgType.TEXT)
                    sent += 1

        await asyncio.gather(*(drive(ws, warmup, []) for ws in sockets))
        latencies: list[float] = []
        start = time.perf_counter()
        await asyncio.gather(*(drive(ws, count, latencies) for ws in sockets))
        elapsed = time.perf_counter() - start
        for ws in sockets:
            await ws.close()
    return LoadResult(count * connections, elapsed, latencies)
