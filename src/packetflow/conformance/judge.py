"""Pure judging of an endpoint's replies against PFAP v1.0: each function takes decoded JSON
and returns a ``Verdict`` (pass/fail, what was expected, what was received).

No sockets and no clock here: the runner measures and sends, these functions only judge, so
unit tests feed them replies directly. Judging is deliberately on plain JSON rather than on
packetflow's own msgspec structs: the kit must judge what another implementation sends, not
whether packetflow's decoder happens to accept it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from ..protocol.chemistry import GROUP_PROPERTIES, STANDARD_MATRIX, chemical_properties
from ..protocol.errors import json_type

# §4.1: the fields every envelope carries, with their JSON types.
REQUIRED_ENVELOPE: Final[Mapping[str, str]] = {
    "protocol_version": "string",
    "message_type": "string",
    "message_id": "string",
    "timestamp": "integer",
    "source_id": "string",
    "payload": "object",
}
# §4.1: optional fields, typed when present (destination_id may be null: broadcast).
OPTIONAL_ENVELOPE: Final[Mapping[str, str]] = {
    "sequence_id": "integer",
    "destination_id": "string|null",
    # null where nothing can be correlated (a PF001 for a frame with no readable message_id)
    "correlation_id": "string|null",
    "ttl": "integer",
    "priority": "integer",
    "routing_hints": "object",
}
MESSAGE_TYPES: Final = ("submit", "result", "error", "heartbeat", "discover", "coordinate")
# §10.2 + DESIGN §3: what every PF002 names about the bad field.
PF002_DETAILS: Final = ("field", "expected_type", "received_type", "validation_rule")
# §10.1 category and retryability per code, in the wire form of §4.2.3/§10.2.
ERROR_CLASSES: Final[Mapping[str, tuple[str, bool]]] = {
    "PF001": ("validation_error", False),
    "PF002": ("validation_error", False),
    "PF003": ("routing_error", True),
}
# §12.3.1 affinity_matrix_accuracy.
MATRIX_TOLERANCE: Final = 0.001
# §9.1.2 health statuses (plus §9.3's states a reactor may report about itself).
HEALTH_STATUSES: Final = ("healthy", "degraded", "unhealthy", "recovery", "failed", "unknown")


@dataclass(frozen=True, slots=True)
class Verdict:
    ok: bool
    expected: str
    received: str


PASS_NOTE: Final = "as expected"


def passed(expected: str, received: str = PASS_NOTE) -> Verdict:
    return Verdict(True, expected, received)


def failed(expected: str, received: str) -> Verdict:
    return Verdict(False, expected, received)


def _is(value: Any, expected: str) -> bool:
    kinds = expected.split("|")
    kind = json_type(value)
    return kind in kinds or (kind == "integer" and "number" in kinds)


# ---------------------------------------------------------------- §4.1 envelope


def envelope(msg: Any) -> Verdict:
    """§4.1: required fields present with their types, optional ones typed, and a known
    ``message_type`` (the version is judged by ``protocol_version``)."""
    expected = "§4.1 envelope: " + ", ".join(f"{k}:{t}" for k, t in REQUIRED_ENVELOPE.items())
    if not isinstance(msg, dict):
        return failed(expected, f"a JSON {json_type(msg)}")
    for name, kind in REQUIRED_ENVELOPE.items():
        if name not in msg:
            return failed(expected, f"{name} missing")
        if not _is(msg[name], kind):
            return failed(expected, f"{name}: {json_type(msg[name])}")
    for name, kind in OPTIONAL_ENVELOPE.items():
        if name in msg and not _is(msg[name], kind):
            return failed(f"{name}: {kind}", f"{name}: {json_type(msg[name])}")
    if msg["message_type"] not in MESSAGE_TYPES:
        return failed("message_type one of " + ", ".join(MESSAGE_TYPES),
                      repr(msg["message_type"]))  # fmt: skip
    return passed(expected)


def protocol_version(msg: Any) -> Verdict:
    """§4.1 semantic versioning: a v1.0 peer speaks major 1 ("1.0", "1.1", ...)."""
    expected = 'protocol_version "1.x"'
    version = msg.get("protocol_version") if isinstance(msg, dict) else None
    if not isinstance(version, str):
        return failed(expected, f"protocol_version: {json_type(version)}")
    major, _, minor = version.partition(".")
    if major != "1" or not minor.isdigit():
        return failed(expected, repr(version))
    return passed(expected, repr(version))


def correlation(reply: Any, message_id: str) -> Verdict:
    """DESIGN §3: a reply's ``correlation_id`` is the ``message_id`` it answers."""
    expected = f"correlation_id = {message_id}"
    if not isinstance(reply, dict) or "correlation_id" not in reply:
        return failed(expected, "correlation_id missing")
    got = reply["correlation_id"]
    if got != message_id:
        return failed(expected, f"correlation_id = {got!r}")
    return passed(expected)


