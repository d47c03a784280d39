"""The rm elements of DESIGN §10 on a real ReactorRuntime: allocate/deallocate against the
lease ledger (PF004 over capacity), monitor's real figures, scale changing the live
concurrency limit (queued packets start at once), balance's honest report."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from packetflow.client import AsyncClient
from packetflow.protocol.errors import NetworkTimeout
from packetflow.reactor.elements import rm
from packetflow.reactor.registry import Registry
from packetflow.reactor.runtime import ReactorConfig, ReactorRuntime

from .expect import poll
from .test_elements_co import FakeGateway, fails, make_ctx, row


def ctx_for(rt: ReactorRuntime | None, gateway: Any = None) -> Any:
    return make_ctx(rt, gateway, group="rm")


@pytest.fixture
def small_capacity(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 1,000 MB / 8 slot reactor (the module constants of rm.py)."""
    monkeypatch.setattr(rm, "MEMORY_CAPACITY_MB", 1000.0)
    monkeypatch.setattr(rm, "CPU_SLOTS", 8)


# ---------------------------------------------------------------------------------------------
# allocate / deallocate


async def test_allocate_and_deallocate(runtime: ReactorRuntime, small_capacity: None) -> None:
    out = await rm.allocate(
        {"resources": {"memory_mb": 400, "cpu_slots": 2}, "lease_ms": 60_000}, ctx_for(runtime)
    )
    assert out["resources"] == {"memory_mb": 400.0, "cpu_slots": 2}
    assert out["lease_ms"] == 60_000 and out["expires_at"] > 0
    assert out["available"] == {"memory_mb": 600.0, "cpu_slots": 6}
    assert out["reactor_id"] == "reactor-test"
    released = await rm.deallocate({"allocation_id": out["allocation_id"]}, ctx_for(runtime))
    assert released == {
        "released": True,
        "allocation_id": out["allocation_id"],
        "resources": {"memory_mb": 400.0, "cpu_slots": 2},
    }
    await fails(
        rm.deallocate({"allocation_id": out["allocation_id"]}, ctx_for(runtime)),
        "PF002",
        "allocation_id",
    )


async def test_allocate_over_capacity_is_pf004(
    runtime: ReactorRuntime, small_capacity: None
) -> None:
    await rm.allocate({"resources": {"memory_mb": 700}}, ctx_for(runtime))
    err = await fails(rm.allocate({"resources": {"memory_mb": 400}}, ctx_for(runtime)), "PF004")
    assert err.retryable and err.retry_delay_ms and err.retry_delay_ms > 0
    assert err.details["reason"] == "insufficient_capacity"
    err = await fails(rm.allocate({"resources": {"cpu_slots": 9}}, ctx_for(runtime)), "PF004")
    assert err.details["reason"] == "exceeds_total_capacity"


async def test_default_capacity_is_this_machine(runtime: ReactorRuntime) -> None:
    import os

    import psutil

    cap = rm.machine_capacity()
    assert cap.cpu_slots == (os.cpu_count() or 1) * rm.CPU_SLOTS_PER_CORE
    assert abs(cap.memory_mb - psutil.virtual_memory().total / 2**20) < 1
    out = await rm.allocate({"resources": {"cpu_slots": 1}, "lease_ms": 1000}, ctx_for(runtime))
    assert out["available"]["cpu_slots"] == cap.cpu_slots - 1


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({}, "resources"),
        ({"resources": 5}, "resources"),
        ({"resources": {"memory_mb": -1}}, "resources.memory_mb"),
        ({"resources": {"cpu_slots": 0.5}}, "resources.cpu_slots"),
        ({"resources": {"disk_gb": 1}}, "resources.disk_gb"),
        ({"resources": {"cpu_slots": 1}, "lease_ms": 0}, "lease_ms"),
        ({"resources": {"cpu_slots": 1}, "lease_ms": "1s"}, "lease_ms"),
    ],
)
async def test_allocate_bad_input_pf002(
    runtime: ReactorRuntime, small_capacity: None, data: dict, field: str
) -> None:
    await fails(rm.allocate(data, ctx_for(runtime)), "PF002", field)


@pytest.mark.parametrize("data", [{}, {"allocation_id": 5}, {"allocation_id": "nope"}])
async def test_deallocate_bad_input_pf002(runtime: ReactorRuntime, data: dict) -> None:
    await fails(rm.deallocate(data, ctx_for(runtime)), "PF002", "allocation_id")


async def test_ledgers_are_per_reactor(runtime: ReactorRuntime, small_capacity: None) -> None:
    other = ReactorRuntime(ReactorConfig(reactor_id="other"), Registry())
    try:
        out = await rm.allocate({"resources": {"memory_mb": 1000}}, ctx_for(runtime))
        await rm.allocate({"resources": {"memory_mb": 1000}}, ctx_for(other))
        await fails(
            rm.deallocate({"allocation_id": out["allocation_id"]}, ctx_for(other)),
            "PF002",
            "allocation_id",
        )
    finally:
        other.close()


# ---------------------------------------------------------------------------------------------
# monitor and scale, with real queued work


class FakePeer:
    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.seq = 0

    def send(self, frame: bytes) -> bool:
        self.frames.append(frame)
        return True

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq


