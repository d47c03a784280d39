"""Fixtures the unit tests share."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from packetflow.reactor.registry import Registry
from packetflow.reactor.runtime import ReactorConfig, ReactorRuntime


@pytest.fixture
async def runtime() -> AsyncIterator[ReactorRuntime]:
    """A ReactorRuntime with an empty registry (the co, ed and rm elements' own reactor)."""
    rt = ReactorRuntime(ReactorConfig(reactor_id="reactor-test"), Registry())
    try:
        yield rt
    finally:
        rt.close()
