"""The six PFAP message types (§4.2) as typed wire structs, and the framing rules of DESIGN §3.

Frames are decoded and validated exactly once, here; what comes out is a typed message or
a ``PacketFlowError`` (PF001 for a bad frame, PF002 naming the JSON path of a bad field).
Packet and result ``data`` stay ``msgspec.Raw`` so a relay forwards the bytes it received
without decoding them.
"""

from __future__ import annotations

import json
import re
import sys
from typing import Annotated, Any, Final, Literal, TypeAlias

import msgspec
from msgspec import UNSET, Raw, UnsetType

from .chemistry import Group
from .errors import CATALOGUE, InvalidMessage, InvalidPacket, PacketFlowError, invalid_field
from .jsonscan import non_finite_path, within_depth
from .limits import MAX_BATCH as MAX_BATCH  # re-exported: servers import them from here
from .limits import (
    MAX_DEPENDENCIES,
    MAX_DURATION_MS,
    MAX_ECHO_CHARS,
    MAX_ELEMENT_CHARS,
    MAX_ID_CHARS,
    MAX_JSON_DEPTH,
    MAX_SEQUENCE_ID,
    MAX_TIMESTAMP_MS,
    MAX_VERSION_CHARS,
)
from .limits import MAX_FRAME_BYTES as MAX_FRAME_BYTES
from .packets import PACKET_ID_MAX_LEN, validate_element, validate_packet_id

PROTOCOL_VERSION: Final = "1.0"
SUPPORTED_MAJOR: Final = "1"

EMPTY_OBJECT: Final = Raw(b"{}")

Priority = Annotated[int, msgspec.Meta(ge=1, le=10)]
PositiveInt = Annotated[int, msgspec.Meta(gt=0)]
NonNegativeInt = Annotated[int, msgspec.Meta(ge=0)]
# Bounded forms of the envelope's and packet's strings and numbers (protocol/limits.py).
Id = Annotated[str, msgspec.Meta(max_length=MAX_ID_CHARS)]
Version = Annotated[str, msgspec.Meta(max_length=MAX_VERSION_CHARS)]
ElementName = Annotated[str, msgspec.Meta(max_length=MAX_ELEMENT_CHARS)]
PacketRef = Annotated[str, msgspec.Meta(max_length=PACKET_ID_MAX_LEN)]
TimestampMs = Annotated[int, msgspec.Meta(ge=0, le=MAX_TIMESTAMP_MS)]
DurationMs = Annotated[int, msgspec.Meta(ge=0, le=MAX_DURATION_MS)]
TimeoutMs = Annotated[int, msgspec.Meta(gt=0, le=MAX_DURATION_MS)]
SequenceId = Annotated[int, msgspec.Meta(ge=0, le=MAX_SEQUENCE_ID)]
Unit = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]


# ---------------------------------------------------------------- packets (§4.2.1)


class ChemicalPropertiesWire(msgspec.Struct, omit_defaults=True):
    reactivity: float
    ionization_energy: float
    atomic_radius: float
    electronegativity: float


# Wire structs hold strings, numbers, Raw bytes, other wire structs and plain JSON values,
# never a reference back to themselves: with gc=False they carry no GC header and never
# trigger or join a collection (100,000 queued packets are 300,000 structs).


class Packet(msgspec.Struct, omit_defaults=True, gc=False):
    group: Group
    element: ElementName
    id: str | None = None
    version: Version = PROTOCOL_VERSION
    data: Raw = EMPTY_OBJECT
    priority: Priority | None = None
    timeout_ms: TimeoutMs | None = None
    # A tuple: most packets have none, and () is shared where [] would be one list each.
    dependencies: Annotated[tuple[PacketRef, ...], msgspec.Meta(max_length=MAX_DEPENDENCIES)] = ()
    metadata: dict[str, Any] | None = None
    chemical_properties: ChemicalPropertiesWire | None = None


class RoutingPreferences(msgspec.Struct, omit_defaults=True):
    """§6.3.1 client hints."""

    preferred_implementation: str | None = None
    minimum_affinity: Unit | None = None
    avoid_reactors: list[str] = msgspec.field(default_factory=list)
    affinity_boost: Annotated[float, msgspec.Meta(ge=-1.0, le=1.0)] = 0.0
    locality_preference: str | None = None


