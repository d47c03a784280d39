"""transport.py: the ids every envelope carries (§4.1: message_id is a UUID v4) and how a
Peer writes frames."""

from __future__ import annotations

import asyncio
import base64
import os
import struct
import uuid
import zlib
from collections.abc import Callable

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from packetflow.transport import (
    Peer,
    connection_budget,
    new_message_id,
    new_packet_id,
    raise_fd_limit,
)


def test_message_ids_are_unique_version_4_uuids() -> None:
    ids = [new_message_id() for _ in range(5000)]
    assert len(set(ids)) == len(ids)
    for mid in ids[:500]:
        assert mid.startswith("msg_")
        parsed = uuid.UUID(mid.removeprefix("msg_"))
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122
    assert new_packet_id().startswith("packet_")


def _in_forked_child(make: Callable[[], str]) -> str:
    """``make()`` as called in a forked child (which reports it and leaves at once)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(write, make().encode())
        os._exit(0)
    os.close(write)
    value = os.read(read, 200).decode()
    os.waitpid(pid, 0)
    os.close(read)
    return value


def test_a_forked_child_does_not_repeat_the_parents_ids() -> None:
    child = _in_forked_child(new_message_id)
    assert child != new_message_id()
    assert child.startswith("msg_")


def test_packet_ids_are_random_and_fresh_after_fork() -> None:
    """Packet ids are replayed from the idempotency window to whoever knows them: random
    (not a counter), and a forked child draws its own."""
    ids = [new_packet_id() for _ in range(600)]  # more than one pool of OS randomness
    assert len(set(ids)) == len(ids)
    assert len({i[-12:] for i in ids}) == len(ids)
    for pid_ in ids[:100]:
        assert uuid.UUID(pid_.removeprefix("packet_")).version == 4
    assert _in_forked_child(new_packet_id) != new_packet_id()


class _Transport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def writelines(self, parts: list[bytes]) -> None:
        self.writes.append(b"".join(parts))

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0


class _Stream:
    def __init__(self) -> None:
        self.transport = _Transport()

    async def drain(self) -> None:
        return None


class _Socket:
    closed = False
    compress = 0


async def test_a_burst_leaves_as_the_first_frame_then_one_write_for_the_rest() -> None:
    """Server side: the first frame of a loop iteration is written at once; the others
    sent in the same iteration leave together in one write."""
    stream = _Stream()
    peer = Peer(_Socket(), "test", stream)  # type: ignore[arg-type]
    try:
        for i in range(5):
            assert peer.send(b'{"n":%d}' % i)
        assert stream.transport.writes == [b"\x81\x07" + b'{"n":0}']
        await peer.flush(timeout=2.0)
        assert stream.transport.writes[1:] == [
            b"".join(b"\x81\x07" + b'{"n":%d}' % i for i in range(1, 5))
        ]
        await asyncio.sleep(0)  # a later iteration: its first frame leaves at once again
        peer.send(b'{"n":5}')
        assert stream.transport.writes[-1] == b"\x81\x07" + b'{"n":5}'
    finally:
        await peer.close()


# ---------------------------------------------------------------------------------------------
# Backpressure (transport.py module doc): a real loopback WebSocket whose client reads nothing.


class _Served:
    """An aiohttp server whose one WebSocket is wrapped in a bounded Peer."""

    def __init__(self, **bounds: object) -> None:
        self.bounds = bounds
        self.peers: asyncio.Queue[Peer] = asyncio.Queue()
        self.done = asyncio.Event()

    async def handler(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        stream = await ws.prepare(request)
        peer = Peer(ws, "served", stream, **self.bounds)  # type: ignore[arg-type]
        await self.peers.put(peer)
        await self.done.wait()
        await peer.close()
        return ws


async def _serve(**bounds: object) -> tuple[_Served, TestClient, aiohttp.ClientWebSocketResponse]:
    served = _Served(**bounds)
    app = web.Application()
    app.router.add_get("/ws", served.handler)
    client = TestClient(TestServer(app))
    await client.start_server()
    ws = await client.ws_connect("/ws", max_msg_size=0)
    return served, client, ws


def _fill(peer: Peer) -> int:
    sent = 0
    while not peer.full:
        assert peer.send(b'{"filler":"' + b"x" * 16_000 + b'"}')
        sent += 1
        assert sent < 100_000, "the peer never became full"
    return sent


async def test_a_peer_that_is_not_read_becomes_full_and_pauses_its_reader() -> None:
    served, client, ws = await _serve(max_outbox_bytes=256 * 1024, slow_consumer_s=60.0)
    try:
        peer = await served.peers.get()
        assert not peer.paused
        for _ in range(200):  # until the kernel's buffers take nothing more
            _fill(peer)
            await asyncio.sleep(0.05)
            if peer.full:
                break
        assert peer.full and peer.paused
        reader = asyncio.ensure_future(peer.wait_readable())
        await asyncio.sleep(0.05)
        assert not reader.done()  # still full: the read loop stays paused
        got = 0
        while not reader.done():  # the client reads: the peer drains and reading resumes
            msg = await asyncio.wait_for(ws.receive(), 10)
            assert msg.type == aiohttp.WSMsgType.TEXT
            got += 1
        assert reader.result() is True
        assert not peer.full
    finally:
        served.done.set()
        await ws.close()
        await client.close()


async def test_a_peer_full_past_the_timeout_is_closed_as_a_slow_consumer_1008() -> None:
    served, client, ws = await _serve(max_outbox_bytes=256 * 1024, slow_consumer_s=0.3)
    try:
        peer = await served.peers.get()
        while not peer.full:
            _fill(peer)
            await asyncio.sleep(0)
        waiting = asyncio.ensure_future(peer.wait_readable())
        deadline = asyncio.get_running_loop().time() + 10
        while peer.close_reason is None:
            assert asyncio.get_running_loop().time() < deadline, "never closed"
            await asyncio.sleep(0.02)
        assert peer.close_reason.startswith("slow consumer: ")
        assert peer.close_reason.endswith(" bytes unsent for 0.3 s")
        assert await asyncio.wait_for(waiting, 5) is False  # the paused reader stops
        assert peer.closed and not peer.send(b"{}")  # nothing more is queued for it
        # Reading now, the client finds the close frame with the reason (or a reset, if
        # it came after the grace period; then the reason is only in the gateway's log).
        while True:
            msg = await asyncio.wait_for(ws.receive(), 10)
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
        assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED,
                            aiohttp.WSMsgType.ERROR)  # fmt: skip
        print(f"\nslow consumer: the client read {msg.type.name} {msg.data} {msg.extra}")
        if msg.type == aiohttp.WSMsgType.CLOSE:
            assert msg.data == 1008
            assert msg.extra.startswith("slow consumer: ")
    finally:
        served.done.set()
        await ws.close()
        await client.close()


async def test_a_peer_at_its_request_cap_pauses_until_one_is_answered() -> None:
    served, client, ws = await _serve(max_requests=2)
    try:
        peer = await served.peers.get()
        peer.request_opened()
        assert not peer.paused
        peer.request_opened()
        assert peer.paused
        reader = asyncio.ensure_future(peer.wait_readable())
        await asyncio.sleep(0.01)
        assert not reader.done()
        peer.request_closed()
        assert await asyncio.wait_for(reader, 5) is True
    finally:
        served.done.set()
        await ws.close()
        await client.close()


def test_the_connection_budget_keeps_descriptors_back() -> None:
    assert connection_budget(10_000, 1_048_576) == 10_000
    assert connection_budget(10_000, 20_000) == 10_000
    assert connection_budget(10_000, 4_096) == 4_096 - 1024
    assert connection_budget(10_000, 1_024) == 512


def test_the_fd_limit_is_raised_to_the_hard_limit_in_a_child() -> None:
    def child() -> str:
        import resource

        _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard))
        return f"{raise_fd_limit()} {hard}"

    raised, hard = _in_forked_child(child).split()
    assert raised == hard


# ---------------------------------------------------------------------------------------------
# §12.4.1 permessage-deflate (RFC 7692): negotiated when offered, large frames compressed.


async def _raw_deflate_client(
    port: int,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
    """A WebSocket client by hand, offering permessage-deflate, so the test sees each
    frame's RSV1 bit (aiohttp's client would inflate frames before anyone saw them)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        "Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n".encode()
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    return reader, writer, head


