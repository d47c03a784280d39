"""End-to-end figures through the gateway: cf:ping round trips with one or two reactors
and several client connections, and latency one at a time, each next to a bare aiohttp
relay (client → relay → echo) measured in the same run with frames of the same size."""

from __future__ import annotations

import statistics
from collections.abc import Awaitable, Callable
from typing import Any

from .harness import Procs, measure, ping_frame, rate_row, start_baselines, start_cluster
from .load import run_load


def _throughput(url: str, frame: Callable[[int], bytes], count: int, in_flight: int,
                connections: int = 1) -> Callable[[], Awaitable[float]]:  # fmt: skip
    async def go() -> float:
        per_conn = max(1, count // connections)
        result = await run_load(url, frame, count=per_conn, in_flight=in_flight,
                                connections=connections)  # fmt: skip
        return result.rate

    return go


def _latency(url: str, frame: Callable[[int], bytes], count: int,
             q: float) -> Callable[[], Awaitable[float]]:  # fmt: skip
    async def go() -> float:
        result = await run_load(url, frame, count=count, in_flight=1)
        lat = sorted(result.latencies_ms)
        return 1000.0 * lat[min(len(lat) - 1, int(q * len(lat)))]

    return go


def _latency_loaded(url: str, frame: Callable[[int], bytes], count: int, in_flight: int,
                    q: float) -> Callable[[], Awaitable[float]]:  # fmt: skip
    async def go() -> float:
        result = await run_load(url, frame, count=count, in_flight=in_flight, track=True)
        lat = sorted(result.latencies_ms)
        return 1000.0 * lat[min(len(lat) - 1, int(q * len(lat)))]

    return go


def gateway_rows(runs: int, count: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with Procs() as procs:
        _, relay_url = start_baselines(procs)
        gw_url = start_cluster(procs, reactors=1)
        relay = measure(_throughput(relay_url, ping_frame, count, 64), runs)
        one = measure(_throughput(gw_url, ping_frame, count, 64), runs)
        rows.append(rate_row("cf:ping via gateway + 1 reactor, 1 conn × 64 in flight (msg/s)",
                             one, relay,
                             goal="≥ 25,000/s and ≥ 40% of the relay"))  # fmt: skip
        relay8 = measure(_throughput(relay_url, ping_frame, count, 16, 8), runs)
        eight = measure(_throughput(gw_url, ping_frame, count, 16, 8), runs)
        rows.append(rate_row("cf:ping via gateway + 1 reactor, 8 conns × 16 in flight (msg/s)",
                             eight, relay8, goal="≥ 25,000/s"))  # fmt: skip
        lat_n = max(200, count // 10)
        for q, name in ((0.5, "p50"), (0.99, "p99")):
            base = measure(_latency(relay_url, ping_frame, lat_n, q), runs)
            ours = measure(_latency(gw_url, ping_frame, lat_n, q), runs)
            rows.append({
                "figure": f"cf:ping via gateway, 1 in flight, {name} latency (µs)",
                "value": ours, "baseline_name": "bare aiohttp relay", "baseline": base,
                "ratio": ours["median"] / base["median"],
                "goal": "≤ 250 µs" if name == "p50" else "≤ 1,000 µs",
            })  # fmt: skip
    with Procs() as procs:
        _, relay_url = start_baselines(procs)
        gw_url = start_cluster(procs, reactors=2)
        relay = measure(_throughput(relay_url, ping_frame, count, 64), runs)
        two = measure(_throughput(gw_url, ping_frame, count, 64), runs)
        rows.append(rate_row("cf:ping via gateway + 2 reactors, 1 conn × 64 in flight (msg/s)",
                             two, relay, goal="≥ 40% of the relay"))  # fmt: skip
        for q, name in ((0.5, "p50"), (0.99, "p99")):
            base = measure(_latency_loaded(relay_url, ping_frame, count, 64, q), runs)
            ours = measure(_latency_loaded(gw_url, ping_frame, count, 64, q), runs)
            rows.append({
                "figure": f"cf:ping via gateway + 2 reactors, 64 in flight, {name} latency (µs)",
                "value": ours, "baseline_name": "bare aiohttp relay", "baseline": base,
                "ratio": ours["median"] / base["median"],
            })  # fmt: skip
    return rows


if __name__ == "__main__":
    for row in gateway_rows(5, 20_000):
        print(row["figure"], statistics.median([row["value"]["median"]]), row["ratio"])
