"""End-to-end figures through the gateway: cf:ping round trips with one or two reactors
and several client connections, and latency, each next to a bare aiohttp relay (client →
relay → echo) measured in the same run, alternately, with frames of the same size."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from .harness import Procs, alternate, ping_frame, rate_row, start_baselines, start_cluster
from .load import run_load


def _rate(url: str, count: int, in_flight: int,
          connections: int = 1) -> Callable[[], Awaitable[float]]:  # fmt: skip
    async def go() -> float:
        per_conn = max(1, count // connections)
        result = await run_load(url, ping_frame, count=per_conn, in_flight=in_flight,
                                connections=connections)  # fmt: skip
        return result.rate

    return go


def _p50_p99_us(url: str, count: int, in_flight: int) -> Callable[[], Awaitable[list[float]]]:
    async def go() -> list[float]:
        result = await run_load(url, ping_frame, count=count, in_flight=in_flight, track=True)
        lat = sorted(result.latencies_ms)
        return [1000.0 * lat[min(len(lat) - 1, int(q * len(lat)))] for q in (0.5, 0.99)]

    return go


def _latency_rows(label: str, base: list[list[float]], ours: list[list[float]],
                  goals: tuple[str | None, str | None],
                  p50_ratio: tuple[str, float] | None = None) -> list[dict[str, Any]]:  # fmt: skip
    return [
        rate_row(f"{label}, {name} latency (µs)", [v[i] for v in ours], [v[i] for v in base],
                 goal=goals[i], ratio_goal=p50_ratio if i == 0 else None)
        for i, name in enumerate(("p50", "p99"))
    ]  # fmt: skip


def gateway_rows(runs: int, count: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with Procs() as procs:
        _, relay_url = start_baselines(procs)
        gw_url = start_cluster(procs, reactors=1)
        relay, one = alternate(runs, _rate(relay_url, count, 64), _rate(gw_url, count, 64))
        rows.append(rate_row("cf:ping via gateway + 1 reactor, 1 conn × 64 in flight (msg/s)",
                             one, relay, goal="stretch: ≥ 50% of the relay",
                             ratio_goal=(">=", 0.40)))  # fmt: skip
        relay8, eight = alternate(runs, _rate(relay_url, count, 16, 8),
                                  _rate(gw_url, count, 16, 8))  # fmt: skip
        rows.append(rate_row("cf:ping via gateway + 1 reactor, 8 conns × 16 in flight (msg/s)",
                             eight, relay8, goal="≥ 25,000/s"))  # fmt: skip
        lat_n = max(200, count // 10)
        base, ours = alternate(runs, _p50_p99_us(relay_url, lat_n, 1),
                               _p50_p99_us(gw_url, lat_n, 1))  # fmt: skip
        rows += _latency_rows("cf:ping via gateway, 1 in flight", base, ours,
                              ("≤ 250 µs", "≤ 1,000 µs"), ("<=", 1.5))  # fmt: skip
    with Procs() as procs:
        _, relay_url = start_baselines(procs)
        gw_url = start_cluster(procs, reactors=2)
        relay, two = alternate(runs, _rate(relay_url, count, 64), _rate(gw_url, count, 64))
        rows.append(rate_row("cf:ping via gateway + 2 reactors, 1 conn × 64 in flight (msg/s)",
                             two, relay, ratio_goal=(">=", 0.40)))  # fmt: skip
        base, ours = alternate(runs, _p50_p99_us(relay_url, count, 64),
                               _p50_p99_us(gw_url, count, 64))  # fmt: skip
        rows += _latency_rows("cf:ping via gateway + 2 reactors, 64 in flight", base, ours,
                              (None, None))  # fmt: skip
    return rows
