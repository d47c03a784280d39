"""Wire validation (DESIGN §3, PFAP §4) through ``decode_frame``/``encode``.

The JSON constants are copied from the spec: the four messages of "Complete Packet
Submission Flow" verbatim, and the payload examples of §4.2.3-§4.2.6 (wrapped in a §4.1
envelope below).
"""

from __future__ import annotations

import copy
import json
from typing import Any

import msgspec
import pytest

from packetflow.protocol import chemistry, errors, messages

# ---------------------------------------------------------------- spec examples (verbatim)

WIRE_1 = """\
{
  "protocol_version": "1.0",
  "message_type": "submit",
  "sequence_id": 12345,
  "timestamp": 1640995200000,
  "source_id": "client-webapp-01",
  "destination_id": "gateway-01",
  "message_id": "msg_a1b2c3d4",
  "ttl": 30000,
  "priority": 7,
  "payload": {
    "packet": {
      "version": "1.0",
      "id": "packet_transform_001",
      "group": "df",
      "element": "transform",
      "data": {
        "input": ["apple", "banana", "cherry"],
        "operation": "uppercase",
        "parameters": {"locale": "en-US"}
      },
      "priority": 7,
      "timeout_ms": 30000
    }
  }
}
"""

WIRE_2 = """\
{
  "protocol_version": "1.0",
  "message_type": "submit",
  "sequence_id": 12346,
  "timestamp": 1640995200150,
  "source_id": "gateway-01",
  "destination_id": "reactor-js-05",
  "message_id": "msg_b2c3d4e5",
  "correlation_id": "msg_a1b2c3d4",
  "ttl": 29850,
  "priority": 7,
  "routing_hints": {
    "affinity_score": 0.87,
    "load_factor": 0.34,
    "selection_reason": "best_chemical_match"
  },
  "payload": {
    "packet": {
      "version": "1.0",
      "id": "packet_transform_001",
      "group": "df",
      "element": "transform",
      "data": {
        "input": ["apple", "banana", "cherry"],
        "operation": "uppercase",
        "parameters": {"locale": "en-US"}
      },
      "priority": 7,
      "timeout_ms": 29850,
      "chemical_properties": {
        "reactivity": 0.8,
        "ionization_energy": 0.7,
        "atomic_radius": 1.0,
        "electronegativity": 0.56
      }
    }
  }
}
"""

WIRE_3 = """\
{
  "protocol_version": "1.0",
  "message_type": "result",
  "sequence_id": 12347,
  "timestamp": 1640995200875,
  "source_id": "reactor-js-05",
  "destination_id": "gateway-01",
  "message_id": "msg_c3d4e5f6",
  "correlation_id": "msg_b2c3d4e5",
  "payload": {
    "packet_id": "packet_transform_001",
    "status": "success",
    "data": {
      "result": ["APPLE", "BANANA", "CHERRY"],
      "operation_applied": "uppercase",
      "items_processed": 3,
      "processing_stats": {
        "duration_ms": 725,
        "memory_used_mb": 1.2,
        "cpu_usage_percent": 8.5
      }
    },
    "reactor_info": {
      "reactor_id": "reactor-js-05",
      "implementation": "javascript",
      "specialization": ["memory_bound", "general_purpose"],
      "load_factor": 0.36,
      "queue_depth": 4
    },
    "chemical_analysis": {
      "affinity_score": 0.87,
      "optimization_applied": false,
      "processing_efficiency": 0.92
    },
    "processed_at": 1640995200875
  }
}
"""

WIRE_4 = """\
{
  "protocol_version": "1.0",
  "message_type": "result",
  "sequence_id": 12348,
  "timestamp": 1640995200900,
  "source_id": "gateway-01",
  "destination_id": "client-webapp-01",
  "message_id": "msg_d4e5f6g7",
  "correlation_id": "msg_a1b2c3d4",
  "payload": {
    "packet_id": "packet_transform_001",
    "status": "success",
    "data": {
      "result": ["APPLE", "BANANA", "CHERRY"],
      "operation_applied": "uppercase",
      "items_processed": 3
    },
    "processing_metadata": {
      "total_duration_ms": 900,
      "reactor_duration_ms": 725,
      "routing_duration_ms": 175,
      "reactor_id": "reactor-js-05",
      "affinity_score": 0.87
    }
  }
}
"""

ERROR_4_2_3 = """\
{
  "message_type": "error",
  "payload": {
    "packet_id": "packet_12345",
    "error_code": "PF001",
    "error_category": "validation_error",
    "error_message": "Invalid packet format: missing required field 'data'",
    "error_details": {
      "field": "data",
      "expected_type": "object",
      "received_type": "null",
      "validation_rule": "required_field"
    },
    "reactor_info": {
      "reactor_id": "reactor-elixir-03",
      "implementation": "elixir"
    },
    "recovery_suggestions": [
      "Ensure packet.data is a valid object",
      "Check packet serialization process",
      "Verify client-side validation rules"
    ],
    "retry_possible": true,
    "retry_delay_ms": 1000
  }
}
"""

