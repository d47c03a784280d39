"""The six PFAP message types (§4.2) as typed wire structs, and the framing rules of DESIGN §3.

Frames are decoded and validated exactly once, here; what comes out is a typed message or
a ``PacketFlowError`` (PF001 for a bad frame, PF002 naming the JSON path of a bad field).
Packet and result ``data`` stay ``msgspec.Raw`` so a relay forwards the bytes it received
without decoding them.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Final, Literal, TypeAlias

import msgspec
from msgspec import UNSET, Raw, UnsetType

from .chemistry import Group
from .errors import CATALOGUE, InvalidMessage, InvalidPacket, PacketFlowError
from .packets import validate_element, validate_packet_id

PROTOCOL_VERSION: Final = "1.0"
SUPPORTED_MAJOR: Final = "1"
# §12.4.1 max_frame_size.
MAX_FRAME_BYTES: Final = 1024 * 1024
# §12.4.2 max_batch_size.
MAX_BATCH: Final = 50

EMPTY_OBJECT: Final = Raw(b"{}")

Priority = Annotated[int, msgspec.Meta(ge=1, le=10)]
PositiveInt = Annotated[int, msgspec.Meta(gt=0)]
NonNegativeInt = Annotated[int, msgspec.Meta(ge=0)]
Unit = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]


# ---------------------------------------------------------------- packets (§4.2.1)


class ChemicalPropertiesWire(msgspec.Struct, omit_defaults=True):
    reactivity: float
    ionization_energy: float
    atomic_radius: float
    electronegativity: float


class Packet(msgspec.Struct, omit_defaults=True):
    group: Group
    element: str
    id: str | None = None
    version: str = PROTOCOL_VERSION
    data: Raw = EMPTY_OBJECT
    priority: Priority | None = None
    timeout_ms: PositiveInt | None = None
    dependencies: list[str] = msgspec.field(default_factory=list)
    metadata: dict[str, Any] | None = None
    chemical_properties: ChemicalPropertiesWire | None = None


class RoutingPreferences(msgspec.Struct, omit_defaults=True):
    """§6.3.1 client hints."""

    preferred_implementation: str | None = None
    minimum_affinity: Unit | None = None
    avoid_reactors: list[str] = msgspec.field(default_factory=list)
    affinity_boost: Annotated[float, msgspec.Meta(ge=-1.0, le=1.0)] = 0.0
    locality_preference: str | None = None


class SubmitPayload(msgspec.Struct, omit_defaults=True):
    packet: Packet
    routing_preferences: RoutingPreferences | None = None


# ---------------------------------------------------------------- results and errors


class ResultPayload(msgspec.Struct, omit_defaults=True):
    """§4.2.2; ``status`` is "success", or "event" for ED deliveries (DESIGN §10)."""

    packet_id: str | None
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


class HeartbeatPayload(msgspec.Struct):
    reactor_id: str
    implementation: str = "python"
    specializations: list[str] = msgspec.field(default_factory=list)
    health_status: HealthStatus | None = None
    performance_metrics: dict[str, Any] | None = None
    chemical_metrics: dict[str, Any] | None = None
    capabilities: list[str] = msgspec.field(default_factory=list)
    load_metrics: dict[str, Any] | None = None
    capacity_adjustments: dict[str, Any] | None = None


# ---------------------------------------------------------------- discover (§4.2.5, §8)


class ReactorInfo(msgspec.Struct, omit_defaults=True):
    reactor_id: str
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
    capabilities: dict[str, Any] | None = None
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


# ---------------------------------------------------------------- the envelope (§4.1)


class Envelope(msgspec.Struct, tag_field="message_type", kw_only=True, omit_defaults=True):
    """§4.1 base fields. ``destination_id`` is UNSET when absent and None for broadcast."""

    protocol_version: str
    message_id: str
    timestamp: int
    source_id: str
    sequence_id: NonNegativeInt | None = None
    destination_id: str | UnsetType | None = UNSET
    correlation_id: str | None = None
    ttl: NonNegativeInt | None = None
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


class _Ids(msgspec.Struct):
    """The ids of a message that failed validation, read leniently to correlate the ERROR."""

    message_id: Any = None
    payload: Any = None


_ids_decoder: Final = msgspec.json.Decoder(_Ids)

# msgspec's ValidationError texts; see msgspec/_core.c. We turn them into DESIGN §3's
# {field, expected_type, received_type, validation_rule}.
_AT = re.compile(r" - at `\$\.?(?P<path>[^`]*)`$")
_EXPECTED_GOT = re.compile(r"^Expected `(?P<exp>[^`]+)`, got `(?P<got>[^`]+)`")
_CONSTRAINT = re.compile(r"^Expected `(?P<exp>[^`]+)` (?P<rule>.+)$")
_MISSING = re.compile(r"^Object missing required field `(?P<name>[^`]+)`")
_INVALID_VALUE = re.compile(r"^Invalid (?:enum )?value (?P<val>.+)$")


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def validation_error(exc: msgspec.ValidationError) -> PacketFlowError:
    """Map a msgspec ValidationError to PF002 (or PF001 when the whole frame is wrong)."""
    text = str(exc)
    at = _AT.search(text)
    path = at.group("path") if at else ""
    head = text[: at.start()] if at else text
    path = re.sub(r"\[(\d+)\]", r"[\1]", path)
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
        return InvalidPacket(
            f"Invalid value {m.group('val')} for '{path}'",
            field=path, expected_type=_ENUM_HINTS.get(path.rsplit(".", 1)[-1], "enum"),
            received_type=m.group("val"), validation_rule="enum",
        )  # fmt: skip
    return InvalidPacket(f"Invalid message: {text}", field=path or "$", validation_rule="schema")


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
        raise validation_error(exc) from None
    except (msgspec.DecodeError, UnicodeError) as exc:
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
        try:
            ids = _ids_decoder.decode(raw)
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError, UnicodeError):
            ids = None
        if ids is not None:
            if isinstance(ids.message_id, str):
                message_id = ids.message_id
            if isinstance(ids.payload, dict):
                packet = ids.payload.get("packet")
                if isinstance(packet, dict) and isinstance(packet.get("id"), str):
                    packet_id = packet["id"]
                elif isinstance(ids.payload.get("packet_id"), str):
                    packet_id = ids.payload["packet_id"]
    if raw is not None and err.validation_rule == "range" and err.field:
        value = _value_at(raw, err.field)
        if value is not _MISSING_VALUE:
            err.received_type = f"{type(value).__name__} {value!r}"
    return FrameError(err, message_id, packet_id)


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
    if stripped[:1] == b"[":
        try:
            items = _raw_list_decoder.decode(frame)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            err = InvalidMessage(
                f"Invalid JSON format: {exc}", field="$", expected_type="JSON array of envelopes",
                received_type="malformed JSON", validation_rule="json",
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
    return [_decode_or_error(frame)]


def _not_utf8(exc: UnicodeError) -> InvalidMessage:
    return InvalidMessage(
        f"Frame is not valid UTF-8: {exc}", field="$", expected_type="UTF-8 text",
        received_type="invalid UTF-8", validation_rule="utf8",
    )  # fmt: skip


def _too_deep() -> InvalidMessage:
    return InvalidMessage(
        "JSON is nested too deeply", field="$", expected_type="shallower JSON",
        received_type="deeper nesting than the decoder allows", validation_rule="json_depth",
    )  # fmt: skip


def _decode_or_error(raw: bytes | Raw) -> Decoded:
    try:
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
