"""A raw PFAP client for the chaos suites: SUBMITs over one WebSocket, and every RESULT
or ERROR that comes back kept per message_id, so a test sees a lost packet (no reply) and
a duplicate (two replies) where the SDK, which matches one reply per request, could not."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import WSMsgType

from tests.integration.cluster import Node

# Frames as large as a gateway sends (DESIGN §3: 1 MiB default) plus slack.
MAX_FRAME = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Reply:
    kind: str  # "result" or "error"
    at: float  # time.monotonic() on arrival
    reactor_id: str | None
    error_code: str | None
    error_message: str | None = None


@dataclass(slots=True)
class Sent:
    packet_id: str
    at: float
    replies: list[Reply] = field(default_factory=list)


class Traffic:
    """``async with Traffic(gateway) as t: await t.steady(...)``; ``t.sent`` holds what
    was sent and every reply to it."""

    def __init__(self, gateway: Node) -> None:
        self.gateway = gateway
        self.sent: dict[str, Sent] = {}
        self.stray: list[dict[str, Any]] = []  # replies correlated to nothing we sent
        self._open: set[str] = set()  # sent, not answered yet (kept so counting is O(1))
        self._ids = itertools.count()
        self._tag = uuid.uuid4().hex[:6]
        self._replied = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Traffic:
        self._session = aiohttp.ClientSession()
        self._ws = await self._session.ws_connect(
            self.gateway.url, headers=self.gateway.auth_headers(), max_msg_size=MAX_FRAME
        )
        self._reader = asyncio.ensure_future(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    # ------------------------------------------------------------------ sending

    async def submit(self, element: str, data: dict[str, Any], *, group: str = "df",
                     timeout_ms: int = 30_000, packet_id: str | None = None) -> str:  # fmt: skip
        """Send one SUBMIT; its message_id."""
        assert self._ws is not None
        n = next(self._ids)
        message_id = f"chaos-{self._tag}-{n}"
        packet_id = packet_id or f"pkt-{self._tag}-{n}"
        envelope = {
            "protocol_version": "1.0", "message_type": "submit", "message_id": message_id,
            "timestamp": int(time.time() * 1000), "source_id": f"chaos-client-{self._tag}",
            "payload": {"packet": {"id": packet_id, "group": group, "element": element,
                                   "data": data, "timeout_ms": timeout_ms}},
        }  # fmt: skip
        self.sent[message_id] = Sent(packet_id, time.monotonic())
        self._open.add(message_id)
        await self._ws.send_str(json.dumps(envelope))
        return message_id

    async def steady(self, in_flight: int, make: Callable[[int], tuple[str, dict[str, Any]]],
                     stop: asyncio.Event, *, timeout_ms: int = 30_000,
                     total: int | None = None) -> None:  # fmt: skip
        """Keep ``in_flight`` packets unanswered until ``stop`` is set or ``total`` were
        sent; ``make(n)`` gives the n-th packet's element and data."""
        n = 0
        while not stop.is_set() and (total is None or n < total):
            while (len(self._open) < in_flight and not stop.is_set()
                   and (total is None or n < total)):  # fmt: skip
                element, data = make(n)
                await self.submit(element, data, timeout_ms=timeout_ms)
                n += 1
            self.check()
            self._replied.clear()
            stop_wait = asyncio.ensure_future(stop.wait())
            reply_wait = asyncio.ensure_future(self._replied.wait())
            await asyncio.wait({stop_wait, reply_wait}, return_when=asyncio.FIRST_COMPLETED)
            stop_wait.cancel()
            reply_wait.cancel()

    async def drain(self, timeout: float) -> None:
        """Wait until every message sent has at least one reply (or fail at ``timeout``)."""
        deadline = time.monotonic() + timeout
        while self._open:
            self.check()
            left = deadline - time.monotonic()
            if left <= 0:
                missing = sorted(self.unanswered())[:5]
                raise AssertionError(f"{len(self.unanswered())} packets never answered, "
                                     f"e.g. {missing}")  # fmt: skip
            self._replied.clear()
            if not self._open:
                break
            try:
                await asyncio.wait_for(self._replied.wait(), min(left, 1.0))
            except TimeoutError:
                continue

    # ------------------------------------------------------------------ reading

    def unanswered(self) -> list[str]:
        return sorted(self._open)

    def duplicates(self) -> dict[str, int]:
        return {mid: len(s.replies) for mid, s in self.sent.items() if len(s.replies) > 1}

    def by_packet(self) -> dict[str, Sent]:
        return {s.packet_id: s for s in self.sent.values()}

    async def _read(self) -> None:
        assert self._ws is not None
        async for frame in self._ws:
            if frame.type != WSMsgType.TEXT:
                continue
            body = json.loads(frame.data)
            for item in body if isinstance(body, list) else [body]:
                self._take(item)

    def _take(self, item: dict[str, Any]) -> None:
        kind = item.get("message_type")
        if kind not in ("result", "error"):
            return
        sent = self.sent.get(str(item.get("correlation_id")))
        if sent is None:
            self.stray.append(item)
            return
        payload = item.get("payload") or {}
        data = payload.get("data") if kind == "result" else None
        reactor_id = data.get("reactor_id") if isinstance(data, dict) else None
        self._open.discard(str(item.get("correlation_id")))
        sent.replies.append(Reply(kind, time.monotonic(), reactor_id, payload.get("error_code"),
                                  payload.get("error_message")))  # fmt: skip
        self._replied.set()

    def answered(self) -> int:
        self.check()
        return len(self.sent) - len(self._open)

    def check(self) -> None:
        """Raise if the connection is gone: nothing more could be counted."""
        if self._reader is not None and self._reader.done():
            error = None if self._reader.cancelled() else self._reader.exception()
            raise AssertionError(f"the client connection ended: {error!r}, close code "
                                 f"{self._ws.close_code if self._ws else None}")  # fmt: skip

    def all_answered(self, packets: set[str]) -> bool:
        by_packet = self.by_packet()
        return all(by_packet[p].replies for p in packets)

    def last_first_reply(self, packets: set[str], default: float) -> float:
        """When the last of ``packets`` got its (first) reply."""
        by_packet = self.by_packet()
        return max([by_packet[p].replies[0].at for p in packets] or [default])
