"""protocol/limits.py as applied at the edge by protocol/messages.py (DESIGN §3-§4):
every string and number of the envelope and packet is bounded, answered PF001/PF002
naming the field, and nothing large is echoed back in the ERROR."""

from __future__ import annotations

import json
from typing import Any

import pytest

from packetflow.protocol import errors, limits, messages

from .test_messages import dumps, expect_error, single_msg, wire1


def reply_of(out: messages.FrameError) -> bytes:
    """The ERROR frame a server sends for ``out`` (gateway/server.py's answer_error)."""
    return messages.encode(messages.error_envelope(
        out.error, message_id="msg_reply", now_ms=1, source_id="gw",
        correlation_id=out.message_id, packet_id=out.packet_id,
    ))  # fmt: skip


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"timestamp": 2**70}, "timestamp"),
        ({"timestamp": -1}, "timestamp"),
        ({"timestamp": limits.MAX_TIMESTAMP_MS + 1}, "timestamp"),
        ({"ttl": 2**70}, "ttl"),
        ({"ttl": limits.MAX_DURATION_MS + 1}, "ttl"),
        ({"sequence_id": 2**70}, "sequence_id"),
        ({"payload__packet__timeout_ms": 2**70}, "payload.packet.timeout_ms"),
        ({"payload__packet__timeout_ms": limits.MAX_DURATION_MS + 1}, "payload.packet.timeout_ms"),
        ({"message_id": "m" * 900_000}, "message_id"),
        ({"source_id": "s" * (limits.MAX_ID_CHARS + 1)}, "source_id"),
        ({"destination_id": "d" * (limits.MAX_ID_CHARS + 1)}, "destination_id"),
        ({"correlation_id": "c" * (limits.MAX_ID_CHARS + 1)}, "correlation_id"),
        ({"protocol_version": "1." + "0" * 100}, "protocol_version"),
        ({"payload__packet__version": "v" * 3_000}, "payload.packet.version"),
        ({"payload__packet__element": "e" * 900}, "payload.packet.element"),
        ({"payload__packet__dependencies": ["p" * 129]}, "payload.packet.dependencies[0]"),
        ({"payload__packet__dependencies": ["p"] * 1001}, "payload.packet.dependencies"),
        ({"payload__packet__group": "g" * 100_000}, "payload.packet.group"),
    ],
)
def test_oversized_fields_are_pf002_naming_the_field_design_3(
    change: dict[str, Any], field: str
) -> None:
    """2**70 was accepted in timestamp/ttl/timeout_ms, a 900 KB message_id echoed back."""
    out = expect_error(dumps(wire1(**change)), "PF002", field)
    frame = reply_of(out)
    assert len(frame) < 2048, frame[:200]
    assert isinstance(messages.decode_one(frame), messages.Error)


def test_a_900_kb_message_id_is_not_echoed_but_a_sane_one_is_design_3() -> None:
    out = expect_error(dumps(wire1(message_id="m" * 900_000)), "PF002", "message_id")
    assert out.message_id is None
    out = expect_error(dumps(wire1(ttl=2**70)), "PF002", "ttl")
    assert out.message_id == "msg_a1b2c3d4"
    assert out.packet_id == "packet_transform_001"


@pytest.mark.parametrize(
    "change",
    [
        {"timestamp": limits.MAX_TIMESTAMP_MS},
        {"timestamp": 0},
        {"ttl": limits.MAX_DURATION_MS},
        {"sequence_id": limits.MAX_SEQUENCE_ID},
        {"payload__packet__timeout_ms": limits.MAX_DURATION_MS},
        {"message_id": "m" * limits.MAX_ID_CHARS},
        {"payload__packet__dependencies": ["p" * 128] * 1000},
    ],
)
def test_values_at_the_limits_are_accepted(change: dict[str, Any]) -> None:
    assert isinstance(single_msg(dumps(wire1(**change))), messages.Submit)


@pytest.mark.parametrize(
    ("literal", "field"),
    [
        ("1e400", "payload.packet.metadata.a[1]"),
        ("-1e400", "payload.packet.metadata.a[1]"),
        ("NaN", "payload.packet.metadata.a[1]"),
        ("Infinity", "payload.packet.metadata.a[1]"),
    ],
)
def test_non_finite_numbers_in_the_envelope_are_pf002_naming_the_path_design_3(
    literal: str, field: str
) -> None:
    frame = dumps(wire1(payload__packet__metadata={"a": [1, "@"]})).replace(
        b'"@"', literal.encode()
    )
    out = expect_error(frame, "PF002", field)
    assert out.error.validation_rule == "finite_number"
    assert out.message_id == "msg_a1b2c3d4"