class SubmitPayload(msgspec.Struct, omit_defaults=True, gc=False):
    packet: Packet
    routing_preferences: RoutingPreferences | None = None


# ---------------------------------------------------------------- results and errors


class ResultPayload(msgspec.Struct, omit_defaults=True, kw_only=True):
    """§4.2.2; ``status`` is "success", or "event" for ED deliveries (DESIGN §10).
    ``packet_id`` may be absent: §9.1.1's expected ping response has none."""

    packet_id: str | None = None
    status: str
    data: Raw = EMPTY_OBJECT
    reactor_info: dict[str, Any] | None = None
    chemical_analysis: dict[str, Any] | None = None
    processing_metadata: dict[str, Any] | None = None
    processed_at: int | None = None


class ErrorPayload(msgspec.Struct):
    """DESIGN §6: §4.2.3 merged with §10.2; every key is always present on the wire."""

    error_code: str
    packet_id: str | None = None
    error_category: str | None = None
    error_message: str = ""
    error_details: dict[str, Any] = msgspec.field(default_factory=dict)
    error_context: dict[str, Any] = msgspec.field(default_factory=dict)
    reactor_info: dict[str, Any] | None = None
    recovery_suggestions: list[str] = msgspec.field(default_factory=list)
    recovery_options: list[dict[str, Any]] = msgspec.field(default_factory=list)
    retry_possible: bool = False
    retry_delay_ms: int | None = None


# ---------------------------------------------------------------- heartbeat (§4.2.4, §8.3)


class HealthStatus(msgspec.Struct):
    status: str = "healthy"
    load_factor: float = 0.0
    queue_depth: int = 0
    in_flight: int = 0
    memory_usage_mb: float | None = None
    cpu_usage_percent: float | None = None
    network_connections: int | None = None
    uptime_seconds: float | None = None
    last_error: str | None = None


# The HEARTBEAT's figures are typed structs that the reactor builds and the gateway's
# health rules read, so sender and reader cannot drift apart (a reader once looked for a
# memory figure under a key no reactor sent). Wire names are the spec's; every figure is
# optional, since §4.2.4 and §8.3 show them in separate examples.


class PerformanceMetrics(msgspec.Struct, omit_defaults=True):
    """§4.2.4 performance_metrics. ``error_rate`` counts only the reactor's own failures
    (``errors.counts_against_reactor``), never a client's bad input."""

    packets_processed: int | None = None
    avg_processing_time_ms: float | None = None
    p99_processing_time_ms: float | None = None
    error_rate: float | None = None
    throughput_pps: float | None = None
    errors_by_code: dict[str, int] | None = None  # packetflow's own addition


class ChemicalMetrics(msgspec.Struct, omit_defaults=True):
    """§4.2.4 chemical_metrics (§9.1.3)."""

    affinity_effectiveness: float | None = None
    molecular_participation: int | None = None
    optimization_count: int | None = None
    bond_success_rate: float | None = None
    bonds_observed: int | None = None  # packetflow's own addition
    packets_observed: int | None = None  # packetflow's own addition


class ResourceUtilization(msgspec.Struct, omit_defaults=True):
    """§8.3 resource_utilization, in percent (0-100). ``memory_percent`` is what §9.4.1
    resource_exhaustion is judged on."""

    cpu_percent: float | None = None
    memory_percent: float | None = None
    disk_usage_percent: float | None = None
    disk_io_percent: float | None = None
    network_io_percent: float | None = None


class LoadMetrics(msgspec.Struct, omit_defaults=True):
    """§8.3 load_metrics."""

    current_load_factor: float | None = None
    queue_depths: dict[str, int] | None = None
    processing_rates_pps: dict[str, float] | None = None
    resource_utilization: ResourceUtilization | None = None


class MaintenanceWindow(msgspec.Struct, omit_defaults=True):
    """§8.3 ``scheduled_maintenance`` when not null (protocol/capacity.py): epoch ms;
    ``end_at`` absent or null = until further notice."""

    start_at: TimestampMs | None = None
    end_at: TimestampMs | None = None
    reason: Annotated[str, msgspec.Meta(max_length=256)] | None = None


