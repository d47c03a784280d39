"""client.py: a reconnecting ``AsyncClient`` runs ``on_connect`` again after each redial,
and what on_connect asks is answered (a reactor's re-announce after a gateway restart,
chaos finding: "on_connect failed: No reply … within 10.0 s" though the gateway had
answered). A real aiohttp WebSocket server on 127.0.0.1 plays the gateway."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import WSMsgType, web

from packetflow.client import AsyncClient
from packetflow.protocol.errors import PacketFlowError
from packetflow.protocol.messages import (
    PROTOCOL_VERSION,
    Discover,
    DiscoverPayload,
    decode_one,
    encode,
)
from packetflow.transport import new_message_id, now_ms


class AnsweringServer:
    """Answers every DISCOVER with a response; drops the first connection once it has
    answered there, so the client must redial."""

    def __init__(self) -> None:
        self.connections = 0
        self.url = ""

    async def ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.connections += 1
        first = self.connections == 1
        async for frame in ws:
            if frame.type != WSMsgType.TEXT:
                continue
            msg = decode_one(frame.data.encode())
            assert isinstance(msg, Discover)
            await ws.send_bytes(encode(Discover(
                protocol_version=PROTOCOL_VERSION, message_id=new_message_id(),
                timestamp=now_ms(), source_id="gateway-test", correlation_id=msg.message_id,
                payload=DiscoverPayload(discovery_type="response", accepted=True),
            )))  # fmt: skip
            if first:
                await ws.close()
        return ws


@pytest.fixture
async def server() -> AsyncIterator[AnsweringServer]:
    answering = AnsweringServer()
    app = web.Application()
    app.router.add_get("/ws", answering.ws)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    answering.url = f"ws://127.0.0.1:{port}/ws"
    yield answering
    await runner.cleanup()


async def test_on_connect_after_a_redial_gets_its_reply(server: AnsweringServer) -> None:
    outcomes: list[str] = []
    second = asyncio.Event()

    async def announce(client: AsyncClient) -> None:
        msg = Discover(**client.envelope_fields(),
                       payload=DiscoverPayload(discovery_type="query"))  # fmt: skip
        try:
            reply = await client.request(msg, 5.0)
        except PacketFlowError as exc:  # the bug: NetworkTimeout, no reply read
            outcomes.append(f"failed: {exc}")
        else:
            outcomes.append(type(reply).__name__)
        if len(outcomes) >= 2:
            second.set()

    client = AsyncClient(server.url, reconnect=True, on_connect=announce, credentials=False)
    await client.connect()
    try:
        await asyncio.wait_for(second.wait(), 30)
    finally:
        await client.close()
    assert server.connections >= 2
    assert outcomes[:2] == ["Discover", "Discover"]
