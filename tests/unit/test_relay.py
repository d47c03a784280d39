"""How the gateway rewrites messages (protocol/relay.py): the wire example's message 1 →
message 2 (forwarded SUBMIT) and message 3 → message 4 (RESULT to the client)."""

from __future__ import annotations

import json

import pytest
from msgspec import Raw

from packetflow.protocol import messages
from packetflow.protocol.relay import (
    admission,
    client_result,
    forward_submit,
    remaining_ttl_ms,
    replay_for,
    split_processing_stats,
)

MESSAGE_1 = {
    "protocol_version": "1.0", "message_type": "submit", "sequence_id": 12345,
    "timestamp": 1640995200000, "source_id": "client-webapp-01",
    "destination_id": "gateway-01", "message_id": "msg_a1b2c3d4", "ttl": 30000,
    "priority": 7,
    "payload": {"packet": {
        "version": "1.0", "id": "packet_transform_001", "group": "df", "element": "transform",
        "data": {"input": ["apple", "banana", "cherry"], "operation": "uppercase",
                 "parameters": {"locale": "en-US"}},
        "priority": 7, "timeout_ms": 30000,
    }},
}  # fmt: skip


def _submit() -> messages.Submit:
    msg = messages.decode_one(json.dumps(MESSAGE_1).encode())
    assert isinstance(msg, messages.Submit)
    return msg


def test_message_2_of_the_wire_example() -> None:
    """150 ms at the gateway: ttl 30000 → 29850, timeout capped to it, chemical
    properties attached (0.8, 0.7, 1.0, 0.56), correlated to the client's message."""
    msg = _submit()
    priority, _ = admission(msg)
    ttl = remaining_ttl_ms(msg.ttl, 1640995200000, 1640995200150)
    assert ttl == 29850
    out = forward_submit(
        msg, packet_id="packet_transform_001", priority=priority, message_id="msg_b2c3d4e5",
        now_ms=1640995200150, source_id="gateway-01",
        destination_id="reactor-js-05", sequence_id=12346, ttl_ms=ttl, timeout_ms=ttl,
        affinity_score=0.87, load_factor=0.34, selection_reason="best_chemical_match",
    )  # fmt: skip
    wire = json.loads(messages.encode(out))
    assert wire["correlation_id"] == "msg_a1b2c3d4"
    assert wire["ttl"] == 29850 and wire["priority"] == 7
    assert wire["routing_hints"] == {"affinity_score": 0.87, "load_factor": 0.34,
                                     "selection_reason": "best_chemical_match"}  # fmt: skip
    packet = wire["payload"]["packet"]
    assert packet["timeout_ms"] == 29850
    assert packet["id"] == "packet_transform_001" and packet["priority"] == 7
    assert packet["data"] == MESSAGE_1["payload"]["packet"]["data"]  # type: ignore[index]
    assert packet["chemical_properties"] == {"reactivity": 0.8, "ionization_energy": 0.7,
                                             "atomic_radius": 1.0,
                                             "electronegativity": 0.56}  # fmt: skip


def test_admit_applies_design_4_defaults() -> None:
    msg = _submit()
    bare = messages.decode_one(json.dumps({
        **MESSAGE_1, "priority": None, "ttl": None,
        "payload": {"packet": {"group": "cf", "element": "ping"}},
    }).encode())  # fmt: skip
    assert isinstance(bare, messages.Submit)
    assert admission(bare) == (10, 5000)
    assert admission(msg)[1] == 30000