HEARTBEAT_4_2_4 = """\
{
  "message_type": "heartbeat",
  "payload": {
    "reactor_id": "reactor-zig-02",
    "implementation": "zig",
    "specializations": ["io_intensive", "network_heavy"],
    "health_status": {
      "status": "healthy",
      "load_factor": 0.45,
      "queue_depth": 12,
      "memory_usage_mb": 156.7,
      "cpu_usage_percent": 23.4,
      "network_connections": 34,
      "uptime_seconds": 86400,
      "last_error": null
    },
    "performance_metrics": {
      "packets_processed": 15420,
      "avg_processing_time_ms": 12.5,
      "p99_processing_time_ms": 85.3,
      "error_rate": 0.002,
      "throughput_pps": 145.7
    },
    "chemical_metrics": {
      "affinity_effectiveness": 0.91,
      "molecular_participation": 23,
      "optimization_count": 5,
      "bond_success_rate": 0.97
    },
    "capabilities": [
      "ed:signal", "ed:subscribe", "rm:monitor",
      "co:broadcast", "df:validate"
    ]
  }
}
"""

DISCOVER_4_2_5 = """\
{
  "message_type": "discover",
  "payload": {
    "discovery_type": "announce|query|response",
    "reactor_info": {
      "reactor_id": "reactor-elixir-01",
      "implementation": "elixir",
      "version": "1.0.0",
      "specializations": ["cpu_intensive", "general_purpose"],
      "max_capacity": 200.0,
      "current_load": 67.5,
      "endpoints": {
        "websocket": "ws://reactor-elixir-01:8443/ws",
        "http": "http://reactor-elixir-01:8443",
        "metrics": "http://reactor-elixir-01:9090/metrics"
      }
    },
    "supported_packets": [
      {"group": "cf", "element": "ping", "priority_range": [1, 10]},
      {"group": "cf", "element": "health", "priority_range": [8, 10]},
      {"group": "df", "element": "transform", "priority_range": [1, 9]}
    ],
    "chemical_characteristics": {
      "affinity_matrix_version": "1.0",
      "optimization_capabilities": ["molecular", "bond_strength"],
      "fault_tolerance_level": "byzantine_resilient"
    },
    "operational_constraints": {
      "max_packet_size_mb": 10,
      "max_concurrent_packets": 50,
      "supported_bond_types": ["ionic", "covalent", "metallic", "vdw"]
    }
  }
}
"""

COORDINATE_4_2_6 = """\
{
  "message_type": "coordinate",
  "payload": {
    "molecule_id": "molecule_workflow_abc123",
    "coordination_type": "initiate|progress|complete|abort",
    "molecular_structure": {
      "packets": [
        {
          "id": "packet_001",
          "group": "df",
          "element": "load_data",
          "dependencies": []
        },
        {
          "id": "packet_002",
          "group": "df",
          "element": "transform_data",
          "dependencies": ["packet_001"]
        }
      ],
      "bonds": [
        {
          "from": "packet_001",
          "to": "packet_002",
          "type": "ionic",
          "strength": 1.0
        }
      ],
      "properties": {
        "stability": 0.85,
        "total_energy": 2.3,
        "optimization_target": "throughput"
      }
    },
    "execution_state": {
      "current_phase": "processing",
      "completed_packets": ["packet_001"],
      "active_packets": ["packet_002"],
      "pending_packets": [],
      "failed_packets": []
    },
    "coordination_metadata": {
      "coordinator_id": "gateway-coordinator-01",
      "started_at": 1640995200000,
      "estimated_completion": 1640995260000,
      "retry_count": 0
    }
  }
}
"""

# ---------------------------------------------------------------- helpers

ENVELOPE_BASE = {
    "protocol_version": "1.0",
    "sequence_id": 7,
    "timestamp": 1640995200000,
    "source_id": "reactor-js-05",
    "destination_id": "gateway-01",
    "message_id": "msg_example",
    "correlation_id": "msg_a1b2c3d4",
}


def wrap(example: str, message_type: str, **payload_overrides: Any) -> dict[str, Any]:
    """A §4.2.x payload example inside a full §4.1 envelope."""
    body = json.loads(example)
    assert body["message_type"] == message_type
    body["payload"].update(payload_overrides)
    return {**ENVELOPE_BASE, **body}


SIX_EXAMPLES: dict[str, dict[str, Any]] = {
    "submit": json.loads(WIRE_1),
    "result": json.loads(WIRE_3),
    "error": wrap(ERROR_4_2_3, "error"),
    "heartbeat": wrap(HEARTBEAT_4_2_4, "heartbeat"),
    "discover": wrap(DISCOVER_4_2_5, "discover", discovery_type="announce"),
    "coordinate": wrap(COORDINATE_4_2_6, "coordinate", coordination_type="progress"),
}
MESSAGE_CLASSES = {
    "submit": messages.Submit,
    "result": messages.Result,
    "error": messages.Error,
    "heartbeat": messages.Heartbeat,
    "discover": messages.Discover,
    "coordinate": messages.Coordinate,
}


def dumps(value: Any) -> bytes:
    return json.dumps(value).encode()


def wire1(**changes: Any) -> dict[str, Any]:
    """Message 1 of the wire example, with dotted-path changes (value ... = delete)."""
    msg: dict[str, Any] = json.loads(WIRE_1)
    for path, value in changes.items():
        *parents, last = path.split("__")
        node = msg
        for part in parents:
            node = node[part]
        if value is ...:
            del node[last]
        else:
            node[last] = value
    return msg


