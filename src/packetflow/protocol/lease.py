"""Ownership of unfinished molecules among several gateways, by lease (issue 14): every
rule deciding who runs a molecule lives here, with time passed in.

How it works: each gateway renews one lease for itself (a record it rewrites every
``renew_every(lease_s)`` seconds); every molecule names its owner gateway. A gateway
notes, on its *own* monotonic clock, when it last saw each other gateway renew, so the
rule never compares two machines' clocks. An owner not seen to renew for ``lease_s`` has
lapsed, and the molecules it owned may be taken over; the take-over itself is a
compare-and-set in the shared store, so of several gateways deciding TAKE_OVER at once
exactly one wins. A gateway first seen (or this gateway just started) counts as renewed
at that moment: a lease is never judged lapsed before this gateway has watched it for
``lease_s``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Final

# DESIGN §6 style default: long enough to ride out a GC pause or a NATS leader election
# (a few seconds), short enough that a dead gateway's molecules move on quickly.
DEFAULT_LEASE_S: Final = 10.0
# Renewals per lease period: two may be lost before the lease lapses.
RENEWALS_PER_LEASE: Final = 3
# Gateways whose renewal times one book keeps (a cap, STYLE 5): far above any real fleet.
MAX_GATEWAYS: Final = 10_000


class Decision(enum.Enum):
    MINE = "mine"  # this gateway owns it: run it
    WAIT = "wait"  # its owner's lease is live: leave it alone
    TAKE_OVER = "take_over"  # its owner's lease lapsed: try the compare-and-set


def renew_every(lease_s: float) -> float:
    """How often a gateway renews its own lease."""
    if lease_s <= 0:
        raise ValueError(f"lease_s must be positive, got {lease_s}")
    return lease_s / RENEWALS_PER_LEASE


@dataclass(slots=True)
class LeaseBook:
    """When this gateway last saw each gateway renew (its own clock, seconds)."""

    me: str
    lease_s: float
    started_at: float
    seen: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        renew_every(self.lease_s)  # validates

    def renewed(self, gateway_id: str, now: float) -> None:
        """A renewal of ``gateway_id`` was seen at ``now``."""
        if gateway_id not in self.seen and len(self.seen) >= MAX_GATEWAYS:
            oldest = min(self.seen, key=self.seen.__getitem__)
            del self.seen[oldest]
        self.seen[gateway_id] = max(now, self.seen.get(gateway_id, now))

    def released(self, gateway_id: str, now: float) -> None:
        """``gateway_id`` said it stops (or its record vanished): lapsed from now on."""
        self.seen[gateway_id] = now - self.lease_s

    def lapses_at(self, gateway_id: str) -> float:
        """When ``gateway_id``'s lease lapses unless it renews again."""
        return self.seen.get(gateway_id, self.started_at) + self.lease_s

    def decide(self, owner: str | None, now: float) -> Decision:
        """Who runs a molecule owned by ``owner`` (None: an owner nobody recorded, e.g.
        a half-written entry; treated as lapsed since this gateway started)."""
        if owner == self.me:
            return Decision.MINE
        if owner is None:
            return Decision.TAKE_OVER if now >= self.started_at + self.lease_s else Decision.WAIT
        return Decision.TAKE_OVER if now >= self.lapses_at(owner) else Decision.WAIT

    def live(self, now: float) -> list[str]:
        """Gateways whose lease is live at ``now`` (this one included)."""
        others = [g for g in self.seen if g != self.me and now < self.lapses_at(g)]
        return [self.me, *sorted(others)]
