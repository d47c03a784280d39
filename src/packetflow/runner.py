"""Running a server coroutine as a process (uvloop where available, quiet on Ctrl-C),
keeping its periodic background loops alive, and stopping the tasks it started."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Coroutine
from typing import Any

log = logging.getLogger("packetflow.runner")


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


async def every(interval_s: float, step: Callable[[], object], what: str) -> None:
    """Call ``step`` every ``interval_s`` seconds until cancelled.

    One failing iteration is logged with its traceback and the loop goes on: a long-lived
    task that ends on its first unexpected exception takes its duty with it for good (a
    health monitor that died on one departing reactor never probed or removed another).
    """
    while True:
        await asyncio.sleep(interval_s)
        try:
            step()
        except Exception:  # the loop's boundary: anything else would end the task
            log.exception("%s: an iteration failed; the loop continues", what)


def run_main(main: Coroutine[Any, Any, None]) -> None:
    """Run ``main`` to completion; a second Ctrl-C while it drains exits without a traceback."""
    try:
        with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
            runner.run(main)
    except KeyboardInterrupt:
        pass