def single(frame: bytes | str) -> messages.Message | messages.FrameError:
    out = messages.decode_frame(frame)
    assert len(out) == 1, out
    return out[0]


def single_msg(frame: bytes | str) -> messages.Message:
    out = single(frame)
    assert not isinstance(out, messages.FrameError), out.error
    return out


def expect_error(frame: bytes | str, code: str, field: str | None = None) -> messages.FrameError:
    out = single(frame)
    assert isinstance(out, messages.FrameError), out
    err = out.error
    assert isinstance(err, errors.PacketFlowError)
    assert err.code == code, (err.code, err.message)
    if code == "PF001":
        assert isinstance(err, errors.InvalidMessage)
    if code == "PF002":
        assert isinstance(err, errors.InvalidPacket)
        assert err.error_details()["field"] == err.field
    if field is not None:
        assert err.field == field, (err.field, err.message)
    return out


# ---------------------------------------------------------------- the wire example


@pytest.mark.parametrize("as_text", [False, True])
def test_wire_example_message_1_decodes_to_submit(as_text: bool) -> None:
    """Wire example message 1 (client → gateway), verbatim."""
    frame: bytes | str = WIRE_1 if as_text else WIRE_1.encode()
    msg = single(frame)
    assert isinstance(msg, messages.Submit)
    assert msg.protocol_version == "1.0"
    assert msg.sequence_id == 12345
    assert msg.timestamp == 1640995200000
    assert msg.source_id == "client-webapp-01"
    assert msg.destination_id == "gateway-01"
    assert msg.message_id == "msg_a1b2c3d4"
    assert msg.correlation_id is None
    assert msg.ttl == 30000
    assert msg.priority == 7
    assert msg.routing_hints is None
    packet = msg.payload.packet
    assert packet.version == "1.0"
    assert packet.id == "packet_transform_001"
    assert packet.group == "df"
    assert packet.element == "transform"
    assert packet.priority == 7
    assert packet.timeout_ms == 30000
    assert packet.dependencies == ()
    assert packet.metadata is None
    assert packet.chemical_properties is None
    assert messages.decode_json(packet.data) == {
        "input": ["apple", "banana", "cherry"],
        "operation": "uppercase",
        "parameters": {"locale": "en-US"},
    }
    assert msg.payload.routing_preferences is None


def test_wire_example_message_2_gateway_to_reactor() -> None:
    """Wire example message 2: correlates to message 1; chemical properties per DESIGN §4."""
    msg = single(WIRE_2)
    assert isinstance(msg, messages.Submit)
    assert msg.correlation_id == "msg_a1b2c3d4"
    assert msg.ttl == 29850
    assert msg.routing_hints == {
        "affinity_score": 0.87,
        "load_factor": 0.34,
        "selection_reason": "best_chemical_match",
    }
    packet = msg.payload.packet
    assert packet.timeout_ms == 29850
    props = packet.chemical_properties
    assert props is not None
    computed = chemistry.chemical_properties(packet.group, packet.priority or 0)
    assert (props.reactivity, props.ionization_energy) == (0.8, 0.7)
    assert (props.atomic_radius, props.electronegativity) == (1.0, 0.56)
    assert props.reactivity == computed.reactivity
    assert props.ionization_energy == computed.ionization_energy
    assert props.atomic_radius == computed.atomic_radius
    assert props.electronegativity == computed.electronegativity


def test_wire_example_messages_3_and_4_decode_to_results() -> None:
    """Wire example messages 3 (reactor → gateway) and 4 (gateway → client)."""
    three = single(WIRE_3)
    assert isinstance(three, messages.Result)
    assert three.correlation_id == "msg_b2c3d4e5"
    assert three.payload.packet_id == "packet_transform_001"
    assert three.payload.status == "success"
    assert three.payload.processed_at == 1640995200875
    assert three.payload.reactor_info is not None
    assert three.payload.reactor_info["reactor_id"] == "reactor-js-05"
    assert three.payload.chemical_analysis == {
        "affinity_score": 0.87,
        "optimization_applied": False,
        "processing_efficiency": 0.92,
    }
    assert messages.decode_json(three.payload.data)["result"] == ["APPLE", "BANANA", "CHERRY"]
    four = single(WIRE_4)
    assert isinstance(four, messages.Result)
    assert four.correlation_id == "msg_a1b2c3d4"
    assert four.destination_id == "client-webapp-01"
    assert four.payload.processing_metadata is not None
    assert four.payload.processing_metadata["reactor_duration_ms"] == 725
    assert messages.decode_json(four.payload.data)["items_processed"] == 3


@pytest.mark.parametrize("message_type", list(SIX_EXAMPLES))
def test_spec_examples_decode_to_their_type_pfap_4_2(message_type: str) -> None:
    """PFAP §4.2.1-§4.2.6: each example decodes to its message class."""
    msg = single(dumps(SIX_EXAMPLES[message_type]))
    assert type(msg) is MESSAGE_CLASSES[message_type]