# ---------------------------------------------------------------- §9.1 mandatory packets


def _result_data(reply: Any) -> tuple[dict[str, Any] | None, Verdict | None]:
    """The ``payload.data`` of a successful RESULT, or why the reply is not one."""
    if not isinstance(reply, dict):
        return None, failed("a RESULT", f"a JSON {json_type(reply)}")
    kind = reply.get("message_type")
    payload = reply.get("payload")
    if kind == "error" and isinstance(payload, dict):
        return None, failed("a RESULT", f"ERROR {payload.get('error_code')}: "
                                        f"{payload.get('error_message')}")  # fmt: skip
    if kind != "result" or not isinstance(payload, dict):
        return None, failed("a RESULT", f"message_type {kind!r}")
    if payload.get("status") != "success":
        return None, failed('payload.status "success"', repr(payload.get("status")))
    data = payload.get("data")
    if not isinstance(data, dict):
        return None, failed("payload.data: object", f"payload.data: {json_type(data)}")
    return data, None


def _fields(data: Mapping[str, Any], wanted: Mapping[str, str], prefix: str) -> Verdict | None:
    for name, kind in wanted.items():
        if name not in data:
            return failed(f"{prefix}{name}: {kind}", f"{prefix}{name} missing")
        if not _is(data[name], kind):
            return failed(f"{prefix}{name}: {kind}", f"{prefix}{name}: {json_type(data[name])}")
    return None


# §9.1.1 expected response fields.
PING_FIELDS: Final[Mapping[str, str]] = {
    "reactor_id": "string",
    "response_time_ms": "number",
    "implementation": "string",
}


def ping(reply: Any, echo: str) -> Verdict:
    """§9.1.1: ``pong: true``, the echo returned, reactor_id, response_time_ms,
    implementation."""
    expected = "§9.1.1 pong: true, echo_data, reactor_id, response_time_ms, implementation"
    data, bad = _result_data(reply)
    if bad is not None:
        return bad
    assert data is not None
    if data.get("pong") is not True:
        return failed("data.pong: true", "data.pong missing" if "pong" not in data
                      else f"data.pong = {data['pong']!r}")  # fmt: skip
    if data.get("echo_data") != echo:
        return failed(f"data.echo_data = {echo!r}", f"data.echo_data = {data.get('echo_data')!r}")
    return _fields(data, PING_FIELDS, "data.") or passed(expected)


# §9.1.2 expected response: the summary and the four sections asked for with
# include_metrics and detail_level "full".
HEALTH_FIELDS: Final[Mapping[str, str]] = {
    "status": "string",
    "overall_health_score": "number",
    "subsystem_health": "object",
    "performance_indicators": "object",
    "resource_status": "object",
}