class CapacityAdjustments(msgspec.Struct, omit_defaults=True):
    """§8.3 ``capacity_adjustments``: what the reactor says of its capacity now; the
    gateway routes and queues by ``protocol.capacity.effective_capacity`` of it.
    ``scheduled_maintenance`` may also be a bare start time (epoch ms) or an ISO-8601
    string (liberal in what we accept)."""

    temporary_capacity_boost: float | None = None
    scheduled_maintenance: (
        MaintenanceWindow | TimestampMs | Annotated[str, msgspec.Meta(max_length=64)] | None
    ) = None
    # At most 32 names of 64 characters: a constraint list is a handful of words. null is
    # read as none.
    resource_constraints: (
        Annotated[list[Annotated[str, msgspec.Meta(max_length=64)]], msgspec.Meta(max_length=32)]
        | None
    ) = msgspec.field(default_factory=list)


class HeartbeatPayload(msgspec.Struct):
    # §8.3's load report has no reactor_id: the sender is then the envelope's source_id.
    reactor_id: Id | None = None
    implementation: str = "python"
    specializations: list[str] = msgspec.field(default_factory=list)
    health_status: HealthStatus | None = None
    performance_metrics: PerformanceMetrics | None = None
    chemical_metrics: ChemicalMetrics | None = None
    capabilities: list[str] = msgspec.field(default_factory=list)
    load_metrics: LoadMetrics | None = None
    capacity_adjustments: CapacityAdjustments | None = None


# ---------------------------------------------------------------- discover (§4.2.5, §8)


class ReactorInfo(msgspec.Struct, omit_defaults=True):
    reactor_id: Id
    implementation: str = "python"
    version: str = "1.0.0"
    specializations: list[str] = msgspec.field(default_factory=list)
    max_capacity: float = 0.0
    current_load: float = 0.0
    endpoints: dict[str, str] = msgspec.field(default_factory=dict)
    locality: str | None = None
    health: str | None = None


class SupportedPacket(msgspec.Struct, omit_defaults=True):
    group: Group
    element: str
    priority_range: tuple[int, int] = (1, 10)


DiscoveryType = Literal["announce", "query", "response", "multicast_announce", "withdraw"]


class DiscoverPayload(msgspec.Struct, omit_defaults=True):
    discovery_type: DiscoveryType
    reactor_info: ReactorInfo | None = None
    supported_packets: list[SupportedPacket] = msgspec.field(default_factory=list)
    # §8.2's object or §4.2.4's ["group:element", ...] list; protocol.announce reads both.
    capabilities: dict[str, Any] | list[str] | None = None
    chemical_characteristics: dict[str, Any] | None = None
    operational_constraints: dict[str, Any] | None = None
    # `response`: the registry (§4.2.5); `query`: optional filters.
    reactors: list[dict[str, Any]] | None = None
    query: dict[str, Any] | None = None
    # §8.1.2 multicast
    multicast_group: str | None = None
    port: int | None = None
    announcement: dict[str, Any] | None = None
    accepted: bool | None = None
    # DESIGN §8 extension: an announce carries the token the gateway must present when it
    # dials the reactor; other implementations ignore it.
    dial_token: str | None = None


# ---------------------------------------------------------------- coordinate (§4.2.6, §7)

CoordinationType = Literal[
    "initiate", "validate", "reserve", "execute", "progress", "complete", "abort",
    "optimize", "status", "error",
]  # fmt: skip


class CoordinatePayload(msgspec.Struct, omit_defaults=True):
    coordination_type: CoordinationType
    molecule_id: str | None = None
    molecular_structure: dict[str, Any] | None = None
    execution_state: dict[str, Any] | None = None
    coordination_metadata: dict[str, Any] | None = None
    validation_checks: list[str] | None = None
    validation_results: list[dict[str, Any]] | None = None
    resource_reservations: list[dict[str, Any]] | None = None
    execution_plan: dict[str, Any] | None = None
    optimization_type: str | None = None
    adjustments: list[dict[str, Any]] | None = None
    locality_adjustments: list[dict[str, Any]] | None = None
    parallel_groups: list[dict[str, Any]] | None = None
    expected_improvement: dict[str, Any] | None = None
    apply: bool | None = None
    estimated_completion: int | None = None
    performance_metrics: dict[str, Any] | None = None
    results: dict[str, Any] | None = None
    status: str | None = None
    error: dict[str, Any] | None = None
    # initiate/execute: false asks for no progress pushes, only the acknowledgement and
    # the final complete/abort (DESIGN §7 pushes progress on every change by default).
    progress_updates: bool | None = None


