"""The dashboard's HTTP side on a real gateway process: public static files that hold no
data, and ``GET /v1/dashboard``, a snapshot bounded however much the gateway remembers
(10,000 packet stories → 200 packets) that a polling client cannot make the gateway grow."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from typing import Any

import psutil
import pytest

from packetflow.client import AsyncClient
from packetflow.gateway.dashboard import MAX_PACKETS, PUBLIC_PATHS, SNAPSHOT_PATH
from packetflow.gateway.server import MAX_STORIES
from packetflow.protocol.errors import PacketFlowError

from .cluster import Cluster, Node, wait_for


def fetch(node: Node, path: str, headers: dict[str, str] | None = None) -> tuple[int, Any, bytes]:
    request = urllib.request.Request(node.http + path, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers, err.read()


def snapshot(node: Node, query: str = "") -> dict[str, Any]:
    status, _, body = fetch(node, SNAPSHOT_PATH + query, node.auth_headers())
    assert status == 200, body
    return json.loads(body)


async def submit_many(url: str, count: int, *, chunk: int = 500) -> None:
    async with AsyncClient(url) as pf:
        for start in range(0, count, chunk):
            n = min(chunk, count - start)
            await asyncio.gather(*(pf.submit("cf", "ping", {}) for _ in range(n)))


def test_static_page_is_public_and_holds_no_data(cluster: Cluster) -> None:
    gateway = cluster.gateway()
    for path in sorted(PUBLIC_PATHS):
        status, headers, body = fetch(gateway, path)  # no credentials: the page is public
        assert status == 200, path
        assert body
        assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert gateway.id.encode() not in body  # data only comes with the snapshot
    _, headers, page = fetch(gateway, "/")
    assert headers["Content-Type"].startswith("text/html")
    assert b'id="signin-form"' in page
    assert SNAPSHOT_PATH not in PUBLIC_PATHS


def test_only_the_listed_assets_are_served(cluster: Cluster) -> None:
    gateway = cluster.gateway()
    for path in (
        "/dashboard/secret.txt",
        "/dashboard/..%2fserver.py",
        "/dashboard/%2e%2e%2fhttp.py",
        "/dashboard/",
        "/dashboard/app.js.map",
    ):
        status, _, body = fetch(gateway, path)  # not public: credentials first
        assert status == 401, (path, body[:200])
        status, _, body = fetch(gateway, path, gateway.auth_headers())
        assert status == 404, (path, body[:200])


def test_snapshot_shows_reactors_rates_errors_and_topics(cluster: Cluster) -> None:
    gateway = cluster.gateway()
    reactor = cluster.reactor(gateway, "--specialization", "cpu_intensive")

    async def traffic() -> None:
        await submit_many(gateway.url, 40)
        async with AsyncClient(gateway.url) as pf:
            await pf.submit("ed", "publish", {"topic": "orders.created", "event": {"n": 1}})
            with pytest.raises(PacketFlowError) as refused:
                await pf.submit("df", "transform", {"input": "x", "operation": "nope"})
            assert refused.value.code == "PF002"

    asyncio.run(traffic())
    snap = snapshot(gateway)
    row = next(r for r in snap["reactors"] if r["reactor_id"] == reactor.id)
    assert row["health"] == "healthy"
    assert row["specializations"] == ["cpu_intensive"]
    assert row["packets_per_second"] > 0
    assert row["p99_ms"] is not None and row["p99_ms"] > 0
    newest = snap["packets"][0]
    assert newest["reactor_id"] == reactor.id and newest["state"] == "failed"
    assert newest["error_code"] == "PF002"
    assert all(p["score"] is not None for p in snap["packets"])
    assert snap["events"]["topics"][0]["topic"] == "orders.created"
    assert snap["affinity"]["matrix"]["cf"]["cpu_intensive"] == 0.9
    assert snap["errors"]["totals"]["PF002"] == 1
    # Sampled once a second into the series.
    wait_for(lambda: any("PF002" in p["counts"] for p in snapshot(gateway)["errors"]["series"]),
             15, "PF002 in the error series")  # fmt: skip
    assert snap["molecule"] is None
    # An unknown molecule asked for: the snapshot still answers, with no DAG.
    assert snapshot(gateway, "?molecule=" + "x" * 5000)["molecule"] is None


def test_snapshot_is_bounded_and_polling_does_not_grow_the_gateway(cluster: Cluster) -> None:
    gateway = cluster.gateway()
    cluster.reactor(gateway, "--max-concurrent", "500")
    asyncio.run(submit_many(gateway.url, MAX_STORIES + 50))
    snap = snapshot(gateway)
    assert snap["packets_total"] == MAX_STORIES
    assert len(snap["packets"]) == MAX_PACKETS
    accepted = [p["accepted_at"] for p in snap["packets"]]
    assert accepted == sorted(accepted, reverse=True)  # newest first
    proc = psutil.Process(gateway.proc.pid)
    for _ in range(50):  # warm-up: allocator pools and caches reach their steady size
        snapshot(gateway)
    before = proc.memory_info().rss
    for _ in range(500):
        snapshot(gateway)
    grown = proc.memory_info().rss - before
    print(f"gateway RSS {before / 2**20:.1f} MiB, after 500 polls +{grown / 2**20:.2f} MiB")
    assert grown < 4 * 2**20
