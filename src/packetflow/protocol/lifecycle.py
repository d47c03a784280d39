"""The packet lifecycle of PFAP §5.1/§5.3 and DESIGN §4 as one table of legal moves.

Every rule that changes a packet's lifecycle state lives in this module and nowhere else:
the table ``LIFECYCLE`` lists the legal moves and ``advance`` applies one.

How this reads the spec:

- created → validated, or → invalid → failed (§5.3's lower line);
- validated → routed (a reactor was chosen) → queued (waiting for a slot: in the gateway's
  queue or the reactor's) → processing → completed;
- validated → queued too: DESIGN §5 queues a packet in the gateway when every supporting
  reactor is full, before a reactor is chosen; routed → processing when the reactor starts
  it at once; queued → routed again when its slot or reactor goes away before it started
  (no delivery was lost, so no retry is counted); queued → queued when a packet taken
  from the gateway's queue for a freed slot may not use it (its routing preferences, the
  DESIGN §6 one-suspect-per-reactor rule) and goes back to wait, keeping its place;
- any step after validation can fail (PF003/PF101 when routing, PF004/PF504 at the deadline
  in a queue, PF005/timeouts while processing): → failed;
- failed → retried (§10.3.1; a new attempt) → routed (or → queued when every reactor is
  busy), or failed → aborted (given up);
  a retry that cannot start before the deadline goes retried → failed;
- aborted: cancelled by the client, a molecule abort or a shutdown, from any state that is
  not finished.
completed and aborted are terminal; failed is final unless the packet is retried.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType
from typing import Final

from .errors import InternalError

__all__ = [
    "LIFECYCLE",
    "TERMINAL_STATES",
    "IllegalPacketTransition",
    "PacketEvent",
    "PacketState",
    "advance",
    "is_terminal",
]


class PacketState(StrEnum):
    CREATED = "created"
    VALIDATED = "validated"
    INVALID = "invalid"
    ROUTED = "routed"
    QUEUED = "queued"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    RETRIED = "retried"
    ABORTED = "aborted"


class PacketEvent(StrEnum):
    """What happened to a packet (the table's events)."""

    VALIDATION_PASSED = "validation_passed"
    VALIDATION_FAILED = "validation_failed"
    ROUTED = "routed"  # a reactor was chosen
    ENQUEUED = "enqueued"  # waits for a slot (gateway queue or the reactor's)
    STARTED = "started"  # the reactor runs it
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # error or timeout (§5.3 "Timeout/Error")
    RETRY_SCHEDULED = "retry_scheduled"
    ABORTED = "aborted"  # cancelled or given up


_S = PacketState
_E = PacketEvent

# PFAP §5.3 / DESIGN §4: state → {event: next state}. Anything not listed is illegal.
LIFECYCLE: Final[Mapping[PacketState, Mapping[PacketEvent, PacketState]]] = MappingProxyType(
    {
        _S.CREATED: MappingProxyType(
            {
                _E.VALIDATION_PASSED: _S.VALIDATED,
                _E.VALIDATION_FAILED: _S.INVALID,
                _E.ABORTED: _S.ABORTED,
            }
        ),
        _S.INVALID: MappingProxyType({_E.FAILED: _S.FAILED}),
        _S.VALIDATED: MappingProxyType(
            {
                _E.ROUTED: _S.ROUTED,
                _E.ENQUEUED: _S.QUEUED,
                _E.FAILED: _S.FAILED,
                _E.ABORTED: _S.ABORTED,
            }
        ),
        _S.ROUTED: MappingProxyType(
            {
                _E.ENQUEUED: _S.QUEUED,
                _E.STARTED: _S.PROCESSING,
                _E.FAILED: _S.FAILED,
                _E.ABORTED: _S.ABORTED,
            }
        ),
        _S.QUEUED: MappingProxyType(
            {
                _E.ENQUEUED: _S.QUEUED,  # back to wait: the freed slot was not for it
                _E.ROUTED: _S.ROUTED,
                _E.STARTED: _S.PROCESSING,
                _E.FAILED: _S.FAILED,
                _E.ABORTED: _S.ABORTED,
            }
        ),
        _S.PROCESSING: MappingProxyType(
            {
                _E.SUCCEEDED: _S.COMPLETED,
                _E.FAILED: _S.FAILED,
                _E.ABORTED: _S.ABORTED,
            }
        ),
        _S.FAILED: MappingProxyType({_E.RETRY_SCHEDULED: _S.RETRIED, _E.ABORTED: _S.ABORTED}),
        _S.RETRIED: MappingProxyType(
            {
                _E.ROUTED: _S.ROUTED,
                _E.ENQUEUED: _S.QUEUED,
                _E.FAILED: _S.FAILED,
                _E.ABORTED: _S.ABORTED,
            }
        ),
        _S.COMPLETED: MappingProxyType({}),
        _S.ABORTED: MappingProxyType({}),
    }
)

TERMINAL_STATES: Final = frozenset(s for s, moves in LIFECYCLE.items() if not moves)


class IllegalPacketTransition(InternalError):
    """A move the lifecycle table does not allow: a bug in the caller (PF500)."""

    def __init__(self, packet_id: str, state: PacketState, event: PacketEvent) -> None:
        super().__init__(
            f"packet {packet_id!r}: lifecycle cannot go from {state!s} on {event!s} (PFAP §5.3)",
            packet_id=packet_id,
        )
        self.state = state
        self.event = event


def advance(packet_id: str, state: PacketState, event: PacketEvent) -> PacketState:
    """Apply ``event`` to a packet in ``state`` by the §5.3 table.

    Raises IllegalPacketTransition (PF500) naming the packet, state and event when the
    table has no such move.
    """
    try:
        return LIFECYCLE[state][event]
    except KeyError:
        raise IllegalPacketTransition(packet_id, state, event) from None


def is_terminal(state: PacketState) -> bool:
    """completed and aborted; failed is not terminal because it may be retried."""
    return state in TERMINAL_STATES