# ---------------------------------------------------------------- the envelope (§4.1)


class Envelope(
    msgspec.Struct, tag_field="message_type", kw_only=True, omit_defaults=True, gc=False
):
    """§4.1 base fields. ``destination_id`` is UNSET when absent and None for broadcast."""

    protocol_version: Version
    message_id: Id
    timestamp: TimestampMs
    source_id: Id
    sequence_id: SequenceId | None = None
    destination_id: Id | UnsetType | None = UNSET
    correlation_id: Id | None = None
    ttl: DurationMs | None = None
    priority: Priority | None = None
    routing_hints: dict[str, Any] | None = None


class Submit(Envelope, tag="submit"):
    payload: SubmitPayload


class Result(Envelope, tag="result"):
    payload: ResultPayload


class Error(Envelope, tag="error"):
    payload: ErrorPayload


class Heartbeat(Envelope, tag="heartbeat"):
    payload: HeartbeatPayload


class Discover(Envelope, tag="discover"):
    payload: DiscoverPayload


class Coordinate(Envelope, tag="coordinate"):
    payload: CoordinatePayload


Message: TypeAlias = Submit | Result | Error | Heartbeat | Discover | Coordinate
MESSAGE_TYPES: Final = ("submit", "result", "error", "heartbeat", "discover", "coordinate")

_decoder: Final = msgspec.json.Decoder(Message)
_raw_list_decoder: Final = msgspec.json.Decoder(list[Raw])
_encoder: Final = msgspec.json.Encoder()


_NULL: Final = Raw(b"null")


class _Ids(msgspec.Struct):
    """The ids of a message that failed validation, read leniently to correlate the ERROR.

    Every level is Raw so a bad value elsewhere (``1e400`` in the data) cannot stop the
    ids from being read."""

    message_id: Raw = _NULL
    payload: Raw = _NULL


class _PayloadIds(msgspec.Struct):
    packet: Raw = _NULL
    packet_id: Raw = _NULL


class _PacketIds(msgspec.Struct):
    id: Raw = _NULL


_ids_decoder: Final = msgspec.json.Decoder(_Ids)
_payload_ids_decoder: Final = msgspec.json.Decoder(_PayloadIds)
_packet_ids_decoder: Final = msgspec.json.Decoder(_PacketIds)
_str_decoder: Final = msgspec.json.Decoder(str)
_LENIENT_ERRORS: Final = (msgspec.DecodeError, msgspec.ValidationError, RecursionError,
                          UnicodeError)  # fmt: skip

# msgspec's ValidationError texts; see msgspec/_core.c. We turn them into DESIGN §3's
# {field, expected_type, received_type, validation_rule}.
_AT = re.compile(r" - at `\$\.?(?P<path>[^`]*)`$")
_EXPECTED_GOT = re.compile(r"^Expected `(?P<exp>[^`]+)`, got `(?P<got>[^`]+)`")
_CONSTRAINT = re.compile(r"^Expected `(?P<exp>[^`]+)` (?P<rule>.+)$")
_MISSING = re.compile(r"^Object missing required field `(?P<name>[^`]+)`")
_INVALID_VALUE = re.compile(r"^Invalid (?:enum )?value (?P<val>.+)$")
_OUT_OF_RANGE: Final = "Number out of range"