def test_spec_example_payload_fields_pfap_4_2() -> None:
    heartbeat = single(dumps(SIX_EXAMPLES["heartbeat"]))
    assert isinstance(heartbeat, messages.Heartbeat)
    assert heartbeat.payload.reactor_id == "reactor-zig-02"
    assert heartbeat.payload.health_status is not None
    assert heartbeat.payload.health_status.queue_depth == 12
    assert "co:broadcast" in heartbeat.payload.capabilities
    discover = single(dumps(SIX_EXAMPLES["discover"]))
    assert isinstance(discover, messages.Discover)
    assert discover.payload.reactor_info is not None
    assert discover.payload.reactor_info.endpoints["websocket"] == "ws://reactor-elixir-01:8443/ws"
    assert [(p.group, p.element) for p in discover.payload.supported_packets] == [
        ("cf", "ping"),
        ("cf", "health"),
        ("df", "transform"),
    ]
    assert discover.payload.supported_packets[1].priority_range == (8, 10)
    error = single(dumps(SIX_EXAMPLES["error"]))
    assert isinstance(error, messages.Error)
    assert error.payload.error_code == "PF001"
    assert error.payload.error_details["validation_rule"] == "required_field"
    assert error.payload.retry_possible is True
    assert error.payload.retry_delay_ms == 1000
    coordinate = single(dumps(SIX_EXAMPLES["coordinate"]))
    assert isinstance(coordinate, messages.Coordinate)
    assert coordinate.payload.molecule_id == "molecule_workflow_abc123"
    assert coordinate.payload.coordination_type == "progress"


# ---------------------------------------------------------------- PF001: bad frames


@pytest.mark.parametrize(
    "frame",
    [b"not json", b"{", b"", b"   ", b'{"a": 1,}', b"\x00\x01\x02", b"\xff\xfe{}", b"{'a': 1}"],
)
def test_non_json_is_pf001_design_3(frame: bytes) -> None:
    """DESIGN §3: non-JSON frames answer PF001."""
    out = expect_error(frame, "PF001")
    assert out.message_id is None
    assert out.packet_id is None


@pytest.mark.parametrize("frame", ["42", '"submit"', "null", "true", "3.5", "[[]]", "[7]"])
def test_json_that_is_not_an_object_is_pf001_design_3(frame: str) -> None:
    """DESIGN §3: an envelope is a JSON object (inside a batch too)."""
    expect_error(frame, "PF001")


@pytest.mark.parametrize("version", ["2.0", "0.9", "3", "", "v1.0", "10.0"])
def test_other_protocol_major_is_pf001_design_3(version: str) -> None:
    """DESIGN §3: protocol_version major "1"; another major is PF001."""
    out = expect_error(dumps(wire1(protocol_version=version)), "PF001", "protocol_version")
    assert out.message_id == "msg_a1b2c3d4"


@pytest.mark.parametrize("version", ["1.0", "1.1", "1.0.3"])
def test_protocol_major_1_is_accepted_design_3(version: str) -> None:
    assert isinstance(single(dumps(wire1(protocol_version=version))), messages.Submit)


def test_oversize_frame_is_pf001_pfap_12_4_1() -> None:
    """PFAP §12.4.1 max_frame_size 1048576 bytes (DESIGN §3: 1 MiB by default)."""
    assert messages.MAX_FRAME_BYTES == 1_048_576
    body = WIRE_1.encode()
    exact = body + b" " * (1_048_576 - len(body))
    assert isinstance(single(exact), messages.Submit)
    out = expect_error(exact + b" ", "PF001")
    assert out.error.validation_rule == "max_frame_size"


def test_frame_limit_is_configurable_design_3() -> None:
    body = WIRE_1.encode()
    out = messages.decode_frame(body, max_bytes=len(body) - 1)
    assert len(out) == 1
    assert isinstance(out[0], messages.FrameError)
    assert out[0].error.code == "PF001"
    ok = messages.decode_frame(body, max_bytes=len(body))
    assert isinstance(ok[0], messages.Submit)


def test_oversize_batch_frame_is_one_pf001() -> None:
    """An oversize frame is one error, not one per element."""
    frame = dumps([json.loads(WIRE_1)] * 3)
    out = messages.decode_frame(frame, max_bytes=len(frame) - 1)
    assert len(out) == 1
    assert isinstance(out[0], messages.FrameError)
    assert out[0].error.code == "PF001"


def test_binary_frame_is_pf001_design_3() -> None:
    out = messages.binary_frame_error()
    assert isinstance(out.error, errors.InvalidMessage)
    assert out.error.code == "PF001"


# ---------------------------------------------------------------- PF002: bad fields


def test_priority_string_is_pf002_type_design_3() -> None:
    """DESIGN §3 example: PF002 naming payload.packet.priority, expected int, received str."""
    out = expect_error(
        dumps(wire1(payload__packet__priority="high")), "PF002", "payload.packet.priority"
    )
    details = out.error.error_details()
    assert details["expected_type"] == "int"
    assert details["received_type"] == "str"
    assert details["validation_rule"] == "type"


@pytest.mark.parametrize("priority", [11, 0, -3, 1000])
def test_priority_out_of_range_is_pf002_with_received_value_design_4(priority: int) -> None:
    """DESIGN §4: priority 1-10; the error names the value it received."""
    out = expect_error(
        dumps(wire1(payload__packet__priority=priority)), "PF002", "payload.packet.priority"
    )
    details = out.error.error_details()
    assert details["validation_rule"] == "range"
    assert str(priority) in details["received_type"]
    assert ("10" if priority > 10 else "1") in details["expected_type"]


