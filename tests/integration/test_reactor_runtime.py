"""The reactor runtime in real processes (DESIGN §2, §4, §10; PFAP §4.2.4, §8.2, §8.3):
user-defined elements loaded with --module, misbehaving handlers, heartbeats, /health and
/metrics, and graceful shutdown by SIGTERM and by cf:shutdown."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest

import packetflow
from packetflow.protocol.errors import PacketFlowError

from ..prometheus import sample
from .cluster import Cluster, Node, wait_for

ROOT = Path(__file__).resolve().parents[2]
USER_ELEMENTS = ("--module", "tests.integration.user_elements")
T = TypeVar("T")


def start_reactor(cluster: Cluster, tmp_path: Path, *args: str,
                  gateway: Node | None = None) -> Node:  # fmt: skip
    """A reactor process that imports tests.integration.user_elements: the child gets the
    repository root on its path whatever directory pytest runs from."""
    path = [str(ROOT), str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])]
    cmd = [sys.executable, "-m", "packetflow", "--log-level", "WARNING", "reactor",
           "--port", "0", "--data-dir", str(tmp_path), *USER_ELEMENTS,
           "--accept-token-file", str(cluster.accept_token_file), *args]  # fmt: skip
    if gateway is not None:
        cmd += ["--gateway", gateway.url]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(path)})  # fmt: skip
    node = cluster.adopt(proc, f"reactor {args}", "reactor", tmp_path)
    if gateway is not None:
        cluster.wait_linked(gateway, node)
    return node


async def poll(check: Callable[[], Awaitable[T | None]], what: str, timeout: float = 10.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)


async def get(node: Node, path: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(node.http + path) as resp:
        return resp.status, await resp.text()


async def health(node: Node) -> tuple[int, dict[str, Any]]:
    status, body = await get(node, "/health")
    return status, json.loads(body)


async def in_flight(node: Node) -> int:
    _, body = await health(node)
    return int(body["health_status"]["in_flight"])


async def exit_code(proc: subprocess.Popen[bytes], timeout: float) -> int:
    return await asyncio.to_thread(proc.wait, timeout)


# ---------------------------------------------------------------- user-defined elements


def test_user_element_is_served_through_the_gateway_and_advertised(
    cluster: Cluster, tmp_path: Path
) -> None:
    """DESIGN §10: @reactor.element elements appear in introspect and in the announce."""
    gateway = cluster.gateway()
    reactor = start_reactor(cluster, tmp_path, "--id", "reactor-user",
                            "--heartbeat-interval", "0.2", gateway=gateway)  # fmt: skip
    with packetflow.connect_sync(gateway.url) as pf:
        res = pf.submit("df", "tokenize", {"text": "Packets Flow  Here", "lower": True})
        assert res.data["tokens"] == ["packets", "flow", "here"]
        assert res.data["count"] == 3
        assert res.reactor_id == "reactor-user"
        with pytest.raises(PacketFlowError) as info:
            pf.submit("df", "tokenize", {"text": 5})
        assert info.value.code == "PF002"
        assert info.value.field == "payload.packet.data.text"
        intro = pf.submit("cf", "introspect").data
    supported = {f"{p['group']}:{p['element']}": p for p in intro["supported_packets"]}
    assert supported["df:tokenize"]["contract"]["data"]["text"] == "string"
    assert supported["mc:square"]["cpu_bound"] is True
    assert "cf:ping" in supported  # the standard library is still there
    (row,) = [r for r in gateway.get("/v1/reactors")["reactors"] if r["reactor_id"] == reactor.id]
    assert {"df:tokenize", "mc:nap", "mc:square", "cf:ping"} <= set(row["capabilities"])

    def processed() -> int:
        rows = gateway.get("/v1/reactors")["reactors"]
        perf = next(r for r in rows if r["reactor_id"] == reactor.id)["performance_metrics"]
        return int(perf["packets_processed"]) if perf else 0

    # Heartbeats carry the reactor's own counts to the gateway (§4.2.4).
    wait_for(lambda: processed() >= 3, 10, "a heartbeat counting the packets")


# ---------------------------------------------------------------- misbehaving handlers


async def test_hanging_raising_and_garbage_handlers_never_take_the_reactor_down(
    cluster: Cluster, tmp_path: Path
) -> None:
    reactor = start_reactor(cluster, tmp_path)
    async with packetflow.connect(reactor.url, headers=reactor.auth_headers()) as pf:

        async def failure(element: str, data: dict[str, Any], **kw: Any) -> PacketFlowError:
            with pytest.raises(PacketFlowError) as info:
                await pf.submit("mc", element, data, **kw)
            pong = await pf.submit("cf", "ping", {"echo_data": element})
            assert pong.data["echo_data"] == element
            return info.value

        hung = await failure("nap", {"seconds": 30}, timeout_ms=300)
        assert (hung.code, hung.details["reason"], hung.retryable) == ("PF005", "timeout", True)
        hung_sync = await failure("nap_sync", {"seconds": 3}, timeout_ms=300)
        assert hung_sync.details["reason"] == "timeout"
        raised = await failure("boom", {})
        assert raised.code == "PF005"
        assert raised.details["exception_type"] == "KeyError"
        assert "no such widget" in raised.message
        assert "Traceback" not in json.dumps(raised.to_payload())
        garbage = await failure("garbage", {})
        assert garbage.details["reason"] == "result_not_serializable"
        assert garbage.retryable is False

        # Sync handlers run off the loop: a slow one does not stall cf:ping.
        slow = asyncio.ensure_future(pf.submit("mc", "nap_sync", {"seconds": 1.5}))
        await poll(lambda: _at_least(in_flight(reactor), 1), "the slow packet to start")
        t0 = time.monotonic()
        await pf.submit("cf", "ping")
        assert time.monotonic() - t0 < 0.5
        assert (await slow).data["slept"] == 1.5

        # cpu_bound handlers run in the process pool.
        square = await pf.submit("mc", "square", {"n": 12})
        assert square.data["square"] == 144
        assert square.data["pid"] != reactor.proc.pid
    assert reactor.proc.poll() is None


async def _at_least(value: Awaitable[int], n: int) -> bool:
    return await value >= n


@pytest.mark.parametrize("compress", [0, 15], ids=["plain", "permessage-deflate"])
async def test_replies_of_every_frame_length_arrive_intact(
    cluster: Cluster, tmp_path: Path, compress: int
) -> None:
    """RFC 6455 §5.2's three length encodings, on the reactor's burst writes (plain) and on
    aiohttp's own writer (deflate negotiated), many replies in flight at once."""
    reactor = start_reactor(cluster, tmp_path)
    sizes = [0, 10, 125, 126, 200, 65_535, 65_536, 70_000, 1_000_000] * 3
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(
            reactor.url, compress=compress, max_msg_size=0, headers=reactor.auth_headers()
        ) as ws,
    ):
        for i, size in enumerate(sizes):
            await ws.send_str(json.dumps({
                "protocol_version": "1.0", "message_type": "submit",
                "message_id": f"msg_blob_{i}", "timestamp": 0, "source_id": "blob-client",
                "payload": {"packet": {"id": f"packet_blob_{i}", "group": "mc",
                                       "element": "blob", "data": {"size": size}}},
            }))  # fmt: skip
        got: dict[str, int] = {}
        while len(got) < len(sizes):
            reply = json.loads((await ws.receive(timeout=10)).data)
            assert reply["message_type"] == "result", reply
            got[reply["correlation_id"]] = len(reply["payload"]["data"]["blob"])
        assert ws.compress == compress
    assert got == {f"msg_blob_{i}": size for i, size in enumerate(sizes)}