def non_finite_number(path: str) -> InvalidPacket:
    """PF002 for a number no float can hold (1e400): JSON has no infinities (DESIGN §3)."""
    return invalid_field(path, "finite number", "NaN, Infinity or beyond float range",
                         "finite_number")  # fmt: skip


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def validation_error(exc: msgspec.ValidationError, raw: bytes | None = None) -> PacketFlowError:
    """Map a msgspec ValidationError to PF002 (or PF001 when the whole frame is wrong).

    ``raw``, the JSON that failed, lets a number out of float range be named by its path:
    msgspec reports only ``[...]`` for it inside a free-form object."""
    text = str(exc)
    at = _AT.search(text)
    path = at.group("path") if at else ""
    head = text[: at.start()] if at else text
    path = re.sub(r"\[(\d+)\]", r"[\1]", path)
    if head == _OUT_OF_RANGE:
        found = non_finite_path(raw, "") if raw is not None else None
        return non_finite_number(found or path.replace("[...]", "") or "$")
    if m := _MISSING.match(head):
        field = _join(path, m.group("name"))
        return InvalidPacket(
            f"Missing required field '{field}'",
            field=field, expected_type="present", received_type="missing",
            validation_rule="required_field",
        )  # fmt: skip
    if m := _EXPECTED_GOT.match(head):
        expected, received = m.group("exp").replace(" | null", ""), m.group("got")
        if not path:
            return InvalidMessage(
                f"Invalid message format: expected a JSON {expected}, got {received}",
                field="$", expected_type=expected, received_type=received,
                validation_rule="envelope_type",
            )  # fmt: skip
        return InvalidPacket(
            f"Invalid field '{path}': expected {expected}, got {received}",
            field=path, expected_type=expected, received_type=received,
            validation_rule="type",
        )  # fmt: skip
    if m := _CONSTRAINT.match(head):
        return InvalidPacket(
            f"Invalid field '{path}': must be {m.group('exp')} {m.group('rule')}",
            field=path, expected_type=f"{m.group('exp')} {m.group('rule')}",
            received_type="out of range", validation_rule="range",
        )  # fmt: skip
    if m := _INVALID_VALUE.match(head):
        value = _clip(m.group("val"))
        return InvalidPacket(
            f"Invalid value {value} for '{path}'",
            field=path, expected_type=_ENUM_HINTS.get(path.rsplit(".", 1)[-1], "enum"),
            received_type=value, validation_rule="enum",
        )  # fmt: skip
    return InvalidPacket(f"Invalid message: {_clip(text)}", field=path or "$",
                         validation_rule="schema")  # fmt: skip


_ENUM_HINTS: Final = {
    "message_type": "one of " + ", ".join(MESSAGE_TYPES),
    "group": "one of cf, df, ed, co, mc, rm",
    "discovery_type": "one of announce, query, response, multicast_announce, withdraw",
    "coordination_type": "one of initiate, validate, reserve, execute, progress, complete, "
    "abort, optimize, status, error",
}


# Element names already found valid: a set lookup instead of a regex per SUBMIT. Bounded,
# since names come from the wire.
_VALID_ELEMENTS: set[str] = set()
_VALID_ELEMENTS_MAX: Final = 4096
_OPEN_BRACE: Final = ord("{")


def _check(msg: Message) -> None:
    """Rules msgspec's types cannot express (DESIGN §3-§4)."""
    version = msg.protocol_version
    if version != PROTOCOL_VERSION and version.split(".", 1)[0] != SUPPORTED_MAJOR:
        raise InvalidMessage(
            f"Unsupported protocol_version {msg.protocol_version!r}; this node speaks "
            f"{PROTOCOL_VERSION}",
            field="protocol_version", expected_type=f"\"{SUPPORTED_MAJOR}.x\"",
            received_type=repr(msg.protocol_version), validation_rule="protocol_major",
        )  # fmt: skip
    if isinstance(msg, Submit):
        packet = msg.payload.packet
        if packet.element not in _VALID_ELEMENTS:
            validate_element(packet.element)
            if len(_VALID_ELEMENTS) < _VALID_ELEMENTS_MAX:
                _VALID_ELEMENTS.add(packet.element)
        if packet.id is not None:
            validate_packet_id(packet.id)
        if memoryview(packet.data)[0] != _OPEN_BRACE:
            first = bytes(memoryview(packet.data)[:1])
            raise InvalidPacket(
                "Invalid field 'payload.packet.data': expected object",
                field="payload.packet.data", expected_type="object",
                received_type=_json_kind(first), validation_rule="type",
            )  # fmt: skip


def _json_kind(first: bytes) -> str:
    return {b"[": "array", b'"': "str", b"n": "null", b"t": "bool", b"f": "bool"}.get(
        first, "number"
    )


def decode_one(raw: bytes | Raw) -> Message:
    """Decode and validate one envelope. Raises InvalidMessage (PF001) or InvalidPacket (PF002)."""
    try:
        msg: Message = _decoder.decode(raw)
    except msgspec.ValidationError as exc:
        raise validation_error(exc, bytes(raw)) from None
    except (msgspec.DecodeError, UnicodeError) as exc:
        # NaN and Infinity are not JSON, but some encoders write them: name where (PF002).
        data = bytes(raw)
        if (b"NaN" in data or b"Infinity" in data) and (path := non_finite_path(data, "")):
            raise non_finite_number(path) from None
        raise InvalidMessage(
            f"Invalid JSON format: {exc}", field="$", expected_type="UTF-8 JSON object",
            received_type="malformed JSON", validation_rule="json",
        ) from None  # fmt: skip
    except RecursionError:
        raise _too_deep() from None
    _check(msg)
    return msg


