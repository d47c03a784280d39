"""Gateway memory: bytes of RSS per packet waiting in its queue (100,000 queued behind a
reactor whose one slot is held), and RSS at rest with 1,000 reactors registered and linked
(a fleet of protocol-speaking stand-ins served from this process: 1,000 reactor processes
would not fit on the machine, and the gateway cannot tell them apart from real ones)."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from typing import Any

import aiohttp
import psutil
from aiohttp import WSMsgType

from packetflow.runner import event_loop_factory
from packetflow.transport import DEFAULT_MAX_REQUESTS_PER_CONNECTION

from .fleet import Fleet
from .harness import Procs, credentials, stats, wait_linked

QUEUED = 100_000
FLEET = 1_000
# Issue 15's goals: at most 1 KiB per queued packet, 64 MiB with 1,000 reactors linked.
QUEUE_GOAL_BYTES = 1024
IDLE_GOAL_MIB = 64

HOLD_TEMPLATE = (
    b'{"protocol_version":"1.0","message_type":"submit","message_id":"msg_hold_%d",'
    b'"timestamp":1640995200000,"source_id":"bench-client","payload":{"packet":'
    b'{"id":"packet_hold_%d","group":"df","element":"hold","timeout_ms":3600000,'
    b'"data":{"seconds":3600,"note":"a small packet of work"}}}}'
)


def _status(gateway_url: str) -> dict[str, Any]:
    base = gateway_url.replace("ws://", "http://").removesuffix("/ws")
    with urllib.request.urlopen(f"{base}/health", timeout=5) as resp:
        return dict(json.load(resp))


def _poll(gateway_url: str, key: str, want: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _status(gateway_url)[key] >= want:
            return
        time.sleep(0.1)
    raise RuntimeError(f"gateway {key} did not reach {want}")


def _rss(pid: int) -> int:
    return int(psutil.Process(pid).memory_info().rss)


async def _submit_all(url: str, n: int) -> aiohttp.ClientSession:
    """Send ``n`` held packets, at most the gateway's per-connection cap of unanswered
    requests on each connection; the session stays open (closing it would not drop the
    queue, but keeping it is what waiting clients do)."""
    session = aiohttp.ClientSession()
    for first in range(0, n, DEFAULT_MAX_REQUESTS_PER_CONNECTION):
        ws = await session.ws_connect(url, decode_text=False, max_msg_size=0,
                                      headers=credentials(url))  # fmt: skip
        for i in range(first, min(n, first + DEFAULT_MAX_REQUESTS_PER_CONNECTION)):
            await ws.send_frame(HOLD_TEMPLATE % (i, i), WSMsgType.TEXT)
    return session


def queued_bytes_per_packet(queued: int) -> float:
    """RSS growth of the gateway per queued packet with ``queued`` waiting."""
    with Procs() as procs:
        gw_url = procs.start(["gateway", "--port", "0", "--max-queue", str(queued)])
        procs.start(["reactor", "--port", "0", "--gateway", gw_url, "--max-concurrent", "1",
                     "--module", "benchmarks.hold_elements"])  # fmt: skip
        wait_linked(gw_url, 1)
        gw_pid = procs.procs[0].pid
        time.sleep(0.5)  # let start-up allocation settle before the reading
        before = _rss(gw_pid)

        async def go() -> None:
            session = await _submit_all(gw_url, queued + 1)  # one holds the reactor's slot
            try:
                await asyncio.to_thread(_poll, gw_url, "queue_depth", queued, 120.0)
            finally:
                await session.close()

        with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
            runner.run(go())
        return (_rss(gw_pid) - before) / queued


def idle_rss_with_fleet(n: int) -> float:
    """Gateway RSS (MiB) at rest once ``n`` reactors are registered and linked."""
    with Procs() as procs:
        gw_url = procs.start(["gateway", "--port", "0"])
        gw_pid = procs.procs[0].pid

        async def go() -> float:
            fleet = Fleet(n)
            await fleet.start()
            try:
                async with aiohttp.ClientSession() as session:
                    ws = await session.ws_connect(
                        gw_url, decode_text=False, max_msg_size=0, headers=credentials(gw_url)
                    )
                    for rid in fleet.ids:
                        await ws.send_frame(fleet.announce(rid), WSMsgType.TEXT)
                    await asyncio.to_thread(_poll, gw_url, "healthy_reactors", n, 120.0)
                    await asyncio.sleep(1.0)  # at rest: probes and start-up work done
                    rss = _rss(gw_pid) / (1024 * 1024)
                    await ws.close()
                return rss
            finally:
                await fleet.stop()

        with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
            return runner.run(go())


def memory_rows(runs: int, smoke: bool) -> list[dict[str, Any]]:
    queued, fleet = (2_000, 50) if smoke else (QUEUED, FLEET)
    per_packet = stats([queued_bytes_per_packet(queued) for _ in range(runs)])
    idle = stats([idle_rss_with_fleet(fleet) for _ in range(runs)])
    return [
        {"figure": f"gateway memory per queued packet, {queued:,} queued (bytes of RSS)",
         "value": per_packet, "goal": QUEUE_GOAL_BYTES, "unit": "bytes"},
        {"figure": f"gateway RSS at rest, {fleet:,} reactors registered and linked (MiB)",
         "value": idle, "goal": IDLE_GOAL_MIB, "unit": "MiB"},
    ]  # fmt: skip
