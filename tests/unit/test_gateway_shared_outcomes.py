"""``Gateway.remember_outcome``: an outcome another gateway stored (gateway/shared.py
SharedOutcomes) is answered from this gateway's window for what is left of the window's
age (DESIGN §4), also when it is replayed long after it was stored."""

from __future__ import annotations

import time

from packetflow.gateway.server import Gateway

from .gateway_standins import gateway

__all__ = ["gateway"]  # the fixture


async def test_a_replayed_outcome_keeps_its_age(gateway: Gateway) -> None:
    ttl = gateway.window.ttl_s
    gateway.remember_outcome("old", b"frame", age_s=ttl + 1)
    assert gateway.window.lookup("old", time.monotonic()) is None
    gateway.remember_outcome("k", b"frame", age_s=ttl - 5)
    now = time.monotonic()
    entry = gateway.window.lookup("k", now)
    assert entry is not None and entry.outcome == b"frame"
    assert gateway.window.lookup("k", now + 6) is None  # its age reached the window's


async def test_the_outcome_known_first_is_kept(gateway: Gateway) -> None:
    gateway.remember_outcome("k", b"live")
    gateway.remember_outcome("k", b"replayed", age_s=30)
    entry = gateway.window.lookup("k", time.monotonic())
    assert entry is not None and entry.outcome == b"live"
