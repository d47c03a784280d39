"""The ed, co, rm and mc:adapt elements of DESIGN §10 on a real reactor process used directly
(no gateway), over its WebSocket with the SDK."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import pytest

import packetflow
from packetflow.protocol.errors import PacketFlowError

from .cluster import Cluster, Node

D = "payload.packet.data"


@pytest.fixture
def reactor(cluster: Cluster, tmp_path: Path) -> Node:
    return cluster.reactor(
        None, "--id", "reactor-direct", "--max-concurrent", "4", "--data-dir", str(tmp_path)
    )


async def expect_error(call: Any, code: str, field: str | None = None) -> PacketFlowError:
    with pytest.raises(PacketFlowError) as info:
        await call
    assert info.value.code == code, (info.value.code, info.value.message)
    if field is not None:
        assert info.value.field == f"{D}.{field}"
    return info.value


async def test_publish_wakes_a_listener_on_the_reactor(reactor: Node) -> None:
    """ed:listen waits for the next event on the reactor's own bus; ed:publish delivers it."""
    async with packetflow.connect(reactor.url, headers=reactor.auth_headers()) as pf:
        listen = asyncio.ensure_future(
            pf.submit("ed", "listen", {"topic": "orders.*", "timeout_ms": 10_000})
        )
        deadline = time.monotonic() + 5
        while True:  # the listener subscribes when its packet starts; publish until it hears
            out = await pf.submit("ed", "publish", {"topic": "orders.created", "event": {"id": 42}})
            if out.data["delivered"] or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.02)
        assert out.data["delivered"] == 1 and out.data["topic"] == "orders.created"
        got = (await listen).data
        assert got["topic"] == "orders.created" and got["event"] == {"id": 42}
        assert got["sequence"] == out.data["sequence"]


async def test_listen_times_out_pf504_and_bad_topic_is_pf002(reactor: Node) -> None:
    async with packetflow.connect(reactor.url, headers=reactor.auth_headers()) as pf:
        start = time.monotonic()
        err = await expect_error(
            pf.submit("ed", "listen", {"topic": "quiet", "timeout_ms": 100}), "PF504"
        )
        assert time.monotonic() - start < 5
        assert err.details["reason"] == "listen_timeout"
        await expect_error(
            pf.submit("ed", "publish", {"topic": "a.*", "event": 1}), "PF002", "topic"
        )
        # and the connection stays usable (DESIGN §3)
        sig = await pf.submit("ed", "signal", {"name": "deploy", "value": 1})
        assert sig.data["accepted"] is True and sig.data["topic"] == "signal.deploy"
        # a reactor without a gateway cannot trigger
        await expect_error(
            pf.submit("ed", "trigger", {"packet": {"group": "cf", "element": "ping"}}), "PF503"
        )


async def test_sync_releases_two_parties(reactor: Node) -> None:
    async with packetflow.connect(reactor.url, headers=reactor.auth_headers()) as pf:
        first, second = await asyncio.gather(
            pf.submit("co", "sync", {"barrier": "stage-1", "parties": 2, "timeout_ms": 10_000}),
            pf.submit("co", "sync", {"barrier": "stage-1", "parties": 2, "timeout_ms": 10_000}),
        )
        for res in (first, second):
            assert res.data["released"] is True
            assert res.data["barrier"] == "stage-1" and res.data["parties"] == 2
        await expect_error(
            pf.submit("co", "sync", {"barrier": "alone", "parties": 2, "timeout_ms": 100}), "PF504"
        )


async def test_allocate_over_capacity_is_pf004(reactor: Node) -> None:
    slots = (os.cpu_count() or 1) * 4  # rm.CPU_SLOTS_PER_CORE: the reactor's default capacity
    async with packetflow.connect(reactor.url, headers=reactor.auth_headers()) as pf:
        lease = await pf.submit(
            "rm", "allocate", {"resources": {"cpu_slots": slots}, "lease_ms": 60_000}
        )
        assert lease.data["available"]["cpu_slots"] == 0
        err = await expect_error(
            pf.submit("rm", "allocate", {"resources": {"cpu_slots": 1}}), "PF004"
        )
        assert err.retryable and err.retry_delay_ms and err.retry_delay_ms > 0
        assert err.details["reason"] == "insufficient_capacity"
        done = await pf.submit("rm", "deallocate", {"allocation_id": lease.data["allocation_id"]})
        assert done.data["released"] is True
        again = await pf.submit("rm", "allocate", {"resources": {"cpu_slots": 1}})
        assert again.data["allocation_id"] != lease.data["allocation_id"]
        await expect_error(
            pf.submit("rm", "deallocate", {"allocation_id": "nope"}), "PF002", "allocation_id"
        )


async def test_scale_monitor_and_adapt(reactor: Node) -> None:
    async with packetflow.connect(reactor.url, headers=reactor.auth_headers()) as pf:
        scaled = await pf.submit("rm", "scale", {"max_concurrent": 8})
        assert scaled.data["old"] == 4 and scaled.data["new"] == 8
        caps = (await pf.submit("cf", "introspect")).data["capacity"]
        assert caps["max_concurrent_packets"] == 8
        await expect_error(
            pf.submit("rm", "scale", {"max_concurrent": 0}), "PF002", "max_concurrent"
        )

        mon = (await pf.submit("rm", "monitor")).data
        assert mon["reactor_id"] == "reactor-direct"
        assert 0.0 <= mon["cpu"]["system_percent"] <= 100.0
        assert mon["memory"]["process_rss_mb"] > 1
        assert mon["open_file_descriptors"] > 0 and mon["network_connections"] >= 1
        assert mon["queue"]["max_concurrent_packets"] == 8
        assert mon["queue"]["in_flight"] >= 1  # the monitor packet itself

        adapt = (await pf.submit("mc", "adapt")).data
        assert adapt["old"] == 8 and 1 <= adapt["new"] <= 10_000
        assert adapt["reason"] in ("steady", "queue_backlog", "cpu_saturated", "latency_degraded")
        assert set(adapt["observed"]) >= {"queue_depth", "cpu_percent", "p99_ms"}

        balance = (await pf.submit("rm", "balance")).data
        assert balance["source"] == "reactor" and balance["moved"] == []
        # the gateway's elements are refused honestly without one
        await expect_error(pf.submit("mc", "optimize"), "PF503")
        await expect_error(
            pf.submit("co", "gather", {"packet": {"group": "cf", "element": "ping"}}), "PF503"
        )
