"""One WebSocket peer: a non-blocking outbox in front of an aiohttp socket, and the clock
and id sources every server uses.

Frames are queued by synchronous code (the rules never await) and written by one writer
task per connection, so a burst of replies costs one task, not one per message. On the
server side of a connection without compression, the writer also sends a burst as one
write: every write to a socket is a system call, and on loopback it also runs the
receiver's TCP stack, which made per-frame writes the largest cost of a reactor under load.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import struct
import time
from collections import deque
from typing import Any, TypeAlias

from aiohttp import WSMsgType, web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.client_ws import ClientWebSocketResponse

from .runner import cancel_and_wait

log = logging.getLogger(__name__)

Socket: TypeAlias = "web.WebSocketResponse[Any] | ClientWebSocketResponse[Any]"

# Above this many queued bytes the writer stops batching and lets the socket drain.
OUTBOX_HIGH_WATER = 4 * 1024 * 1024

# §12.4.2 batching: at most this many envelopes, and well under DESIGN §3's 1 MiB frame.
MAX_BATCH = 50
BATCH_BYTES = 512 * 1024

# RFC 6455 §5.2 headers of an unmasked, final text frame by payload length.
_FIN_TEXT = 0x80 | WSMsgType.TEXT
_HEADER_7 = struct.Struct("!BB")
_HEADER_16 = struct.Struct("!BBH")
_HEADER_64 = struct.Struct("!BBQ")


def _text_frame_header(length: int) -> bytes:
    if length < 126:
        return _HEADER_7.pack(_FIN_TEXT, length)
    if length < 65536:
        return _HEADER_16.pack(_FIN_TEXT, 126, length)
    return _HEADER_64.pack(_FIN_TEXT, 127, length)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


# Packet ids can be replayed from the idempotency window by whoever knows them, so they
# come from the OS's secure randomness: one getrandom() per 256 ids rather than per id
# (a system call per message once cost the gateway more than routing did).
_POOL_IDS = 256
_pool = b""
_pool_at = 0
_UUID4_MASK = ~(0xF << 76) & ~(0x3 << 62) & ((1 << 128) - 1)
_UUID4_BITS = (0x4 << 76) | (0x2 << 62)


def _uuid4() -> str:
    """A random RFC 4122 version-4 UUID string, like ``str(uuid.uuid4())``."""
    global _pool, _pool_at
    if _pool_at >= len(_pool):
        _pool, _pool_at = os.urandom(16 * _POOL_IDS), 0
    n = int.from_bytes(_pool[_pool_at : _pool_at + 16])
    _pool_at += 16
    h = f"{(n & _UUID4_MASK) | _UUID4_BITS:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


# Message ids need uniqueness only (replies are matched per connection): a random
# UUID-4-shaped prefix per process and a counter in the last 48 bits, one format each.
_msg_prefix = ""
_msg_serial = itertools.count()


def _reseed() -> None:
    """New randomness in a forked child, which must not repeat its parent's ids."""
    global _pool, _pool_at, _msg_prefix, _msg_serial
    _pool, _pool_at = b"", 0
    _msg_prefix = _uuid4()[:24]
    _msg_serial = itertools.count(int.from_bytes(os.urandom(6)))


_reseed()
os.register_at_fork(after_in_child=_reseed)


def new_message_id() -> str:
    return f"msg_{_msg_prefix}{next(_msg_serial) & 0xFFFFFFFFFFFF:012x}"


def new_packet_id() -> str:
    return f"packet_{_uuid4()}"


def handshake_abandoned() -> web.StreamResponse:
    """What a WebSocket handler returns when its peer left during the handshake: aiohttp
    then finds the connection gone while answering and lets it go quietly (returning the
    unprepared WebSocketResponse made it log an error for every such client)."""
    return web.Response(status=499, reason="Client Closed Request")