def health(reply: Any) -> Verdict:
    """§9.1.2: status, overall_health_score in 0-1, subsystem_health,
    performance_indicators, resource_status."""
    expected = "§9.1.2 status, overall_health_score 0-1, subsystem_health, " \
        "performance_indicators, resource_status"  # fmt: skip
    data, bad = _result_data(reply)
    if bad is not None:
        return bad
    assert data is not None
    missing = _fields(data, HEALTH_FIELDS, "data.")
    if missing is not None:
        return missing
    if data["status"] not in HEALTH_STATUSES:
        return failed("data.status one of " + ", ".join(HEALTH_STATUSES), repr(data["status"]))
    score = data["overall_health_score"]
    if not 0.0 <= score <= 1.0:
        return failed("data.overall_health_score in 0-1", repr(score))
    return passed(expected)


# cf:introspect has no response schema in the spec (§5.2.1 "capability discovery");
# these are what a router needs to learn from it.
INTROSPECT_FIELDS: Final[Mapping[str, str]] = {
    "specializations": "array",
    "supported_packets": "array",
}


def introspect(reply: Any) -> Verdict:
    """§5.2.1 capability discovery: specializations and supported_packets (each with group
    and element), including the three mandatory cf elements."""
    expected = "specializations, supported_packets listing cf:ping, cf:health, cf:introspect"
    data, bad = _result_data(reply)
    if bad is not None:
        return bad
    assert data is not None
    missing = _fields(data, INTROSPECT_FIELDS, "data.")
    if missing is not None:
        return missing
    seen = set()
    for index, item in enumerate(data["supported_packets"]):
        if not isinstance(item, dict) or not isinstance(item.get("group"), str) \
                or not isinstance(item.get("element"), str):  # fmt: skip
            return failed("supported_packets[]: {group, element}",
                          f"supported_packets[{index}] = {item!r:.80}")  # fmt: skip
        seen.add(f"{item['group']}:{item['element']}")
    lacking = [k for k in ("cf:ping", "cf:health", "cf:introspect") if k not in seen]
    if lacking:
        return failed(expected, "supported_packets lacks " + ", ".join(lacking))
    return passed(expected)


def within(elapsed_ms: float, limit_ms: float) -> Verdict:
    """§12.3.1 response_time_limits."""
    expected = f"reply within {limit_ms:g} ms"
    if elapsed_ms > limit_ms:
        return failed(expected, f"{elapsed_ms:.0f} ms")
    return passed(expected, f"{elapsed_ms:.1f} ms")


# ---------------------------------------------------------------- §10 error codes


def error_reply(reply: Any, code: str, field: str | None = None) -> Verdict:
    """An ERROR with ``code``, §10.1 category and retryability, and the §4.2.3/§10.2
    payload shape: error_code, error_category, error_message strings, error_details
    object, retry_possible boolean; a PF002 names the bad field in error_details
    {field, expected_type, received_type, validation_rule}. ``field`` is the leaf name the
    bad field's path must end with (implementations may spell the path differently)."""
    category, retryable = ERROR_CLASSES[code]
    expected = f"ERROR {code}"
    if not isinstance(reply, dict):
        return failed(expected, f"a JSON {json_type(reply)}")
    payload = reply.get("payload")
    if reply.get("message_type") != "error" or not isinstance(payload, dict):
        what = reply.get("message_type")
        if what == "result" and isinstance(payload, dict):
            what = f"result ({payload.get('status')})"
        return failed(expected, f"message_type {what!r}")
    if payload.get("error_code") != code:
        return failed(expected, f"ERROR {payload.get('error_code')!r}: "
                                f"{payload.get('error_message')!r:.100}")  # fmt: skip
    shape = _fields(payload, {"error_category": "string", "error_message": "string",
                              "error_details": "object", "retry_possible": "boolean"},
                    "payload.")  # fmt: skip
    if shape is not None:
        return shape
    if payload["error_category"] != category:
        return failed(f"payload.error_category = {category!r}", repr(payload["error_category"]))
    if payload["retry_possible"] is not retryable:
        return failed(f"payload.retry_possible = {str(retryable).lower()}",
                      str(payload["retry_possible"]).lower())  # fmt: skip
    if code == "PF002":
        details = payload["error_details"]
        for name in PF002_DETAILS:
            if not isinstance(details.get(name), str):
                return failed("error_details {" + ", ".join(PF002_DETAILS) + "} strings",
                              f"error_details.{name}: {json_type(details.get(name))}")  # fmt: skip
        if field is not None:
            leaf = details["field"].rsplit(".", 1)[-1]
            if leaf != field and not details["field"].endswith(field):
                return failed(f"error_details.field naming {field!r}",
                              repr(details["field"]))  # fmt: skip
    return passed(expected + (f" naming {field}" if field else ""))


