"""§8.3 dynamic load reporting: the I/O utilization and ``capacity_adjustments`` a reactor
reports in its HEARTBEAT, and the capacity the gateway then routes and queues by.

Pure: samples, thresholds and ``now`` are handed in; the reactor reads the counters and
the gateway applies the capacity (``ReactorRegistry.set_capacity``).

The spec shows ``capacity_adjustments`` (``temporary_capacity_boost`` 1.2,
``scheduled_maintenance`` null, ``resource_constraints`` ["memory_pressure"]) without saying
what produces or consumes them. packetflow reads them as:

- ``temporary_capacity_boost``: the reactor's concurrency now / the concurrency it last
  announced. rm:scale and mc:adapt change a reactor's concurrency between announces; the
  boost tells the gateway at the next heartbeat instead of the next re-announce.
- ``scheduled_maintenance``: null, or a window ``{start_at, end_at, reason}`` (epoch ms;
  ``end_at`` null = until further notice). A bare number is read as ``start_at`` and an
  ISO-8601 string as its date. From ``start_at`` until ``end_at`` the gateway sends the
  reactor nothing new; what runs there finishes. Our reactor reports one while draining
  (cf:shutdown, cf:restart, SIGTERM).
- ``resource_constraints``: what the reactor measures short: ``memory_pressure``,
  ``cpu_pressure``, ``disk_pressure``, ``disk_io_pressure``, ``network_pressure`` (the
  thresholds below). Each known constraint halves the capacity the gateway uses for it
  (at least 1), so a pressed reactor gets fewer packets at once and the rest go to other
  reactors or wait in the gateway's queue. Unknown names are kept for display, not used.

The gateway's capacity for a reactor is
``announced × boost × ½^(known constraints)``, floored, at least 1; 0 during maintenance.
Routing's load ratio (in flight / capacity) and its free-slot test use it (DESIGN §5).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from .messages import CapacityAdjustments, MaintenanceWindow, ResourceUtilization

# The boost a gateway accepts: a reactor claiming more than 4x what it announced is capped
# (it should re-announce), and 0 is maintenance's job, not the boost's.
MIN_BOOST: Final = 0.05
MAX_BOOST: Final = 4.0
# What one known resource constraint does to the capacity the gateway uses.
CONSTRAINT_FACTOR: Final = 0.5
# Percent figures (of ResourceUtilization) at or above which a reactor reports a constraint.
# Memory at 85 % leaves room before §9.4.1's 95 % exhaustion marks the reactor failed.
PRESSURE_PERCENT: Final[Mapping[str, tuple[str, float]]] = {
    "memory_pressure": ("memory_percent", 85.0),
    "cpu_pressure": ("cpu_percent", 90.0),
    "disk_pressure": ("disk_usage_percent", 90.0),
    "disk_io_pressure": ("disk_io_percent", 90.0),
    "network_pressure": ("network_io_percent", 90.0),
}
KNOWN_CONSTRAINTS: Final = frozenset(PRESSURE_PERCENT)
# A link whose speed the kernel does not report (loopback, most virtual NICs) counts as
# this fast: §8.2's example network_bandwidth_mbps.
DEFAULT_LINK_MBPS: Final = 1000.0


# ---------------------------------------------------------------- reactor: I/O utilization


@dataclass(frozen=True, slots=True)
class IoSample:
    """Cumulative I/O counters at ``at_s`` (any monotonic clock, seconds)."""

    at_s: float
    disk_busy_ms: Mapping[str, int]  # per disk: time spent doing I/O (/proc/diskstats)
    nic_bytes: Mapping[str, int]  # per interface: bytes sent + received
    nic_mbps: Mapping[str, float]  # per interface: link speed, 0 when unknown


def io_utilization(prev: IoSample | None, cur: IoSample) -> tuple[float | None, float | None]:
    """(disk_io_percent, network_io_percent) between two samples; None without a previous
    one. Disk: the busiest disk's busy time / elapsed time (iostat's %util). Network: bytes
    moved on all interfaces / what their links carry in the time (unknown speeds count as
    ``DEFAULT_LINK_MBPS``). Counters that went backwards (a device replaced) count 0."""
    if prev is None:
        return None, None
    elapsed = cur.at_s - prev.at_s
    if elapsed <= 0:
        return None, None
    busiest = 0
    for name, busy in cur.disk_busy_ms.items():
        busiest = max(busiest, busy - prev.disk_busy_ms.get(name, busy))
    disk = min(100.0, 100.0 * busiest / (elapsed * 1000.0))
    moved = 0
    capacity_bits = 0.0
    for nic, total in cur.nic_bytes.items():
        moved += max(0, total - prev.nic_bytes.get(nic, total))
        capacity_bits += (cur.nic_mbps.get(nic) or DEFAULT_LINK_MBPS) * 1e6 * elapsed
    network = min(100.0, 100.0 * moved * 8 / capacity_bits) if capacity_bits else 0.0
    return round(disk, 2), round(network, 2)


# ---------------------------------------------------------------- reactor: adjustments


def resource_constraints(util: ResourceUtilization) -> list[str]:
    """The constraints ``util`` shows, in PRESSURE_PERCENT's order."""
    out = []
    for name, (figure, threshold) in PRESSURE_PERCENT.items():
        value = getattr(util, figure)
        if value is not None and value >= threshold:
            out.append(name)
    return out


