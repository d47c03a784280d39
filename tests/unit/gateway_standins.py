"""Stand-ins for the socket ends of a real, unstarted ``Gateway``: reactor links and
client connections that keep what the gateway sends, for unit tests of its bookkeeping."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from packetflow.gateway.registry import ReactorRecord
from packetflow.gateway.server import Gateway, GatewayConfig
from packetflow.protocol.messages import Submit, decode_one, encode_json


@pytest.fixture
async def gateway() -> AsyncIterator[Gateway]:
    """A real, unstarted gateway (import this fixture); its tasks are cancelled after."""
    gw = Gateway(GatewayConfig(seed=1))
    yield gw
    for task in list(gw._tasks):
        task.cancel()


class Peer:
    """A connection's sending end: keeps every frame the gateway sends on it."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.closed = False
        self.seq = 0

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def send(self, frame: bytes) -> bool:
        if self.closed:  # as transport.Peer: False tells the gateway to fail over
            return False
        self.sent.append(json.loads(frame))
        return True


class Link:
    """A reactor's work link (gateway/links.py) without the socket."""

    def __init__(self) -> None:
        self.peer = Peer()
        self.closing = False
        self.up = True

    async def close(self) -> None:
        self.peer.closed = True


def record(reactor_id: str, capacity: int = 4) -> ReactorRecord:
    return ReactorRecord(reactor_id=reactor_id, specializations=("cpu_intensive",),
                         implementation="python", capabilities=frozenset({("cf", "hold")}),
                         capacity=capacity, endpoints={})  # fmt: skip


def join(gateway: Gateway, reactor_id: str, capacity: int = 4) -> ReactorRecord:
    """Register a healthy, linked reactor serving cf:hold."""
    rec = gateway.registry.upsert(record(reactor_id, capacity))
    rec.link = Link()  # type: ignore[assignment]
    gateway.registry.set_health(rec, "healthy")
    return rec


def submit(message_id: str, group: str = "cf", element: str = "hold",
           data: dict[str, Any] | None = None) -> Submit:  # fmt: skip
    msg = decode_one(encode_json({
        "protocol_version": "1.0", "message_type": "submit", "message_id": message_id,
        "timestamp": 1, "source_id": "client",
        "payload": {"packet": {"group": group, "element": element, "id": f"p-{message_id}",
                               "timeout_ms": 60_000, "data": data or {}}},
    }))  # fmt: skip
    assert isinstance(msg, Submit)
    return msg
