"""Chaos: reactors SIGKILLed under steady load (DESIGN §6: no accepted packet is ever
silently lost; it completes or its submitter gets an ERROR; nothing is answered twice)."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.integration.cluster import Cluster

from .figures import Figures, pick
from .fleet import rows, running_on, sigkill, start_reactor, wait_async
from .traffic import Traffic

pytestmark = pytest.mark.chaos

REACTORS = ("r0", "r1", "r2", "r3")
IN_FLIGHT = 48
WORK_MS = 250
# Packets answered after each kill before the next one, so each kill lands on steady load.
AFTER_KILL = int(pick(150, 600))
KILLS = int(pick(1, 6))


@pytest.mark.timeout(int(pick(120, 900)))
async def test_reactor_sigkilled_under_steady_load(cluster: Cluster, figures: Figures) -> None:
    gateway = cluster.gateway()
    data = cluster.root / "reactor-data"
    nodes = {rid: start_reactor(cluster, gateway, data, rid, "--max-concurrent", "50")
             for rid in REACTORS}  # fmt: skip
    interrupted: set[str] = set()
    recovery_s: list[float] = []
    async with Traffic(gateway) as traffic:
        stop = asyncio.Event()
        load = asyncio.ensure_future(traffic.steady(
            IN_FLIGHT, lambda n: ("work", {"ms": WORK_MS, "value": n}), stop))  # fmt: skip
        for k in range(KILLS):
            victim_id = REACTORS[k % len(REACTORS)]
            victim = nodes[victim_id]
            try:
                await wait_async(lambda v=victim_id, i=interrupted: len(running_on(data, v) - i)
                                 >= 6, 30, f"packets running on {victim_id}")  # fmt: skip
            except AssertionError as exc:
                view = {r: (row["health"], row["in_flight"]) for r, row in rows(gateway).items()}
                running = running_on(data, victim_id)
                health = gateway.get("/health")
                # What the gateway says became of the packets the client still waits for
                # (the long run's stall: the gateway had completed and sent them).
                states = [gateway.get(f"/v1/packets/{traffic.sent[m].packet_id}").get("state")
                          for m in traffic.unanswered()[:5]]  # fmt: skip
                raise AssertionError(f"{exc}; reactors {view}; answered {traffic.answered()} "
                                     f"of {len(traffic.sent)}; running there {len(running)}, "
                                     f"of them interrupted before {len(running & interrupted)}; "
                                     f"gateway in_flight {health['in_flight']} queued "
                                     f"{health['queue_depth']}; unanswered at the gateway: "
                                     f"{states}"
                                     ) from None  # fmt: skip
            sigkill(victim)
            killed_at = time.monotonic()
            # Running on the victim when it died (not counted at an earlier kill of a
            # reactor with the same id).
            hit = running_on(data, victim_id) - interrupted
            # On a loaded machine the packets seen running may all finish before the kill
            # lands; such a round proves less, and the suite as a whole must still hit some.
            interrupted |= hit
            answered = traffic.answered()
            await wait_async(lambda a=answered: traffic.answered() >= a + AFTER_KILL,
                             60, "load to go on after the kill")  # fmt: skip
            await wait_async(lambda h=hit: traffic.all_answered(h), 60,
                             "every interrupted packet to be answered")  # fmt: skip
            if hit:
                recovery_s.append(traffic.last_first_reply(hit, killed_at) - killed_at)
            if k + 1 < KILLS:  # the long run brings each victim back for the next round
                # Off the event loop: the client must keep reading replies meanwhile.
                nodes[victim_id] = await asyncio.to_thread(
                    start_reactor, cluster, gateway, data, victim_id, "--max-concurrent", "50"
                )
        stop.set()
        await load
        await traffic.drain(60)
        # Nothing left in the gateway that could still answer (a late duplicate).
        await wait_async(lambda: gateway.get("/health")["in_flight"] == 0, 30,
                         "the gateway to have nothing in flight")  # fmt: skip
    assert interrupted, "no kill interrupted anything: the suite proved nothing"
    replies = [r for s in traffic.sent.values() for r in s.replies]
    errors = [r.error_code for r in replies if r.kind == "error"]
    by_packet = traffic.by_packet()
    figures.record(
        packets=len(traffic.sent), kills=KILLS, interrupted=len(interrupted),
        lost=len(traffic.unanswered()), duplicates=len(traffic.duplicates()),
        errors=len(errors), stray_replies=len(traffic.stray),
        recovery_max_s=max(recovery_s), recovery_mean_s=sum(recovery_s) / len(recovery_s),
    )  # fmt: skip
    assert traffic.unanswered() == []
    assert traffic.duplicates() == {}
    assert traffic.stray == []
    assert errors == [], errors[:10]
    # The interrupted packets were moved, not answered by the dead.
    killed = {REACTORS[k % len(REACTORS)] for k in range(KILLS)}
    assert all(by_packet[p].replies[0].reactor_id is not None for p in interrupted)
    if KILLS == 1:
        assert not {by_packet[p].replies[0].reactor_id for p in interrupted} & killed
