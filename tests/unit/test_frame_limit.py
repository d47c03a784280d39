"""§12.4.1 max_frame_size: the gateway's frame limit is configurable (--max-frame-bytes,
GatewayConfig.max_frame_bytes) and defaults to the spec's 1 MiB, for client frames, the
socket limit and HTTP bodies alike. A real, unstarted ``Gateway``."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from packetflow.cli import main
from packetflow.framing import socket_limit
from packetflow.gateway.http import MAX_FRAME_BYTES_KEY
from packetflow.gateway.server import Gateway, GatewayConfig
from packetflow.protocol.limits import MAX_FRAME_BYTES
from packetflow.protocol.principals import Principal


class _Client:
    """A client connection's sending end, with what on_frame reads of a transport.Peer."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.attrs: dict[str, Any] = {"remote": "127.0.0.1"}
        self.principal = Principal("key:test", frozenset({"packet_user"}), "api_key")
        self.name = "gateway<-127.0.0.1"
        self.remote_id = None

    def next_seq(self) -> int:
        return len(self.sent) + 1

    def send(self, frame: bytes) -> bool:
        self.sent.append(json.loads(frame))
        return True


def _ping(size: int) -> bytes:
    head = (b'{"protocol_version":"1.0","message_type":"submit","message_id":"m1",'
            b'"timestamp":1,"source_id":"c","payload":{"packet":{"group":"cf",'
            b'"element":"ping","data":{"echo_data":"')  # fmt: skip
    tail = b'"}}}}'
    return head + b"x" * (size - len(head) - len(tail)) + tail


@pytest.fixture
async def small() -> AsyncIterator[Gateway]:
    gw = Gateway(GatewayConfig(seed=1, max_frame_bytes=8192))
    yield gw
    for task in list(gw._tasks):
        task.cancel()


async def test_the_default_is_the_specs_1_mib() -> None:
    assert GatewayConfig().max_frame_bytes == MAX_FRAME_BYTES == 1024 * 1024


async def test_a_frame_over_the_configured_limit_is_pf001_naming_it(small: Gateway) -> None:
    client = _Client()
    small.on_frame(client, _ping(8193))  # type: ignore[arg-type]
    [reply] = client.sent
    assert reply["message_type"] == "error"
    assert reply["payload"]["error_code"] == "PF001"
    details = reply["payload"]["error_details"]
    assert details["validation_rule"] == "max_frame_size"
    assert details["expected_type"] == "<= 8192 bytes"


async def test_a_frame_within_the_configured_limit_is_not_refused_for_size(
    small: Gateway,
) -> None:
    client = _Client()
    small.on_frame(client, _ping(8192))  # type: ignore[arg-type]
    # No reactor serves cf:ping here: the answer is about routing, not size.
    assert [r["payload"]["error_code"] for r in client.sent] == ["PF003"]


async def test_the_socket_and_http_limits_follow_the_configured_one(small: Gateway) -> None:
    app = small.app()
    assert app[MAX_FRAME_BYTES_KEY] == 8192
    assert app._client_max_size == socket_limit(8192)


def test_the_cli_takes_max_frame_bytes() -> None:
    option = next(p for p in main.commands["gateway"].params if p.name == "max_frame_bytes")
    assert option.opts == ["--max-frame-bytes"] and option.default is None


async def test_the_reactor_takes_max_frame_bytes_too(tmp_path: Path) -> None:
    from packetflow.reactor.runtime import ReactorRuntime
    from packetflow.reactor.server import Reactor

    option = next(p for p in main.commands["reactor"].params if p.name == "max_frame_bytes")
    assert option.opts == ["--max-frame-bytes"]
    assert Reactor(reactor_id="r").max_frame_bytes == MAX_FRAME_BYTES
    reactor = Reactor(reactor_id="r", max_frame_bytes=8192, data_dir=tmp_path)
    reactor.runtime = ReactorRuntime(reactor.config, reactor.registry)
    try:
        client = _Client()
        reactor._on_frame(client, _ping(8193))  # type: ignore[arg-type]
        [reply] = client.sent
        assert reply["payload"]["error_code"] == "PF001"
        assert reply["payload"]["error_details"]["expected_type"] == "<= 8192 bytes"
    finally:
        reactor.runtime.close()
