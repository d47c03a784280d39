"""Several gateways over NATS JetStream (issue 14): end-to-end cf:ping throughput with two
gateways against one (same reactors, same machine), and what the NATS-backed state costs
one gateway against the embedded one (throughput, and latency with one packet in flight).

On a 2-core machine the client, the gateways, the reactors and nats-server share two
cores, so two gateways cannot show more throughput than one there; the row says what the
second gateway costs or gains, the scaling claim rests on the design (no shared lock on
the per-packet path: routing from each gateway's local view).
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from packetflow.natsserver import start_nats

from .harness import Procs, alternate, ping_frame, rate_row, stats, wait_linked
from .load import run_load

REACTORS = 2
IN_FLIGHT = 32


def _gateway(procs: Procs, data: Path, *extra: str) -> str:
    return procs.start(["gateway", "--port", "0", "--data-dir", str(data), *extra])


def _reactors(procs: Procs, gw_url: str, n: int = REACTORS) -> None:
    for _ in range(n):
        procs.start(["reactor", "--port", "0", "--gateway", gw_url, "--specialization",
                     "cpu_intensive", "--max-concurrent", "256"])  # fmt: skip


def _rate(urls: list[str], count: int, in_flight: int) -> Callable[[], Awaitable[float]]:
    """Total rate of one client connection per gateway, all at once."""

    async def go() -> float:
        results = await asyncio.gather(*(
            run_load(url, ping_frame, count=count // len(urls), in_flight=in_flight)
            for url in urls
        ))  # fmt: skip
        return sum(r.rate for r in results)

    return go


def _p50_us(url: str, count: int) -> Callable[[], Awaitable[float]]:
    async def go() -> float:
        result = await run_load(url, ping_frame, count=count, in_flight=1, track=True)
        lat = sorted(result.latencies_ms)
        return 1000.0 * lat[len(lat) // 2]

    return go


def scaleout_rows(runs: int, count: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    root = Path(tempfile.mkdtemp(prefix="pf-bench-nats-"))
    nats = start_nats(root / "nats")
    try:
        with Procs() as procs:
            embedded = _gateway(procs, root / "embedded")
            _reactors(procs, embedded)
            wait_linked(embedded, REACTORS)
            cluster = ("--cluster", nats.url)
            a = _gateway(procs, root / "a", *cluster, "--id", "bench-gateway-a")
            # B's CLI credentials: the key list comes through NATS, the key file from A.
            (root / "b" / "security").mkdir(parents=True)
            shutil.copy(root / "a" / "security" / "admin.key", root / "b" / "security")
            b = _gateway(procs, root / "b", *cluster, "--id", "bench-gateway-b")
            _reactors(procs, a)
            wait_linked(a, REACTORS)
            wait_linked(b, REACTORS)
            base, one, two = alternate(runs, _rate([embedded], count, IN_FLIGHT),
                                       _rate([a], count, IN_FLIGHT),
                                       _rate([a, b], count, IN_FLIGHT))  # fmt: skip
            rows.append(rate_row(
                f"cf:ping, NATS-backed gateway vs embedded, {REACTORS} reactors, "
                f"1 conn × {IN_FLIGHT} in flight (msg/s)", one, base,
                baseline_name="embedded gateway", goal="≥ 85% of embedded (issue 14)",
            ))  # fmt: skip
            rows.append(rate_row(
                f"cf:ping through 2 NATS gateways vs 1, {REACTORS} reactors, "
                f"1 conn × {IN_FLIGHT} in flight each (msg/s, total)", two, one,
                baseline_name="1 NATS gateway",
                goal="more than 1 where cores allow (2 cores here: shared with everything)",
            ))  # fmt: skip
            lat_n = max(200, count // 20)
            lbase, lnats = alternate(runs, _p50_us(embedded, lat_n), _p50_us(a, lat_n))
            rows.append(rate_row("cf:ping p50 latency, 1 in flight, NATS-backed vs embedded (µs)",
                                 lnats, lbase, baseline_name="embedded gateway"))  # fmt: skip
            (spread,) = alternate(runs, _propagation_ms(a, b))
            rows.append({"figure": "mc:update_affinity through A until B routes with it (ms)",
                         "value": stats(spread), "goal": "≤ 1,000 ms (issue 14)"})  # fmt: skip
    finally:
        nats.stop()
        shutil.rmtree(root, ignore_errors=True)
    return rows


def _propagation_ms(a: str, b: str) -> Callable[[], Awaitable[float]]:
    """mc:update_affinity through A until B's GET /health reports the new version."""
    import time

    import aiohttp

    from packetflow.client import AsyncClient

    from .harness import credentials

    async def go() -> float:
        version = f"bench.{time.monotonic_ns()}"
        health = b.replace("ws://", "http://").removesuffix("/ws") + "/health"
        async with (
            aiohttp.ClientSession() as http,
            AsyncClient(a, headers=credentials(a), credentials=False) as pf,
        ):
            start = time.perf_counter()
            await pf.submit("mc", "update_affinity", {
                "matrix_updates": {"cf": {"cpu_intensive": 0.9}}, "version": version})  # fmt: skip
            while True:
                async with http.get(health) as resp:
                    if (await resp.json())["affinity_matrix_version"] == version:
                        return (time.perf_counter() - start) * 1000.0
                await asyncio.sleep(0.002)

    return go
