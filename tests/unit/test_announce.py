"""Being liberal in what we accept: every shape the spec shows for an announce's capabilities
(§4.2.5 supported_packets, §8.2 object, §4.2.4 list) and §8.2's announce without
reactor_info; §8.3's heartbeat without reactor_id; §9.1.1's RESULT without packet_id."""

from __future__ import annotations

import json
from typing import Any

import pytest

from packetflow.protocol import announce, messages
from packetflow.protocol.errors import InvalidPacket

ENV = {"protocol_version": "1.0", "message_id": "msg_1", "timestamp": 1640995200000,
       "source_id": "reactor-zig-02"}  # fmt: skip


def discover(payload: dict[str, Any]) -> messages.Discover:
    out = messages.decode_frame(json.dumps({**ENV, "message_type": "discover",
                                            "payload": payload}))  # fmt: skip
    assert len(out) == 1
    assert isinstance(out[0], messages.Discover), out
    return out[0]


def test_4_2_4_capability_list_in_an_announce_decodes_and_is_read() -> None:
    msg = discover({"discovery_type": "announce", "reactor_info": {"reactor_id": "r"},
                    "capabilities": ["ed:signal", "df:validate", "ed:signal"]})  # fmt: skip
    assert announce.capabilities_of(msg.payload) == {("ed", "signal"), ("df", "validate")}


def test_8_2_capability_object_is_read() -> None:
    msg = discover({
        "discovery_type": "announce",
        "capabilities": {"packet_support": [
            {"group": "df", "elements": ["transform", "validate"], "max_concurrency": 20},
            {"group": "cf", "elements": ["ping"]},
        ], "molecular_support": {"max_molecule_size": 50}},
    })  # fmt: skip
    assert announce.capabilities_of(msg.payload) == {
        ("df", "transform"), ("df", "validate"), ("cf", "ping")}  # fmt: skip
    # §8.2's example has no reactor_info: the envelope's sender is the reactor.
    info = announce.reactor_info_of(msg.payload, msg.source_id)
    assert info.reactor_id == "reactor-zig-02"
    assert info.endpoints == {}


def test_all_shapes_together_are_a_union() -> None:
    msg = discover({"discovery_type": "announce", "reactor_info": {"reactor_id": "r"},
                    "supported_packets": [{"group": "cf", "element": "ping"}],
                    "capabilities": ["rm:monitor"]})  # fmt: skip
    assert announce.capabilities_of(msg.payload) == {("cf", "ping"), ("rm", "monitor")}
    assert announce.reactor_info_of(msg.payload, "other").reactor_id == "r"


@pytest.mark.parametrize(
    ("capabilities", "field", "rule"),
    [
        (["ed:signal", "ed-signal"], "payload.capabilities[1]", "pattern"),
        (["zz:signal"], "payload.capabilities[0]", "pattern"),
        (["ed:Signal"], "payload.capabilities[0]", "pattern"),
        ({"packet_support": [{"group": "zz", "elements": []}]},
         "payload.capabilities.packet_support[0].group", "enum"),
        ({"packet_support": [{"group": "df", "elements": "transform"}]},
         "payload.capabilities.packet_support[0].elements", "type"),
        ({"packet_support": [{"group": "df", "elements": ["Bad-Name"]}]},
         "payload.capabilities.packet_support[0].elements[0]", "pattern"),
        ({"packet_support": [{"group": "df", "elements": [7]}]},
         "payload.capabilities.packet_support[0].elements[0]", "type"),
        ({"packet_support": "df"}, "payload.capabilities.packet_support", "type"),
        ({"packet_support": ["df"]}, "payload.capabilities.packet_support[0]", "type"),
    ],
)  # fmt: skip
def test_bad_capabilities_are_pf002_naming_the_entry(capabilities: Any, field: str,
                                                     rule: str) -> None:  # fmt: skip
    msg = discover({"discovery_type": "announce", "capabilities": capabilities})
    with pytest.raises(InvalidPacket) as caught:
        announce.capabilities_of(msg.payload)
    assert caught.value.code == "PF002"
    assert (caught.value.field, caught.value.validation_rule) == (field, rule)


def test_a_list_of_non_strings_is_refused_at_the_decoder() -> None:
    out = messages.decode_frame(json.dumps({**ENV, "message_type": "discover", "payload": {
        "discovery_type": "announce", "capabilities": [1, 2]}}))  # fmt: skip
    assert isinstance(out[0], messages.FrameError)
    assert out[0].error.field == "payload.capabilities[0]"


def test_too_many_capabilities() -> None:
    caps = [f"df:e{i}" for i in range(announce.MAX_CAPABILITIES + 1)]
    msg = discover({"discovery_type": "announce", "capabilities": caps})
    with pytest.raises(InvalidPacket) as caught:
        announce.capabilities_of(msg.payload)
    assert caught.value.validation_rule == "length"


def test_8_3_heartbeat_without_reactor_id_decodes() -> None:
    out = messages.decode_frame(json.dumps({**ENV, "message_type": "heartbeat", "payload": {
        "load_metrics": {"current_load_factor": 0.67}}}))  # fmt: skip
    assert isinstance(out[0], messages.Heartbeat), out
    assert out[0].payload.reactor_id is None


def test_9_1_1_result_without_packet_id_decodes() -> None:
    out = messages.decode_frame(json.dumps({**ENV, "message_type": "result", "payload": {
        "status": "success", "data": {"pong": True}}}))  # fmt: skip
    assert isinstance(out[0], messages.Result), out
    assert out[0].payload.packet_id is None
    # but status is still required
    out = messages.decode_frame(json.dumps({**ENV, "message_type": "result", "payload": {}}))
    assert isinstance(out[0], messages.FrameError)
    assert out[0].error.field == "payload.status"