Decoded: TypeAlias = "Message | FrameError"


class FrameError(msgspec.Struct):
    """A frame (or batch element) that failed, with what is known to correlate its ERROR."""

    error: Any  # PacketFlowError
    message_id: str | None = None
    packet_id: str | None = None


def _frame_error(err: PacketFlowError, raw: bytes | Raw | None) -> FrameError:
    message_id = packet_id = None
    if raw is not None:
        data = bytes(raw)
        if err.validation_rule == "finite_number" and (b"NaN" in data or b"Infinity" in data):
            # Not JSON to msgspec; re-encoded without the literals the ids become readable.
            data = _without_non_finite(data)
        message_id, packet_id = _lenient_ids(data)
    if raw is not None and err.validation_rule == "range" and err.field:
        value = _value_at(raw, err.field)
        if value is not _MISSING_VALUE:
            err.received_type = _describe(value)
    return FrameError(err, message_id, packet_id)


def _without_non_finite(data: bytes) -> bytes:
    """``data`` with NaN and Infinity literals read as null; unchanged if it is not that."""
    try:
        return json.dumps(json.loads(data, parse_constant=lambda _: None)).encode()
    except (ValueError, RecursionError):
        return data


def _lenient_ids(raw: bytes | Raw) -> tuple[str | None, str | None]:
    """(message_id, packet id) of a bad envelope, where they can be read at all."""
    try:
        ids = _ids_decoder.decode(raw)
    except _LENIENT_ERRORS:
        return None, None
    message_id = _echoable(ids.message_id, MAX_ID_CHARS)
    packet_id = None
    if ids.payload is not _NULL:
        try:
            payload = _payload_ids_decoder.decode(ids.payload)
        except _LENIENT_ERRORS:
            return message_id, None
        packet_id = _echoable(payload.packet_id, PACKET_ID_MAX_LEN)
        if payload.packet is not _NULL:
            try:
                packet_id = _echoable(_packet_ids_decoder.decode(payload.packet).id,
                                      PACKET_ID_MAX_LEN)  # fmt: skip
            except _LENIENT_ERRORS:
                packet_id = None
    return message_id, packet_id


def _echoable(raw: Raw, limit: int) -> str | None:
    """An id from a bad message, if it is one an ERROR may echo back: a string of sane
    length (a 900 KB ``message_id`` is not correlated, DESIGN §3)."""
    if len(raw) > 4 * limit + 2:  # \uXXXX escapes: 6 bytes a char at most
        return None
    try:
        value = _str_decoder.decode(raw)
    except _LENIENT_ERRORS:
        return None
    return value if 0 < len(value) <= limit else None


def _clip(text: str) -> str:
    """A bad value quoted in an ERROR, never longer than MAX_ECHO_CHARS."""
    return text if len(text) <= MAX_ECHO_CHARS else text[: MAX_ECHO_CHARS - 3] + "..."


def _describe(value: Any) -> str:
    """A bad value for ``error_details.received_type``, never longer than MAX_ECHO_CHARS."""
    if isinstance(value, str) and len(value) > MAX_ECHO_CHARS // 2:
        return f"str of {len(value)} chars"
    if isinstance(value, list | dict):
        return f"{type(value).__name__} of {len(value)} items"
    return _clip(f"{type(value).__name__} {value!r}")


_MISSING_VALUE: Final = object()


def _value_at(raw: bytes | Raw, path: str) -> Any:
    """The value at a dotted JSON path (``a.b[2].c``), read leniently for error details."""
    try:
        value: Any = msgspec.json.decode(raw)
    except (msgspec.DecodeError, RecursionError, UnicodeError):
        return _MISSING_VALUE
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", path):
        if part.startswith("[") and isinstance(value, list):
            index = int(part[1:-1])
            if index >= len(value):
                return _MISSING_VALUE
            value = value[index]
        elif isinstance(value, dict) and part in value:
            value = value[part]
        else:
            return _MISSING_VALUE
    return value


