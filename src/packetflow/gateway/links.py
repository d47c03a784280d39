"""The gateway's work connection to one reactor (DESIGN §2): dialled by the gateway, many
SUBMITs in flight at once, replies and HEARTBEATs read back and handed to the gateway."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import WSMsgType

from ..protocol.authentication import DIAL_TOKEN_HEADER
from ..protocol.messages import decode_frame
from ..runner import cancel_and_wait
from ..transport import DEFLATE_WINDOW_BITS, Peer, set_pong_timeout

if TYPE_CHECKING:
    from .registry import ReactorRecord
    from .server import Gateway

log = logging.getLogger("packetflow.gateway.links")

LINK_MAX_MSG = 8 * 1024 * 1024


class ReactorLink:
    def __init__(self, gateway: Gateway, record: ReactorRecord, url: str, ssl: Any = None) -> None:
        self.gateway = gateway
        self.ssl = ssl  # client TLS context for wss:// (mTLS: the gateway's certificate)
        self.record = record
        self.url = url
        self.peer: Peer | None = None
        self.closing = False  # set when the gateway closes it on purpose: no failover
        self._reader: asyncio.Task[None] | None = None

    @property
    def up(self) -> bool:
        return self.peer is not None and not self.peer.closed

    async def open(self, session: aiohttp.ClientSession, timeout: float = 5.0) -> None:
        token = self.record.dial_token
        ws = await session.ws_connect(
            self.url,
            params={"role": "gateway", "source_id": self.gateway.gateway_id},
            headers={DIAL_TOKEN_HEADER: token} if token else None,
            ssl=self.ssl if self.ssl is not None else True,
            max_msg_size=LINK_MAX_MSG, decode_text=False, autoping=True,
            timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=timeout),
            # §12.4.1: a reactor that stops answering pings (half-open, frozen) loses its
            # link, and on_link_lost fails its packets over.
            heartbeat=self.gateway.config.ping_interval_s,
            # §12.4.1 permessage-deflate, offered: the reactor deflates only large replies
            # (transport.DEFAULT_DEFLATE_MIN_BYTES), and so does this side.
            compress=DEFLATE_WINDOW_BITS,
        )  # fmt: skip
        set_pong_timeout(ws, self.gateway.config.pong_timeout_s)
        # DESIGN §3 makes every PFAP endpoint take array frames (§12.4.2), so bursts of
        # SUBMITs to a reactor travel batched.
        self.peer = Peer(ws, f"gateway->{self.record.reactor_id}", batch=True)
        self._reader = asyncio.get_running_loop().create_task(self._read_loop(self.peer))

    async def _read_loop(self, peer: Peer) -> None:
        on_message = self.gateway.on_reactor_message
        record = self.record
        try:
            async for frame in peer.ws:
                if frame.type == WSMsgType.TEXT:
                    for item in decode_frame(frame.data, LINK_MAX_MSG):
                        try:
                            on_message(record, item)
                        except Exception:  # a bug on one reply must not cut the work link
                            log.exception("handling a message from reactor %s failed",
                                          record.reactor_id)  # fmt: skip
                elif frame.type == WSMsgType.ERROR:
                    break
        except (ConnectionError, aiohttp.ClientError) as exc:
            log.info("link to %s failed: %s", record.reactor_id, exc)
        finally:
            await peer.close()
            if self.peer is peer:
                self.gateway.on_link_lost(record, self)

    async def close(self) -> None:
        await cancel_and_wait(self._reader)
        if self.peer is not None:
            await self.peer.close()
