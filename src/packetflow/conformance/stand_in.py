"""A stand-in reactor the kit announces to a gateway under test, so it sees what the gateway
forwards (wire example 2: correlation, packet id, timeout, chemical properties).

It serves only what a gateway needs to link and route to it: the three mandatory cf
elements for the gateway's health probes and one element of its own, ``cf:conformance_probe``,
whose SUBMITs it keeps for judging. Like any reactor it accepts only the gateway that
presents its dial token (DESIGN §8).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import secrets
import time
import uuid
from typing import Any, Final

from aiohttp import WSMsgType, web

from ..protocol.authentication import DIAL_TOKEN_HEADER

PROBE_ELEMENT: Final = "conformance_probe"
ELEMENTS: Final = ("ping", "health", "introspect", PROBE_ELEMENT)
# Bounded: the kit sends a handful of probe packets.
MAX_KEPT: Final = 64


class StandIn:
    def __init__(self, reactor_id: str) -> None:
        self.reactor_id = reactor_id
        self.token = secrets.token_urlsafe(32)
        self.received: asyncio.Queue[dict[str, Any]] = asyncio.Queue(MAX_KEPT)
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self, host: str = "127.0.0.1") -> str:
        app = web.Application()
        app.router.add_get("/ws", self._ws)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"ws://{host}:{port}/ws"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def info(self) -> dict[str, Any]:
        return {"reactor_id": self.reactor_id, "implementation": "conformance",
                "version": "1.0.0", "specializations": ["general_purpose"],
                "max_capacity": 4.0, "current_load": 0.0,
                "endpoints": {"websocket": self.url}}  # fmt: skip

    async def _ws(self, request: web.Request) -> web.StreamResponse:
        presented = request.headers.get(DIAL_TOKEN_HEADER, "")
        if not hmac.compare_digest(presented.encode(), self.token.encode()):
            return web.json_response({"error": "dial token required"}, status=401)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for frame in ws:
            if frame.type != WSMsgType.TEXT:
                continue
            with contextlib.suppress(ValueError):
                value = json.loads(frame.data)
                for item in value if isinstance(value, list) else [value]:
                    reply = self._answer(item)
                    if reply is not None:
                        await ws.send_str(json.dumps(reply))
        return ws

    def _answer(self, msg: Any) -> dict[str, Any] | None:
        if not isinstance(msg, dict) or msg.get("message_type") != "submit":
            return None
        packet = (msg.get("payload") or {}).get("packet") or {}
        element = packet.get("element")
        if element == PROBE_ELEMENT:
            with contextlib.suppress(asyncio.QueueFull):
                self.received.put_nowait(msg)
        data = self._data(element, packet.get("data") or {})
        if packet.get("group") != "cf" or data is None:
            return self._envelope("error", msg, {
                "packet_id": packet.get("id"), "error_code": "PF003",
                "error_category": "routing_error", "error_message": "not served here",
                "error_details": {}, "retry_possible": True})  # fmt: skip
        return self._envelope("result", msg, {"packet_id": packet.get("id"),
                                              "status": "success", "data": data})  # fmt: skip

    def _data(self, element: Any, data: Any) -> dict[str, Any] | None:
        if element == "ping":
            return {"pong": True, "echo_data": data.get("echo_data"),
                    "reactor_id": self.reactor_id, "response_time_ms": 0.0,
                    "implementation": "conformance"}  # fmt: skip
        if element == "health":
            return {"status": "healthy", "overall_health_score": 1.0, "subsystem_health": {},
                    "performance_indicators": {"error_rate_5min": 0.0},
                    "resource_status": {"memory_usage_percent": 1.0}}  # fmt: skip
        if element == "introspect":
            return {
                "specializations": ["general_purpose"],
                "supported_packets": [{"group": "cf", "element": e} for e in ELEMENTS],
            }
        if element == PROBE_ELEMENT:
            return {"probed": True}
        return None

    def _envelope(self, kind: str, answered: dict[str, Any],
                  payload: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
        return {"protocol_version": "1.0", "message_type": kind,
                "message_id": f"msg_{uuid.uuid4()}", "timestamp": int(time.time() * 1000),
                "source_id": self.reactor_id, "correlation_id": answered.get("message_id"),
                "payload": payload}  # fmt: skip
