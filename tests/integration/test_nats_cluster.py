"""Two gateways, three reactors and a real nats-server on 127.0.0.1 (issue 14): one cluster.

Every test here shares one module-wide cluster and runs on one xdist worker (the group
"nats"); the order matters at the end: the NATS restart, then the gateway kill.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest

import packetflow
from packetflow.natsserver import NatsServer, start_nats
from packetflow.protocol.authentication import API_KEY_HEADER
from packetflow.protocol.errors import PacketFlowError

from ..prometheus import sample
from .cluster import Cluster, Node, wait_for
from .slow_elements import runs_of
from .test_attacks import get, known, new_key, post
from .test_molecules import http

pytest.importorskip("nats")
pytestmark = [pytest.mark.nats, pytest.mark.xdist_group("nats")]

MODULE = "tests.integration.slow_elements"
LEASE_S = "1.5"
CAPACITY = 20  # per reactor: the 50 molecules' slow packets all run at once
SPECS = {"r1": "cpu_intensive", "r2": "memory_bound", "r3": "io_intensive"}


@dataclass
class NatsCluster:
    cluster: Cluster
    nats: NatsServer
    a: Node
    b: Node
    reactors: dict[str, Node]
    data: Path  # the reactors' shared data dir (run markers)


@pytest.fixture(scope="module")
def nc() -> Iterator[NatsCluster]:
    cluster = Cluster()
    try:
        server = start_nats(cluster.root / "nats")
    except FileNotFoundError as exc:
        cluster.stop()
        pytest.skip(str(exc))
    try:
        common = ("--cluster", server.url, "--cluster-lease", LEASE_S)
        a = cluster.gateway("--id", "gateway-a", *common)
        b = cluster.gateway("--id", "gateway-b", *common)
        # One admin key for the whole cluster: B took A's keys from NATS.
        assert b.data_dir is not None and a.data_dir is not None
        shutil.copy(a.data_dir / "security" / "admin.key", b.data_dir / "security" / "admin.key")
        data = cluster.root / "reactor-data"
        reactors = {}
        for rid, spec in SPECS.items():
            home = a if rid != "r2" else b  # r2 announces to B, the others to A
            reactors[rid] = cluster.reactor(home, "--id", rid, "--specialization", spec,
                                            "--module", MODULE, "--data-dir", str(data),
                                            "--api-key-file", _key(a),
                                            "--max-concurrent", str(CAPACITY))  # fmt: skip
        for node in reactors.values():  # every gateway dials every reactor
            cluster.wait_linked(a, node)
            cluster.wait_linked(b, node)
        yield NatsCluster(cluster, server, a, b, reactors, data)
    finally:
        cluster.stop()
        server.stop()


def _key(node: Node) -> str:
    assert node.data_dir is not None
    return str(node.data_dir / "security" / "admin.key")


def connect(node: Node) -> Any:
    return packetflow.connect(node.url, api_key_file=_key(node))


async def test_packets_through_either_gateway_reach_any_reactor(nc: NatsCluster) -> None:
    """Issue 14: any gateway routes to any reactor, whichever gateway it announced to: by
    affinity first (df prefers memory_bound, r2), the others once r2 is full."""
    for gateway in (nc.a, nc.b):
        async with connect(gateway) as pf:
            first = await pf.submit("df", "sleep", {"seconds": 0})
            assert first.processing_metadata["reactor_id"] == "r2"
            burst = await asyncio.gather(*(pf.submit("df", "sleep", {"seconds": 0.5})
                                           for _ in range(2 * CAPACITY + 5)))  # fmt: skip
        seen = {str(res.processing_metadata["reactor_id"]) for res in burst}
        assert seen == set(SPECS), f"{gateway.id} reached only {seen}"


async def test_a_subscriber_on_a_gets_what_is_published_through_b(nc: NatsCluster) -> None:
    topic = f"orders.{uuid.uuid4().hex[:6]}"
    async with connect(nc.a) as listener, connect(nc.b) as publisher:
        events = listener.subscribe("orders.*")
        first = asyncio.ensure_future(events.__anext__())

        async def until_received() -> None:
            while not first.done():
                await publisher.submit("ed", "publish", {"topic": topic, "event": {"n": 1}})
                await asyncio.sleep(0.1)

        await asyncio.wait_for(until_received(), 10)
        event = first.result()
        assert event["topic"] == topic and event["event"] == {"n": 1}
        await events.aclose()


async def test_affinity_update_through_a_routes_on_b(nc: NatsCluster) -> None:
    """§6.4 mc:update_affinity through A: B's routing follows (DESIGN §5 score)."""
    version = f"9.{uuid.uuid4().int % 1000}"
    updates = {"df": {"cpu_intensive": 0.05, "memory_bound": 0.05, "io_intensive": 1.0,
                      "general_purpose": 0.05}}  # fmt: skip
    async with connect(nc.a) as pf:
        await pf.submit("mc", "update_affinity", {"matrix_updates": updates, "version": version})
    wait_for(lambda: nc.b.get("/health")["affinity_matrix_version"] == version, 5,
             "B to take the new matrix")  # fmt: skip
    async with connect(nc.b) as pf:
        used = {
            (await pf.submit("df", "sleep", {"seconds": 0})).processing_metadata["reactor_id"]
            for _ in range(10)
        }
    assert used == {"r3"}


