"""The transport's own limit, with the same library as packetflow (aiohttp on uvloop):
a bare WebSocket echo server, and a bare relay (client → relay → echo) that forwards each
frame untouched. ``python -m benchmarks.baselines echo|relay [UPSTREAM]``.
"""

from __future__ import annotations

import asyncio
import sys

import aiohttp
from aiohttp import WSMsgType, web

from packetflow.runner import announce_ready, run_main


async def _serve(app: web.Application, role: str) -> None:
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    announce_ready(role, role, f"ws://127.0.0.1:{port}/ws")
    await asyncio.Event().wait()


def echo() -> None:
    async def ws_handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(decode_text=False, max_msg_size=0)
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                await ws.send_frame(msg.data, WSMsgType.TEXT)
        return ws

    app = web.Application()
    app.router.add_get("/ws", ws_handler)
    run_main(_serve(app, "echo"))


def relay(upstream: str) -> None:
    async def ws_handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(decode_text=False, max_msg_size=0)
        await ws.prepare(request)
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(upstream, decode_text=False, max_msg_size=0) as up,
        ):

            async def back() -> None:
                async for msg in up:
                    if msg.type == WSMsgType.TEXT:
                        await ws.send_frame(msg.data, WSMsgType.TEXT)

            task = asyncio.get_running_loop().create_task(back())
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    await up.send_frame(msg.data, WSMsgType.TEXT)
            task.cancel()
        return ws

    app = web.Application()
    app.router.add_get("/ws", ws_handler)
    run_main(_serve(app, "relay"))


if __name__ == "__main__":
    if sys.argv[1] == "echo":
        echo()
    else:
        relay(sys.argv[2])
