"""Where a SUBMIT's ``destination_id`` sends its packet (§4.1, DESIGN §3): routed by
affinity, broadcast, pinned to one reactor, or refused because it names no reactor."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .errors import NoReactorAvailable

# The name any client may use for "the gateway I am talking to, route it", beside the
# gateway's own id (the spec's wire example addresses the gateway as "gateway-01").
GATEWAY_ALIAS = "gateway"


@dataclass(frozen=True, slots=True)
class Routed:
    """Absent, ``"gateway"`` or the gateway's own id: the DESIGN §5 routing decides."""


@dataclass(frozen=True, slots=True)
class Broadcast:
    """``null``: every routable reactor that serves the packet runs it (§4.1)."""


@dataclass(frozen=True, slots=True)
class Pinned:
    """A registered reactor's id: that reactor and no other."""

    reactor_id: str


Destination = Routed | Broadcast | Pinned

ROUTED = Routed()
BROADCAST = Broadcast()


def resolve_destination(
    destination_id: object, gateway_id: str, is_reactor: Callable[[str], bool]
) -> Destination:
    """What ``destination_id`` (None for JSON null; anything not a string or None, such as
    msgspec's UNSET, for absent) asks of a gateway whose id is ``gateway_id``.

    Raises NoReactorAvailable (PF003, ``error_details.field`` "destination_id") when it
    names neither the gateway nor a reactor ``is_reactor`` knows: such a packet used to
    be routed to whichever reactor scored best, which is never what its sender meant.
    """
    if destination_id is None:
        return BROADCAST
    if not isinstance(destination_id, str):
        return ROUTED
    if destination_id in (GATEWAY_ALIAS, gateway_id):
        return ROUTED
    if is_reactor(destination_id):
        return Pinned(destination_id)
    raise NoReactorAvailable(
        f"destination_id {destination_id!r} names no reactor registered with this gateway "
        f"(name a reactor, {GATEWAY_ALIAS!r} or {gateway_id!r}, or leave it out to route "
        "by affinity)",
        field="destination_id",
        expected_type=f"a registered reactor id, {GATEWAY_ALIAS!r} or the gateway's id",
        received_type="string",
        validation_rule="known_destination",
        details={"received_value": destination_id},
        context={"destination_id": destination_id, "gateway_id": gateway_id},
    )
