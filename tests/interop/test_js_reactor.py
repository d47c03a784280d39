"""The Node.js reactor on its own, spoken to directly over its /ws: envelopes, the mandatory
packets, its own element, the error contract, dial tokens and heartbeats (PFAP §4, §9.1,
§10, §12.3.1; docs/security.md)."""

from __future__ import annotations

import json
import signal
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from packetflow.protocol.authentication import DIAL_TOKEN_HEADER
from tests.integration.cluster import Cluster, Node

from .js import NODE, REACTOR_JS, js_reactor, needs_node

pytestmark = needs_node

# §10.2 merged with §4.2.3 (DESIGN §6): every ERROR payload carries these.
ERROR_FIELDS = {
    "packet_id", "error_code", "error_category", "error_message", "error_details",
    "error_context", "reactor_info", "recovery_suggestions", "recovery_options",
    "retry_possible", "retry_delay_ms",
}  # fmt: skip
ENVELOPE_FIELDS = {"protocol_version", "message_type", "message_id", "timestamp", "source_id",
                   "payload", "correlation_id", "sequence_id"}  # fmt: skip


@pytest.fixture
def js(cluster: Cluster) -> Iterator[Node]:
    yield js_reactor(cluster, None, "--id", "reactor-js-solo", "--heartbeat-interval", "0.2")


def submit(group: str, element: str, data: Any = None, **packet: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"group": group, "element": element, **packet}
    if data is not None:
        body["data"] = data
    return {
        "protocol_version": "1.0", "message_type": "submit",
        "message_id": f"msg_{uuid.uuid4()}", "timestamp": 1640995200000,
        "source_id": "test-client", "payload": {"packet": body},
    }  # fmt: skip


async def exchange(node: Node, frames: list[Any], replies_per_frame: int = 1) -> list[dict]:
    """Send each frame (dict → JSON text, str → text, bytes → binary) and read its replies,
    skipping HEARTBEATs (the reactor sends them on every work connection)."""
    out: list[dict] = []
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(node.url, headers=node.auth_headers()) as ws,
    ):
        for frame in frames:
            if isinstance(frame, bytes):
                await ws.send_bytes(frame)
            else:
                await ws.send_str(frame if isinstance(frame, str) else json.dumps(frame))
            got = 0
            while got < replies_per_frame:
                msg = json.loads((await ws.receive(timeout=10)).data)
                if msg["message_type"] == "heartbeat":
                    continue
                out.append(msg)
                got += 1
    return out


async def test_mandatory_packets_answer_in_the_spec_envelope(js: Node) -> None:
    """§12.3.1: every reply a full §4.1 envelope correlated to its SUBMIT; cf:ping, cf:health
    and cf:introspect carry the §9.1 fields."""
    frames = [
        submit("cf", "ping", {"echo_data": "héllo 😀 مرحبا"}, id="p1", priority=10),
        submit("cf", "health", {"include_metrics": True, "detail_level": "full"}),
        submit("cf", "health", {"detail_level": "basic"}),
        submit("cf", "introspect"),
    ]
    replies = await exchange(js, frames)
    sequence = []
    for frame, reply in zip(frames, replies, strict=True):
        assert reply.keys() >= ENVELOPE_FIELDS
        assert reply["protocol_version"] == "1.0"
        assert reply["message_type"] == "result", reply
        assert reply["correlation_id"] == frame["message_id"]
        assert reply["destination_id"] == "test-client"
        assert reply["source_id"] == "reactor-js-solo"
        assert isinstance(reply["timestamp"], int)
        assert reply["payload"]["status"] == "success"
        assert reply["payload"]["reactor_info"]["implementation"] == "javascript"
        sequence.append(reply["sequence_id"])
    assert sequence == sorted(sequence) and len(set(sequence)) == len(sequence)
    assert len({r["message_id"] for r in replies}) == len(replies)
    ping, full, basic, intro = (r["payload"]["data"] for r in replies)
    assert replies[0]["payload"]["packet_id"] == "p1"
    assert ping["pong"] is True and ping["echo_data"] == "héllo 😀 مرحبا"
    assert ping["reactor_id"] == "reactor-js-solo" and ping["implementation"] == "javascript"
    assert ping["response_time_ms"] >= 0
    assert full["status"] == "healthy" and 0 <= full["overall_health_score"] <= 1
    assert {"packet_processor", "message_handler", "resource_manager",
            "network_interface"} <= full["subsystem_health"].keys()  # fmt: skip
    assert {"avg_response_time_ms", "p99_response_time_ms", "error_rate_5min",
            "throughput_pps"} <= full["performance_indicators"].keys()  # fmt: skip
    assert full["resource_status"]["open_file_descriptors"] > 0
    assert isinstance(full["alert_conditions"], list)
    assert "subsystem_health" not in basic and basic["status"] == "healthy"
    packets = {f"{p['group']}:{p['element']}" for p in intro["supported_packets"]}
    assert {"cf:ping", "cf:health", "cf:introspect", "df:transform", "df:wordcount"} == packets
    assert intro["implementation"] == "javascript"
    assert intro["capacity"]["max_concurrent_packets"] == 64


