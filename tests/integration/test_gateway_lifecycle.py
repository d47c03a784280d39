"""The gateway's lifecycle with real processes: reactors leaving with packets in flight
(DESIGN §6: no accepted packet is lost), the truthful /health and /health/ready, the
SIGTERM drain, and destination_id naming no known reactor (PF003)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import urllib.error
import urllib.request
from typing import Any

import aiohttp

import packetflow

from .cluster import Cluster, Node, wait_for

PROBE = ("--module", "tests.integration.probe_elements")
# A packet held on purpose stays in flight far longer than any step of these tests.
HOLD_TIMEOUT_MS = 60_000


def _in_flight(gateway: Node, reactor_id: str) -> int | None:
    for row in gateway.get("/v1/reactors")["reactors"]:
        if row["reactor_id"] == reactor_id:
            return int(row["in_flight"])
    return None


async def _wait(predicate: Any, timeout: float, what: str) -> Any:
    return await asyncio.to_thread(wait_for, predicate, timeout, what)


async def test_a_reactor_withdrawing_with_a_packet_in_flight_fails_it_over(
    cluster: Cluster,
) -> None:
    """DISCOVER withdraw from a reactor still holding a packet: the packet completes on the
    reactor that joined since, and the withdrawing connection gets its acknowledgement
    (the gateway once crashed on its own bookkeeping: the handler died, nothing answered)."""
    gateway = cluster.gateway()
    cluster.reactor(gateway, "--id", "holder", *PROBE)
    async with packetflow.connect(gateway.url) as pf:
        held = asyncio.ensure_future(
            pf.submit("cf", "hold", {"hold_on": "holder"}, timeout_ms=HOLD_TIMEOUT_MS)
        )
        await _wait(lambda: _in_flight(gateway, "holder") == 1, 15, "the packet on holder")
        await asyncio.to_thread(cluster.reactor, gateway, "--id", "taker", *PROBE)
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(gateway.url, headers=gateway.auth_headers()) as ws,
        ):
            await ws.send_str(json.dumps({
                "protocol_version": "1.0", "message_type": "discover",
                "message_id": "msg_withdraw_holder", "timestamp": 1, "source_id": "holder",
                "payload": {"discovery_type": "withdraw",
                            "reactor_info": {"reactor_id": "holder"}},
            }))  # fmt: skip
            ack = json.loads((await ws.receive(timeout=10)).data)
        assert ack["message_type"] == "discover", ack
        assert ack["correlation_id"] == "msg_withdraw_holder"
        assert ack["payload"]["accepted"] is True
        result = await asyncio.wait_for(held, 20)
    assert result.data["reactor_id"] == "taker"
    # The holder sees its work link closed and announces itself anew: a fresh record
    # whose count the old record's landing packet must not have touched.
    assert _in_flight(gateway, "holder") in (None, 0)
    assert _in_flight(gateway, "taker") == 0


async def test_a_silent_reactor_departing_with_a_packet_in_flight_fails_it_over(
    cluster: Cluster,
) -> None:
    """A reactor that stops answering and heartbeating while it holds a packet is removed
    after departure_after_s and its packet completes elsewhere; the health monitor lives
    on (it once died there for good) and removes the next silent reactor too."""
    gateway = cluster.gateway("--health-scale", "0.02", "--departure-after", "1.5")
    holder = cluster.reactor(gateway, "--id", "holder", "--heartbeat-interval", "0.2", *PROBE)
    taker: Node | None = None
    try:
        async with packetflow.connect(gateway.url) as pf:
            held = asyncio.ensure_future(
                pf.submit("cf", "hold", {"hold_on": "holder"}, timeout_ms=HOLD_TIMEOUT_MS)
            )
            await _wait(lambda: _in_flight(gateway, "holder") == 1, 15, "the packet on holder")
            taker = await asyncio.to_thread(
                cluster.reactor, gateway, "--id", "taker", "--heartbeat-interval", "0.2", *PROBE
            )
            os.kill(holder.proc.pid, signal.SIGSTOP)
            result = await asyncio.wait_for(held, 30)
        assert result.data["reactor_id"] == "taker"
        assert _in_flight(gateway, "holder") is None
        os.kill(taker.proc.pid, signal.SIGSTOP)
        await _wait(lambda: _in_flight(gateway, "taker") is None, 15, "taker's departure")
    finally:
        for node in (holder, taker):
            if node is not None:
                os.kill(node.proc.pid, signal.SIGCONT)


async def test_destination_id_naming_no_reactor_is_pf003(cluster: Cluster) -> None:
    """A destination_id naming neither a reactor nor the gateway is answered PF003 naming
    the field (it used to be routed to whichever reactor scored best); "gateway", the
    gateway's own id and a reactor's id still route."""
    gateway = cluster.gateway()
    cluster.reactor(gateway, "--id", "reactor-cpu-intensive", *PROBE)

    def submit(destination: str) -> dict[str, Any]:
        return {
            "protocol_version": "1.0", "message_type": "submit",
            "message_id": f"msg_to_{destination}", "timestamp": 1, "source_id": "raw-client",
            "destination_id": destination,
            "payload": {"packet": {"group": "cf", "element": "whoami", "data": {}}},
        }  # fmt: skip

    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(gateway.url, headers=gateway.auth_headers()) as ws,
    ):
        replies = {}
        for destination in ("reactor-cpu", "gateway", gateway.id, "reactor-cpu-intensive"):
            await ws.send_str(json.dumps(submit(destination)))
            reply = json.loads((await ws.receive(timeout=10)).data)
            replies[reply["correlation_id"].removeprefix("msg_to_")] = reply
    refused = replies["reactor-cpu"]
    assert refused["message_type"] == "error"
    assert refused["payload"]["error_code"] == "PF003"
    assert refused["payload"]["error_details"]["field"] == "destination_id"
    assert "reactor-cpu" in refused["payload"]["error_message"]
    for destination in ("gateway", gateway.id, "reactor-cpu-intensive"):
        reply = replies[destination]
        assert reply["message_type"] == "result", reply
        assert reply["payload"]["data"]["reactor_id"] == "reactor-cpu-intensive"


def _http(node: Node, path: str) -> tuple[int, dict[str, Any]]:
    """Status and JSON body, for answers that may be 503 (urllib raises on those)."""
    request = urllib.request.Request(node.http + path, headers=node.auth_headers())
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_health_tells_the_truth_and_ready_follows_routable_reactors(cluster: Cluster) -> None:
    """GET /health stays 200 while the process lives, with the true status; GET
    /health/ready is 503 with the reason while nothing can be served (it said healthy with
    no reactor at all)."""
    # Failed fast, but kept registered: the body must tell "registered, none routable".
    gateway = cluster.gateway("--health-scale", "0.02", "--departure-after", "120")
    status, body = _http(gateway, "/health")
    assert status == 200
    assert body["status"] == "unhealthy" and body["reactors"] == 0
    assert body["ready"] is False
    status, body = _http(gateway, "/health/ready")
    assert status == 503
    assert body["reasons"] == ["no reactor is registered"]

    reactor = cluster.reactor(gateway, "--id", "only", "--heartbeat-interval", "0.2", *PROBE)
    wait_for(lambda: _http(gateway, "/health/ready")[0] == 200, 15, "ready")
    status, body = _http(gateway, "/health")
    assert (status, body["status"]) == (200, "healthy")
    assert body["healthy_reactors"] == body["routable_reactors"] == body["reactors"] == 1
    assert body["queue_depth"] == 0 and body["in_flight"] == 0

    os.kill(reactor.proc.pid, signal.SIGSTOP)  # probes and heartbeats stop: failed
    try:
        wait_for(lambda: _http(gateway, "/health/ready")[0] == 503, 20, "not ready")
        status, body = _http(gateway, "/health")
        assert (status, body["status"], body["ready"]) == (200, "unhealthy", False)
        assert body["routable_reactors"] == 0 and body["reactors"] == 1
        assert "no routable reactor" in body["reasons"][0]
    finally:
        os.kill(reactor.proc.pid, signal.SIGCONT)
    wait_for(lambda: _http(gateway, "/health/ready")[0] == 200, 20, "ready again")


SLOW = ("--module", "tests.integration.slow_elements")


def _sleep_submit(message_id: str, seconds: float) -> str:
    return json.dumps({
        "protocol_version": "1.0", "message_type": "submit", "message_id": message_id,
        "timestamp": 1, "source_id": "raw-client",
        "payload": {"packet": {"group": "df", "element": "sleep", "id": f"p-{message_id}",
                               "timeout_ms": 200_000,
                               "data": {"seconds": seconds, "value": message_id}}},
    })  # fmt: skip


def _post(node: Node, path: str, body: dict[str, Any]) -> int:
    request = urllib.request.Request(node.http + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json",
                                              **node.auth_headers()})  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return int(err.code)


async def test_sigterm_drains_every_packet_then_closes_1001(cluster: Cluster) -> None:
    """SIGTERM with two packets in flight (one under pressure) and the rest queued: what
    finishes within the grace period is answered with its result, the rest PF503
    retry_possible; new work is refused
    (SUBMIT PF503, WebSocket upgrade and POST 503, /health/ready 503); then the client's
    connection closes with 1001 and the process exits 0 (a raw client just saw close 1000
    and lost every packet)."""
    gateway = cluster.gateway("--drain-grace", "8")
    # --grace: the reactor still runs m4 and m5 when the test stops it.
    cluster.reactor(gateway, "--id", "slow", "--max-concurrent", "2", "--grace", "0.5", *SLOW)
    # m1, m2 run; m3 runs after them. On a loaded CI host the reactor may report resource
    # pressure and the gateway then runs one at a time (§8.3): m1, m2, m3 one after the
    # other still end 4 s before the 8 s grace does.
    quick = {"m1": 2.0, "m2": 2.0, "m3": 0.1}
    stuck = {"m4": 120.0, "m5": 120.0, "m6": 120.0}  # m4, m5 run when slots free; m6 waits
    replies: dict[str, dict[str, Any]] = {}
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(gateway.url, headers=gateway.auth_headers()) as ws,
    ):
        for message_id, seconds in {**quick, **stuck}.items():
            await ws.send_str(_sleep_submit(message_id, seconds))
        await _wait(lambda: (lambda h: h["in_flight"] >= 1
                             and h["in_flight"] + h["queue_depth"] == 6)(
            gateway.get("/health")), 15, "m1 running, the others in flight or queued")  # fmt: skip

        gateway.proc.send_signal(signal.SIGTERM)
        await _wait(lambda: _http(gateway, "/health")[1]["stopping"], 10, "draining")
        status, body = await asyncio.to_thread(_http, gateway, "/health/ready")
        assert status == 503 and "stopping" in body["reasons"][0]
        assert await asyncio.to_thread(
            _post, gateway, "/v1/packets", {"group": "cf", "element": "ping"}
        ) == 503  # fmt: skip
        try:
            async with session.ws_connect(gateway.url, headers=gateway.auth_headers()):
                raise AssertionError("a WebSocket upgrade was accepted while draining")
        except aiohttp.WSServerHandshakeError as err:
            assert err.status == 503
        await ws.send_str(_sleep_submit("m7", 0.0))  # on the open connection: PF503

        while True:
            frame = await ws.receive(timeout=30)
            if frame.type != aiohttp.WSMsgType.TEXT:
                break
            reply = json.loads(frame.data)
            assert reply["correlation_id"] not in replies, "answered twice"
            replies[reply["correlation_id"]] = reply
        assert ws.close_code == 1001
    assert sorted(replies) == ["m1", "m2", "m3", "m4", "m5", "m6", "m7"]
    for message_id in quick:
        assert replies[message_id]["message_type"] == "result", replies[message_id]
        assert replies[message_id]["payload"]["data"]["result"] == message_id
    for message_id in (*stuck, "m7"):
        reply = replies[message_id]
        assert reply["message_type"] == "error", reply
        payload = reply["payload"]
        assert payload["error_code"] == "PF503"
        assert payload["retry_possible"] is True and payload["retry_delay_ms"] > 0
        assert payload["error_details"]["reason"] == "shutdown"
    assert await asyncio.to_thread(gateway.proc.wait, 20) == 0
