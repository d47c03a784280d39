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
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from msgspec import Raw

from ..protocol.chemistry import SPECIALIZATIONS, apply_matrix_updates
from ..protocol.errors import GatewayTimeout, InternalError, PacketFlowError, invalid_field
from ..protocol.events import (
    MAX_SUBSCRIPTIONS_PER_SUBSCRIBER,
    BarrierTable,
    EventBus,
    validate_pattern,
    validate_topic,
)
from ..protocol.fanout import (
    event_body,
    event_frame,
    event_head,
    head_template,
    subscription_head,
)
from ..protocol.matrix_versions import MatrixChange, MatrixVersions
from ..protocol.messages import (
    PROTOCOL_VERSION,
    Result,
    ResultPayload,
    Submit,
    decode_data,
    encode,
    encode_json,
)
from ..protocol.packets import effective_timeout_ms
from ..security.guard import principal_of
from ..transport import MESSAGE_SERIAL_MASK, Peer, new_message_id, now_ms, reserve_message_ids

if TYPE_CHECKING:
    from .server import Gateway, ReplyTarget

log = logging.getLogger("packetflow.gateway.local")

LOCAL_ELEMENTS = frozenset({
    ("ed", "publish"), ("ed", "subscribe"), ("ed", "signal"), ("ed", "listen"),
    ("co", "sync"), ("mc", "update_affinity"), ("mc", "optimize"),
})  # fmt: skip
# mc:optimize proposes a change only from this many observed packets per cell.
OPTIMIZE_MIN_SAMPLES = 20


@dataclass(slots=True, eq=False)
class _Waiter:
    msg: Submit
    target: ReplyTarget
    packet_id: str
    arrived: float
    timer: asyncio.TimerHandle | None = None
    head: bytes = b""  # ed:subscribe: the fixed part of its event envelopes (fanout.py)