@pytest.mark.parametrize("priority", [1, 10])
def test_priority_bounds_are_accepted_design_4(priority: int) -> None:
    msg = single(dumps(wire1(payload__packet__priority=priority)))
    assert isinstance(msg, messages.Submit)
    assert msg.payload.packet.priority == priority


@pytest.mark.parametrize("priority", [7.5, True, "7", [7], {"p": 7}])
def test_priority_wrong_type_is_pf002(priority: Any) -> None:
    expect_error(
        dumps(wire1(payload__packet__priority=priority)), "PF002", "payload.packet.priority"
    )


def test_envelope_priority_out_of_range_is_pf002_pfap_4_1() -> None:
    """PFAP §4.1 envelope priority 1-10."""
    expect_error(dumps(wire1(priority=11)), "PF002", "priority")


def test_missing_packet_is_pf002_design_3() -> None:
    out = expect_error(dumps(wire1(payload__packet=...)), "PF002", "payload.packet")
    assert out.error.validation_rule == "required_field"
    assert out.message_id == "msg_a1b2c3d4"


@pytest.mark.parametrize(
    "field", ["protocol_version", "message_type", "message_id", "timestamp", "source_id", "payload"]
)
def test_missing_required_envelope_field_is_pf002_design_3(field: str) -> None:
    """DESIGN §3: required on every envelope."""
    expect_error(dumps(wire1(**{field: ...})), "PF002", field)


@pytest.mark.parametrize("field", ["group", "element"])
def test_missing_required_packet_field_is_pf002(field: str) -> None:
    expect_error(
        dumps(wire1(**{f"payload__packet__{field}": ...})), "PF002", f"payload.packet.{field}"
    )


@pytest.mark.parametrize("group", ["xx", "DF", "", "cf ", 3])
def test_unknown_group_is_pf002_design_4(group: Any) -> None:
    """DESIGN §4: group ∈ cf, df, ed, co, mc, rm."""
    expect_error(dumps(wire1(payload__packet__group=group)), "PF002", "payload.packet.group")


@pytest.mark.parametrize("element", ["Transform", "load-data", "1x", "", "df:transform", 5])
def test_bad_element_name_is_pf002_design_4(element: Any) -> None:
    """DESIGN §4: element matches [a-z][a-z0-9_]*."""
    expect_error(dumps(wire1(payload__packet__element=element)), "PF002", "payload.packet.element")


@pytest.mark.parametrize("data", [[1, 2], "text", 5, 2.5, None, True, False])
def test_data_not_an_object_is_pf002_design_3(data: Any) -> None:
    """PFAP §4.2.1 / §4.2.3 example: packet.data must be an object."""
    out = expect_error(dumps(wire1(payload__packet__data=data)), "PF002", "payload.packet.data")
    assert out.error.error_details()["expected_type"] == "object"


@pytest.mark.parametrize("packet_id", ["", "x" * 129])
def test_bad_packet_id_length_is_pf002_design_4(packet_id: str) -> None:
    expect_error(dumps(wire1(payload__packet__id=packet_id)), "PF002", "payload.packet.id")


def test_packet_id_of_128_chars_is_accepted_design_4() -> None:
    assert isinstance(single(dumps(wire1(payload__packet__id="x" * 128))), messages.Submit)


def test_packet_id_is_optional_design_4() -> None:
    """DESIGN §4: the gateway assigns an id when absent."""
    msg = single(dumps(wire1(payload__packet__id=...)))
    assert isinstance(msg, messages.Submit)
    assert msg.payload.packet.id is None


@pytest.mark.parametrize("timeout", [0, -1])
def test_non_positive_timeout_is_pf002(timeout: int) -> None:
    expect_error(
        dumps(wire1(payload__packet__timeout_ms=timeout)), "PF002", "payload.packet.timeout_ms"
    )


@pytest.mark.parametrize("message_type", ["bogus", "SUBMIT", "", 3])
def test_unknown_message_type_is_pf002_design_3(message_type: Any) -> None:
    """DESIGN §3: message_type is one of the six of §4.2."""
    out = expect_error(dumps(wire1(message_type=message_type)), "PF002", "message_type")
    assert out.message_id == "msg_a1b2c3d4"


def test_nested_field_path_names_the_list_index() -> None:
    out = expect_error(
        dumps(wire1(payload__packet__dependencies=["ok", 5])),
        "PF002",
        "payload.packet.dependencies[1]",
    )
    assert out.error.error_details()["received_type"] == "int"


def test_bad_field_in_other_message_types_names_the_path() -> None:
    heartbeat = copy.deepcopy(SIX_EXAMPLES["heartbeat"])
    heartbeat["payload"]["health_status"]["load_factor"] = "high"
    expect_error(dumps(heartbeat), "PF002", "payload.health_status.load_factor")
    discover = copy.deepcopy(SIX_EXAMPLES["discover"])
    discover["payload"]["discovery_type"] = "shout"
    expect_error(dumps(discover), "PF002", "payload.discovery_type")
    error = copy.deepcopy(SIX_EXAMPLES["error"])
    del error["payload"]["error_code"]
    expect_error(dumps(error), "PF002", "payload.error_code")


