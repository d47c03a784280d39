"""What every benchmark shares: starting processes, measuring runs, shaping result rows."""

from __future__ import annotations

import asyncio
import atexit
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from packetflow.cluster import read_ready, spawn, stop_all
from packetflow.protocol.authentication import DIAL_TOKEN_HEADER
from packetflow.runner import event_loop_factory
from packetflow.security import locator

T = TypeVar("T")

PING_TEMPLATE = (
    b'{"protocol_version":"1.0","message_type":"submit","message_id":"msg_bench_%d",'
    b'"timestamp":1640995200000,"source_id":"bench-client","payload":{"packet":'
    b'{"id":"packet_bench_%d","group":"cf","element":"ping","data":{"echo_data":"x"}}}}'
)
_serial = 0


# Reactors benchmarked directly (no gateway) accept this token (reactor
# --accept-token-file); gateways are reached with the key they record for this user.
_TOKEN = secrets.token_urlsafe(32)
_TOKEN_FILE = Path(tempfile.gettempdir()) / f"pf-bench-token-{os.getpid()}"
_reactor_urls: set[str] = set()


def reactor_token_args() -> list[str]:
    if not _TOKEN_FILE.exists():
        fd = os.open(_TOKEN_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.write(fd, _TOKEN.encode())
        os.close(fd)
        atexit.register(_TOKEN_FILE.unlink, missing_ok=True)
    return ["--accept-token-file", str(_TOKEN_FILE)]


def credentials(url: str) -> dict[str, str]:
    """Headers a benchmark client sends to ``url``: a reactor's dial token, else the key
    a gateway on this machine recorded (the baselines ignore both)."""
    if url in _reactor_urls:
        return {DIAL_TOKEN_HEADER: _TOKEN}
    return locator.auth_headers(url)


def ping_frame(i: int) -> bytes:
    """A cf:ping SUBMIT with ids unique across the whole benchmark process (a repeated
    packet id would be answered from the idempotency window, not run)."""
    global _serial
    _serial += 1
    return PING_TEMPLATE % (_serial, _serial)


class Procs:
    """Processes started for one measurement, stopped when the block ends."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> Procs:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:  # fmt: skip
        stop_all(list(reversed(self.procs)), 5)

    def start(self, args: list[str], module: str = "packetflow",
              env: dict[str, str] | None = None) -> str:  # fmt: skip
        """Start ``module`` with ``args`` (``env`` adds to this environment); its URL."""
        direct_reactor = module == "packetflow" and args[:1] == ["reactor"]
        if direct_reactor:
            args = [*args, *reactor_token_args()]
        if module == "packetflow":
            proc = spawn(["--log-level", "ERROR", *args], new_session=False, env=env)
        else:
            proc = subprocess.Popen([sys.executable, "-m", module, *args],
                                    stdout=subprocess.PIPE)  # fmt: skip
        self.procs.append(proc)
        ready = read_ready(proc, 20)
        if ready is None:
            raise RuntimeError(f"{module} {args} did not start")
        if direct_reactor:
            _reactor_urls.add(str(ready["url"]))
        return str(ready["url"])


def start_baselines(procs: Procs) -> tuple[str, str]:
    """The bare echo server and the bare relay in front of it: (echo_url, relay_url)."""
    echo_url = procs.start(["echo"], "benchmarks.baselines")
    relay_url = procs.start(["relay", echo_url], "benchmarks.baselines")
    return echo_url, relay_url


def wait_linked(gateway_url: str, n: int, timeout: float = 20.0) -> None:
    base = gateway_url.replace("ws://", "http://").removesuffix("/ws")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"{base}/health", timeout=2) as resp:
            if json.load(resp)["healthy_reactors"] >= n:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{n} reactors did not link to {gateway_url}")


def start_cluster(procs: Procs, reactors: int = 1, *extra: str,
                  env: dict[str, str] | None = None,
                  data_dir: Path | None = None) -> str:  # fmt: skip
    """A gateway and ``reactors`` cpu_intensive reactors; the gateway's ws:// URL. Gateways
    running at once need a ``data_dir`` each (one molecule journal per gateway)."""
    where = ["--data-dir", str(data_dir)] if data_dir is not None else []
    gw_url = procs.start(["gateway", "--port", "0", *where], env=env)
    for _ in range(reactors):
        procs.start(["reactor", "--port", "0", "--gateway", gw_url, "--specialization",
                     "cpu_intensive", "--max-concurrent", "256", *extra], env=env)  # fmt: skip
    wait_linked(gw_url, reactors)
    return gw_url


def stats(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "runs": len(values)}  # fmt: skip


def alternate(runs: int, *fns: Callable[[], Awaitable[T]]) -> list[list[T]]:
    """Each of ``fns`` once per round, in turn, for ``runs`` rounds, each on a fresh uvloop
    (a baseline first, then packetflow: drift on a busy machine hits both alike)."""
    values: list[list[T]] = [[] for _ in fns]
    for _ in range(runs):
        for out, fn in zip(values, fns, strict=True):
            with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
                out.append(runner.run(fn()))
    return values


def measure(fn: Callable[[], Awaitable[float]], runs: int) -> dict[str, float]:
    """Run ``fn`` ``runs`` times, each on a fresh uvloop; median, min, max."""
    values = []
    for _ in range(runs):
        with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
            values.append(runner.run(fn()))
    return stats(values)


def rate_row(figure: str, value: list[float], baseline: list[float],
             baseline_name: str = "bare aiohttp relay",
             goal: str | None = None,
             ratio_goal: tuple[str, float] | None = None) -> dict[str, Any]:  # fmt: skip
    """A figure next to its baseline from the same run: median, min, max of each, ratio;
    ``ratio_goal`` is issue 15's goal on that ratio, e.g. (">=", 0.40) or ("<=", 1.5)."""
    v, b = stats(value), stats(baseline)
    return {"figure": figure, "value": v, "baseline_name": baseline_name, "baseline": b,
            "ratio": v["median"] / b["median"], "goal": goal,
            "ratio_goal": ratio_goal}  # fmt: skip
