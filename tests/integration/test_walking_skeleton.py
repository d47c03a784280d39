"""The walking skeleton end to end: real gateway and reactor processes over WebSocket."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

import packetflow
from packetflow.protocol.errors import PacketFlowError

from .cluster import Cluster, Node, wait_for

CORPUS_MESSAGE_1 = Path(__file__).parents[1] / "corpus" / "valid_submit_wire_example_1.json"
SPEC = Path(os.environ.get("PFAP_SPEC", Path(__file__).parents[3] / "shared/spec/PFAP-v1.0.md"))

# Message 1 of the spec's "Complete Packet Submission Flow", verbatim.
WIRE_MESSAGE_1 = """{
  "protocol_version": "1.0",
  "message_type": "submit",
  "sequence_id": 12345,
  "timestamp": 1640995200000,
  "source_id": "client-webapp-01",
  "destination_id": "gateway-01",
  "message_id": "msg_a1b2c3d4",
  "ttl": 30000,
  "priority": 7,
  "payload": {
    "packet": {
      "version": "1.0",
      "id": "packet_transform_001",
      "group": "df",
      "element": "transform",
      "data": {
        "input": ["apple", "banana", "cherry"],
        "operation": "uppercase",
        "parameters": {"locale": "en-US"}
      },
      "priority": 7,
      "timeout_ms": 30000
    }
  }
}"""


@pytest.fixture
def gw(cluster: Cluster) -> Node:
    # The wire example addresses its SUBMIT to "gateway-01": that must be this gateway's
    # id (a destination_id naming no gateway or reactor is PF003).
    gateway = cluster.gateway("--id", "gateway-01")
    cluster.reactor(gateway, "--specialization", "memory_bound", "--id", "reactor-mem")
    cluster.reactor(gateway, "--specialization", "cpu_intensive", "--id", "reactor-cpu")
    return gateway


async def _exchange(node: Node, frames: list[str | bytes]) -> list[dict]:
    out = []
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(node.url, headers=node.auth_headers()) as ws,
    ):
        for frame in frames:
            if isinstance(frame, bytes):
                await ws.send_bytes(frame)
            else:
                await ws.send_str(frame)
            reply = await ws.receive(timeout=10)
            out.append(json.loads(reply.data))
    return out


def test_wire_message_1_is_the_corpus_copy_of_the_spec_text() -> None:
    """The test's copy of message 1 is the project's own fixture of the spec's text
    (tests/corpus, committed), byte for byte; also against the spec when it is at hand."""
    assert CORPUS_MESSAGE_1.read_text().rstrip("\n") == WIRE_MESSAGE_1
    if SPEC.exists():
        assert WIRE_MESSAGE_1 in SPEC.read_text()


async def test_wire_example_message_1_returns_message_4(gw: Node) -> None:
    """Wire example §1 → §4: same packet id, correlation, result and processing metadata."""
    (reply,) = await _exchange(gw, [WIRE_MESSAGE_1])
    assert reply["message_type"] == "result"
    assert reply["correlation_id"] == "msg_a1b2c3d4"
    assert reply["destination_id"] == "client-webapp-01"
    payload = reply["payload"]
    assert payload["packet_id"] == "packet_transform_001"
    assert payload["status"] == "success"
    assert payload["data"]["result"] == ["APPLE", "BANANA", "CHERRY"]
    assert payload["data"]["items_processed"] == 3
    assert "processing_stats" not in payload["data"]
    meta = payload["processing_metadata"]
    assert meta["reactor_id"] == "reactor-mem"  # df → memory_bound (§3.3: 0.9)
    assert meta["affinity_score"] == pytest.approx(0.9)
    for key in ("total_duration_ms", "reactor_duration_ms", "routing_duration_ms"):
        assert meta[key] >= 0
    assert meta["total_duration_ms"] == pytest.approx(
        meta["reactor_duration_ms"] + meta["routing_duration_ms"], abs=0.01
    )


async def test_bad_inputs_get_errors_and_connection_stays_usable(gw: Node) -> None:
    """DESIGN §3: PF001 for bad frames, PF002 naming the field, PF003 for no reactor."""
    good = WIRE_MESSAGE_1.replace("packet_transform_001", "packet_after_errors")
    base = json.loads(WIRE_MESSAGE_1)

    def variant(**packet_fields: object) -> str:
        msg = json.loads(json.dumps(base))
        msg["message_id"] = f"msg_{len(packet_fields)}_{next(iter(packet_fields))}"
        msg["payload"]["packet"].pop("id")
        msg["payload"]["packet"].update(packet_fields)
        return json.dumps(msg)

    frames: list[str | bytes] = [
        "this is not json",
        b"\x00\x01binary",
        variant(priority="high"),
        variant(priority=11),
        variant(element="no_such_element"),
        json.dumps({k: v for k, v in base.items() if k != "payload"}),
        good,
    ]
    replies = await _exchange(gw, frames)
    codes = [r["payload"].get("error_code") for r in replies]
    assert codes[:6] == ["PF001", "PF001", "PF002", "PF002", "PF003", "PF002"]
    details = [r["payload"]["error_details"] for r in replies[:6]]
    assert details[2] == {"field": "payload.packet.priority", "expected_type": "int",
                          "received_type": "str", "validation_rule": "type"}  # fmt: skip
    assert details[3]["field"] == "payload.packet.priority"
    assert details[3]["received_type"] == "int 11"
    assert details[5]["field"] == "payload"
    assert replies[2]["correlation_id"] == "msg_1_priority"
    assert replies[4]["payload"]["error_category"] == "routing_error"
    assert replies[4]["payload"]["retry_possible"] is True
    assert replies[6]["message_type"] == "result"
    assert replies[6]["payload"]["data"]["result"] == ["APPLE", "BANANA", "CHERRY"]


async def test_sdk_routes_by_affinity_and_reports_ping_fields(gw: Node) -> None:
    async with packetflow.connect(gw.url) as pf:
        pong = await pf.submit("cf", "ping", {"echo_data": "hello"})
        assert pong.data["pong"] is True
        assert pong.data["echo_data"] == "hello"
        assert pong.data["implementation"] == "python"
        assert pong.data["reactor_id"] == "reactor-cpu"  # cf → cpu_intensive (0.9)
        assert pong.data["response_time_ms"] >= 0
        out = await pf.submit("df", "transform",
                              {"input": " MiXed ", "operation": "lowercase"})  # fmt: skip
        assert out.result == " mixed "
        with pytest.raises(PacketFlowError) as info:
            await pf.submit("df", "transform", {"input": "x"}, priority=0)
        assert info.value.code == "PF002"
        assert info.value.field == "payload.packet.priority"


def test_sync_client_and_http_api(gw: Node) -> None:
    with packetflow.connect_sync(gw.url) as pf:
        res = pf.submit("df", "transform", {"input": ["ab", "cd"], "operation": "reverse"})
        assert res.result == ["ba", "dc"]
    reactors = {r["reactor_id"]: r for r in gw.get("/v1/reactors")["reactors"]}
    assert set(reactors) == {"reactor-mem", "reactor-cpu"}
    assert reactors["reactor-mem"]["specializations"] == ["memory_bound"]
    assert "df:transform" in reactors["reactor-mem"]["capabilities"]
    assert gw.get("/health")["healthy_reactors"] == 2


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "packetflow", *args], capture_output=True,
                          text=True, timeout=60)  # fmt: skip


def test_cli_submit_and_status(gw: Node) -> None:
    ping = _cli("submit", "cf", "ping", "--json", "--url", gw.url)
    assert ping.returncode == 0, ping.stderr
    assert json.loads(ping.stdout)["data"]["pong"] is True
    out = _cli("submit", "df", "transform", "--json", "--url", gw.url, "--data",
               '{"input":["apple","banana","cherry"],"operation":"uppercase"}')  # fmt: skip
    assert json.loads(out.stdout)["data"]["result"] == ["APPLE", "BANANA", "CHERRY"]
    bad = _cli("submit", "zz", "ping", "--json", "--url", gw.url)
    assert bad.returncode == 1
    assert json.loads(bad.stdout)["error"]["error_code"] == "PF002"
    pretty = _cli("submit", "zz", "ping", "--url", gw.url)
    assert pretty.returncode == 1
    assert pretty.stderr.startswith("PF002 validation_error: ")
    status = _cli("status", "--url", gw.url)
    assert status.returncode == 0
    assert "reactor-mem" in status.stdout and "memory_bound" in status.stdout
    assert "healthy" in status.stdout


def test_reactor_sends_heartbeats_that_reach_the_gateway(cluster: Cluster) -> None:
    gateway = cluster.gateway()
    reactor = cluster.reactor(gateway, "--heartbeat-interval", "0.2", "--id", "reactor-hb")

    def heartbeat_seen() -> bool:
        rows = gateway.get("/v1/reactors")["reactors"]
        return any(r["reactor_id"] == reactor.id and r["performance_metrics"] for r in rows)

    wait_for(heartbeat_seen, 10, "a heartbeat with performance metrics")


def test_packetflow_up_starts_five_reactors_and_stops_cleanly() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "packetflow", "up", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        lines: list[str] = []
        while not any(line.startswith("Ready.") for line in lines):
            line = proc.stdout.readline()
            assert line, f"packetflow up exited early: {proc.stderr.read() if proc.stderr else ''}"
            lines.append(line)
        url = lines[0].split()[-1]
        reactor_lines = [line for line in lines if line.strip().startswith("reactor ")]
        assert len(reactor_lines) == 5
        children = _children(proc.pid)
        assert len(children) == 6  # gateway + 5 reactors
        with packetflow.connect_sync(url) as pf:
            assert pf.submit("cf", "ping").data["reactor_id"] == "reactor-cpu-intensive"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0
        assert "Traceback" not in err
        wait_for(lambda: not any(_alive(pid) for pid in children), 10, "children to exit")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _children(pid: int) -> list[int]:
    import psutil

    return [c.pid for c in psutil.Process(pid).children(recursive=True)]


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
