"""The ed (event driven) elements of DESIGN §10 as a reactor serves them: publish, subscribe,
signal, trigger and listen.

Where the bus lives: the cluster's event bus is in the gateway, which serves ed:publish,
ed:subscribe, ed:signal and ed:listen itself whenever a client submits them without a
``destination_id`` naming a reactor. What is here serves a reactor used directly (no
gateway) or addressed explicitly: each reactor runtime has its own ``EventBus``
(``protocol.events``), attached lazily and kept as long as the runtime lives.

On a reactor, events reach ed:listen waiters only. ed:subscribe answers its first reply
(``{subscription_id, topic}``) but cannot stream events afterwards: a handler returns one
result and has no way to the requesting connection after that, so reactor-side
subscriptions are not registered on the bus and ``delivered`` counts only the listeners an
event woke. Streaming subscriptions go through the gateway (docs/elements.md).

ed:trigger needs the gateway: it submits the packet through the reactor's gateway
connection without waiting for its result.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar
from weakref import WeakKeyDictionary

from ...protocol.chemistry import GROUPS
from ...protocol.errors import GatewayTimeout, ServiceUnavailable
from ...protocol.events import EventBus, validate_pattern, validate_topic
from ...protocol.packets import (
    ELEMENT_NAME,
    LISTEN_CAP_MS,
    PACKET_ID_MAX_LEN,
    PRIORITY_MAX,
    PRIORITY_MIN,
)
from ...transport import new_packet_id, now_ms
from ..context import Context
from ..registry import Registry
from .contract import bad, data_path, missing

if TYPE_CHECKING:
    from ..runtime import ReactorRuntime

# ---------------------------------------------------------------------------------------------
# Limits (STYLE 5)

# A waiting handler gives up this much before its packet's deadline, so it answers its own
# PF504 rather than being cancelled by the runtime (which would answer PF005 "timeout").
DEADLINE_MARGIN_S = 0.05
SIGNAL_PREFIX = "signal."

Listener = asyncio.Future[dict[str, Any]]
S = TypeVar("S")
T = TypeVar("T")


@dataclass(slots=True)
class EventState:
    """One reactor's event bus; its subscribers are ed:listen waiters (futures)."""

    bus: EventBus[Listener] = field(default_factory=lambda: EventBus(id_prefix="listen_"))


_STATES: WeakKeyDictionary[ReactorRuntime, EventState] = WeakKeyDictionary()


def runtime_of(ctx: Context) -> ReactorRuntime:
    """The runtime serving this packet; PF503 when the handler runs without one."""
    if ctx.runtime is None:
        raise ServiceUnavailable(
            f"{ctx.group}:{ctx.element} needs a running reactor",
            details={"reason": "no_runtime"},
        )
    return ctx.runtime


def per_runtime(
    table: WeakKeyDictionary[ReactorRuntime, S], ctx: Context, make: Callable[[], S]
) -> S:
    """The serving runtime's entry in ``table`` (state kept as long as the runtime lives),
    made by ``make`` on first use; PF503 when the handler runs without a runtime."""
    rt = runtime_of(ctx)
    state = table.get(rt)
    if state is None:
        state = table[rt] = make()
    return state


def event_state(ctx: Context) -> EventState:
    """This reactor's event bus, created on first use."""
    return per_runtime(_STATES, ctx, EventState)


# ---------------------------------------------------------------------------------------------
# Shared validation (also used by co.py)


def require(data: dict[str, Any], name: str) -> Any:
    if name not in data:
        raise missing(name)
    return data[name]


def opt_int(
    data: dict[str, Any], name: str, lo: int, hi: int, path: str | None = None
) -> int | None:
    """An optional integer field in lo..hi (None when absent); PF002 naming it."""
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise bad(path or name, f"integer between {lo} and {hi}", value, "range")
    return value


@dataclass(frozen=True, slots=True)
class PacketSpec:
    """A packet described inside another packet's data (ed:trigger, co:gather, ...)."""

    group: str
    element: str
    data: dict[str, Any]
    priority: int | None = None
    timeout_ms: int | None = None
    packet_id: str | None = None

    @property
    def key(self) -> str:
        return f"{self.group}:{self.element}"


