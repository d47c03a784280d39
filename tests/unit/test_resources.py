"""protocol/resources.py: the rm:allocate / rm:deallocate ledger (DESIGN §10) — capacity,
leases, expiry, PF004 when over capacity and PF002 naming bad amounts."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from packetflow.protocol.errors import PacketFlowError
from packetflow.protocol.resources import (
    MAX_LEASE_MS,
    Capacity,
    ResourceLedger,
)

from .expect import fails

D = "payload.packet.data"


@pytest.fixture
def ledger() -> ResourceLedger:
    return ResourceLedger(Capacity(memory_mb=1000.0, cpu_slots=8), id_prefix="a")


def test_allocate_returns_a_lease_with_expiry(ledger: ResourceLedger) -> None:
    a = ledger.allocate({"memory_mb": 256, "cpu_slots": 2}, 5000, now=1000)
    assert a.allocation_id == "a1"
    assert a.resources == {"memory_mb": 256.0, "cpu_slots": 2}
    assert (a.created_at, a.expires_at) == (1000, 6000)
    assert a.to_dict()["lease_ms"] == 5000
    assert ledger.usage(1000) == {
        "capacity": {"memory_mb": 1000.0, "cpu_slots": 8},
        "allocated": {"memory_mb": 256.0, "cpu_slots": 2},
        "available": {"memory_mb": 744.0, "cpu_slots": 6},
        "allocations": 1,
    }


def test_one_resource_alone_is_enough(ledger: ResourceLedger) -> None:
    assert ledger.allocate({"cpu_slots": 1}, 10, 0).memory_mb == 0.0
    assert ledger.allocate({"memory_mb": 0.5}, 10, 0).cpu_slots == 0


def test_over_available_capacity_is_pf004_with_delay_until_a_lease_expires(
    ledger: ResourceLedger,
) -> None:
    ledger.allocate({"memory_mb": 600}, 10_000, now=0)
    ledger.allocate({"memory_mb": 300}, 4_000, now=0)
    err = fails(lambda: ledger.allocate({"memory_mb": 300}, 1000, now=1000), "PF004")
    assert err.retryable
    assert err.details["reason"] == "insufficient_capacity"
    assert err.details["available"] == {"memory_mb": 100.0, "cpu_slots": 8}
    # the 300 MB lease expiring at 4000 frees enough: 3000 ms from now
    assert err.retry_delay_ms == 3000
    # and at 4000 it fits
    ledger.allocate({"memory_mb": 300}, 1000, now=4000)


def test_cpu_slots_are_checked_too(ledger: ResourceLedger) -> None:
    ledger.allocate({"cpu_slots": 8}, 100, 0)
    err = fails(lambda: ledger.allocate({"cpu_slots": 1}, 100, 50), "PF004")
    assert err.retry_delay_ms == 50


def test_more_than_the_whole_capacity_is_pf004_exceeds_total(ledger: ResourceLedger) -> None:
    err = fails(lambda: ledger.allocate({"memory_mb": 1000.5}, 100, 0), "PF004")
    assert err.details["reason"] == "exceeds_total_capacity"
    assert err.retry_delay_ms


@pytest.mark.parametrize(
    ("resources", "field"),
    [
        ("lots", "resources"),
        ([], "resources"),
        ({}, "resources"),
        ({"memory_mb": 0, "cpu_slots": 0}, "resources"),
        ({"memory_mb": -1}, "resources.memory_mb"),
        ({"memory_mb": "1"}, "resources.memory_mb"),
        ({"memory_mb": True}, "resources.memory_mb"),
        ({"memory_mb": float("inf")}, "resources.memory_mb"),
        ({"memory_mb": float("nan")}, "resources.memory_mb"),
        ({"cpu_slots": 1.5}, "resources.cpu_slots"),
        ({"cpu_slots": -2}, "resources.cpu_slots"),
        ({"cpu_slots": 1, "gpu": 1}, "resources.gpu"),
    ],
)
def test_bad_amounts_are_pf002_naming_the_field(
    ledger: ResourceLedger, resources: object, field: str
) -> None:
    fails(lambda: ledger.allocate(resources, 100, 0), "PF002", f"{D}.{field}")
    assert len(ledger) == 0


@pytest.mark.parametrize("lease", [0, -5, 1.5, "10", None, True, MAX_LEASE_MS + 1])
def test_bad_lease_is_pf002(ledger: ResourceLedger, lease: object) -> None:
    fails(lambda: ledger.allocate({"cpu_slots": 1}, lease, 0), "PF002", f"{D}.lease_ms")


def test_release_frees_capacity_and_unknown_ids_are_pf002(ledger: ResourceLedger) -> None:
    a = ledger.allocate({"memory_mb": 1000}, 100, 0)
    assert ledger.release(a.allocation_id, 10) == a
    ledger.allocate({"memory_mb": 1000}, 100, 10)
    err = fails(lambda: ledger.release(a.allocation_id, 20), "PF002", f"{D}.allocation_id")
    assert err.validation_rule == "unknown_allocation"
    fails(lambda: ledger.release("nope", 20), "PF002", f"{D}.allocation_id")
    fails(lambda: ledger.release(42, 20), "PF002", f"{D}.allocation_id")


def test_expired_leases_are_gone(ledger: ResourceLedger) -> None:
    a = ledger.allocate({"memory_mb": 10}, 100, 0)
    b = ledger.allocate({"memory_mb": 10}, 200, 0)
    assert ledger.expire(99) == []
    assert ledger.expire(100) == [a]
    fails(lambda: ledger.release(a.allocation_id, 150), "PF002", f"{D}.allocation_id")
    assert ledger.usage(199)["allocations"] == 1
    assert ledger.usage(200)["allocations"] == 0
    assert ledger.get(b.allocation_id) is None


def test_given_ids_must_be_unused(ledger: ResourceLedger) -> None:
    ledger.allocate({"cpu_slots": 1}, 100, 0, allocation_id="mine")
    fails(
        lambda: ledger.allocate({"cpu_slots": 1}, 100, 0, allocation_id="mine"),
        "PF002",
        f"{D}.allocation_id",
    )


def test_allocation_count_is_bounded() -> None:
    ledger = ResourceLedger(Capacity(10.0, 10), max_allocations=2)
    ledger.allocate({"cpu_slots": 1}, 100, 0)
    ledger.allocate({"cpu_slots": 1}, 300, 0)
    err = fails(lambda: ledger.allocate({"cpu_slots": 1}, 100, 50), "PF004")
    assert err.details["reason"] == "too_many_allocations"
    assert err.retry_delay_ms == 50


requests = st.lists(
    st.tuples(
        st.sampled_from(["alloc", "release", "tick"]),
        st.floats(0, 400, allow_nan=False),
        st.integers(0, 4),
        st.integers(1, 500),
    ),
    max_size=60,
)


@given(requests)
def test_never_over_capacity_and_usage_matches_live_leases(ops: list) -> None:
    """Whatever happens, allocated ≤ capacity and usage sums exactly the live leases."""
    ledger = ResourceLedger(Capacity(1000.0, 8))
    now = 0
    granted: list[str] = []
    for op, memory, slots, n in ops:
        if op == "alloc":
            if memory == 0 and slots == 0:
                continue
            try:
                granted.append(
                    ledger.allocate({"memory_mb": memory, "cpu_slots": slots}, n, now).allocation_id
                )
            except PacketFlowError as err:
                assert err.code == "PF004"
        elif op == "release" and granted:
            try:
                ledger.release(granted.pop(n % len(granted)), now)
            except PacketFlowError as err:
                assert err.code == "PF002"  # expired meanwhile
        else:
            now += n
        usage = ledger.usage(now)
        live = ledger.allocations(now)
        assert usage["allocated"]["memory_mb"] <= 1000.0 + 1e-9
        assert usage["allocated"]["cpu_slots"] <= 8
        assert usage["allocations"] == len(live)
        assert all(a.expires_at > now for a in live)
        assert usage["allocated"]["cpu_slots"] == sum(a.cpu_slots for a in live)