# ---------------------------------------------------------------- chemistry (§3.3, App. B)


def affinity_matrix(matrix: Any) -> Verdict:
    """§3.3 within §12.3.1's 0.001, cell by cell, for every group × specialization."""
    expected = f"§3.3 matrix within {MATRIX_TOLERANCE}"
    if not isinstance(matrix, dict):
        return failed(expected, f"matrix: {json_type(matrix)}")
    for group, row in STANDARD_MATRIX.items():
        got_row = matrix.get(group)
        if not isinstance(got_row, dict):
            return failed(expected, f"row {group} missing")
        for spec, want in row.items():
            got = got_row.get(spec)
            if not isinstance(got, int | float) or isinstance(got, bool):
                return failed(f"{group}/{spec} = {want}", f"{group}/{spec}: {json_type(got)}")
            if abs(got - want) > MATRIX_TOLERANCE:
                return failed(f"{group}/{spec} = {want}", f"{group}/{spec} = {got}")
    return passed(expected)


def properties(props: Any, group: str, priority: int, dependency_count: int) -> Verdict:
    """DESIGN §4's reading of the Appendix B calculator, within 0.001."""
    want = chemical_properties(group, priority, dependency_count)
    expected = (f"{group} p{priority}: reactivity {want.reactivity}, ionization_energy "
                f"{want.ionization_energy}, atomic_radius {want.atomic_radius}, "
                f"electronegativity {want.electronegativity}")  # fmt: skip
    if not isinstance(props, dict):
        return failed(expected, f"chemical_properties: {json_type(props)}")
    for name in ("reactivity", "ionization_energy", "atomic_radius", "electronegativity"):
        got = props.get(name)
        value = getattr(want, name)
        if not isinstance(got, int | float) or abs(got - value) > MATRIX_TOLERANCE:
            return failed(f"{name} = {value}", f"{name} = {got!r}")
    return passed(expected)


GROUPS_KNOWN: Final = tuple(GROUP_PROPERTIES)


# ---------------------------------------------------------------- §4.2.5 / §8 discovery


def discover_response(reply: Any, *, role: str, reactor_id: str | None = None,
                      accepted: bool | None = None) -> Verdict:  # fmt: skip
    """A DISCOVER ``response``: a gateway's lists its registry (``reactors``), a reactor's
    describes itself (``reactor_info``). ``accepted``/``reactor_id`` check an announce's
    acknowledgement and that the registry now lists the announced reactor."""
    expected = 'DISCOVER discovery_type "response"'
    if not isinstance(reply, dict):
        return failed(expected, f"a JSON {json_type(reply)}")
    payload = reply.get("payload")
    if reply.get("message_type") != "discover" or not isinstance(payload, dict):
        what = reply.get("message_type")
        if what == "error" and isinstance(payload, dict):
            what = f"error {payload.get('error_code')}: {payload.get('error_message')}"
        return failed(expected, f"{what}")
    if payload.get("discovery_type") != "response":
        return failed(expected, f"discovery_type {payload.get('discovery_type')!r}")
    if accepted is not None and payload.get("accepted") is not accepted:
        return failed(f"payload.accepted = {str(accepted).lower()}",
                      repr(payload.get("accepted")))  # fmt: skip
    if role == "reactor":
        info = payload.get("reactor_info")
        if not isinstance(info, dict) or not isinstance(info.get("reactor_id"), str):
            return failed("payload.reactor_info.reactor_id: string",
                          f"reactor_info: {json_type(info)}")  # fmt: skip
        return passed(expected + " with reactor_info")
    if accepted is None:
        reactors = payload.get("reactors")
        if not isinstance(reactors, list):
            return failed("payload.reactors: array", f"payload.reactors: {json_type(reactors)}")
        if reactor_id is not None and not any(
            isinstance(r, dict) and r.get("reactor_id") == reactor_id for r in reactors
        ):
            return failed(f"payload.reactors lists {reactor_id}", f"{len(reactors)} reactors, "
                                                                  "not it")  # fmt: skip
        return passed(expected + " listing the registry")
    return passed(expected + f" accepted={str(accepted).lower()}")