@pytest.mark.parametrize("role", ["gateway", "client"])
async def test_replies_ready_together_go_to_a_gateway_as_one_batch(
    cluster: Cluster, tmp_path: Path, role: str
) -> None:
    """§12.4.2 back to a gateway's link: 20 pings in one batch frame are answered with the
    first reply at once and the other 19 in one array frame; a client (which may not take
    batches) gets 20 frames."""
    reactor = start_reactor(cluster, tmp_path)
    url = f"{reactor.url}?role={role}" if role == "gateway" else reactor.url
    batch = [{"protocol_version": "1.0", "message_type": "submit", "message_id": f"msg_b_{i}",
              "timestamp": 0, "source_id": "batcher",
              "payload": {"packet": {"group": "cf", "element": "ping"}}}
             for i in range(20)]  # fmt: skip
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(url, headers=reactor.auth_headers()) as ws,
    ):
        await ws.send_str(json.dumps(batch))
        frames: list[Any] = []
        replies: list[dict[str, Any]] = []
        while len(replies) < 20:
            frame = json.loads((await ws.receive(timeout=10)).data)
            frames.append(frame)
            for msg in frame if isinstance(frame, list) else [frame]:
                if msg["message_type"] == "result":
                    replies.append(msg)
    assert sorted(r["correlation_id"] for r in replies) == sorted(m["message_id"] for m in batch)
    results_frames = [f for f in frames if isinstance(f, list) or f["message_type"] == "result"]
    if role == "gateway":
        assert [len(f) if isinstance(f, list) else 1 for f in results_frames] == [1, 19]
    else:
        assert len(results_frames) == 20