def parse_packet(value: Any, path: str = "packet") -> PacketSpec:
    """``{group, element, data?, priority?, timeout_ms?, id?}``; PF002 naming the bad field
    under ``payload.packet.data.<path>``."""
    if not isinstance(value, dict):
        raise bad(path, "object {group, element, data}", value, "type")
    group = value.get("group")
    if group is None:
        raise missing(f"{path}.group")
    if group not in GROUPS:
        raise bad(
            f"{path}.group",
            " | ".join(GROUPS),
            group,
            "enum",
            f"'{data_path(path + '.group')}' must be one of {', '.join(GROUPS)}",
        )
    element = value.get("element")
    if element is None:
        raise missing(f"{path}.element")
    if not isinstance(element, str) or not ELEMENT_NAME.match(element):
        raise bad(f"{path}.element", "element name matching [a-z][a-z0-9_]*", element, "pattern")
    data = value.get("data", {})
    if not isinstance(data, dict):
        raise bad(f"{path}.data", "object", data, "type")
    priority = opt_int(value, "priority", PRIORITY_MIN, PRIORITY_MAX, f"{path}.priority")
    timeout_ms = opt_int(value, "timeout_ms", 1, LISTEN_CAP_MS, f"{path}.timeout_ms")
    packet_id = value.get("id")
    if packet_id is not None and (
        not isinstance(packet_id, str) or not 1 <= len(packet_id) <= PACKET_ID_MAX_LEN
    ):
        raise bad(f"{path}.id", f"string of 1 to {PACKET_ID_MAX_LEN} chars", packet_id, "length")
    return PacketSpec(group, element, data, priority, timeout_ms, packet_id)


def wait_budget_s(ctx: Context, timeout_ms: int | None) -> float:
    """How long a waiting handler may wait: its own ``timeout_ms`` and the packet's deadline
    (less DEADLINE_MARGIN_S), whichever is sooner."""
    budget = ctx.remaining_s() - DEADLINE_MARGIN_S
    if timeout_ms is not None:
        budget = min(budget, timeout_ms / 1000.0)
    return max(0.0, budget)


async def wait_within(waiter: asyncio.Future[T], budget_s: float) -> T | None:
    """``await waiter`` for at most ``budget_s``: its result, or None when the budget ran out
    first (a result set just as the timer fired still counts). The caller cleans up."""
    try:
        async with asyncio.timeout(budget_s) as scope:
            return await waiter
    except TimeoutError:
        if waiter.done() and not waiter.cancelled():  # resolved as the timer fired
            return waiter.result()
        if not scope.expired():
            raise
        return None


# ---------------------------------------------------------------------------------------------
# Handlers


def deliver(state: EventState, topic: str, event: Any) -> tuple[int, int]:
    """Publish on this reactor's bus and wake every matching listener (each one-shot):
    (listeners woken, sequence)."""
    bus = state.bus
    delivered = 0
    for delivery in bus.publish(topic, event, now_ms()):
        waiter = delivery.subscription.subscriber
        bus.unsubscribe(delivery.subscription.subscription_id)
        if not waiter.done():
            waiter.set_result(delivery.data)
            delivered += 1
    return delivered, bus.sequence