def test_frame_errors_become_error_payloads_design_6() -> None:
    """Every FrameError turns into a DESIGN §6 payload."""
    out = expect_error(dumps(wire1(payload__packet__priority="high")), "PF002")
    payload = out.error.to_payload(packet_id=out.packet_id)
    assert payload["packet_id"] == "packet_transform_001"
    assert payload["error_code"] == "PF002"
    assert payload["error_category"] == "validation_error"
    assert payload["error_details"]["field"] == "payload.packet.priority"
    assert payload["retry_possible"] is False


# ---------------------------------------------------------------- correlation of errors


def test_bad_message_ids_are_recovered_design_3() -> None:
    """DESIGN §3: the ERROR correlates to the bad message's message_id."""
    out = expect_error(dumps(wire1(payload__packet__priority=0)), "PF002")
    assert out.message_id == "msg_a1b2c3d4"
    assert out.packet_id == "packet_transform_001"


def test_result_packet_id_is_recovered() -> None:
    result = json.loads(WIRE_3)
    result["payload"]["processed_at"] = "yesterday"
    out = expect_error(dumps(result), "PF002", "payload.processed_at")
    assert out.message_id == "msg_c3d4e5f6"
    assert out.packet_id == "packet_transform_001"


def test_ids_of_wrong_type_are_not_recovered() -> None:
    out = expect_error(dumps(wire1(message_id=12, payload__packet__id=["x"])), "PF002")
    assert out.message_id is None
    assert out.packet_id is None


# ---------------------------------------------------------------- batches (§12.4.2)


def test_batch_decodes_each_element_independently_design_3() -> None:
    """DESIGN §3: each element of a batch is handled as if sent alone."""
    bad = wire1(message_id="msg_bad", payload__packet__priority=0)
    frame = dumps([json.loads(WIRE_1), 5, bad, json.loads(WIRE_2), {"junk": True}])
    out = messages.decode_frame(frame)
    assert len(out) == 5
    assert isinstance(out[0], messages.Submit)
    assert isinstance(out[1], messages.FrameError)
    assert out[1].error.code == "PF001"
    assert isinstance(out[2], messages.FrameError)
    assert out[2].error.code == "PF002"
    assert out[2].message_id == "msg_bad"
    assert out[2].error.field == "payload.packet.priority"
    assert isinstance(out[3], messages.Submit)
    assert out[3].message_id == "msg_b2c3d4e5"
    assert isinstance(out[4], messages.FrameError)
    assert out[4].error.code == "PF002"


def test_batch_of_one_and_of_fifty_pfap_12_4_2() -> None:
    """PFAP §12.4.2 max_batch_size 50."""
    assert messages.MAX_BATCH == 50
    one = messages.decode_frame(dumps([json.loads(WIRE_1)]))
    assert len(one) == 1
    assert isinstance(one[0], messages.Submit)
    fifty = messages.decode_frame(dumps([json.loads(WIRE_1)] * 50))
    assert len(fifty) == 50
    assert all(isinstance(m, messages.Submit) for m in fifty)


def test_oversize_batch_is_pf001_pfap_12_4_2() -> None:
    out = messages.decode_frame(dumps([json.loads(WIRE_1)] * 51))
    assert len(out) == 1
    assert isinstance(out[0], messages.FrameError)
    assert out[0].error.code == "PF001"


@pytest.mark.parametrize("frame", ["[]", " [ ] ", "\n[]\n"])
def test_empty_batch_is_pf001(frame: str) -> None:
    expect_error(frame, "PF001")


@pytest.mark.parametrize("frame", ["[", "[1,", '[{"a": 1}', "[1 2]"])
def test_malformed_batch_is_one_pf001(frame: str) -> None:
    expect_error(frame, "PF001")


# ---------------------------------------------------------------- forward compatibility


def test_unknown_fields_are_ignored_design_3() -> None:
    """DESIGN §3: unknown fields are ignored (forward compatibility)."""
    plain = single(WIRE_1)
    extended = json.loads(WIRE_1)
    extended["x_future_envelope"] = {"nested": [1, 2, {"deep": None}]}
    extended["payload"]["x_future_payload"] = "hello"
    extended["payload"]["packet"]["x_future_packet"] = 42
    extended["payload"]["routing_preferences"] = {"x_future_hint": True}
    decoded = single(dumps(extended))
    assert isinstance(decoded, messages.Submit)
    assert isinstance(plain, messages.Submit)
    # Same packet (data compared by value: json.dumps re-spaced it).
    assert messages.decode_json(decoded.payload.packet.data) == messages.decode_json(
        plain.payload.packet.data
    )
    assert msgspec.structs.replace(decoded.payload.packet, data=plain.payload.packet.data) == (
        plain.payload.packet
    )
    assert decoded.message_id == plain.message_id
    assert decoded.payload.routing_preferences == messages.RoutingPreferences()
    assert b"x_future" not in messages.encode(decoded)


def test_unknown_fields_in_result_are_ignored() -> None:
    result = json.loads(WIRE_3)
    result["payload"]["x_new"] = {"a": 1}
    assert isinstance(single(dumps(result)), messages.Result)


