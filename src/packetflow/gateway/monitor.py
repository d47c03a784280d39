"""Health monitoring (§9): probes each linked reactor with cf:ping and cf:health on the §9.2
schedule, feeds probes, heartbeats, packet outcomes and connection losses to each
reactor's ``protocol.health.HealthTracker``, and applies the transitions it returns.

The decisions are the tracker's; this module only keeps the clock and the sockets.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..protocol.breaker import BreakerState, BreakerTransition, CircuitBreaker
from ..protocol.chemistry import Group
from ..protocol.errors import counts_against_reactor
from ..protocol.health import (
    CheckKind,
    ConnectionLost,
    HealthConfig,
    HealthInput,
    HealthTracker,
    HeartbeatReceived,
    PacketFinished,
    ProbeFailed,
    ProbeSucceeded,
    TimerFired,
    reported_by_health_check,
    reported_by_resource_check,
    reported_in_heartbeat,
)
from ..protocol.messages import (
    PROTOCOL_VERSION,
    Error,
    Heartbeat,
    Packet,
    Result,
    Submit,
    SubmitPayload,
    decode_json,
    encode,
)
from ..protocol.routing import ROUTABLE
from ..runner import cancel_and_wait, every
from ..transport import new_message_id, now_ms

if TYPE_CHECKING:
    from .registry import ReactorRecord
    from .server import Gateway

log = logging.getLogger("packetflow.gateway.health")


@dataclass(slots=True)
class _Probe:
    record: ReactorRecord
    kind: CheckKind
    sent: float
    timer: asyncio.TimerHandle


class HealthMonitor:
    def __init__(self, gateway: Gateway, config: HealthConfig) -> None:
        self.gateway = gateway
        self.config = config
        self.trackers: dict[str, HealthTracker] = {}
        self.breakers: dict[str, CircuitBreaker] = {}
        self.probes: dict[str, _Probe] = {}
        self._next_due: dict[tuple[str, CheckKind], float] = {}
        self._task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        for probe in self.probes.values():
            probe.timer.cancel()
        self.probes.clear()

    def tracker(self, record: ReactorRecord) -> HealthTracker:
        tracker = self.trackers.get(record.reactor_id)
        if tracker is None:
            tracker = self.trackers[record.reactor_id] = HealthTracker(
                record.reactor_id, time.monotonic(), self.config
            )
            self.breakers[record.reactor_id] = CircuitBreaker(record.reactor_id)
        return tracker

    def forget(self, reactor_id: str) -> None:
        self.trackers.pop(reactor_id, None)
        self.breakers.pop(reactor_id, None)
        # By key, not by scanning every schedule: a scan cost ~9 ms per departure with
        # 10,000 reactors (benchmarks/scaling.py).
        for kind in CheckKind:
            self._next_due.pop((reactor_id, kind), None)

    def observe(self, record: ReactorRecord, event: HealthInput) -> None:
        self._report_successes(record, event.now)
        self._observe(record, event)

    def _observe(self, record: ReactorRecord, event: HealthInput) -> None:
        transition = self.tracker(record).observe(event)
        if transition is None:
            return
        self.gateway.registry.set_health(record, transition.new.value)
        level = logging.WARNING if transition.new.value in ("failed", "degraded") else logging.INFO
        log.log(level, "reactor %s: %s -> %s (%s)", record.reactor_id, transition.old.value,
                transition.new.value, transition.reason)  # fmt: skip
        if transition.new.value in ROUTABLE:
            self.gateway.slot_freed(record)

    # ------------------------------------------------------------------ inputs

    def linked(self, record: ReactorRecord) -> None:
        """A work connection is up: probe at once (unknown/failed → healthy/recovery)."""
        self.tracker(record)
        self._probe(record, CheckKind.PING)

    def connection_lost(self, record: ReactorRecord) -> None:
        self.observe(record, ConnectionLost(time.monotonic()))
        breaker = self.breakers.get(record.reactor_id)
        if breaker is not None:
            self._breaker_moved(record, breaker.record_failure(time.monotonic()))

    def heartbeat(self, record: ReactorRecord, msg: Heartbeat) -> None:
        now = time.monotonic()
        self.observe(record, HeartbeatReceived(now))
        self.observe(record, reported_in_heartbeat(now, msg.payload))

    def packet_finished(
        self, record: ReactorRecord, error_code: str | None, retry_possible: bool = False
    ) -> None:
        """A packet routed to the reactor was answered; only the reactor's own failures
        (``counts_against_reactor``) count against its health and breaker."""
        fault = counts_against_reactor(error_code, retry_possible)
        if not fault and record.health == "healthy":
            breaker = self.breakers.get(record.reactor_id)
            if breaker is None or breaker.state is BreakerState.CLOSED:
                # A success on a healthy reactor with a closed breaker only adds to their
                # counts: counted here, told to both before anything else they hear and at
                # every tick, instead of an event through both state machines per packet.
                record.unreported_ok += 1
                return
        now = time.monotonic()
        self.observe(record, PacketFinished(now, ok=not fault))
        breaker = self.breakers.get(record.reactor_id)
        if breaker is not None:
            moved = breaker.record_failure(now) if fault else breaker.record_success(now)
            self._breaker_moved(record, moved)

    def _report_successes(self, record: ReactorRecord, now: float) -> None:
        n = record.unreported_ok
        if not n:
            return
        record.unreported_ok = 0
        self._observe(record, PacketFinished(now, ok=True, count=n))
        breaker = self.breakers.get(record.reactor_id)
        if breaker is not None:
            self._breaker_moved(record, breaker.record_success(now, n))

    def _breaker_moved(self, record: ReactorRecord, moved: BreakerTransition | None) -> None:
        """An open breaker takes the reactor out of routing; half-open lets trials in."""
        if moved is None:
            return
        log.warning("reactor %s: circuit %s -> %s (%s)", record.reactor_id, moved.old.value,
                    moved.new.value, moved.reason)  # fmt: skip
        self.gateway.registry.set_excluded(record, moved.new is BreakerState.OPEN)
        if moved.new is not BreakerState.OPEN:
            self.gateway.slot_freed(record)

    def circuit_open(self, record: ReactorRecord) -> bool:
        breaker = self.breakers.get(record.reactor_id)
        return breaker is not None and breaker.state is BreakerState.OPEN

    def admits(self, record: ReactorRecord) -> bool:
        """The §10.3.2 breaker's say; a half-open breaker admits a few trial packets."""
        breaker = self.breakers.get(record.reactor_id)
        if breaker is None or breaker.state is BreakerState.CLOSED:
            return True  # closed admits every call: no clock needed
        return breaker.allow(time.monotonic())

    # ------------------------------------------------------------------ probes

    def on_reply(self, record: ReactorRecord, msg: Result | Error) -> bool:
        """A reply to one of our probes? Then it is consumed here."""
        probe = self.probes.pop(msg.correlation_id or "", None)
        if probe is None:
            return False
        probe.timer.cancel()
        now = time.monotonic()
        latency_ms = (now - probe.sent) * 1000.0
        if isinstance(msg, Error):
            self.observe(record, ProbeFailed(now, msg.payload.error_code, probe.kind))
            return True
        self.observe(record, ProbeSucceeded(now, latency_ms, probe.kind))
        if probe.kind is CheckKind.HEALTH:
            self._health_result(record, msg, now)
        elif probe.kind is CheckKind.RESOURCES:
            self._resources_result(record, msg, now)
        return True

    def _health_result(self, record: ReactorRecord, msg: Result, now: float) -> None:
        reported = reported_by_health_check(now, decode_json(msg.payload.data))
        if reported is not None:
            self.observe(record, reported)

    def _resources_result(self, record: ReactorRecord, msg: Result, now: float) -> None:
        reported = reported_by_resource_check(now, decode_json(msg.payload.data))
        if reported is not None:
            self.observe(record, reported)

    def _probe(self, record: ReactorRecord, kind: CheckKind) -> None:
        link = record.link
        if link is None or link.peer is None or link.peer.closed:
            return
        group, element, data = PROBES[kind]
        if (group, element) not in record.capabilities and kind in OPTIONAL_PROBES:
            return  # not a mandatory element (§12.1.1): its heartbeat stands in for it
        schedule = self.config.schedule(kind)
        timeout_s = schedule.timeout_s
        if kind in OPTIONAL_PROBES:
            timeout_s = max(timeout_s, MIN_OPTIONAL_PROBE_TIMEOUT_S)
        message_id = new_message_id()
        msg = Submit(
            protocol_version=PROTOCOL_VERSION, message_id=message_id, timestamp=now_ms(),
            source_id=self.gateway.gateway_id, destination_id=record.reactor_id,
            sequence_id=link.peer.next_seq(),
            payload=SubmitPayload(packet=Packet(
                group=group, element=element, id=f"probe_{message_id}", priority=10,
                timeout_ms=max(1, int(timeout_s * 1000)), data=_raw(data),
            )),
        )  # fmt: skip
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        timer = loop.call_later(timeout_s, self._probe_timed_out, message_id)
        self.probes[message_id] = _Probe(record, kind, now, timer)
        link.peer.send(encode(msg))

    def _probe_timed_out(self, message_id: str) -> None:
        probe = self.probes.pop(message_id, None)
        if probe is not None:
            self.observe(probe.record, ProbeFailed(time.monotonic(), "timeout", probe.kind))

    async def _run(self) -> None:
        """One loop drives every schedule: it wakes at a fraction of the shortest interval.
        A failing tick is logged and the next one runs (runner.every)."""
        tick = max(0.01, min(1.0, self.config.ping.interval_s / 4, self.config.ping.timeout_s))
        await every(tick, self.tick, "health monitor")

    def tick(self) -> None:
        now = time.monotonic()
        self.gateway.decay_adjustments(now)
        for record in self.gateway.registry:
            try:
                self._tick_reactor(record, now)
            except Exception:  # one reactor's bad tick must not skip the others
                log.exception("health tick for reactor %s failed", record.reactor_id)

    def _tick_reactor(self, record: ReactorRecord, now: float) -> None:
        self._report_successes(record, now)
        adjustments = record.capacity_adjustments
        if adjustments is not None and adjustments.scheduled_maintenance is not None:
            self.gateway.refresh_capacity(record)  # §8.3: the window opens and closes in time
        breaker = self.breakers.get(record.reactor_id)
        if breaker is not None:  # open → half-open happens with time (§10.3.2)
            self._breaker_moved(record, breaker.poll(now))
        tracker = self.tracker(record)
        self.observe(record, TimerFired(now))
        if tracker.departed(now):
            log.warning("reactor %s silent for %.1f s: removing it", record.reactor_id,
                        now - tracker.last_seen)  # fmt: skip
            self.gateway.depart(record)
            return
        for kind in CheckKind:  # every row of the §9.2 schedule
            key = (record.reactor_id, kind)
            due = self._next_due.get(key)
            if due is None:
                self._next_due[key] = now + self.config.schedule(kind).interval_s
            elif now >= due:
                self._next_due[key] = now + self.config.schedule(kind).interval_s
                if kind is CheckKind.MOLECULAR:
                    self._molecular_check(record, now)
                else:
                    self._probe(record, kind)

    def _molecular_check(self, record: ReactorRecord, now: float) -> None:
        """§9.2 Molecular Validation: judged by the gateway from the bonds of the molecule
        packets the reactor ran since the last check (protocol/chemical_health.py)."""
        reason = self.gateway.coordinator.history.molecular_check(record.reactor_id)
        if reason is not None:
            log.warning("reactor %s failed molecular validation: %s", record.reactor_id, reason)
            self.observe(record, ProbeFailed(now, reason, CheckKind.MOLECULAR))