def reactor_adjustments(
    *,
    current_concurrency: int,
    announced_concurrency: int,
    util: ResourceUtilization,
    draining_since_ms: int | None,
    drain_reason: str = "draining",
) -> CapacityAdjustments:
    """The §8.3 ``capacity_adjustments`` a reactor reports (module docstring)."""
    boost = current_concurrency / announced_concurrency if announced_concurrency > 0 else 1.0
    maintenance = None
    if draining_since_ms is not None:
        maintenance = MaintenanceWindow(start_at=draining_since_ms, end_at=None,
                                        reason=drain_reason)  # fmt: skip
    return CapacityAdjustments(
        temporary_capacity_boost=round(boost, 4),
        scheduled_maintenance=maintenance,
        resource_constraints=resource_constraints(util),
    )


# ---------------------------------------------------------------- gateway: capacity used


def maintenance_window(value: MaintenanceWindow | int | str | None) -> MaintenanceWindow | None:
    """``scheduled_maintenance`` in any accepted shape as a window (None: none, or a
    string that is not an ISO-8601 date)."""
    if value is None or isinstance(value, MaintenanceWindow):
        return value
    if isinstance(value, int):
        return MaintenanceWindow(start_at=value)
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return None  # a local time names no instant
    return MaintenanceWindow(start_at=int(parsed.timestamp() * 1000))


def in_maintenance(adjustments: CapacityAdjustments | None, now_ms: float) -> bool:
    """Whether ``now_ms`` (epoch ms) falls in the reported maintenance window."""
    if adjustments is None:
        return False
    window = maintenance_window(adjustments.scheduled_maintenance)
    if window is None:
        return False
    started = window.start_at is None or window.start_at <= now_ms
    return started and (window.end_at is None or now_ms < window.end_at)


def effective_capacity(
    announced: int, adjustments: CapacityAdjustments | None, now_ms: float
) -> int:
    """The capacity the gateway routes and queues by (module docstring); ``announced``
    when the reactor reported no adjustments."""
    if adjustments is None:
        return max(1, announced)
    if in_maintenance(adjustments, now_ms):
        return 0
    boost = adjustments.temporary_capacity_boost
    if boost is None or not math.isfinite(boost):
        boost = 1.0
    capacity = announced * min(MAX_BOOST, max(MIN_BOOST, boost))
    known = KNOWN_CONSTRAINTS.intersection(adjustments.resource_constraints or ())
    capacity *= CONSTRAINT_FACTOR ** len(known)
    return max(1, math.floor(capacity + 1e-9))
