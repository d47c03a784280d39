"""What the gateway does when a packet cannot simply be answered with its RESULT: which
reactor ERRORs re-route at once, which error a packet gets when its time runs out, and
how a retry avoids the reactors already tried (DESIGN §5, §6).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from typing import Final, Literal, TypeVar

import msgspec

from .errors import GatewayTimeout, Overloaded, PacketFlowError, is_client_error
from .messages import RoutingPreferences

# Codes a reactor answers that mean "not here" rather than "this packet is bad": another
# reactor is tried at once, without backoff.
REROUTE_CODES: Final = frozenset({"PF003", "PF004", "PF503"})
# What PF004 tells a submitter to wait after its packet found no slot (§10.3.1 initial).
NO_SLOT_RETRY_DELAY_MS: Final = 1000

# DESIGN §6 poison rule: a reactor runs at most this many suspects at once, so that when
# it dies the one it ran is the likely culprit and the packets beside it go free.
MAX_SUSPECTS_PER_REACTOR: Final = 1
# Deliveries that make a packet a suspect. 1 (every packet that was on a dead reactor)
# would serialise a whole reactor's failover behind one survivor (200 packets one at a
# time), against DESIGN §6's "fails over at once"; at 2 a packet is isolated once it was
# on two reactors that died, so a bystander counts at most 2 deliveries from a poison
# packet, below the limit max_retries + 1 whenever max_retries >= 2 (default 5).
SUSPECT_AFTER_DELIVERIES: Final = 2

ErrorAction = Literal["reroute", "retry", "relay"]
K = TypeVar("K")


def on_reactor_error(code: str, retry_possible: bool, has_alternative: bool) -> ErrorAction:
    """A reactor answered ERROR ``code``: re-route at once ("not here" codes, when another
    reactor serves the element), retry with backoff (the reactor said it may help and the
    error is not the client's, ``errors.is_client_error``), or relay it to the submitter."""
    if code in REROUTE_CODES and has_alternative:
        return "reroute"
    # The client's mistake fails the same way anywhere, whatever the reactor claimed.
    if retry_possible and not is_client_error(code, retry_possible):
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


def is_suspect(deliveries: int) -> bool:
    """A packet that counted ``SUSPECT_AFTER_DELIVERIES`` deaths runs isolated (DESIGN §6,
    ``blame_for_death``)."""
    return deliveries >= SUSPECT_AFTER_DELIVERIES


def blame_for_death(on_reactor: Sequence[tuple[K, bool]]) -> frozenset[K]:
    """Which packets count a delivery when the reactor running them dies (DESIGN §6:
    "a packet whose reactor dies while running it counts a delivery; after
    max_retries + 1 deliveries it fails with PF005").

    ``on_reactor`` pairs each packet on the dead reactor with whether it is a *suspect*
    (``is_suspect``: it already counted ``SUSPECT_AFTER_DELIVERIES`` deaths). How the rule
    keeps bystanders safe:

    - a reactor runs at most ``MAX_SUSPECTS_PER_REACTOR`` suspect (``reactors_to_avoid``);
    - if the dead reactor held a suspect, only that suspect counts: it is the likely
      culprit, and the others are rerouted without a count;
    - if it held none, every packet on it counts one (some become suspects).

    A poison packet is therefore the lone suspect on every reactor it kills once it has
    killed ``SUSPECT_AFTER_DELIVERIES``, and is convicted after max_retries + 1 deaths,
    while a bystander counts at most the deaths before the poison became a suspect plus
    those of reactors it was itself the suspect on.
    """
    suspects = frozenset(key for key, suspect in on_reactor if suspect)
    if suspects:
        return suspects
    return frozenset(key for key, _ in on_reactor)


def reactors_to_avoid(
    candidates: Collection[str], tried: Collection[str], holders: Collection[str], suspect: bool
) -> frozenset[str] | None:
    """The reactors a packet's next attempt must not go to, or None when it must wait.

    DESIGN §6: a retry goes to a reactor not yet ``tried`` while one of the
    ``candidates`` remains. A *suspect* (see ``blame_for_death``) also avoids the
    ``holders`` (reactors already running a suspect); when every candidate holds one it
    waits in the queue (None) until a holder's suspect finishes."""
    avoid: set[str] = set()
    if suspect:
        avoid.update(h for h in holders if h in candidates)
        if candidates and len(avoid) >= len(candidates):
            return None
    if any(c not in tried and c not in avoid for c in candidates):
        avoid.update(tried)
    return frozenset(avoid)


def with_avoided(
    prefs: RoutingPreferences | None, avoid: Collection[str]
) -> RoutingPreferences | None:
    """``prefs`` with ``avoid`` added to its avoid_reactors."""
    if not avoid:
        return prefs
    base = prefs or RoutingPreferences()
    extra = sorted(set(avoid) - set(base.avoid_reactors))
    return msgspec.structs.replace(base, avoid_reactors=[*base.avoid_reactors, *extra])
