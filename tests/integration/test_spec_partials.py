"""The partial sections of issue 13 against real gateway and reactor processes, security
on: §4.2.2 processing_stats and chemical_analysis, §8.3 capacity_adjustments and I/O
figures, §9.1.3 chemical system health, §9.2's schedule rows, PF104, PF105 and PF501."""

from __future__ import annotations

import asyncio
import threading
import uuid
from typing import Any

import msgspec
import pytest

import packetflow
from packetflow.client import AsyncClient
from packetflow.protocol.capacity import effective_capacity
from packetflow.protocol.errors import PacketFlowError
from packetflow.protocol.messages import CapacityAdjustments

from ..prometheus import sample
from .cluster import Cluster, Node, wait_for

MODULE = "tests.integration.spec_elements"
UPPER = {"input": "abc", "operation": "uppercase"}


def _row(gateway: Node, reactor_id: str) -> dict[str, Any]:
    rows = gateway.get("/v1/reactors")["reactors"]
    return next(r for r in rows if r["reactor_id"] == reactor_id)


def _capacity_follows(row: dict[str, Any], announced: int, boost: float) -> bool:
    """Whether ``row`` reports ``boost`` and routes by the capacity it implies. A loaded
    host also reports cpu/disk pressure, which lowers the capacity further (§8.3)."""
    reported = row["capacity_adjustments"]
    if reported is None or reported["temporary_capacity_boost"] != boost:
        return False
    adjustments = msgspec.convert(reported, CapacityAdjustments)
    return bool(row["effective_capacity"] == effective_capacity(announced, adjustments, 0))


async def _direct(reactor: Node, group: str, element: str, data: dict[str, Any],
                  **packet: Any) -> dict[str, Any]:  # fmt: skip
    """One SUBMIT straight to a reactor (as its gateway would send it); the raw reply."""
    import aiohttp

    envelope = {
        "protocol_version": "1.0", "message_type": "submit", "message_id": f"msg_{uuid.uuid4()}",
        "timestamp": 1640995200000, "source_id": "test-gateway",
        "payload": {"packet": {"group": group, "element": element, "data": data, **packet}},
    }  # fmt: skip
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(reactor.url, headers=reactor.auth_headers()) as ws,
    ):
        await ws.send_str(msgspec.json.encode(envelope).decode())
        async with asyncio.timeout(10):
            while True:
                frame = msgspec.json.decode(await ws.receive_str())
                if (
                    isinstance(frame, dict)
                    and frame.get("correlation_id") == envelope["message_id"]
                ):
                    return frame


def test_4_2_2_reactor_result_carries_measured_stats_and_analysis(cluster: Cluster) -> None:
    reactor = cluster.reactor(None, "--specialization", "memory_bound")
    reply = asyncio.run(_direct(reactor, "df", "transform", {**UPPER, "input": ["x"] * 5000},
                                priority=7))  # fmt: skip
    assert reply["message_type"] == "result", reply
    stats = reply["payload"]["data"]["processing_stats"]
    assert set(stats) == {"duration_ms", "memory_used_mb", "cpu_usage_percent"}
    assert stats["memory_used_mb"] > 0.03  # 5000 items in and out, ~20 KB each way
    assert 0 <= stats["cpu_usage_percent"] <= 100
    analysis = reply["payload"]["chemical_analysis"]
    assert analysis["affinity_score"] == 0.9  # df on memory_bound, §3.3
    assert 0 < analysis["bond_strength"] <= 0.9
    assert 0 < analysis["processing_efficiency"] <= 1
    assert analysis["optimization_applied"] is False


def test_10_1_2_pf104_from_a_reactor_for_miscalculated_properties(cluster: Cluster) -> None:
    reactor = cluster.reactor(None)
    right = {
        "reactivity": 0.8,
        "ionization_energy": 0.7,
        "atomic_radius": 1.0,
        "electronegativity": 0.56,
    }  # fmt: skip  (wire example 2: df at priority 7)
    ok = asyncio.run(_direct(reactor, "df", "transform", UPPER, priority=7,
                             chemical_properties=right))  # fmt: skip
    assert ok["message_type"] == "result"
    # Appendix B's reading of electronegativity (x ionization energy) instead of DESIGN §4.
    wrong = {**right, "electronegativity": round(0.7 * 0.7, 3)}
    err = asyncio.run(_direct(reactor, "df", "transform", UPPER, priority=7,
                              chemical_properties=wrong))  # fmt: skip
    assert err["message_type"] == "error"
    payload = err["payload"]
    assert payload["error_code"] == "PF104"
    assert payload["error_category"] == "chemical_error"
    assert payload["retry_possible"] is False
    assert payload["error_details"]["mismatches"] == {
        "electronegativity": {"expected": 0.56, "received": 0.49}}  # fmt: skip


