"""gateway/local.py's co:sync at a barrier shared with other gateways (gateway/shared.py
``SharedBarriers``): a real, unstarted ``Gateway`` whose cluster hands co:sync to a
stand-in. Released and timed-out waiters get the standalone answers; a drain answers a
waiter once and withdraws its arrival."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from packetflow.gateway.server import CallbackTarget, Gateway
from packetflow.protocol.errors import PacketFlowError, invalid_field

from .gateway_standins import gateway, submit

__all__ = ["gateway"]  # the fixture


class Shared:
    """A SharedBarriers whose answer the test decides."""

    def __init__(self) -> None:
        self.answer: asyncio.Future[bool] | None = None
        self.calls: list[tuple[str, int, float]] = []
        self.cancelled = 0
        self.error: PacketFlowError | None = None

    async def sync(self, barrier: str, parties: int, timeout_s: float) -> bool:
        self.calls.append((barrier, parties, timeout_s))
        if self.error is not None:
            raise self.error
        self.answer = asyncio.get_running_loop().create_future()
        try:
            return await self.answer
        except asyncio.CancelledError:
            self.cancelled += 1
            raise

    def describe(self) -> dict[str, int]:
        return {}


def _sync(message_id: str, barrier: str = "b", parties: int = 2) -> Any:
    return submit(message_id, "co", "sync", {"barrier": barrier, "parties": parties,
                                             "timeout_ms": 2000})  # fmt: skip


async def _settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


async def _arrive(gateway: Gateway, shared: Shared, replies: list[bytes], mid: str) -> None:
    gateway.cluster.barriers = shared
    gateway.accept(_sync(mid), CallbackTarget(replies.append))
    await _settle()
    assert shared.calls == [("b", 2, 2.0)] and gateway.local.waiting() == 1


async def test_a_released_shared_barrier_answers_as_standalone(gateway: Gateway) -> None:
    shared, replies = Shared(), []
    await _arrive(gateway, shared, replies, "m1")
    assert replies == [] and len(gateway.local.barriers) == 0  # not the embedded table
    assert shared.answer is not None
    shared.answer.set_result(True)
    await _settle()
    (reply,) = [json.loads(r) for r in replies]
    assert reply["message_type"] == "result" and reply["correlation_id"] == "m1"
    data = reply["payload"]["data"]
    assert data["released"] is True and (data["barrier"], data["parties"]) == ("b", 2)
    assert data["waited_ms"] >= 0 and gateway.local.waiting() == 0


async def test_a_timed_out_shared_barrier_is_the_standalone_pf504(gateway: Gateway) -> None:
    shared, replies = Shared(), []
    await _arrive(gateway, shared, replies, "m1")
    assert shared.answer is not None
    shared.answer.set_result(False)
    await _settle()
    (reply,) = [json.loads(r) for r in replies]
    payload = reply["payload"]
    assert payload["error_code"] == "PF504"
    assert payload["error_message"] == "Barrier 'b' did not reach 2 parties in 2000 ms"
    assert payload["error_details"] == {"reason": "timeout", "barrier": "b", "parties": 2}


async def test_a_refused_arrival_is_answered_with_its_error(gateway: Gateway) -> None:
    shared, replies = Shared(), []
    shared.error = invalid_field("payload.packet.data.parties", "3", "integer",
                                 "barrier_parties")  # fmt: skip
    gateway.cluster.barriers = shared
    gateway.accept(_sync("m1"), CallbackTarget(replies.append))
    await _settle()
    (reply,) = [json.loads(r) for r in replies]
    assert reply["payload"]["error_code"] == "PF002"
    assert reply["payload"]["error_details"]["field"] == "payload.packet.data.parties"
    assert gateway.local.waiting() == 0


async def test_drain_answers_a_shared_waiter_once_and_withdraws_it(gateway: Gateway) -> None:
    shared, replies = Shared(), []
    await _arrive(gateway, shared, replies, "m1")
    assert await gateway.drain(0.0) is False
    await _settle()
    (reply,) = [json.loads(r) for r in replies]
    assert reply["payload"]["error_code"] == "PF503"
    assert reply["payload"]["error_details"]["reason"] == "shutdown"
    assert shared.cancelled == 1 and gateway.local.waiting() == 0
