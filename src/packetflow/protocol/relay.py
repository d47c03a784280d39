"""How the gateway rewrites messages on the way through (DESIGN §3, wire example §1-§4).

A client's SUBMIT becomes the reactor's SUBMIT (message 2): new message_id, correlated to
the client's message, TTL reduced by the time spent here, timeout capped by that TTL,
chemical properties and routing hints attached. The reactor's RESULT becomes the client's
RESULT (message 4) with processing metadata.
"""

from __future__ import annotations

import functools
from typing import Any

import msgspec
from msgspec import Raw

from .chemistry import chemical_properties
from .messages import (
    PROTOCOL_VERSION,
    ChemicalPropertiesWire,
    Error,
    Result,
    ResultPayload,
    Submit,
    decode_json,
    decode_one,
    encode,
    encode_json,
)
from .packets import default_priority, effective_timeout_ms


def remaining_ttl_ms(ttl: int | None, received_at_ms: float, now_ms: float) -> int | None:
    """TTL left after the time spent at this hop (DESIGN §3); None when there was none."""
    if ttl is None:
        return None
    return max(0, int(ttl - (now_ms - received_at_ms)))


@functools.lru_cache(maxsize=4096)
def _defaults(group: str, element: str) -> tuple[int, int]:
    """Appendix C's priority and timeout for a packet that names neither."""
    return default_priority(group, element), effective_timeout_ms(group, element, None, None)


def admission(msg: Submit) -> tuple[int, int]:
    """A packet's priority and timeout_ms after DESIGN §4's defaults (the timeout capped by
    Appendix C and the envelope TTL), as the gateway and a reactor both apply them."""
    packet = msg.payload.packet
    priority, timeout = _defaults(packet.group, packet.element)
    priority = packet.priority or msg.priority or priority
    if packet.timeout_ms is not None or msg.ttl is not None:
        timeout = effective_timeout_ms(packet.group, packet.element, packet.timeout_ms, msg.ttl)
    return priority, timeout


@functools.lru_cache(maxsize=1024)
def wire_properties(group: str, priority: int, dependency_count: int) -> ChemicalPropertiesWire:
    """DESIGN §4's properties as sent; a handful of distinct inputs, so computed once each
    (the encoder only reads the shared struct)."""
    props = chemical_properties(group, priority, dependency_count)
    return ChemicalPropertiesWire(props.reactivity, props.ionization_energy,
                                  props.atomic_radius, props.electronegativity)  # fmt: skip


def _to_4(x: float) -> float:
    """``x`` to 4 decimals, half away from zero (a finite score or load): half the cost of
    round(), on every forwarded SUBMIT."""
    return (int(x * 10000.0 + 0.5) if x >= 0.0 else -int(0.5 - x * 10000.0)) / 10000.0


def forward_submit(
    msg: Submit,
    *,
    packet_id: str,
    priority: int,
    message_id: str,
    now_ms: int,
    source_id: str,
    destination_id: str,
    sequence_id: int | None,
    ttl_ms: int | None,
    timeout_ms: int,
    affinity_score: float,
    load_factor: float,
    selection_reason: str,
) -> Submit:
    """Message 2 of the wire example: the packet with its id, priority and timeout filled in."""
    packet = msg.payload.packet
    forwarded = msgspec.structs.replace(
        packet,
        id=packet_id,
        priority=priority,
        timeout_ms=timeout_ms,
        chemical_properties=wire_properties(packet.group, priority, len(packet.dependencies)),
    )
    return Submit(
        protocol_version=PROTOCOL_VERSION,
        message_id=message_id,
        timestamp=now_ms,
        source_id=source_id,
        destination_id=destination_id,
        sequence_id=sequence_id,
        correlation_id=msg.message_id,
        ttl=ttl_ms,
        priority=msg.priority if msg.priority is not None else priority,
        routing_hints={
            "affinity_score": _to_4(affinity_score),
            "load_factor": _to_4(load_factor),
            "selection_reason": selection_reason,
        },
        payload=msgspec.structs.replace(msg.payload, packet=forwarded),
    )


