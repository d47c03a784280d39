"""One WebSocket peer: a non-blocking outbox in front of an aiohttp socket, and the clock
and id sources every server uses.

Frames are queued by synchronous code (the rules never await) and written by one writer
task per connection, so a burst of replies costs one task, not one per message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections import deque
from typing import Any, TypeAlias

from aiohttp import WSMsgType, web
from aiohttp.client_ws import ClientWebSocketResponse

log = logging.getLogger(__name__)

Socket: TypeAlias = "web.WebSocketResponse[Any] | ClientWebSocketResponse[Any]"

# Above this many queued bytes the writer stops batching and lets the socket drain.
OUTBOX_HIGH_WATER = 4 * 1024 * 1024


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def new_message_id() -> str:
    return f"msg_{uuid.UUID(bytes=os.urandom(16), version=4)}"


def new_packet_id() -> str:
    return f"packet_{uuid.UUID(bytes=os.urandom(16), version=4)}"


class Peer:
    """A connected WebSocket with its own sequence counter and outbox."""

    __slots__ = (
        "_closed",
        "_drained",
        "_outbox",
        "_wakeup",
        "_writer",
        "attrs",
        "name",
        "remote_id",
        "seq",
        "ws",
    )

    def __init__(self, ws: Socket, name: str) -> None:
        self.ws = ws
        self.name = name
        self.seq = 0
        self.remote_id: str | None = None
        self.attrs: dict[str, Any] = {}
        self._outbox: deque[bytes] = deque()
        self._wakeup = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        self._closed = False
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
        self._outbox.append(frame)
        self._drained.clear()
        self._wakeup.set()
        return True

    async def _write_loop(self) -> None:
        outbox, ws = self._outbox, self.ws
        try:
            while not self._closed:
                await self._wakeup.wait()
                self._wakeup.clear()
                while outbox:
                    await ws.send_frame(outbox.popleft(), WSMsgType.TEXT)
                self._drained.set()
        except (ConnectionError, RuntimeError, asyncio.CancelledError) as exc:
            if not isinstance(exc, asyncio.CancelledError):
                log.debug("peer %s: write failed: %s", self.name, exc)
        finally:
            self._closed = True
            self._drained.set()

    async def close(self) -> None:
        self._closed = True
        self._writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._writer
        if not self.ws.closed:
            with contextlib.suppress(Exception):
                await self.ws.close()

    async def flush(self, timeout: float = 5.0) -> None:
        """Wait until the outbox is written (used before a graceful close)."""
        if self.closed:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._drained.wait(), timeout)
