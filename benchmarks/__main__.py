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
    report = {"date": date.today().isoformat(), "machine": f"{platform.machine()}, "
              f"{__import__('os').cpu_count()} cores, Python {platform.python_version()}",
              "smoke": args.smoke, "figures": rows}  # fmt: skip
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"packetflow benchmarks — {report['date']} — {report['machine']}"
          + (" — SMOKE (not a measurement)" if args.smoke else ""))  # fmt: skip
    for row in rows:
        print(f"{row['figure']}\n  packetflow {_fmt(row['value'])}\n"
              f"  {row['baseline_name']:<10} {_fmt(row['baseline'])}\n"
              f"  ratio {row['ratio']:.1%}")  # fmt: skip


if __name__ == "__main__":
    main()
