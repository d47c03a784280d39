"""One WebSocket peer: a non-blocking outbox in front of an aiohttp socket, and the clock
and id sources every server uses.

Frames are queued by synchronous code (the rules never await) and written by one writer
task per connection, so a burst of replies costs one task, not one per message. On the
server side of a connection, the writer also sends a burst as one write: every write to a
socket is a system call, and on loopback it also runs the receiver's TCP stack, which
made per-frame writes the largest cost of a reactor under load.

permessage-deflate (§12.4.1, RFC 7692) is negotiated whenever the other side offers it,
but only frames of ``deflate_min_bytes`` (64 KiB) or more are compressed: RFC 7692 §6
lets either end send any message uncompressed, and the gateway and reactors are CPU-bound,
so deflate pays only where bytes cost more than CPU. Measured on the 2-core VM (zlib
level 1, as aiohttp uses it): ~5 µs for a 0.5 KB reply, ~50 µs for a 14 KB one, against a
gateway hop of ~150 µs; and with an 8 KiB threshold, deflating the reactor links' batches
(50 pings are ~35 KB; aiohttp also moves frames over 16 KiB to a thread, both ways) cost
the reactor +15 µs and the gateway +10-40 µs of CPU per packet. Compressing every frame
would also take the burst write above away. On the client side (a gateway's reactor
links, the SDK) the small frames are written through aiohttp's frame writer with RSV1
clear, since its ``send_frame`` compresses every frame once deflate is negotiated.

How backpressure works (a server's client connections): what a connection has not yet
taken is what sits in its outbox plus the asyncio transport's write buffer. Past
``max_outbox_bytes`` the peer is *full*: its read loop stops reading (``wait_readable``),
so TCP pushes back on a sender that does not read its replies, and event publishers skip
it. Replies to packets already accepted are still queued (they are bounded by the
connection's request cap). A peer that stays full for ``slow_consumer_s`` is closed with
1008 and the reason "slow consumer: N bytes unsent for T s", as NATS does.
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

from .protocol.principals import Principal
from .runner import cancel_and_wait

log = logging.getLogger(__name__)

Socket: TypeAlias = "web.WebSocketResponse[Any] | ClientWebSocketResponse[Any]"
# One text frame: its bytes, or parts that are sent one after the other as one frame, so an
# event fanned out to thousands of subscribers shares its body instead of being copied.
Frame: TypeAlias = bytes | tuple[bytes, ...]

# At most this many bytes go to the transport in one write, then the writer lets the socket
# drain: one system call per 256 KiB costs nothing measurable, and what waits in the
# outbox (where fanned-out events share their body) is cheaper than the transport's copy.
WRITE_BURST_BYTES = 256 * 1024

# Default bound on a client connection's unsent bytes (outbox + transport buffer): a few
# MiB, enough for thousands of typical replies in flight, like NATS' per-client pending
# limit (there 64 MiB for a few fat subscribers; a gateway has many thin clients).
DEFAULT_MAX_OUTBOX_BYTES = 4 * 1024 * 1024
# How long a connection may stay full before it is closed as a slow consumer (NATS'
# write_deadline is 10 s; replies here can be large and clients bursty, so a bit longer).
DEFAULT_SLOW_CONSUMER_S = 30.0
# After the close frame is queued, how long a slow consumer has to take it before its
# socket is aborted (it may never read again: the kernel buffer must be freed).
SLOW_CLOSE_GRACE_S = 2.0
# WebSocket close code for a slow consumer: RFC 6455 §7.4.1 1008, policy violation.
SLOW_CONSUMER_CLOSE_CODE = 1008

# A client connection's unanswered requests (packets read, no RESULT/ERROR yet) before its
# read loop pauses: the outbox bound alone would let a client that never reads park up
# to max_queue packets (~1.5 KB each) in the gateway before the first reply came back.
DEFAULT_MAX_REQUESTS_PER_CONNECTION = 10_000
# §12.4.1 websocket_settings: ping every 30 s, pong within 5 s, so a half-open peer is
# found within 35 s.
DEFAULT_PING_INTERVAL_S = 30.0
DEFAULT_PONG_TIMEOUT_S = 5.0
# How long a new TCP connection may take to send a complete HTTP request (the WebSocket
# upgrade included) before it is closed: nginx's client_header_timeout is 60 s; a client
# here is a program, not a person on a modem, so 10 s.
DEFAULT_HANDSHAKE_TIMEOUT_S = 10.0
# Client WebSocket connections one gateway holds at once; past it the upgrade gets 503.
# Further bounded by the file-descriptor limit (``connection_budget``).
DEFAULT_MAX_CONNECTIONS = 10_000
# File descriptors kept back from client connections for reactor links, the journal,
# handshakes in progress and /health (at least half of the limit is kept back below 2,048).
FD_RESERVE = 1024

# §12.4.2 batching: at most this many envelopes, and well under DESIGN §3's 1 MiB frame.
# A batch holds what was queued during one event-loop iteration, so no envelope waits for
# a batch to fill: §12.4.2's batch_timeout_ms (100 ms) is an upper bound this never nears.
MAX_BATCH = 50
BATCH_BYTES = 512 * 1024
# Frames at least this long are sent compressed when permessage-deflate was negotiated
# (module doc: smaller ones, a batch of small envelopes included, cost more CPU to deflate
# and inflate than their bytes cost to send on a LAN).
DEFAULT_DEFLATE_MIN_BYTES = 64 * 1024
# What a dialling side offers for permessage-deflate: RFC 7692's largest LZ77 window.
DEFLATE_WINDOW_BITS = 15

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


def raise_fd_limit() -> int:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit (a server's sockets are
    its file descriptors; distributions default the soft limit to 1,024); the new soft
    limit, or the old one where it cannot be raised."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-file limit from %d to %d: %s", soft, hard, exc)
    return soft


def connection_budget(configured: int, fd_limit: int) -> int:
    """Client connections allowed: ``configured``, but never more than the descriptors
    left after FD_RESERVE (or half of them, for small limits)."""
    room = max(fd_limit // 2, fd_limit - FD_RESERVE)
    return max(1, min(configured, room))


def set_pong_timeout(ws: Socket, pong_timeout_s: float) -> None:
    """§12.4.1's pong timeout on an aiohttp WebSocket made with ``heartbeat=``: aiohttp
    waits ``heartbeat / 2`` for a PONG and has no parameter for it, so this sets the
    attribute it reads (checked to exist, so an aiohttp upgrade that renames it fails
    loudly in tests instead of silently keeping half the interval)."""
    if not hasattr(ws, "_pong_heartbeat"):
        raise RuntimeError("aiohttp no longer has WebSocket _pong_heartbeat")
    ws._pong_heartbeat = pong_timeout_s


def _raw_frame_writer(ws: Socket) -> Any:
    """aiohttp's WebSocketWriter of a client socket when it has what ``Peer`` uses to
    send a frame uncompressed (checked, so an aiohttp upgrade that renames them only
    means every frame is compressed again), else None."""
    writer = getattr(ws, "_writer", None)
    protocol = getattr(writer, "protocol", None)
    if not hasattr(writer, "_write_websocket_frame") or not hasattr(protocol, "_drain_helper"):
        return None
    return writer


def frame_size(frame: Frame) -> int:
    return len(frame) if isinstance(frame, bytes) else sum(map(len, frame))


def frame_bytes(frame: Frame) -> bytes:
    """The whole frame as one bytes object (a copy, made only when it is written)."""
    return frame if isinstance(frame, bytes) else b"".join(frame)


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
MESSAGE_SERIAL_MASK = 0xFFFFFFFFFFFF


def _reseed() -> None:
    """New randomness in a forked child, which must not repeat its parent's ids."""
    global _pool, _pool_at, _msg_prefix, _msg_serial
    _pool, _pool_at = b"", 0
    _msg_prefix = _uuid4()[:24]
    _msg_serial = itertools.count(int.from_bytes(os.urandom(6)))


