"""cf:ping straight to the Node.js reactor (interop/js-reactor) and to our Python reactor,
64 in flight on one connection: `python -m benchmarks.js_reactor [--count N] [--runs R]`.
Prints msg/s and p50/p99 latency per run, the two alternating so drift hits both."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from packetflow.cluster import read_ready, spawn, stop_all
from packetflow.protocol.authentication import DIAL_TOKEN_HEADER

REACTOR_JS = Path(__file__).resolve().parents[1] / "interop" / "js-reactor" / "reactor.js"
IN_FLIGHT = 64
START_TIMEOUT_S = 20.0
PING = (
    '{"protocol_version":"1.0","message_type":"submit","message_id":"msg_bench_%d",'
    '"timestamp":1640995200000,"source_id":"bench-client","payload":{"packet":'
    '{"id":"packet_bench_%d","group":"cf","element":"ping","data":{"echo_data":"x"}}}}'
)


async def ping_run(url: str, token: str, count: int) -> tuple[float, list[float]]:
    """``count`` pings, ``IN_FLIGHT`` outstanding: (msg/s, latencies in µs)."""
    sent: dict[str, float] = {}
    latencies: list[float] = []
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(url, headers={DIAL_TOKEN_HEADER: token}, max_msg_size=0) as ws,
    ):
        next_id = 0

        async def send_one() -> None:
            nonlocal next_id
            sent[f"msg_bench_{next_id}"] = time.perf_counter()
            await ws.send_str(PING % (next_id, next_id))
            next_id += 1

        start = time.perf_counter()
        for _ in range(min(IN_FLIGHT, count)):
            await send_one()
        while len(latencies) < count:
            msg = json.loads((await ws.receive(timeout=30)).data)
            if msg["message_type"] == "heartbeat":
                continue
            if msg["message_type"] != "result":
                raise RuntimeError(f"ping failed: {msg['payload']}")
            latencies.append((time.perf_counter() - sent.pop(msg["correlation_id"])) * 1e6)
            if next_id < count:
                await send_one()
        elapsed = time.perf_counter() - start
    return count / elapsed, latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    node = shutil.which("node")
    if node is None:
        sys.exit("node is not on PATH")
    root = Path(tempfile.mkdtemp(prefix="pf-bench-js-"))
    token_file = root / "accept.token"
    token = secrets.token_urlsafe(32)
    token_file.touch(mode=0o600)
    token_file.write_text(token)
    accept = ["--accept-token-file", str(token_file)]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        py_proc = spawn(["--log-level", "WARNING", "reactor", "--port", "0",
                         "--data-dir", str(root / "py"), *accept])  # fmt: skip
        procs.append(py_proc)
        js_proc = subprocess.Popen([node, str(REACTOR_JS), "--port", "0", *accept],
                                   stdout=subprocess.PIPE, env=dict(os.environ))  # fmt: skip
        procs.append(js_proc)
        urls = {}
        for name, proc in (("python", py_proc), ("javascript", js_proc)):
            ready = read_ready(proc, START_TIMEOUT_S)
            if ready is None:
                sys.exit(f"the {name} reactor did not start")
            urls[name] = ready["url"]
        results: dict[str, list[tuple[float, list[float]]]] = {n: [] for n in urls}
        for _ in range(args.runs):
            for name, url in urls.items():
                results[name].append(asyncio.run(ping_run(url, token, args.count)))
        print(f"cf:ping direct to one reactor, 1 connection × {IN_FLIGHT} in flight, "
              f"{args.count} pings × {args.runs} runs")  # fmt: skip
        for name, runs in results.items():
            rates = [r for r, _ in runs]
            lat = sorted(x for _, ls in runs for x in ls)
            p50 = lat[len(lat) // 2]
            p99 = lat[int(len(lat) * 0.99) - 1]
            print(f"  {name:<10} median {statistics.median(rates):>9,.0f} msg/s "
                  f"(runs: {', '.join(f'{r:,.0f}' for r in rates)}); "
                  f"p50 {p50:,.0f} µs, p99 {p99:,.0f} µs")  # fmt: skip
    finally:
        stop_all(procs, 5)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
