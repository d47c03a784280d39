"""DESIGN §2 announce channels 3 and 4 through real processes: a reactor started without
``--gateway`` is found over §8.1.2 multicast or §8.1.3 DNS-SD, registered, dialled, and
serves packets routed through the gateway. All traffic stays on 127.0.0.1 and the group
joined on the loopback interface.

Each test picks its own multicast port, so parallel runs do not hear each other. DNS-SD
has one port (5353) per host, so reactor ids are unique per test instead.
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
import struct
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import packetflow
from packetflow.protocol.discovery import MULTICAST_GROUP
from packetflow.protocol.messages import DiscoverPayload

from .cluster import Cluster, Node, wait_for

# Generous: covers mDNS probing (~1 s) and a busy machine; tests return as soon as it holds.
DISCOVERY_TIMEOUT_S = 20.0


def _random_port() -> int:
    # A UDP group port, not a listening TCP port: random keeps parallel runs apart.
    return random.randint(20000, 60000)


def _loopback_multicast_problem() -> str | None:
    """Join the group on 127.0.0.1, send to it with loopback on, and read it back.
    None if that works; otherwise why not."""
    port = _random_port()
    payload = uuid.uuid4().bytes
    try:
        rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    except OSError as exc:
        return f"cannot open UDP sockets: {exc}"
    with rx, tx:
        try:
            rx.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            rx.bind((MULTICAST_GROUP, port))
            membership = struct.pack("4s4s", socket.inet_aton(MULTICAST_GROUP),
                                     socket.inet_aton("127.0.0.1"))  # fmt: skip
            rx.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, membership)
            rx.settimeout(2.0)
            tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
            tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
            tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
            tx.sendto(payload, (MULTICAST_GROUP, port))
            while True:
                data, _ = rx.recvfrom(64)
                if data == payload:
                    return None
        except OSError as exc:  # includes the receive timeout
            return f"joining {MULTICAST_GROUP} on 127.0.0.1 and looping a datagram failed: {exc}"


def _loopback_dnssd_problem() -> str | None:
    """Publish and browse a throwaway service with zeroconf on 127.0.0.1 only."""
    from zeroconf import IPVersion, ServiceStateChange
    from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

    kind = "_pfprobe._tcp.local."
    instance = f"probe-{uuid.uuid4().hex[:8]}.{kind}"

    async def probe() -> None:
        pub = AsyncZeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
        sub = AsyncZeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
        seen = asyncio.Event()

        def on_change(state_change: ServiceStateChange, name: str, **_: Any) -> None:
            if name == instance and state_change is ServiceStateChange.Added:
                seen.set()

        browser = AsyncServiceBrowser(sub.zeroconf, [kind], handlers=[on_change])
        try:
            await pub.async_register_service(AsyncServiceInfo(
                kind, instance, addresses=[socket.inet_aton("127.0.0.1")], port=9,
                server="probe.local.",
            ))  # fmt: skip
            await asyncio.wait_for(seen.wait(), 10.0)
        finally:
            await browser.async_cancel()
            await sub.async_close()
            await pub.async_close()

    try:
        asyncio.run(probe())
    except (OSError, TimeoutError) as exc:
        return f"zeroconf on 127.0.0.1 could not publish and browse a service: {exc!r}"
    return None


@pytest.fixture(scope="module")
def multicast_ok() -> None:
    problem = _loopback_multicast_problem()
    if problem is not None:
        pytest.skip(f"multicast on loopback is unavailable here (tried): {problem}")


@pytest.fixture(scope="module")
def dnssd_ok() -> None:
    problem = _loopback_dnssd_problem()
    if problem is not None:
        pytest.skip(f"DNS-SD on loopback is unavailable here (tried): {problem}")


def _row(gateway: Node, reactor_id: str) -> dict[str, Any] | None:
    for row in gateway.get("/v1/reactors")["reactors"]:
        if row["reactor_id"] == reactor_id:
            return dict(row)
    return None


def _wait_healthy(gateway: Node, reactor_id: str) -> dict[str, Any]:
    def healthy() -> dict[str, Any] | None:
        row = _row(gateway, reactor_id)
        return row if row is not None and row["health"] == "healthy" else None

    return wait_for(healthy, DISCOVERY_TIMEOUT_S, f"reactor {reactor_id} to be discovered")


def _assert_serves_through(gateway: Node, reactor_id: str) -> None:
    """A cf:ping through the gateway reaches the discovered reactor.

    DNS-SD is host-wide, so a gateway may also have found reactors of tests running in
    parallel: the ping avoids every other reactor it knows (DESIGN §5 ``avoid_reactors``),
    and is repeated if one appeared in between.
    """

    def ping() -> dict[str, Any] | None:
        others = [r["reactor_id"] for r in gateway.get("/v1/reactors")["reactors"]]
        prefs = {"avoid_reactors": [r for r in others if r != reactor_id]}
        try:
            with packetflow.connect_sync(gateway.url) as pf:
                pong = pf.submit("cf", "ping", {"echo_data": "found"}, routing_preferences=prefs)
        except packetflow.PacketFlowError:
            return None
        return dict(pong.data) if pong.data["reactor_id"] == reactor_id else None

    pong = wait_for(ping, DISCOVERY_TIMEOUT_S, f"a cf:ping served by {reactor_id}")
    assert pong["pong"] is True
    assert pong["echo_data"] == "found"


def trusted(cluster: Cluster) -> tuple[str, ...]:
    """DESIGN §8: multicast/DNS-SD announcements are unauthenticated, so a gateway dials
    reactors found that way only when told to trust them, showing the operator's token."""
    return ("--trust-multicast", "--reactor-token-file", str(cluster.accept_token_file))


