"""Elements the gateway serves itself: the event bus (ed:publish, subscribe, signal,
listen), barriers (co:sync) and the affinity matrix (mc:update_affinity, mc:optimize).

They live here because their state must be shared by every client and reactor of the
cluster (DESIGN §1: the event bus sits behind a small interface in the gateway), and
because only the gateway can stream events back to the connection that subscribed.
A packet addressed to a reactor (``destination_id`` naming it, or null for broadcast)
goes to reactors as usual.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from msgspec import Raw

from ..protocol.chemistry import SPECIALIZATIONS, apply_matrix_updates
from ..protocol.errors import GatewayTimeout, PacketFlowError, invalid_field
from ..protocol.events import BarrierTable, EventBus, validate_pattern, validate_topic
from ..protocol.messages import (
    PROTOCOL_VERSION,
    Result,
    ResultPayload,
    Submit,
    decode_json,
    encode,
    encode_json,
)
from ..protocol.packets import effective_timeout_ms
from ..transport import new_message_id, now_ms

if TYPE_CHECKING:
    from .server import Gateway, ReplyTarget

log = logging.getLogger("packetflow.gateway.local")

LOCAL_ELEMENTS = frozenset({
    ("ed", "publish"), ("ed", "subscribe"), ("ed", "signal"), ("ed", "listen"),
    ("co", "sync"), ("mc", "update_affinity"), ("mc", "optimize"),
})  # fmt: skip
# Matrix versions kept for GET /v1/affinity's history (DESIGN §6: every table is bounded).
MATRIX_HISTORY = 50
# mc:optimize proposes a change only from this many observed packets per cell.
OPTIMIZE_MIN_SAMPLES = 20


@dataclass(slots=True, eq=False)
class _Waiter:
    msg: Submit
    target: ReplyTarget
    packet_id: str
    arrived: float
    timer: asyncio.TimerHandle | None = None


class LocalElements:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.bus: EventBus[Any] = EventBus()
        self.barriers: BarrierTable[_Waiter] = BarrierTable()
        self._subscribers: dict[str, _Waiter] = {}  # subscription id -> who streams
        self.history: deque[dict[str, Any]] = deque(maxlen=MATRIX_HISTORY)

    @staticmethod
    def serves(group: str, element: str) -> bool:
        return (group, element) in LOCAL_ELEMENTS

    def handle(self, msg: Submit, target: ReplyTarget, packet_id: str) -> None:
        packet = msg.payload.packet
        try:
            data = decode_json(packet.data)
            handler = getattr(self, f"_{packet.group}_{packet.element}")
            reply = handler(msg, target, packet_id, data)
        except PacketFlowError as err:
            self.gateway.answer_error(target, err, msg.message_id, packet_id, msg.source_id)
            return
        if reply is not None:
            self.reply(msg, target, packet_id, reply)

    def reply(self, msg: Submit, target: ReplyTarget, packet_id: str, data: dict[str, Any],
              status: str = "success") -> None:  # fmt: skip
        result = Result(
            protocol_version=PROTOCOL_VERSION, message_id=new_message_id(), timestamp=now_ms(),
            source_id=self.gateway.gateway_id, destination_id=msg.source_id,
            sequence_id=target.next_seq(), correlation_id=msg.message_id,
            payload=ResultPayload(
                packet_id=packet_id, status=status, data=Raw(encode_json(data)),
                processing_metadata={"reactor_id": self.gateway.gateway_id,
                                     "served_by": "gateway"},
            ),
        )  # fmt: skip
        target.send(encode(result))

    def peer_closed(self, target: ReplyTarget) -> None:
        self.bus.drop_subscriber(target)
        for sub_id in [k for k, w in self._subscribers.items() if w.target is target]:
            del self._subscribers[sub_id]

    # ------------------------------------------------------------------ ED

    def publish(self, topic: str, event: Any) -> int:
        """Deliver ``event`` to every matching subscription; how many got it."""
        deliveries = self.bus.publish(topic, event, now_ms())
        for d in deliveries:
            waiter = self._subscribers.get(d.subscription.subscription_id)
            if waiter is None:
                continue
            if waiter.timer is not None:  # ed:listen: one event, then done
                waiter.timer.cancel()
                self.bus.unsubscribe(d.subscription.subscription_id)
                del self._subscribers[d.subscription.subscription_id]
                self.reply(waiter.msg, waiter.target, waiter.packet_id, d.data)
            else:
                self.reply(waiter.msg, waiter.target, waiter.packet_id, d.data, status="event")
        return len(deliveries)

    def _ed_publish(self, msg: Submit, target: ReplyTarget, packet_id: str,
                    data: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
        topic = validate_topic(data.get("topic"))
        if "event" not in data:
            raise invalid_field("payload.packet.data.event", "any JSON value", "missing",
                                "required_field")  # fmt: skip
        delivered = self.publish(topic, data["event"])
        return {"delivered": delivered, "topic": topic, "sequence": self.bus.sequence}

    def _ed_signal(self, msg: Submit, target: ReplyTarget, packet_id: str,
                   data: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
        name = data.get("name")
        if not isinstance(name, str) or not name:
            raise invalid_field("payload.packet.data.name", "non-empty string",
                                type(name).__name__, "required_field")  # fmt: skip
        topic = validate_topic(f"signal.{name}", "payload.packet.data.name")
        delivered = self.publish(topic, {"name": name, "value": data.get("value")})
        return {"accepted": True, "delivered": delivered, "topic": topic}

    def _ed_subscribe(self, msg: Submit, target: ReplyTarget, packet_id: str,
                      data: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
        pattern = validate_pattern(data.get("topic"))
        sub = self.bus.subscribe(pattern, target, now_ms())
        self._subscribers[sub.subscription_id] = _Waiter(msg, target, packet_id,
                                                         time.monotonic())  # fmt: skip
        return {"subscription_id": sub.subscription_id, "topic": pattern}

    def _ed_listen(self, msg: Submit, target: ReplyTarget, packet_id: str,
                   data: dict[str, Any]) -> None:  # fmt: skip
        pattern = validate_pattern(data.get("topic"))
        timeout_ms = data.get("timeout_ms", msg.payload.packet.timeout_ms)
        if timeout_ms is not None and (
            not isinstance(timeout_ms, int) or isinstance(timeout_ms, bool) or timeout_ms <= 0
        ):
            raise invalid_field("payload.packet.data.timeout_ms", "positive int",
                                type(timeout_ms).__name__, "range")  # fmt: skip
        limit = effective_timeout_ms("ed", "listen", timeout_ms, msg.ttl)
        sub = self.bus.subscribe(pattern, target, now_ms())
        waiter = _Waiter(msg, target, packet_id, time.monotonic())
        self._subscribers[sub.subscription_id] = waiter

        def expire() -> None:
            if self._subscribers.pop(sub.subscription_id, None) is not None:
                self.bus.unsubscribe(sub.subscription_id)
                self.gateway.answer_error(target, GatewayTimeout(
                    f"No event on {pattern!r} within {limit} ms",
                    details={"reason": "timeout", "timeout_ms": limit},
                ), msg.message_id, packet_id, msg.source_id)  # fmt: skip

        waiter.timer = asyncio.get_running_loop().call_later(limit / 1000.0, expire)
        return None

    # ------------------------------------------------------------------ CO

    def _co_sync(self, msg: Submit, target: ReplyTarget, packet_id: str,
                 data: dict[str, Any]) -> None:  # fmt: skip
        barrier = data.get("barrier")
        if not isinstance(barrier, str) or not barrier:
            raise invalid_field("payload.packet.data.barrier", "non-empty string",
                                type(barrier).__name__, "required_field")  # fmt: skip
        parties = data.get("parties")
        if not isinstance(parties, int) or isinstance(parties, bool) or not 1 <= parties <= 10000:
            raise invalid_field("payload.packet.data.parties", "int 1-10000",
                                repr(parties), "range")  # fmt: skip
        timeout_ms = data.get("timeout_ms", msg.payload.packet.timeout_ms)
        limit = effective_timeout_ms("co", "sync", timeout_ms if isinstance(timeout_ms, int)
                                     else None, msg.ttl)  # fmt: skip
        now = time.monotonic()
        waiter = _Waiter(msg, target, packet_id, now)
        released = self.barriers.arrive(barrier, parties, waiter, now)
        if released is None:

            def expire() -> None:
                if self.barriers.expire(barrier, waiter):
                    self.gateway.answer_error(target, GatewayTimeout(
                        f"Barrier {barrier!r} did not reach {parties} parties in {limit} ms",
                        details={"reason": "timeout", "barrier": barrier, "parties": parties},
                    ), msg.message_id, packet_id, msg.source_id)  # fmt: skip

            waiter.timer = asyncio.get_running_loop().call_later(limit / 1000.0, expire)
            return None
        for w in released:
            if w.timer is not None:
                w.timer.cancel()
            self.reply(w.msg, w.target, w.packet_id, {
                "released": True, "barrier": barrier, "parties": parties,
                "waited_ms": round((now - w.arrived) * 1000.0, 3),
            })  # fmt: skip
        return None

    # ------------------------------------------------------------------ MC (§6.4)

    def update_matrix(self, data: dict[str, Any], field_prefix: str) -> dict[str, Any]:
        """Apply §6.4 ``matrix_updates``; the next routing decision uses the new matrix."""
        updates = data.get("matrix_updates")
        if not isinstance(updates, dict) or not updates:
            raise invalid_field(f"{field_prefix}.matrix_updates",
                                "object {group: {specialization: 0.0-1.0}}",
                                type(updates).__name__, "required_field")  # fmt: skip
        for group, row in updates.items():
            if not isinstance(row, dict):
                raise invalid_field(f"{field_prefix}.matrix_updates.{group}", "object",
                                    type(row).__name__, "type")  # fmt: skip
        try:
            matrix = apply_matrix_updates(self.gateway.matrix, updates)
        except ValueError as exc:
            path = str(exc).split(":", 1)[0]
            raise invalid_field(f"{field_prefix}.{path}", "known group/specialization with "
                                "a value in 0.0-1.0", "invalid", "matrix_update",
                                str(exc)) from None  # fmt: skip
        version = data.get("version")
        previous = self.gateway.matrix_version
        if version is None:
            head, _, tail = previous.rpartition(".")
            version = f"{head}.{int(tail) + 1}" if head and tail.isdigit() else f"{previous}.1"
        if not isinstance(version, str):
            raise invalid_field(f"{field_prefix}.version", "string", type(version).__name__,
                                "type")  # fmt: skip
        self.history.append({"version": previous, "matrix": self.gateway.matrix,
                             "replaced_at": now_ms()})  # fmt: skip
        self.gateway.set_matrix(matrix, version)
        log.info("affinity matrix %s -> %s", previous, version)
        return {"version": version, "previous_version": previous, "applied": True,
                "matrix": matrix, "effective_at": now_ms()}  # fmt: skip

    def _mc_update_affinity(self, msg: Submit, target: ReplyTarget, packet_id: str,
                            data: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
        return self.update_matrix(data, "payload.packet.data")

    def _mc_optimize(self, msg: Submit, target: ReplyTarget, packet_id: str,
                     data: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
        """Propose matrix updates from observed latency and errors per group ×
        specialization: a cell whose reactors are faster than the group's average and
        rarely fail moves up by up to 0.05, a slow or failing one down by up to 0.1."""
        apply = data.get("apply", False)
        if not isinstance(apply, bool):
            raise invalid_field("payload.packet.data.apply", "bool", type(apply).__name__,
                                "type")  # fmt: skip
        cells: dict[tuple[str, str], list[tuple[float, float, int]]] = {}
        for (reactor_id, group), observed in self.gateway.learner.observed().items():
            record = self.gateway.registry.get(reactor_id)
            if record is None:
                continue
            for spec in record.specializations:
                cells.setdefault((group, spec), []).append(observed)
        updates: dict[str, dict[str, float]] = {}
        rationale = []
        for (group, spec), rows in sorted(cells.items()):
            samples = sum(n for _, _, n in rows)
            if samples < OPTIMIZE_MIN_SAMPLES or spec not in SPECIALIZATIONS:
                continue
            latency = sum(lat * n for lat, _, n in rows) / samples
            failure = sum(f * n for _, f, n in rows) / samples
            peers = [v for (g, _), vs in cells.items() if g == group for v in vs]
            mean = sum(lat * n for lat, _, n in peers) / max(1, sum(n for _, _, n in peers))
            speed = (mean - latency) / mean if mean > 0 else 0.0
            delta = max(-0.1, min(0.05, 0.05 * speed - 0.2 * failure))
            current = self.gateway.matrix.get(group, {}).get(spec, 0.0)
            proposed = round(max(0.0, min(1.0, current + delta)), 3)
            if abs(proposed - current) >= 0.01:
                updates.setdefault(group, {})[spec] = proposed
                rationale.append(
                    {
                        "group": group,
                        "specialization": spec,
                        "current": current,
                        "proposed": proposed,
                        "avg_latency_ms": round(latency, 3),
                        "error_rate": round(failure, 4),
                        "samples": samples,
                    }
                )
        out: dict[str, Any] = {
            "matrix_updates": updates,
            "rationale": rationale,
            "applied": False,
            "version": self.gateway.matrix_version,
        }
        if apply and updates:
            out.update(self.update_matrix({"matrix_updates": updates}, "payload.packet.data"))
        return out