def test_keys_made_or_revoked_on_a_reach_b(nc: NatsCluster) -> None:
    """API keys and revocations travel through NATS: a key made with `packetflow keys
    create` against A's data dir authenticates at B, and once revoked there is refused."""
    import urllib.error
    import urllib.request

    assert nc.a.data_dir is not None

    def cli(*args: str) -> str:
        command = [sys.executable, "-m", "packetflow", "keys", *args,
                   "--data-dir", str(nc.a.data_dir)]  # fmt: skip
        return subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip()

    key = cli("create", "--role", "packet_user", "--label", "nats-test")

    def status_at_b() -> int:
        request = urllib.request.Request(nc.b.http + "/v1/reactors",
                                         headers={"X-PacketFlow-API-Key": key})  # fmt: skip
        try:
            with urllib.request.urlopen(request, timeout=5) as resp:
                return resp.status
        except urllib.error.HTTPError as exc:
            return exc.code

    wait_for(lambda: status_at_b() in (200, 403), 10, "B to accept the new key")
    cli("revoke", _key_id_of(nc.a.data_dir, "nats-test"))
    wait_for(lambda: status_at_b() == 401, 10, "B to refuse the revoked key")


def _key_id_of(data_dir: Path, label: str) -> str:
    import json

    rows = json.loads((data_dir / "security" / "keys.json").read_text())["keys"]
    return str(next(r["id"] for r in rows if r.get("label") == label))


def _metric(node: Node, name: str, **labels: str) -> float:
    request = urllib.request.Request(node.http + "/metrics", headers=node.auth_headers())
    with urllib.request.urlopen(request, timeout=5) as resp:
        text = resp.read().decode()
    if labels:
        return sample(text, name, **labels) or 0.0
    # Summed over every label set (e.g. packets routed, per reactor).
    return sum(float(line.rpartition(" ")[2]) for line in text.splitlines()
               if line.startswith(name + "{") or line.startswith(name + " "))  # fmt: skip


async def test_a_retry_through_b_gets_the_outcome_stored_by_a(nc: NatsCluster) -> None:
    """DESIGN §4 across gateways: the same packet id through B is answered from B's window,
    stocked by A: B routes nothing (the reactor's own window would also answer a rerun, so
    the run count alone could not tell)."""
    packet_id = f"once-{uuid.uuid4().hex[:8]}"
    window = "packetflow_gateway_table_entries"
    stored_at_b = _metric(nc.b, window, table="idempotency")
    async with connect(nc.a) as pf:
        first = await pf.submit("df", "sleep", {"seconds": 0, "value": 1}, packet_id=packet_id)
    await asyncio.to_thread(wait_for, lambda: _metric(nc.b, window, table="idempotency")
                            > stored_at_b, 10, "A's outcome to reach B")  # fmt: skip
    routed_by_b = _metric(nc.b, "packetflow_gateway_packets_routed_total")
    async with connect(nc.b) as pf:
        again = await pf.submit("df", "sleep", {"seconds": 0, "value": 1}, packet_id=packet_id)
    assert again.data == first.data
    assert _metric(nc.b, "packetflow_gateway_packets_routed_total") == routed_by_b
    assert sum(n for k, n in runs_of(nc.data).items() if packet_id in k) == 1
    async with connect(nc.b) as pf:  # the counter read above does count B's routing
        await pf.submit("df", "sleep", {"seconds": 0, "value": 2})
    assert _metric(nc.b, "packetflow_gateway_packets_routed_total") == routed_by_b + 1


