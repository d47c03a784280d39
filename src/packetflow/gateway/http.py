"""The gateway's HTTP API (DESIGN §2): packets, reactors, affinity, health, metrics."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import msgspec
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ..protocol.errors import InvalidMessage, InvalidPacket, PacketFlowError
from ..protocol.messages import (
    PROTOCOL_VERSION,
    FrameError,
    Submit,
    decode_frame,
    decode_json,
    encode_json,
)
from ..transport import new_message_id, new_packet_id, now_ms

if TYPE_CHECKING:
    from .server import Gateway

JSON = "application/json"
# HTTP status for each PF code's category when a packet fails.
_HTTP_STATUS = {"PF001": 400, "PF002": 400, "PF003": 503, "PF004": 429, "PF005": 502,
                "PF101": 503, "PF503": 503, "PF504": 504}  # fmt: skip


def add_routes(app: web.Application, gateway: Gateway) -> None:
    async def health(request: web.Request) -> web.Response:
        return web.json_response(gateway.status())

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(gateway.metrics.registry),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})  # fmt: skip

    async def reactors(request: web.Request) -> web.Response:
        return web.json_response({"reactors": [r.summary() for r in gateway.registry]})

    async def affinity(request: web.Request) -> web.Response:
        return web.json_response({"version": gateway.matrix_version, "matrix": gateway.matrix,
                                  "history": list(gateway.local.history)})  # fmt: skip

    async def put_affinity(request: web.Request) -> web.Response:
        """§6.4 by HTTP: body {"matrix_updates": {...}, "version"?: "1.1"}."""
        try:
            body = decode_json(await request.read())
            if not isinstance(body, dict):
                raise InvalidPacket("Body must be a JSON object", field="body",
                                    expected_type="object", received_type=type(body).__name__,
                                    validation_rule="type")  # fmt: skip
            out = gateway.local.update_matrix(body, "body")
        except msgspec.DecodeError as exc:
            return _error_response(InvalidMessage(f"Invalid JSON format: {exc}", field="body",
                                                  validation_rule="json"), 400)  # fmt: skip
        except PacketFlowError as err:
            return _error_response(err, 400)
        return web.json_response(out)

    async def post_packet(request: web.Request) -> web.Response:
        from .server import HttpTarget

        body = await request.read()
        target = HttpTarget()
        msg = _as_submit(body)
        if isinstance(msg, FrameError):
            frame = gateway.answer_error(target, msg.error, msg.message_id, msg.packet_id)
            return _reply(frame, 400)
        if msg.payload.packet.id is None:  # the id answers ?wait=false and GET
            packet = msgspec.structs.replace(msg.payload.packet, id=new_packet_id())
            msg = msgspec.structs.replace(
                msg, payload=msgspec.structs.replace(msg.payload, packet=packet)
            )
        packet_id = msg.payload.packet.id
        gateway.accept(msg, target)
        if request.query.get("wait") == "false":
            return web.json_response(
                {"packet_id": packet_id, "status_url": f"/v1/packets/{packet_id}"}, status=202
            )
        frame = await asyncio.shield(target.future)
        return _reply(frame, 200)

    async def get_packet(request: web.Request) -> web.Response:
        """DESIGN §4: a packet's current lifecycle state, and its reply once it has one."""
        packet_id = request.match_info["packet_id"]
        story = gateway.stories.get(packet_id)
        if story is None:
            err = InvalidPacket(
                f"No packet {packet_id!r} is known to this gateway",
                field="packet_id",
                expected_type="a submitted packet id",
                received_type=packet_id,
                validation_rule="known_packet",
            )
            return _error_response(err, 404)
        body = story.view()
        seen = gateway.window.lookup(packet_id, time.monotonic())
        if seen is not None and seen.outcome is not None:
            body["reply"] = decode_json(seen.outcome)
        return web.json_response(body)

    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/v1/reactors", reactors)
    app.router.add_get("/v1/affinity", affinity)
    app.router.add_put("/v1/affinity", put_affinity)
    app.router.add_post("/v1/packets", post_packet)
    app.router.add_get("/v1/packets/{packet_id}", get_packet)


def _error_response(err: PacketFlowError, status: int) -> web.Response:
    return web.json_response({"error": err.to_payload()}, status=status)


def _reply(frame: bytes, fallback: int) -> web.Response:
    value = decode_json(frame)
    status = 200
    if value.get("message_type") == "error":
        status = _HTTP_STATUS.get(value["payload"]["error_code"], 500 if fallback == 200 else 400)
    return web.Response(body=frame, status=status, content_type=JSON)


def _as_submit(body: bytes) -> Submit | FrameError:
    """A SUBMIT envelope, or a bare packet wrapped in one (DESIGN §2)."""
    try:
        value = decode_json(body)
    except msgspec.DecodeError as exc:
        return FrameError(InvalidMessage(f"Invalid JSON format: {exc}", field="$",
                                         validation_rule="json"))  # fmt: skip
    if isinstance(value, dict) and "message_type" not in value:
        body = encode_json({
            "protocol_version": PROTOCOL_VERSION, "message_type": "submit",
            "message_id": new_message_id(), "timestamp": now_ms(),
            "source_id": "http-client", "payload": {"packet": value},
        })  # fmt: skip
    items = decode_frame(body)
    first = items[0]
    if isinstance(first, Submit):
        return first
    if isinstance(first, FrameError):
        return first
    return FrameError(
        InvalidMessage(
            "POST /v1/packets takes a SUBMIT envelope or a packet",
            field="message_type",
            validation_rule="submit_only",
        )
    )
