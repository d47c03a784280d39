"""The gateway's own health as orchestrators see it (DESIGN §2 ``GET /health`` and
``GET /health/ready``), computed from counts the gateway hands in.

Every rule deciding the gateway's status and readiness lives here: liveness is the
process answering at all; readiness is "a packet sent now can be served"; the status
says how well.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

HEALTHY: Final = "healthy"
DEGRADED: Final = "degraded"
UNHEALTHY: Final = "unhealthy"

# A queue this full (of GatewayConfig.max_queue) is reported degraded: PF004 for new
# packets is near, and an orchestrator's dashboard should show it before it happens.
QUEUE_DEGRADED_FRACTION = 0.8


@dataclass(frozen=True, slots=True)
class GatewayCounts:
    reactors: int  # registered
    healthy: int  # in §9.3 state healthy
    routable: int  # could take a packet now: linked, routable state, circuit not open
    queue_depth: int
    max_queue: int
    in_flight: int
    stopping: bool  # draining after SIGTERM: new packets are refused


@dataclass(frozen=True, slots=True)
class GatewayHealth:
    status: str  # HEALTHY, DEGRADED or UNHEALTHY
    ready: bool  # GET /health/ready answers 200
    reasons: tuple[str, ...]  # why it is not healthy, or not ready; empty when healthy


def assess(counts: GatewayCounts) -> GatewayHealth:
    """The status and readiness for ``counts``.

    - unhealthy: no reactor can take a packet (none registered, or none routable);
    - degraded: some can, but a registered reactor is not healthy, the queue is at
      QUEUE_DEGRADED_FRACTION of its limit or more, or the gateway is stopping;
    - healthy otherwise.
    Ready means at least one routable reactor and not stopping.
    """
    reasons: list[str] = []
    if counts.stopping:
        reasons.append("gateway is stopping: draining, new packets refused")
    if counts.reactors == 0:
        reasons.append("no reactor is registered")
    elif counts.routable == 0:
        reasons.append(f"no routable reactor (0 of {counts.reactors} linked, healthy, "
                       "degraded or recovering with a closed circuit)")  # fmt: skip
    elif counts.healthy < counts.reactors:
        reasons.append(f"{counts.reactors - counts.healthy} of {counts.reactors} "
                       "reactors not healthy")  # fmt: skip
    if counts.max_queue > 0 and counts.queue_depth >= QUEUE_DEGRADED_FRACTION * counts.max_queue:
        reasons.append(f"queue at {counts.queue_depth} of {counts.max_queue} packets")
    ready = counts.routable > 0 and not counts.stopping
    if counts.routable == 0:
        status = UNHEALTHY
    elif reasons:
        status = DEGRADED
    else:
        status = HEALTHY
    return GatewayHealth(status, ready, tuple(reasons))