def guess_role(reply: Any) -> str | None:
    """A DISCOVER ``query`` answer tells the roles apart: a reactor describes itself
    (``reactor_info``), a gateway lists reactors (``reactors``)."""
    if not isinstance(reply, dict) or reply.get("message_type") != "discover":
        return None
    payload = reply.get("payload")
    if not isinstance(payload, dict):
        return None
    if isinstance(payload.get("reactors"), list):
        return "gateway"
    if isinstance(payload.get("reactor_info"), dict):
        return "reactor"
    return None


# A gateway that keeps each principal's packet ids apart (docs/interop.md, "Packet ids")
# may forward ``<id>~<16 hex>``: the client's id, namespaced for the reactor's window.
_NAMESPACED = re.compile(r"~[0-9a-f]{16}")


def same_packet(forwarded: Any, packet_id: str) -> bool:
    """Whether a forwarded packet id is the client's: the same, or namespaced per sender."""
    if forwarded == packet_id:
        return True
    return (
        isinstance(forwarded, str)
        and forwarded.startswith(packet_id)
        and _NAMESPACED.fullmatch(forwarded[len(packet_id) :]) is not None
    )


def forwarded_submit(msg: Any, client_message_id: str, packet_id: str,
                     timeout_ms: int) -> Verdict:  # fmt: skip
    """Wire example 2: the SUBMIT a gateway forwards to a reactor correlates to the client's
    message, keeps the packet id, never extends ``timeout_ms``, and carries the
    ``chemical_properties`` it computed."""
    expected = (f"SUBMIT correlation_id = {client_message_id}, packet {packet_id}, "
                f"timeout_ms <= {timeout_ms}, chemical_properties")  # fmt: skip
    if not isinstance(msg, dict) or msg.get("message_type") != "submit":
        return failed(
            expected, f"{json_type(msg)} {msg.get('message_type') if isinstance(msg, dict) else ''}"
        )
    verdict = correlation(msg, client_message_id)
    if not verdict.ok:
        return verdict
    payload = msg.get("payload")
    packet = payload.get("packet") if isinstance(payload, dict) else None
    if not isinstance(packet, dict):
        return failed("payload.packet: object", f"payload.packet: {json_type(packet)}")
    if not same_packet(packet.get("id"), packet_id):
        return failed(f"payload.packet.id = {packet_id!r}", repr(packet.get("id")))
    forwarded = packet.get("timeout_ms")
    if forwarded is not None and (not isinstance(forwarded, int) or forwarded > timeout_ms):
        return failed(f"payload.packet.timeout_ms <= {timeout_ms}", repr(forwarded))
    if not isinstance(packet.get("chemical_properties"), dict):
        return failed("payload.packet.chemical_properties: object",
                      f"payload.packet.chemical_properties: "
                      f"{json_type(packet.get('chemical_properties'))}")  # fmt: skip
    return passed(expected)
