"""runner.every: a periodic background loop outlives a failing iteration (a health monitor
that died on one departing reactor never probed or removed another)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from packetflow.runner import every


async def test_a_failing_iteration_is_logged_and_the_loop_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[int] = []
    done = asyncio.Event()

    def step() -> None:
        calls.append(len(calls))
        if len(calls) == 2:
            raise KeyError("holder")
        if len(calls) == 4:
            done.set()

    with caplog.at_level(logging.ERROR, logger="packetflow.runner"):
        task = asyncio.get_running_loop().create_task(every(0.001, step, "test loop"))
        try:
            await asyncio.wait_for(done.wait(), 10)
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
    assert len(calls) >= 4
    (record,) = [r for r in caplog.records if "test loop" in r.getMessage()]
    assert record.exc_info is not None and record.exc_info[0] is KeyError


async def test_cancelling_ends_the_loop() -> None:
    task = asyncio.get_running_loop().create_task(every(0.001, lambda: None, "idle loop"))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
