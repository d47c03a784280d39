"""One event encoded once for every subscriber: the RESULT envelopes of an ed:subscribe
stream (DESIGN §10) as a shared body plus a small per-subscriber head.

How this works: every subscriber's RESULT differs from the others' only in its envelope ids
(message_id, sequence_id, correlation_id, destination_id), its packet and subscription ids
and an optional ``dropped`` count; the event itself (topic, event, published_at, sequence,
timestamp) is the same. JSON objects are unordered (§4.1 names fields, not positions), so
the envelope is laid out with everything per-subscriber first and the shared part last::

    {"message_id":…,"sequence_id":…,                         <- event_head, per event
     "protocol_version":"1.0",…,"payload":{…,"data":{"subscription_id":…,   <- per subscription
     "dropped":N,                                             <- only after a loss
     "topic":…,"event":…,"published_at":…,"sequence":…}},"timestamp":…}     <- event_body, shared

The parts concatenated are one valid envelope. A transport that writes parts one after the
other (transport.Peer) then queues only the small heads per subscriber: a 4 KB event to
10,000 subscribers holds one copy of the 4 KB, not 10,000.
"""

from __future__ import annotations

from typing import Any

import msgspec

from .messages import PROTOCOL_VERSION

_json = msgspec.json.Encoder()


def subscription_head(
    *,
    source_id: str,
    destination_id: str | None,
    correlation_id: str,
    packet_id: str,
    subscription_id: str,
    processing_metadata: dict[str, Any],
) -> bytes:
    """The part of every event envelope that is fixed for one subscription (computed once,
    when it subscribes); it opens ``payload.data``, which the event body closes."""
    enc = _json.encode
    return b"".join((
        b'"protocol_version":', enc(PROTOCOL_VERSION), b',"message_type":"result"',
        b',"source_id":', enc(source_id), b',"destination_id":', enc(destination_id),
        b',"correlation_id":', enc(correlation_id),
        b',"payload":{"packet_id":', enc(packet_id), b',"status":"event"',
        b',"processing_metadata":', enc(processing_metadata),
        b',"data":{"subscription_id":', enc(subscription_id), b",",
    ))  # fmt: skip


def event_body(topic: str, event: Any, published_at: int, sequence: int) -> bytes:
    """The shared tail of every subscriber's envelope for one published event: the rest of
    ``payload.data`` (DESIGN §10: topic, event, published_at, sequence) and the envelope's
    timestamp. Raises msgspec.EncodeError (a TypeError) for an event that is not JSON."""
    enc = _json.encode
    return b"".join((
        b'"topic":', enc(topic), b',"event":', enc(event),
        b',"published_at":%d,"sequence":%d}},"timestamp":%d}' % (published_at, sequence,
                                                               published_at),
    ))  # fmt: skip


def event_head(message_id: str, sequence_id: int | None) -> bytes:
    """The per-event start of one subscriber's envelope (its ids)."""
    enc = _json.encode
    if sequence_id is None:
        return b'{"message_id":' + enc(message_id) + b","
    return b'{"message_id":%s,"sequence_id":%d,' % (enc(message_id), sequence_id)


def head_template(message_id_prefix: str) -> bytes:
    """``event_head`` for many subscribers at once: ``template % (serial, sequence_id)``
    is the head whose message_id is ``message_id_prefix`` + ``serial`` as 12 hex digits
    (one bytes format per subscriber instead of building an id string and encoding it)."""
    prefix = _json.encode(message_id_prefix)[:-1]  # the opening quote and escaped text
    return b'{"message_id":' + prefix.replace(b"%", b"%%") + b'%012x","sequence_id":%d,'


def event_frame(
    head: bytes, subscription: bytes, body: bytes, dropped: int = 0
) -> tuple[bytes, ...]:
    """The parts of one subscriber's envelope, in order; ``b"".join`` of them is the JSON.
    ``dropped`` (events this subscription lost since its last one) appears in
    ``payload.data.dropped`` when non-zero."""
    if dropped:
        return (head, subscription, b'"dropped":%d,' % dropped, body)
    return (head, subscription, body)