def _reactor_id(channel: str) -> str:
    return f"reactor-{channel}-{uuid.uuid4().hex[:8]}"


# ---------------------------------------------------------------- §8.1.2 multicast


@pytest.mark.usefixtures("multicast_ok")
def test_multicast_reactor_without_gateway_is_registered_pfap_8_1_2(cluster: Cluster) -> None:
    port = str(_random_port())
    gw = cluster.gateway(*trusted(cluster), "--multicast", "--multicast-port", port)
    rid = _reactor_id("mc")
    cluster.reactor(None, "--multicast", "--multicast-port", port, "--id", rid,
                    "--specialization", "io_intensive")  # fmt: skip
    row = _wait_healthy(gw, rid)
    assert row["source"] == "multicast"
    assert row["specializations"] == ["io_intensive"]
    assert "cf:ping" in row["capabilities"]
    assert row["endpoints"]["websocket"].startswith("ws://127.0.0.1:")
    assert row["max_capacity"] > 1  # the announcement's max_capacity extension arrived
    _assert_serves_through(gw, rid)


@pytest.mark.usefixtures("multicast_ok")
def test_multicast_reactor_started_before_the_gateway_is_found_pfap_8_1_2(
    cluster: Cluster,
) -> None:
    """Announces repeat, so a gateway that starts later still hears the reactor."""
    port = str(_random_port())
    rid = _reactor_id("mc")
    cluster.reactor(None, "--multicast", "--multicast-port", port, "--id", rid)
    gw = cluster.gateway(*trusted(cluster), "--multicast", "--multicast-port", port)
    assert _wait_healthy(gw, rid)["source"] == "multicast"
    _assert_serves_through(gw, rid)


@pytest.mark.usefixtures("multicast_ok")
def test_multicast_is_ignored_without_trust_multicast_design_8(cluster: Cluster) -> None:
    """Two gateways hear the same announcements; only the one given --trust-multicast
    registers the reactor (the other never dials what anyone on the LAN can claim)."""
    port = str(_random_port())
    trusting = cluster.gateway(*trusted(cluster), "--multicast", "--multicast-port", port)
    wary = cluster.gateway("--multicast", "--multicast-port", port)
    rid = _reactor_id("untrusted")
    cluster.reactor(None, "--multicast", "--multicast-port", port, "--id", rid)
    _wait_healthy(trusting, rid)
    assert _row(wary, rid) is None


@pytest.mark.usefixtures("multicast_ok")
def test_malformed_datagrams_do_not_stop_multicast_discovery_pfap_8_1_2(
    cluster: Cluster,
) -> None:
    port = _random_port()
    gw = cluster.gateway(*trusted(cluster), "--multicast", "--multicast-port", str(port))
    not_an_announce = {
        "protocol_version": "1.0", "message_type": "discover", "message_id": "m1",
        "timestamp": 0, "source_id": "x",
        "payload": {"discovery_type": "multicast_announce", "announcement": {
            "reactor_id": "ghost", "implementation": "zig", "capabilities": ["zz:nope"],
            "load_factor": 7, "accepts_connections": "maybe",
        }},
    }  # fmt: skip
    garbage = [
        b"garbage",
        b"\xff\xfe\x00\x01",
        b"",
        b"[]",
        b"{" * 5000,
        json.dumps(not_an_announce).encode(),
        json.dumps({**not_an_announce, "message_type": "submit"}).encode(),
        b"x" * 60_000,
    ]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP) as tx:
        tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
        tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
        tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
        for datagram in garbage:
            tx.sendto(datagram, (MULTICAST_GROUP, port))
    rid = _reactor_id("mc")
    cluster.reactor(None, "--multicast", "--multicast-port", str(port), "--id", rid)
    assert _wait_healthy(gw, rid)["source"] == "multicast"
    assert _row(gw, "ghost") is None
    assert gw.proc.poll() is None
    _assert_serves_through(gw, rid)


# ---------------------------------------------------------------- §8.1.3 DNS-SD


