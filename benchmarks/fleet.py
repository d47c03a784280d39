"""Stand-in reactors by the hundred from one process: each announces itself to a gateway
over PFAP and answers every SUBMIT the gateway sends it with a RESULT, so a gateway can be
measured or tested with more reactors than the machine could run as processes."""

from __future__ import annotations

import time

import msgspec
from aiohttp import WSMsgType, web

from packetflow.protocol.messages import (
    PROTOCOL_VERSION,
    Discover,
    DiscoverPayload,
    ReactorInfo,
    Result,
    ResultPayload,
    Submit,
    SupportedPacket,
    decode_frame,
    encode,
)
from packetflow.transport import Peer


class Fleet:
    """``n`` stand-in reactors on one port (``/r/<id>``): each announces itself to the
    gateway and answers every SUBMIT the gateway sends (health probes) with a RESULT,
    except for the ``silent`` cf elements, which it accepts and never answers."""

    def __init__(self, n: int, silent: tuple[str, ...] = ()) -> None:
        self.ids = [f"fleet-{i:05d}" for i in range(n)]
        self.silent = silent
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._open: set[web.WebSocketResponse] = set()

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/r/{rid}", self._serve)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        # Closed here, or the runner would wait out its shutdown timeout for each link.
        for ws in list(self._open):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def announce(self, rid: str) -> bytes:
        return encode(Discover(
            protocol_version=PROTOCOL_VERSION, message_id=f"announce-{rid}",
            timestamp=int(time.time() * 1000), source_id=rid,
            payload=DiscoverPayload(
                discovery_type="announce",
                reactor_info=ReactorInfo(
                    reactor_id=rid, specializations=["cpu_intensive"], max_capacity=50,
                    endpoints={"websocket": f"ws://127.0.0.1:{self.port}/r/{rid}"},
                ),
                supported_packets=[SupportedPacket(group="cf", element=e)
                                   for e in ("ping", "health", "echo", *self.silent)],
            ),
        ))  # fmt: skip

    async def _serve(self, request: web.Request) -> web.WebSocketResponse:
        rid = request.match_info["rid"]
        body = b'{"status":"healthy","reactor_id":"%s"}' % rid.encode()
        ws = web.WebSocketResponse(max_msg_size=0)
        # Written through packetflow's transport, as a real reactor writes: permessage-
        # deflate is negotiated but small frames leave uncompressed (aiohttp's send_str
        # would deflate each, and the gateway would hold a 32 KiB inflate window per link
        # that no packetflow reactor makes it allocate).
        peer = Peer(ws, f"fleet-{rid}", await ws.prepare(request))
        self._open.add(ws)
        async for frame in ws:
            if frame.type != WSMsgType.TEXT:
                continue
            for item in decode_frame(frame.data):
                if isinstance(item, Submit) and item.payload.packet.element not in self.silent:
                    peer.send(encode(Result(
                        protocol_version=PROTOCOL_VERSION, message_id=f"r-{item.message_id}",
                        timestamp=int(time.time() * 1000), source_id=rid,
                        correlation_id=item.message_id,
                        payload=ResultPayload(packet_id=item.payload.packet.id,
                                              status="success",
                                              data=msgspec.Raw(body)),
                    )))  # fmt: skip
        self._open.discard(ws)
        await peer.close()
        return ws