def _error(reply: dict[str, Any]) -> dict[str, Any]:
    assert reply["message_type"] == "error", reply
    assert reply["payload"].keys() >= ERROR_FIELDS
    return reply["payload"]  # type: ignore[no-any-return]


async def test_error_contract_and_the_connection_stays_usable(js: Node) -> None:
    """PF001 for frames that are not PFAP JSON, PF002 naming the first bad field, PF003 for
    an element it does not serve; after all of them the same connection still works."""
    bad_version = submit("cf", "ping")
    bad_version["protocol_version"] = "2.0"
    no_payload = {k: v for k, v in submit("cf", "ping").items() if k != "payload"}
    frames: list[Any] = [
        "this is not json",
        b"\x00\x01binary",
        "[1, 2",
        "42",
        bad_version,
        no_payload,
        submit("cf", "ping", priority="high"),
        submit("cf", "ping", priority=11),
        submit("xx", "ping"),
        submit("df", "transform", {"operation": "uppercase"}),
        submit("df", "transform", {"input": ["a", 7], "operation": "uppercase"}),
        submit("df", "transform", {"input": "a", "operation": "explode"}),
        submit("df", "wordcount", {"input": "a", "parameters": {"top": -1}}),
        submit("df", "aggregate", {"input": []}, id="pk-agg"),
        submit("cf", "ping", {"echo_data": "still here"}),
    ]
    replies = await exchange(js, frames)
    errors = [_error(r) for r in replies[:-1]]
    codes = [e["error_code"] for e in errors]
    assert codes == ["PF001"] * 5 + ["PF002"] * 8 + ["PF003"]
    fields = [e["error_details"].get("field") for e in errors[5:13]]
    assert fields == [
        "payload",
        "payload.packet.priority",
        "payload.packet.priority",
        "payload.packet.group",
        "payload.packet.data.input",
        "payload.packet.data.input[1]",
        "payload.packet.data.operation",
        "payload.packet.data.parameters.top",
    ]
    for e in errors[5:13]:
        assert {"field", "expected_type", "received_type", "validation_rule"} <= e[
            "error_details"
        ].keys()
        assert e["error_category"] == "validation_error" and e["retry_possible"] is False
    assert errors[6]["error_details"]["received_type"] == "string"
    assert errors[9]["error_details"]["validation_rule"] == "required_field"
    unsupported = errors[13]
    assert unsupported["error_category"] == "routing_error"
    assert unsupported["retry_possible"] is True and unsupported["packet_id"] == "pk-agg"
    # Correlation: a reply to a frame we could parse names its message_id; garbage gets null.
    assert replies[0]["correlation_id"] is None
    assert replies[6]["correlation_id"] == frames[6]["message_id"]
    assert replies[-1]["payload"]["data"]["echo_data"] == "still here"


async def test_batch_frame_is_answered_per_element(js: Node) -> None:
    """DESIGN §3 / §12.4.2: an array frame is a batch; each element is answered alone."""
    a, b = submit("cf", "ping", {"echo_data": 1}), submit("df", "nope")
    replies = await exchange(js, [json.dumps([a, b])], replies_per_frame=2)
    by_corr = {r["correlation_id"]: r for r in replies}
    assert by_corr[a["message_id"]]["payload"]["data"]["echo_data"] == 1
    assert by_corr[b["message_id"]]["payload"]["error_code"] == "PF003"
    (empty,) = await exchange(js, ["[]"])
    assert _error(empty)["error_code"] == "PF001"


