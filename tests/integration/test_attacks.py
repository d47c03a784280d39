"""The attacks that once owned an anonymous cluster (the security issue's first paragraph),
replayed against real gateway and reactor processes: each is refused, and the cluster
still serves its legitimate users afterwards (DESIGN §8, PFAP §11)."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from typing import Any

import aiohttp
import msgspec
import pytest

import packetflow
from packetflow.protocol.authentication import API_KEY_HEADER
from packetflow.protocol.errors import PacketFlowError
from packetflow.protocol.messages import Discover, DiscoverPayload

from .cluster import Cluster, Node, wait_for

pytestmark = pytest.mark.xdist_group("attacks")


def new_key(gateway: Node, role: str) -> str:
    """A key made the way an operator makes one, on the running gateway's data dir."""
    done = subprocess.run(
        [sys.executable, "-m", "packetflow", "keys", "create", "--role", role,
         "--data-dir", str(gateway.data_dir)],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return done.stdout.strip()


def post(
    node: Node,
    path: str,
    body: Any,
    headers: dict[str, str],
    content_type: str = "application/json",
    method: str = "POST",
) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(node.http + path, data=data, method=method,
                                     headers={"Content-Type": content_type, **headers})  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def error_code(body: Any) -> str:
    """The PF code of an ERROR envelope, or of a refusal's ``{"error": {...}}`` body."""
    if "payload" in body:
        return str(body["payload"]["error_code"])
    return str(body["error"]["error_code"])


@pytest.fixture
def attacked(cluster: Cluster) -> tuple[Node, list[Node], dict[str, str]]:
    """A gateway, two reactors, and the keys of two ordinary users and an admin."""
    gateway = cluster.gateway()
    reactors = [cluster.reactor(gateway, "--id", f"victim-{i}") for i in range(2)]
    keys = {"alice": new_key(gateway, "packet_user"), "mallory": new_key(gateway, "packet_user")}
    for key in keys.values():  # a running gateway sees a new key within a few seconds
        wait_for(lambda k=key: known(gateway, k), 10.0, "the gateway to see a new key")
    return gateway, reactors, keys


def known(gateway: Node, key: str) -> bool:
    request = urllib.request.Request(gateway.http + "/v1/packets/none",
                                     headers={API_KEY_HEADER: key})  # fmt: skip
    try:
        urllib.request.urlopen(request, timeout=5).close()
    except urllib.error.HTTPError as exc:
        return exc.code != 401
    return True


# The spec's SUBMIT envelope, addressed to everyone (destination_id null broadcasts).
SHUTDOWN = {"protocol_version": "1.0", "message_type": "submit", "message_id": "attack-1",
            "timestamp": 1_764_800_000_000, "source_id": "attacker", "destination_id": None,
            "payload": {"packet": {"group": "cf", "element": "shutdown", "data": {}}}}  # fmt: skip


async def cluster_still_serves(gateway: Node, reactors: list[Node]) -> None:
    admin = gateway.auth_headers()
    async with packetflow.connect(gateway.url, headers=admin, credentials=False) as pf:
        for reactor in reactors:
            res = await pf.submit("cf", "ping", destination_id=reactor.id, timeout_ms=20_000)
            assert res.reactor_id == reactor.id
    assert all(r.proc.poll() is None for r in reactors)


async def test_anonymous_broadcast_shutdown_is_refused(
    attacked: tuple[Node, list[Node], dict[str, str]],
) -> None:
    """One anonymous POST (even text/plain from a foreign Origin) stopped every reactor."""
    gateway, reactors, keys = attacked
    status, body = post(gateway, "/v1/packets", SHUTDOWN,
                        {"Origin": "http://evil.example"}, "text/plain")  # fmt: skip
    assert status == 401 and error_code(body) == "PF401"
    status, body = post(gateway, "/v1/packets", SHUTDOWN, {API_KEY_HEADER: keys["mallory"]},
                        "text/plain")  # fmt: skip
    assert status == 415
    status, body = post(gateway, "/v1/packets", SHUTDOWN, {API_KEY_HEADER: keys["mallory"]})
    assert status == 403 and error_code(body) == "PF403", body
    await cluster_still_serves(gateway, reactors)


async def test_fake_reactor_and_affinity_hijack_are_refused(
    attacked: tuple[Node, list[Node], dict[str, str]],
) -> None:
    """A DISCOVER announce of a fake reactor plus mc:update_affinity took every other
    client's df:transform packets."""
    gateway, reactors, keys = attacked
    async with aiohttp.ClientSession() as session:
        try:
            await session.ws_connect(gateway.url)
            raise AssertionError("an anonymous upgrade was accepted")
        except aiohttp.WSServerHandshakeError as exc:
            assert exc.status == 401
    async with packetflow.connect(gateway.url, api_key=keys["mallory"]) as pf:
        announce = {
            "discovery_type": "announce",
            "reactor_info": {"reactor_id": "evil", "specializations": ["cpu_intensive"],
                             "endpoints": {"websocket": "ws://127.0.0.1:9/ws"}},
            "supported_packets": [{"group": "df", "element": "transform"}],
        }  # fmt: skip
        payload = msgspec.convert(announce, DiscoverPayload)
        with pytest.raises(PacketFlowError) as denied:
            await pf.request(Discover(**pf.envelope_fields(), payload=payload), 10.0)
        assert denied.value.code == "PF403"
        with pytest.raises(PacketFlowError) as denied:
            await pf.submit("mc", "update_affinity",
                            {"matrix_updates": {"df": {"cpu_intensive": 1.0}}})  # fmt: skip
        assert denied.value.code == "PF403"
    rows = gateway.get("/v1/reactors")["reactors"]
    assert {r["reactor_id"] for r in rows} == {r.id for r in reactors}
    await cluster_still_serves(gateway, reactors)


async def test_a_reused_packet_id_never_returns_someone_elses_result(
    attacked: tuple[Node, list[Node], dict[str, str]],
) -> None:
    """Resubmitting a victim's packet id returned the victim's result (and, submitted
    first, poisoned it)."""
    gateway, _, keys = attacked
    async with packetflow.connect(gateway.url, api_key=keys["mallory"]) as evil:
        first = await evil.submit("df", "transform", {"input": "forged", "operation": "uppercase"},
                                  packet_id="pay-42")  # fmt: skip
    async with packetflow.connect(gateway.url, api_key=keys["alice"]) as alice:
        mine = await alice.submit("df", "transform", {"input": "mine", "operation": "uppercase"},
                                  packet_id="pay-42")  # fmt: skip
        again = await alice.submit("df", "transform", {"input": "other", "operation": "trim"},
                                   packet_id="pay-42")  # fmt: skip
    assert first.result == "FORGED"
    assert mine.result == "MINE"  # its own execution, not mallory's stored outcome
    assert again.result == "MINE"  # alice's own window still answers alice
    async with packetflow.connect(gateway.url, api_key=keys["mallory"]) as evil:
        replay = await evil.submit("df", "transform", {"input": "x", "operation": "trim"},
                                   packet_id="pay-42")  # fmt: skip
    assert replay.result == "FORGED"


async def test_files_molecules_events_and_reactors_stay_out_of_reach(
    attacked: tuple[Node, list[Node], dict[str, str]],
) -> None:
    """df:save over the journal, aborting someone's molecule, ed:subscribe "**", and a
    direct connection to a reactor's port."""
    gateway, reactors, keys = attacked
    async with packetflow.connect(gateway.url, api_key=keys["mallory"]) as evil:
        with pytest.raises(PacketFlowError) as denied:
            await evil.submit("df", "save", {"destination": "file://../molecules.sqlite3",
                                             "input": [{"x": 1}]})  # fmt: skip
        assert denied.value.code == "PF403"
        with pytest.raises(PacketFlowError) as denied:
            async for _ in evil.subscribe("**"):
                break
        assert denied.value.code == "PF403"
    admin = gateway.auth_headers()
    async with packetflow.connect(gateway.url, headers=admin, credentials=False) as root:
        with pytest.raises(PacketFlowError):  # even an admin cannot leave the data dir
            await root.submit("df", "save", {"destination": "file://../molecules.sqlite3",
                                             "input": [{"x": 1}]}, timeout_ms=20_000)  # fmt: skip
    molecule = {"molecule_id": "alice-mol", "packets": [
        {"id": "slow", "group": "cf", "element": "ping", "data": {}}], "bonds": []}  # fmt: skip
    status, body = post(gateway, "/v1/molecules", molecule, {API_KEY_HEADER: keys["alice"]})
    assert status in (200, 202), body
    status, body = post(gateway, "/v1/molecules/alice-mol", {}, {API_KEY_HEADER: keys["mallory"]},
                        method="DELETE")  # fmt: skip
    assert status in (403, 404), body  # refused, and no sign of whether it exists
    for reactor in reactors:
        async with aiohttp.ClientSession() as session:
            try:
                await session.ws_connect(reactor.url, headers={API_KEY_HEADER: keys["mallory"]})
                raise AssertionError("a reactor accepted a connection around the gateway")
            except aiohttp.WSServerHandshakeError as exc:
                assert exc.status == 401
    await cluster_still_serves(gateway, reactors)


def get(node: Node, path: str, headers: dict[str, str]) -> tuple[int, Any]:
    return post(node, path, None, headers, method="GET")


def test_a_molecule_stays_its_owners_after_the_gateway_restarts(cluster: Cluster) -> None:
    """DESIGN §8 across a restart: the journal keeps who started each molecule, so once
    the gateway restarted from its data dir the owner still reads it and nobody else
    does (before, the restarted gateway knew no owner and refused the owner as well)."""
    data = cluster.root / "owned"
    gateway = cluster.gateway("--data-dir", str(data))
    cluster.reactor(gateway)
    alice, mallory = new_key(gateway, "packet_user"), new_key(gateway, "packet_user")
    for key in (alice, mallory):
        wait_for(lambda k=key: known(gateway, k), 10.0, "the gateway to see a new key")
    molecule = {"molecule_id": "alice-kept", "packets": [
        {"id": "t", "group": "df", "element": "transform",
         "data": {"input": "x", "operation": "uppercase"}}]}  # fmt: skip
    status, body = post(gateway, "/v1/molecules?wait=true", molecule, {API_KEY_HEADER: alice})
    assert status == 200 and body["status"] == "success", body
    gateway.proc.terminate()
    gateway.proc.wait(30)

    again = cluster.gateway("--data-dir", str(data))
    status, body = get(again, "/v1/molecules/alice-kept", {API_KEY_HEADER: alice})
    assert status == 200 and body["status"] == "success", body
    status, body = get(again, "/v1/molecules/alice-kept", {API_KEY_HEADER: mallory})
    assert status in (403, 404), body
    status, body = post(again, "/v1/molecules/alice-kept", {}, {API_KEY_HEADER: mallory},
                        method="DELETE")  # fmt: skip
    assert status in (403, 404), body
    status, body = get(again, "/v1/molecules/alice-kept", again.auth_headers())  # an admin
    assert status == 200, body
