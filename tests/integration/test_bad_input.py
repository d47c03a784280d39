"""Bad input at the edges of real gateway and reactor processes (DESIGN §3): every bad
frame or body gets one PF001/PF002 (or HTTP 400/413 with the PFAP ERROR), and the
connection stays usable with its subscriptions.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import aiohttp
import pytest

from packetflow.protocol.limits import MAX_FRAME_BYTES, MAX_JSON_DEPTH

from .cluster import Cluster, Node

RECEIVE_S = 20.0


def submit(message_id: str, group: str, element: str, data: str = "{}", **extra: Any) -> str:
    """A SUBMIT frame as text; ``data`` is raw JSON text, so it can hold what Python's json
    would not write (1e400)."""
    envelope = {"protocol_version": "1.0", "message_type": "submit", "message_id": message_id,
                "timestamp": 1, "source_id": "bad-input-test",
                "payload": {"packet": {"group": group, "element": element, "data": "@DATA@"}},
                **extra}  # fmt: skip
    return json.dumps(envelope).replace('"@DATA@"', data)


async def answer(ws: aiohttp.ClientWebSocketResponse, correlation_id: str) -> dict[str, Any]:
    """The next message correlated to ``correlation_id`` (others are skipped)."""
    while True:
        frame = await ws.receive(timeout=RECEIVE_S)
        assert frame.type == aiohttp.WSMsgType.TEXT, (frame.type, frame.data, frame.extra)
        for msg in (lambda v: v if isinstance(v, list) else [v])(json.loads(frame.data)):
            if msg.get("correlation_id") == correlation_id:
                return msg  # type: ignore[no-any-return]


def assert_error(msg: dict[str, Any], code: str, field: str) -> None:
    assert msg["message_type"] == "error", msg
    assert msg["payload"]["error_code"] == code, msg
    assert msg["payload"]["error_details"]["field"] == field, msg


async def ping_works(ws: aiohttp.ClientWebSocketResponse, tag: str) -> None:
    await ws.send_str(submit(f"msg_ping_{tag}", "cf", "ping"))
    reply = await answer(ws, f"msg_ping_{tag}")
    assert reply["message_type"] == "result", reply


@pytest.fixture
def gateway_and_reactor(cluster: Cluster) -> tuple[Node, Node]:
    gateway = cluster.gateway()
    reactor = cluster.reactor(gateway, "--id", "bad-input-r1")
    return gateway, reactor


async def test_1e400_in_a_gateway_element_is_pf002_and_keeps_subscriptions_3(
    gateway_and_reactor: tuple[Node, Node],
) -> None:
    """ed:publish with 1e400 in its event once raised msgspec's ValidationError out of the
    frame handler: the connection closed with no ERROR and lost its subscriptions."""
    gateway, _ = gateway_and_reactor
    async with aiohttp.ClientSession(headers=gateway.auth_headers()) as session:
        ws = await session.ws_connect(gateway.url)
        await ws.send_str(submit("msg_sub", "ed", "subscribe", '{"topic": "bad.*"}'))
        assert (await answer(ws, "msg_sub"))["message_type"] == "result"
        await ws.send_str(submit("msg_inf", "ed", "publish",
                                 '{"topic": "bad.x", "event": {"v": [1, 1e400]}}'))  # fmt: skip
        assert_error(await answer(ws, "msg_inf"), "PF002", "payload.packet.data.event.v[1]")
        await ws.send_str(submit("msg_ok", "ed", "publish", '{"topic": "bad.y", "event": 7}'))
        event = await answer(ws, "msg_sub")  # the subscription survived
        assert event["payload"]["status"] == "event"
        assert event["payload"]["data"]["event"] == 7
        await ws.close()


@pytest.mark.parametrize("via", ["gateway", "reactor"])
async def test_1e400_in_reactor_element_data_is_pf002_not_pf005_3(
    gateway_and_reactor: tuple[Node, Node], via: str
) -> None:
    """The reactor decodes a packet's data at its edge: a number no float holds is the
    client's mistake (PF002 naming it), not a handler failure (PF005)."""
    node = gateway_and_reactor[0] if via == "gateway" else gateway_and_reactor[1]
    async with aiohttp.ClientSession(headers=node.auth_headers()) as session:
        ws = await session.ws_connect(node.url)
        await ws.send_str(submit("msg_big", "df", "transform",
                                 '{"input": [1, -1e400], "operation": "sort"}'))  # fmt: skip
        assert_error(await answer(ws, "msg_big"), "PF002", "payload.packet.data.input[1]")
        await ping_works(ws, via)
        await ws.close()


@pytest.mark.parametrize("target", ["gateway", "reactor"])
async def test_frames_over_the_limits_get_pf001_3(
    gateway_and_reactor: tuple[Node, Node], target: str
) -> None:
    """Over 1 MiB (§12.4.1): PF001 and the connection stays. Over the socket limit: the
    PF001 arrives before the 1009 close (it was a bare close).

    The oversized frame travels compressed (permessage-deflate): the server has then
    read all of it when it refuses it, so its close cannot turn into a TCP reset that
    discards the PF001 before this client reads it, as it may when the client is still
    writing megabytes the server will never read."""
    node = gateway_and_reactor[0] if target == "gateway" else gateway_and_reactor[1]
    async with aiohttp.ClientSession(headers=node.auth_headers()) as session:
        ws = await session.ws_connect(node.url, max_msg_size=0, compress=15)
        assert ws.compress == 15
        await ws.send_str(
            submit("msg_2m", "cf", "ping", json.dumps({"pad": "x" * 2 * MAX_FRAME_BYTES}))
        )
        frame = await ws.receive(timeout=RECEIVE_S)
        msg = json.loads(frame.data)
        assert msg["payload"]["error_code"] == "PF001"
        assert msg["payload"]["error_details"]["validation_rule"] == "max_frame_size"
        await ping_works(ws, "after-2m")
        await ws.send_str("[" + " " * (5 * MAX_FRAME_BYTES) + "]")
        frame = await ws.receive(timeout=RECEIVE_S)
        assert frame.type == aiohttp.WSMsgType.TEXT, (frame.type, frame.data)
        msg = json.loads(frame.data)
        assert msg["payload"]["error_code"] == "PF001"
        assert msg["payload"]["error_details"]["validation_rule"] == "max_frame_size"
        frame = await ws.receive(timeout=RECEIVE_S)
        assert frame.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        assert ws.close_code == 1009


