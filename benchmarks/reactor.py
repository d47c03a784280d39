"""Reactor figures: one reactor process driven directly (no gateway), next to a bare
aiohttp WebSocket echo measured in the same run with frames of the same size, plus the
per-packet cost inside the reactor measured without sockets.

``reactor_rows(runs, count)`` returns rows shaped like ``benchmarks.__main__``'s;
``python -m benchmarks.reactor [--smoke] [--json]`` prints them. Baseline and
packetflow runs alternate so drift on a busy machine hits both alike.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

from packetflow.runner import event_loop_factory

from .harness import Procs, rate_row, stats
from .load import run_load

# The cf:ping SUBMIT of benchmarks.__main__, with a per-run nonce in the ids: the reactor's
# idempotency window (DESIGN §4) would otherwise answer a repeated id from its store.
PING = (
    b'{"protocol_version":"1.0","message_type":"submit","message_id":"msg_%s_%d",'
    b'"timestamp":1640995200000,"source_id":"bench-client","payload":{"packet":'
    b'{"id":"packet_%s_%d","group":"cf","element":"ping","data":{"echo_data":"x"}}}}'
)
# df:transform on a 1,000-item list (DESIGN §10's uppercase), about 12 KB per frame.
TRANSFORM_ITEMS = 1000
TRANSFORM = (
    b'{"protocol_version":"1.0","message_type":"submit","message_id":"msg_%s_%d",'
    b'"timestamp":1640995200000,"source_id":"bench-client","payload":{"packet":'
    b'{"id":"packet_%s_%d","group":"df","element":"transform","data":{"operation":'
    b'"uppercase","input":'
    + json.dumps([f"item-{i:05d}" for i in range(TRANSFORM_ITEMS)]).encode()
    + b"}}}}"
)
IN_FLIGHT = 64
# In-process overhead: packets per timed batch and how many are kept in flight at once.
OVERHEAD_PACKETS = 10_000
OVERHEAD_WINDOW = 64

Frame = Callable[[int], bytes]


def _framer(template: bytes) -> Frame:
    nonce = os.urandom(6).hex().encode()
    return lambda i: template % (nonce, i, nonce, i)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _once(fn: Callable[[], Awaitable[Any]]) -> Any:
    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        return runner.run(fn())


def _rate(url: str, template: bytes, count: int) -> float:
    frame = _framer(template)  # new ids every run: a repeated id would only be replayed

    async def go() -> float:
        return (await run_load(url, frame, count=count, in_flight=IN_FLIGHT)).rate

    return float(_once(go))


def _latencies_us(url: str, template: bytes, count: int) -> tuple[float, float]:
    frame = _framer(template)

    async def go() -> list[float]:
        return (await run_load(url, frame, count=count, in_flight=1)).latencies_ms

    lat = _once(go)
    return _percentile(lat, 0.5) * 1000.0, _percentile(lat, 0.99) * 1000.0


def direct_rows(runs: int, count: int) -> list[dict[str, Any]]:
    """Client straight to one reactor process vs the echo, alternating run by run."""
    with Procs() as procs:
        echo_url = procs.start(["echo"], "benchmarks.baselines")
        reactor_url = procs.start(["reactor", "--port", "0", "--max-concurrent", "256"])
        # 1,000-item transforms and one-at-a-time pings are slower per message: fewer of
        # them keep every figure's run in the same few seconds.
        transform_count = max(50, count // 10)
        latency_count = max(100, count // 4)
        pf: dict[str, list[float]] = {k: [] for k in ("ping", "transform", "p50", "p99")}
        base: dict[str, list[float]] = {k: [] for k in pf}
        for _ in range(runs):
            base["ping"].append(_rate(echo_url, PING, count))
            pf["ping"].append(_rate(reactor_url, PING, count))
            base["transform"].append(_rate(echo_url, TRANSFORM, transform_count))
            pf["transform"].append(_rate(reactor_url, TRANSFORM, transform_count))
            for target, url in ((base, echo_url), (pf, reactor_url)):
                p50, p99 = _latencies_us(url, PING, latency_count)
                target["p50"].append(p50)
                target["p99"].append(p99)
        echo_name = "bare aiohttp echo, same-size frames"
        return [
            rate_row(f"cf:ping direct to 1 reactor, {IN_FLIGHT} in flight (msgs/s)",
                     pf["ping"], base["ping"], echo_name, ratio_goal=(">=", 0.60)),
            rate_row(f"df:transform of {TRANSFORM_ITEMS:,} items direct to 1 reactor, "
                     f"{IN_FLIGHT} in flight (msgs/s)", pf["transform"], base["transform"],
                     echo_name),
            rate_row("cf:ping direct, 1 in flight, p50 latency (µs)", pf["p50"], base["p50"],
                     echo_name),
            rate_row("cf:ping direct, 1 in flight, p99 latency (µs)", pf["p99"], base["p99"],
                     echo_name),
        ]  # fmt: skip


# ---------------------------------------------------------------- in-process overhead


class _CountingPeer:
    """Stands in for transport.Peer: counts replies, wakes the driver when a wave is in."""

    def __init__(self) -> None:
        self.seq = 0
        self.replies = 0
        self.target = 0
        self.wave_done: asyncio.Event = asyncio.Event()

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def send(self, frame: bytes) -> bool:
        self.replies += 1
        if self.replies >= self.target:
            self.wave_done.set()
        return True


async def _noop(data: dict[str, Any], ctx: Any) -> dict[str, Any]:
    return {"ok": True}


async def _overhead_once(packets: int) -> float:
    """µs per packet for decode, validate, admit, dispatch, run a no-op, encode the reply."""
    from packetflow.protocol.messages import Submit, decode_frame
    from packetflow.reactor.registry import Registry
    from packetflow.reactor.runtime import ReactorConfig, ReactorRuntime

    registry = Registry()
    registry.element("cf", "noop")(_noop)
    runtime = ReactorRuntime(ReactorConfig(reactor_id="bench-reactor"), registry)
    peer = _CountingPeer()
    template = PING.replace(b'"element":"ping"', b'"element":"noop"')
    frame = _framer(template)
    frames = [frame(i) for i in range(packets)]  # built before the clock starts
    try:
        start = time.perf_counter()
        for first in range(0, packets, OVERHEAD_WINDOW):
            wave = frames[first : first + OVERHEAD_WINDOW]
            peer.target += len(wave)
            peer.wave_done.clear()
            for raw in wave:
                # What the server's frame handler does with each text frame.
                for item in decode_frame(raw):
                    assert isinstance(item, Submit)
                    runtime.submit(item, peer)  # type: ignore[arg-type]
            await peer.wave_done.wait()
        elapsed = time.perf_counter() - start
    finally:
        runtime.close()
    if peer.replies != packets:
        raise RuntimeError(f"expected {packets} replies, got {peer.replies}")
    return elapsed / packets * 1e6


def overhead_row(runs: int, packets: int = OVERHEAD_PACKETS) -> dict[str, Any]:
    values = [float(_once(lambda: _overhead_once(packets))) for _ in range(runs)]
    return {"figure": f"in-reactor overhead per packet, no sockets, {packets:,} packets "
                      "(µs, median of runs)", "value": stats(values)}  # fmt: skip


def reactor_rows(runs: int, count: int) -> list[dict[str, Any]]:
    """Every reactor figure: direct throughput and latency, then in-process overhead."""
    overhead_packets = OVERHEAD_PACKETS if count >= 2_000 else max(OVERHEAD_WINDOW, count)
    return [*direct_rows(runs, count), overhead_row(runs, overhead_packets)]


def _fmt(stats: dict[str, float] | None) -> str:
    if stats is None:
        return "-"
    return f"{stats['median']:>10,.1f} (min {stats['min']:,.1f}, max {stats['max']:,.1f})"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.reactor")
    parser.add_argument("--smoke", action="store_true", help="tiny runs: prove it works")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--count", type=int, default=20_000)
    args = parser.parse_args()
    runs, count = (1, 300) if args.smoke else (args.runs, args.count)
    rows = reactor_rows(runs, count)
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    for row in rows:
        line = f"{row['figure']}\n  packetflow {_fmt(row['value'])}"
        if row["baseline"] is not None:
            line += (f"\n  {row['baseline_name']}: {_fmt(row['baseline'])}"
                     f"\n  ratio {row['ratio']:.1%}")  # fmt: skip
        print(line, flush=True)


if __name__ == "__main__":
    main()
