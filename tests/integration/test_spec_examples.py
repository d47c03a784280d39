"""Every example message of the spec, sent as written (tests/corpus/valid_*) to a real
gateway with credentials, is accepted: never answered PF001, nor PF002 about its own shape;
and a reactor announcing its capabilities only as §4.2.4's list or §8.2's object is routed to.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from packetflow.cluster import read_ready, stop_all

from .cluster import START_TIMEOUT_S, Cluster, Node, wait_for

CORPUS_DIR = Path(__file__).resolve().parents[1] / "corpus"
# §8.1.2's multicast_announce is the UDP channel's datagram: on /ws a gateway takes the
# §4.2.5 announce instead and answers it PF002 (docs/interop.md); the decoder accepts it
# (tests/unit/test_corpus.py).
# Not the spec's examples: the multicast one is UDP's; the other two are edge-validation
# seeds that reuse the wire example's packet id, so sent first they would (rightly) make
# the idempotency window answer the wire example with their stored outcome.
NOT_FOR_WS = {"valid_discover_8_1_2_multicast.json", "valid_data_1e400_relayed_raw.json",
              "valid_depth_128.json"}  # fmt: skip
SEEDS = sorted(
    p for p in CORPUS_DIR.glob("valid_*.json")
    if p.name not in NOT_FOR_WS and not p.read_text().lstrip().startswith("[")
)  # fmt: skip
# Message types a gateway answers; the others (RESULT, ERROR and HEARTBEAT from a client)
# it takes silently.
ANSWERED = ("submit", "discover", "coordinate")
REPLY_WAIT_S = 60.0
# PF002 about the state a message refers to (a molecule this gateway never ran), not about
# the message's own shape: §7.3/§7.4's coordinator messages name molecule "mol_123", which
# §7.3's execute expects to have been reserved first.
STATE_RULES = {"known_molecule", "reserved_molecule"}


def marker() -> dict[str, Any]:
    return {"protocol_version": "1.0", "message_type": "submit",
            "message_id": f"msg_marker_{uuid.uuid4()}", "timestamp": int(time.time() * 1000),
            "source_id": "spec-examples", "payload": {"packet": {"group": "cf",
                                                                 "element": "ping"}}}  # fmt: skip


async def send_each(url: str, headers: dict[str, str]) -> dict[str, list[dict[str, Any]]]:
    """Send each seed, then a cf:ping marker; collect every message until the marker's
    reply (and the seed's own, for the types a gateway answers) has come."""
    replies: dict[str, list[dict[str, Any]]] = {}
    async with aiohttp.ClientSession() as http, http.ws_connect(url, headers=headers) as ws:
        for path in SEEDS:
            text = path.read_text()
            seed = json.loads(text)
            mark = marker()
            await ws.send_str(text)
            await ws.send_str(json.dumps(mark))
            got: list[dict[str, Any]] = []
            marked = False
            answered = seed["message_type"] not in ANSWERED
            deadline = time.monotonic() + REPLY_WAIT_S
            while not (marked and answered):
                frame = await asyncio.wait_for(ws.receive(), deadline - time.monotonic())
                assert frame.type == aiohttp.WSMsgType.TEXT, (path.name, frame)
                value = json.loads(frame.data)
                for item in value if isinstance(value, list) else [value]:
                    if item.get("correlation_id") == mark["message_id"]:
                        marked = True
                        assert item["message_type"] == "result", (path.name, item)
                    else:
                        got.append(item)
                        answered = answered or item.get("correlation_id") == seed["message_id"]
            replies[path.name] = got
    return replies


def refusal(item: dict[str, Any]) -> str | None:
    """Why ``item`` says its message was refused for its form, if it does."""
    if item.get("message_type") != "error":
        return None
    payload = item["payload"]
    code = payload["error_code"]
    if code == "PF001" or code == "PF403" or code == "PF401":
        return f"{code}: {payload['error_message']}"
    if code == "PF002" and payload["error_details"].get("validation_rule") not in STATE_RULES:
        return f"PF002: {payload['error_message']}"
    return None


def test_every_spec_example_is_accepted_by_a_gateway(cluster: Cluster) -> None:
    gateway = cluster.gateway("--id", "gateway-01")  # the wire examples address it
    cluster.reactor(gateway)
    assert len(SEEDS) >= 25
    replies = asyncio.run(send_each(gateway.url, gateway.auth_headers()))
    refused = {name: why for name, got in replies.items() for item in got
               if (why := refusal(item)) is not None}  # fmt: skip
    assert refused == {}
    # Only the replies to each seed: a running molecule (wire example 1) keeps pushing
    # progress while later seeds are sent.
    ids = {p.name: json.loads(p.read_text())["message_id"] for p in SEEDS}
    by_name = {name: [i for i in got if i.get("correlation_id") == ids[name]]
               for name, got in replies.items()}  # fmt: skip
    # §4.2.1 and the wire example run to a RESULT through our reactor.
    for name in ("valid_submit_4_2_1.json", "valid_submit_wire_example_1.json",
                 "valid_submit_9_1_1.json", "valid_submit_9_1_2.json"):  # fmt: skip
        first = by_name[name][0]
        assert (first["message_type"], first["payload"]["status"]) == ("result", "success")
    assert by_name["valid_submit_4_2_1.json"][0]["payload"]["data"]["result"] == "HELLO WORLD"
    # The announces are acknowledged, §8.2's (no reactor_info) and §4.2.4's list form too.
    for name in ("valid_discover_4_2_5.json", "valid_discover_8_2.json",
                 "valid_discover_4_2_4_capabilities_list.json"):  # fmt: skip
        ack = by_name[name][0]
        assert ack["payload"]["accepted"] is True, (name, ack)
    listed = {r["reactor_id"]: r for r in gateway.get("/v1/reactors")["reactors"]}
    assert "reactor-elixir-01" in listed  # §8.2: named by the envelope's source_id
    # Messages a gateway takes silently got no reply at all.
    for name in ("valid_result_4_2_2.json", "valid_error_10_2.json", "valid_heartbeat_8_3.json",
                 "valid_result_9_1_1.json", "valid_heartbeat_4_1_base_structure.json"):  # fmt: skip
        assert by_name[name] == [], (name, by_name[name])


@pytest.mark.parametrize("form", ["list", "object"])
def test_reactor_announcing_capabilities_only_in_one_shape_is_routed_to(
    cluster: Cluster, form: str
) -> None:
    """§4.2.4's list (refused PF002 before) and §8.2's object (ignored for routing before:
    PF003) both make the gateway route cf packets to the announcing reactor."""
    gateway = cluster.gateway()
    key = gateway.auth_headers()["X-PacketFlow-API-Key"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.integration.broken_endpoint", "--announce-to",
         gateway.url, "--capabilities", form], stdout=subprocess.PIPE,
        env={**os.environ, "PACKETFLOW_API_KEY": key},
    )  # fmt: skip
    try:
        ready = read_ready(proc, START_TIMEOUT_S)
        assert ready is not None
        reactor = Node(proc, ready["url"], ready["id"], "reactor")
        cluster.wait_linked(gateway, reactor)
        row = next(r for r in gateway.get("/v1/reactors")["reactors"]
                   if r["reactor_id"] == reactor.id)  # fmt: skip
        assert set(row["capabilities"]) == {"cf:ping", "cf:health", "cf:introspect"}
        reply = wait_for(lambda: ping_through(gateway), 30, "a routed cf:ping")
        assert reply["payload"]["status"] == "success"
        assert reply["payload"]["processing_metadata"]["reactor_id"] == reactor.id
    finally:
        stop_all([proc], 5)


def ping_through(gateway: Node) -> dict[str, Any] | None:
    async def go() -> dict[str, Any]:
        async with (
            aiohttp.ClientSession() as http,
            http.ws_connect(gateway.url, headers=gateway.auth_headers()) as ws,
        ):
            mark = marker()
            await ws.send_str(json.dumps(mark))
            while True:
                item = json.loads((await asyncio.wait_for(ws.receive(), 30)).data)
                if item.get("correlation_id") == mark["message_id"]:
                    return dict(item)

    reply = asyncio.run(go())
    return reply if reply["message_type"] == "result" else None