async def test_wordcount_is_unicode_correct(js: Node) -> None:
    """df:wordcount (this reactor's own element): Unicode word boundaries, NFC, lowercasing,
    CJK segmentation; bad data is PF002 naming the field."""
    text = ["Grüße aus Köln, GRÜSSE? grüße!", "Cafe\u0301 café 東京 😀 ١٢٣"]
    frames = [
        submit("df", "wordcount", {"input": text, "parameters": {"top": 2}}),
        submit("df", "wordcount", {"input": ["ok", 3]}),
    ]
    ok, bad = await exchange(js, frames)
    result = ok["payload"]["data"]["result"]
    assert result["top"] == [{"word": "grüße", "count": 2}, {"word": "café", "count": 2}]
    # grüße aus köln grüsse grüße | café café 東京 ١٢٣: the emoji and punctuation are no words
    assert (result["words"], result["unique_words"]) == (9, 7)
    assert result["characters"] == 30 + 18  # code points after NFC (e + U+0301 → é)
    assert ok["payload"]["data"]["items_processed"] == 2
    assert _error(bad)["error_details"]["field"] == "payload.packet.data.input[1]"


async def test_refuses_upgrades_without_its_dial_or_accept_token(js: Node) -> None:
    """docs/security.md: a reactor's /ws answers 401 to anyone without a token it issued or
    the operator's accept token; /health stays open."""
    async with aiohttp.ClientSession() as session:
        for headers in ({}, {DIAL_TOKEN_HEADER: "not-the-token"}):
            with pytest.raises(aiohttp.WSServerHandshakeError) as err:
                await session.ws_connect(js.url, headers=headers)
            assert err.value.status == 401
            # The same refusal, readable: a plain GET of /ws gets the PF401 body.
            async with session.get(js.http + "/ws", headers=headers) as refused:
                assert refused.status == 401
                body = await refused.json()
            assert body["error"]["error_code"] == "PF401"
            assert body["error"]["error_category"] == "security_error"
        async with session.get(js.http + "/ws", headers=js.auth_headers()) as plain:
            assert plain.status == 426  # the right token, but not an upgrade
        async with session.get(js.http + "/health") as resp:
            health = await resp.json()
    assert health["reactor_id"] == "reactor-js-solo" and health["status"] == "healthy"


async def test_heartbeats_carry_load_figures(js: Node) -> None:
    """§4.2.4 and §8.3: HEARTBEATs arrive on the work connection every interval."""
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(js.url, headers=js.auth_headers()) as ws,
    ):
        beats = []
        while len(beats) < 3:
            msg = json.loads((await ws.receive(timeout=10)).data)
            if msg["message_type"] == "heartbeat":
                beats.append(msg)
    payload = beats[-1]["payload"]
    assert payload["reactor_id"] == "reactor-js-solo"
    assert payload["implementation"] == "javascript"
    assert 0 <= payload["health_status"]["load_factor"] <= 1
    assert payload["health_status"]["memory_usage_mb"] > 0
    assert set(payload["load_metrics"]["queue_depths"]) == {"cf", "df", "ed", "co", "mc", "rm"}
    assert "df:wordcount" in payload["capabilities"]
    assert [b["sequence_id"] for b in beats] == sorted(b["sequence_id"] for b in beats)


@pytest.mark.parametrize(
    "args",
    [["--specialization", "quantum"], ["--port", "-1"], ["--api-key", "pf_x"], ["--bogus"]],
)
def test_bad_command_lines_exit_2(args: list[str]) -> None:
    assert NODE is not None
    proc = subprocess.run([NODE, str(REACTOR_JS), *args], capture_output=True, text=True,
                          timeout=30)  # fmt: skip
    assert proc.returncode == 2
    assert "usage:" in proc.stderr


