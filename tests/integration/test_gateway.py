"""The gateway with real reactor processes: affinity routing (§3.3, §6.2), client hints
(§6.3.1), failover (DESIGN §6), health monitoring (§9.3), matrix updates (§6.4)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import aiohttp
import pytest
from benchmarks.fleet import Fleet

import packetflow
from packetflow.cluster import read_ready, stop_all
from packetflow.protocol.errors import PacketFlowError

from .cluster import Cluster, Node, wait_for

PROBE = ("--module", "tests.integration.probe_elements")


def whoami(url: str, group: str, **options: object) -> str:
    with packetflow.connect_sync(url) as pf:
        return str(pf.submit(group, "whoami", {}, **options).data["reactor_id"])


def test_each_group_goes_to_its_best_specialization_3_3(cluster: Cluster) -> None:
    gateway = cluster.gateway()
    for spec in ("cpu_intensive", "memory_bound", "io_intensive", "network_heavy",
                 "general_purpose"):  # fmt: skip
        cluster.reactor(gateway, "--specialization", spec, "--id", spec, *PROBE)
    expected = {
        "cf": "cpu_intensive",
        "df": "memory_bound",
        "ed": "io_intensive",
        "co": "network_heavy",
        "mc": "general_purpose",
        "rm": "memory_bound",
    }
    with packetflow.connect_sync(gateway.url) as pf:
        for group, spec in expected.items():
            for _ in range(3):  # idle reactors: the choice is the matrix's, every time
                res = pf.submit(group, "whoami", {})
                assert res.data["reactor_id"] == spec, group
                assert res.processing_metadata is not None
                assert res.processing_metadata["reactor_id"] == spec


def test_implementation_preferences_6_2(cluster: Cluster) -> None:
    gateway = cluster.gateway()
    for impl in ("elixir", "javascript", "zig"):
        cluster.reactor(gateway, "--implementation", impl, "--id", impl, *PROBE)
    expected = {"cf": "elixir", "df": "javascript", "ed": "zig", "co": "elixir",
                "mc": "javascript", "rm": "zig"}  # fmt: skip
    with packetflow.connect_sync(gateway.url) as pf:
        got = {g: pf.submit(g, "whoami", {}).data["reactor_id"] for g in expected}
    assert got == expected


def test_each_client_hint_changes_the_choice_6_3_1(cluster: Cluster) -> None:
    gateway = cluster.gateway()
    cluster.reactor(gateway, "--implementation", "zig", "--id", "zig", "--locality", "eu",
                    *PROBE)  # fmt: skip
    cluster.reactor(gateway, "--implementation", "javascript", "--id", "js",
                    "--locality", "us", *PROBE)  # fmt: skip
    cluster.reactor(gateway, "--specialization", "cpu_intensive", "--id", "cpu",
                    "--locality", "us", *PROBE)  # fmt: skip
    url = gateway.url
    # cf: cpu 0.9 beats the general_purpose reactors (zig 0.6 × 1.1, js 0.6 × 1.0).
    assert whoami(url, "cf") == "cpu"
    # preferred_implementation ×1.25: df goes to js (0.8 × 1.2 = 0.96) unless zig is
    # preferred (0.8 × 1.0 × 1.25 = 1.0).
    assert whoami(url, "df") == "js"
    assert whoami(url, "df", routing_preferences={"preferred_implementation": "zig"}) == "zig"
    # avoid_reactors excludes: without cpu, zig (0.66) beats js (0.6).
    assert whoami(url, "cf", routing_preferences={"avoid_reactors": ["cpu"]}) == "zig"
    # minimum_affinity excludes the general_purpose reactors (0.6 for cf) ...
    prefs = {"minimum_affinity": 0.7, "avoid_reactors": ["cpu"]}
    with pytest.raises(PacketFlowError) as info:
        whoami(url, "cf", routing_preferences=prefs)
    assert info.value.code == "PF101"
    assert info.value.field == "payload.routing_preferences.minimum_affinity"
    # locality_preference ×1.1 alone leaves cf on cpu (zig: 0.6 × 1.1 × 1.1 = 0.726);
    # affinity_boost 0.5 for the matching reactor tips it (× 1.5 = 1.089 > 0.9).
    assert whoami(url, "cf", routing_preferences={"locality_preference": "eu"}) == "cpu"
    boosted = {"locality_preference": "eu", "affinity_boost": 0.5}
    assert whoami(url, "cf", routing_preferences=boosted) == "zig"


def _post_put(node: Node, url: str, body: dict[str, object]) -> dict[str, object]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="PUT",
                                 headers={"Content-Type": "application/json",
                                          **node.auth_headers()})  # fmt: skip
    with urllib.request.urlopen(req, timeout=5) as resp:
        return json.load(resp)  # type: ignore[no-any-return]


def test_matrix_updates_take_effect_for_the_next_decision_6_4(cluster: Cluster) -> None:
    gateway = cluster.gateway()
    cluster.reactor(gateway, "--specialization", "cpu_intensive", "--id", "cpu", *PROBE)
    cluster.reactor(gateway, "--specialization", "memory_bound", "--id", "mem", *PROBE)
    assert whoami(gateway.url, "cf") == "cpu"
    out = _post_put(
        gateway,
        f"{gateway.http}/v1/affinity",
        {"matrix_updates": {"cf": {"memory_bound": 0.95}}, "version": "1.1"},
    )
    assert out["version"] == "1.1"
    assert whoami(gateway.url, "cf") == "mem"
    with packetflow.connect_sync(gateway.url) as pf:
        res = pf.submit("mc", "update_affinity", {"matrix_updates": {"cf": {"memory_bound": 0.1}}})
        assert res.data["previous_version"] == "1.1"
        assert res.data["version"] == "1.2"
        with pytest.raises(PacketFlowError) as info:
            pf.submit("mc", "update_affinity", {"matrix_updates": {"cf": {"cpu_intensive": 2}}})
        assert info.value.code == "PF002"
        assert info.value.field == "payload.packet.data.matrix_updates.cf.cpu_intensive"
    assert whoami(gateway.url, "cf") == "cpu"
    assert gateway.get("/v1/affinity")["version"] == "1.2"


async def test_sigkill_with_200_in_flight_every_packet_answers(cluster: Cluster) -> None:
    """DESIGN §6: a reactor that dies fails its in-flight packets over at once."""
    gateway = cluster.gateway()
    victim = cluster.reactor(gateway, "--specialization", "cpu_intensive", "--id", "victim",
                             "--max-concurrent", "1000", *PROBE)  # fmt: skip
    cluster.reactor(gateway, "--id", "survivor", "--max-concurrent", "1000", *PROBE)
    async with packetflow.connect(gateway.url) as pf:
        tasks = [asyncio.ensure_future(pf.submit("cf", "sleep", {"ms": 1500},
                                                 timeout_ms=20_000))
                 for _ in range(200)]  # fmt: skip

        def in_flight_on_victim() -> bool:
            rows = {r["reactor_id"]: r for r in gateway.get("/v1/reactors")["reactors"]}
            return rows["victim"]["in_flight"] == 200

        await asyncio.to_thread(wait_for, in_flight_on_victim, 10, "200 packets on victim")
        os.kill(victim.proc.pid, signal.SIGKILL)
        done = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout=15)
    results = [r for r in done if not isinstance(r, BaseException)]
    errors = [r for r in done if isinstance(r, PacketFlowError)]
    assert len(results) + len(errors) == 200
    assert all(r.data["reactor_id"] == "survivor" for r in results)
    assert len(results) == 200, [e.code for e in errors][:5]


def _health(gateway: Node, reactor_id: str) -> str | None:
    return Cluster.health_of(gateway, reactor_id)


def test_unresponsive_reactor_degrades_fails_and_recovers_9_3(cluster: Cluster) -> None:
    """§9.3/§9.4 with every interval scaled by 0.02: pings every 0.6 s, 3 failures in
    1.8 s degrade, 3 more fail; answering again → recovery → healthy after 6 s."""
    gateway = cluster.gateway("--health-scale", "0.02", "--departure-after", "60")
    reactor = cluster.reactor(gateway, "--id", "sleepy", "--heartbeat-interval", "0.2")
    seen: list[str] = []

    def reached(state: str) -> bool:
        health = _health(gateway, "sleepy")
        if health and (not seen or seen[-1] != health):
            seen.append(health)
        return health == state

    os.kill(reactor.proc.pid, signal.SIGSTOP)
    try:
        wait_for(lambda: reached("degraded"), 15, "degraded")
        wait_for(lambda: reached("failed"), 15, "failed")
    finally:
        os.kill(reactor.proc.pid, signal.SIGCONT)
    wait_for(lambda: reached("recovery"), 15, "recovery")
    wait_for(lambda: reached("healthy"), 30, "healthy again")
    assert seen[:4] == ["healthy", "degraded", "failed", "recovery"]
    # A probe sent while it was stopped may still time out just after it woke: §9.4.2 sends
    # a failure during recovery back to failed, and it recovers again.
    assert set(seen[4:-1]) <= {"failed", "recovery"} and seen[-1] == "healthy"
    assert whoami_ping(gateway) == "sleepy"


def whoami_ping(gateway: Node) -> str:
    with packetflow.connect_sync(gateway.url) as pf:
        return str(pf.submit("cf", "ping", {}).data["reactor_id"])


def test_broadcast_reaches_every_reactor_4_1(cluster: Cluster) -> None:
    gateway = cluster.gateway()
    for rid in ("a", "b", "c"):
        cluster.reactor(gateway, "--id", rid, *PROBE)
    with packetflow.connect_sync(gateway.url) as pf:
        res = pf.submit("cf", "whoami", {}, destination_id=None)
        assert sorted(res.data["results"]) == ["a", "b", "c"]
        assert res.data["errors"] == {}
        pinned = pf.submit("cf", "whoami", {}, destination_id="b")
        assert pinned.data["reactor_id"] == "b"


def test_ttl_runs_out_pf504(cluster: Cluster) -> None:
    gateway = cluster.gateway()
    cluster.reactor(gateway, "--id", "slow", *PROBE)
    with packetflow.connect_sync(gateway.url) as pf:
        with pytest.raises(PacketFlowError) as info:
            pf.submit("cf", "sleep", {"ms": 2000}, ttl=300)
        assert info.value.code in ("PF504", "PF005")
        with pytest.raises(PacketFlowError) as zero:
            pf.submit("cf", "ping", {}, ttl=0)
        assert zero.value.code == "PF504"


def test_full_reactors_queue_then_answer_pf004_at_deadline(cluster: Cluster) -> None:
    gateway = cluster.gateway()
    cluster.reactor(gateway, "--id", "tiny", "--max-concurrent", "1", *PROBE)

    async def run() -> list[object]:
        async with packetflow.connect(gateway.url) as pf:
            first = asyncio.ensure_future(pf.submit("cf", "sleep", {"ms": 1500}))
            await asyncio.sleep(0)
            second = asyncio.ensure_future(pf.submit("cf", "sleep", {"ms": 10},
                                                     timeout_ms=400))  # fmt: skip
            return await asyncio.gather(first, second, return_exceptions=True)

    first, second = asyncio.run(run())
    assert not isinstance(first, BaseException)
    assert isinstance(second, PacketFlowError)
    assert second.code == "PF004"
    assert second.retry_delay_ms


async def test_subscribers_get_events_from_clients_and_reactors(cluster: Cluster) -> None:
    """DESIGN §10 ed:subscribe: each event arrives as a RESULT with status "event"
    correlated to the subscribe message, whoever published it."""
    gateway = cluster.gateway()
    cluster.reactor(gateway, "--id", "emitter", *PROBE)
    async with (
        packetflow.connect(gateway.url) as listener,
        packetflow.connect(gateway.url) as publisher,
    ):
        events = listener.subscribe("orders.*")
        first = asyncio.ensure_future(events.__anext__())
        await asyncio.sleep(0)  # let the subscribe go out before publishing

        async def subscribed() -> None:
            while True:
                res = await publisher.submit("ed", "publish", {"topic": "orders.new",
                                                               "event": {"id": 1}})  # fmt: skip
                if res.data["delivered"]:
                    return

        await asyncio.wait_for(subscribed(), 10)
        event = await asyncio.wait_for(first, 10)
        assert event["topic"] == "orders.new" and event["event"] == {"id": 1}
        res = await publisher.submit("ed", "emit", {"topic": "orders.shipped",
                                                    "event": {"id": 2}})  # fmt: skip
        assert res.data["delivered"] == 1
        second = await asyncio.wait_for(events.__anext__(), 10)
        assert second["topic"] == "orders.shipped" and second["event"] == {"id": 2}
        assert second["sequence"] > event["sequence"]
        ignored = await publisher.submit("ed", "publish", {"topic": "users.new", "event": 3})
        assert ignored.data["delivered"] == 0
        with pytest.raises(PacketFlowError) as info:
            await publisher.submit("ed", "publish", {"event": 1})
        assert info.value.code == "PF002" and info.value.field == "payload.packet.data.topic"
        await events.aclose()


def _http(node: Node, method: str, url: str, body: object | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json",
                                          **node.auth_headers()})  # fmt: skip
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def test_http_api_packets_reactors_affinity(cluster: Cluster) -> None:
    """DESIGN §2 HTTP API: POST /v1/packets (envelope or bare packet, ?wait=false),
    GET /v1/packets/{id}, GET /v1/reactors, GET|PUT /v1/affinity, /health, /metrics."""
    gateway = cluster.gateway()
    cluster.reactor(gateway, "--id", "r1", *PROBE)
    base = gateway.http
    status, body = _http(gateway, "POST", f"{base}/v1/packets", {"group": "cf", "element": "ping"})
    assert status == 200 and body["message_type"] == "result"
    assert body["payload"]["data"]["pong"] is True
    status, body = _http(gateway, "POST", f"{base}/v1/packets?wait=false",
                         {"id": "pkt-http-1", "group": "cf", "element": "sleep",
                          "data": {"ms": 50}})  # fmt: skip
    assert status == 202 and body["packet_id"] == "pkt-http-1"

    def finished() -> dict | None:
        code, story = _http(gateway, "GET", f"{base}/v1/packets/pkt-http-1")
        return story if code == 200 and story["state"] == "completed" else None

    story = wait_for(finished, 10, "the packet to complete")
    assert story["reactor_id"] == "r1"
    assert story["reply"]["payload"]["data"]["slept_ms"] == 50
    status, body = _http(gateway, "GET", f"{base}/v1/packets/nope")
    assert status == 404 and body["error"]["error_details"]["field"] == "packet_id"
    status, body = _http(gateway, "POST", f"{base}/v1/packets", {"group": "cf", "element": "ping",
                                                        "priority": "high"})  # fmt: skip
    assert status == 400
    assert body["payload"]["error_details"]["field"] == "payload.packet.priority"
    status, body = _http(
        gateway, "PUT", f"{base}/v1/affinity", {"matrix_updates": {"zz": {"x": 1}}}
    )
    assert status == 400 and body["error"]["error_code"] == "PF002"
    assert body["error"]["error_details"]["field"] == "body.matrix_updates.zz"
    req = urllib.request.Request(f"{base}/metrics", headers=gateway.auth_headers())
    with urllib.request.urlopen(req, timeout=5) as resp:
        metrics = resp.read().decode()
    assert "packetflow_gateway_packets_completed_total 2.0" in metrics


def test_static_list_registers_a_reactor_without_announce(cluster: Cluster) -> None:
    """DESIGN §2 announce channel 2: a reactor named in the gateway's static list; the
    operator gives the gateway the token the reactor accepts (DESIGN §8)."""
    reactor = cluster.reactor(None, "--id", "static-one")
    token = str(cluster.accept_token_file)
    gateway = cluster.gateway("--static", reactor.url, "--reactor-token-file", token)
    wait_for(lambda: Cluster.health_of(gateway, "static-one") == "healthy", 15, "static link")
    rows = {r["reactor_id"]: r for r in gateway.get("/v1/reactors")["reactors"]}
    assert rows["static-one"]["source"] == "static"
    assert whoami_ping(gateway) == "static-one"


async def test_discover_query_answers_with_the_registry_4_2_5(cluster: Cluster) -> None:
    gateway = cluster.gateway()
    cluster.reactor(gateway, "--id", "listed", "--specialization", "io_intensive")
    async with packetflow.connect(gateway.url) as pf:
        rows = await pf.discover()
    (row,) = rows
    assert row["reactor_id"] == "listed"
    assert row["specializations"] == ["io_intensive"]
    assert row["health"] == "healthy"
    assert "cf:ping" in row["capabilities"]


def test_silent_reactor_leaves_the_registry(cluster: Cluster) -> None:
    """Reactors that stop heartbeating leave the registry after a configurable time (PF003
    once nothing serves the element); one that comes back announces itself again."""
    gateway = cluster.gateway("--health-scale", "0.02", "--departure-after", "1.5")
    reactor = cluster.reactor(gateway, "--id", "quiet", "--heartbeat-interval", "0.2", *PROBE)
    os.kill(reactor.proc.pid, signal.SIGSTOP)
    try:
        wait_for(lambda: Cluster.health_of(gateway, "quiet") is None, 15, "departure")
        with packetflow.connect_sync(gateway.url) as pf, pytest.raises(PacketFlowError) as info:
            pf.submit("cf", "whoami", {})
        assert info.value.code == "PF003"
    finally:
        os.kill(reactor.proc.pid, signal.SIGCONT)
    # Alive again, it sees its work link closed and announces itself anew.
    wait_for(lambda: Cluster.health_of(gateway, "quiet") == "healthy", 15, "return")
    assert whoami(gateway.url, "cf") == "quiet"


def test_a_stopping_reactor_withdraws_and_the_gateway_drops_it(cluster: Cluster) -> None:
    """A reactor stopped with SIGTERM drains, sends DISCOVER withdraw, and leaves the
    registry at once (no waiting for departure, no failover)."""
    gateway = cluster.gateway()
    leaving = cluster.reactor(gateway, "--id", "leaving")
    cluster.reactor(gateway, "--id", "staying")
    leaving.proc.terminate()
    assert leaving.proc.wait(10) == 0
    wait_for(lambda: Cluster.health_of(gateway, "leaving") is None, 10, "withdrawal")
    assert Cluster.health_of(gateway, "staying") == "healthy"
    assert whoami_ping(gateway) == "staying"


def test_announce_is_refreshed_with_measured_timings_8_2(cluster: Cluster) -> None:
    """§8.2: the capability advertisement carries measured avg_processing_time_ms, so it
    is re-announced periodically (--announce-interval)."""
    gateway = cluster.gateway()
    cluster.reactor(gateway, "--id", "timed", "--heartbeat-interval", "0.1",
                    "--announce-interval", "0.2", *PROBE)  # fmt: skip
    with packetflow.connect_sync(gateway.url) as pf:
        for _ in range(5):
            pf.submit("cf", "sleep", {"ms": 20})

    def cf_timing() -> float:
        rows = {r["reactor_id"]: r for r in gateway.get("/v1/reactors")["reactors"]}
        support = {s["group"]: s for s in rows["timed"]["packet_support"]}
        return float(support["cf"]["avg_processing_time_ms"])

    assert wait_for(cf_timing, 10, "a re-announce with measured timings") > 0


async def test_more_reactors_than_a_connection_pool_holds_all_link(cluster: Cluster) -> None:
    """150 reactors announce; every one is linked, probed healthy and routable (aiohttp's
    default pool of 100 connections once left reactor 101 registered but never linked)."""
    gateway = cluster.gateway()
    fleet = Fleet(150)
    await fleet.start()
    try:
        async with aiohttp.ClientSession() as session:
            ws = await session.ws_connect(gateway.url, headers=gateway.auth_headers())
            for rid in fleet.ids:
                await ws.send_str(fleet.announce(rid).decode())
            await asyncio.to_thread(
                wait_for, lambda: gateway.get("/health")["healthy_reactors"] == 150, 30.0,
                "150 linked reactors",
            )  # fmt: skip
            await ws.close()
        async with packetflow.connect(gateway.url) as pf:
            last = await pf.submit("cf", "echo", {}, destination_id=fleet.ids[-1])
        assert last.data["reactor_id"] == fleet.ids[-1]
    finally:
        await fleet.stop()


async def test_a_reactor_that_never_answers_gets_pf504_and_its_slot_back(
    cluster: Cluster,
) -> None:
    """The gateway's own deadline answers a packet its reactor never does (PF504), and
    frees the slot once: the reactor's in-flight count is back to 0, not below."""
    gateway = cluster.gateway()
    fleet = Fleet(1, silent=("hang",))
    await fleet.start()
    try:
        async with aiohttp.ClientSession() as session:
            ws = await session.ws_connect(gateway.url, headers=gateway.auth_headers())
            await ws.send_str(fleet.announce(fleet.ids[0]).decode())
            await asyncio.to_thread(
                wait_for, lambda: gateway.get("/health")["healthy_reactors"] == 1, 10.0,
                "the stand-in linked",
            )  # fmt: skip
            async with packetflow.connect(gateway.url) as pf:
                with pytest.raises(PacketFlowError) as caught:
                    await pf.submit("cf", "hang", {}, timeout_ms=300)
            assert caught.value.code == "PF504"
            (row,) = gateway.get("/v1/reactors")["reactors"]
            assert row["in_flight"] == 0
            await ws.close()
    finally:
        await fleet.stop()