def test_non_finite_ttl_is_pf002_ttl() -> None:
    frame = dumps(wire1(ttl="@")).replace(b'"@"', b"1e400")
    expect_error(frame, "PF002", "ttl")


def test_1e400_in_data_passes_the_relay_and_fails_where_decoded_design_3() -> None:
    """The gateway relays data as Raw bytes; whoever decodes it (a gateway element, a
    reactor) answers PF002 naming the path, never msgspec's own exception."""
    frame = dumps(wire1(payload__packet__data={"input": [1, "@"]})).replace(b'"@"', b"1e400")
    msg = single_msg(frame)
    assert isinstance(msg, messages.Submit)
    with pytest.raises(errors.InvalidPacket) as info:
        messages.decode_data(msg.payload.packet.data)
    assert info.value.field == "payload.packet.data.input[1]"
    assert info.value.validation_rule == "finite_number"


@pytest.mark.parametrize(
    "raw", [b"[" * 100_000 + b"]" * 100_000, b"[" * 129 + b"]" * 129, b'{"a": 1', b"\xff"]
)
def test_decode_data_raises_only_pf001_for_bad_json(raw: bytes) -> None:
    with pytest.raises(errors.InvalidMessage):
        messages.decode_data(raw)


def test_decode_data_accepts_the_depth_limit() -> None:
    depth = limits.MAX_JSON_DEPTH
    assert messages.decode_data(b"[" * depth + b"]" * depth) is not None


@pytest.mark.parametrize("depth", [limits.MAX_JSON_DEPTH + 1, 1000, 100_000])
def test_deep_json_is_one_pf001_json_depth_design_3(depth: int) -> None:
    data = "[" * (depth - 4) + "]" * (depth - 4)
    frame = dumps(wire1(payload__packet__data={"a": {"b": "@"}})).replace(b'"@"', data.encode())
    out = expect_error(frame, "PF001", "$")
    assert out.error.validation_rule == "json_depth"
    expect_error(b"[" * depth + b"]" * depth, "PF001", "$")
    expect_error(b'{"a":' * depth + b"1" + b"}" * depth, "PF001", "$")


def test_envelope_at_the_depth_limit_is_accepted() -> None:
    data = "[" * (limits.MAX_JSON_DEPTH - 4) + "]" * (limits.MAX_JSON_DEPTH - 4)
    frame = dumps(wire1(payload__packet__data={"a": "@"})).replace(b'"@"', data.encode())
    assert isinstance(single_msg(frame), messages.Submit)


@pytest.mark.parametrize("depth", [200, 600])
def test_a_too_deep_batch_element_is_answered_alone_design_3(depth: int) -> None:
    """One answer per batch element: the deep one PF001, its neighbours decode (also when
    the batch as a whole is deeper than twice the limit)."""
    deep = "[" * depth + "]" * depth
    bad = dumps(wire1(payload__packet__data={"a": "@"})).replace(b'"@"', deep.encode())
    good = dumps(wire1())
    out = messages.decode_frame(b"[" + good + b"," + bad + b"," + good + b"]")
    assert [type(x).__name__ for x in out] == ["Submit", "FrameError", "Submit"]
    assert out[1].error.validation_rule == "json_depth"  # type: ignore[union-attr]
    assert out[1].message_id == "msg_a1b2c3d4"  # type: ignore[union-attr]


def test_a_batch_with_nan_answers_each_element_design_3() -> None:
    bad = dumps(wire1(ttl="@")).replace(b'"@"', b"NaN")
    out = messages.decode_frame(b"[" + dumps(wire1()) + b"," + bad + b"]")
    assert isinstance(out[0], messages.Submit)
    assert isinstance(out[1], messages.FrameError)
    assert out[1].error.field == "ttl"


def test_huge_enum_value_is_clipped_in_the_error() -> None:
    out = expect_error(dumps(wire1(payload__packet__group="g" * 100_000)), "PF002")
    assert len(json.dumps(out.error.to_payload())) < 2048
