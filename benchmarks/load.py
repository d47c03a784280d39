"""A load generator: one WebSocket, a fixed number of frames in flight, counted replies."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
import msgspec
from aiohttp import WSMsgType

from .harness import credentials


class _Ids(msgspec.Struct):
    message_id: str | None = None
    correlation_id: str | None = None


_ids = msgspec.json.Decoder(_Ids)


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
    track: bool = False,
) -> LoadResult:
    """Send ``count`` frames per connection keeping ``in_flight`` unanswered on each.

    With ``track`` (or one in flight) each reply's latency is recorded; with several in
    flight replies are matched to their frames by id (``correlation_id`` of a RESULT,
    ``message_id`` of an echoed frame), which costs the client a small decode each.
    """
    headers = credentials(url)  # once per connection, like any client (DESIGN §8)
    async with aiohttp.ClientSession() as session:
        sockets = [await session.ws_connect(url, decode_text=False, max_msg_size=0,
                                            headers=headers)
                   for _ in range(connections)]  # fmt: skip
        serial = 0

        async def drive(ws: aiohttp.ClientWebSocketResponse, n: int, lat: list[float]) -> None:
            nonlocal serial
            sent_at: list[float] = []
            by_id: dict[str, float] = {}
            matched = track and in_flight > 1

            async def send_next() -> None:
                nonlocal serial
                serial += 1
                data = frame(serial)
                if matched:
                    by_id[_ids.decode(data).message_id or ""] = time.perf_counter()
                elif in_flight == 1:
                    sent_at.append(time.perf_counter())
                await ws.send_frame(data, WSMsgType.TEXT)

            sent = received = 0
            while sent < min(in_flight, n):
                await send_next()
                sent += 1
            while received < n:
                msg = await ws.receive()
                if msg.type != WSMsgType.TEXT:
                    raise RuntimeError(f"connection ended: {msg.type} {msg.data!r}")
                if matched:
                    ids = _ids.decode(msg.data)
                    started = by_id.pop(ids.correlation_id or ids.message_id or "", None)
                    if started is not None:
                        lat.append((time.perf_counter() - started) * 1000.0)
                elif in_flight == 1:
                    lat.append((time.perf_counter() - sent_at[-1]) * 1000.0)
                received += 1
                if sent < n:
                    await send_next()
                    sent += 1

        await asyncio.gather(*(drive(ws, warmup, []) for ws in sockets))
        latencies: list[float] = []
        start = time.perf_counter()
        await asyncio.gather(*(drive(ws, count, latencies) for ws in sockets))
        elapsed = time.perf_counter() - start
        for ws in sockets:
            await ws.close()
    return LoadResult(count * connections, elapsed, latencies)