def test_a_result_too_large_for_a_frame_answers_pf005_at_once(cluster: Cluster) -> None:
    """A result that could not travel in one DESIGN §3 frame is refused where it is made,
    with the reason, instead of leaving the client waiting for its timeout."""
    gateway = cluster.gateway()
    cluster.reactor(gateway)
    with packetflow.connect_sync(gateway.url) as pf:
        with pytest.raises(PacketFlowError) as caught:
            pf.submit("df", "transform", {"input": "a" * 600_000, "operation": "replace",
                                          "parameters": {"old": "a", "new": "aa"}},
                      timeout_ms=60_000)  # fmt: skip
        assert caught.value.code == "PF005"
        assert caught.value.details["reason"] == "result_too_large"
        assert pf.submit("cf", "ping", {}).data["pong"] is True  # the link is still fine


def test_malformed_http_requests_are_refused_without_flooding_the_log(tmp_path: Path) -> None:
    """Anonymous clients sending headers over 8 KiB or garbage request lines get 400 and
    the gateway logs one line a second about them, never a traceback per request."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "packetflow", "--log-level", "WARNING", "gateway", "--port", "0",
         "--data-dir", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    sent = 0
    try:
        ready = read_ready(proc, 20)
        assert ready is not None
        port = int(ready["url"].rsplit(":", 1)[1].split("/")[0])
        started = time.monotonic()
        huge_header = (b"GET /v1/reactors HTTP/1.1\r\nHost: x\r\nX-PacketFlow-API-Key: pf_"
                       + b"a" * 9000 + b"\r\n\r\n")  # fmt: skip
        not_http = b"\x16\x03\x01 not http\r\n\r\n"
        for i in range(60):
            request = huge_header if i % 2 else not_http
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                sock.sendall(request)
                assert sock.recv(64).split(b" ")[1] == b"400", i
            sent += 1
        seconds = time.monotonic() - started
        with packetflow.connect_sync(ready["url"]) as pf:  # the next client is served
            assert pf.discover() == []
    finally:
        stop_all([proc], 10)
    assert proc.stderr is not None
    log = proc.stderr.read().decode()
    assert sent == 60
    assert "Traceback" not in log, log
    lines = [line for line in log.splitlines() if "refused a malformed HTTP request" in line]
    assert 1 <= len(lines) <= int(seconds) + 2, lines


def test_clients_leaving_during_the_handshake_leave_no_error_behind(tmp_path: Path) -> None:
    """A client that sends the WebSocket upgrade and resets the connection at once costs
    the gateway nothing: no traceback in its log, and the next client is served."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "packetflow", "--log-level", "WARNING", "gateway", "--port", "0",
         "--data-dir", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        ready = read_ready(proc, 20)
        assert ready is not None
        port = int(ready["url"].rsplit(":", 1)[1].split("/")[0])
        for _ in range(20):
            with socket.create_connection(("127.0.0.1", port)) as sock:
                sock.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                             b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                             b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")  # fmt: skip
                # Reset (RST), not a polite close, as a crashed or impatient client does.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        with packetflow.connect_sync(ready["url"]) as pf:
            assert pf.discover() == []
    finally:
        stop_all([proc], 10)  # SIGTERM: the server finishes every handler before it exits
    assert proc.returncode == 0
    assert proc.stderr is not None
    log = proc.stderr.read().decode()
    assert "Traceback" not in log, log