def test_message_4_of_the_wire_example() -> None:
    """The reactor's processing_stats move into processing_metadata; routing time is the
    rest of the total (900 = 725 + 175)."""
    reply = messages.ResultPayload(
        packet_id="packet_transform_001", status="success",
        data=Raw(b'{"result":["APPLE","BANANA","CHERRY"],"operation_applied":"uppercase",'
                 b'"items_processed":3,"processing_stats":{"duration_ms":725,'
                 b'"memory_used_mb":1.2,"cpu_usage_percent":8.5}}'),
    )  # fmt: skip
    out = client_result(
        reply, client_message_id="msg_a1b2c3d4", client_source_id="client-webapp-01",
        message_id="msg_d4e5f6g7", now_ms=1640995200900, source_id="gateway-01",
        sequence_id=12348, total_ms=900.0, reactor_id="reactor-js-05", affinity_score=0.87,
    )  # fmt: skip
    wire = json.loads(messages.encode(out))
    assert wire["correlation_id"] == "msg_a1b2c3d4"
    assert wire["destination_id"] == "client-webapp-01"
    assert wire["payload"]["data"] == {"result": ["APPLE", "BANANA", "CHERRY"],
                                       "operation_applied": "uppercase",
                                       "items_processed": 3}  # fmt: skip
    assert wire["payload"]["processing_metadata"] == {
        "total_duration_ms": 900.0, "reactor_duration_ms": 725.0,
        "routing_duration_ms": 175.0, "reactor_id": "reactor-js-05", "affinity_score": 0.87,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("data", "expected", "duration"),
    [
        (b'{"result":[1],"processing_stats":{"duration_ms":0.5}}', {"result": [1]}, 0.5),
        (b'{"processing_stats":{"duration_ms":2}}', {}, 2.0),
        (b'{"processing_stats":{"duration_ms":3},"z":1}', {"z": 1}, 3.0),
        (b'{"a":{"processing_stats":{"duration_ms":1}}}',
         {"a": {"processing_stats": {"duration_ms": 1}}}, None),
        (b'{"x":",\\"processing_stats\\":"}', {"x": ',"processing_stats":'}, None),
        (b'{"k":1}', {"k": 1}, None),
        (b'{"a":1, "processing_stats":{"duration_ms":4,"x":{"y":[1]}} }', {"a": 1}, 4.0),
        (b'{"a":1,"processing_stats":{"duration_ms":"soon"}}', {"a": 1}, None),
        (b'{"s":"}","processing_stats":{"duration_ms":1},"t":"{"}', {"s": "}", "t": "{"},
         1.0),
    ],
)  # fmt: skip
def test_split_processing_stats(data: bytes, expected: object, duration: float | None) -> None:
    """Top-level stats are removed (fast path when last); nested or quoted look-alikes
    are left alone."""
    body, got = split_processing_stats(Raw(data))
    assert json.loads(bytes(memoryview(body))) == expected
    assert got == duration


def test_a_stored_reply_is_readdressed_to_the_repeat() -> None:
    """DESIGN §4: a repeated packet id is answered with the stored outcome, correlated to
    the repeat's message and sent to its source under a new id; the payload is unchanged."""
    stored = {"protocol_version": "1.0", "message_type": "result", "message_id": "msg_old",
              "timestamp": 1, "source_id": "gateway-01", "destination_id": "client-a",
              "correlation_id": "msg_first", "sequence_id": 3,
              "payload": {"packet_id": "packet_transform_001", "status": "success",
                          "data": {"result": ["APPLE"]}}}  # fmt: skip
    repeat = _submit()
    frame = replay_for(json.dumps(stored).encode(), repeat, message_id="msg_new",
                       now_ms=1640995201000, sequence_id=9)  # fmt: skip
    out = json.loads(frame)
    assert (out["message_id"], out["timestamp"], out["sequence_id"]) == (
        "msg_new",
        1640995201000,
        9,
    )
    assert out["correlation_id"] == "msg_a1b2c3d4"
    assert out["destination_id"] == "client-webapp-01"
    assert out["payload"] == stored["payload"]


@pytest.mark.parametrize(
    ("stats", "reactor_ms", "routing_ms"),
    [
        (b'{"duration_ms":0.12345}', 0.123, 1.111),
        (b'{"duration_ms":-5}', 0.0, 1.235),
        (b'{"duration_ms":1e300}', 0.0, 1.235),
        (b"{}", 0.0, 1.235),
    ],
)  # fmt: skip
def test_durations_are_to_the_microsecond_and_nonsense_from_a_reactor_counts_as_0(
    stats: bytes, reactor_ms: float, routing_ms: float
) -> None:
    reply = messages.ResultPayload(
        packet_id="p", status="success", data=Raw(b'{"ok":1,"processing_stats":' + stats + b"}")
    )
    out = client_result(
        reply, client_message_id="m", client_source_id="c", message_id="g", now_ms=1,
        source_id="gw", sequence_id=1, total_ms=1.2345, reactor_id="r", affinity_score=0.5,
    )  # fmt: skip
    meta = json.loads(messages.encode(out))["payload"]["processing_metadata"]
    assert meta["total_duration_ms"] == 1.235  # 1.2345 ms, to the microsecond
    assert (meta["reactor_duration_ms"], meta["routing_duration_ms"]) == (reactor_ms, routing_ms)
