"""protocol/fanout.py and the gateway's ed:subscribe fan-out (DESIGN §10): one event is
encoded once, every subscriber's RESULT (§4.1, §4.2.2) shares those bytes, and a
subscriber that cannot take it loses it and is told how many it lost."""

from __future__ import annotations

import asyncio
import json
import time
import tracemalloc
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from packetflow.gateway.server import Gateway, GatewayConfig
from packetflow.protocol.fanout import event_body, event_frame, event_head, subscription_head
from packetflow.protocol.messages import Result, decode_json, decode_one
from packetflow.protocol.principals import MOLECULE_ORCHESTRATOR, Principal
from packetflow.transport import Peer

EVENT = {"blob": "x" * 4096, "n": 1}

# What authentication would have put on the connection: a principal whose role reads "**".
READER = Principal("key:reader", frozenset({MOLECULE_ORCHESTRATOR}), "api_key")


def _head(subscription_id: str = "sub_7") -> bytes:
    return subscription_head(
        source_id="gateway-1", destination_id="client-1", correlation_id="msg_sub",
        packet_id="packet_1", subscription_id=subscription_id,
        processing_metadata={"reactor_id": "gateway-1", "served_by": "gateway"},
    )  # fmt: skip


def test_the_parts_form_one_valid_result_envelope_4_1() -> None:
    body = event_body("orders.created", EVENT, 1700000000123, 42)
    frame = b"".join(event_frame(event_head("msg_1", 9), _head(), body))
    msg = decode_one(frame)
    assert isinstance(msg, Result)
    assert (msg.message_id, msg.sequence_id, msg.correlation_id) == ("msg_1", 9, "msg_sub")
    assert (msg.source_id, msg.destination_id, msg.timestamp) == (
        "gateway-1", "client-1", 1700000000123)  # fmt: skip
    assert msg.payload.status == "event" and msg.payload.packet_id == "packet_1"
    assert decode_json(msg.payload.data) == {
        "subscription_id": "sub_7", "topic": "orders.created", "event": EVENT,
        "published_at": 1700000000123, "sequence": 42,
    }  # fmt: skip


def test_a_loss_is_counted_in_the_next_event_and_ids_are_escaped() -> None:
    body = event_body('we"ird.topic', {"k": 'quote " and \\'}, 5, 6)
    head = subscription_head(
        source_id='gw "1"', destination_id=None, correlation_id="c", packet_id="p",
        subscription_id="s", processing_metadata={},
    )  # fmt: skip
    parts = event_frame(event_head('m"1', None), head, body, dropped=3)
    envelope = json.loads(b"".join(parts))
    assert envelope["payload"]["data"]["dropped"] == 3
    assert envelope["payload"]["data"]["topic"] == 'we"ird.topic'
    assert envelope["source_id"] == 'gw "1"' and envelope["message_id"] == 'm"1'
    assert envelope["destination_id"] is None and "sequence_id" not in envelope
    assert isinstance(decode_one(b"".join(parts)), Result)


def test_an_event_that_is_not_json_is_refused() -> None:
    with pytest.raises(TypeError):
        event_body("t", {"x": object()}, 1, 1)


@pytest.fixture
async def server_peer() -> AsyncIterator[tuple[Peer, TestClient]]:
    """A real server-side Peer on a loopback WebSocket (its client reads nothing)."""
    peers: asyncio.Queue[Peer] = asyncio.Queue()
    done = asyncio.Event()

    async def handler(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        stream = await ws.prepare(request)
        peer = Peer(ws, "test", stream, max_outbox_bytes=1 << 40)
        peer.principal = READER  # authenticated, and may read every topic
        await peers.put(peer)
        await done.wait()
        await peer.close()
        return ws

    app = web.Application()
    app.router.add_get("/ws", handler)
    client = TestClient(TestServer(app))
    await client.start_server()
    ws = await client.ws_connect("/ws")
    peer = await peers.get()
    try:
        yield peer, client
    finally:
        done.set()
        await ws.close()
        await client.close()


def _subscribe(gateway: Gateway, peer: Peer, n: int) -> None:
    frame = json.dumps({
        "protocol_version": "1.0", "message_type": "submit", "message_id": f"msg_{n}",
        "timestamp": 1, "source_id": "client-1",
        "payload": {"packet": {"group": "ed", "element": "subscribe", "data": {"topic": "**"}}},
    }).encode()  # fmt: skip
    msg = decode_one(frame)
    gateway.local.handle(msg, peer, f"packet_{n}")  # type: ignore[arg-type]


async def test_a_publish_to_10000_subscribers_shares_one_copy_of_the_event(
    server_peer: tuple[Peer, TestClient],
) -> None:
    """The allocation figure behind the hardening issue's "62 MB per 4 KB publish": now
    what one publish allocates per subscriber is its small head, not the event."""
    peer, _ = server_peer
    gateway = Gateway(GatewayConfig(max_subscriptions_per_connection=10_000))
    for n in range(10_000):
        _subscribe(gateway, peer, n)
    started = time.perf_counter()
    assert gateway.local.publish("orders.created", EVENT) == 10_000
    elapsed = time.perf_counter() - started  # a figure for the report, not an assertion
    peer._outbox.clear()  # the answers so far; one publish is measured below
    peer._queued = 0
    tracemalloc.start()
    try:
        delivered = gateway.local.publish("orders.created", EVENT)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert delivered == 10_000
    frames = list(peer._outbox)
    assert len(frames) == 10_000
    body = frames[0][-1]
    assert len(body) > 4096 and all(f[-1] is body for f in frames)  # one shared copy
    per_subscriber = peak / 10_000
    print(f"\npublish 4 KB to 10,000 subscribers: {elapsed * 1000:.1f} ms, "
          f"{peak / 1e6:.1f} MB allocated, {per_subscriber:.0f} B per subscriber "
          f"(a copy each would be {len(body)} B)")  # fmt: skip
    assert per_subscriber < len(body) / 4
    envelope = json.loads(b"".join(frames[-1]))
    assert envelope["payload"]["data"]["event"] == EVENT


async def test_a_full_subscriber_loses_events_and_is_told_how_many(
    server_peer: tuple[Peer, TestClient],
) -> None:
    peer, _ = server_peer
    gateway = Gateway(GatewayConfig())
    _subscribe(gateway, peer, 0)
    peer.max_outbox_bytes = 64 * 1024
    sent = 0
    while not peer.full:  # the client reads nothing, so its side fills up
        gateway.local.publish("t", EVENT)
        sent += 1
        await asyncio.sleep(0)
    assert gateway.local.publish("t", EVENT) == 0  # full: dropped, not queued
    assert gateway.local.publish("t", EVENT) == 0
    queued = len(peer._outbox)
    peer.max_outbox_bytes = 1 << 40
    peer._full_since = None  # as if it had drained (the client-side drain is tested elsewhere)
    assert gateway.local.publish("t", EVENT) == 1
    assert len(peer._outbox) == queued + 1
    last = json.loads(b"".join(peer._outbox[-1]))
    assert last["payload"]["data"]["dropped"] == 2