# ---------------------------------------------------------------- encode / round trip


@pytest.mark.parametrize("message_type", list(SIX_EXAMPLES))
def test_round_trip_of_every_message_type_pfap_4_2(message_type: str) -> None:
    """decode(encode(m)) == m for each of the six message types."""
    msg = single_msg(dumps(SIX_EXAMPLES[message_type]))
    assert type(msg) is MESSAGE_CLASSES[message_type]
    encoded = messages.encode(msg)
    assert json.loads(encoded)["message_type"] == message_type
    again = single(encoded)
    assert again == msg
    assert messages.encode(again) == encoded


@pytest.mark.parametrize("frame", [WIRE_1, WIRE_2, WIRE_3, WIRE_4])
def test_round_trip_of_wire_example(frame: str) -> None:
    msg = single_msg(frame)
    again = single(messages.encode(msg))
    assert again == msg
    # Every value of the original survives (nothing is lost on the way out).
    original = json.loads(frame)
    reencoded = json.loads(messages.encode(msg))
    for key, value in original.items():
        if key != "payload":
            assert reencoded[key] == value, key


def test_round_trip_of_constructed_messages() -> None:
    """Messages built in Python (as the gateway and reactor do) survive the wire."""
    env: dict[str, Any] = {"protocol_version": "1.0", "timestamp": 1, "source_id": "gw"}
    built: list[messages.Message] = [
        messages.Submit(
            message_id="m1",
            payload=messages.SubmitPayload(
                packet=messages.Packet(
                    group="rm",
                    element="allocate",
                    id="p1",
                    data=msgspec.Raw(b'{"resources":{"memory_mb":64}}'),
                    priority=8,
                    timeout_ms=30_000,
                    dependencies=("p0",),
                ),
                routing_preferences=messages.RoutingPreferences(
                    preferred_implementation="python", minimum_affinity=0.7, affinity_boost=0.1
                ),
            ),
            **env,
        ),
        messages.Result(
            message_id="m2",
            correlation_id="m1",
            payload=messages.ResultPayload(
                packet_id="p1", status="success", data=msgspec.Raw(b'{"ok":true}')
            ),
            **env,
        ),
        messages.error_envelope(
            errors.Overloaded("queue full", retry_delay_ms=2500),
            message_id="m3",
            now_ms=1,
            source_id="gw",
            correlation_id="m1",
            packet_id="p1",
        ),
        messages.Heartbeat(
            message_id="m4",
            payload=messages.HeartbeatPayload(
                reactor_id="r1",
                specializations=["cpu_intensive"],
                health_status=messages.HealthStatus(status="degraded", load_factor=0.5),
                capabilities=["cf:ping"],
            ),
            **env,
        ),
        messages.Discover(
            message_id="m5",
            destination_id=None,
            payload=messages.DiscoverPayload(
                discovery_type="announce",
                reactor_info=messages.ReactorInfo(
                    reactor_id="r1", endpoints={"websocket": "ws://127.0.0.1:1/ws"}
                ),
                supported_packets=[messages.SupportedPacket(group="cf", element="ping")],
            ),
            **env,
        ),
        messages.Coordinate(
            message_id="m6",
            correlation_id="m0",
            payload=messages.CoordinatePayload(
                coordination_type="complete", molecule_id="mol1", status="completed"
            ),
            **env,
        ),
    ]
    assert sorted(type(m).__name__ for m in built) == sorted(
        c.__name__ for c in MESSAGE_CLASSES.values()
    )
    for msg in built:
        again = single(messages.encode(msg))
        assert again == msg, type(msg).__name__


def test_batch_encode_round_trip_design_3() -> None:
    msgs = [single_msg(WIRE_1), single_msg(WIRE_3)]
    out = messages.decode_frame(messages.encode(msgs))
    assert out == msgs


def test_destination_null_is_broadcast_and_survives_pfap_4_1() -> None:
    """PFAP §4.1: destination_id null = broadcast, distinct from absent."""
    msg = single(dumps(wire1(destination_id=None)))
    assert isinstance(msg, messages.Submit)
    assert msg.destination_id is None
    assert json.loads(messages.encode(msg))["destination_id"] is None
    absent = single_msg(dumps(wire1(destination_id=...)))
    assert "destination_id" not in json.loads(messages.encode(absent))


ODD_DATA = b'{ "z" : [1, 2.50, 1e3, "caf\\u00e9", "\xc3\xa9"],\n\t"a":{"b" : null} , "n":-0 }'


def test_raw_data_is_forwarded_byte_identically_design_3() -> None:
    """Packet data stays msgspec.Raw: a relay re-encodes the exact bytes it received
    (spacing, key order, number spelling, escapes)."""
    frame = WIRE_1.encode().replace(
        b'{\n        "input": ["apple", "banana", "cherry"],\n        "operation": "uppercase",'
        b'\n        "parameters": {"locale": "en-US"}\n      }',
        ODD_DATA,
    )
    assert ODD_DATA in frame
    msg = single(frame)
    assert isinstance(msg, messages.Submit)
    assert bytes(msg.payload.packet.data) == ODD_DATA
    # The gateway's forward (message 2 of the wire example) keeps the data bytes.
    forwarded = msgspec.structs.replace(
        msg, message_id="msg_fwd", correlation_id=msg.message_id, source_id="gateway-01"
    )
    assert ODD_DATA in messages.encode(forwarded)
    assert ODD_DATA in messages.encode([forwarded, forwarded])


