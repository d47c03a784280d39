"""Elements for the chaos suites, loaded with ``packetflow reactor --module
tests.chaos.chaos_elements``. Reactors of one test share a data dir, and each execution
leaves files there, so a test counts what really ran across reactors, kills and restarts:
``started/<packet>.<run>`` when an execution starts and ``finished/<packet>.<run>`` when
it returns, each holding the id of the reactor that ran it.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from packetflow.reactor.context import Context
from packetflow.reactor.server import Reactor
from tests.integration.slow_elements import safe_name

STARTED = "started"
FINISHED = "finished"
# What a crashing element exits with, so a test can tell its deaths from others.
CRASH_EXIT_CODE = 17


def _reactor_id(ctx: Context) -> str:
    return ctx.runtime.config.reactor_id if ctx.runtime is not None else "unknown"


def _mark(ctx: Context, folder: str, run: str) -> None:
    path = Path(ctx.data_dir) / folder
    path.mkdir(parents=True, exist_ok=True)
    # Written aside and renamed, so a reader (or a kill) never sees a half-written marker.
    # The reactor knows a client's packet by its id scoped to the principal
    # (security.guard.scoped_id: "<id>~<tag>"); markers carry the client's id, which is
    # what the tests know.
    final = path / f"{safe_name(ctx.packet_id.rsplit('~', 1)[0])}.{run}"
    scratch = path / f".{final.name}.tmp"
    scratch.write_text(_reactor_id(ctx))
    os.replace(scratch, final)


def register(reactor: Reactor) -> None:
    @reactor.element("df", "work")
    async def work(data: dict[str, Any], ctx: Context) -> dict[str, Any]:
        """Hold a slot for ``ms`` milliseconds, leaving a start and a finish marker unless
        ``record`` is false (the soak's filler traffic, where only volume matters)."""
        run = uuid.uuid4().hex[:8]
        record = data.get("record", True) is not False
        if record:
            _mark(ctx, STARTED, run)
        await asyncio.sleep(float(data.get("ms", 0)) / 1000.0)
        if record:
            _mark(ctx, FINISHED, run)
        return {"result": data.get("value"), "reactor_id": _reactor_id(ctx), "run": run}

    @reactor.element("df", "crash")
    def crash(data: dict[str, Any], ctx: Context) -> dict[str, Any]:
        """A poison packet: kill the reactor running it, with no goodbye."""
        _mark(ctx, STARTED, uuid.uuid4().hex[:8])
        os._exit(CRASH_EXIT_CODE)


def runs(data_dir: Path, folder: str = STARTED) -> dict[str, list[str]]:
    """Reactor ids that ran each (sanitized) packet id, one entry per execution."""
    seen: dict[str, list[str]] = {}
    path = Path(data_dir) / folder
    if path.exists():
        for marker in path.iterdir():
            if marker.name.startswith("."):
                continue
            try:
                reactor_id = marker.read_text()
            except FileNotFoundError:
                continue
            seen.setdefault(marker.name.rsplit(".", 1)[0], []).append(reactor_id)
    return seen


def counts(data_dir: Path, folder: str = STARTED) -> Counter[str]:
    return Counter({packet: len(ids) for packet, ids in runs(data_dir, folder).items()})