@pytest.mark.usefixtures("dnssd_ok")
def test_dnssd_reactor_without_gateway_is_registered_pfap_8_1_3(cluster: Cluster) -> None:
    gw = cluster.gateway(*trusted(cluster), "--dnssd")
    rid = _reactor_id("dnssd")
    cluster.reactor(None, "--dnssd", "--id", rid, "--specialization", "memory_bound")
    row = _wait_healthy(gw, rid)
    assert row["source"] == "dnssd"
    assert row["specializations"] == ["memory_bound"]
    assert "cf:ping" in row["capabilities"]
    assert row["max_capacity"] > 1  # the TXT "capacity" extension arrived
    _assert_serves_through(gw, rid)


@pytest.mark.usefixtures("dnssd_ok")
def test_dnssd_reactor_started_before_the_gateway_is_found_pfap_8_1_3(cluster: Cluster) -> None:
    rid = _reactor_id("dnssd")
    cluster.reactor(None, "--dnssd", "--id", rid)
    gw = cluster.gateway(*trusted(cluster), "--dnssd")
    assert _wait_healthy(gw, rid)["source"] == "dnssd"
    _assert_serves_through(gw, rid)


def test_discovery_flags_are_accepted_by_both_commands() -> None:
    """The CLI wiring: ``--multicast/--dnssd/--multicast-group/--multicast-port``."""
    from click.testing import CliRunner

    from packetflow.cli import main

    runner = CliRunner()
    for command in ("gateway", "reactor"):
        out = runner.invoke(main, [command, "--help"])
        assert out.exit_code == 0, out.output
        for flag in ("--multicast", "--dnssd", "--multicast-group", "--multicast-port"):
            assert flag in out.output


# ---------------------------------------------------------------- in process, real sockets


class RecordingGateway:
    """Stands in for ``Gateway`` behind a listener: records what would be registered."""

    def __init__(self, *, fail: bool = False) -> None:
        self.calls: list[tuple[DiscoverPayload, str]] = []
        self.fail = fail

    def register(self, payload: DiscoverPayload, *, source: str) -> None:
        self.calls.append((payload, source))
        if self.fail:
            raise RuntimeError("registry exploded")


async def _until(predicate: Callable[[], object], what: str) -> None:
    deadline = asyncio.get_running_loop().time() + DISCOVERY_TIMEOUT_S
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


@pytest.mark.usefixtures("multicast_ok")
async def test_reactor_multicast_reaches_listener_past_garbage_pfap_8_1_2(tmp_path: Path) -> None:
    from packetflow.gateway.discovery.multicast import MulticastListener
    from packetflow.reactor.server import Reactor

    port = _random_port()
    gateway = RecordingGateway(fail=True)  # a failing registry must not end discovery either
    listener = MulticastListener(gateway, MULTICAST_GROUP, port, interface="127.0.0.1")  # type: ignore[arg-type]
    await listener.start()
    rid = _reactor_id("mc")
    reactor = Reactor(reactor_id=rid, data_dir=tmp_path, multicast=True, multicast_port=port)
    try:
        for datagram in (b"garbage", b"{}", b"\xff"):
            listener.on_datagram(datagram, ("127.0.0.1", 1))
        assert listener.dropped == 3
        await reactor.start()
        await _until(lambda: len(gateway.calls) >= 2, "two announces from the reactor")
    finally:
        await reactor.stop(0)
        await listener.close()
    payload, source = gateway.calls[0]
    assert source == "multicast"
    assert payload.discovery_type == "announce"
    assert payload.reactor_info is not None
    assert payload.reactor_info.reactor_id == rid
    assert payload.reactor_info.endpoints["websocket"] == reactor.url
    assert ("cf", "ping") in {(p.group, p.element) for p in payload.supported_packets}


@pytest.mark.usefixtures("dnssd_ok")
async def test_reactor_dnssd_reaches_listener_pfap_8_1_3(tmp_path: Path) -> None:
    from packetflow.gateway.discovery.dnssd import DnsSdListener
    from packetflow.reactor.server import Reactor

    gateway = RecordingGateway()
    listener = DnsSdListener(gateway, interface="127.0.0.1")  # type: ignore[arg-type]
    await listener.start()
    rid = _reactor_id("dnssd")
    reactor = Reactor(reactor_id=rid, data_dir=tmp_path, dnssd=True,
                      specializations=("network_heavy",))  # fmt: skip

    def mine() -> list[DiscoverPayload]:
        return [p for p, _ in gateway.calls if p.reactor_info and p.reactor_info.reactor_id == rid]

    try:
        await reactor.start()
        await _until(mine, f"{rid} to be resolved")
    finally:
        await reactor.stop(0)
        await listener.close()
    info = mine()[0].reactor_info
    assert info is not None
    assert info.endpoints == {"websocket": reactor.url}
    assert info.specializations == ["network_heavy"]
    assert all(source == "dnssd" for _, source in gateway.calls)
