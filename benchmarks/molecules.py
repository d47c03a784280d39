"""Molecules (PFAP §7) through a gateway and 2 reactors: mean ms per sequential 4-stage
ionic chain, and seconds for a 1,000-packet fan-out plus one aggregate, next to the peer
figures the issue quotes for the same shapes."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from .harness import Procs, alternate, measure, stats, wait_linked

# The workload: sequential 4-stage ionic chains, and one 1,000-way fan-out plus an
# aggregate packet, each through a gateway and 2 reactors.
MOLECULE_CHAINS = 200
MOLECULE_FANOUT = 1000
# Peer figures quoted by the issue (same workloads), and the goals it sets.
CHAIN_PEERS_MS = {"Ray": 6.3, "Celery": 14.6, "Dask": 30.4}
CHAIN_GOAL_MS = 2.0  # issue 15: ≤ 2 ms on README's VM, ≥ 3× ahead of Ray the same hour
FANOUT_PEERS_S = {"Ray": 0.53, "Celery": 2.07, "Dask": 2.29}
FANOUT_GOAL_S = 0.106  # issue 15: ≥ 5× ahead of Ray (0.53 s quoted)


def _chain(i: int, progress: bool = False) -> dict[str, Any]:
    """4 trivial df:transform packets; each works on the previous one's result (ionic
    bonds, data flowing through ctx.inputs). Without ``progress`` the client asks only for
    the acknowledgement and the outcome (``progress_updates: false``), as a Ray, Celery or
    Dask client waiting on the last task gets nothing in between."""
    ops = ("uppercase", "lowercase", "reverse", "length")
    packets: list[dict[str, Any]] = [
        {"id": f"s{k}", "group": "df", "element": "transform", "data": {"operation": op}}
        for k, op in enumerate(ops)
    ]
    packets[0]["data"]["input"] = f"chain-{i}"
    bonds = [{"from": f"s{k}", "to": f"s{k + 1}", "type": "ionic"} for k in range(3)]
    return {"coordination_type": "initiate", "molecule_id": f"bench-chain-{i}-{time.time_ns()}",
            "molecular_structure": {"packets": packets, "bonds": bonds},
            "progress_updates": progress}  # fmt: skip


def _fanout(n: int) -> dict[str, Any]:
    """n cf:ping packets, then one aggregate packet that receives all n results in
    ctx.inputs (cf:ping: the standard library has no element that folds many inputs)."""
    packets: list[dict[str, Any]] = [
        {"id": f"p{k}", "group": "cf", "element": "ping", "data": {"echo_data": k}}
        for k in range(n)
    ]
    packets.append({"id": "aggregate", "group": "cf", "element": "ping", "data": {},
                    "dependencies": [f"p{k}" for k in range(n)]})  # fmt: skip
    return {"coordination_type": "initiate", "molecule_id": f"bench-fanout-{time.time_ns()}",
            "molecular_structure": {"packets": packets}}  # fmt: skip


async def _run_molecule(client: Any, payload: dict[str, Any]) -> str:
    async for msg in client.coordinate(payload):
        if msg.payload.coordination_type in ("complete", "abort"):
            return str(msg.payload.status)
    raise RuntimeError("molecule stream ended early")


def bench_molecules(runs: int, chains: int, fanout: int) -> list[dict[str, Any]]:
    """Molecules through gateway + 2 reactors over /ws: mean ms per sequential 4-stage
    chain, and seconds for a fan-out of ``fanout`` packets plus one aggregate."""
    import tempfile

    from packetflow.client import AsyncClient

    with tempfile.TemporaryDirectory(prefix="pf-bench-") as tmp, Procs() as procs:
        gw_url = procs.start(["gateway", "--port", "0", "--data-dir", tmp])
        for spec in ("cpu_intensive", "memory_bound"):
            procs.start(["reactor", "--port", "0", "--gateway", gw_url,
                         "--specialization", spec, "--max-concurrent", "256",
                         "--data-dir", tmp])  # fmt: skip
        wait_linked(gw_url, 2)

        def chain_ms(progress: bool) -> Callable[[], Awaitable[float]]:
            async def go() -> float:
                async with AsyncClient(gw_url) as pf:
                    await _run_molecule(pf, _chain(-1, progress))  # warm-up
                    started = time.perf_counter()
                    for i in range(chains):
                        status = await _run_molecule(pf, _chain(i, progress))
                        if status != "success":
                            raise RuntimeError(f"chain {i} ended {status}")
                    return (time.perf_counter() - started) * 1000.0 / chains

            return go

        async def fanout_s() -> float:
            async with AsyncClient(gw_url) as pf:
                started = time.perf_counter()
                status = await _run_molecule(pf, _fanout(fanout))
                if status != "success":
                    raise RuntimeError(f"fan-out ended {status}")
                return time.perf_counter() - started

        # In turn, so that drift on a busy machine hits both alike.
        quiet, chatty = alternate(runs, chain_ms(False), chain_ms(True))
        chain, chain_progress = stats(quiet), stats(chatty)
        fan = measure(fanout_s, runs)
    return [
        {"figure": f"4-stage ionic chain, {chains} sequential molecules, gateway+2 reactors, "
                   "client waits for the outcome (progress_updates false; mean ms per molecule)",
         "value": chain, "unit": "ms", "goal": CHAIN_GOAL_MS, "peers": CHAIN_PEERS_MS,
         "ahead_goal": ("Ray", 3.0)},
        {"figure": "the same chain, with a progress message pushed on every step (the "
                   "default; mean ms per molecule)",
         "value": chain_progress, "unit": "ms"},
        {"figure": f"{fanout}-packet fan-out + 1 aggregate molecule, gateway+2 reactors "
                   "(seconds)",
         "value": fan, "unit": "s", "goal": FANOUT_GOAL_S, "peers": FANOUT_PEERS_S,
         "ahead_goal": ("Ray", 5.0)},
    ]  # fmt: skip
