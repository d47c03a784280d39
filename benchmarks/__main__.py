"""``python -m benchmarks``: packetflow's figures next to the transport's own limit.

Every figure is the median of several runs (min and max shown), measured in the same run
as its baseline, with the ratio. ``--smoke`` proves the benchmarks still work (CI);
``--json`` prints machine-readable results.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import time
from collections.abc import Awaitable, Callable
from datetime import date
from typing import Any

from packetflow.cluster import read_ready, spawn, stop_all
from packetflow.runner import event_loop_factory

from .load import run_load

PING_TEMPLATE = (
    b'{"protocol_version":"1.0","message_type":"submit","message_id":"msg_bench_%d",'
    b'"timestamp":1640995200000,"source_id":"bench-client","payload":{"packet":'
    b'{"id":"packet_bench_%d","group":"cf","element":"ping","data":{"echo_data":"x"}}}}'
)


def ping_frame(i: int) -> bytes:
    return PING_TEMPLATE % (i, i)


def same_size_frame(i: int) -> bytes:
    """A frame of the same size as a cf:ping SUBMIT, for the baselines."""
    return ping_frame(i)


def _start(args: list[str], module: str = "packetflow") -> tuple[Any, str]:
    import subprocess
    import sys

    if module == "packetflow":
        proc = spawn(["--log-level", "WARNING", *args], new_session=False)
    else:
        proc = subprocess.Popen([sys.executable, "-m", module, *args], stdout=subprocess.PIPE)
    ready = read_ready(proc, 20)
    if ready is None:
        stop_all([proc], 2)
        raise RuntimeError(f"{module} {args} did not start")
    return proc, str(ready["url"])


def _wait_linked(gateway_url: str, n: int) -> None:
    import urllib.request

    base = gateway_url.replace("ws://", "http://").removesuffix("/ws")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"{base}/health", timeout=2) as resp:
            if json.load(resp)["healthy_reactors"] >= n:
                return
        time.sleep(0.05)
    raise RuntimeError("reactors did not link")


def _measure(fn: Callable[[], Awaitable[float]], runs: int) -> dict[str, float]:
    values = []
    for _ in range(runs):
        with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
            values.append(runner.run(fn()))
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "runs": len(values)}  # fmt: skip


def bench_gateway_ping(runs: int, count: int) -> list[dict[str, Any]]:
    """cf:ping through gateway + 1 reactor (64 in flight, one connection) vs a bare relay."""
    procs = []
    try:
        echo, echo_url = _start(["echo"], "benchmarks.baselines")
        relay, relay_url = _start(["relay", echo_url], "benchmarks.baselines")
        gateway, gw_url = _start(["gateway", "--port", "0"])
        reactor, _ = _start(
            [
                "reactor",
                "--port",
                "0",
                "--gateway",
                gw_url,
                "--specialization",
                "cpu_intensive",
                "--max-concurrent",
                "256",
            ]
        )
        procs = [reactor, gateway, relay, echo]
        _wait_linked(gw_url, 1)

        def load(url: str, frame: Callable[[int], bytes]) -> Callable[[], Awaitable[float]]:
            async def go() -> float:
                return (await run_load(url, frame, count=count, in_flight=64)).rate

            return go

        rows = []
        relay_rate = _measure(load(relay_url, same_size_frame), runs)
        pf_rate = _measure(load(gw_url, ping_frame), runs)
        rows.append({
            "figure": "cf:ping via gateway+1 reactor, 64 in flight (msgs/s)",
            "value": pf_rate, "baseline_name": "bare aiohttp relay", "baseline": relay_rate,
            "ratio": pf_rate["median"] / relay_rate["median"],
        })  # fmt: skip
        return rows
    finally:
        stop_all(procs, 5)


def _fmt(stats: dict[str, float]) -> str:
    return f"{stats['median']:>10,.0f} (min {stats['min']:,.0f}, max {stats['max']:,.0f})"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--smoke", action="store_true", help="tiny runs: prove it works")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    runs, count = (1, 300) if args.smoke else (args.runs, 20_000)
    rows = bench_gateway_ping(runs, count)
    chains, fanout = (5, 20) if args.smoke else (MOLECULE_CHAINS, MOLECULE_FANOUT)
    rows += bench_molecules(runs, chains, fanout)
    report = {"date": date.today().isoformat(), "machine": f"{platform.machine()}, "
              f"{__import__('os').cpu_count()} cores, Python {platform.python_version()}",
              "smoke": args.smoke, "figures": rows}  # fmt: skip
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"packetflow benchmarks — {report['date']} — {report['machine']}"
          + (" — SMOKE (not a measurement)" if args.smoke else ""))  # fmt: skip
    for row in rows:
        if "peers" in row:
            print(_molecule_row(row))
            continue
        print(f"{row['figure']}\n  packetflow {_fmt(row['value'])}\n"
              f"  {row['baseline_name']:<10} {_fmt(row['baseline'])}\n"
              f"  ratio {row['ratio']:.1%}")  # fmt: skip


# ---------------------------------------------------------------- molecules (PFAP §7)

# The workload: sequential 4-stage ionic chains, and one 1,000-way fan-out plus an
# aggregate packet, each through a gateway and 2 reactors.
MOLECULE_CHAINS = 200
MOLECULE_FANOUT = 1000
# Peer figures quoted by the issue (same workloads), and the goals it sets.
CHAIN_PEERS_MS = {"Ray": 6.3, "Celery": 14.6, "Dask": 30.4}
CHAIN_GOAL_MS = 2.0
FANOUT_PEERS_S = {"Ray": 0.53, "Celery": 2.07, "Dask": 2.29}
FANOUT_GOAL_S = 0.25


def _chain(i: int) -> dict[str, Any]:
    """4 trivial df:transform packets; each works on the previous one's result (ionic
    bonds, data flowing through ctx.inputs)."""
    ops = ("uppercase", "lowercase", "reverse", "length")
    packets: list[dict[str, Any]] = [
        {"id": f"s{k}", "group": "df", "element": "transform", "data": {"operation": op}}
        for k, op in enumerate(ops)
    ]
    packets[0]["data"]["input"] = f"chain-{i}"
    bonds = [{"from": f"s{k}", "to": f"s{k + 1}", "type": "ionic"} for k in range(3)]
    return {"coordination_type": "initiate", "molecule_id": f"bench-chain-{i}-{time.time_ns()}",
            "molecular_structure": {"packets": packets, "bonds": bonds}}  # fmt: skip


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

    procs: list[Any] = []
    with tempfile.TemporaryDirectory(prefix="pf-bench-") as tmp:
        try:
            gateway, gw_url = _start(["gateway", "--port", "0", "--data-dir", tmp])
            procs.append(gateway)
            for spec in ("cpu_intensive", "memory_bound"):
                reactor, _ = _start(["reactor", "--port", "0", "--gateway", gw_url,
                                     "--specialization", spec, "--max-concurrent", "256",
                                     "--data-dir", tmp])  # fmt: skip
                procs.insert(0, reactor)
            _wait_linked(gw_url, 2)

            async def chain_ms() -> float:
                async with AsyncClient(gw_url) as pf:
                    await _run_molecule(pf, _chain(-1))  # warm-up
                    started = time.perf_counter()
                    for i in range(chains):
                        status = await _run_molecule(pf, _chain(i))
                        if status != "success":
                            raise RuntimeError(f"chain {i} ended {status}")
                    return (time.perf_counter() - started) * 1000.0 / chains

            async def fanout_s() -> float:
                async with AsyncClient(gw_url) as pf:
                    started = time.perf_counter()
                    status = await _run_molecule(pf, _fanout(fanout))
                    if status != "success":
                        raise RuntimeError(f"fan-out ended {status}")
                    return time.perf_counter() - started

            chain = _measure(chain_ms, runs)
            fan = _measure(fanout_s, runs)
        finally:
            stop_all(procs, 5)
    return [
        {"figure": f"4-stage ionic chain, {chains} sequential molecules, gateway+2 reactors "
                   "(mean ms per molecule)",
         "value": chain, "unit": "ms", "goal": CHAIN_GOAL_MS, "peers": CHAIN_PEERS_MS},
        {"figure": f"{fanout}-packet fan-out + 1 aggregate molecule, gateway+2 reactors "
                   "(seconds)",
         "value": fan, "unit": "s", "goal": FANOUT_GOAL_S, "peers": FANOUT_PEERS_S},
    ]  # fmt: skip


def _molecule_row(row: dict[str, Any]) -> str:
    v, unit = row["value"], row["unit"]
    digits = 3 if unit == "s" else 2
    peers = " / ".join(f"{name} {value:g} {unit}" for name, value in row["peers"].items())
    met = "met" if v["median"] <= row["goal"] else "NOT met"
    return (f"{row['figure']}\n  packetflow {v['median']:.{digits}f} {unit} "
            f"(min {v['min']:.{digits}f}, max {v['max']:.{digits}f})\n"
            f"  peers (quoted) {peers}\n  goal <= {row['goal']:g} {unit}: {met}")  # fmt: skip


if __name__ == "__main__":
    main()