class LocalElements:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        per_connection = gateway.config.max_subscriptions_per_connection
        self.bus: EventBus[Any] = EventBus(
            max_per_subscriber=per_connection or MAX_SUBSCRIPTIONS_PER_SUBSCRIBER
        )
        self.barriers: BarrierTable[_Waiter] = BarrierTable()
        self._subscribers: dict[str, _Waiter] = {}  # subscription id -> who streams
        # co:sync waiters at barriers shared with the other gateways (cluster mode).
        self._shared_waiters: dict[_Waiter, asyncio.Task[None]] = {}
        # §6.4: the matrix in force, scheduled updates, history, rollback watch.
        self.versions = MatrixVersions(gateway.matrix, gateway.matrix_version, now_ms())
        self._matrix_timer: asyncio.TimerHandle | None = None

    @staticmethod
    def serves(group: str, element: str) -> bool:
        return (group, element) in LOCAL_ELEMENTS

    def handle(self, msg: Submit, target: ReplyTarget, packet_id: str) -> None:
        packet = msg.payload.packet
        try:
            data = decode_data(packet.data)
            handler = getattr(self, f"_{packet.group}_{packet.element}")
            reply = handler(msg, target, packet_id, data)
        except PacketFlowError as err:
            self.gateway.answer_error(target, err, msg.message_id, packet_id, msg.source_id)
            return
        except Exception:  # a bug here must cost one PF500, not the client's connection
            log.exception("gateway element %s:%s failed on packet %s", packet.group,
                          packet.element, packet_id)  # fmt: skip
            self.gateway.answer_error(target, InternalError(
                f"{packet.group}:{packet.element} failed inside the gateway"
            ), msg.message_id, packet_id, msg.source_id)  # fmt: skip
            return
        if reply is not None:
            self.reply(msg, target, packet_id, reply)

    @property
    def _served_by(self) -> dict[str, str]:
        return {"reactor_id": self.gateway.gateway_id, "served_by": "gateway"}

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

    def waiting(self) -> int:
        """Accepted packets still owed an answer: ed:listen and co:sync waiters."""
        listening = sum(1 for w in self._subscribers.values() if w.timer is not None)
        return listening + self.barriers.waiters() + len(self._shared_waiters)

    def drain(self, err: PacketFlowError) -> None:
        """The gateway stops: answer every ed:listen and co:sync waiter with ``err``."""
        owed = [w for w in self._subscribers.values() if w.timer is not None]
        for sub_id in [k for k, w in self._subscribers.items() if w.timer is not None]:
            self.bus.unsubscribe(sub_id)
            del self._subscribers[sub_id]
        owed.extend(self.barriers.take_all())
        # Cancelled, a shared wait withdraws its arrival (gateway/nats_barriers.py).
        for waiter, task in list(self._shared_waiters.items()):
            task.cancel()
            owed.append(waiter)
        self._shared_waiters.clear()
        for waiter in owed:
            if waiter.timer is not None:
                waiter.timer.cancel()
            self.gateway.answer_error(waiter.target, err, waiter.msg.message_id,
                                      waiter.packet_id, waiter.msg.source_id)  # fmt: skip

    def peer_closed(self, target: ReplyTarget) -> None:
        self.bus.drop_subscriber(target)
        for sub_id in [k for k, w in self._subscribers.items() if w.target is target]:
            del self._subscribers[sub_id]

    # ------------------------------------------------------------------ ED

    def _may_use(self, target: ReplyTarget, topic: str, field: str, verb: str) -> None:
        """DESIGN §8: a principal publishes to and reads only the topics its ``topic:``
        permissions cover (protocol/permissions.py). Raises PF403."""
        err = self.gateway.guard.check_topic(principal_of(target), target, topic, field, verb)
        if err is not None:
            raise err

    def publish(self, topic: str, event: Any) -> int:
        """Deliver ``event`` to every matching subscription; how many got it.

        The event is encoded once and every subscriber's frame shares those bytes
        (protocol/fanout.py). A subscriber whose connection is full loses the event; its
        next event says how many it lost (``data.dropped``)."""
        published_at = now_ms()
        self.gateway.activity.published(topic, published_at)
        sequence, subscriptions = self.bus.fan_out(topic)
        if not subscriptions:
            return 0
        try:
            body = event_body(topic, event, published_at, sequence)
        except TypeError as exc:  # only the gateway's own callers can pass non-JSON
            raise invalid_field("payload.packet.data.event", "any JSON value", "invalid",
                                "json", str(exc)) from None  # fmt: skip
        delivered = 0
        subscribers = self._subscribers
        bus = self.bus
        shared = len(body)
        id_prefix, serial = reserve_message_ids(len(subscriptions))
        template = head_template(id_prefix)
        for i, sub in enumerate(subscriptions):
            sub_id = sub.subscription_id
            waiter = subscribers.get(sub_id)
            if waiter is None:
                continue
            target = waiter.target
            if waiter.timer is not None:  # ed:listen: one event, then done
                waiter.timer.cancel()
                bus.unsubscribe(sub_id)
                del subscribers[sub_id]
                self.reply(waiter.msg, target, waiter.packet_id, {
                    "topic": topic, "event": event, "published_at": published_at,
                    "sequence": sequence, "subscription_id": sub_id,
                })  # fmt: skip
                delivered += 1
                continue
            if type(target) is Peer:
                if target.full:
                    bus.note_dropped(sub_id)
                    continue
                target.seq += 1
                head = template % ((serial + i) & MESSAGE_SERIAL_MASK, target.seq)
                parts = event_frame(head, waiter.head, body, bus.take_dropped(sub_id))
                if len(parts) == 3:
                    target.send_parts(parts, len(head) + len(waiter.head) + shared)
                else:
                    target.send_parts(parts, sum(map(len, parts)))
            else:
                head = event_head(new_message_id(), target.next_seq())
                target.send(b"".join(event_frame(head, waiter.head, body,
                                                 bus.take_dropped(sub_id))))  # fmt: skip
            delivered += 1
        return delivered

    def _ed_publish(self, msg: Submit, target: ReplyTarget, packet_id: str,
                    data: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
        topic = validate_topic(data.get("topic"))
        self._may_use(target, topic, "payload.packet.data.topic", "publish to")
        if "event" not in data:
            raise invalid_field("payload.packet.data.event", "any JSON value", "missing",
                                "required_field")  # fmt: skip
        delivered = self.publish(topic, data["event"])
        self.gateway.cluster.event_published(topic, data["event"])  # to the other gateways
        return {"delivered": delivered, "topic": topic, "sequence": self.bus.sequence}

    def _ed_signal(self, msg: Submit, target: ReplyTarget, packet_id: str,
                   data: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
        name = data.get("name")
        if not isinstance(name, str) or not name:
            raise invalid_field("payload.packet.data.name", "non-empty string",
                                type(name).__name__, "required_field")  # fmt: skip
        topic = validate_topic(f"signal.{name}", "payload.packet.data.name")
        self._may_use(target, topic, "payload.packet.data.name", "publish to")
        event = {"name": name, "value": data.get("value")}
        delivered = self.publish(topic, event)
        self.gateway.cluster.event_published(topic, event)
        return {"accepted": True, "delivered": delivered, "topic": topic}

    def _ed_subscribe(self, msg: Submit, target: ReplyTarget, packet_id: str,
                      data: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
        pattern = validate_pattern(data.get("topic"))
        self._may_use(target, pattern, "payload.packet.data.topic", "subscribe to")
        sub = self.bus.subscribe(pattern, target, now_ms())
        head = subscription_head(
            source_id=self.gateway.gateway_id, destination_id=msg.source_id,
            correlation_id=msg.message_id, packet_id=packet_id,
            subscription_id=sub.subscription_id, processing_metadata=self._served_by,
        )  # fmt: skip
        self._subscribers[sub.subscription_id] = _Waiter(msg, target, packet_id,
                                                         time.monotonic(), head=head)  # fmt: skip
        return {"subscription_id": sub.subscription_id, "topic": pattern}

    def _ed_listen(self, msg: Submit, target: ReplyTarget, packet_id: str,
                   data: dict[str, Any]) -> None:  # fmt: skip
        pattern = validate_pattern(data.get("topic"))
        self._may_use(target, pattern, "payload.packet.data.topic", "subscribe to")
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
        if self.gateway.cluster.barriers is not None:
            task = asyncio.get_running_loop().create_task(
                self._shared_sync(waiter, barrier, parties, limit)
            )
            self._shared_waiters[waiter] = task
            return None
        released = self.barriers.arrive(barrier, parties, waiter, now)
        if released is None:

            def expire() -> None:
                if self.barriers.expire(barrier, waiter):
                    self._barrier_timed_out(waiter, barrier, parties, limit)

            waiter.timer = asyncio.get_running_loop().call_later(limit / 1000.0, expire)
            return None
        for w in released:
            if w.timer is not None:
                w.timer.cancel()
            self._barrier_released(w, barrier, parties, now)
        return None

    async def _shared_sync(self, waiter: _Waiter, barrier: str, parties: int,
                           limit: int) -> None:  # fmt: skip
        """co:sync at a barrier every gateway counts (gateway/shared.py SharedBarriers)."""
        shared = self.gateway.cluster.barriers
        assert shared is not None
        released = False
        err: PacketFlowError | None = None
        try:
            released = await shared.sync(barrier, parties, limit / 1000.0)
        except PacketFlowError as exc:
            err = exc
        except Exception:  # a bug here must cost one PF500, not an unanswered packet
            log.exception("co:sync at shared barrier %r failed on packet %s", barrier,
                          waiter.packet_id)  # fmt: skip
            err = InternalError("co:sync failed inside the gateway")
        if self._shared_waiters.pop(waiter, None) is None:
            return  # drained meanwhile: answered already
        if err is not None:
            msg = waiter.msg
            self.gateway.answer_error(waiter.target, err, msg.message_id, waiter.packet_id,
                                      msg.source_id)  # fmt: skip
        elif released:
            self._barrier_released(waiter, barrier, parties, time.monotonic())
        else:
            self._barrier_timed_out(waiter, barrier, parties, limit)

    def _barrier_released(self, waiter: _Waiter, barrier: str, parties: int,
                          now: float) -> None:  # fmt: skip
        self.reply(waiter.msg, waiter.target, waiter.packet_id, {
            "released": True, "barrier": barrier, "parties": parties,
            "waited_ms": round((now - waiter.arrived) * 1000.0, 3),
        })  # fmt: skip

    def _barrier_timed_out(self, waiter: _Waiter, barrier: str, parties: int,
                           limit: int) -> None:  # fmt: skip
        msg = waiter.msg
        self.gateway.answer_error(waiter.target, GatewayTimeout(
            f"Barrier {barrier!r} did not reach {parties} parties in {limit} ms",
            details={"reason": "timeout", "barrier": barrier, "parties": parties},
        ), msg.message_id, waiter.packet_id, msg.source_id)  # fmt: skip

    # ------------------------------------------------------------------ MC (§6.4)

    def update_matrix(self, data: dict[str, Any], field_prefix: str) -> dict[str, Any]:
        """§6.4 ``matrix_updates``: applied now (the next routing decision uses the new
        matrix) or, with a future ``effective_date``, scheduled (protocol.matrix_versions).
        Raises PF002 naming the field."""
        now = now_ms()
        update, change = self.versions.submit(data, field_prefix, now)
        if change is not None:
            self._carry_out(change)
        self._arm()
        return {
            "version": update.version,
            "previous_version": change.previous_version if change else self.versions.version,
            "applied": change is not None,
            "scheduled": change is None,
            "matrix": self.versions.matrix if change else apply_matrix_updates(
                self.versions.matrix, update.matrix_updates),
            "effective_at": update.effective_at if update.effective_at is not None else now,
            "rollback_policy": update.policy.to_dict(),
        }  # fmt: skip

    def rollback_matrix(self, to_version: str | None, field: str) -> dict[str, Any]:
        """Manual §6.4 rollback (admin): the named earlier version, by default the one the
        current version replaced, is in force again. Raises PF002 naming ``field``."""
        change = self.versions.rollback(to_version, field, now_ms())
        self._carry_out(change)
        self._arm()
        return {"version": change.version, "previous_version": change.previous_version,
                "applied": True, "scheduled": False, "matrix": change.matrix,
                "effective_at": change.at, "reason": change.reason}  # fmt: skip

    def cancel_matrix_update(self, version: str, field: str) -> dict[str, Any]:
        """Withdraw a scheduled §6.4 update before it applies."""
        update = self.versions.cancel(version, field)
        self._arm()
        return {"cancelled": update.to_dict(), "version": self.versions.version}

    def matrix_outcome(self, ok: bool) -> None:
        """A routed packet's outcome, watched by an automatic rollback policy."""
        if self.versions.watch is None:
            return
        change = self.versions.observe(ok, now_ms())
        if change is not None:
            self._carry_out(change)
            self._arm()

    def _carry_out(self, change: MatrixChange) -> None:
        self.gateway.set_matrix(change.matrix, change.version)
        if change.reason == "automatic_rollback":
            log.warning("affinity matrix %s rolled back to %s: success rate %s below %s "
                        "over %s packets", change.previous_version, change.version,
                        change.details.get("success_rate"),
                        change.details.get("success_rate_threshold"),
                        change.details.get("samples"))  # fmt: skip
        else:
            log.info("affinity matrix %s -> %s (%s)", change.previous_version, change.version,
                     change.reason)  # fmt: skip

    def _arm(self) -> None:
        """One timer for the next scheduled update or the end of a rollback window."""
        if self._matrix_timer is not None:
            self._matrix_timer.cancel()
            self._matrix_timer = None
        due = self.versions.next_due()
        if due is None:
            return
        delay = max(0.0, (due - now_ms()) / 1000.0)
        self._matrix_timer = asyncio.get_running_loop().call_later(delay, self._matrix_tick)

    def _matrix_tick(self) -> None:
        self._matrix_timer = None
        for change in self.versions.tick(now_ms()):
            self._carry_out(change)
        self._arm()

    def stop(self) -> None:
        if self._matrix_timer is not None:
            self._matrix_timer.cancel()
            self._matrix_timer = None

    def _mc_update_affinity(self, msg: Submit, target: ReplyTarget, packet_id: str,
                            data: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
        """§6.4 update, or with ``rollback_to`` (a version, or null for the one before)
        and no ``matrix_updates`` a manual rollback."""
        if "rollback_to" in data and "matrix_updates" not in data:
            return self.rollback_matrix(data["rollback_to"], "payload.packet.data.rollback_to")
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