async def test_envelope_fields_are_bounded_3(gateway_and_reactor: tuple[Node, Node]) -> None:
    """2**70 in timestamp/ttl/timeout_ms, a 900 KB message_id, 100,000-deep JSON: one
    PF001/PF002 each, nothing huge echoed back, the connection usable after."""
    gateway, _ = gateway_and_reactor
    async with aiohttp.ClientSession(headers=gateway.auth_headers()) as session:
        ws = await session.ws_connect(gateway.url)
        for i, (extra, field) in enumerate([
            ({"timestamp": 2**70}, "timestamp"),
            ({"ttl": 2**70}, "ttl"),
            ({"sequence_id": 2**70}, "sequence_id"),
            ({"correlation_id": "c" * 100_000}, "correlation_id"),
        ]):  # fmt: skip
            await ws.send_str(submit(f"msg_f{i}", "cf", "ping", **extra))
            assert_error(await answer(ws, f"msg_f{i}"), "PF002", field)
        frame = submit("msg_t", "cf", "ping").replace(
            '"data"', '"timeout_ms": 1180591620717411303424, "data"'
        )
        await ws.send_str(frame)
        assert_error(await answer(ws, "msg_t"), "PF002", "payload.packet.timeout_ms")
        await ws.send_str(submit("m" * 900_000, "cf", "ping"))
        reply = await ws.receive(timeout=RECEIVE_S)
        assert len(reply.data) < 4096, len(reply.data)  # the id is not echoed back
        err = json.loads(reply.data)
        assert err.get("correlation_id") is None
        assert err["payload"]["error_details"]["field"] == "message_id"
        await ws.send_str("[" * 100_000 + "]" * 100_000)
        err = json.loads((await ws.receive(timeout=RECEIVE_S)).data)
        assert err["payload"]["error_code"] == "PF001"
        assert err["payload"]["error_details"]["validation_rule"] == "json_depth"
        await ping_works(ws, "after-bounds")
        await ws.close()


def http(
    node: Node, method: str, path: str, body: bytes, media_type: str = "application/json"
) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": media_type, **node.auth_headers()}
    req = urllib.request.Request(node.http + path, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=RECEIVE_S) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def error_of(body: dict[str, Any]) -> dict[str, Any]:
    """The ERROR payload of an HTTP error body: an envelope, or {"error": payload}."""
    return body["payload"] if "payload" in body else body["error"]  # type: ignore[no-any-return]


@pytest.mark.parametrize("method,path", [("POST", "/v1/packets"), ("POST", "/v1/molecules"),
                                         ("PUT", "/v1/affinity")])  # fmt: skip
def test_http_bodies_deep_huge_and_non_finite_3(
    gateway_and_reactor: tuple[Node, Node], method: str, path: str
) -> None:
    """100,000-deep JSON was a 500 with a RecursionError logged; a body over the frame
    limit now answers 413, a non-finite number 400 and a body that is not JSON (by its
    media type) 415, each with the PFAP ERROR."""
    gateway, _ = gateway_and_reactor
    status, body = http(gateway, method, path, b"[" * 100_000 + b"]" * 100_000)
    assert status == 400, body
    assert error_of(body)["error_code"] == "PF001"
    assert error_of(body)["error_details"]["validation_rule"] == "json_depth"
    deep_ok = b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1)
    status, body = http(gateway, method, path, deep_ok)
    assert status == 400 and error_of(body)["error_details"]["validation_rule"] == "json_depth"
    status, body = http(gateway, method, path, b'{"pad": "' + b"x" * 2 * MAX_FRAME_BYTES + b'"}')
    assert status == 413, body
    assert error_of(body)["error_code"] == "PF001"
    status, body = http(gateway, method, path, b'{"a": {"b": 1e400}}')
    assert status == 400, body
    assert error_of(body)["error_code"] == "PF002"
    assert error_of(body)["error_details"]["field"].endswith("a.b")
    for simple in (
        "multipart/form-data; boundary=x",
        "text/plain",
        "application/x-www-form-urlencoded",
    ):  # what a page may send unasked
        status, body = http(gateway, method, path, b"{}", simple)
        assert status == 415 and error_of(body)["error_details"]["field"] == "Content-Type"


def test_affinity_version_is_a_bounded_label_6_4(gateway_and_reactor: tuple[Node, Node]) -> None:
    """A 3 MB version was stored and served back by GET /v1/affinity."""
    gateway, _ = gateway_and_reactor
    before = gateway.get("/v1/affinity")["version"]
    updates = {"matrix_updates": {"cf": {"memory_bound": 0.5}}}
    status, body = http(gateway, "PUT", "/v1/affinity",
                        json.dumps({**updates, "version": "v" * 100_000}).encode())  # fmt: skip
    assert status == 400, body
    assert body["error"]["error_details"]["field"] == "body.version"
    assert gateway.get("/v1/affinity")["version"] == before
    status, body = http(gateway, "PUT", "/v1/affinity",
                        json.dumps({**updates, "version": "2.0"}).encode())  # fmt: skip
    assert status == 200 and body["version"] == "2.0"