@pytest.fixture
async def busy() -> AsyncIterator[tuple[ReactorRuntime, asyncio.Event, FakePeer]]:
    """A runtime with max_concurrent 1, one df:slow running and two queued."""
    registry = Registry()
    gate = asyncio.Event()

    @registry.element("df", "slow")
    async def slow(data: dict, ctx: Any) -> dict:
        await gate.wait()
        return {"ok": True}

    rt = ReactorRuntime(ReactorConfig(reactor_id="busy", max_concurrent_packets=1), registry)
    peer = FakePeer()
    client = AsyncClient("ws://unused.invalid/ws")
    for i in range(3):
        rt.submit(client.build_submit("df", "slow", {}, packet_id=f"p{i}"), peer)  # type: ignore[arg-type]
    try:
        yield rt, gate, peer
    finally:
        gate.set()
        await asyncio.sleep(0.01)
        rt.close()


async def test_monitor_reports_real_figures(busy: tuple[ReactorRuntime, Any, Any]) -> None:
    rt, _, _ = busy
    out = await rm.monitor({}, ctx_for(rt))
    assert out["reactor_id"] == "busy"
    cpu, memory = out["cpu"], out["memory"]
    assert 0.0 <= cpu["system_percent"] <= 100.0 and cpu["cores"] >= 1
    assert cpu["process_percent"] >= 0.0
    assert memory["process_rss_mb"] > 1 and memory["system_total_mb"] > memory["process_rss_mb"]
    assert 0 < memory["system_available_mb"] <= memory["system_total_mb"]
    assert out["open_file_descriptors"] > 0
    assert isinstance(out["network_connections"], int)
    assert out["queue"] == {
        "depth": 2,
        "by_group": {"df": 2},
        "capacity": rt.config.max_queue,
        "in_flight": 1,
        "in_flight_by_group": {"df": 1},
        "max_concurrent_packets": 1,
        "load_factor": 1.0,
    }
    assert out["allocations"]["allocations"] == 0


async def test_scale_up_starts_queued_packets(busy: tuple[ReactorRuntime, Any, Any]) -> None:
    rt, gate, peer = busy
    out = await rm.scale({"max_concurrent": 3}, ctx_for(rt))
    assert out == {"old": 1, "new": 3, "in_flight": 3, "queued": 0}
    assert rt.config.max_concurrent_packets == 3
    gate.set()
    await poll(lambda: len(peer.frames) == 3, "the three packets to be answered")
    assert len(peer.frames) == 3 and all(b'"status":"success"' in f for f in peer.frames)


async def test_scale_down_lets_running_packets_finish(
    busy: tuple[ReactorRuntime, Any, Any],
) -> None:
    rt, _, _ = busy
    await rm.scale({"max_concurrent": 3}, ctx_for(rt))
    out = await rm.scale({"max_concurrent": 1}, ctx_for(rt))
    assert out["old"] == 3 and out["new"] == 1 and out["in_flight"] == 3


@pytest.mark.parametrize("value", [0, 10_001, "5", True, 2.5, None])
async def test_scale_bad_input_pf002(runtime: ReactorRuntime, value: Any) -> None:
    data = {} if value is None else {"max_concurrent": value}
    await fails(rm.scale(data, ctx_for(runtime)), "PF002", "max_concurrent")
    assert runtime.config.max_concurrent_packets == ReactorConfig().max_concurrent_packets


# ---------------------------------------------------------------------------------------------
# balance


async def test_balance_without_gateway_reports_this_reactor(runtime: ReactorRuntime) -> None:
    out = await rm.balance({}, ctx_for(runtime))
    assert out["source"] == "reactor" and out["moved"] == []
    assert [r["reactor_id"] for r in out["reactors"]] == ["reactor-test"]
    assert out["recommendations"] == []


async def test_balance_recommends_for_reactors_well_above_the_mean(
    runtime: ReactorRuntime,
) -> None:
    rows = [row("r1", 0.9, specializations=["cpu_intensive"]), row("r2", 0.1), row("r3", 0.2)]
    out = await rm.balance({}, ctx_for(runtime, FakeGateway(rows=rows)))
    assert out["source"] == "gateway" and out["moved"] == []
    assert out["mean_load"] == pytest.approx(0.4)
    assert [r["reactor_id"] for r in out["reactors"]] == ["r1", "r2", "r3"]
    (rec,) = out["recommendations"]
    assert rec["reactor_id"] == "r1" and "rm:scale" in rec["actions"]
    assert "cpu_intensive" in rec["suggestion"]


async def test_balance_falls_back_when_the_registry_is_unreachable(
    runtime: ReactorRuntime,
) -> None:
    gw = FakeGateway()
    gw.discover_error = NetworkTimeout("down")
    out = await rm.balance({}, ctx_for(runtime, gw))
    assert out["source"] == "reactor"


def test_recommend_margin() -> None:
    rows = [{"reactor_id": "a", "load_factor": 0.5}, {"reactor_id": "b", "load_factor": 0.1}]
    assert rm.recommend(rows) == []  # 0.5 is not more than 0.25 above the mean 0.3
    rows.append({"reactor_id": "c", "load_factor": 0.0})
    assert [r["reactor_id"] for r in rm.recommend(rows, margin=0.2)] == ["a"]


async def test_rm_needs_a_runtime_pf503() -> None:
    await fails(rm.monitor({}, ctx_for(None)), "PF503")
    await fails(rm.scale({"max_concurrent": 2}, ctx_for(None)), "PF503")


def test_register_adds_the_five_rm_elements() -> None:
    registry = Registry()
    rm.register(registry)
    assert {s.key for s in registry} == {
        "rm:allocate",
        "rm:deallocate",
        "rm:monitor",
        "rm:scale",
        "rm:balance",
    }