def test_10_1_3_pf501_for_a_real_out_of_memory_and_a_reactor_past_its_budget(
    cluster: Cluster,
) -> None:
    gateway = cluster.gateway()
    cluster.reactor(gateway, "--module", MODULE)
    with packetflow.connect_sync(gateway.url) as pf:
        with pytest.raises(PacketFlowError) as info:
            pf.submit("df", "hog", {})
        assert info.value.code == "PF501"
        assert not info.value.retryable
        assert pf.submit("df", "transform", UPPER).data["result"] == "ABC"  # still serving
    tight = cluster.reactor(None, "--memory-limit-mb", "1")
    err = asyncio.run(_direct(tight, "df", "transform", UPPER))
    assert err["payload"]["error_code"] == "PF501"
    assert err["payload"]["error_details"]["reason"] == "memory_exhausted"
    assert asyncio.run(_direct(tight, "cf", "ping", {}))["message_type"] == "result"


def test_8_3_capacity_adjustments_drive_the_gateways_routing_and_queue(cluster: Cluster) -> None:
    gateway = cluster.gateway()
    reactor = cluster.reactor(gateway, "--module", MODULE, "--max-concurrent", "4",
                              "--heartbeat-interval", "0.2")  # fmt: skip
    assert _row(gateway, reactor.id)["max_capacity"] == 4
    # Heartbeats report §8.3's I/O figures (measured between two heartbeats).
    beat = wait_for(lambda: reactor.get("/health"), what="the reactor's heartbeat")
    wait_for(lambda: _capacity_follows(_row(gateway, reactor.id), 4, 1.0),
             what="the gateway to route by the reported capacity")  # fmt: skip
    wait_for(lambda: reactor.get("/health")["load_metrics"]["resource_utilization"]
             .get("network_io_percent") is not None, what="I/O figures")  # fmt: skip
    util = reactor.get("/health")["load_metrics"]["resource_utilization"]
    assert 0 <= util["disk_io_percent"] <= 100 and 0 <= util["network_io_percent"] <= 100
    assert beat["capacity_adjustments"]["temporary_capacity_boost"] == 1.0
    with packetflow.connect_sync(gateway.url) as pf:
        # rm:scale changes concurrency without a re-announce: the boost tells the gateway.
        assert pf.submit("rm", "scale", {"max_concurrent": 1}).data["new"] == 1
        wait_for(lambda: _capacity_follows(_row(gateway, reactor.id), 4, 0.25),
                 what="the gateway to use the reported capacity")  # fmt: skip
        assert _row(gateway, reactor.id)["effective_capacity"] == 1
        # Three slow packets at once: one runs, the others wait in the gateway's queue.
        results: list[Any] = []

        def submit() -> None:
            with packetflow.connect_sync(gateway.url) as own:
                results.append(own.submit("df", "hold", {"seconds": 1.0}).data)

        threads = [threading.Thread(target=submit) for _ in range(3)]
        for t in threads:
            t.start()
        wait_for(lambda: gateway.get("/health")["queue_depth"] >= 2,
                 what="packets waiting in the gateway's queue")  # fmt: skip
        assert _row(gateway, reactor.id)["in_flight"] == 1
        for t in threads:
            t.join(30)
        assert len(results) == 3
        pf.submit("rm", "scale", {"max_concurrent": 8})
        wait_for(lambda: _capacity_follows(_row(gateway, reactor.id), 4, 2.0),
                 what="the raised capacity")  # fmt: skip
        assert _row(gateway, reactor.id)["effective_capacity"] >= 2


def test_9_2_every_schedule_row_runs(cluster: Cluster) -> None:
    gateway = cluster.gateway("--health-scale", "0.02")  # chemical row every 6 s
    reactor = cluster.reactor(gateway)

    def probed(element: str) -> float:
        import urllib.request

        request = urllib.request.Request(reactor.http + "/metrics", headers=reactor.auth_headers())
        with urllib.request.urlopen(request, timeout=5) as resp:
            text = resp.read().decode()
        group, _, name = element.partition(":")
        return (
            sample(
                text,
                "packetflow_packets_processed_total",
                group=group,
                element=name,
                status="success",
            )
            or 0.0
        )

    for element in ("cf:ping", "cf:health", "rm:monitor", "mc:analyze"):
        wait_for(lambda e=element: probed(e) >= 1, 30.0, f"the {element} probe")  # type: ignore[misc]
    assert cluster.health_of(gateway, reactor.id) == "healthy"


