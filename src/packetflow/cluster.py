"""``packetflow up``: a supervisor for a local cluster of child processes.

Children run in their own session so a terminal's Ctrl-C reaches only this supervisor,
which then stops the reactors and then the gateway; on Linux each child also gets
PR_SET_PDEATHSIG so none outlives a supervisor that was killed outright.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import selectors
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from .protocol.chemistry import SPECIALIZATIONS

STARTUP_DEADLINE_S = 30.0
STOP_GRACE_S = 15.0


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PDEATHSIG


def spawn(args: list[str], *, new_session: bool = True) -> subprocess.Popen[bytes]:
    """Start ``python -m packetflow ARGS`` with its stdout piped for the ready line."""
    return subprocess.Popen(
        [sys.executable, "-m", "packetflow", *args],
        stdout=subprocess.PIPE,
        start_new_session=new_session,
        preexec_fn=_die_with_parent,
    )


def read_ready(proc: subprocess.Popen[bytes], timeout: float) -> dict[str, Any] | None:
    """The child's ``{"event": "ready", ...}`` line, or None if it exits or stays silent."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if not sel.select(max(0.0, deadline - time.monotonic())):
                continue
            line = proc.stdout.readline()
            if not line:
                return None
            with contextlib.suppress(ValueError):
                value = json.loads(line)
                if isinstance(value, dict) and value.get("event") == "ready":
                    return value
    return None


def _get_json(url: str) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            value = json.load(resp)
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _wait(predicate: Callable[[], bool], procs: list[subprocess.Popen[bytes]], what: str) -> bool:
    deadline = time.monotonic() + STARTUP_DEADLINE_S
    while time.monotonic() < deadline:
        if predicate():
            return True
        if any(p.poll() is not None for p in procs):
            print(f"packetflow up: a process exited while waiting for {what}", file=sys.stderr)
            return False
        time.sleep(0.1)
    print(f"packetflow up: timed out waiting for {what}", file=sys.stderr)
    return False


def stop_all(procs: list[subprocess.Popen[bytes]], grace_s: float = STOP_GRACE_S) -> None:
    for proc in procs:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
    deadline = time.monotonic() + grace_s
    for proc in procs:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def run_cluster(*, host: str, port: int, data_dir: Path, log_level: str | None) -> int:
    stop = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    level = ["--log-level", log_level or "WARNING"]
    gateway = spawn([*level, "gateway", "--host", host, "--port", str(port)])
    reactors: list[subprocess.Popen[bytes]] = []
    try:
        ready = read_ready(gateway, STARTUP_DEADLINE_S)
        if ready is None:
            print("packetflow up: the gateway did not start", file=sys.stderr)
            return 1
        ws = str(ready["url"])
        base = ws.replace("ws://", "http://", 1).removesuffix("/ws")
        for spec in SPECIALIZATIONS:
            reactors.append(spawn([
                *level, "reactor", "--gateway", ws, "--specialization", spec, "--host", host,
                "--port", "0", "--id", f"reactor-{spec.replace('_', '-')}",
                "--data-dir", str(data_dir),
            ]))  # fmt: skip

        def all_linked() -> bool:
            body = _get_json(f"{base}/v1/reactors")
            rows = body.get("reactors") if body else None
            return isinstance(rows, list) and sum(
                1 for r in rows if isinstance(r, dict) and r.get("health") == "healthy"
            ) >= len(SPECIALIZATIONS)

        if not _wait(all_linked, [gateway, *reactors], "the reactors to link"):
            return 1
        print(f"packetflow gateway   {ws}")
        print(f"  HTTP API           {base}/v1/reactors  {base}/health  {base}/metrics")
        rows = (_get_json(f"{base}/v1/reactors") or {}).get("reactors", [])
        for r in sorted(rows, key=lambda r: str(r.get("reactor_id"))):
            print(f"  reactor {r['reactor_id']:<28} {r['endpoints'].get('websocket')}")
        print("Ready. Try: packetflow submit cf ping   (Ctrl-C stops the cluster)", flush=True)
        while not stop:
            for proc in [gateway, *reactors]:
                if proc.poll() is not None:
                    print(f"packetflow up: {proc.args!r} exited with {proc.returncode}",
                          file=sys.stderr)  # fmt: skip
                    stop = True
            time.sleep(0.2)
        return 0
    finally:
        # Reactors first: each drains and withdraws from the gateway before it exits.
        stop_all(reactors)
        stop_all([gateway])
        print("packetflow up: stopped", flush=True)