async def _read_frame(reader: asyncio.StreamReader) -> tuple[bool, bytes]:
    """One unmasked server frame: (RSV1 set, payload)."""
    first, second = await asyncio.wait_for(reader.readexactly(2), 10)
    length = second & 0x7F
    if length == 126:
        length = struct.unpack("!H", await reader.readexactly(2))[0]
    elif length == 127:
        length = struct.unpack("!Q", await reader.readexactly(8))[0]
    return bool(first & 0x40), await reader.readexactly(length)


async def test_12_4_1_deflate_is_negotiated_and_only_large_frames_are_compressed() -> None:
    """Small frames keep the one-write fast path uncompressed (RFC 7692 allows it); a
    frame of deflate_min_bytes or more leaves compressed, in its place among the others."""
    served = _Served(deflate_min_bytes=1024)
    app = web.Application()

    async def handler(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(compress=True)
        stream = await ws.prepare(request)
        peer = Peer(ws, "served", stream, deflate_min_bytes=1024)
        await served.peers.put(peer)
        await served.done.wait()
        await peer.close()
        return ws

    app.router.add_get("/ws", handler)
    server = TestServer(app)
    await server.start_server()
    reader, writer, head = await _raw_deflate_client(server.port or 0)
    try:
        assert b"101" in head.split(b"\r\n", 1)[0]
        assert b"permessage-deflate" in head.lower()
        peer = await served.peers.get()
        big = b'{"items":[' + b",".join(b'"item-%05d"' % i for i in range(500)) + b"]}"
        frames = [b'{"n":1}', big, b'{"n":2}', b'{"n":3}']
        for frame in frames:
            assert peer.send(frame)
        await peer.flush(timeout=5.0)
        inflate = zlib.decompressobj(wbits=-15)
        got = []
        for _ in frames:
            compressed, payload = await _read_frame(reader)
            if compressed:
                payload = inflate.decompress(payload + b"\x00\x00\xff\xff")
            got.append((compressed, payload))
        assert got == [(False, frames[0]), (True, big), (False, frames[2]), (False, frames[3])]
    finally:
        served.done.set()
        writer.close()
        await server.close()


async def test_12_4_1_without_deflate_offered_nothing_is_compressed() -> None:
    served, client, ws = await _serve(deflate_min_bytes=16)
    try:
        peer = await served.peers.get()
        assert not ws.compress
        peer.send(b'{"long":"' + b"y" * 5000 + b'"}')
        msg = await asyncio.wait_for(ws.receive(), 10)
        assert msg.type == aiohttp.WSMsgType.TEXT and len(msg.data) == 5011
    finally:
        served.done.set()
        await ws.close()
        await client.close()


async def test_12_4_1_client_side_sends_small_frames_uncompressed_and_large_ones_deflated() -> None:
    """A dialling Peer (a gateway's reactor link) with deflate negotiated: small frames go
    out uncompressed, large ones compressed; the server reads both intact, in order."""
    received: asyncio.Queue[str] = asyncio.Queue()

    async def handler(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(compress=True)
        await ws.prepare(request)
        async for msg in ws:
            await received.put(msg.data)
        return ws

    app = web.Application()
    app.router.add_get("/ws", handler)
    client = TestClient(TestServer(app))
    await client.start_server()
    ws = await client.ws_connect("/ws", compress=15)
    peer = Peer(ws, "client", deflate_min_bytes=1024)
    try:
        assert ws.compress == 15
        peer.send(b'{"n":1}')
        assert await asyncio.wait_for(received.get(), 10) == '{"n":1}'
        assert ws._writer._compressobj is None  # nothing went through the compressor
        big = '{"long":"' + "z" * 4000 + '"}'
        peer.send(big.encode())
        peer.send(b'{"n":2}')
        assert await asyncio.wait_for(received.get(), 10) == big
        assert await asyncio.wait_for(received.get(), 10) == '{"n":2}'
        assert ws._writer._compressobj is not None  # the large frame was deflated
    finally:
        await peer.close()
        await client.close()


async def test_client_side_the_first_frame_of_an_iteration_leaves_at_once() -> None:
    """A dialling Peer (reactor link, SDK) writes the first frame of a loop iteration
    straight to the socket (no hop through its writer task); the rest of the iteration's
    frames queue behind it and arrive after it, in order."""
    received: asyncio.Queue[str] = asyncio.Queue()

    async def handler(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            await received.put(msg.data)
        return ws

    app = web.Application()
    app.router.add_get("/ws", handler)
    client = TestClient(TestServer(app))
    await client.start_server()
    ws = await client.ws_connect("/ws")
    peer = Peer(ws, "client")
    try:
        assert peer.send(b'{"n":1}')
        assert not peer._outbox  # written, not queued
        assert peer.send(b'{"n":2}') and peer.send(b'{"n":3}')
        assert len(peer._outbox) == 2  # behind it, for the writer
        got = [await asyncio.wait_for(received.get(), 10) for _ in range(3)]
        assert got == ['{"n":1}', '{"n":2}', '{"n":3}']
    finally:
        await peer.close()
        await client.close()