def replay_for(
    frame: bytes, repeat: Submit, *, message_id: str, now_ms: int, sequence_id: int | None
) -> bytes:
    """A stored RESULT or ERROR (its encoded frame) re-addressed to ``repeat``, a SUBMIT
    of a packet id already answered (DESIGN §4 idempotency): new id and time, correlated
    to the repeat, sent to its source."""
    stored = decode_one(frame)
    assert isinstance(stored, Result | Error)
    return encode(msgspec.structs.replace(
        stored, message_id=message_id, timestamp=now_ms, correlation_id=repeat.message_id,
        destination_id=repeat.source_id, sequence_id=sequence_id,
    ))  # fmt: skip


_STATS_KEY = b'"processing_stats":'
# A reactor-reported duration beyond this (about 31 years) is not taken as one.
_MAX_DURATION_MS = 1e12


class _Stats(msgspec.Struct):
    """The one field of ``processing_stats`` the gateway reads (others are skipped)."""

    duration_ms: float | None = None


_stats_decoder = msgspec.json.Decoder(_Stats)


def split_processing_stats(data: Raw) -> tuple[Raw, float | None]:
    """Remove ``processing_stats`` from result data; return it and its duration_ms.

    packetflow reactors put the stats last, so the fast path cuts them off the end of
    the bytes: the key is preceded by ``,`` or ``{`` and what follows it, up to the
    data's closing brace, decodes as exactly one object (a key inside a string or a
    nested object fails one of the two). Any other layout is decoded and re-encoded.
    Results without the key pass through untouched.
    """
    raw = bytes(memoryview(data))
    at = raw.rfind(_STATS_KEY)
    if at < 0:
        return data, None
    start = at - 1
    while start >= 0 and raw[start] in b" \t\r\n":
        start -= 1
    if start >= 0 and raw[start] in b",{" and raw.rstrip().endswith(b"}"):
        try:
            stats = _stats_decoder.decode(raw[at + len(_STATS_KEY) : raw.rindex(b"}")])
        except msgspec.DecodeError:
            pass  # another layout (or a duration that is no number): the general path
        else:
            head = raw[:start] if raw[start] == ord(",") else raw[: start + 1]
            return Raw(head + b"}"), stats.duration_ms
    value: Any = decode_json(data)
    if not isinstance(value, dict) or "processing_stats" not in value:
        return data, None
    stats_value = value.pop("processing_stats", None)
    duration = stats_value.get("duration_ms") if isinstance(stats_value, dict) else None
    return Raw(encode_json(value)), float(duration) if isinstance(duration, int | float) else None


def client_result(
    reply: ResultPayload,
    *,
    client_message_id: str,
    client_source_id: str,
    message_id: str,
    now_ms: int,
    source_id: str,
    sequence_id: int | None,
    total_ms: float,
    reactor_id: str,
    affinity_score: float,
) -> Result:
    """Message 4 of the wire example."""
    data, reactor_ms = split_processing_stats(reply.data)
    if reactor_ms is None or not 0.0 <= reactor_ms < _MAX_DURATION_MS:
        reactor_ms = 0.0  # none, or nonsense (negative, not finite) from the reactor
    return Result(
        protocol_version=PROTOCOL_VERSION,
        message_id=message_id,
        timestamp=now_ms,
        source_id=source_id,
        destination_id=client_source_id,
        sequence_id=sequence_id,
        correlation_id=client_message_id,
        payload=ResultPayload(
            packet_id=reply.packet_id,
            status=reply.status,
            data=data,
            # Durations are never negative: to 0.001 ms by int() (round() costs twice as
            # much, and this runs for every RESULT).
            processing_metadata={
                "total_duration_ms": int(total_ms * 1000.0 + 0.5) / 1000.0,
                "reactor_duration_ms": int(reactor_ms * 1000.0 + 0.5) / 1000.0,
                "routing_duration_ms": int(max(0.0, total_ms - reactor_ms) * 1000.0 + 0.5) / 1000.0,
                "reactor_id": reactor_id,
                "affinity_score": round(affinity_score, 4),
            },
        ),
    )
