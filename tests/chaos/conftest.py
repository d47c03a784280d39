"""Chaos suites: real gateway and reactor processes, killed, stopped and restarted while
they work (marker ``chaos``; ``PACKETFLOW_CHAOS_LONG=1`` for the long versions)."""

from __future__ import annotations

import pytest

from tests.integration.conftest import cluster  # noqa: F401 - the same fixture, reused

from .figures import Figures


@pytest.fixture
def figures(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Figures:
    """Where this test reports what it measured; the suite name is the test's name."""
    name = request.node.name.removeprefix("test_")
    return Figures(name, tmp_path_factory.getbasetemp() / "chaos-figures.jsonl")
