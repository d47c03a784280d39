"""The co elements through a real gateway and three reactors (DESIGN §10): scatter splits
work across reactors, consensus runs replicas on different reactors and votes, gather
and broadcast reach every reactor."""

from __future__ import annotations

import pytest

import packetflow
from packetflow.protocol.errors import PacketFlowError

from .cluster import Cluster, Node

REACTORS = ("co-a", "co-b", "co-c")


@pytest.fixture
def gateway(cluster: Cluster) -> Node:
    gw = cluster.gateway()
    for rid in REACTORS:
        cluster.reactor(gw, "--id", rid)
    return gw


def test_scatter_runs_one_chunk_per_reactor_in_input_order(gateway: Node) -> None:
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta"]
    with packetflow.connect_sync(gateway.url) as pf:
        out = pf.submit("co", "scatter", {"input": words, "element": "df:transform",
                                          "data": {"operation": "uppercase"}}).data  # fmt: skip
    assert out["result"] == [w.upper() for w in words]
    assert out["chunks"] == 3 and sum(out["chunk_sizes"]) == len(words)
    assert sorted(out["reactor_ids"]) == sorted(REACTORS)  # really spread out


def test_consensus_votes_across_three_reactors(gateway: Node) -> None:
    packet = {"group": "df", "element": "reduce", "data": {"input": [1.5, 2.5, 3], "op": "sum"}}
    with packetflow.connect_sync(gateway.url) as pf:
        out = pf.submit("co", "consensus", {"packet": packet, "replicas": 3}).data
        assert out["decision"]["result"] == 7.0
        assert out["agreement"] == 1.0
        assert sorted(v["reactor_id"] for v in out["votes"]) == sorted(REACTORS)
        with pytest.raises(PacketFlowError) as info:
            pf.submit("co", "consensus", {"packet": packet, "replicas": 0})
        assert info.value.code == "PF002"
        assert info.value.field == "payload.packet.data.replicas"


def test_gather_and_broadcast_reach_every_reactor(gateway: Node) -> None:
    with packetflow.connect_sync(gateway.url) as pf:
        gathered = pf.submit("co", "gather",
                             {"packet": {"group": "cf", "element": "ping"}}).data  # fmt: skip
        assert sorted(gathered["results"]) == sorted(REACTORS)
        assert all(r["pong"] for r in gathered["results"].values())
        sent = pf.submit("co", "broadcast", {"message": {"cache": "flush"}}).data
        assert sent["delivered"] == 3 and sorted(sent["reactor_ids"]) == sorted(REACTORS)


def test_consensus_replicas_run_on_distinct_reactors_of_five(cluster: Cluster) -> None:
    """The hardening issue: with 5 reactors, 2 of 3 replicas ran on the same one. Two of
    the five are the router's favourites for df (memory_bound, §3.3 affinity 0.9 against
    0.7), so replicas left free to pick among reactors meant for none would meet there."""
    gw = cluster.gateway()
    for rid in ("five-a", "five-b", "five-c"):
        cluster.reactor(gw, "--id", rid, "--specialization", "io_intensive")
    for rid in ("five-d", "five-e"):
        cluster.reactor(gw, "--id", rid, "--specialization", "memory_bound")
    packet = {"group": "df", "element": "reduce", "data": {"input": [1.5, 2.5, 3], "op": "sum"}}
    with packetflow.connect_sync(gw.url) as pf:
        for _ in range(3):  # not a lucky draw: every run spreads
            out = pf.submit("co", "consensus", {"packet": packet, "replicas": 3}).data
            voters = [v["reactor_id"] for v in out["votes"]]
            assert len(set(voters)) == 3, voters
            assert out["distinct_reactors"] == 3
            assert out["decision"]["result"] == 7.0 and out["agreement"] == 1.0
