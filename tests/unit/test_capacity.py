"""protocol/capacity.py: §8.3 I/O utilization, the capacity_adjustments a reactor reports,
and the capacity the gateway routes and queues by."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest

from packetflow.protocol.capacity import (
    IoSample,
    effective_capacity,
    in_maintenance,
    io_utilization,
    maintenance_window,
    reactor_adjustments,
    resource_constraints,
)
from packetflow.protocol.chemistry import STANDARD_MATRIX
from packetflow.protocol.messages import (
    CapacityAdjustments,
    Heartbeat,
    MaintenanceWindow,
    ResourceUtilization,
    decode_one,
)
from packetflow.protocol.routing import Chosen, MustWait
from packetflow.protocol.routing_table import RoutingTable

CORPUS = Path(__file__).parent.parent / "corpus"


def test_8_3_example_adjustments_are_read_from_the_spec_heartbeat() -> None:
    msg = decode_one((CORPUS / "valid_heartbeat_8_3.json").read_bytes())
    assert isinstance(msg, Heartbeat)
    adj = msg.payload.capacity_adjustments
    assert adj == CapacityAdjustments(1.2, None, ["memory_pressure"])
    # 10 announced x 1.2 boost x 0.5 for memory_pressure.
    assert effective_capacity(10, adj, now_ms=0) == 6


def test_8_3_boost_alone_scales_the_announced_capacity() -> None:
    assert effective_capacity(10, CapacityAdjustments(2.0), 0) == 20
    assert effective_capacity(10, CapacityAdjustments(0.5), 0) == 5
    assert effective_capacity(10, None, 0) == 10
    # Capped both ways; never below one slot outside maintenance.
    assert effective_capacity(10, CapacityAdjustments(1000.0), 0) == 40
    assert effective_capacity(10, CapacityAdjustments(0.0), 0) == 1
    assert effective_capacity(10, CapacityAdjustments(float("nan")), 0) == 10


def test_8_3_each_known_constraint_halves_and_unknown_ones_are_ignored() -> None:
    two = CapacityAdjustments(1.0, None, ["memory_pressure", "cpu_pressure", "moon_phase"])
    assert effective_capacity(8, two, 0) == 2
    assert effective_capacity(1, two, 0) == 1
    null = msgspec.json.decode(b'{"resource_constraints": null}', type=CapacityAdjustments)
    assert effective_capacity(8, null, 0) == 8


def test_8_3_maintenance_window_takes_the_reactor_out_while_it_lasts() -> None:
    window = CapacityAdjustments(1.0, MaintenanceWindow(start_at=1000, end_at=2000))
    assert effective_capacity(10, window, 999) == 10
    assert effective_capacity(10, window, 1000) == 0
    assert effective_capacity(10, window, 2000) == 10
    open_ended = CapacityAdjustments(1.0, MaintenanceWindow(start_at=1000))
    assert in_maintenance(open_ended, 10**13)


def test_8_3_maintenance_in_other_shapes() -> None:
    assert maintenance_window(1640995200000) == MaintenanceWindow(start_at=1640995200000)
    iso = maintenance_window("2022-01-01T00:00:00Z")
    assert iso == MaintenanceWindow(start_at=1640995200000)
    assert maintenance_window("next tuesday") is None
    assert maintenance_window("2022-01-01T00:00:00") is None  # no zone: no instant
    decoded = msgspec.json.decode(
        json.dumps({"scheduled_maintenance": "2022-01-01T00:00:00Z"}), type=CapacityAdjustments
    )
    assert in_maintenance(decoded, 1640995200001)


def test_8_3_io_utilization_from_two_samples() -> None:
    first = IoSample(10.0, {"sda": 1000, "sdb": 0}, {"eth0": 0}, {"eth0": 100.0})
    # 2 s later: sda busy 1 s of 2 (50 %); 25 MB moved on a 100 Mbit/s link in 2 s (100 %).
    second = IoSample(12.0, {"sda": 2000, "sdb": 100}, {"eth0": 25_000_000}, {"eth0": 100.0})
    assert io_utilization(None, first) == (None, None)
    assert io_utilization(first, second) == (50.0, 100.0)
    # Unknown link speed counts as 1000 Mbit/s; counters going backwards count 0.
    third = IoSample(14.0, {"sda": 0}, {"eth0": 25_000_000 + 2_500_000}, {"eth0": 0.0})
    assert io_utilization(second, third) == (0.0, 1.0)
    assert io_utilization(second, second) == (None, None)


def test_8_3_reactor_reports_constraints_boost_and_draining() -> None:
    util = ResourceUtilization(cpu_percent=10, memory_percent=88, disk_io_percent=95)
    assert resource_constraints(util) == ["memory_pressure", "disk_io_pressure"]
    adj = reactor_adjustments(current_concurrency=6, announced_concurrency=4, util=util,
                              draining_since_ms=None)  # fmt: skip
    assert adj.temporary_capacity_boost == 1.5
    assert adj.scheduled_maintenance is None
    draining = reactor_adjustments(current_concurrency=4, announced_concurrency=4,
                                   util=ResourceUtilization(), draining_since_ms=123)  # fmt: skip
    assert draining.scheduled_maintenance == MaintenanceWindow(123, None, "draining")
    assert draining.resource_constraints == []
    assert in_maintenance(draining, 124)


@pytest.mark.parametrize("capacity", [0, 1])
def test_8_3_routing_table_uses_the_adjusted_capacity(capacity: int) -> None:
    table = RoutingTable(STANDARD_MATRIX)
    caps = frozenset({("df", "transform")})
    table.add("r1", ("memory_bound",), "python", None, 10, caps)
    table.set_health("r1", "healthy")
    table.set_in_flight("r1", 1)
    table.set_capacity("r1", capacity)
    decision = table.decide("df", "transform", priority=5)
    assert isinstance(decision, MustWait)  # 1 in flight fills 0 or 1 slots: wait
    table.set_capacity("r1", 4)
    chosen = table.decide("df", "transform", priority=5)
    assert isinstance(chosen, Chosen) and chosen.load_ratio == 0.25
