"""protocol/reaction.py and the reactor runtime that feeds it: the §4.2.2 RESULT's
processing_stats (memory_used_mb, cpu_usage_percent measured per packet) and
chemical_analysis (bond_strength, processing_efficiency, optimization_applied)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from packetflow.protocol.messages import ChemicalPropertiesWire
from packetflow.protocol.reaction import (
    MIB,
    applied_optimizations,
    chemical_analysis,
    packet_affinity,
    processing_stats,
    property_mismatches,
)
from packetflow.reactor.context import Context

from .test_runtime import Harness, error_of


@pytest.fixture
async def h() -> AsyncIterator[Harness]:
    harness = Harness()
    try:
        yield harness
    finally:
        if harness.rt is not None:
            harness.rt.close()


def stats_of(*args: Any) -> dict[str, float]:
    out: dict[str, float] = json.loads(processing_stats(*args))
    return out


def test_4_2_2_processing_stats_from_measurements() -> None:
    stats = stats_of(0.5, 0.25, 1024, 2048, 3 * 2**20)
    assert stats == {"duration_ms": 500.0, "memory_used_mb": 3.0029, "cpu_usage_percent": 50.0}


def test_4_2_2_cpu_of_one_thread_never_passes_100_percent_but_a_process_may() -> None:
    assert stats_of(0.1, 0.1001, 0, 0)["cpu_usage_percent"] == 100.0
    assert stats_of(0.1, 0.2, 0, 0, 0, False)["cpu_usage_percent"] == 200.0
    assert stats_of(0.0, None, 0, 0)["cpu_usage_percent"] == 0.0
    assert stats_of(0.1, -0.1, 0, -5)["cpu_usage_percent"] == 0.0
    assert stats_of(0.1, None, 0, 0, -(2**30))["memory_used_mb"] == 0.0


def test_4_2_2_bond_strength_is_affinity_scaled_by_the_timeout_left() -> None:
    fresh = chemical_analysis(affinity=0.9, remaining_fraction=1.0, duration_ms=1,
                              baseline_ms=None)  # fmt: skip
    late = chemical_analysis(affinity=0.9, remaining_fraction=0.1, duration_ms=1,
                             baseline_ms=None)  # fmt: skip
    assert fresh["bond_strength"] == 0.9
    assert late["bond_strength"] == pytest.approx(0.09)
    over = chemical_analysis(affinity=1.1, remaining_fraction=-1, duration_ms=1, baseline_ms=1)
    assert over["bond_strength"] == 0.0


def test_4_2_2_processing_efficiency_against_the_elements_own_average() -> None:
    def eff(duration: float, baseline: float | None) -> float:
        out = chemical_analysis(affinity=0.5, remaining_fraction=1, duration_ms=duration,
                                baseline_ms=baseline)  # fmt: skip
        return float(out["processing_efficiency"])

    assert eff(10, None) == 1.0  # nothing to compare with
    assert eff(10, 20) == 1.0  # faster than usual
    assert eff(20, 10) == 0.5  # twice as slow as usual


def test_4_2_2_optimization_applied_only_for_known_kinds_in_metadata() -> None:
    assert applied_optimizations(None) == []
    assert applied_optimizations({"optimizations": "locality"}) == []
    assert applied_optimizations({"optimizations": ["locality", "bogus", 3]}) == ["locality"]
    out = chemical_analysis(affinity=0.5, remaining_fraction=1, duration_ms=1, baseline_ms=1,
                            optimizations=["locality"])  # fmt: skip
    assert out["optimization_applied"] is True
    assert out["optimizations"] == ["locality"]
    plain = chemical_analysis(affinity=0.5, remaining_fraction=1, duration_ms=1, baseline_ms=1)
    assert plain["optimization_applied"] is False
    assert "optimizations" not in plain


def test_4_2_2_affinity_from_the_hint_else_the_3_3_matrix() -> None:
    assert packet_affinity(0.87, "df", ["memory_bound"]) == 0.87
    assert packet_affinity(None, "df", ["memory_bound", "cpu_intensive"]) == 0.9
    assert packet_affinity(True, "cf", ["cpu_intensive"]) == 0.9
    assert packet_affinity(-1, "cf", ["nothing_known"]) == 0.0


# ---------------------------------------------------------------- the runtime measures


def cpu_ms(stats: dict[str, float]) -> float:
    return stats["cpu_usage_percent"] * stats["duration_ms"] / 100.0


def _burn(seconds: float) -> int:
    end, n = time.thread_time() + seconds, 0
    while time.thread_time() < end:
        n += 1
    return n


def hog_in_process(data: dict[str, Any], ctx: Context) -> dict[str, Any]:
    big = b"x" * (128 * 2**20)  # pages touched: resident
    return {"len": len(big)}


def burn_in_process(data: dict[str, Any], ctx: Context) -> dict[str, Any]:
    return {"n": _burn(data["s"])}


async def test_4_2_2_a_cpu_busy_thread_handler_reports_its_cpu(h: Harness) -> None:
    @h.element("df", "busy")
    def busy(data: dict[str, Any], ctx: Context) -> dict[str, Any]:
        return {"n": _burn(0.05)}

    @h.element("df", "idle")
    def idle(data: dict[str, Any], ctx: Context) -> dict[str, Any]:
        time.sleep(0.05)
        return {}

    h.start()
    busy_stats = (await h.call("df", "busy"))["payload"]["data"]["processing_stats"]
    idle_stats = (await h.call("df", "idle"))["payload"]["data"]["processing_stats"]
    # CPU time = percent x duration, whatever else the machine is doing meanwhile.
    assert cpu_ms(busy_stats) >= 45
    assert cpu_ms(idle_stats) < 10


async def test_4_2_2_a_cpu_bound_handler_is_measured_in_its_process(h: Harness) -> None:
    h.element("mc", "burn", cpu_bound=True)(burn_in_process)
    h.start()
    stats = (await h.call("mc", "burn", {"s": 0.05}))["payload"]["data"]["processing_stats"]
    assert cpu_ms(stats) >= 45


async def test_4_2_2_memory_used_counts_data_result_and_new_peak(h: Harness) -> None:
    @h.element("df", "echo")
    async def echo(data: dict[str, Any], ctx: Context) -> dict[str, Any]:
        return {"echo": data["blob"]}

    # In a fresh worker process, whose peak memory the 128 MiB certainly raises.
    h.element("mc", "hog", cpu_bound=True)(hog_in_process)
    h.start()
    blob = "y" * (256 * 1024)  # within the 1 MiB frame, twice (data and result)
    echo_stats = (await h.call("df", "echo", {"blob": blob}))["payload"]["data"]
    assert echo_stats["processing_stats"]["memory_used_mb"] >= 2 * len(blob) / MIB
    hog_stats = (await h.call("mc", "hog"))["payload"]["data"]["processing_stats"]
    assert hog_stats["memory_used_mb"] >= 100


async def test_4_2_2_result_carries_chemical_analysis(h: Harness) -> None:
    h.start()
    reply = await h.call("cf", "ping", {"echo_data": "x"})
    analysis = reply["payload"]["chemical_analysis"]
    # cf on general_purpose (the harness's specialization) in the §3.3 matrix: 0.6.
    assert analysis["affinity_score"] == 0.6
    assert 0.5 < analysis["bond_strength"] <= 0.6
    assert analysis["processing_efficiency"] == 1.0  # its first ping
    assert analysis["optimization_applied"] is False
    meta = {"molecule_id": "m1", "optimizations": ["locality"]}
    optimized = await h.call("cf", "ping", {}, metadata=meta)
    assert optimized["payload"]["chemical_analysis"]["optimization_applied"] is True
    assert h.rt is not None and h.rt.chemical_health()["optimization_count"] == 1


async def test_9_1_3_reactor_bond_success_rate_counts_bonds_not_packets(h: Harness) -> None:
    def outcome(n: int) -> dict[str, Any]:
        if n == 2:
            raise RuntimeError("second call fails")
        return {}

    h.counted("flaky", outcome)
    h.start()
    meta = {"molecule_id": "mol_a"}
    await h.call("df", "flaky", {}, metadata=meta, dependencies=["a", "b", "c"])  # 3 held
    await h.call("df", "flaky", {}, metadata=meta, dependencies=["d"])  # 1 broken
    await h.call("df", "flaky", {}, metadata={"molecule_id": "mol_b"})  # no bonds
    await h.call("cf", "ping", {})  # not in a molecule
    assert h.rt is not None
    chem = h.rt.chemical_health()
    assert chem["bond_success_rate"] == 0.75
    assert chem["bonds_observed"] == 4
    assert chem["molecular_participation"] == 2
    assert chem["packets_observed"] == 4


# ---------------------------------------------------------------- PF104, PF501 (§10.1)


def test_10_1_2_property_mismatches_name_each_wrong_property() -> None:
    right = ChemicalPropertiesWire(0.8, 0.7, 1.0, 0.56)  # wire example 2: df, priority 7
    assert property_mismatches("df", 7, 0, right) == {}
    assert property_mismatches("df", 7, 0, ChemicalPropertiesWire(0.8, 0.7005, 1.0, 0.56)) == {}
    # §4.2.1's example: one dependency (radius 1.1) and electronegativity 0.6.
    wrong = property_mismatches("df", 7, 1, ChemicalPropertiesWire(0.8, 0.7, 1.0, 0.6))
    assert wrong == {"atomic_radius": {"expected": 1.1, "received": 1.0},
                     "electronegativity": {"expected": 0.56, "received": 0.6}}  # fmt: skip
    nan = ChemicalPropertiesWire(float("nan"), 0.7, 1.0, 0.56)
    assert list(property_mismatches("df", 7, 0, nan)) == ["reactivity"]


async def test_10_1_2_pf104_for_properties_off_the_calculator(h: Harness) -> None:
    h.start()
    good = {
        "reactivity": 0.6,
        "ionization_energy": 1.5,
        "atomic_radius": 1.2,
        "electronegativity": 0.6,
    }  # fmt: skip  (cf at priority 10)
    ok = await h.call("cf", "ping", {}, priority=10, chemical_properties=good)
    assert ok["message_type"] == "result"
    bad = await h.call("cf", "ping", {}, priority=10,
                       chemical_properties={**good, "electronegativity": 0.9})  # fmt: skip
    err = error_of(bad)
    assert err["error_code"] == "PF104"
    assert err["retry_possible"] is False
    assert err["error_details"]["field"] == "payload.packet.chemical_properties.electronegativity"
    assert err["error_details"]["mismatches"]["electronegativity"] == {"expected": 0.6,
                                                                      "received": 0.9}  # fmt: skip


async def test_10_1_2_property_check_can_be_turned_off() -> None:
    harness = Harness(verify_properties=False)
    try:
        harness.start()
        props = {"reactivity": 9, "ionization_energy": 9, "atomic_radius": 9,
                 "electronegativity": 9}  # fmt: skip
        reply = await harness.call("cf", "ping", {}, chemical_properties=props)
        assert reply["message_type"] == "result"
    finally:
        assert harness.rt is not None
        harness.rt.close()


async def test_10_1_3_pf501_when_a_handler_runs_out_of_memory(h: Harness) -> None:
    @h.element("df", "hog")
    def hog(data: dict[str, Any], ctx: Context) -> dict[str, Any]:
        return {"len": len(bytearray(2**62))}  # the allocator refuses: MemoryError

    h.start()
    err = error_of(await h.call("df", "hog"))
    assert err["error_code"] == "PF501"
    assert err["error_category"] == "resource_error"
    assert err["retry_possible"] is False
    assert err["error_details"]["reason"] == "memory_error"
    await h.ping()  # the reactor goes on


async def test_10_1_3_pf501_for_new_work_past_the_memory_budget() -> None:
    harness = Harness(memory_limit_mb=1.0)  # any Python process is past 95 % of 1 MB
    try:
        harness.start()
        err = error_of(await harness.call("df", "transform",
                                          {"input": "a", "operation": "uppercase"}))  # fmt: skip
        assert err["error_code"] == "PF501"
        assert err["error_details"]["reason"] == "memory_exhausted"
        assert err["error_details"]["memory_usage_percent"] >= 95
        await harness.ping()  # probes still answer: the gateway learns why by cf:health
        assert (await harness.call("rm", "monitor"))["message_type"] == "result"
    finally:
        assert harness.rt is not None
        harness.rt.close()
