"""The gateway's HTTP API (DESIGN §2): packets, reactors, affinity, health, metrics."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any, Final

import msgspec
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ..protocol.errors import (
    InvalidMessage,
    InvalidPacket,
    PacketFlowError,
    ServiceUnavailable,
)
from ..protocol.limits import MAX_FRAME_BYTES, MAX_ID_CHARS
from ..protocol.messages import (
    PROTOCOL_VERSION,
    FrameError,
    Submit,
    decode_data,
    decode_frame,
    decode_json,
    encode_json,
)
from ..protocol.permissions import AFFINITY_UPDATE, REACTOR_MONITOR
from ..security.guard import request_principal, scoped_id
from ..transport import new_message_id, new_packet_id, now_ms
from .views import (
    AffinityCancelled,
    AffinityUpdated,
    AffinityView,
    GatewayStatus,
    PacketAccepted,
    PacketView,
    ReactorList,
    ReactorSummary,
    as_view,
    view_response,
)

if TYPE_CHECKING:
    from aiohttp.typedefs import Handler

    from .server import Gateway

JSON = "application/json"
# HTTP status for each PF code's category when a packet fails.
_HTTP_STATUS = {"PF001": 400, "PF002": 400, "PF003": 503, "PF004": 429, "PF005": 502,
                "PF101": 503, "PF403": 403, "PF503": 503, "PF504": 504}  # fmt: skip


class BodyTooLarge(InvalidMessage):
    """PF001 for an HTTP body over the frame limit, answered 413 (DESIGN §3: a body is the
    envelope a frame would carry, so it has the frame's limit)."""

    http_status = 413


class NotJson(InvalidMessage):
    """PF001 for a body declared as something other than JSON, answered 415."""

    http_status = 415


# JSON only (DESIGN §8): text/plain, form and multipart bodies are what a foreign web page
# can POST without a CORS preflight, so accepting them would let any page a user opens
# submit packets with the credentials its browser holds.
_JSON_MEDIA_TYPES = frozenset({"application/json", "text/json"})


# The gateway's configured frame limit (GatewayConfig.max_frame_bytes), on its app.
MAX_FRAME_BYTES_KEY: Final = web.AppKey("max_frame_bytes", int)


def body_too_large(size: int | None, limit: int = MAX_FRAME_BYTES) -> BodyTooLarge:
    got = f"{size} bytes" if size is not None else f"more than {limit} bytes"
    return BodyTooLarge(
        f"Request body of {got} exceeds the {limit}-byte limit", field="body",
        expected_type=f"<= {limit} bytes", received_type=got,
        validation_rule="max_frame_size",
    )  # fmt: skip


async def read_json_body(request: web.Request, path: str = "") -> tuple[bytes, Any]:
    """The body of a JSON request and its value, checked at the edge: declared as another
    media type PF001 (415), over the frame limit PF001 (413), nested deeper than
    MAX_JSON_DEPTH or not JSON PF001, a non-finite number PF002 naming its path (400).
    Raises only PacketFlowError, with ``http_status`` where it is not 400."""
    media_type = request.content_type
    if media_type not in _JSON_MEDIA_TYPES and not media_type.endswith("+json"):
        raise NotJson(
            f"Request body must be JSON, not {media_type[:80]}", field="Content-Type",
            expected_type="application/json", received_type=media_type[:80],
            validation_rule="media_type",
        )  # fmt: skip
    limit = request.app.get(MAX_FRAME_BYTES_KEY, MAX_FRAME_BYTES)
    if request.content_length is not None and request.content_length > limit:
        raise body_too_large(request.content_length, limit)
    try:
        body = await request.read()  # bounded by the app's client_max_size as well
    except web.HTTPRequestEntityTooLarge:
        raise body_too_large(None, limit) from None
    if len(body) > limit:
        raise body_too_large(len(body), limit)
    return body, decode_data(body, path)


def add_routes(app: web.Application, gateway: Gateway) -> None:
    @web.middleware
    async def refuse_while_draining(request: web.Request, handler: Handler) -> web.StreamResponse:
        """A draining gateway takes no new work: HTTP POSTs and WebSocket upgrades are
        503 with Retry-After; reads (health, metrics, packet lookups) still answer."""
        if gateway.draining and (request.method == "POST" or request.path == "/ws"):
            from .server import DRAIN_RETRY_DELAY_MS

            err = ServiceUnavailable("Gateway is shutting down; retry on another gateway or "
                                     "after it restarts", retryable=True,
                                     retry_delay_ms=DRAIN_RETRY_DELAY_MS,
                                     details={"reason": "shutdown"})  # fmt: skip
            response = _error_response(err, 503)
            response.headers["Retry-After"] = str(max(1, DRAIN_RETRY_DELAY_MS // 1000))
            return response
        return await handler(request)

    app.middlewares.append(refuse_while_draining)

    def refused(request: web.Request, action: str, resource: str) -> web.Response | None:
        """403 with the ERROR body when the request's principal may not do ``action``."""
        err = gateway.guard.check_action(request_principal(request), _HttpSource(request),
                                         action, "path", resource)  # fmt: skip
        return None if err is None else _error_response(err, 403)

    async def health(request: web.Request) -> web.Response:
        """Liveness: 200 while the process answers, with the truthful status in the body."""
        return view_response(as_view(gateway.status(), GatewayStatus))

    async def ready(request: web.Request) -> web.Response:
        """Readiness: 200 when a packet sent now can be served, else 503 with the reasons
        (an orchestrator stops sending traffic here, but does not restart the process)."""
        body = as_view(gateway.status(), GatewayStatus)
        return view_response(body, status=200 if body.ready else 503)

    async def metrics(request: web.Request) -> web.Response:
        if (denied := refused(request, REACTOR_MONITOR, "/metrics")) is not None:
            return denied
        return web.Response(body=generate_latest(gateway.metrics.registry),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})  # fmt: skip

    async def reactors(request: web.Request) -> web.Response:
        if (denied := refused(request, REACTOR_MONITOR, "/v1/reactors")) is not None:
            return denied
        rows = [as_view(r.summary(), ReactorSummary) for r in gateway.registry]
        return view_response(ReactorList(reactors=rows))

    async def affinity(request: web.Request) -> web.Response:
        if (denied := refused(request, REACTOR_MONITOR, "/v1/affinity")) is not None:
            return denied
        return view_response(as_view(gateway.local.versions.view(), AffinityView))

    async def put_affinity(request: web.Request) -> web.Response:
        """§6.4 by HTTP: body {"matrix_updates": {...}, "version"?: "1.1"}."""
        if (denied := refused(request, AFFINITY_UPDATE, "PUT /v1/affinity")) is not None:
            return denied
        try:
            body = await _object_body(request)
            out = gateway.local.update_matrix(body, "body")
        except PacketFlowError as err:
            return _error_response(err, getattr(err, "http_status", 400))
        return view_response(as_view(out, AffinityUpdated))

    async def rollback_affinity(request: web.Request) -> web.Response:
        """§6.4 manual rollback by HTTP (admin): body {"version"?: "1.0"}."""
        if denied := refused(request, AFFINITY_UPDATE, "POST /v1/affinity/rollback"):
            return denied
        try:
            body = await _object_body(request)
            out = gateway.local.rollback_matrix(body.get("version"), "body.version")
        except PacketFlowError as err:
            return _error_response(err, getattr(err, "http_status", 400))
        return view_response(as_view(out, AffinityUpdated))

    async def cancel_affinity(request: web.Request) -> web.Response:
        """Withdraw a scheduled §6.4 update (admin)."""
        if denied := refused(request, AFFINITY_UPDATE, "DELETE /v1/affinity/pending"):
            return denied
        try:
            out = gateway.local.cancel_matrix_update(request.match_info["version"], "version")
        except PacketFlowError as err:
            return _error_response(err, 404)
        return view_response(as_view(out, AffinityCancelled))

    async def post_packet(request: web.Request) -> web.Response:
        from .server import HttpTarget

        target = HttpTarget(request_principal(request))
        target.source_ip, target.user_agent = request.remote, request.headers.get("User-Agent")
        target.secure = request.secure
        try:
            body, value = await read_json_body(request)
        except PacketFlowError as err:
            frame = gateway.answer_error(target, err, None, None)
            return _reply(frame, 400, getattr(err, "http_status", None))
        msg = _as_submit(body, value)
        if isinstance(msg, FrameError):
            frame = gateway.answer_error(target, msg.error, msg.message_id, msg.packet_id)
            return _reply(frame, 400)
        if msg.payload.packet.id is None:  # the id answers ?wait=false and GET
            packet = msgspec.structs.replace(msg.payload.packet, id=new_packet_id())
            msg = msgspec.structs.replace(
                msg, payload=msgspec.structs.replace(msg.payload, packet=packet)
            )
        packet_id = msg.payload.packet.id
        assert packet_id is not None  # set just above
        gateway.accept(msg, target)
        if request.query.get("wait") == "false":
            accepted = PacketAccepted(packet_id=packet_id, status_url=f"/v1/packets/{packet_id}")
            return view_response(accepted, status=202)
        frame = await asyncio.shield(target.future)
        return _reply(frame, 200)

    async def get_packet(request: web.Request) -> web.Response:
        """DESIGN §4: a packet's current lifecycle state, and its reply once it has one."""
        packet_id = request.match_info["packet_id"]
        principal = request_principal(request)
        key = scoped_id(principal, packet_id)
        story = gateway.stories.get(key)
        if story is None and principal.is_admin:  # admins see every principal's packets
            key, story = next(((k, s) for k, s in reversed(gateway.stories.items())
                               if s.packet_id == packet_id), (key, None))  # fmt: skip
        if story is None:
            err = InvalidPacket(
                "No such packet is known to this gateway",
                field="packet_id",
                expected_type="a submitted packet id",
                received_type=packet_id
                if len(packet_id) <= MAX_ID_CHARS
                else f"string of {len(packet_id)} chars",
                validation_rule="known_packet",
            )
            return _error_response(err, 404)
        body = story.view()
        seen = gateway.window.lookup(key, time.monotonic())
        if seen is not None and seen.outcome is not None:
            body["reply"] = decode_json(seen.outcome)
        return view_response(as_view(body, PacketView))

    app.router.add_get("/health", health)
    app.router.add_get("/health/ready", ready)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/v1/reactors", reactors)
    app.router.add_get("/v1/affinity", affinity)
    app.router.add_put("/v1/affinity", put_affinity)
    app.router.add_post("/v1/affinity/rollback", rollback_affinity)
    app.router.add_delete("/v1/affinity/pending/{version}", cancel_affinity)
    app.router.add_post("/v1/packets", post_packet)
    app.router.add_get("/v1/packets/{packet_id}", get_packet)


class _HttpSource:
    """Who made an HTTP request, for the audit log (source_ip, user_agent)."""

    __slots__ = ("source_ip", "user_agent")

    def __init__(self, request: web.Request) -> None:
        self.source_ip = request.remote
        self.user_agent = request.headers.get("User-Agent")


async def _object_body(request: web.Request) -> dict[str, Any]:
    """A JSON object body (PF002 naming ``body`` for anything else)."""
    _, body = await read_json_body(request, "body")
    if not isinstance(body, dict):
        raise InvalidPacket("Body must be a JSON object", field="body", expected_type="object",
                            received_type=type(body).__name__, validation_rule="type")  # fmt: skip
    return body


def _error_response(err: PacketFlowError, status: int) -> web.Response:
    return web.json_response({"error": err.to_payload()}, status=status)


def _reply(frame: bytes, fallback: int, status: int | None = None) -> web.Response:
    if status is not None:
        return web.Response(body=frame, status=status, content_type=JSON)
    value = decode_json(frame)
    status = 200
    if value.get("message_type") == "error":
        status = _HTTP_STATUS.get(value["payload"]["error_code"], 500 if fallback == 200 else 400)
    return web.Response(body=frame, status=status, content_type=JSON)


def _as_submit(body: bytes, value: Any) -> Submit | FrameError:
    """A SUBMIT envelope, or a bare packet wrapped in one (DESIGN §2); ``value`` is the
    body already decoded by read_json_body."""
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