# ---------------------------------------------------------------- heartbeats, health, metrics


async def test_heartbeats_to_a_gateway_connection_carry_load_metrics(
    cluster: Cluster, tmp_path: Path
) -> None:
    """§4.2.4 fields and §8.3 load_metrics, every --heartbeat-interval, to role=gateway."""
    reactor = start_reactor(cluster, tmp_path, "--heartbeat-interval", "0.2")
    url = f"{reactor.url}?role=gateway&source_id=gateway-probe"
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(url, headers=reactor.auth_headers()) as ws,
    ):
        for i in range(4):
            await ws.send_str(json.dumps({
                "protocol_version": "1.0", "message_type": "submit",
                "message_id": f"msg_hb_{i}", "timestamp": 0, "source_id": "gateway-probe",
                "payload": {"packet": {"group": "cf", "element": "ping"}},
            }))  # fmt: skip
        beats: list[dict[str, Any]] = []
        results = 0
        deadline = time.monotonic() + 10
        done = False
        while not done and time.monotonic() < deadline:
            frame = json.loads((await ws.receive(timeout=5)).data)
            # A gateway's link takes §12.4.2 batches: replies ready together come as one.
            for msg in frame if isinstance(frame, list) else [frame]:
                if msg["message_type"] == "result":
                    results += 1
                elif msg["message_type"] == "heartbeat":
                    beats.append(msg)
                    done = done or (
                        results == 4
                        and beats[-1]["payload"]["performance_metrics"]["packets_processed"] >= 4
                    )
        if not done:
            raise AssertionError(f"no heartbeat counting 4 packets: {beats[-1:]}")
    first, last = beats[0], beats[-1]
    assert first["source_id"] == reactor.id
    assert first["destination_id"] == "gateway-probe"
    assert len(beats) >= 2  # the first at once on connect, then every interval
    p = last["payload"]
    assert p["reactor_id"] == reactor.id
    # HeartbeatPayload omits defaults, so "python" (its default) is left off the wire.
    assert p.get("implementation", "python") == "python"
    assert p["specializations"] == ["general_purpose"]
    assert set(p["health_status"]) >= {"status", "load_factor", "queue_depth", "memory_usage_mb",
                                       "cpu_usage_percent", "network_connections",
                                       "uptime_seconds", "last_error"}  # fmt: skip
    assert p["health_status"]["status"] == "healthy"
    assert set(p["performance_metrics"]) >= {"packets_processed", "avg_processing_time_ms",
                                             "p99_processing_time_ms", "error_rate",
                                             "throughput_pps"}  # fmt: skip
    assert set(p["chemical_metrics"]) >= {"affinity_effectiveness", "bond_success_rate"}
    assert "df:tokenize" in p["capabilities"]
    load = p["load_metrics"]
    groups = {"cf", "df", "ed", "co", "mc", "rm"}
    assert set(load["queue_depths"]) == groups
    assert set(load["processing_rates_pps"]) == groups
    assert load["processing_rates_pps"]["cf"] > 0
    assert {"cpu_percent", "memory_percent"} <= set(load["resource_utilization"])
    assert 0 <= load["current_load_factor"] <= 1


