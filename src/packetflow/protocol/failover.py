"""What the gateway does when a packet cannot simply be answered with its RESULT: which
reactor ERRORs re-route at once, which error a packet gets when its time runs out, and
how a retry avoids the reactors already tried (DESIGN §5, §6).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Final, Literal

import msgspec

from .errors import GatewayTimeout, Overloaded, PacketFlowError
from .messages import RoutingPreferences

# Codes a reactor answers that mean "not here" rather than "this packet is bad": another
# reactor is tried at once, without backoff.
REROUTE_CODES: Final = frozenset({"PF003", "PF004", "PF503"})
# What PF004 tells a submitter to wait after its packet found no slot (§10.3.1 initial).
NO_SLOT_RETRY_DELAY_MS: Final = 1000

ErrorAction = Literal["reroute", "retry", "relay"]


def on_reactor_error(code: str, retry_possible: bool, has_alternative: bool) -> ErrorAction:
    """A reactor answered ERROR ``code``: re-route at once ("not here" codes, when another
    reactor serves the element), retry with backoff (the reactor said it may help), or
    relay the error to the submitter."""
    if code in REROUTE_CODES and has_alternative:
        return "reroute"
    if retry_possible:
        return "retry"
    return "relay"


def ttl_expired(packet_id: str) -> GatewayTimeout:
    """PF504: the envelope's TTL ran out (DESIGN §3)."""
    return GatewayTimeout(
        f"Packet {packet_id}'s TTL ran out before it could be forwarded",
        field="ttl",
        details={"reason": "ttl_expired"},
    )


def ttl_is_binding(ttl_deadline: float | None, deadline: float) -> bool:
    """Whether the TTL, not the packet's timeout, ran out first."""
    return ttl_deadline is not None and ttl_deadline <= deadline


def no_slot_in_time(
    packet_id: str, group: str, element: str, *, ttl_bound: bool, queued_ms: int, queue_depth: int
) -> PacketFlowError:
    """A packet waited in the gateway's queue until its deadline (DESIGN §6: PF004 with
    retry_delay_ms, never PF003; PF504 when its TTL was the limit)."""
    if ttl_bound:
        return ttl_expired(packet_id)
    return Overloaded(
        f"No reactor slot for {group}:{element} freed before the packet's deadline",
        retry_delay_ms=NO_SLOT_RETRY_DELAY_MS,
        context={"queued_ms": queued_ms, "queue_depth": queue_depth},
    )


def no_reply_in_time(
    packet_id: str, *, ttl_bound: bool, timeout_ms: int, reactor_id: str | None
) -> PacketFlowError:
    """The reactor running a packet did not answer by its deadline (PF504)."""
    if ttl_bound:
        return ttl_expired(packet_id)
    return GatewayTimeout(
        f"Packet {packet_id} got no reply within its timeout ({timeout_ms} ms)",
        details={"reason": "timeout", "timeout_ms": timeout_ms},
        context={"reactor_id": reactor_id},
    )


def avoiding_tried(
    prefs: RoutingPreferences | None, tried: Collection[str], candidates: Iterable[str]
) -> RoutingPreferences | None:
    """DESIGN §6: a retry goes to a different reactor where one exists. The preferences
    also avoid the reactors already tried, while any untried candidate remains."""
    if not tried or not any(c not in tried for c in candidates):
        return prefs
    base = prefs or RoutingPreferences()
    return msgspec.structs.replace(base, avoid_reactors=[*base.avoid_reactors, *sorted(tried)])
