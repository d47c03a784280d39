"""User elements for the molecule integration tests, loaded into a reactor with
``packetflow reactor --module tests.integration.slow_elements`` (cli.py calls
``register(reactor)``).

Each element leaves evidence in the reactor's data directory so that tests can count what
really ran, across reactors (they share one data dir) and across gateway restarts:
``runs/<packet id>.<uuid>`` per execution, ``attempts/<packet id>`` one line per attempt.
"""

from __future__ import annotations

import asyncio
import os
import re
import uuid
from pathlib import Path
from typing import Any

from packetflow.protocol.errors import ProcessingFailed
from packetflow.reactor.context import Context
from packetflow.reactor.server import Reactor

RUNS_DIR = "runs"
ATTEMPTS_DIR = "attempts"


def safe_name(packet_id: str) -> str:
    """A packet id as a file name (wire ids contain ':')."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", packet_id)


def _reactor_id(ctx: Context) -> str:
    return ctx.runtime.config.reactor_id if ctx.runtime is not None else "unknown"


def _mark_run(ctx: Context) -> None:
    runs = Path(ctx.data_dir) / RUNS_DIR
    runs.mkdir(parents=True, exist_ok=True)
    (runs / f"{safe_name(ctx.packet_id)}.{uuid.uuid4().hex[:8]}").write_text(_reactor_id(ctx))


def _attempt(ctx: Context) -> list[str]:
    """Append this attempt's reactor id to the packet's attempts file; all lines so far.
    O_APPEND keeps concurrent writers from two reactors whole-line."""
    folder = Path(ctx.data_dir) / ATTEMPTS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / safe_name(ctx.packet_id)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{_reactor_id(ctx)}\n".encode())
    finally:
        os.close(fd)
    return path.read_text().split()


def register(reactor: Reactor) -> None:
    @reactor.element("df", "sleep")
    async def sleep(data: dict[str, Any], ctx: Context) -> dict[str, Any]:
        """Sleep ``seconds`` (a slow packet), recording the run first."""
        _mark_run(ctx)
        seconds = float(data.get("seconds", 0))
        await asyncio.sleep(seconds)
        return {
            "result": data.get("value"),
            "slept": seconds,
            "inputs": ctx.inputs,
            "reactor_id": _reactor_id(ctx),
        }

    @reactor.element("df", "flaky")
    def flaky(data: dict[str, Any], ctx: Context) -> dict[str, Any]:
        """Raise (PF005, retryable) on the first ``fail_times`` attempts, then succeed."""
        attempts = _attempt(ctx)
        if len(attempts) <= int(data.get("fail_times", 1)):
            # A transient failure: the handler says it is worth retrying elsewhere.
            raise ProcessingFailed(f"flaky failure on attempt {len(attempts)}",
                                   retryable=True)  # fmt: skip
        return {"result": "ok", "attempts_by": attempts}

    @reactor.element("df", "echo_inputs")
    def echo_inputs(data: dict[str, Any], ctx: Context) -> dict[str, Any]:
        """What the molecule handed this packet: ``ctx.inputs`` and metadata."""
        _mark_run(ctx)
        return {
            "result": ctx.inputs,
            "inputs": ctx.inputs,
            "reactor_id": _reactor_id(ctx),
            "molecule_packet_id": ctx.metadata.get("molecule_packet_id"),
        }


def runs_of(data_dir: Path) -> dict[str, int]:
    """Executions per (sanitized) packet id, from the run markers."""
    counts: dict[str, int] = {}
    folder = Path(data_dir) / RUNS_DIR
    if folder.exists():
        for marker in folder.iterdir():
            key = marker.name.rsplit(".", 1)[0]
            counts[key] = counts.get(key, 0) + 1
    return counts