async def test_health_and_metrics_endpoints_report_traffic(
    cluster: Cluster, tmp_path: Path
) -> None:
    reactor = start_reactor(cluster, tmp_path)
    status, body = await health(reactor)
    assert status == 200
    assert body["reactor_id"] == reactor.id
    assert body["performance_metrics"]["packets_processed"] == 0
    _, text = await get(reactor, "/metrics")
    exposed = [
        ("packetflow_packets_processed_total", "counter"),
        ("packetflow_errors_total", "counter"),
        ("packetflow_packet_latency_seconds", "histogram"),
        ("packetflow_queue_depth", "gauge"),
        ("packetflow_in_flight", "gauge"),
    ]
    for name, kind in exposed:
        assert f"# TYPE {name} {kind}\n" in text, name
    assert sample(text, "packetflow_in_flight") == 0
    async with packetflow.connect(reactor.url, headers=reactor.auth_headers()) as pf:
        for _ in range(5):
            await pf.submit("cf", "ping")
        for element in ("boom", "no_such_element"):
            with pytest.raises(PacketFlowError):
                await pf.submit("mc", element)
        slow = asyncio.ensure_future(pf.submit("mc", "nap", {"seconds": 1.0}))
        await poll(lambda: _at_least(in_flight(reactor), 1), "the slow packet to start")
        _, text = await get(reactor, "/metrics")
        assert sample(text, "packetflow_in_flight") == 1
        await slow
    _, text = await get(reactor, "/metrics")
    processed = "packetflow_packets_processed_total"
    assert sample(text, processed, group="cf", element="ping", status="success") == 5
    assert sample(text, processed, group="mc", element="boom", status="error") == 1
    assert sample(text, processed, group="mc", element="nap", status="success") == 1
    assert sample(text, "packetflow_errors_total", code="PF005") == 1
    assert sample(text, "packetflow_errors_total", code="PF003") == 1
    latency = "packetflow_packet_latency_seconds"
    assert sample(text, f"{latency}_count", element="cf:ping") == 5
    assert sample(text, f"{latency}_bucket", element="mc:nap", le="0.5") == 0
    assert sample(text, f"{latency}_bucket", element="mc:nap", le="2.5") == 1
    assert sample(text, "packetflow_in_flight") == 0
    assert sample(text, "packetflow_queue_depth") == 0
    _, body = await health(reactor)
    perf = body["performance_metrics"]
    assert perf["packets_processed"] == 7
    assert perf["errors_by_code"] == {"PF005": 1, "PF003": 1}


# ---------------------------------------------------------------- graceful shutdown


async def test_sigterm_drains_in_flight_work_refuses_new_and_exits_0(
    cluster: Cluster, tmp_path: Path
) -> None:
    reactor = start_reactor(cluster, tmp_path, "--grace", "10")
    async with packetflow.connect(reactor.url, headers=reactor.auth_headers()) as pf:
        slow = asyncio.ensure_future(pf.submit("mc", "nap", {"seconds": 1.5}))
        await poll(lambda: _at_least(in_flight(reactor), 1), "the slow packet to start")
        t0 = time.monotonic()
        reactor.proc.send_signal(signal.SIGTERM)
        await poll(lambda: _draining(reactor), "/health to report draining")
        with pytest.raises(PacketFlowError) as info:
            await pf.submit("cf", "ping")
        assert info.value.code == "PF503"
        assert (await slow).data["slept"] == 1.5
    assert await exit_code(reactor.proc, 10) == 0
    assert time.monotonic() - t0 < 10


async def _draining(node: Node) -> bool:
    status, _ = await health(node)
    return status == 503


async def test_cf_shutdown_drains_then_exits_0(cluster: Cluster, tmp_path: Path) -> None:
    reactor = start_reactor(cluster, tmp_path)
    async with packetflow.connect(reactor.url, headers=reactor.auth_headers()) as pf:
        slow = asyncio.ensure_future(pf.submit("mc", "nap", {"seconds": 1.0}))
        await poll(lambda: _at_least(in_flight(reactor), 1), "the slow packet to start")
        res = await pf.submit("cf", "shutdown", {"grace_ms": 5000})
        assert res.data["shutting_down"] is True and res.data["grace_ms"] == 5000
        with pytest.raises(PacketFlowError) as info:
            await pf.submit("cf", "ping")
        assert info.value.code == "PF503"
        assert (await slow).data["slept"] == 1.0
    assert await exit_code(reactor.proc, 10) == 0


@pytest.mark.parametrize("element", ["nap", "nap_sync"])
async def test_packet_running_past_the_grace_period_gets_pf503_and_process_exits_0(
    cluster: Cluster, tmp_path: Path, element: str
) -> None:
    """A handler still running when the grace period ends is cancelled and answered;
    a thread stuck in a sync handler does not keep the process alive."""
    reactor = start_reactor(cluster, tmp_path, "--grace", "0.5")
    async with packetflow.connect(reactor.url, headers=reactor.auth_headers()) as pf:
        stuck = asyncio.ensure_future(pf.submit("mc", element, {"seconds": 30}))
        await poll(lambda: _at_least(in_flight(reactor), 1), "the stuck packet to start")
        t0 = time.monotonic()
        reactor.proc.send_signal(signal.SIGTERM)
        with pytest.raises(PacketFlowError) as info:
            await stuck
        assert info.value.code == "PF503"
        assert info.value.details["reason"] == "cancelled"
    assert await exit_code(reactor.proc, 10) == 0
    assert time.monotonic() - t0 < 0.5 + 5