async def test_a_gateway_started_later_answers_a_retry_from_the_stored_outcome(
    nc: NatsCluster,
) -> None:
    """DESIGN §4 for a gateway that was not running when the packet finished: it replays
    the stored outcomes before it serves, so the retry through it is answered, not run."""
    packet_id = f"late-{uuid.uuid4().hex[:8]}"
    data = {"seconds": 0, "value": 2}
    async with connect(nc.a) as pf:
        first = await pf.submit("df", "sleep", data, packet_id=packet_id)
    late = nc.cluster.gateway("--id", "gateway-c", "--cluster", nc.nats.url,
                              "--cluster-lease", LEASE_S)  # fmt: skip
    try:
        async with packetflow.connect(late.url, api_key_file=_key(nc.a)) as pf:
            again = await pf.submit("df", "sleep", data, packet_id=packet_id)
        assert again.data == first.data
        # A's own reply, from C's window: routed to the reactor (whose window would also
        # answer it without running it), C would have sent a reply of its own.
        assert again.message.source_id == "gateway-a"
        assert sum(n for k, n in runs_of(nc.data).items() if packet_id in k) == 1
    finally:
        late.proc.send_signal(signal.SIGTERM)  # gone before the tests that count gateways
        late.proc.wait(15)


def _sync(barrier: str, parties: int, timeout_ms: int = 10_000) -> dict[str, Any]:
    return {"barrier": barrier, "parties": parties, "timeout_ms": timeout_ms}


async def test_a_barrier_counts_parties_arriving_through_either_gateway(nc: NatsCluster) -> None:
    """Issue 14, co:sync over KV: of 3 parties, 2 arrive through A and 1 through B; all 3
    are released, twice over (a full round makes way for the next)."""
    barrier = f"stage-{uuid.uuid4().hex[:6]}"
    async with connect(nc.a) as pa, connect(nc.b) as pb:
        for _ in range(2):
            replies = await asyncio.wait_for(asyncio.gather(
                pa.submit("co", "sync", _sync(barrier, 3)),
                pa.submit("co", "sync", _sync(barrier, 3)),
                pb.submit("co", "sync", _sync(barrier, 3)),
            ), 20)  # fmt: skip
            for reply in replies:
                assert reply.data["released"] is True, reply.data
                assert (reply.data["barrier"], reply.data["parties"]) == (barrier, 3)
            served = [r.processing_metadata["reactor_id"] for r in replies]
            assert served == ["gateway-a", "gateway-a", "gateway-b"]


async def test_a_shared_barrier_short_of_parties_times_out_as_standalone(
    nc: NatsCluster,
) -> None:
    """One arrival at a 2-party barrier: the standalone PF504, and its arrival is withdrawn,
    so the next two arrivals make a round of their own."""
    barrier = f"alone-{uuid.uuid4().hex[:6]}"
    async with connect(nc.b) as pb, connect(nc.a) as pa:
        with pytest.raises(PacketFlowError) as info:
            await pb.submit("co", "sync", _sync(barrier, 2, 300))
        err = info.value
        assert err.code == "PF504", (err.code, err.message)
        assert err.message == f"Barrier {barrier!r} did not reach 2 parties in 300 ms"
        assert err.details == {"reason": "timeout", "barrier": barrier, "parties": 2}
        first, second = await asyncio.wait_for(asyncio.gather(
            pa.submit("co", "sync", _sync(barrier, 2)),
            pb.submit("co", "sync", _sync(barrier, 2)),
        ), 20)  # fmt: skip
        assert first.data["released"] is True and second.data["released"] is True


async def test_parties_other_than_the_open_rounds_are_pf002_across_gateways(
    nc: NatsCluster,
) -> None:
    """A round opened through A for 3 parties; an arrival through B for 2 is the standalone
    PF002 naming ``payload.packet.data.parties``."""
    barrier = f"mixed-{uuid.uuid4().hex[:6]}"
    async with connect(nc.a) as pa, connect(nc.b) as pb:
        opened = asyncio.ensure_future(pa.submit("co", "sync", _sync(barrier, 3, 1500)))
        await asyncio.to_thread(
            wait_for, lambda: nc.a.get("/health")["cluster"]["barriers"]["waiting"] == 1, 10,
            "A to record the first arrival")  # fmt: skip
        with pytest.raises(PacketFlowError) as info:
            await pb.submit("co", "sync", _sync(barrier, 2))
        err = info.value
        assert err.code == "PF002" and err.field == "payload.packet.data.parties", err.message
        assert err.validation_rule == "barrier_parties"
        with pytest.raises(PacketFlowError) as timed_out:
            await asyncio.wait_for(opened, 20)
        assert timed_out.value.code == "PF504"


