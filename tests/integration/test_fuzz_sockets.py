"""A sample of the fuzz frames (tests/frame_mutations.py) over real sockets to a real
gateway and a real reactor process (STYLE 8, DESIGN §3): every bad envelope gets exactly
one ERROR and every valid SUBMIT exactly one answer, the connection never closes, and a
cf:ping after the last frame still works.
"""

from __future__ import annotations

import json
import os
from typing import Any

import aiohttp
import pytest

from packetflow.protocol import messages

from ..frame_mutations import Mutator
from .cluster import Cluster, Node

SAMPLE = 2000
PER_ROUND = 10  # frames sent before a sentinel that closes the round
ROUND_TIMEOUT_S = 30.0
FUZZ_SEED = int(os.environ.get("PF_FUZZ_SEED", "20261204"))
# Elements a valid fuzzed SUBMIT may reach: ones that answer once and change nothing
# (cf:shutdown, ed:subscribe, co:sync... would stop the node, stream, or wait).
SAFE = {("cf", "ping"), ("df", "transform"), ("df", "filter"), ("df", "map"), ("df", "reduce"),
        ("df", "validate"), ("df", "aggregate"), ("mc", "analyze"), ("ed", "publish")}  # fmt: skip


def expected_answers(frame: bytes) -> int | None:
    """How many answers ``frame`` must get, or None to leave it out of the sample (it holds
    a valid message that is not a SUBMIT to a safe element: RESULT, HEARTBEAT and
    DISCOVER from a client are taken without an answer or change the registry)."""
    count = 0
    for item in messages.decode_frame(frame):
        if isinstance(item, messages.FrameError):
            count += 1
        elif isinstance(item, messages.Submit):
            packet = item.payload.packet
            if (packet.group, packet.element) not in SAFE or item.destination_id is None:
                return None
            count += 1
        else:
            return None
    return count


def sample(seed: int) -> list[tuple[bytes, int]]:
    out: list[tuple[bytes, int]] = []
    for frame in Mutator(seed).frames(SAMPLE * 3):
        n = expected_answers(frame)
        if n is not None and len(frame) < messages.MAX_FRAME_BYTES:
            out.append((frame, n))
        if len(out) == SAMPLE:
            break
    return out


def sentinel(tag: str) -> str:
    return json.dumps({"protocol_version": "1.0", "message_type": "submit",
                       "message_id": tag, "timestamp": 0, "source_id": "fuzz-sentinel",
                       "payload": {"packet": {"group": "cf", "element": "ping"}}})  # fmt: skip


async def answers_until(ws: aiohttp.ClientWebSocketResponse, tag: str, want: int) -> int:
    """Read until the sentinel ``tag`` is answered and ``want`` other answers arrived;
    how many other answers there were."""
    got, seen_sentinel = 0, False
    await ws.send_str(sentinel(tag))
    while not seen_sentinel or got < want:
        frame = await ws.receive(timeout=ROUND_TIMEOUT_S)
        assert frame.type == aiohttp.WSMsgType.TEXT, (frame.type, frame.data, ws.close_code)
        value: Any = json.loads(frame.data)
        for msg in value if isinstance(value, list) else [value]:
            assert msg["message_type"] in ("result", "error"), msg
            if msg.get("correlation_id") == tag:
                assert msg["message_type"] == "result", msg
                seen_sentinel = True
            else:
                got += 1
    return got


@pytest.mark.parametrize("target", ["gateway", "reactor"])
async def test_fuzz_sample_over_real_sockets_design_3(cluster: Cluster, target: str) -> None:
    gateway = cluster.gateway()
    reactor = cluster.reactor(gateway, "--id", "fuzz-r1")
    node: Node = gateway if target == "gateway" else reactor
    frames = sample(FUZZ_SEED + (0 if target == "gateway" else 1))
    assert len(frames) == SAMPLE
    async with aiohttp.ClientSession(headers=node.auth_headers()) as session:
        ws = await session.ws_connect(node.url, max_msg_size=0)
        for start in range(0, SAMPLE, PER_ROUND):
            batch = frames[start : start + PER_ROUND]
            for frame, _ in batch:  # as text frames, invalid UTF-8 included
                await ws.send_frame(frame, aiohttp.WSMsgType.TEXT)
            want = sum(n for _, n in batch)
            try:
                got = await answers_until(ws, f"sentinel-{start}", want)
            except TimeoutError:
                raise AssertionError(f"frames {start}+ not all answered: {batch}") from None
            assert got == want, (start, got, want, [f[:200] for f, _ in batch])
        assert await answers_until(ws, "sentinel-last", 0) == 0
        await ws.close()
