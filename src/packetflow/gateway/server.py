"""The gateway process: accepts packets from clients, routes each to a reactor by the
DESIGN §5 score, relays the reply, and keeps the registry of reactors.

Every accepted packet ends in exactly one RESULT or ERROR to its submitter: it completes,
fails over to another reactor, or is answered with the reason it could not run.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import random
import signal
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import msgspec
from aiohttp import WSMsgType, web

from ..protocol import failover, routing
from ..protocol.affinity import AffinityLearner
from ..protocol.chemistry import STANDARD_MATRIX, STANDARD_MATRIX_VERSION
from ..protocol.deadlines import DeadlineWheel
from ..protocol.errors import (
    InvalidPacket,
    LowAffinity,
    NoReactorAvailable,
    Overloaded,
    PacketFlowError,
    ServiceUnavailable,
    result_too_large,
)
from ..protocol.health import DEFAULT_HEALTH_CONFIG, HealthConfig
from ..protocol.idempotency import IdempotencyWindow
from ..protocol.lifecycle import PacketEvent, PacketState, advance
from ..protocol.messages import (
    MAX_FRAME_BYTES,
    PROTOCOL_VERSION,
    Coordinate,
    Discover,
    DiscoverPayload,
    Error,
    ErrorPayload,
    FrameError,
    Heartbeat,
    Message,
    Packet,
    Result,
    ResultPayload,
    Submit,
    binary_frame_error,
    decode_frame,
    decode_json,
    encode,
    error_envelope,
)
from ..protocol.queueing import PriorityQueue, QueueEntry, first_among
from ..protocol.relay import admission, client_result, forward_submit, replay_for
from ..protocol.retry import (
    DEFAULT_RETRY_POLICY,
    RetryBudget,
    RetryPolicy,
    next_retry_delay_ms,
    poison_packet_error,
)
from ..transport import Peer, handshake_abandoned, new_message_id, new_packet_id, now_ms
from .links import ReactorLink
from .local import LocalElements
from .metrics import GatewayMetrics
from .monitor import REACTOR_FAULT_CODES, HealthMonitor
from .registry import ReactorRecord, ReactorRegistry

log = logging.getLogger("packetflow.gateway")

SOCKET_MAX_MSG = 4 * MAX_FRAME_BYTES
# A reactor that announces no capacity (neither max_concurrent_packets nor max_capacity)
# is assumed to take this many packets at once, the §4.2.5 example's figure.
DEFAULT_REACTOR_CAPACITY = 50
# Packets waiting for a reactor slot across all capabilities (DESIGN §5); past it, PF004.
DEFAULT_MAX_QUEUE = 100_000
# The gateway's own timer fires this long after a packet's deadline, so the reactor's
# PF005 "timeout" (which says more) normally arrives first.
DEADLINE_SLACK_S = 0.25


# Packet stories kept for GET /v1/packets/{id} (DESIGN §4); oldest evicted first (§6 caps).
MAX_STORIES = 10_000


@dataclass(slots=True)
class PacketStory:
    """Where one packet is in its §5.3 lifecycle, as the gateway sees it."""

    packet_id: str
    group: str
    element: str
    state: PacketState
    accepted_ms: int
    updated_ms: int
    reactor_id: str | None = None
    attempts: int = 0
    error_code: str | None = None

    def view(self) -> dict[str, Any]:
        return {"packet_id": self.packet_id, "group": self.group, "element": self.element,
                "state": self.state.value, "reactor_id": self.reactor_id,
                "attempts": self.attempts, "error_code": self.error_code,
                "accepted_at": self.accepted_ms, "updated_at": self.updated_ms}  # fmt: skip


class ReplyTarget(Protocol):
    def next_seq(self) -> int | None: ...
    def send(self, frame: bytes) -> bool: ...


@dataclass(slots=True, eq=False)
class Flight:
    """One accepted packet from acceptance to its single reply."""

    msg: Submit
    target: ReplyTarget
    packet_id: str
    priority: int  # after DESIGN §4 defaults
    timeout_ms: int  # after DESIGN §4 defaults and caps
    received: float  # time.monotonic()
    received_ms: int
    deadline: float
    ttl_deadline: float | None
    reactor: ReactorRecord | None = None
    gateway_message_id: str | None = None
    choice: routing.Chosen | None = None
    timer: asyncio.TimerHandle | None = None  # a §10.3.1 retry's backoff only
    entry: QueueEntry[Flight] | None = None  # set while it waits in a queue
    deliveries: int = 0  # times a reactor died while running it (poison rule)
    retries: int = 0  # §10.3.1 retries after a retryable ERROR
    # Reactors it was sent to, in order; a tuple since most packets have one or none
    # (an empty set would cost 216 bytes on each of 100,000 queued packets).
    tried: tuple[str, ...] = ()
    dispatched_at: float = 0.0
    story: PacketStory | None = None
    prefer: str | None = None  # a reactor to use when it has a slot (covalent pairs)
    pinned: str | None = None  # destination_id named this reactor: it and no other

    @property
    def packet(self) -> Packet:
        return self.msg.payload.packet


@dataclass(slots=True)
class GatewayConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    gateway_id: str = field(default_factory=lambda: f"gateway-{uuid.uuid4().hex[:8]}")
    max_queue: int = DEFAULT_MAX_QUEUE
    retry: RetryPolicy = DEFAULT_RETRY_POLICY
    health: HealthConfig = DEFAULT_HEALTH_CONFIG
    seed: int | None = None  # jitter RNG seed, for reproducible tests
    static_reactors: tuple[str, ...] = ()
    # §8.1.2 multicast and §8.1.3 DNS-SD listeners (gateway/discovery/).
    multicast: bool = False
    multicast_group: str = "224.0.1.100"
    multicast_port: int = 9999
    dnssd: bool = False
    # Where the molecule journal (SQLite) lives; journal_path overrides the file name.
    data_dir: Path = field(default_factory=lambda: Path("data"))
    journal_path: Path | None = None
    journal_sync: str | None = None  # SQLite synchronous: NORMAL (default) or FULL


class CallbackTarget:
    """Reply target for the gateway's own packets (molecules, gateway-local elements)."""

    def __init__(self, on_frame: Callable[[bytes], None]) -> None:
        self.on_frame = on_frame

    def next_seq(self) -> int | None:
        return None

    def send(self, frame: bytes) -> bool:
        self.on_frame(frame)
        return True