async def test_nats_restart_loses_no_accepted_packet(nc: NatsCluster) -> None:
    """NATS restarted mid-run: every accepted packet completes or gets an ERROR, and the
    gateways reconnect (events cross again afterwards)."""
    outcomes: list[str] = []

    async def stream(node: Node) -> None:
        async with connect(node) as pf:
            for _ in range(40):
                try:
                    await asyncio.wait_for(pf.submit("df", "sleep", {"seconds": 0.02}), 15)
                    outcomes.append("ok")
                except PacketFlowError as err:
                    outcomes.append(err.code)
                await asyncio.sleep(0.02)

    load = asyncio.gather(stream(nc.a), stream(nc.b))
    # Mid-run: both streams have had answers before NATS goes away.
    await asyncio.to_thread(wait_for, lambda: len(outcomes) >= 6, 30, "the first answers")
    nc.nats.proc.send_signal(signal.SIGKILL)
    nc.nats.proc.wait()
    await asyncio.sleep(0.5)
    nc.nats = start_nats(nc.nats.store_dir, port=nc.nats.port)
    await load  # a hang here (a packet never answered) fails on wait_for's TimeoutError
    assert len(outcomes) == 80 and outcomes.count("ok") >= 70, outcomes
    for node in (nc.a, nc.b):
        wait_for(lambda n=node: n.get("/health")["cluster"]["connected"], 10,  # type: ignore[misc]
                 f"{node.id} to reconnect")  # fmt: skip
    await test_a_subscriber_on_a_gets_what_is_published_through_b(nc)  # subjects again
    await test_affinity_update_through_a_routes_on_b(nc)  # KV watches again


def _chain(molecule_id: str) -> dict[str, Any]:
    return {
        "molecule_id": molecule_id,
        "packets": [
            {"id": "a", "group": "df", "element": "sleep", "data": {"seconds": 0, "value": 1}},
            {"id": "b", "group": "df", "element": "sleep", "data": {"seconds": 1.5},
             "dependencies": ["a"]},
            {"id": "c", "group": "df", "element": "echo_inputs", "dependencies": ["b"]},
        ],
    }  # fmt: skip


def _runs(data: Path, molecules: list[str], packet: str) -> list[int]:
    counts = runs_of(data)
    return [sum(n for k, n in counts.items() if k.startswith(m) and k.endswith(f"_{packet}"))
            for m in molecules]  # fmt: skip


def test_a_molecule_running_on_a_cannot_be_started_again_through_b(nc: NatsCluster) -> None:
    """A second start of a running molecule's id through another gateway is refused as
    it is on one gateway (PF002 unique_running, naming where it runs): it would replace
    the first run's journal entry and run its finished packets again. Once the molecule
    finished, its id may be run again, through either gateway."""
    m = f"once-{uuid.uuid4().hex[:8]}"
    status, body = http(nc.a, "POST", "/v1/molecules", _chain(m))
    assert status == 202, body
    wait_for(lambda: _runs(nc.data, [m], "b") == [1], 10, "the molecule's second packet")
    status, body = http(nc.b, "POST", "/v1/molecules", _chain(m))
    assert status == 409, body  # as for a running id on one gateway
    error = body["payload"]
    assert error["error_code"] == "PF002", error
    assert error["error_details"]["field"] == "molecule_id", error
    assert error["error_details"]["validation_rule"] == "unique_running", error
    assert error["error_details"]["gateway_id"] == "gateway-a", error
    wait_for(lambda: http(nc.b, "GET", f"/v1/molecules/{m}")[1].get("status") == "success",
             15, "the first run to finish")  # fmt: skip
    assert [_runs(nc.data, [m], p) for p in "abc"] == [[1], [1], [1]]  # ran once
    status, body = http(nc.b, "POST", "/v1/molecules", _chain(m))  # a new run: allowed
    assert status == 202, body
    wait_for(lambda: _runs(nc.data, [m], "c") == [2], 15, "the second run to finish")