# What each probed row of §9.2 sends: (group, element, data). Molecular Validation sends
# nothing: the gateway judges it from molecule history (``_molecular_check``).
PROBES: dict[CheckKind, tuple[Group, str, bytes]] = {
    CheckKind.PING: ("cf", "ping", b'{"echo_data":"health_check"}'),
    CheckKind.HEALTH: ("cf", "health", b"{}"),
    CheckKind.RESOURCES: ("rm", "monitor", b"{}"),
    CheckKind.CHEMICAL: ("mc", "analyze", b'{"analysis_type":"chemical_health"}'),
}
# Rows whose element a reactor need not serve (§12.1.1 mandates cf:ping and cf:health
# only): a reactor that does not announce it is not probed for it, and its HEARTBEAT's
# figures (resource_utilization, chemical_metrics) are what the gateway has instead.
OPTIONAL_PROBES = frozenset({CheckKind.RESOURCES, CheckKind.CHEMICAL})
# Their timeout never goes below this, however far a test scales the schedule down: a
# reactor's first rm:monitor samples the machine's CPU for 0.1 s (rm.CPU_SAMPLE_MIN_S).
MIN_OPTIONAL_PROBE_TIMEOUT_S = 1.0


def _raw(data: bytes) -> Any:
    from msgspec import Raw

    return Raw(data)