def _bad_frames() -> list[Any]:
    def with_(**fields: Any) -> dict[str, Any]:
        msg = submit("cf", "ping")
        msg.update(fields)
        return msg

    required = ("protocol_version", "message_type", "message_id", "payload")
    without = [{k: v for k, v in submit("cf", "ping").items() if k != name} for name in required]
    return [
        "not json", b"\x00binary", b"\xff\xfe", "[]", "42", "null", '"text"',
        *without,
        with_(protocol_version="2.0"), with_(protocol_version=1),
        with_(message_type="bogus"), with_(payload=[]), with_(payload={}),
        with_(payload={"packet": "x"}), with_(payload={"packet": {"element": "ping"}}),
        with_(payload={"packet": {"group": "zz", "element": "ping"}}),
        with_(payload={"packet": {"group": "cf", "element": "Ping!"}}),
        with_(payload={"packet": {"group": "cf", "element": "ping", "data": [1]}}),
        with_(payload={"packet": {"group": "cf", "element": "ping", "id": ""}}),
        with_(payload={"packet": {"group": "cf", "element": "ping", "id": "x" * 129}}),
        with_(payload={"packet": {"group": "cf", "element": "ping", "priority": 0}}),
        with_(payload={"packet": {"group": "cf", "element": "ping", "timeout_ms": -5}}),
        with_(payload={"packet": {"group": "cf", "element": "ping", "timeout_ms": "5"}}),
        with_(payload={"packet": {"group": "df", "element": "no_such_element"}}),
        submit("cf", "health", {"detail_level": "everything"}),
    ]  # fmt: skip


async def test_error_contract_matches_the_python_reactor(cluster: Cluster, js: Node) -> None:
    """The same bad frames get the same error code and the same `error_details.field` from
    our Python reactor and the JS one (written from the docs alone): the docs are enough
    for PF001/PF002/PF003, or this test names the gap."""
    py = cluster.reactor(None, "--id", "reactor-py-solo")
    frames = _bad_frames()

    def summary(reply: dict[str, Any]) -> tuple[str, str, Any]:
        payload = reply["payload"]
        details = payload.get("error_details") or {}
        return reply["message_type"], payload.get("error_code"), details.get("field")

    theirs = [summary(r) for r in await exchange(py, frames)]
    ours = [summary(r) for r in await exchange(js, frames)]
    differences = [(i, frames[i], p, j) for i, (p, j) in enumerate(zip(theirs, ours, strict=True))
                   if p != j]  # fmt: skip
    assert differences == [], "\n".join(map(repr, differences))


async def test_a_packet_id_seen_again_is_answered_again_not_rerun(js: Node) -> None:
    """DESIGN §4 idempotency: the same packet id gets the stored outcome (same data, down to
    the handler's own timestamp) correlated to the new message; a non-retryable error is
    answered again; a different element under the same id runs."""
    first, again = (
        submit("cf", "ping", {"echo_data": 1}, id="dup-1"),
        submit("cf", "ping", {"echo_data": 1}, id="dup-1"),
    )
    bad, bad_again = (submit("df", "transform", {"input": 1, "operation": "uppercase"},
                             id="dup-2") for _ in range(2))  # fmt: skip
    other = submit("cf", "health", {"detail_level": "basic"}, id="dup-1")
    r1, r2, e1, e2, r3 = await exchange(js, [first, again, bad, bad_again, other])
    assert r2["correlation_id"] == again["message_id"] != r1["correlation_id"]
    assert r2["payload"]["data"] == r1["payload"]["data"]
    assert _error(e2)["error_details"] == _error(e1)["error_details"]
    assert e2["correlation_id"] == bad_again["message_id"]
    assert r3["payload"]["data"]["status"] == "healthy"


async def test_a_handler_past_its_timeout_answers_pf005_timeout(js: Node) -> None:
    """DESIGN §10: past its packet's timeout_ms a handler answers PF005, reason "timeout",
    retryable (JS cannot cancel a synchronous handler, so the late result is dropped)."""
    slow = submit("df", "transform", {"input": ["abc"] * 100_000, "operation": "uppercase"},
                  timeout_ms=1)  # fmt: skip
    (reply,) = await exchange(js, [slow])
    error = _error(reply)
    assert error["error_code"] == "PF005"
    assert error["error_details"]["reason"] == "timeout"
    assert error["retry_possible"] is True


def test_sigterm_stops_it_cleanly(js: Node) -> None:
    js.proc.send_signal(signal.SIGTERM)
    assert js.proc.wait(15) == 0