def test_a_users_molecule_run_on_a_is_theirs_to_read_on_b(nc: NatsCluster) -> None:
    """DESIGN §8 across gateways: B learns who started a molecule from the shared
    journal, so the owner reads it through B (HTTP and a COORDINATE status over /ws) and
    another user does not."""
    alice, mallory = new_key(nc.a, "packet_user"), new_key(nc.a, "packet_user")
    for key in (alice, mallory):
        wait_for(lambda k=key: known(nc.a, k) and known(nc.b, k), 10,  # type: ignore[misc]
                 "both gateways to know the new keys")  # fmt: skip
    m = f"alice-{uuid.uuid4().hex[:8]}"
    molecule = {"molecule_id": m, "packets": [
        {"id": "t", "group": "df", "element": "transform",
         "data": {"input": "x", "operation": "uppercase"}}]}  # fmt: skip
    status, body = post(nc.a, "/v1/molecules?wait=true", molecule, {API_KEY_HEADER: alice})
    assert status == 200 and body["status"] == "success", body
    status, body = get(nc.b, f"/v1/molecules/{m}", {API_KEY_HEADER: alice})
    assert status == 200 and body["status"] == "success", body
    status, body = get(nc.b, f"/v1/molecules/{m}", {API_KEY_HEADER: mallory})
    assert status in (403, 404), body

    async def ws_status(key: str) -> dict[str, Any]:  # COORDINATE status over B's /ws
        async with packetflow.connect(nc.b.url, api_key=key) as pf:
            reply = await anext(pf.coordinate({"coordination_type": "status", "molecule_id": m}))
            return dict(msgspec.to_builtins(reply.payload))

    answer = asyncio.run(ws_status(alice))
    assert (answer["coordination_type"], answer["status"]) == ("status", "success"), answer
    with pytest.raises(PacketFlowError) as denied:
        asyncio.run(ws_status(mallory))
    assert denied.value.code == "PF403"


def test_sigkill_a_gateway_and_its_molecules_finish_on_the_other(nc: NatsCluster) -> None:
    """SIGKILL gateway A while 50 molecules run: B takes them over once A's lease lapses;
    every one completes, and no packet that had finished runs again."""
    molecules = [f"fo-{uuid.uuid4().hex[:8]}" for _ in range(50)]
    for m in molecules:
        status, body = http(nc.a, "POST", "/v1/molecules", _chain(m))
        assert status == 202, body
    # Every "a" finished and every "b" is running: then A dies. (A few may finish on A in
    # the meantime; B must then report their stored outcome.)
    wait_for(lambda: all(n == 1 for n in _runs(nc.data, molecules, "b")), 20,
             "every molecule to reach its second packet")  # fmt: skip
    killed = time.monotonic()
    nc.a.proc.send_signal(signal.SIGKILL)
    nc.a.proc.wait()

    def all_done() -> bool:
        return all(
            http(nc.b, "GET", f"/v1/molecules/{m}")[1].get("coordination_type") == "complete"
            for m in molecules
        )

    wait_for(all_done, 30, "every molecule to complete through B")
    # The failover as a client sees it (a figure for the report, not an assertion).
    print(
        f"\nfailover: 50 molecules complete through B {time.monotonic() - killed:.2f} s "
        f"after SIGKILL of A (lease {LEASE_S} s); running steps run twice: "
        f"{_runs(nc.data, molecules, 'b').count(2)}"
    )
    for m in molecules:
        status, body = http(nc.b, "GET", f"/v1/molecules/{m}")
        assert status == 200 and body["status"] == "success", body
    assert _runs(nc.data, molecules, "a") == [1] * 50  # finished before the kill: never again
    assert _runs(nc.data, molecules, "c") == [1] * 50
    # "b" was running when A died: asked again of the same reactor, which joined it.
    assert all(n in (1, 2) for n in _runs(nc.data, molecules, "b"))


def test_up_with_two_gateways_serves_through_both(tmp_path: Path) -> None:
    """`packetflow up --gateways 2`: a local nats-server, two gateways, reactors linked to
    both; the URLs of both are printed and each answers."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "packetflow", "up", "--gateways", "2", "--port", "0",
         "--data-dir", str(tmp_path / "data"), "-s", "cpu_intensive", "-s", "io_intensive"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        lines: list[str] = []
        while not any(line.startswith("Ready.") for line in lines):
            line = proc.stdout.readline()
            assert line, f"packetflow up exited early: {lines}"
            lines.append(line)
        urls = [ln.split()[2] for ln in lines if ln.startswith("packetflow gateway")]
        assert len(urls) == 2 and any("NATS JetStream" in ln for ln in lines)
        for n, url in enumerate(urls, 1):
            data = tmp_path / "data" / ("gateway" if n == 1 else f"gateway-{n}")
            node = Node(proc, url, f"gateway-{n}", data_dir=data)  # type: ignore[arg-type]
            rows = node.get("/v1/reactors")["reactors"]
            assert {r["health"] for r in rows} == {"healthy"} and len(rows) == 2
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
