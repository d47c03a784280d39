"""Chaos: a reactor that goes silent with its socket open (SIGSTOP). The gateway must
notice (PFAP §9.3/§9.4.1), route nothing more to it, move the packets it held (DESIGN
§6), and take it back through recovery to healthy once it answers again (§9.4.2)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import urllib.request

import pytest

from tests.integration.cluster import Cluster, Node
from tests.prometheus import sample

from .figures import Figures, pick
from .fleet import rows, running_on, start_reactor, wait_async
from .traffic import Traffic

pytestmark = pytest.mark.chaos

HEALTH_SCALE = 0.02
# §12.4.1 WebSocket keepalive: the gateway pings each reactor link and drops it when no
# pong comes, so the silent link is cut after interval + timeout (--ping-interval,
# --pong-timeout) and its packets fail over.
WS_PING_INTERVAL_S = 0.5
WS_PONG_TIMEOUT_S = 0.5
# A loaded 2-core machine delays every timer a little; detection is a protocol bound,
# not a speed figure, so the slack is generous.
SLACK_S = 3.0
ROUNDS = int(pick(1, 4))
# Far below the packets' own 60 s timeout: moved means moved, not timed out and retried.
MOVE_DEADLINE_S = 15.0


def _routed_to(gateway: Node, reactor_id: str) -> float:
    request = urllib.request.Request(gateway.http + "/metrics", headers=gateway.auth_headers())
    with urllib.request.urlopen(request, timeout=5) as resp:
        text = resp.read().decode()
    return sample(text, "packetflow_gateway_packets_routed", reactor=reactor_id) or 0.0


@pytest.mark.timeout(int(pick(150, 600)))
async def test_silent_reactor_detected_drained_and_recovered(
    cluster: Cluster, figures: Figures
) -> None:
    flags = ["--health-scale", str(HEALTH_SCALE), "--departure-after", "120",
             "--ping-interval", str(WS_PING_INTERVAL_S),
             "--pong-timeout", str(WS_PONG_TIMEOUT_S)]  # fmt: skip
    bound = WS_PING_INTERVAL_S + WS_PONG_TIMEOUT_S + SLACK_S
    gateway = cluster.gateway(*flags)
    data = cluster.root / "reactor-data"
    beat = ("--heartbeat-interval", "0.2")
    quiet = start_reactor(cluster, gateway, data, "quiet", *beat)
    start_reactor(cluster, gateway, data, "busy", *beat)
    detections: list[float] = []
    moves: list[float] = []
    recoveries: list[float] = []
    unmoved: set[str] = set()  # held by the silent reactor and not moved off it in time
    async with Traffic(gateway) as traffic:
        stop = asyncio.Event()
        load = asyncio.ensure_future(traffic.steady(
            24, lambda n: ("work", {"ms": 200, "value": n}), stop, timeout_ms=60_000))  # fmt: skip
        held: set[str] = set()
        for _ in range(ROUNDS):
            await wait_async(lambda h=held: len(running_on(data, "quiet") - h) >= 2, 30,
                             "packets running on the reactor to silence")  # fmt: skip
            os.kill(quiet.proc.pid, signal.SIGSTOP)
            stopped_at = time.monotonic()
            try:
                hit = running_on(data, "quiet") - held
                held |= hit
                await wait_async(lambda: rows(gateway)["quiet"]["health"] == "failed",
                                 bound + 30, "the silent reactor to be marked failed")  # fmt: skip
                detections.append(time.monotonic() - stopped_at)
                figures.record(detection_s=detections[-1], detection_bound_s=bound,
                               held_by_silent=len(hit))  # fmt: skip
                routed_at_detection = _routed_to(gateway, "quiet")
                try:
                    await wait_async(lambda h=hit: traffic.all_answered(h), MOVE_DEADLINE_S,
                                     "the silent reactor's packets to move")  # fmt: skip
                    moves.append(traffic.last_first_reply(hit, stopped_at) - stopped_at)
                except AssertionError:
                    unmoved |= {p for p in hit if not traffic.all_answered({p})}
                # Load goes on past detection; none of it may reach the silent reactor.
                answered = traffic.answered()
                await wait_async(lambda a=answered: traffic.answered() >= a + 100, 60,
                                 "load to go on after detection")  # fmt: skip
                assert _routed_to(gateway, "quiet") == routed_at_detection
            finally:
                os.kill(quiet.proc.pid, signal.SIGCONT)
            woke_at = time.monotonic()
            await wait_async(lambda: rows(gateway)["quiet"]["health"] == "healthy", 60,
                             "the reactor back to healthy")  # fmt: skip
            recoveries.append(time.monotonic() - woke_at)
        stop.set()
        await load
        await traffic.drain(90)
        await wait_async(lambda: gateway.get("/health")["in_flight"] == 0, 30,
                         "the gateway to have nothing in flight")  # fmt: skip
    by_packet = traffic.by_packet()
    errors = [r.error_code for s in traffic.sent.values() for r in s.replies if r.kind == "error"]
    figures.record(
        detection_max_s=max(detections), moved_max_s=max(moves or [-1.0]),
        recovery_to_healthy_max_s=max(recoveries),
        packets=len(traffic.sent), held=len(held), unmoved=len(unmoved),
        lost=len(traffic.unanswered()), duplicates=len(traffic.duplicates()), errors=len(errors),
    )  # fmt: skip
    assert max(detections) <= bound
    assert traffic.unanswered() == [] and traffic.duplicates() == {} and traffic.stray == []
    assert errors == [], errors[:10]
    assert unmoved == set()
    assert all(by_packet[p].replies[0].reactor_id == "busy" for p in held)
