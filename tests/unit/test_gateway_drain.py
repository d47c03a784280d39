"""The gateway's drain (SIGTERM, ``Gateway.drain``): every accepted packet, wherever it
waits (at a reactor, in the queue, in a retry's backoff, at a co:sync barrier), gets
exactly one answer, and new work is refused with PF503 retry_possible. A real, unstarted
``Gateway`` with stand-in links (tests/unit/gateway_standins.py)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from packetflow.gateway.server import CallbackTarget, Gateway
from packetflow.protocol.messages import Error, ErrorPayload, Result, ResultPayload

from .gateway_standins import Peer, gateway, join, submit

__all__ = ["gateway"]  # the fixture


def _answers(frames: list[bytes]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for frame in frames:
        reply = json.loads(frame)
        assert reply["correlation_id"] not in out, "answered twice"
        out[reply["correlation_id"]] = reply
    return out


async def test_drain_answers_every_waiting_packet_pf503_retry_possible(gateway: Gateway) -> None:
    replies: list[bytes] = []
    target = CallbackTarget(replies.append)
    holder = join(gateway, "holder", capacity=2)
    gateway.accept(submit("running"), target)
    gateway.accept(submit("retrying"), target)
    gateway.accept(submit("queued"), target)
    gateway.accept(submit("barrier", "co", "sync", {"barrier": "b", "parties": 2}), target)
    assert gateway.queued == 1 and holder.in_flight == 2
    # The reactor fails "retrying" retryably: it waits in backoff, at no reactor, in no queue.
    sent = {s["payload"]["packet"]["id"]: s for s in holder.link.peer.sent}  # type: ignore[union-attr]
    gateway.on_reactor_message(holder, Error(
        protocol_version="1.0", message_id="e1", timestamp=1, source_id="holder",
        correlation_id=sent["p-retrying"]["message_id"],
        payload=ErrorPayload(packet_id="p-retrying", error_code="PF005",
                             error_category="processing_error", error_message="flaky",
                             retry_possible=True),
    ))  # fmt: skip
    assert gateway.retry_budget.in_flight == 1
    assert gateway._work_left() == 4  # running, retrying (backoff), queued→running, barrier

    assert await gateway.drain(0.0) is False

    answers = _answers(replies)
    assert sorted(answers) == ["barrier", "queued", "retrying", "running"]
    for reply in answers.values():
        assert reply["message_type"] == "error"
        payload = reply["payload"]
        assert payload["error_code"] == "PF503", payload
        assert payload["retry_possible"] is True and payload["retry_delay_ms"] > 0
        assert payload["error_details"]["reason"] == "shutdown"
    assert gateway._work_left() == 0
    assert gateway.retry_budget.in_flight == 0
    assert holder.in_flight == 0 and gateway.queued == 0


async def test_a_draining_gateway_refuses_new_submits_pf503(gateway: Gateway) -> None:
    join(gateway, "holder")
    assert await gateway.drain(0.0) is True  # nothing was waiting
    client = Peer()
    gateway.accept(submit("late"), client)
    (reply,) = client.sent
    assert reply["correlation_id"] == "late"
    assert reply["payload"]["error_code"] == "PF503"
    assert reply["payload"]["retry_possible"] is True
    assert reply["payload"]["retry_delay_ms"] > 0
    assert not gateway.pending and not gateway.queued


async def test_a_packet_finishing_within_the_grace_gets_its_result(gateway: Gateway) -> None:
    """drain waits for the reply; only what is left at the end is PF503."""
    replies: list[bytes] = []
    holder = join(gateway, "holder")
    gateway.accept(submit("soon"), CallbackTarget(replies.append))
    (sent,) = holder.link.peer.sent  # type: ignore[union-attr]
    draining = asyncio.ensure_future(gateway.drain(30.0))
    await asyncio.sleep(0.1)
    assert not draining.done()
    gateway.on_reactor_message(holder, Result(
        protocol_version="1.0", message_id="r1", timestamp=1, source_id="holder",
        correlation_id=sent["message_id"],
        payload=ResultPayload(packet_id="p-soon", status="success"),
    ))  # fmt: skip
    assert await asyncio.wait_for(draining, 10) is True
    (reply,) = _answers(replies).values()
    assert reply["message_type"] == "result"