async def publish(data: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """ed:publish {topic, event} → {delivered, topic, sequence}. PF002 naming ``topic`` (a
    bad topic, or a wildcard in it) or a missing ``event``."""
    topic = validate_topic(require(data, "topic"), data_path("topic"))
    event = require(data, "event")
    delivered, sequence = deliver(event_state(ctx), topic, event)
    return {"delivered": delivered, "topic": topic, "sequence": sequence}


async def subscribe(data: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """ed:subscribe {topic} on a reactor: validates the pattern and answers the first reply.
    Events are not streamed from a reactor (module doc); subscribe through the gateway."""
    pattern = validate_pattern(require(data, "topic"), data_path("topic"))
    runtime_of(ctx)
    return {
        "subscription_id": f"sub_{uuid.uuid4().hex}",
        "topic": pattern,
        "streaming": False,
        "note": "events stream through the gateway; on a reactor use ed:listen",
    }


async def signal(data: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """ed:signal {name, value?} → publishes ``value`` on ``signal.<name>`` →
    {accepted: true, delivered, topic, sequence}."""
    name = require(data, "name")
    validate_topic(name, data_path("name"))
    topic = SIGNAL_PREFIX + name
    validate_topic(topic, data_path("name"))
    delivered, sequence = deliver(event_state(ctx), topic, data.get("value"))
    return {"accepted": True, "delivered": delivered, "topic": topic, "sequence": sequence}


async def trigger(data: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """ed:trigger {event?, packet} → submits ``packet`` through the gateway without waiting
    for its result → {triggered: true, packet_id, event, element}. The packet carries
    ``metadata.trigger`` = {event, triggered_by}. PF503 without a gateway; PF502 when the
    gateway connection is down."""
    spec = parse_packet(require(data, "packet"))
    event = data.get("event")
    gateway = ctx.require_gateway()
    packet_id = spec.packet_id or new_packet_id()
    msg = gateway.build_submit(
        spec.group,
        spec.element,
        spec.data,
        priority=spec.priority,
        timeout_ms=spec.timeout_ms,
        packet_id=packet_id,
        metadata={"trigger": {"event": event, "triggered_by": ctx.packet_id}},
    )
    await gateway.send(msg)
    return {"triggered": True, "packet_id": packet_id, "event": event, "element": spec.key}


async def listen(data: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """ed:listen {topic, timeout_ms?} → the next event on ``topic`` (a pattern) published on
    this reactor: {topic, event, published_at, sequence, subscription_id}. PF504 at
    ``timeout_ms`` or just before the packet's own deadline, whichever comes first."""
    pattern = validate_pattern(require(data, "topic"), data_path("topic"))
    timeout_ms = opt_int(data, "timeout_ms", 1, LISTEN_CAP_MS)
    state = event_state(ctx)
    budget = wait_budget_s(ctx, timeout_ms)
    waiter: Listener = asyncio.get_running_loop().create_future()
    sub = state.bus.subscribe(pattern, waiter, now_ms(), field=data_path("topic"))
    try:
        event = await wait_within(waiter, budget)
    finally:
        state.bus.unsubscribe(sub.subscription_id)
    if event is None:
        waited = round(budget * 1000)
        raise GatewayTimeout(
            f"No event on {pattern!r} within {waited} ms",
            details={"reason": "listen_timeout", "topic": pattern, "waited_ms": waited},
        )
    return event


def register(registry: Registry) -> None:
    el = registry.element
    el(
        "ed",
        "publish",
        data={"topic": "topic (dot-separated)", "event": "any JSON"},
        result="delivered, topic, sequence",
    )(publish)
    el(
        "ed",
        "subscribe",
        data={"topic": "pattern ('*' one segment, trailing '**' the rest)"},
        result="subscription_id, topic (events stream through the gateway)",
    )(subscribe)
    el(
        "ed",
        "signal",
        data={"name": "signal name", "value": "any JSON (optional)"},
        result="accepted, delivered, topic",
    )(signal)
    el(
        "ed",
        "trigger",
        data={
            "event": "any JSON (optional)",
            "packet": "{group, element, data, priority?, timeout_ms?, id?}",
        },
        result="triggered, packet_id, event",
    )(trigger)
    el(
        "ed",
        "listen",
        data={"topic": "pattern", "timeout_ms": "int (optional)"},
        result="the next event: topic, event, published_at, sequence",
    )(listen)


__all__ = [
    "EventState",
    "PacketSpec",
    "deliver",
    "event_state",
    "listen",
    "parse_packet",
    "per_runtime",
    "publish",
    "register",
    "runtime_of",
    "signal",
    "subscribe",
    "trigger",
    "wait_budget_s",
    "wait_within",
]