_reseed()
os.register_at_fork(after_in_child=_reseed)


def new_message_id() -> str:
    return f"msg_{_msg_prefix}{next(_msg_serial) & MESSAGE_SERIAL_MASK:012x}"


def reserve_message_ids(count: int) -> tuple[str, int]:
    """``count`` consecutive message ids at once, for a fan-out that stamps thousands of
    frames: ``(prefix, first)``; id i is ``f"{prefix}{(first + i) & MESSAGE_SERIAL_MASK:012x}"``,
    the same ids ``new_message_id`` would have made."""
    global _msg_serial
    first = next(_msg_serial)
    _msg_serial = itertools.count(first + count)
    return f"msg_{_msg_prefix}", first


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
        "_busy",
        "_closed",
        "_closer",
        "_deflate_min",
        "_drained",
        "_full_since",
        "_hot",
        "_outbox",
        "_queued",
        "_raw",
        "_readable",
        "_slow_timer",
        "_stream",
        "_transport",
        "_wakeup",
        "_writer",
        "attrs",
        "close_reason",
        "max_outbox_bytes",
        "max_requests",
        "name",
        "principal",
        "remote_id",
        "requests",
        "secure",
        "seq",
        "slow_consumer_s",
        "ws",
    )

    def __init__(
        self,
        ws: Socket,
        name: str,
        stream: AbstractStreamWriter | None = None,
        *,
        batch: bool = False,
        max_outbox_bytes: int | None = None,
        slow_consumer_s: float = DEFAULT_SLOW_CONSUMER_S,
        max_requests: int | None = None,
        deflate_min_bytes: int = DEFAULT_DEFLATE_MIN_BYTES,
    ) -> None:
        """``stream`` is what ``WebSocketResponse.prepare()`` returned, on the server side:
        with it, bursts of frames go out in one write (server frames are unmasked, so they
        need no per-frame work from aiohttp); with permessage-deflate negotiated, frames of
        ``deflate_min_bytes`` or more leave compressed through aiohttp instead.

        ``max_outbox_bytes`` (None: unbounded) and ``slow_consumer_s`` bound what the peer
        may leave unread (module doc); ``max_requests`` (None: unbounded) pauses reading
        while that many of its requests are unanswered (``request_opened``/``_closed``)."""
        self.ws = ws
        self._stream = stream
        # None: permessage-deflate was not negotiated, nothing is compressed.
        self._deflate_min: int | None = deflate_min_bytes if ws.compress else None
        self._busy = False  # a compressed frame is on its way: nothing may overtake it
        # Client side: aiohttp's frame writer, for frames written without its send_frame
        # coroutine (the first of an iteration; small ones when deflate was negotiated).
        self._raw: Any = _raw_frame_writer(ws) if stream is None else None
        writer = getattr(ws, "_writer", None)  # aiohttp's WebSocketWriter, client side
        self._transport: Any = (
            stream.transport if stream is not None else getattr(writer, "transport", None)
        )
        self.max_outbox_bytes = max_outbox_bytes
        self.slow_consumer_s = slow_consumer_s
        self.max_requests = max_requests
        self.requests = 0  # requests read from this peer and not answered yet
        self.close_reason: str | None = None
        self._queued = 0  # bytes in the outbox
        self._full_since: float | None = None
        self._slow_timer: asyncio.TimerHandle | None = None
        self._closer: asyncio.Task[None] | None = None
        self._readable = asyncio.Event()
        self._readable.set()
        # §12.4.2: frames queued together leave as one array frame, which the other side
        # reads as one message; only for peers known to take batches (not clients).
        self._batch = batch
        self.name = name
        self.seq = 0
        self.remote_id: str | None = None
        # Who authenticated this connection (protocol/principals.py); None on client side.
        self.principal: Principal | None = None
        self.secure = False  # the connection runs over TLS (§11.3.2 classification)
        self.attrs: dict[str, Any] = {}
        self._outbox: deque[Frame] = deque()
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

    # ------------------------------------------------------------------ backpressure

    @property
    def pending_bytes(self) -> int:
        """Bytes the other side has not taken yet: the outbox plus the transport's buffer."""
        transport = self._transport
        buffered = transport.get_write_buffer_size() if transport is not None else 0
        return self._queued + buffered

    @property
    def full(self) -> bool:
        """Past ``max_outbox_bytes`` and not yet drained to half of it: take nothing
        optional (events) and read nothing more from this peer."""
        return self._full_since is not None

    @property
    def paused(self) -> bool:
        """Whether the read loop should stop reading: full, or at its request cap."""
        limit = self.max_requests
        return self._full_since is not None or (limit is not None and self.requests >= limit)

    def request_opened(self) -> None:
        self.requests += 1

    def request_closed(self) -> None:
        self.requests -= 1
        limit = self.max_requests
        if limit is not None and self.requests < limit and self._full_since is None:
            self._readable.set()

    async def wait_readable(self) -> bool:
        """Wait while ``paused``; False when the peer closed meanwhile (stop reading)."""
        while self.paused and not self.closed:
            self._readable.clear()
            await self._readable.wait()
        return not self.closed

    def _check_full(self) -> None:
        limit = self.max_outbox_bytes
        if limit is None or self._full_since is not None or self.pending_bytes < limit:
            return
        loop = asyncio.get_running_loop()
        self._full_since = loop.time()
        self._readable.clear()
        self._slow_timer = loop.call_later(self.slow_consumer_s, self._slow_check)

    def _check_room(self) -> None:
        """Called by the writer after each drain: below half the limit the peer is no
        longer full (the hysteresis keeps a reader from flapping per frame)."""
        limit = self.max_outbox_bytes
        if self._full_since is None or limit is None or self.pending_bytes > limit // 2:
            return
        self._full_since = None
        if self._slow_timer is not None:
            self._slow_timer.cancel()
            self._slow_timer = None
        if not self.paused:
            self._readable.set()

    def _slow_check(self) -> None:
        self._slow_timer = None
        if self._full_since is None or self.closed:
            return
        self._check_room()  # the transport may have drained while the writer slept
        if self._full_since is None:
            return
        unsent = self.pending_bytes
        reason = f"slow consumer: {unsent} bytes unsent for {self.slow_consumer_s:g} s"
        log.warning("peer %s: closing, %s", self.name, reason)
        self.close_reason = reason
        self._closer = asyncio.get_running_loop().create_task(self._close_slow(reason))

    async def _close_slow(self, reason: str) -> None:
        """Drop what the peer never took, queue the close frame with the reason, and abort
        the socket if the peer does not take even that (it may never read again)."""
        self._closed = True
        self._outbox.clear()
        self._queued = 0
        self._readable.set()
        await cancel_and_wait(self._writer)
        try:
            await asyncio.wait_for(
                self.ws.close(code=SLOW_CONSUMER_CLOSE_CODE, message=reason.encode()),
                SLOW_CLOSE_GRACE_S,
            )
        except (TimeoutError, ConnectionError, RuntimeError) as exc:
            log.debug("peer %s: close frame not taken (%s); aborting", self.name, exc)
        if self._transport is not None:
            # transport.close() would wait for a buffer a slow consumer never drains.
            self._transport.abort()

    # ------------------------------------------------------------------ sending

    def send(self, frame: Frame) -> bool:
        """Queue one text frame; False when the peer is gone (the caller fails over)."""
        if self.closed:
            return False
        if not self._hot and not self._outbox and not self._busy and isinstance(frame, bytes):
            # The first frame of a loop iteration leaves at once (one task hop less on
            # the way to the other side); the rest of the iteration's frames queue behind
            # it and leave together as before.
            deflate_min = self._deflate_min
            if (deflate_min is None or len(frame) < deflate_min) and self._write_now(frame):
                self._hot = True
                asyncio.get_running_loop().call_soon(self._cool)
                return True
        self._enqueue(frame, frame_size(frame))
        return True

    def _write_now(self, frame: bytes) -> bool:
        """Write one uncompressed frame straight to the socket if nothing waits there
        before it; False to queue it instead."""
        stream = self._stream
        if stream is not None:  # server side: unmasked, framed here
            transport = stream.transport
            if transport is None or transport.is_closing() or transport.get_write_buffer_size():
                return False
            transport.write(_text_frame_header(len(frame)) + frame)
            return True
        raw = self._raw  # client side: aiohttp masks it
        if raw is None or raw.protocol.writing_paused or raw.transport.is_closing():
            return False
        raw._write_websocket_frame(frame, WSMsgType.TEXT, 0)
        return True

    def send_parts(self, parts: tuple[bytes, ...], size: int) -> bool:
        """Queue one frame made of ``parts`` (``size`` bytes in all), which may be shared
        with other peers' frames; False when the peer is gone."""
        if self.closed:
            return False
        self._enqueue(parts, size)
        return True

    def _enqueue(self, frame: Frame, size: int) -> None:
        outbox = self._outbox
        was_empty = not outbox
        outbox.append(frame)
        self._queued += size
        limit = self.max_outbox_bytes
        # The transport holds at most about one write burst, so below this the peer
        # cannot be full and its buffer size need not be asked.
        if (
            limit is not None
            and self._full_since is None
            and self._queued + WRITE_BURST_BYTES >= limit
        ):
            self._check_full()
        if was_empty:  # otherwise the writer is already awake and will get to it
            self._drained.clear()
            self._wakeup.set()

    def _pop(self) -> Frame:
        frame = self._outbox.popleft()
        self._queued -= frame_size(frame)
        return frame

    def _cool(self) -> None:
        self._hot = False

    async def _write_loop(self) -> None:
        outbox, ws, stream = self._outbox, self.ws, self._stream
        try:
            while not self._closed:
                await self._wakeup.wait()
                self._wakeup.clear()
                while outbox:
                    if stream is None:
                        batch = self._batch and len(outbox) > 1
                        await self._send_client_frame(
                            self._take_batch() if batch else frame_bytes(self._pop())
                        )
                    else:
                        big = self._write_burst(stream)
                        if big is not None:  # permessage-deflate: aiohttp compresses it
                            self._busy = True
                            try:
                                await ws.send_frame(big, WSMsgType.TEXT)
                            finally:
                                self._busy = False
                        await stream.drain()  # returns at once unless the socket is full
                    self._check_room()
                self._drained.set()
        except (ConnectionError, RuntimeError, asyncio.CancelledError) as exc:
            if not isinstance(exc, asyncio.CancelledError):
                log.debug("peer %s: write failed: %s", self.name, exc)
        finally:
            self._closed = True
            self._drained.set()
            self._readable.set()

    async def _send_client_frame(self, frame: bytes) -> None:
        """One frame from the client side: through aiohttp (masked; compressed when
        deflate was negotiated), or, when it is small and deflate was negotiated, straight
        through aiohttp's frame writer uncompressed (RFC 7692 §6 allows it). While it
        awaits, ``send`` writes nothing directly (``_busy``): nothing overtakes it."""
        raw = self._raw
        deflate_min = self._deflate_min
        self._busy = True
        try:
            if raw is None or (deflate_min is not None and len(frame) >= deflate_min):
                await self.ws.send_frame(frame, WSMsgType.TEXT)
                return
            raw._write_websocket_frame(frame, WSMsgType.TEXT, 0)
            protocol = raw.protocol
            if protocol.writing_paused:  # the socket's buffer is over its high-water mark
                await protocol._drain_helper()
        finally:
            self._busy = False

    def _take_batch(self) -> bytes:
        """Up to MAX_BATCH queued envelopes as one JSON array, within the frame limit."""
        outbox = self._outbox
        frame = outbox.popleft()
        first = frame if isinstance(frame, bytes) else b"".join(frame)
        parts = [first]
        size = taken = len(first)
        # Sizes are read once per frame (a link's batches take thousands a second).
        while outbox and len(parts) < MAX_BATCH:
            frame = outbox[0]
            length = len(frame) if frame.__class__ is bytes else frame_size(frame)
            if size + length >= BATCH_BYTES:
                break
            outbox.popleft()
            parts.append(frame if isinstance(frame, bytes) else b"".join(frame))
            size += length + 1
            taken += length
        self._queued -= taken
        if len(parts) == 1:
            return first
        return b"[" + b",".join(parts) + b"]"

    def _write_burst(self, stream: AbstractStreamWriter) -> bytes | None:
        """Frame what is queued (up to WRITE_BURST_BYTES) and write it at once; stop at
        a frame to be compressed and return it (taken from the outbox) for the caller."""
        transport = stream.transport
        if transport is None or transport.is_closing() or self.ws.closed:
            # Nothing may follow aiohttp's close frame; the caller marks the peer closed.
            raise ConnectionResetError("WebSocket is closing")
        outbox = self._outbox
        deflate_min = self._deflate_min
        parts: list[bytes] = []
        size = 0
        while outbox and size < WRITE_BURST_BYTES:
            frame = self._take_batch() if self._batch else self._pop()
            length = frame_size(frame)
            if deflate_min is not None and length >= deflate_min:
                transport.writelines(parts)
                return frame_bytes(frame)
            parts.append(_text_frame_header(length))
            if isinstance(frame, bytes):
                parts.append(frame)
            else:
                parts.extend(frame)
            size += length
        transport.writelines(parts)
        return None

    async def close(self) -> None:
        self._closed = True
        self._readable.set()
        if self._slow_timer is not None:
            self._slow_timer.cancel()
            self._slow_timer = None
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
