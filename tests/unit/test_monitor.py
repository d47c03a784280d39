"""gateway/monitor.py's bookkeeping that needs no socket: forgetting a departed reactor."""

from __future__ import annotations

from typing import Any, cast

from packetflow.gateway.monitor import HealthMonitor
from packetflow.gateway.registry import ReactorRecord, ReactorRegistry
from packetflow.protocol.chemistry import STANDARD_MATRIX
from packetflow.protocol.health import DEFAULT_HEALTH_CONFIG


class _Gateway:
    def __init__(self) -> None:
        self.registry = ReactorRegistry(STANDARD_MATRIX)

    def decay_adjustments(self, now: float) -> None: ...
    def depart(self, record: ReactorRecord) -> None: ...
    def slot_freed(self, record: ReactorRecord) -> None: ...


def test_forget_drops_the_reactors_tracker_breaker_and_schedules_only() -> None:
    gateway = _Gateway()
    monitor = HealthMonitor(cast(Any, gateway), DEFAULT_HEALTH_CONFIG)
    for rid in ("r1", "r2"):
        record = gateway.registry.upsert(ReactorRecord(
            reactor_id=rid, specializations=("general_purpose",), implementation="python",
            capabilities=frozenset({("cf", "ping")}), capacity=4, endpoints={},
        ))  # fmt: skip
        monitor.tracker(record)
    monitor.tick()  # schedules each reactor's ping and health probes
    assert {k[0] for k in monitor._next_due} == {"r1", "r2"}
    monitor.forget("r1")
    assert {k[0] for k in monitor._next_due} == {"r2"}
    assert set(monitor.trackers) == set(monitor.breakers) == {"r2"}
