"""A deliberately broken PFAP reactor endpoint for testing the conformance kit.

``python -m tests.integration.broken_endpoint --defect NAME [--delay S]`` serves ``/ws`` on
127.0.0.1 (ephemeral port) and prints the usual ``{"event": "ready", "url": ...}`` line. It
answers like a conforming reactor (the real decoder judges its input) except for the one
defect chosen:

- ``none``: no defect (the kit must pass it);
- ``ping_without_pong``: cf:ping's result lacks ``pong``;
- ``result_without_correlation``: RESULTs carry no ``correlation_id``;
- ``pf002_wrong_shape``: PF002's ``error_details`` is a string, not §10.2's object;
- ``slow_health``: cf:health answers after ``--delay`` seconds;
- ``pf001_unanswered``: a non-JSON frame gets no reply.

With ``--announce-to GATEWAY_WS_URL`` (API key in ``$PACKETFLOW_API_KEY``) it also announces
itself to a gateway, naming its capabilities only in the ``capabilities`` field, as §4.2.4's
list (``--capabilities list``) or §8.2's object (``--capabilities object``), so a test can
see the gateway route by either shape.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
import uuid
from typing import Any

import msgspec
from aiohttp import ClientSession, WSMsgType, web

from packetflow.protocol.errors import NoReactorAvailable
from packetflow.protocol.messages import Discover, FrameError, Submit, decode_frame

DEFECTS = ("none", "ping_without_pong", "result_without_correlation", "pf002_wrong_shape",
           "slow_health", "pf001_unanswered")  # fmt: skip
REACTOR_ID = "reactor-broken-01"
ELEMENTS = ("ping", "health", "introspect")


def envelope(kind: str, payload: dict[str, Any], correlation_id: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "protocol_version": "1.0", "message_type": kind, "message_id": f"msg_{uuid.uuid4()}",
        "timestamp": int(time.time() * 1000), "source_id": REACTOR_ID, "payload": payload,
    }  # fmt: skip
    if correlation_id is not None:
        out["correlation_id"] = correlation_id
    return out


def error(err: Any, correlation_id: str | None, packet_id: str | None,
          defect: str) -> dict[str, Any]:  # fmt: skip
    payload = err.to_payload(packet_id)
    if defect == "pf002_wrong_shape" and payload["error_code"] == "PF002":
        payload["error_details"] = payload["error_message"]
    return envelope("error", payload, correlation_id)


def result_data(element: str, data: dict[str, Any]) -> dict[str, Any]:
    if element == "ping":
        return {"pong": True, "echo_data": data.get("echo_data"), "reactor_id": REACTOR_ID,
                "response_time_ms": 0.1, "implementation": "broken"}  # fmt: skip
    if element == "health":
        return {"status": "healthy", "overall_health_score": 0.9,
                "subsystem_health": {"packet_processor": {"status": "healthy", "score": 0.9}},
                "performance_indicators": {"avg_response_time_ms": 1.0},
                "resource_status": {"memory_usage_percent": 10.0}}  # fmt: skip
    return {"reactor_id": REACTOR_ID, "specializations": ["general_purpose"],
            "supported_packets": [{"group": "cf", "element": e} for e in ELEMENTS]}  # fmt: skip


async def answer(ws: web.WebSocketResponse, text: str, defect: str, delay: float) -> None:
    for item in decode_frame(text):
        if isinstance(item, FrameError):
            if defect == "pf001_unanswered" and item.error.code == "PF001":
                continue
            await ws.send_str(json.dumps(error(item.error, item.message_id, item.packet_id,
                                               defect)))  # fmt: skip
        elif isinstance(item, Discover):
            info = {"reactor_id": REACTOR_ID, "implementation": "broken",
                    "specializations": ["general_purpose"], "endpoints": {}}  # fmt: skip
            await ws.send_str(
                json.dumps(
                    envelope(
                        "discover",
                        {"discovery_type": "response", "reactor_info": info},
                        item.message_id,
                    )
                )
            )
        elif isinstance(item, Submit):
            packet = item.payload.packet
            if packet.group != "cf" or packet.element not in ELEMENTS:
                err = NoReactorAvailable(f"{packet.group}:{packet.element} is not served here")
                await ws.send_str(json.dumps(error(err, item.message_id, packet.id, defect)))
                continue
            data = result_data(packet.element, msgspec.json.decode(packet.data))
            if defect == "ping_without_pong" and packet.element == "ping":
                del data["pong"]
            if defect == "slow_health" and packet.element == "health":
                await asyncio.sleep(delay)
            correlation = None if defect == "result_without_correlation" else item.message_id
            await ws.send_str(
                json.dumps(
                    envelope(
                        "result",
                        {"packet_id": packet.id, "status": "success", "data": data},
                        correlation,
                    )
                )
            )


def app_for(defect: str, delay: float) -> web.Application:
    async def ws_handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for frame in ws:
            if frame.type == WSMsgType.TEXT:
                await answer(ws, frame.data, defect, delay)
        return ws

    app = web.Application()
    app.router.add_get("/ws", ws_handler)
    return app


def capabilities(form: str) -> Any:
    if form == "list":
        return [f"cf:{e}" for e in ELEMENTS]
    return {"packet_support": [{"group": "cf", "elements": list(ELEMENTS)}]}


async def announce(gateway: str, url: str, form: str) -> None:
    """Announce over the gateway's /ws and keep that control connection open."""
    headers = {"X-PacketFlow-API-Key": os.environ["PACKETFLOW_API_KEY"]}
    async with ClientSession() as http, http.ws_connect(gateway, headers=headers) as ws:
        info = {"reactor_id": REACTOR_ID, "implementation": "broken",
                "specializations": ["cpu_intensive"], "max_capacity": 8.0,
                "endpoints": {"websocket": url}}  # fmt: skip
        await ws.send_str(json.dumps(envelope("discover", {
            "discovery_type": "announce", "reactor_info": info,
            "capabilities": capabilities(form)}, None)))  # fmt: skip
        async for _frame in ws:
            pass


async def main(defect: str, delay: float, gateway: str | None, form: str) -> None:
    runner = web.AppRunner(app_for(defect, delay))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    url = f"ws://127.0.0.1:{port}/ws"
    print(json.dumps({"event": "ready", "role": "reactor", "id": REACTOR_ID, "url": url}),
          flush=True)  # fmt: skip
    if gateway is not None:
        await announce(gateway, url, form)
    await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--defect", choices=DEFECTS, default="none")
    parser.add_argument("--delay", type=float, default=1.5)
    parser.add_argument("--announce-to", default=None)
    parser.add_argument("--capabilities", choices=("list", "object"), default="list")
    args = parser.parse_args()
    asyncio.run(main(args.defect, args.delay, args.announce_to, args.capabilities))