def test_result_data_is_forwarded_byte_identically() -> None:
    result = json.loads(WIRE_3)
    frame = dumps(result).replace(b'"data": {', b'"data": {"zz" :  1.10 ,', 1)
    msg = single(frame)
    assert isinstance(msg, messages.Result)
    raw = bytes(msg.payload.data)
    assert raw.startswith(b'{"zz" :  1.10 ,')
    assert raw in messages.encode(msg)


def test_error_envelope_round_trip_design_6() -> None:
    """An ERROR built from an exception decodes back to the same error (DESIGN §6)."""
    err = errors.invalid_field("payload.packet.priority", "int", "str", "type")
    env = messages.error_envelope(
        err,
        message_id="msg_err",
        now_ms=1640995200000,
        source_id="gateway-01",
        correlation_id="msg_a1b2c3d4",
        packet_id="packet_transform_001",
    )
    decoded = single(messages.encode(env))
    assert isinstance(decoded, messages.Error)
    assert decoded.correlation_id == "msg_a1b2c3d4"
    payload = decoded.payload
    assert payload.error_code == "PF002"
    assert payload.error_category == "validation_error"
    assert payload.packet_id == "packet_transform_001"
    assert payload.error_details["field"] == "payload.packet.priority"
    rebuilt = messages.error_from_payload(payload)
    assert rebuilt.code == "PF002"
    assert rebuilt.field == "payload.packet.priority"
    assert rebuilt.validation_rule == "type"
    assert rebuilt.retryable is False


# ---------------------------------------------------------------- hostile frames
# Rules of DESIGN §3 / PFAP §4 that fuzzing once found broken.


@pytest.mark.parametrize(
    "frame",
    [
        "[" * 5000 + "]" * 5000,
        '{"a":' * 5000 + "1" + "}" * 5000,
        WIRE_1.replace('"operation"', '"deep": ' + "[" * 3000 + "]" * 3000 + ', "operation"'),
    ],
    ids=["deep-array", "deep-object", "deep-data"],
)
def test_deeply_nested_frame_is_one_error(frame: str) -> None:
    out = messages.decode_frame(frame)
    for item in out:
        assert isinstance(item, messages.FrameError)
        assert item.error.code in {"PF001", "PF002"}


def test_invalid_utf8_in_a_string_field_is_pf001() -> None:
    expect_error(WIRE_1.encode().replace(b'"client-webapp-01"', b'"client-\xff"'), "PF001")


def test_invalid_utf8_in_raw_data_is_pf001() -> None:
    expect_error(WIRE_1.encode().replace(b'"apple"', b'"\xffpple"'), "PF001")


def test_str_frame_with_lone_surrogate_is_pf001() -> None:
    expect_error(WIRE_1.replace("apple", "\ud800pple"), "PF001")


ENV: dict[str, Any] = {
    "protocol_version": "1.0",
    "timestamp": 1,
    "source_id": "r",
    "message_id": "m",
}
ERROR_PAYLOAD_KEYS = {
    "packet_id",
    "error_code",
    "error_category",
    "error_message",
    "error_details",
    "error_context",
    "reactor_info",
    "recovery_suggestions",
    "recovery_options",
    "retry_possible",
    "retry_delay_ms",
}


def test_encoded_result_carries_status_pfap_4_2_2() -> None:
    """PFAP §4.2.2: a RESULT payload always says its status, "success" included."""
    result = messages.Result(payload=messages.ResultPayload(packet_id="p", status="success"), **ENV)
    assert json.loads(messages.encode(result))["payload"].get("status") == "success"


def test_encoded_error_carries_every_design_6_key() -> None:
    """DESIGN §6 / PFAP §4.2.3: every key of the ERROR payload is on the wire, including
    retry_possible false for a validation error."""
    error = messages.error_envelope(
        errors.InvalidPacket("bad"), message_id="m", now_ms=1, source_id="g", correlation_id="c"
    )
    payload = json.loads(messages.encode(error))["payload"]
    assert set(payload) == ERROR_PAYLOAD_KEYS
    assert payload["retry_possible"] is False
    assert payload["error_code"] == "PF002"


def test_encoded_heartbeat_carries_health_status_pfap_4_2_4() -> None:
    heartbeat = messages.Heartbeat(
        payload=messages.HeartbeatPayload(
            reactor_id="r", health_status=messages.HealthStatus(status="healthy")
        ),
        **ENV,
    )
    health = json.loads(messages.encode(heartbeat))["payload"]["health_status"]
    assert health.get("status") == "healthy"


def test_discovery_type_error_lists_every_accepted_value() -> None:
    discover = copy.deepcopy(SIX_EXAMPLES["discover"])
    discover["payload"]["discovery_type"] = "shout"
    out = expect_error(dumps(discover), "PF002", "payload.discovery_type")
    for value in ("announce", "query", "response", "multicast_announce", "withdraw"):
        assert value in (out.error.expected_type or "")