def decode_frame(frame: bytes | str, max_bytes: int = MAX_FRAME_BYTES) -> list[Decoded]:
    """Decode one WebSocket text frame: an envelope or a §12.4.2 batch of them.

    Never raises: each envelope decodes to a Message or a FrameError, so one bad element
    of a batch does not sink the others.
    """
    if isinstance(frame, str):
        try:
            frame = frame.encode()
        except UnicodeEncodeError as exc:
            return [FrameError(_not_utf8(exc))]
    elif not frame.isascii():
        # msgspec checks UTF-8 only in strings it decodes; Raw data and skipped fields
        # would pass through unchecked, so the whole frame is checked once (DESIGN §3).
        try:
            frame.decode("utf-8")
        except UnicodeDecodeError as exc:
            return [FrameError(_not_utf8(exc))]
    if len(frame) > max_bytes:
        err = InvalidMessage(
            f"Frame of {len(frame)} bytes exceeds the {max_bytes}-byte limit",
            field="$", expected_type=f"<= {max_bytes} bytes",
            received_type=f"{len(frame)} bytes", validation_rule="max_frame_size",
        )  # fmt: skip
        return [FrameError(err)]
    stripped = frame.lstrip()
    batch = stripped[:1] == b"["
    # Checked before any decoder runs, since decoders recurse per level (limits.py). A
    # batch may nest one level per element deeper than an envelope, so that each of its
    # elements gets its own answer below.
    if not batch:
        if not within_depth(frame, MAX_JSON_DEPTH):
            return [FrameError(_too_deep())]
        return [_decode_or_error(frame)]
    # A batch is split first (msgspec only skips over the elements, and past its own
    # recursion limit refuses the frame with RecursionError, caught below); then each
    # element's depth is checked on its own, a count of its brackets for any normal
    # envelope. Measuring the whole frame's depth first cost ~1.2 µs more per element of
    # a reactor's batch of 25 results.
    try:
        items = _raw_list_decoder.decode(frame)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        lenient = split_with_non_finite(frame)
        if lenient is not None:
            items = lenient
        else:
            err = InvalidMessage(
                f"Invalid JSON format: {exc}", field="$",
                expected_type="JSON array of envelopes", received_type="malformed JSON",
                validation_rule="json",
            )  # fmt: skip
            return [FrameError(err)]
    except RecursionError:
        return [FrameError(_too_deep())]
    if len(items) > MAX_BATCH:
        err = InvalidMessage(
            f"Batch of {len(items)} envelopes exceeds the limit of {MAX_BATCH}",
            field="$", expected_type=f"<= {MAX_BATCH} envelopes",
            received_type=f"{len(items)} envelopes", validation_rule="max_batch_size",
        )  # fmt: skip
        return [FrameError(err)]
    if not items:
        err = InvalidMessage(
            "Empty batch: a batch frame carries 1 or more envelopes",
            field="$", expected_type="non-empty array", received_type="empty array",
            validation_rule="batch",
        )  # fmt: skip
        return [FrameError(err)]
    return [_decode_or_error(item) for item in items]


def split_with_non_finite(frame: bytes) -> list[Raw] | None:
    """A batch that is JSON but for NaN/Infinity literals, split into its elements so each
    is answered alone (PF002 naming its non-finite number); None for anything else."""
    if not any(word in frame for word in (b"NaN", b"Infinity")):
        return None
    try:
        value = json.loads(frame)
    except (ValueError, RecursionError):
        return None
    if not isinstance(value, list):
        return None
    return [Raw(json.dumps(item).encode()) for item in value]


def _not_utf8(exc: UnicodeError) -> InvalidMessage:
    return InvalidMessage(
        f"Frame is not valid UTF-8: {exc}", field="$", expected_type="UTF-8 text",
        received_type="invalid UTF-8", validation_rule="utf8",
    )  # fmt: skip


def _too_deep() -> InvalidMessage:
    return InvalidMessage(
        f"JSON is nested more than {MAX_JSON_DEPTH} levels deep", field="$",
        expected_type=f"JSON nested at most {MAX_JSON_DEPTH} levels deep",
        received_type="deeper nesting", validation_rule="json_depth",
    )  # fmt: skip


def check_json_depth(raw: bytes) -> None:
    """Raise PF001 when ``raw`` nests deeper than MAX_JSON_DEPTH (any JSON from the edge,
    e.g. an HTTP body, before it is decoded)."""
    if not within_depth(raw, MAX_JSON_DEPTH):
        raise _too_deep()


