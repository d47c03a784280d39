"""The allocation ledger behind rm:allocate and rm:deallocate (DESIGN §10): a reactor's
capacity, the leases granted against it, and the rules that admit, release and expire them.

Pure bookkeeping: ``now`` (milliseconds, any consistent clock; the reactor passes wall-clock
epoch ms so ``expires_at`` means something to a client) arrives with each call. Every rule
about what fits lives here and nowhere else.

How admission works: expired leases are dropped first, then a request fits when the memory
and the CPU slots it asks for are both within what the live leases leave free. A request
that does not fit answers PF004 (Overloaded, retryable: another reactor may have room, or
leases may expire): ``retry_delay_ms`` is when enough leases will have expired for it to fit,
or the default delay when it can never fit here (more than the whole capacity).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Final

from .errors import InvalidPacket, Overloaded, invalid_field, json_type

# ---------------------------------------------------------------------------------------------
# Limits (STYLE 5)

# Leases held at once; each is a few hundred bytes.
MAX_ALLOCATIONS: Final = 10_000
# A lease longer than a day is a leak with a timer; renew instead.
MAX_LEASE_MS: Final = 24 * 3600 * 1000
# When data.lease_ms is absent: long enough for a job, short enough that a crashed client's
# reservation returns on its own.
DEFAULT_LEASE_MS: Final = 5 * 60 * 1000
# What a PF004 tells the sender to wait when no lease expiry would help (§10.3.1
# initial_delay_ms).
DEFAULT_RETRY_DELAY_MS: Final = 1000

RESOURCE_KEYS: Final = ("memory_mb", "cpu_slots")
# CPU slots a reactor leases out per core by default: handlers mostly wait on I/O, so a
# core serves several leases (the same reasoning as a thread pool sized at a multiple of
# the cores). A §7.3 reservation of N cores asks for N × this many slots.
CPU_SLOTS_PER_CORE: Final = 4

DATA: Final = "payload.packet.data"


@dataclass(frozen=True, slots=True)
class Capacity:
    """What a reactor can lease out: memory in MiB and CPU slots (DESIGN §10 rm:allocate)."""

    memory_mb: float
    cpu_slots: int

    def to_dict(self) -> dict[str, Any]:
        return {"memory_mb": self.memory_mb, "cpu_slots": self.cpu_slots}


@dataclass(frozen=True, slots=True)
class Allocation:
    """One lease: ``memory_mb`` and ``cpu_slots`` held from ``created_at`` to ``expires_at``
    (ms)."""

    allocation_id: str
    memory_mb: float
    cpu_slots: int
    created_at: int
    expires_at: int

    @property
    def resources(self) -> dict[str, Any]:
        return {"memory_mb": self.memory_mb, "cpu_slots": self.cpu_slots}

    def to_dict(self) -> dict[str, Any]:
        return {
            "allocation_id": self.allocation_id,
            "resources": self.resources,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "lease_ms": self.expires_at - self.created_at,
        }


def _bad(
    path: str, expected: str, value: object, rule: str, msg: str | None = None
) -> InvalidPacket:
    return invalid_field(f"{DATA}.{path}", expected, json_type(value), rule, msg)


def parse_resources(value: object) -> tuple[float, int]:
    """``{memory_mb?, cpu_slots?}`` → (memory_mb, cpu_slots). Raises PF002 naming
    ``payload.packet.data.resources[.key]``: not an object, an unknown key, a negative or
    non-finite amount, a fractional cpu_slots, or nothing asked for at all."""
    if not isinstance(value, dict):
        raise _bad("resources", "object {memory_mb, cpu_slots}", value, "type")
    for key in value:
        if key not in RESOURCE_KEYS:
            raise _bad(
                f"resources.{key}",
                "memory_mb or cpu_slots",
                value[key],
                "unknown_resource",
                f"Unknown resource {key!r}: this reactor leases memory_mb and cpu_slots",
            )
    memory = value.get("memory_mb", 0)
    if (
        not isinstance(memory, int | float)
        or isinstance(memory, bool)
        or not math.isfinite(memory)
        or memory < 0
    ):
        raise _bad("resources.memory_mb", "number >= 0", memory, "range")
    slots = value.get("cpu_slots", 0)
    if not isinstance(slots, int) or isinstance(slots, bool) or slots < 0:
        raise _bad("resources.cpu_slots", "integer >= 0", slots, "range")
    if memory == 0 and slots == 0:
        raise _bad(
            "resources",
            "memory_mb > 0 or cpu_slots > 0",
            value,
            "non_empty",
            "An allocation must ask for some memory_mb or cpu_slots",
        )
    return float(memory), slots


def parse_lease(value: object) -> int:
    """``lease_ms``: an integer 1..MAX_LEASE_MS. Raises PF002 naming
    ``payload.packet.data.lease_ms``."""
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_LEASE_MS:
        raise _bad("lease_ms", f"integer between 1 and {MAX_LEASE_MS}", value, "range")
    return value


class ResourceLedger:
    """Leases against a fixed ``Capacity`` (module doc). Ids are ``<id_prefix><counter>``
    unless given."""

    def __init__(
        self,
        capacity: Capacity,
        *,
        max_allocations: int = MAX_ALLOCATIONS,
        id_prefix: str = "alloc_",
    ) -> None:
        if capacity.memory_mb < 0 or capacity.cpu_slots < 0:
            raise ValueError("capacity must not be negative")
        self.capacity = capacity
        self.max_allocations = max_allocations
        self.id_prefix = id_prefix
        self._counter = 0
        self._leases: dict[str, Allocation] = {}

    def __len__(self) -> int:
        return len(self._leases)

    def get(self, allocation_id: str) -> Allocation | None:
        return self._leases.get(allocation_id)

    def allocations(self, now: int) -> list[Allocation]:
        """Live leases, oldest first."""
        self.expire(now)
        return list(self._leases.values())

    def _used(self) -> tuple[float, int]:
        return (
            math.fsum(a.memory_mb for a in self._leases.values()),
            sum(a.cpu_slots for a in self._leases.values()),
        )

    def allocate(
        self, resources: object, lease_ms: object, now: int, allocation_id: str | None = None
    ) -> Allocation:
        """Lease ``resources`` ({memory_mb, cpu_slots}) for ``lease_ms`` from ``now``.

        Raises PF002 naming the bad field (``parse_resources``, ``parse_lease``, or
        ``allocation_id`` when the id is taken) and PF004 with ``retry_delay_ms`` when it
        does not fit (module doc) or MAX_ALLOCATIONS leases are live.
        """
        memory, slots = parse_resources(resources)
        lease = parse_lease(lease_ms)
        self.expire(now)
        if allocation_id is not None and allocation_id in self._leases:
            raise invalid_field(
                f"{DATA}.allocation_id",
                "an unused allocation id",
                "string",
                "unique",
                f"Allocation {allocation_id!r} already exists",
            )
        requested = {"memory_mb": memory, "cpu_slots": slots}
        cap = self.capacity
        if memory > cap.memory_mb or slots > cap.cpu_slots:
            raise Overloaded(
                f"The request {requested} exceeds this reactor's whole capacity "
                f"{cap.to_dict()}; another reactor may have more",
                retry_delay_ms=DEFAULT_RETRY_DELAY_MS,
                details={
                    "reason": "exceeds_total_capacity",
                    "requested": requested,
                    "capacity": cap.to_dict(),
                },
            )
        if len(self._leases) >= self.max_allocations:
            raise Overloaded(
                f"{self.max_allocations} allocations are already live",
                retry_delay_ms=self._delay_until_fits(0.0, 0, now, slots_needed=False),
                details={"reason": "too_many_allocations", "limit": self.max_allocations},
            )
        used_memory, used_slots = self._used()
        if used_memory + memory > cap.memory_mb or used_slots + slots > cap.cpu_slots:
            available = {
                "memory_mb": max(0.0, cap.memory_mb - used_memory),
                "cpu_slots": max(0, cap.cpu_slots - used_slots),
            }
            raise Overloaded(
                f"Not enough free capacity for {requested}: {available} available",
                retry_delay_ms=self._delay_until_fits(memory, slots, now),
                details={
                    "reason": "insufficient_capacity",
                    "requested": requested,
                    "available": available,
                    "capacity": cap.to_dict(),
                },
            )
        if allocation_id is None:
            while True:
                self._counter += 1
                allocation_id = f"{self.id_prefix}{self._counter}"
                if allocation_id not in self._leases:
                    break
        allocation = Allocation(allocation_id, memory, slots, now, now + lease)
        self._leases[allocation_id] = allocation
        return allocation

    def _delay_until_fits(
        self, memory: float, slots: int, now: int, *, slots_needed: bool = True
    ) -> int:
        """ms until enough leases expire for (memory, slots) to fit, or for one lease to go."""
        cap = self.capacity
        used_memory, used_slots = self._used()
        for lease in sorted(self._leases.values(), key=lambda a: a.expires_at):
            used_memory -= lease.memory_mb
            used_slots -= lease.cpu_slots
            fits = not slots_needed or (
                used_memory + memory <= cap.memory_mb and used_slots + slots <= cap.cpu_slots
            )
            if fits:
                return max(1, lease.expires_at - now)
        return DEFAULT_RETRY_DELAY_MS

    def release(self, allocation_id: object, now: int) -> Allocation:
        """End a lease early. Raises PF002 naming ``payload.packet.data.allocation_id`` when
        there is no live lease by that id (never granted, released, or expired)."""
        if not isinstance(allocation_id, str) or not allocation_id:
            raise _bad("allocation_id", "non-empty string", allocation_id, "type")
        self.expire(now)
        allocation = self._leases.pop(allocation_id, None)
        if allocation is None:
            raise invalid_field(
                f"{DATA}.allocation_id",
                "id of a live allocation on this reactor",
                "string",
                "unknown_allocation",
                f"No live allocation {allocation_id!r} here: never granted, already "
                "released, or its lease expired",
            )
        return allocation

    def expire(self, now: int) -> list[Allocation]:
        """Drop every lease whose ``expires_at`` is at or before ``now``; the dropped ones."""
        gone = [a for a in self._leases.values() if a.expires_at <= now]
        for allocation in gone:
            del self._leases[allocation.allocation_id]
        return gone

    def usage(self, now: int) -> dict[str, Any]:
        """``{capacity, allocated, available, allocations}`` after expiring old leases."""
        self.expire(now)
        used_memory, used_slots = self._used()
        cap = self.capacity
        return {
            "capacity": cap.to_dict(),
            "allocated": {"memory_mb": used_memory, "cpu_slots": used_slots},
            "available": {
                "memory_mb": max(0.0, cap.memory_mb - used_memory),
                "cpu_slots": max(0, cap.cpu_slots - used_slots),
            },
            "allocations": len(self._leases),
        }


__all__ = [
    "DEFAULT_LEASE_MS",
    "MAX_ALLOCATIONS",
    "MAX_LEASE_MS",
    "RESOURCE_KEYS",
    "Allocation",
    "Capacity",
    "ResourceLedger",
    "parse_lease",
    "parse_resources",
]
