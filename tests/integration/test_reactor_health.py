"""A client's mistakes never count against a reactor (hardening issue 5; PFAP §9.4.1,
§10.1): bad input is answered at once, not retried, and leaves every reactor healthy and
routing where it was."""

from __future__ import annotations

import urllib.request

import pytest

import packetflow
from packetflow.protocol.chemistry import SPECIALIZATIONS
from packetflow.protocol.errors import PacketFlowError

from ..prometheus import sample
from .cluster import Cluster, Node, wait_for

BAD_SUBMITS = 15  # of each kind: past error_rate_min_samples (10), so a count would degrade


def _retries(gateway: Node) -> float:
    request = urllib.request.Request(gateway.http + "/metrics", headers=gateway.auth_headers())
    with urllib.request.urlopen(request, timeout=5) as resp:
        text = resp.read().decode()
    return sample(text, "packetflow_gateway_retries_total") or 0.0


def _errors_reported(gateway: Node) -> int:
    """ERRORs the reactors' latest HEARTBEATs say they answered (health probes are packets
    too, so packets_processed alone says nothing about the bad ones)."""
    return sum(
        sum(((row["performance_metrics"] or {}).get("errors_by_code") or {}).values())
        for row in gateway.get("/v1/reactors")["reactors"]
    )


def test_bad_input_degrades_no_reactor_and_moves_no_routing_9_4_1(cluster: Cluster) -> None:
    # Short health windows and heartbeats: a miscounted error would show within seconds.
    gateway = cluster.gateway("--health-scale", "0.05")
    reactors = [
        cluster.reactor(
            gateway, "--specialization", spec, "--id", spec, "--heartbeat-interval", "0.2"
        )
        for spec in SPECIALIZATIONS
    ]
    with packetflow.connect_sync(gateway.url) as pf:
        good = {"input": "abc", "operation": "uppercase"}
        best = pf.submit("df", "transform", good).reactor_id
        assert best in {r.id for r in reactors}
        retries_before = _retries(gateway)
        for _ in range(BAD_SUBMITS):
            with pytest.raises(PacketFlowError) as bad_data:
                pf.submit("df", "transform", {"input": "abc", "operation": "explode"})
            assert bad_data.value.code == "PF002"
            assert not bad_data.value.retryable
            with pytest.raises(PacketFlowError) as missing:
                pf.submit("df", "load", {"source": "file://no/such/file.csv"})
            assert missing.value.code == "PF005"
            assert missing.value.details["reason"] == "file_not_found"
            assert not missing.value.retryable  # retry_possible false on the wire
        # Answered by the first reactor that ran it: never retried elsewhere.
        assert _retries(gateway) == retries_before

        # Wait for heartbeats sent after every bad packet was answered (once each).
        wait_for(lambda: _errors_reported(gateway) >= 2 * BAD_SUBMITS, 20.0,
                 "heartbeats reporting the bad packets")  # fmt: skip
        assert _errors_reported(gateway) == 2 * BAD_SUBMITS
        rows = gateway.get("/v1/reactors")["reactors"]
        assert {r["reactor_id"]: r["health"] for r in rows} == {r.id: "healthy" for r in reactors}
        for row in rows:
            assert row["performance_metrics"]["error_rate"] == 0.0
        # Routing unchanged: the same best match still takes the element.
        assert pf.submit("df", "transform", good).reactor_id == best


def test_a_reactor_past_its_memory_budget_is_marked_failed_9_4_1(cluster: Cluster) -> None:
    """Hardening issue 6: the memory figure a real reactor's HEARTBEAT carries is the one
    the gateway judges (§9.4.1 resource_exhaustion, memory >= 0.95 → failed)."""
    gateway = cluster.gateway()
    roomy = cluster.reactor(gateway, "--id", "roomy", "--heartbeat-interval", "0.2")
    tight = cluster.reactor(gateway, "--id", "tight", "--heartbeat-interval", "0.2",
                            "--memory-limit-mb", "1", linked=False)  # fmt: skip
    wait_for(lambda: cluster.health_of(gateway, tight.id) == "failed", 20.0,
             "the reactor over its memory budget to be marked failed")  # fmt: skip
    beat = tight.get("/health")
    assert beat["load_metrics"]["resource_utilization"]["memory_percent"] >= 95
    # The one within its budget, sending the same heartbeats, stays healthy.
    assert cluster.health_of(gateway, roomy.id) == "healthy"