async def _coordinate_run(url: str, molecule_id: str, packets: list[dict[str, Any]],
                          bonds: list[dict[str, Any]]) -> dict[str, Any]:  # fmt: skip
    payload = {"coordination_type": "initiate", "molecule_id": molecule_id,
               "molecular_structure": {"packets": packets, "bonds": bonds}}  # fmt: skip
    async with AsyncClient(url) as pf, asyncio.timeout(30):
        async for msg in pf.coordinate(payload):
            body: dict[str, Any] = msgspec.to_builtins(msg.payload)
            if body["coordination_type"] in ("complete", "abort"):
                return body
    raise AssertionError("no complete")


async def _ask(url: str, payload: dict[str, Any]) -> Any:
    async with AsyncClient(url) as pf, asyncio.timeout(10):
        try:
            return await anext(pf.coordinate(payload))
        except PacketFlowError as err:
            return err


def test_9_1_3_chemical_health_from_molecule_history_and_pf105(cluster: Cluster) -> None:
    gateway = cluster.gateway()
    cluster.reactor(gateway)
    before = gateway.get("/health")["chemical_health"]
    assert before["bond_success_rate"] is None and before["molecular_participation"] == 0

    def chain(ops: list[str]) -> list[dict[str, Any]]:
        return [{"id": f"p{i}", "group": "df", "element": "transform",
                 "data": {"input": "x", "operation": op}} for i, op in enumerate(ops)]  # fmt: skip

    bonds = [
        {"from": "p0", "to": "p1", "type": "ionic"},
        {"from": "p1", "to": "p2", "type": "ionic"},
    ]
    ok_ops, bad_ops = ["uppercase", "lowercase", "trim"], ["uppercase", "explode", "trim"]
    good = asyncio.run(_coordinate_run(gateway.url, "mol-good", chain(ok_ops), bonds))
    assert good["status"] == "success", good
    bad = asyncio.run(_coordinate_run(gateway.url, "mol-bad", chain(bad_ops), bonds))
    assert bad["status"] == "failed", bad
    health = gateway.get("/health")["chemical_health"]
    # Bonds, not packets: 2 held in the good run; both broke in the bad one (p1 failed,
    # so p0->p1 broke at its target and p1->p2 at its source). Packets: 4 of 6 succeeded.
    assert health["bond_success_rate"] == 0.5
    assert health["bonds_observed"] == 4
    assert health["molecular_stability"] == 0.75  # 1.0 and 0.5 (only p0's bond "won")
    assert health["molecules_by_status"] == {"success": 1, "failed": 1}
    assert health["molecular_participation"] == 2
    assert health["optimization_performance"] is None  # nothing was optimized
    # PF105: applying an optimization to a molecule that already finished.
    answer = asyncio.run(_ask(gateway.url, {"coordination_type": "optimize",
                                            "molecule_id": "mol-good", "apply": True}))  # fmt: skip
    assert isinstance(answer, PacketFlowError)
    assert answer.code == "PF105"
    assert answer.details["reason"] == "molecule_not_running"


def test_8_3_a_draining_reactor_reports_maintenance_and_gets_nothing_new(
    cluster: Cluster,
) -> None:
    gateway = cluster.gateway()
    leaving = cluster.reactor(gateway, "--module", MODULE, "--id", "leaving",
                              "--heartbeat-interval", "0.2", "--grace", "20")  # fmt: skip
    held: list[Any] = []

    def hold() -> None:
        with packetflow.connect_sync(gateway.url) as own:
            held.append(own.submit("df", "hold", {"seconds": 3.0}, timeout_ms=20_000).data)

    holder = threading.Thread(target=hold)
    holder.start()
    wait_for(lambda: _row(gateway, leaving.id)["in_flight"] == 1, what="the held packet")
    with packetflow.connect_sync(gateway.url) as pf:
        pf.submit("cf", "shutdown", {"grace_ms": 20_000})
    wait_for(lambda: _row(gateway, leaving.id)["effective_capacity"] == 0,
             what="the gateway to stop giving the draining reactor work")  # fmt: skip
    window = _row(gateway, leaving.id)["capacity_adjustments"]["scheduled_maintenance"]
    assert window["reason"] == "draining" and window["start_at"] > 0
    # New work goes to a reactor that is not leaving.
    staying = cluster.reactor(gateway, "--id", "staying")
    with packetflow.connect_sync(gateway.url) as pf:
        assert pf.submit("df", "transform", UPPER).reactor_id == staying.id
    holder.join(30)
    assert held == [{"held": 3.0}]  # what ran there finished
