"""Assertions the unit tests share."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from packetflow.protocol.errors import PacketFlowError


def fails(call: Callable[[], Any], code: str, field: str | None = None) -> PacketFlowError:
    """``call()`` raises a PacketFlowError with ``code`` (and ``field``, when given)."""
    with pytest.raises(PacketFlowError) as info:
        call()
    assert info.value.code == code, (info.value.code, info.value.message)
    if field is not None:
        assert info.value.field == field
    return info.value


async def poll(predicate: Callable[[], object], what: str, timeout: float = 10.0) -> None:
    """Wait for in-process state with a deadline (the loop keeps running meanwhile)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)
