"""Running a server coroutine as a process (uvloop where available, quiet on Ctrl-C), and
stopping the background tasks it started."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Coroutine
from typing import Any


def event_loop_factory() -> Any:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
        return asyncio.new_event_loop
    return uvloop.new_event_loop


def configure_logging(level: str | None = None) -> None:
    logging.basicConfig(
        level=(level or os.environ.get("PACKETFLOW_LOG", "INFO")).upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def announce_ready(role: str, node_id: str, url: str) -> None:
    """One JSON line on stdout once a server listens, so supervisors and tests learn
    an ephemeral port without parsing logs."""
    import json
    import sys

    print(json.dumps({"event": "ready", "role": role, "id": node_id, "url": url}), flush=True)
    sys.stdout.flush()


async def cancel_and_wait(*tasks: asyncio.Task[Any] | None) -> None:
    """Cancel each task and wait until it has finished unwinding (None is skipped)."""
    for task in tasks:
        if task is not None:
            task.cancel()
    for task in tasks:
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await task


def run_main(main: Coroutine[Any, Any, None]) -> None:
    """Run ``main`` to completion; a second Ctrl-C while it drains exits without a traceback."""
    try:
        with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
            runner.run(main)
    except KeyboardInterrupt:
        pass
