"""The conformance kit's judging (§12.3.1), fed replies directly: each judge passes a
conforming reply and fails each kind of defect with what it expected and received."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from packetflow.conformance import judge
from packetflow.protocol.chemistry import STANDARD_MATRIX

ENVELOPE: dict[str, Any] = {
    "protocol_version": "1.0",
    "message_type": "result",
    "message_id": "msg_1",
    "timestamp": 1640995200000,
    "source_id": "reactor-1",
    "correlation_id": "msg_0",
    "payload": {},
}


def result(data: dict[str, Any]) -> dict[str, Any]:
    return {**ENVELOPE, "payload": {"packet_id": "p", "status": "success", "data": data}}


def error(code: str, **payload: Any) -> dict[str, Any]:
    body = {"error_code": code, "error_category": judge.ERROR_CLASSES[code][0],
            "error_message": "bad", "error_details": {}, "retry_possible":
            judge.ERROR_CLASSES[code][1], **payload}  # fmt: skip
    return {**ENVELOPE, "message_type": "error", "payload": body}


PING = {"pong": True, "echo_data": "e", "reactor_id": "r", "response_time_ms": 1,
        "implementation": "zig"}  # fmt: skip
HEALTH = {"status": "healthy", "overall_health_score": 0.91, "subsystem_health": {},
          "performance_indicators": {}, "resource_status": {}}  # fmt: skip
PF002_DETAILS = {"field": "payload.packet.priority", "expected_type": "int <= 10",
                 "received_type": "int 11", "validation_rule": "range"}  # fmt: skip


# ---------------------------------------------------------------- §4.1


def test_envelope_4_1_passes_the_spec_wire_example() -> None:
    assert judge.envelope(ENVELOPE).ok
    assert judge.envelope({**ENVELOPE, "destination_id": None}).ok  # null = broadcast
    # a PF001 for a frame without a readable message_id has nothing to correlate to
    assert judge.envelope({**ENVELOPE, "correlation_id": None}).ok
    assert not judge.envelope({**ENVELOPE, "correlation_id": 7}).ok


@pytest.mark.parametrize(
    ("change", "received"),
    [
        ({"source_id": None}, "source_id: null"),
        ({"timestamp": "1640995200000"}, "timestamp: string"),
        ({"timestamp": 1.5}, "timestamp: number"),
        ({"payload": []}, "payload: array"),
        ({"sequence_id": "7"}, "sequence_id: string"),
        ({"message_type": "reply"}, "'reply'"),
    ],
)
def test_envelope_4_1_refuses_wrong_types(change: dict[str, Any], received: str) -> None:
    verdict = judge.envelope({**ENVELOPE, **change})
    assert not verdict.ok
    assert verdict.received == received


@pytest.mark.parametrize("name", list(judge.REQUIRED_ENVELOPE))
def test_envelope_4_1_refuses_each_missing_required_field(name: str) -> None:
    msg = dict(ENVELOPE)
    del msg[name]
    verdict = judge.envelope(msg)
    assert (verdict.ok, verdict.received) == (False, f"{name} missing")


def test_envelope_of_a_non_object() -> None:
    assert judge.envelope([ENVELOPE]).received == "a JSON array"


@pytest.mark.parametrize(("version", "ok"), [("1.0", True), ("1.3", True), ("2.0", False),
                                             ("1", False), (1.0, False)])  # fmt: skip
def test_protocol_version_major_1(version: Any, ok: bool) -> None:
    assert judge.protocol_version({**ENVELOPE, "protocol_version": version}).ok is ok


def test_correlation_design_3() -> None:
    assert judge.correlation(ENVELOPE, "msg_0").ok
    missing = {k: v for k, v in ENVELOPE.items() if k != "correlation_id"}
    assert judge.correlation(missing, "msg_0").received == "correlation_id missing"
    assert judge.correlation(ENVELOPE, "msg_9").received == "correlation_id = 'msg_0'"


# ---------------------------------------------------------------- §9.1


def test_ping_9_1_1() -> None:
    assert judge.ping(result(PING), "e").ok
    no_pong = {k: v for k, v in PING.items() if k != "pong"}
    assert judge.ping(result(no_pong), "e") == judge.failed("data.pong: true",
                                                            "data.pong missing")  # fmt: skip
    assert judge.ping(result({**PING, "pong": "yes"}), "e").received == "data.pong = 'yes'"
    assert judge.ping(result({**PING, "echo_data": "x"}), "e").received == "data.echo_data = 'x'"
    no_id = {k: v for k, v in PING.items() if k != "reactor_id"}
    assert judge.ping(result(no_id), "e").received == "data.reactor_id missing"
    assert judge.ping(error("PF003"), "e").received == "ERROR PF003: bad"
    assert not judge.ping({**result(PING), "payload": {"status": "failed"}}, "e").ok


def test_health_9_1_2() -> None:
    assert judge.health(result(HEALTH)).ok
    assert judge.health(result({**HEALTH, "overall_health_score": 1.2})).received == "1.2"
    assert judge.health(result({**HEALTH, "status": "fine"})).received == "'fine'"
    no_res = {k: v for k, v in HEALTH.items() if k != "resource_status"}
    assert judge.health(result(no_res)).received == "data.resource_status missing"


def test_introspect_lists_the_mandatory_elements() -> None:
    packets = [{"group": "cf", "element": e} for e in ("ping", "health", "introspect")]
    assert judge.introspect(result({"specializations": [], "supported_packets": packets})).ok
    short = judge.introspect(result({"specializations": [], "supported_packets": packets[:2]}))
    assert short.received == "supported_packets lacks cf:introspect"
    bad = judge.introspect(result({"specializations": [], "supported_packets": ["cf:ping"]}))
    assert not bad.ok


def test_within_12_3_1_limits() -> None:
    assert judge.within(4999.0, 5000).ok
    assert judge.within(5001.0, 5000) == judge.failed("reply within 5000 ms", "5001 ms")


# ---------------------------------------------------------------- §10


def test_pf002_10_2_shape() -> None:
    assert judge.error_reply(error("PF002", error_details=PF002_DETAILS), "PF002", "priority").ok
    # a differently spelled path to the same leaf is fine
    other = {**PF002_DETAILS, "field": "priority"}
    assert judge.error_reply(error("PF002", error_details=other), "PF002", "priority").ok
    wrong_leaf = {**PF002_DETAILS, "field": "payload.packet.group"}
    assert not judge.error_reply(error("PF002", error_details=wrong_leaf), "PF002", "priority").ok


@pytest.mark.parametrize(
    ("payload", "received"),
    [
        ({"error_details": "priority too high"}, "payload.error_details: string"),
        ({"error_details": {**PF002_DETAILS, "validation_rule": None}},
         "error_details.validation_rule: null"),
        ({"retry_possible": True}, "true"),
        ({"retry_possible": "no"}, "payload.retry_possible: string"),
        ({"error_category": "Validation"}, "'Validation'"),
        ({"error_code": "PF001"}, "ERROR 'PF001': 'bad'"),
    ],
)  # fmt: skip
def test_pf002_wrong_shapes_fail(payload: dict[str, Any], received: str) -> None:
    reply = error("PF002", error_details=PF002_DETAILS)
    reply["payload"].update(payload)
    verdict = judge.error_reply(reply, "PF002", "priority")
    assert (verdict.ok, verdict.received) == (False, received)


def test_pf001_and_pf003_categories() -> None:
    assert judge.error_reply(error("PF001"), "PF001").ok
    assert judge.error_reply(error("PF003"), "PF003").ok
    assert judge.error_reply(result(PING), "PF003").received == "message_type 'result (success)'"


# ---------------------------------------------------------------- chemistry


def test_affinity_matrix_3_3_within_0_001() -> None:
    matrix = copy.deepcopy({g: dict(r) for g, r in STANDARD_MATRIX.items()})
    assert judge.affinity_matrix(matrix).ok
    matrix["df"]["memory_bound"] = 0.9009
    assert judge.affinity_matrix(matrix).ok
    matrix["df"]["memory_bound"] = 0.902
    assert judge.affinity_matrix(matrix) == judge.failed("df/memory_bound = 0.9",
                                                         "df/memory_bound = 0.902")  # fmt: skip
    matrix["df"]["memory_bound"] = 0.9
    del matrix["rm"]
    assert judge.affinity_matrix(matrix).received == "row rm missing"


def test_chemical_properties_match_the_wire_example() -> None:
    """Wire example 2: df priority 7 → 0.8 / 0.7 / 1.0 / 0.56."""
    props = {"reactivity": 0.8, "ionization_energy": 0.7, "atomic_radius": 1.0,
             "electronegativity": 0.56}  # fmt: skip
    assert judge.properties(props, "df", 7, 0).ok
    assert judge.properties({**props, "electronegativity": 0.6}, "df", 7, 0).received == \
        "electronegativity = 0.6"  # fmt: skip


# ---------------------------------------------------------------- discovery


def test_discover_responses_and_role_guess() -> None:
    gateway = {
        **ENVELOPE,
        "message_type": "discover",
        "payload": {"discovery_type": "response", "reactors": [{"reactor_id": "r1"}]},
    }
    reactor = {
        **ENVELOPE,
        "message_type": "discover",
        "payload": {"discovery_type": "response", "reactor_info": {"reactor_id": "r"}},
    }
    assert judge.guess_role(gateway) == "gateway"
    assert judge.guess_role(reactor) == "reactor"
    assert judge.guess_role(result(PING)) is None
    assert judge.discover_response(gateway, role="gateway", reactor_id="r1").ok
    assert not judge.discover_response(gateway, role="gateway", reactor_id="r2").ok
    assert judge.discover_response(reactor, role="reactor").ok
    refused = judge.discover_response(error("PF002"), role="gateway", accepted=True)
    assert refused.received == "error PF002: bad"
    ack = {**gateway, "payload": {"discovery_type": "response", "accepted": False}}
    assert judge.discover_response(ack, role="gateway", accepted=True).received == "False"


def test_forwarded_submit_wire_example_2() -> None:
    forwarded = {**ENVELOPE, "message_type": "submit", "correlation_id": "msg_a1b2c3d4",
                 "payload": {"packet": {"id": "packet_transform_001", "group": "df",
                                        "element": "transform", "timeout_ms": 29850,
                                        "chemical_properties": {"reactivity": 0.8}}}}  # fmt: skip
    assert judge.forwarded_submit(forwarded, "msg_a1b2c3d4", "packet_transform_001", 30000).ok
    assert judge.forwarded_submit(forwarded, "msg_other", "packet_transform_001",
                                  30000).received == "correlation_id = 'msg_a1b2c3d4'"  # fmt: skip
    assert not judge.forwarded_submit(forwarded, "msg_a1b2c3d4", "packet_x", 30000).ok
    longer = judge.forwarded_submit(forwarded, "msg_a1b2c3d4", "packet_transform_001", 20000)
    assert (longer.ok, longer.received) == (False, "29850")
    del forwarded["payload"]["packet"]["chemical_properties"]
    bare = judge.forwarded_submit(forwarded, "msg_a1b2c3d4", "packet_transform_001", 30000)
    assert bare.received == "payload.packet.chemical_properties: null"