class HttpTarget:
    """Reply target for ``POST /v1/packets``: the reply completes a future."""

    def __init__(self) -> None:
        self.future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def next_seq(self) -> int | None:
        return None

    def send(self, frame: bytes) -> bool:
        if not self.future.done():
            self.future.set_result(frame)
        return True


class Gateway:
    def __init__(self, config: GatewayConfig | None = None) -> None:
        self.config = config or GatewayConfig()
        self.gateway_id = self.config.gateway_id
        self.matrix: dict[str, dict[str, float]] = {g: dict(r) for g, r in STANDARD_MATRIX.items()}
        self.registry = ReactorRegistry(self.matrix)
        self.matrix_version = STANDARD_MATRIX_VERSION
        self.pending: dict[str, Flight] = {}
        self.waiting: dict[tuple[str, str], PriorityQueue[Flight]] = {}
        self.queued = 0
        # One arrival order for every waiting queue, so "oldest first" holds across them.
        self._arrivals = itertools.count()
        self.window: IdempotencyWindow[bytes, tuple[Submit, ReplyTarget]] = IdempotencyWindow()
        self.metrics = GatewayMetrics()
        self.monitor = HealthMonitor(self, self.config.health)
        self.retry_budget = RetryBudget()
        self.rng = random.Random(self.config.seed)
        self.local = LocalElements(self)
        self.learner = AffinityLearner()
        self.stories: OrderedDict[str, PacketStory] = OrderedDict()
        self.deadlines: DeadlineWheel[Flight] = DeadlineWheel()
        self._rr = 0
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._peers: set[Peer] = set()
        self._discovery: list[Any] = []  # listeners with an async close()
        self.port = self.config.port
        self.started = time.monotonic()
        self.stopping = False
        from .coordinator import MoleculeCoordinator

        self.coordinator = MoleculeCoordinator(self)

    # ------------------------------------------------------------------ lifecycle

    def app(self) -> web.Application:
        from .http import add_routes

        app = web.Application(client_max_size=SOCKET_MAX_MSG)
        app.router.add_get("/ws", self._ws)
        add_routes(app, self)
        self.coordinator.add_routes(app)
        return app

    async def start(self) -> None:
        # Each reactor link is a connection held for good: aiohttp's default pool of 100
        # would leave the 101st reactor registered but never linked.
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        self._runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.port, reuse_address=True)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        for url in self.config.static_reactors:
            self._spawn(self._add_static(url))
        if self.config.multicast or self.config.dnssd:
            from .discovery import start_discovery

            self._discovery = await start_discovery(self)
        self.monitor.start()
        self._spawn(self._sweep_deadlines())
        await self.coordinator.start()
        log.info("gateway %s listening on ws://%s:%s/ws", self.gateway_id, self.config.host,
                 self.port)  # fmt: skip

    async def stop(self) -> None:
        self.stopping = True  # from here on, a lost link is expected and nothing is re-dialled
        for record in self.registry:
            if record.link is not None:
                record.link.closing = True
        await self.coordinator.stop()
        await self.monitor.stop()
        for listener in self._discovery:
            await listener.close()
        for task in list(self._tasks):
            task.cancel()
        for record in self.registry:
            if record.link is not None:
                record.link.closing = True
                await record.link.close()
        for peer in list(self._peers):
            await peer.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def serve_forever(self) -> None:
        from ..runner import announce_ready

        await self.start()
        announce_ready("gateway", self.gateway_id, f"ws://{self.config.host}:{self.port}/ws")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await self.stop()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ client frames

    async def _ws(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(max_msg_size=SOCKET_MAX_MSG, decode_text=False,
                                   compress=True, heartbeat=None)  # fmt: skip
        try:
            stream = await ws.prepare(request)
        except ConnectionResetError:  # the client left during the handshake
            return handshake_abandoned()
        peer = Peer(ws, f"gateway<-{request.remote}", stream)
        self._peers.add(peer)
        try:
            async for frame in ws:
                if frame.type == WSMsgType.TEXT:
                    self.on_frame(peer, frame.data)
                elif frame.type == WSMsgType.BINARY:
                    self._answer_frame_error(peer, binary_frame_error())
                elif frame.type == WSMsgType.ERROR:
                    break
        finally:
            self._peers.discard(peer)
            self.local.peer_closed(peer)
            await peer.close()
        return ws

    def on_frame(self, peer: Peer, data: bytes) -> None:
        for item in decode_frame(data):
            if isinstance(item, Submit):
                self.accept(item, peer)
            elif isinstance(item, FrameError):
                self._answer_frame_error(peer, item)
            elif isinstance(item, Discover):
                self._on_discover(peer, item)
            elif isinstance(item, Heartbeat):
                record = self.registry.get(item.payload.reactor_id)
                if record is not None:
                    self.on_heartbeat(record, item)
            elif isinstance(item, Coordinate):
                self.coordinator.on_message(peer, item)
            elif isinstance(item, Result | Error):
                log.debug("ignoring %s from client %s", type(item).__name__, peer.name)
            else:
                self.answer_error(peer, InvalidPacket(
                    f"This gateway does not serve {type(item).__name__.lower()} messages yet",
                    field="message_type", expected_type="submit, discover or heartbeat",
                    received_type=type(item).__name__.lower(), validation_rule="not_served",
                ), item.message_id, None, item.source_id)  # fmt: skip

    def _answer_frame_error(self, peer: Peer, item: FrameError) -> None:
        self.answer_error(peer, item.error, item.message_id, item.packet_id)

    def answer_error(
        self,
        target: ReplyTarget,
        err: PacketFlowError,
        correlation_id: str | None,
        packet_id: str | None,
        destination_id: str | None = None,
    ) -> bytes:
        self.metrics.errors.labels(err.code).inc()
        frame = encode(error_envelope(
            err, message_id=new_message_id(), now_ms=now_ms(), source_id=self.gateway_id,
            correlation_id=correlation_id, packet_id=packet_id,
            destination_id=destination_id if destination_id is not None else msgspec.UNSET,
            sequence_id=target.next_seq(),
        ))  # fmt: skip
        target.send(frame)
        return frame

    # ------------------------------------------------------------------ packets

    def accept(self, msg: Submit, target: ReplyTarget, *, prefer: str | None = None) -> None:
        """Admit a client's SUBMIT: validate, apply defaults, route or queue."""
        packet = msg.payload.packet
        packet_id = packet.id or new_packet_id()
        now = time.monotonic()
        seen = self.window.lookup(packet_id, now)
        if seen is not None:
            if seen.outcome is None:
                seen.join((msg, target))
            else:
                target.send(_readdressed(seen.outcome, msg, target))
            return
        if msg.ttl == 0:
            self.answer_error(target, failover.ttl_expired(packet_id), msg.message_id, packet_id,
                              msg.source_id)  # fmt: skip
            return
        destination = msg.destination_id
        pinned = self.registry.get(destination) if isinstance(destination, str) else None
        if destination is None:
            self._broadcast(msg, target, packet_id)
            return
        if pinned is None and self.local.serves(packet.group, packet.element):
            self.local.handle(msg, target, packet_id)
            return
        if not self.registry.supports(packet.group, packet.element):
            self.answer_error(target, NoReactorAvailable(
                f"No available reactors for {packet.group}:{packet.element}",
                context={"packet_id": packet_id, "requested_group": packet.group,
                         "requested_element": packet.element, "available_reactors": 0,
                         "total_reactors": len(self.registry)},
            ), msg.message_id, packet_id, msg.source_id)  # fmt: skip
            return
        priority, timeout_ms = admission(msg)
        ttl_deadline = now + msg.ttl / 1000.0 if msg.ttl is not None else None
        flight = Flight(
            msg=msg, target=target, packet_id=packet_id, priority=priority,
            timeout_ms=timeout_ms, received=now, received_ms=now_ms(),
            deadline=now + timeout_ms / 1000.0,
            ttl_deadline=ttl_deadline, prefer=prefer,
            pinned=pinned.reactor_id if pinned is not None else None,
        )  # fmt: skip
        self.window.begin(packet_id, now)
        self.metrics.accepted.inc()
        flight.story = self._new_story(packet_id, packet.group, packet.element)
        self.dispatch(flight)

    def submit_internal(
        self, msg: Submit, on_frame: Callable[[bytes], None], *, prefer: str | None = None
    ) -> None:
        """Submit a packet on the gateway's own behalf; ``on_frame`` gets the encoded
        RESULT or ERROR. ``prefer`` names a reactor to use when it has a free slot."""
        self.accept(msg, CallbackTarget(on_frame), prefer=prefer)

    def _new_story(self, packet_id: str, group: str, element: str) -> PacketStory:
        ms = now_ms()
        story = PacketStory(packet_id, group, element, PacketState.VALIDATED, ms, ms)
        self.stories[packet_id] = story
        self.stories.move_to_end(packet_id)
        if len(self.stories) > MAX_STORIES:
            self.stories.popitem(last=False)
        return story

    @staticmethod
    def _advance(flight: Flight, *events: PacketEvent) -> None:
        story = flight.story
        if story is None:
            return
        for event in events:
            story.state = advance(story.packet_id, story.state, event)
        story.updated_ms = now_ms()

    def dispatch(self, flight: Flight) -> None:
        packet = flight.packet
        if flight.pinned is not None:
            self._dispatch_pinned(flight)
            return
        if flight.prefer is not None and not flight.tried:
            record = self.registry.get(flight.prefer)
            if (
                record is not None
                and record.link is not None
                and record.health in routing.ROUTABLE
                and record.in_flight < record.capacity
                and (packet.group, packet.element) in record.capabilities
            ):
                self._send(flight, record, routing.Chosen(
                    record.reactor_id, 0.0, 0.0, record.load_ratio, "preferred_reactor"
                ))  # fmt: skip
                return
        prefs = flight.msg.payload.routing_preferences
        candidates = self.registry.candidates(packet.group, packet.element)
        if flight.tried:
            prefs = failover.avoiding_tried(prefs, flight.tried, (r.reactor_id for r in candidates))
        monitor = self.monitor
        for _ in range(8):
            self._rr += 1
            decision = self.registry.table.decide(
                packet.group, packet.element, priority=flight.priority,
                preferences=prefs, round_robin=self._rr,
            )  # fmt: skip
            if not isinstance(decision, routing.Chosen):
                break
            record = self.registry.get(decision.reactor_id)
            assert record is not None
            if monitor.admits(record):  # a half-open breaker admits a few trials only
                self._send(flight, record, decision)
                return
            prefs = failover.avoiding_tried(
                prefs, {record.reactor_id}, (r.reactor_id for r in candidates)
            )
        if isinstance(decision, routing.Chosen | routing.MustWait):
            self._enqueue(flight)
        elif isinstance(decision, routing.BelowMinimumAffinity):
            self._fail(flight, LowAffinity(
                f"No reactor for {packet.group}:{packet.element} reaches minimum_affinity "
                f"{decision.minimum} (best {decision.best_affinity:.2f})",
                field="payload.routing_preferences.minimum_affinity",
                context={"best_affinity": decision.best_affinity,
                         "minimum_affinity": decision.minimum},
            ))  # fmt: skip
        else:
            self._fail(flight, NoReactorAvailable(
                f"No available reactors for {packet.group}:{packet.element}: {decision.reason}",
                context={"requested_group": packet.group, "requested_element": packet.element,
                         "total_reactors": len(self.registry)},
            ))  # fmt: skip

    def _dispatch_pinned(self, flight: Flight) -> None:
        """destination_id named a reactor: send it there (its own queue absorbs a burst)."""
        packet = flight.packet
        record = self.registry.get(flight.pinned or "")
        if record is None or (packet.group, packet.element) not in record.capabilities:
            self._fail(flight, NoReactorAvailable(
                f"Reactor {flight.pinned} is not registered or does not serve "
                f"{packet.group}:{packet.element}",
                field="destination_id", context={"destination_id": flight.pinned},
            ))  # fmt: skip
            return
        if record.link is None or record.health not in routing.ROUTABLE:
            self._fail(flight, ServiceUnavailable(
                f"Reactor {record.reactor_id} is {record.health}", field="destination_id",
                retry_delay_ms=1000, context={"destination_id": record.reactor_id},
            ))  # fmt: skip
            return
        self._send(flight, record, routing.Chosen(
            record.reactor_id, 0.0, 0.0, record.load_ratio, "destination_id"
        ))  # fmt: skip

    def _broadcast(self, msg: Submit, target: ReplyTarget, packet_id: str) -> None:
        """destination_id null (§4.1): run the packet on every routable reactor that
        supports it and answer one RESULT: {"results": {reactor_id: data},
        "errors": {reactor_id: error payload}}."""
        packet = msg.payload.packet
        records = [r for r in self.registry.candidates(packet.group, packet.element)
                   if r.link is not None and r.health in routing.ROUTABLE]  # fmt: skip
        if not records:
            self.answer_error(target, NoReactorAvailable(
                f"No routable reactor supports {packet.group}:{packet.element} for a broadcast",
                context={"requested_group": packet.group, "requested_element": packet.element},
            ), msg.message_id, packet_id, msg.source_id)  # fmt: skip
            return
        started = time.monotonic()
        results: dict[str, Any] = {}
        errors: dict[str, Any] = {}
        waiting = {r.reactor_id for r in records}

        def collect(reactor_id: str, frame: bytes) -> None:
            from ..protocol.messages import decode_one

            reply = decode_one(frame)
            if isinstance(reply, Result):
                results[reactor_id] = decode_json(reply.payload.data)
            elif isinstance(reply, Error):
                errors[reactor_id] = msgspec.to_builtins(reply.payload)
            waiting.discard(reactor_id)
            if not waiting:
                self.local.reply(msg, target, packet_id, {
                    "results": results, "errors": errors, "reactors": len(records),
                    "duration_ms": round((time.monotonic() - started) * 1000.0, 3),
                })  # fmt: skip

        for record in records:
            child = msgspec.structs.replace(
                msg, message_id=new_message_id(), destination_id=record.reactor_id,
                payload=msgspec.structs.replace(msg.payload, packet=msgspec.structs.replace(
                    packet, id=f"{packet_id}@{record.reactor_id}")),
            )  # fmt: skip
            self.accept(child, CallbackTarget(functools.partial(collect, record.reactor_id)))

    def _send(self, flight: Flight, record: ReactorRecord, choice: routing.Chosen) -> None:
        now = time.monotonic()
        link = record.link
        assert link is not None and link.peer is not None
        ttl_left = None
        if flight.ttl_deadline is not None:
            ttl_left = int((flight.ttl_deadline - now) * 1000)
            if ttl_left <= 0:
                self._fail(flight, failover.ttl_expired(flight.packet_id))
                return
        timeout_left = int((flight.deadline - now) * 1000)
        if timeout_left <= 0:
            self._fail_deadline(flight)
            return
        message_id = new_message_id()
        forwarded = forward_submit(
            flight.msg, packet_id=flight.packet_id, priority=flight.priority,
            message_id=message_id, now_ms=now_ms(),
            source_id=self.gateway_id, destination_id=record.reactor_id,
            sequence_id=link.peer.next_seq(), ttl_ms=ttl_left, timeout_ms=timeout_left,
            affinity_score=choice.score, load_factor=choice.load_ratio,
            selection_reason=choice.reason,
        )  # fmt: skip
        flight.reactor = record
        flight.choice = choice
        flight.gateway_message_id = message_id
        if record.reactor_id not in flight.tried:
            flight.tried += (record.reactor_id,)
        flight.dispatched_at = now
        if flight.story is not None:
            flight.story.reactor_id = record.reactor_id
            flight.story.attempts += 1
            self._advance(flight, PacketEvent.ROUTED, PacketEvent.STARTED)
        self.registry.add_in_flight(record, 1)
        record.flights.add(flight)
        self.pending[message_id] = flight
        self.deadlines.add(flight, flight.deadline + DEADLINE_SLACK_S)
        if not link.peer.send(encode(forwarded)):
            self._reroute(flight, "reactor connection closed while sending")
        else:
            if record.routed_counter is None:  # labels() costs a lookup: once per reactor
                record.routed_counter = self.metrics.routed.labels(record.reactor_id)
            record.routed_counter.inc()

    def _enqueue(self, flight: Flight) -> None:
        packet = flight.packet
        key = (packet.group, packet.element)
        if self.queued >= self.config.max_queue:
            self._fail(flight, Overloaded(
                f"Gateway queue is full ({self.queued} packets waiting)",
                retry_delay_ms=1000, context={"queue_depth": self.queued},
            ))  # fmt: skip
            return
        queue = self.waiting.get(key)
        if queue is None:
            queue = self.waiting[key] = PriorityQueue(self.config.max_queue, self._arrivals)
        flight.entry = queue.push(flight, flight.priority)
        self._advance(flight, PacketEvent.ENQUEUED)
        self.queued += 1
        self.metrics.queue_depth.set(self.queued)
        # On the deadline wheel, as packets in flight are: an event-loop timer each would
        # be a third of a queued packet's memory.
        limit = flight.deadline if flight.ttl_deadline is None else min(
            flight.deadline, flight.ttl_deadline
        )  # fmt: skip
        self.deadlines.add(flight, limit)

    def _unqueue(self, flight: Flight) -> bool:
        if flight.entry is None:
            return False
        packet = flight.packet
        key = (packet.group, packet.element)
        queue = self.waiting.get(key)
        removed = queue is not None and queue.remove(flight.entry)
        if removed:
            self.queued -= 1
            self.metrics.queue_depth.set(self.queued)
            self.deadlines.discard(flight)
            if queue is not None and not len(queue):
                del self.waiting[key]
        flight.entry = None
        return removed

    def _queued_expired(self, flight: Flight) -> None:
        if not self._unqueue(flight):
            return
        packet = flight.packet
        self._fail(flight, failover.no_slot_in_time(
            flight.packet_id, packet.group, packet.element,
            ttl_bound=failover.ttl_is_binding(flight.ttl_deadline, flight.deadline),
            queued_ms=round((time.monotonic() - flight.received) * 1000),
            queue_depth=self.queued,
        ))  # fmt: skip

    def _drain_waiting(self, record: ReactorRecord) -> None:
        """A slot on ``record`` freed: hand it the best waiting packet it can run."""
        while (
            self.waiting
            and record.in_flight < record.capacity
            and record.health in routing.ROUTABLE
        ):
            key = first_among(self.waiting, record.capabilities)
            if key is None:
                return
            flight = self.waiting[key].peek()
            assert flight is not None
            self._unqueue(flight)
            self.dispatch(flight)

    # ------------------------------------------------------------------ replies

    def on_reactor_message(self, record: ReactorRecord, item: Message | FrameError) -> None:
        if isinstance(item, Result | Error):
            if self.monitor.on_reply(record, item):
                return
            flight = self.pending.pop(item.correlation_id or "", None)
            if flight is None:
                return  # late reply for a packet already answered (timeout, failover)
            self._land(flight)
            self._learn(flight, record, isinstance(item, Result) or
                        item.payload.error_code not in REACTOR_FAULT_CODES)  # fmt: skip
            if isinstance(item, Result):
                self.monitor.packet_finished(record, None)
                self._complete(flight, record, item.payload)
            else:
                self._reactor_error(flight, record, item.payload)
            self._drain_waiting(record)
        elif isinstance(item, Heartbeat):
            self.on_heartbeat(record, item)
        elif isinstance(item, FrameError):
            log.warning("bad frame from reactor %s: %s", record.reactor_id, item.error)

    def _reactor_error(self, flight: Flight, record: ReactorRecord, payload: ErrorPayload) -> None:
        """A reactor answered ERROR: try elsewhere, retry with backoff, or relay it."""
        code = payload.error_code
        self.monitor.packet_finished(record, code)
        action = failover.on_reactor_error(code, payload.retry_possible,
                                           self._has_alternative(flight))  # fmt: skip
        if action == "reroute":
            self._retrying(flight)
            self.dispatch(flight)  # "not here": another reactor at once
        elif action == "retry" and self._schedule_retry(flight, code):
            return
        else:
            self._relay_error(flight, payload)

    def _schedule_retry(self, flight: Flight, code: str) -> bool:
        """§10.3.1 exponential backoff with jitter, within the packet's deadline and the
        DESIGN §6 retry budget; the retry avoids the reactors already tried."""
        now = time.monotonic()
        delay = next_retry_delay_ms(code, flight.retries + 1, flight.deadline, now, self.rng,
                                    self.config.retry)  # fmt: skip
        if delay is None or not self.retry_budget.try_acquire(len(self.pending)):
            return False
        flight.retries += 1
        self.metrics.retries.inc()
        self._retrying(flight)

        def fire() -> None:
            self.retry_budget.release()
            flight.timer = None
            self.dispatch(flight)

        flight.timer = asyncio.get_running_loop().call_later(delay / 1000.0, fire)
        return True

    def set_matrix(self, matrix: dict[str, dict[str, float]], version: str) -> None:
        """§6.4: the next routing decision uses ``matrix``."""
        self.matrix = matrix
        self.matrix_version = version
        self.registry.set_matrix(matrix)

    def _learn(self, flight: Flight, record: ReactorRecord, ok: bool) -> None:
        """§6.3.2: fold the observed latency and outcome into the reactor's adjustment."""
        group = flight.packet.group
        latency_ms = (time.monotonic() - flight.dispatched_at) * 1000.0
        value = self.learner.observe(record.reactor_id, group, latency_ms, ok)
        if value != record.adjustments.get(group, 0.0):
            self.registry.set_adjustment(record, group, value)

    def decay_adjustments(self, now: float) -> None:
        for (reactor_id, group), value in self.learner.decay(now).items():
            record = self.registry.get(reactor_id)
            if record is not None:
                self.registry.set_adjustment(record, group, value)

    def slot_freed(self, record: ReactorRecord) -> None:
        """A reactor has room (a reply, or it became routable): feed it waiting packets."""
        self._drain_waiting(record)

    def _land(self, flight: Flight) -> None:
        """The reactor is done with ``flight`` (answered, lost, or timed out)."""
        self.deadlines.discard(flight)
        if flight.timer is not None:
            flight.timer.cancel()
            flight.timer = None
        record = flight.reactor
        if record is not None and flight in record.flights:  # landing twice counts once
            record.flights.discard(flight)
            self.registry.add_in_flight(record, -1)
        if flight.gateway_message_id is not None:
            self.pending.pop(flight.gateway_message_id, None)
            flight.gateway_message_id = None

    def _complete(self, flight: Flight, record: ReactorRecord, payload: ResultPayload) -> None:
        now = time.monotonic()
        reply = client_result(
            payload, client_message_id=flight.msg.message_id,
            client_source_id=flight.msg.source_id, message_id=new_message_id(),
            now_ms=now_ms(), source_id=self.gateway_id, sequence_id=flight.target.next_seq(),
            total_ms=(now - flight.received) * 1000.0, reactor_id=record.reactor_id,
            affinity_score=flight.choice.affinity if flight.choice else 0.0,
        )  # fmt: skip
        frame = encode(reply)
        if len(frame) > MAX_FRAME_BYTES:
            # Past DESIGN §3's limit the client would refuse the frame and wait for a reply
            # that never comes; it gets the reason instead (our reactors never send one).
            self._fail(flight, result_too_large(record.reactor_id, len(frame), MAX_FRAME_BYTES))
            return
        self._deliver(flight, frame, replayable=True)
        self._advance(flight, PacketEvent.SUCCEEDED)
        self.metrics.completed.inc()
        self.metrics.latency.observe(now - flight.received)

    def _relay_error(self, flight: Flight, payload: ErrorPayload) -> None:
        reply = Error(
            protocol_version=PROTOCOL_VERSION, message_id=new_message_id(), timestamp=now_ms(),
            source_id=self.gateway_id, destination_id=flight.msg.source_id,
            sequence_id=flight.target.next_seq(), correlation_id=flight.msg.message_id,
            payload=payload,
        )  # fmt: skip
        self.metrics.errors.labels(payload.error_code).inc()
        self._deliver(flight, encode(reply), replayable=not payload.retry_possible)
        self._story_failed(flight, payload.error_code)

    def _fail(self, flight: Flight, err: PacketFlowError) -> None:
        """Answer the submitter with ``err``; the packet is over."""
        self._land(flight)
        frame = self.answer_error(flight.target, err, flight.msg.message_id, flight.packet_id,
                                  flight.msg.source_id)  # fmt: skip
        self._finish_window(flight, frame, replayable=not err.retryable)
        self._story_failed(flight, err.code)

    def _story_failed(self, flight: Flight, code: str) -> None:
        story = flight.story
        if story is not None and story.state is not PacketState.FAILED:
            self._advance(flight, PacketEvent.FAILED)
            story.error_code = code

    def _retrying(self, flight: Flight) -> None:
        if flight.story is not None and flight.story.state is not PacketState.RETRIED:
            if flight.story.state is not PacketState.FAILED:
                self._advance(flight, PacketEvent.FAILED)
            self._advance(flight, PacketEvent.RETRY_SCHEDULED)

    def _deliver(self, flight: Flight, frame: bytes, *, replayable: bool) -> None:
        flight.target.send(frame)
        self._finish_window(flight, frame, replayable=replayable)

    def _finish_window(self, flight: Flight, frame: bytes, *, replayable: bool) -> None:
        waiters = self.window.finish(flight.packet_id, frame, replayable=replayable,
                                     now=time.monotonic())  # fmt: skip
        for msg, target in waiters:
            target.send(_readdressed(frame, msg, target))

    async def _sweep_deadlines(self) -> None:
        """Answer every in-flight packet whose reactor missed its deadline (one sweep per
        wheel tick instead of one event-loop timer per packet)."""
        while True:
            await asyncio.sleep(self.deadlines.resolution_s)
            for flight in self.deadlines.expired(time.monotonic()):
                if flight.entry is not None:
                    self._queued_expired(flight)
                else:
                    self._deadline_passed(flight)

    def _deadline_passed(self, flight: Flight) -> None:
        if flight.gateway_message_id is None:
            return
        reactor = flight.reactor
        self._land(flight)
        if reactor is not None:
            self._drain_waiting(reactor)
        self._fail_deadline(flight)

    def _fail_deadline(self, flight: Flight) -> None:
        self._fail(flight, failover.no_reply_in_time(
            flight.packet_id,
            ttl_bound=failover.ttl_is_binding(flight.ttl_deadline, flight.deadline),
            timeout_ms=flight.timeout_ms,
            reactor_id=flight.reactor.reactor_id if flight.reactor else None,
        ))  # fmt: skip

    def _has_alternative(self, flight: Flight) -> bool:
        packet = flight.packet
        return any(
            r.reactor_id not in flight.tried
            for r in self.registry.candidates(packet.group, packet.element)
        )

    def _reroute(self, flight: Flight, reason: str) -> None:
        """The reactor running ``flight`` is gone: fail over, or fail as a poison packet."""
        self._land(flight)
        flight.deliveries += 1
        poison = poison_packet_error(flight.packet_id, flight.deliveries, self.config.retry)
        if poison is not None:
            self._fail(flight, poison)
            return
        log.info("failing over packet %s: %s", flight.packet_id, reason)
        self.metrics.failovers.inc()
        self._retrying(flight)
        self.dispatch(flight)

    # ------------------------------------------------------------------ reactors

    def _on_discover(self, peer: Peer, msg: Discover) -> None:
        kind = msg.payload.discovery_type
        if kind == "announce":
            record = self.register(msg.payload, source="direct")
            peer.remote_id = record.reactor_id
            # An acknowledgement only: the registry (large with many reactors, and sent at
            # every periodic re-announce) is what a `query` is for.
            self._reply_discover(peer, msg, accepted=True, registry=False)
        elif kind == "query":
            self._reply_discover(peer, msg, accepted=None)
        elif kind == "withdraw":
            info = msg.payload.reactor_info
            leaving = self.registry.get(info.reactor_id) if info is not None else None
            if leaving is not None:
                log.info("reactor %s withdrew", leaving.reactor_id)
                self.depart(leaving)
            self._reply_discover(peer, msg, accepted=leaving is not None)
        else:
            self.answer_error(peer, InvalidPacket(
                f"discovery_type {kind!r} is answered, not sent, to a gateway",
                field="payload.discovery_type", expected_type="announce, query or withdraw",
                received_type=kind, validation_rule="enum",
            ), msg.message_id, None, msg.source_id)  # fmt: skip

    def _reply_discover(
        self, peer: Peer, msg: Discover, *, accepted: bool | None, registry: bool = True
    ) -> None:
        reply = Discover(
            protocol_version=PROTOCOL_VERSION, message_id=new_message_id(),
            timestamp=now_ms(), source_id=self.gateway_id, destination_id=msg.source_id,
            sequence_id=peer.next_seq(), correlation_id=msg.message_id,
            payload=DiscoverPayload(
                discovery_type="response", accepted=accepted,
                reactors=[r.summary() for r in self.registry] if registry else None,
            ),
        )  # fmt: skip
        peer.send(encode(reply))

    def register(self, payload: DiscoverPayload, *, source: str) -> ReactorRecord:
        """Add or refresh a reactor from its announce and make sure a link to it is up."""
        info = payload.reactor_info
        if info is None:
            raise InvalidPacket("An announce needs reactor_info", field="payload.reactor_info",
                                expected_type="object", received_type="missing",
                                validation_rule="required_field")  # fmt: skip
        capabilities = frozenset((p.group, p.element) for p in payload.supported_packets)
        constraints = payload.operational_constraints or {}
        capacity = int(
            constraints.get("max_concurrent_packets")
            or info.max_capacity
            or DEFAULT_REACTOR_CAPACITY
        )
        record = self.registry.upsert(ReactorRecord(
            reactor_id=info.reactor_id, specializations=tuple(info.specializations),
            implementation=info.implementation, capabilities=capabilities,
            capacity=max(1, capacity), endpoints=dict(info.endpoints), locality=info.locality,
            version=info.version, source=source, last_seen=time.monotonic(),
            announce=msgspec.to_builtins(payload),
        ))  # fmt: skip
        if (record.link is None or not record.link.up) and not record.dialing and not self.stopping:
            record.dialing = True
            self._spawn(self._dial(record))
        return record

    async def _dial(self, record: ReactorRecord) -> None:
        url = record.endpoints.get("websocket")
        if not url or self._session is None:
            log.warning("reactor %s announced no websocket endpoint", record.reactor_id)
            return
        link = ReactorLink(self, record, url)
        delay = 0.05
        try:
            for _attempt in range(8):
                try:
                    await link.open(self._session)
                    break
                except (OSError, aiohttp.ClientError, TimeoutError) as exc:
                    log.info("dialling reactor %s at %s failed: %s", record.reactor_id, url,
                             exc)  # fmt: skip
                    await asyncio.sleep(delay)
                    delay *= 2
            else:
                return
        finally:
            record.dialing = False
        if self.registry.get(record.reactor_id) is not record:
            await link.close()
            return
        old, record.link = record.link, link
        if old is not None and old is not link:
            old.closing = True
            await old.close()
        log.info("reactor %s linked (%s)", record.reactor_id, ",".join(record.specializations))
        self.monitor.linked(record)

    def on_link_lost(self, record: ReactorRecord, link: ReactorLink) -> None:
        """DESIGN §2: losing the work connection marks the reactor failed at once and
        fails over its in-flight packets."""
        if record.link is not link or link.closing or self.stopping:
            return
        record.link = None
        self.monitor.connection_lost(record)
        log.warning("reactor %s connection lost; failing over %d packets", record.reactor_id,
                    len(record.flights))  # fmt: skip
        for flight in list(record.flights):
            self._reroute(flight, f"reactor {record.reactor_id} connection lost")

    def depart(self, record: ReactorRecord) -> None:
        """The reactor left (withdrew, or silent past departure_after_s): drop it and fail
        over whatever it still had."""
        if self.registry.remove(record.reactor_id) is None:
            return
        self.monitor.forget(record.reactor_id)
        self.learner.forget(record.reactor_id)
        link, record.link = record.link, None
        if link is not None:
            link.closing = True
            self._spawn(link.close())
        for flight in list(record.flights):
            self._reroute(flight, f"reactor {record.reactor_id} departed")

    def on_heartbeat(self, record: ReactorRecord, msg: Heartbeat) -> None:
        payload = msg.payload
        self.monitor.heartbeat(record, msg)
        record.last_seen = time.monotonic()
        record.last_heartbeat = msgspec.to_builtins(payload)
        if payload.health_status is not None:
            load = max(0.0, min(1.0, payload.health_status.load_factor))
            if load != record.reported_load:
                self.registry.set_reported_load(record, load)

    async def _add_static(self, url: str) -> None:
        """A reactor from the static list: ask it to describe itself, then register it."""
        from ..client import AsyncClient

        client = AsyncClient(url, source_id=self.gateway_id)
        delay = 0.1
        while True:
            try:
                async with client:
                    reply = await client.request(Discover(
                        **client.envelope_fields(),
                        payload=DiscoverPayload(discovery_type="query"),
                    ), 10.0)  # fmt: skip
                break
            except (OSError, PacketFlowError, aiohttp.ClientError, TimeoutError) as exc:
                log.info("static reactor %s not reachable: %s", url, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
                client = AsyncClient(url, source_id=self.gateway_id)
        if isinstance(reply, Discover):
            self.register(reply.payload, source="static")

    # ------------------------------------------------------------------ views

    def status(self) -> dict[str, Any]:
        return {
            "status": "healthy",
            "gateway_id": self.gateway_id,
            "protocol_version": PROTOCOL_VERSION,
            "uptime_seconds": round(time.monotonic() - self.started, 1),
            "reactors": len(self.registry),
            "healthy_reactors": sum(1 for r in self.registry if r.health == "healthy"),
            "in_flight": len(self.pending),
            "queued": self.queued,
            "affinity_matrix_version": self.matrix_version,
        }


def _readdressed(frame: bytes, msg: Submit, target: ReplyTarget) -> bytes:
    """A stored reply answering the repeated SUBMIT ``msg`` (DESIGN §4 idempotency)."""
    return replay_for(frame, msg, message_id=new_message_id(), now_ms=now_ms(),
                      sequence_id=target.next_seq())  # fmt: skip
