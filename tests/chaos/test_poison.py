"""Chaos: a poison packet (its element kills the reactor running it) among normal ones.
DESIGN §6: each death counts a delivery against the suspect (failover.blame_for_death);
after max_retries + 1 it fails with PF005, retry_possible false, no normal packet
reaches the limit beside it, and no normal packet is lost or answered twice. The test plays the
supervisor: every reactor that dies is started again under its own id."""

from __future__ import annotations

import asyncio
import time

import pytest

from packetflow.protocol.retry import RetryPolicy
from tests.integration.cluster import Cluster, Node
from tests.integration.slow_elements import safe_name

from .chaos_elements import CRASH_EXIT_CODE, counts
from .figures import Figures, pick
from .fleet import start_reactor, wait_async
from .traffic import Traffic

pytestmark = pytest.mark.chaos

REACTORS = ("p0", "p1", "p2")
NORMAL = int(pick(1_000, 10_000))
POISONS = int(pick(1, 3))
LIMIT = RetryPolicy().max_retries + 1  # the gateway runs with the default policy


async def _supervise(cluster: Cluster, gateway: Node, nodes: dict[str, Node], data: object,
                     deaths: list[int], stop: asyncio.Event) -> None:  # fmt: skip
    """Restart each reactor that exits, as a process supervisor would."""
    while not stop.is_set():
        for rid, node in list(nodes.items()):
            code = node.proc.poll()
            if code is None:
                continue
            deaths.append(code)
            nodes[rid] = await asyncio.to_thread(start_reactor, cluster, gateway, data, rid)  # type: ignore[arg-type]
        try:
            await asyncio.wait_for(stop.wait(), 0.1)
        except TimeoutError:
            continue


@pytest.mark.timeout(int(pick(180, 900)))
async def test_poison_packet_fails_pf005_and_loses_nothing(
    cluster: Cluster, figures: Figures
) -> None:
    gateway = cluster.gateway()
    data = cluster.root / "reactor-data"
    nodes = {rid: start_reactor(cluster, gateway, data, rid) for rid in REACTORS}
    deaths: list[int] = []
    async with Traffic(gateway) as traffic:
        stop = asyncio.Event()
        supervisor = asyncio.ensure_future(
            _supervise(cluster, gateway, nodes, data, deaths, stop))  # fmt: skip
        try:
            load = asyncio.ensure_future(traffic.steady(
                30, lambda n: ("work", {"ms": 20, "value": n}), stop, total=NORMAL))  # fmt: skip
            await wait_async(lambda: traffic.answered() >= 50, 60, "normal load to run")
            started = time.monotonic()
            poisons = {await traffic.submit("crash", {}, timeout_ms=300_000): started
                       for _ in range(POISONS)}  # fmt: skip
            await load
            await traffic.drain(240)
        finally:
            stop.set()
            await supervisor
            # The last crash can come after the supervisor's last look: its reactor died
            # before the gateway answered PF005, so it has exited by now.
            deaths += [code for node in nodes.values() if (code := node.proc.poll()) is not None]
        await wait_async(lambda: gateway.get("/health")["in_flight"] == 0, 30,
                         "the gateway to have nothing in flight")  # fmt: skip
    runs = counts(data)
    normal = {mid: s for mid, s in traffic.sent.items() if mid not in poisons}
    deliveries = [runs[safe_name(traffic.sent[mid].packet_id)] for mid in poisons]
    answers = [traffic.sent[mid].replies for mid in poisons]
    normal_errors = [f"{r.error_code} {r.error_message}" for s in normal.values()
                     for r in s.replies if r.kind == "error"]  # fmt: skip
    figures.record(
        normal=len(normal), poisons=POISONS, limit=LIMIT, deliveries_max=max(deliveries),
        reactor_deaths=len(deaths),
        poison_answered_s=max(traffic.sent[mid].replies[0].at - t for mid, t in poisons.items()),
        normal_lost=sum(1 for s in normal.values() if not s.replies),
        duplicates=len(traffic.duplicates()), normal_errors=len(normal_errors),
    )  # fmt: skip
    assert len(normal) == NORMAL
    assert traffic.unanswered() == [] and traffic.duplicates() == {} and traffic.stray == []
    assert normal_errors == [], normal_errors[:10]
    assert all(r.kind == "result" for s in normal.values() for r in s.replies)
    for delivered, replies in zip(deliveries, answers, strict=True):
        assert 1 <= delivered <= LIMIT
        assert [(r.kind, r.error_code) for r in replies] == [("error", "PF005")]
    # Every death was the poison's doing, and each one counted as a delivery.
    assert deaths and all(code == CRASH_EXIT_CODE for code in deaths)
    assert len(deaths) == sum(deliveries)
