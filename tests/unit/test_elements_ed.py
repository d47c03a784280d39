"""The ed elements of DESIGN §10 on a reactor: publish, subscribe, signal, trigger and listen on
a real ReactorRuntime's own bus, ed:trigger through a fake gateway; PF002 naming the bad
field, PF504 when ed:listen times out."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from packetflow.protocol.messages import Submit, decode_json
from packetflow.reactor.elements import ed
from packetflow.reactor.registry import Registry
from packetflow.reactor.runtime import ReactorConfig, ReactorRuntime

from .test_elements_co import FakeGateway, fails, make_ctx

D = "payload.packet.data"


def ctx_for(rt: ReactorRuntime | None, gateway: Any = None, ttl: float = 10.0) -> Any:
    return make_ctx(rt, gateway, group="ed", ttl=ttl)


async def listening(rt: ReactorRuntime, topic: str, **extra: Any) -> asyncio.Future[Any]:
    """Start an ed:listen and let it subscribe."""
    task = asyncio.ensure_future(ed.listen({"topic": topic, **extra}, ctx_for(rt)))
    await asyncio.sleep(0)
    return task


# ---------------------------------------------------------------------------------------------
# publish + listen


async def test_publish_with_no_listener_delivers_nothing_but_numbers_the_event(
    runtime: ReactorRuntime,
) -> None:
    first = await ed.publish({"topic": "orders.created", "event": {"id": 1}}, ctx_for(runtime))
    second = await ed.publish({"topic": "orders.created", "event": None}, ctx_for(runtime))
    assert first == {"delivered": 0, "topic": "orders.created", "sequence": 1}
    assert second["sequence"] == 2


async def test_listen_gets_the_next_matching_event(runtime: ReactorRuntime) -> None:
    exact = await listening(runtime, "orders.created")
    wild = await listening(runtime, "orders.*")
    other = await listening(runtime, "users.*", timeout_ms=50)
    out = await ed.publish({"topic": "orders.created", "event": {"id": 7}}, ctx_for(runtime))
    assert out["delivered"] == 2
    got = await exact
    assert got["topic"] == "orders.created" and got["event"] == {"id": 7}
    assert got["sequence"] == out["sequence"]
    assert isinstance(got["published_at"], int) and got["subscription_id"]
    assert (await wild)["event"] == {"id": 7}
    await fails(other, "PF504")


async def test_listen_is_one_shot(runtime: ReactorRuntime) -> None:
    waiter = await listening(runtime, "t")
    await ed.publish({"topic": "t", "event": 1}, ctx_for(runtime))
    again = await ed.publish({"topic": "t", "event": 2}, ctx_for(runtime))
    assert (await waiter)["event"] == 1
    assert again["delivered"] == 0
    assert len(ed.event_state(ctx_for(runtime)).bus) == 0


async def test_listen_timeout_is_pf504_and_unsubscribes(runtime: ReactorRuntime) -> None:
    start = time.monotonic()
    err = await fails(ed.listen({"topic": "never", "timeout_ms": 40}, ctx_for(runtime)), "PF504")
    assert 0.03 <= time.monotonic() - start < 1.0
    assert err.details["reason"] == "listen_timeout" and err.retryable
    assert len(ed.event_state(ctx_for(runtime)).bus) == 0


async def test_listen_answers_pf504_before_the_packet_deadline(runtime: ReactorRuntime) -> None:
    """Without timeout_ms the packet's deadline bounds the wait; the handler answers PF504
    itself rather than being cancelled by the runtime (which would be PF005 timeout)."""
    start = time.monotonic()
    await fails(ed.listen({"topic": "never"}, ctx_for(runtime, ttl=0.2)), "PF504")
    assert time.monotonic() - start < 0.2


async def test_cancelled_listen_leaves_no_subscription(runtime: ReactorRuntime) -> None:
    waiter = await listening(runtime, "t")
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    assert len(ed.event_state(ctx_for(runtime)).bus) == 0
    assert (await ed.publish({"topic": "t", "event": 1}, ctx_for(runtime)))["delivered"] == 0


async def test_each_reactor_runtime_has_its_own_bus(runtime: ReactorRuntime) -> None:
    other = ReactorRuntime(ReactorConfig(reactor_id="other"), Registry())
    try:
        waiter = await listening(runtime, "t", timeout_ms=50)
        out = await ed.publish({"topic": "t", "event": 1}, ctx_for(other))
        assert out == {"delivered": 0, "topic": "t", "sequence": 1}
        await fails(waiter, "PF504")
    finally:
        other.close()


# ---------------------------------------------------------------------------------------------
# signal, subscribe


async def test_signal_publishes_on_signal_name(runtime: ReactorRuntime) -> None:
    waiter = await listening(runtime, "signal.*")
    out = await ed.signal({"name": "deploy", "value": {"v": 2}}, ctx_for(runtime))
    assert out["accepted"] is True and out["delivered"] == 1
    assert out["topic"] == "signal.deploy"
    got = await waiter
    assert got["topic"] == "signal.deploy" and got["event"] == {"v": 2}
    bare = await ed.signal({"name": "ping.x"}, ctx_for(runtime))
    assert bare["topic"] == "signal.ping.x" and bare["delivered"] == 0


async def test_subscribe_on_a_reactor_answers_the_first_reply_only(
    runtime: ReactorRuntime,
) -> None:
    out = await ed.subscribe({"topic": "orders.**"}, ctx_for(runtime))
    assert out["topic"] == "orders.**" and out["subscription_id"].startswith("sub_")
    assert out["streaming"] is False and "gateway" in out["note"]
    # not registered: publishing counts only listeners
    assert (await ed.publish({"topic": "orders.x", "event": 1}, ctx_for(runtime)))["delivered"] == 0


@pytest.mark.parametrize(
    ("fn", "data", "field"),
    [
        (ed.publish, {"event": 1}, "topic"),
        (ed.publish, {"topic": "a"}, "event"),
        (ed.publish, {"topic": "a.*", "event": 1}, "topic"),
        (ed.publish, {"topic": "a..b", "event": 1}, "topic"),
        (ed.publish, {"topic": 5, "event": 1}, "topic"),
        (ed.subscribe, {}, "topic"),
        (ed.subscribe, {"topic": "a*"}, "topic"),
        (ed.signal, {}, "name"),
        (ed.signal, {"name": ""}, "name"),
        (ed.signal, {"name": "a b"}, "name"),
        (ed.listen, {}, "topic"),
        (ed.listen, {"topic": "a.**.b"}, "topic"),
        (ed.listen, {"topic": "a", "timeout_ms": 0}, "timeout_ms"),
        (ed.listen, {"topic": "a", "timeout_ms": "5"}, "timeout_ms"),
        (ed.listen, {"topic": "a", "timeout_ms": 3_600_001}, "timeout_ms"),
    ],
)
async def test_bad_input_pf002_names_the_field(
    runtime: ReactorRuntime, fn: Any, data: dict, field: str
) -> None:
    await fails(fn(data, ctx_for(runtime)), "PF002", field)


async def test_bus_elements_need_a_runtime_pf503() -> None:
    await fails(ed.publish({"topic": "a", "event": 1}, ctx_for(None)), "PF503")
    await fails(ed.listen({"topic": "a"}, ctx_for(None)), "PF503")


# ---------------------------------------------------------------------------------------------
# trigger


async def test_trigger_sends_the_packet_without_waiting(runtime: ReactorRuntime) -> None:
    gw = FakeGateway()
    packet = {
        "group": "df",
        "element": "transform",
        "priority": 8,
        "data": {"input": ["a"], "operation": "uppercase"},
    }
    out = await ed.trigger(
        {"event": {"kind": "file_arrived"}, "packet": packet}, ctx_for(runtime, gw)
    )
    assert out["triggered"] is True and out["event"] == {"kind": "file_arrived"}
    assert out["element"] == "df:transform"
    (msg,) = gw.sent
    assert isinstance(msg, Submit) and gw.requests == [] and gw.submits == []
    p = msg.payload.packet
    assert (p.group, p.element, p.priority, p.id) == ("df", "transform", 8, out["packet_id"])
    assert decode_json(p.data) == packet["data"]
    assert p.metadata == {
        "trigger": {"event": {"kind": "file_arrived"}, "triggered_by": "packet_parent"}
    }
    # a given id is kept
    again = await ed.trigger({"packet": {**packet, "id": "mine"}}, ctx_for(runtime, gw))
    assert again["packet_id"] == "mine" and gw.sent[1].payload.packet.id == "mine"


async def test_trigger_needs_the_gateway_pf503(runtime: ReactorRuntime) -> None:
    await fails(
        ed.trigger({"packet": {"group": "cf", "element": "ping"}}, ctx_for(runtime)), "PF503"
    )


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({}, "packet"),
        ({"packet": []}, "packet"),
        ({"packet": {"element": "ping"}}, "packet.group"),
        ({"packet": {"group": "xx", "element": "ping"}}, "packet.group"),
        ({"packet": {"group": "cf", "element": "9ping"}}, "packet.element"),
        ({"packet": {"group": "cf", "element": "ping", "data": "x"}}, "packet.data"),
        ({"packet": {"group": "cf", "element": "ping", "priority": 0}}, "packet.priority"),
    ],
)
async def test_trigger_bad_packet_pf002(runtime: ReactorRuntime, data: dict, field: str) -> None:
    gw = FakeGateway()
    await fails(ed.trigger(data, ctx_for(runtime, gw)), "PF002", field)
    assert gw.sent == []


def test_register_adds_the_five_ed_elements() -> None:
    registry = Registry()
    ed.register(registry)
    assert {s.key for s in registry} == {
        "ed:publish",
        "ed:subscribe",
        "ed:signal",
        "ed:trigger",
        "ed:listen",
    }
    assert all(s.is_async for s in registry), "the bus lives on the event loop"
