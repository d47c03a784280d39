"""The reactor registry, indexed by capability so routing never scans every reactor.

An embedded, in-memory implementation behind a small interface (DESIGN §1): a NATS-backed
registry can replace it for several gateways.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec

from ..protocol.chemistry import AffinityMatrix
from ..protocol.messages import CapacityAdjustments
from ..protocol.routing_table import RoutingTable

if TYPE_CHECKING:
    from .links import ReactorLink


@dataclass(slots=True, eq=False)
class ReactorRecord:
    """What the gateway knows of one reactor; satisfies ``protocol.routing.ReactorView``."""

    reactor_id: str
    specializations: tuple[str, ...]
    implementation: str
    capabilities: frozenset[tuple[str, str]]
    capacity: int  # what routing uses: announced, then §8.3-adjusted (protocol/capacity.py)
    endpoints: dict[str, str]
    locality: str | None = None
    version: str = "1.0.0"
    source: str = "direct"  # direct, static, multicast, dnssd, cluster (another gateway)
    in_flight: int = 0
    suspects: int = 0  # DESIGN §6: suspect packets it runs (protocol/failover.py)
    reported_load: float = 0.0
    health: str = "unknown"
    last_seen: float = 0.0  # time.monotonic() of the last heartbeat or announce
    last_heartbeat: dict[str, Any] | None = None
    link: ReactorLink | None = None
    dialing: bool = False
    routed_counter: Any = None  # the Prometheus child for this reactor
    adjustments: dict[str, float] = field(default_factory=dict)
    flights: set[Any] = field(default_factory=set)
    # Successes not yet told to its health tracker and breaker (gateway/monitor.py).
    unreported_ok: int = 0
    announce: dict[str, Any] = field(default_factory=dict)
    # Shown as X-PacketFlow-Dial-Token when dialling it (DESIGN §8); never in summary().
    dial_token: str | None = None
    # §8.3: the capacity it announced, and the capacity_adjustments of its last heartbeat.
    announced_capacity: int = 0
    capacity_adjustments: CapacityAdjustments | None = None

    @property
    def load_ratio(self) -> float:
        from ..protocol.routing import load_ratio

        return load_ratio(self)

    def adjustment(self, group: str) -> float:
        return self.adjustments.get(group, 0.0)

    def summary(self) -> dict[str, Any]:
        hb = self.last_heartbeat or {}
        return {
            "reactor_id": self.reactor_id,
            "implementation": self.implementation,
            "version": self.version,
            "specializations": list(self.specializations),
            "health": self.health,
            "in_flight": self.in_flight,
            "max_capacity": self.announced_capacity or self.capacity,
            "effective_capacity": self.capacity,
            "capacity_adjustments": (
                msgspec.to_builtins(self.capacity_adjustments)
                if self.capacity_adjustments is not None
                else None
            ),
            "load_factor": round(self.load_ratio, 4),
            "endpoints": self.endpoints,
            "locality": self.locality,
            "source": self.source,
            "capabilities": sorted(f"{g}:{e}" for g, e in self.capabilities),
            # §6.3.2's learned per-group adjustment (±0.2, decaying to 0): what routing adds.
            "adjustments": {g: round(v, 4) for g, v in self.adjustments.items() if v},
            "performance_metrics": hb.get("performance_metrics"),
            # §8.2 as last announced: elements per group with their measured timings.
            "packet_support": _packet_support(self.announce.get("capabilities")),
        }


def _packet_support(capabilities: Any) -> Any:
    """§8.2's per-group timings; an announce with §4.2.4's list form has none."""
    return capabilities.get("packet_support") if isinstance(capabilities, dict) else None


class ReactorRegistry:
    """The records, indexed by capability, mirrored into a ``RoutingTable`` so a routing
    decision is a few vector operations however many reactors there are (DESIGN §5).

    Every change to what routing reads goes through a method here, so the two never
    disagree. A record that has left (removed, or replaced by a newer record with the same
    id) is no longer mirrored: its late bookkeeping (a packet landing after it departed, a
    probe timing out) updates the record alone, never the table's row for its id.
    """

    def __init__(self, matrix: AffinityMatrix) -> None:
        self._records: dict[str, ReactorRecord] = {}
        self._index: dict[tuple[str, str], dict[str, ReactorRecord]] = {}
        self.table = RoutingTable(matrix)

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self) -> Iterator[ReactorRecord]:
        return iter(list(self._records.values()))

    def get(self, reactor_id: str) -> ReactorRecord | None:
        return self._records.get(reactor_id)

    def upsert(self, record: ReactorRecord) -> ReactorRecord:
        """Add ``record`` or refresh the existing one with its announced facts."""
        old = self._records.get(record.reactor_id)
        if old is not None:
            self._unindex(old)
            old.specializations = record.specializations
            old.implementation = record.implementation
            old.capabilities = record.capabilities
            old.capacity = record.capacity
            old.endpoints = record.endpoints
            old.locality = record.locality
            old.version = record.version
            old.announce = record.announce
            old.last_seen = record.last_seen
            old.source = record.source
            record = old
        self._records[record.reactor_id] = record
        for key in record.capabilities:
            self._index.setdefault(key, {})[record.reactor_id] = record
        self.table.add(record.reactor_id, record.specializations, record.implementation,
                       record.locality, record.capacity, record.capabilities)  # fmt: skip
        return record

    def remove(self, reactor_id: str) -> ReactorRecord | None:
        record = self._records.pop(reactor_id, None)
        if record is not None:
            self._unindex(record)
            self.table.remove(reactor_id)
        return record

    def _unindex(self, record: ReactorRecord) -> None:
        for key in record.capabilities:
            bucket = self._index.get(key)
            if bucket is not None:
                bucket.pop(record.reactor_id, None)
                if not bucket:
                    del self._index[key]

    def candidates(self, group: str, element: str) -> Iterable[ReactorRecord]:
        bucket = self._index.get((group, element))
        return bucket.values() if bucket else ()

    def supports(self, group: str, element: str) -> bool:
        return (group, element) in self._index

    # ------------------------------------------------------------------ routing state

    def registered(self, record: ReactorRecord) -> bool:
        """``record`` is the one routing currently knows under its id."""
        return self._records.get(record.reactor_id) is record

    def set_health(self, record: ReactorRecord, health: str) -> None:
        record.health = health
        if self.registered(record):
            self.table.set_health(record.reactor_id, health)

    def add_in_flight(self, record: ReactorRecord, delta: int) -> None:
        record.in_flight += delta
        if self.registered(record):
            self.table.set_in_flight(record.reactor_id, record.in_flight)

    def set_capacity(self, record: ReactorRecord, capacity: int) -> None:
        record.capacity = capacity
        if self.registered(record):
            self.table.set_capacity(record.reactor_id, capacity)

    def set_reported_load(self, record: ReactorRecord, load: float) -> None:
        record.reported_load = load
        if self.registered(record):
            self.table.set_reported_load(record.reactor_id, load)

    def set_adjustment(self, record: ReactorRecord, group: str, value: float) -> None:
        record.adjustments[group] = value
        if self.registered(record):
            self.table.set_adjustment(record.reactor_id, group, value)

    def set_excluded(self, record: ReactorRecord, excluded: bool) -> None:
        """An open circuit breaker takes the reactor out of routing (§10.3.2)."""
        if self.registered(record):
            self.table.set_excluded(record.reactor_id, excluded)

    def set_matrix(self, matrix: AffinityMatrix) -> None:
        self.table.set_matrix(matrix)