def decode_data(raw: bytes | Raw, path: str = "payload.packet.data") -> Any:
    """Decode a packet's ``data`` for a handler: PF002 naming the path of a number no
    float can hold (``1e400``), PF001 for data too deep or not JSON. Never raises a
    decoder's own exception (DESIGN §3: every bad input is one ERROR)."""
    data = bytes(raw)
    check_json_depth(data)
    try:
        return msgspec.json.decode(data)
    except msgspec.ValidationError as exc:
        if str(exc).startswith(_OUT_OF_RANGE):
            raise non_finite_number(non_finite_path(data, path) or path) from None
        raise invalid_field(path, "JSON value", "invalid", "schema", str(exc)) from None
    except (msgspec.DecodeError, UnicodeError) as exc:
        raise InvalidMessage(
            f"Invalid JSON in {path}: {exc}", field=path, expected_type="UTF-8 JSON",
            received_type="malformed JSON", validation_rule="json",
        ) from None  # fmt: skip
    except RecursionError:
        raise _too_deep() from None


def _decode_or_error(raw: bytes | Raw) -> Decoded:
    try:
        if isinstance(raw, Raw) and not within_depth(raw, MAX_JSON_DEPTH):
            raise _too_deep()
        return decode_one(raw)
    except PacketFlowError as err:
        return _frame_error(err, raw)


def binary_frame_error() -> FrameError:
    err = InvalidMessage(
        "Binary frames are not PFAP: send UTF-8 JSON text frames",
        field="$", expected_type="text frame", received_type="binary frame",
        validation_rule="text_frame",
    )  # fmt: skip
    return FrameError(err)


def stored_compact(msg: Submit) -> None:
    """Shrink a SUBMIT that will wait in a queue: its ``data`` stops pinning the whole
    frame it was decoded from (Raw.copy keeps just its own bytes), and the strings every
    packet of a client repeats (version, source, element) are shared, not one copy each."""
    packet = msg.payload.packet
    packet.data = packet.data.copy()
    packet.element = sys.intern(packet.element)
    msg.source_id = sys.intern(msg.source_id)
    msg.protocol_version = sys.intern(msg.protocol_version)


def encode(msg: Message | list[Message]) -> bytes:
    return _encoder.encode(msg)


def encode_json(value: Any) -> bytes:
    return _encoder.encode(value)


def decode_json(raw: bytes | Raw) -> Any:
    return msgspec.json.decode(raw)


# ---------------------------------------------------------------- building messages


class Ids:
    """A message-id and sequence source for one sender; uuid/time come from outside."""

    __slots__ = ("_next_seq", "source_id")

    def __init__(self, source_id: str) -> None:
        self.source_id = source_id
        self._next_seq = 0

    def next_sequence(self) -> int:
        self._next_seq += 1
        return self._next_seq


def error_envelope(
    err: PacketFlowError,
    *,
    message_id: str,
    now_ms: int,
    source_id: str,
    correlation_id: str | None,
    packet_id: str | None = None,
    reactor_info: dict[str, Any] | None = None,
    destination_id: str | UnsetType | None = UNSET,
    sequence_id: int | None = None,
) -> Error:
    payload = msgspec.convert(err.to_payload(packet_id, reactor_info), ErrorPayload)
    return Error(
        protocol_version=PROTOCOL_VERSION,
        message_id=message_id,
        timestamp=now_ms,
        source_id=source_id,
        destination_id=destination_id,
        correlation_id=correlation_id,
        sequence_id=sequence_id,
        payload=payload,
    )


def error_from_payload(payload: ErrorPayload) -> PacketFlowError:
    """Rebuild the exception an ERROR payload describes (client side, failover)."""
    details = dict(payload.error_details)
    code = payload.error_code if payload.error_code in CATALOGUE else "PF500"
    return PacketFlowError(
        payload.error_message or code,
        code=code,
        field=details.pop("field", None),
        expected_type=details.pop("expected_type", None),
        received_type=details.pop("received_type", None),
        validation_rule=details.pop("validation_rule", None),
        details=details,
        context=payload.error_context,
        retryable=payload.retry_possible,
        retry_delay_ms=payload.retry_delay_ms,
        packet_id=payload.packet_id,
    )