class Peer:
    """A connected WebSocket with its own sequence counter and outbox."""

    __slots__ = (
        "_batch",
        "_closed",
        "_drained",
        "_hot",
        "_outbox",
        "_stream",
        "_wakeup",
        "_writer",
        "attrs",
        "name",
        "remote_id",
        "seq",
        "ws",
    )

    def __init__(
        self,
        ws: Socket,
        name: str,
        stream: AbstractStreamWriter | None = None,
        *,
        batch: bool = False,
    ) -> None:
        """``stream`` is what ``WebSocketResponse.prepare()`` returned, on the server side:
        with it, and without permessage-deflate, bursts of frames go out in one write
        (server frames are unmasked, so they need no per-frame work from aiohttp)."""
        self.ws = ws
        self._stream = stream if stream is not None and not ws.compress else None
        # §12.4.2: frames queued together leave as one array frame, which the other side
        # reads as one message; only for peers known to take batches (not clients).
        self._batch = batch
        self.name = name
        self.seq = 0
        self.remote_id: str | None = None
        self.attrs: dict[str, Any] = {}
        self._outbox: deque[bytes] = deque()
        self._wakeup = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        self._closed = False
        self._hot = False  # a frame went out directly in this loop iteration
        self._writer = asyncio.get_running_loop().create_task(self._write_loop())

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    @property
    def closed(self) -> bool:
        return self._closed or self.ws.closed

    def send(self, frame: bytes) -> bool:
        """Queue one text frame; False when the peer is gone (the caller fails over)."""
        if self.closed:
            return False
        stream = self._stream
        if stream is not None and not self._hot and not self._outbox:
            # The first frame of a loop iteration leaves at once (one task hop less on
            # the way back to a waiting client); the rest of the iteration's frames
            # queue behind it and leave together as before.
            transport = stream.transport
            if (
                transport is not None
                and not transport.is_closing()
                and not transport.get_write_buffer_size()
            ):
                transport.write(_text_frame_header(len(frame)) + frame)
                self._hot = True
                asyncio.get_running_loop().call_soon(self._cool)
                return True
        self._outbox.append(frame)
        self._drained.clear()
        self._wakeup.set()
        return True

    def _cool(self) -> None:
        self._hot = False

    async def _write_loop(self) -> None:
        outbox, ws, stream = self._outbox, self.ws, self._stream
        try:
            while not self._closed:
                await self._wakeup.wait()
                self._wakeup.clear()
                while outbox:
                    if stream is None and self._batch and len(outbox) > 1:
                        await ws.send_frame(self._take_batch(), WSMsgType.TEXT)
                    elif stream is None:
                        await ws.send_frame(outbox.popleft(), WSMsgType.TEXT)
                    else:
                        self._write_burst(stream)
                        await stream.drain()  # returns at once unless the socket is full
                self._drained.set()
        except (ConnectionError, RuntimeError, asyncio.CancelledError) as exc:
            if not isinstance(exc, asyncio.CancelledError):
                log.debug("peer %s: write failed: %s", self.name, exc)
        finally:
            self._closed = True
            self._drained.set()

    def _take_batch(self) -> bytes:
        """Up to MAX_BATCH queued envelopes as one JSON array, within the frame limit."""
        outbox = self._outbox
        parts = [outbox.popleft()]
        size = len(parts[0])
        while outbox and len(parts) < MAX_BATCH and size + len(outbox[0]) < BATCH_BYTES:
            frame = outbox.popleft()
            parts.append(frame)
            size += len(frame) + 1
        if len(parts) == 1:
            return parts[0]
        return b"[" + b",".join(parts) + b"]"

    def _write_burst(self, stream: AbstractStreamWriter) -> None:
        """Frame what is queued (up to OUTBOX_HIGH_WATER bytes) and write it at once."""
        transport = stream.transport
        if transport is None or transport.is_closing() or self.ws.closed:
            # Nothing may follow aiohttp's close frame; the caller marks the peer closed.
            raise ConnectionResetError("WebSocket is closing")
        outbox = self._outbox
        parts: list[bytes] = []
        size = 0
        while outbox and size < OUTBOX_HIGH_WATER:
            frame = self._take_batch() if self._batch else outbox.popleft()
            parts.append(_text_frame_header(len(frame)))
            parts.append(frame)
            size += len(frame)
        transport.writelines(parts)

    async def close(self) -> None:
        self._closed = True
        await cancel_and_wait(self._writer)
        if not self.ws.closed:
            with contextlib.suppress(Exception):
                await self.ws.close()

    async def flush(self, timeout: float = 5.0) -> None:
        """Wait until the outbox is written (used before a graceful close)."""
        if self.closed:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._drained.wait(), timeout)
