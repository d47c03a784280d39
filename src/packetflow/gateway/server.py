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
from typing import Any, Final, Protocol

import aiohttp
import msgspec
from aiohttp import WSCloseCode, WSMsgType, web

from ..framing import PfapWebSocketResponse, socket_limit, too_big_answer
from ..protocol import failover, routing
from ..protocol.addressing import Broadcast, Pinned, resolve_destination
from ..protocol.affinity import AffinityLearner
from ..protocol.announce import capabilities_of, reactor_info_of
from ..protocol.authentication import plaintext_bind_refusal
from ..protocol.capacity import effective_capacity
from ..protocol.chemistry import STANDARD_MATRIX, STANDARD_MATRIX_VERSION
from ..protocol.deadlines import DeadlineWheel
from ..protocol.errors import (
    InternalError,
    InvalidPacket,
    LowAffinity,
    NoReactorAvailable,
    Overloaded,
    PacketFlowError,
    PermissionDenied,
    ServiceUnavailable,
    counts_against_reactor,
    result_too_large,
)
from ..protocol.health import DEFAULT_HEALTH_CONFIG, HealthConfig
from ..protocol.idempotency import IdempotencyWindow
from ..protocol.lifecycle import LIFECYCLE, PacketEvent, PacketState, advance
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
    stored_compact,
)
from ..protocol.permissions import (
    REACTOR_ANNOUNCE,
    REACTOR_HEARTBEAT,
    REACTOR_MONITOR,
    REACTOR_WITHDRAW_OTHER,
)
from ..protocol.principals import GATEWAY, Principal
from ..protocol.queueing import PriorityQueue, QueueEntry, first_among
from ..protocol.reactor_access import (
    check_announced_endpoint,
    check_reactor_message,
    is_reactor_only,
)
from ..protocol.relay import admission, client_result, forward_submit, replay_for
from ..protocol.retry import (
    DEFAULT_RETRY_POLICY,
    RetryBudget,
    RetryPolicy,
    next_retry_delay_ms,
    poison_packet_error,
)
from ..protocol.service_health import GatewayCounts, assess
from ..request_log import server_logger
from ..runner import every
from ..security.gatekeeper import OPEN_PATHS, Gatekeeper, SecurityConfig, ws_closer
from ..security.gatekeeper import principal_of as authenticated_principal
from ..security.guard import Guard, principal_of, scoped_id
from ..transport import (
    DEFAULT_HANDSHAKE_TIMEOUT_S,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_OUTBOX_BYTES,
    DEFAULT_MAX_REQUESTS_PER_CONNECTION,
    DEFAULT_PING_INTERVAL_S,
    DEFAULT_PONG_TIMEOUT_S,
    DEFAULT_SLOW_CONSUMER_S,
    Peer,
    connection_budget,
    handshake_abandoned,
    new_message_id,
    new_packet_id,
    now_ms,
    raise_fd_limit,
    set_pong_timeout,
)
from .activity import Activity
from .links import ReactorLink
from .local import LocalElements
from .metrics import GatewayMetrics
from .monitor import HealthMonitor
from .registry import ReactorRecord, ReactorRegistry
from .shared import ClusterState, Standalone

log = logging.getLogger("packetflow.gateway")

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

# SIGTERM drain: how long accepted packets get to finish before they are answered PF503
# (the reactor's own drain default, reactor/runtime.py; Kubernetes allows 30 s in all).
DEFAULT_DRAIN_GRACE_S = 10.0
# §5.3's two moves of a dispatch (routed, then started) as one lookup per packet, read
# off the table itself: the states a dispatch leaves from, and where it lands.
_ROUTED_AND_STARTED: Final[dict[PacketState, PacketState]] = {
    state: LIFECYCLE[moves[PacketEvent.ROUTED]][PacketEvent.STARTED]
    for state, moves in LIFECYCLE.items()
    if PacketEvent.ROUTED in moves and PacketEvent.STARTED in LIFECYCLE[moves[PacketEvent.ROUTED]]
}
# How often the drain looks whether work is left (no event per landing on the hot path).
DRAIN_POLL_S = 0.05
# retry_delay_ms of the PF503 a draining gateway answers: about a restart's time, §4.2.3's
# example figure.
DRAIN_RETRY_DELAY_MS = 1000
# Bounds on the goodbye to each client: writing its outbox, then the close handshake.
CLIENT_FLUSH_S = 5.0
CLIENT_CLOSE_S = 2.0


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
    score: float | None = None  # the DESIGN §5 routing score of its latest dispatch
    route: str | None = None  # why that reactor (routing.Chosen.reason)

    def view(self) -> dict[str, Any]:
        return {"packet_id": self.packet_id, "group": self.group, "element": self.element,
                "state": self.state.value, "reactor_id": self.reactor_id,
                "attempts": self.attempts, "error_code": self.error_code,
                "accepted_at": self.accepted_ms, "updated_at": self.updated_ms}  # fmt: skip


class FrameSink(Protocol):
    def next_seq(self) -> int | None: ...
    def send(self, frame: bytes) -> bool: ...


class ReplyTarget(FrameSink, Protocol):
    # Who is asking (protocol/principals.py); authorization reads it in ``accept``.
    principal: Principal | None


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
    arrival: int | None = None  # its place in the gateway's queue, kept when put back
    retries: int = 0  # §10.3.1 retries after a retryable ERROR
    # Reactors it was sent to, in order; a tuple since most packets have one or none
    # (an empty set would cost 216 bytes on each of 100,000 queued packets).
    tried: tuple[str, ...] = ()
    dispatched_at: float = 0.0
    story: PacketStory | None = None
    prefer: str | None = None  # a reactor to use when it has a slot (covalent pairs)
    pinned: str | None = None  # destination_id named this reactor: it and no other
    # The id the window and the reactor know it by when it differs from packet_id
    # (another principal's packet: security.guard.scoped_id).
    wire_id: str | None = None
    counted: bool = False  # holds one of its connection's request slots until answered

    @property
    def packet(self) -> Packet:
        return self.msg.payload.packet

    @property
    def suspect(self) -> bool:
        """Runs isolated, one per reactor (DESIGN §6, failover.blame_for_death); changes
        only while it is on no reactor (deliveries count after it landed)."""
        return failover.is_suspect(self.deliveries)


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
    # After SIGTERM, accepted packets get this long to finish (--drain-grace).
    drain_grace_s: float = DEFAULT_DRAIN_GRACE_S
    # After a restart, how long a resumed molecule packet waits for the reactor it was
    # running on to re-announce, so that reactor answers it from its idempotency window
    # instead of another running it again (coordinator.py).
    resume_grace_s: float = 5.0
    # DESIGN §8 authorization and audit (security/): the TOML roles/ABAC file, the audit
    # log (default DATA_DIR/security/audit.log), and whether every submit is audited.
    security_config: Path | None = None
    audit_log: Path | None = None
    audit_stdout: bool = False
    audit_submits: bool | None = None  # None: as the security config says (default off)
    journal_key_file: Path | None = None  # AES-256-GCM at rest for the molecule journal
    # DESIGN §8: authentication settings (keys live under data_dir/security).
    security: SecurityConfig | None = None
    # §8.1.2/§8.1.3 announcements are unauthenticated: ignored unless the operator says.
    trust_multicast: bool = False
    # What the gateway presents (X-PacketFlow-Dial-Token) to reactors it did not learn
    # from an authenticated announce: the static list, trusted multicast/DNS-SD.
    reactor_token: str | None = None
    # DESIGN §8: a non-loopback bind without TLS is refused unless this is set.
    insecure: bool = False
    # Bounded connections (transport.py says why each default): unsent bytes per client
    # connection, how long it may stay full, unanswered packets per connection, event
    # subscriptions per connection, client connections, the HTTP/upgrade handshake, and
    # §12.4.1 ping/pong on client connections and reactor links.
    max_outbox_bytes: int = DEFAULT_MAX_OUTBOX_BYTES
    slow_consumer_s: float = DEFAULT_SLOW_CONSUMER_S
    max_requests_per_connection: int = DEFAULT_MAX_REQUESTS_PER_CONNECTION
    max_subscriptions_per_connection: int | None = None  # None: protocol/events.py default
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    handshake_timeout_s: float = DEFAULT_HANDSHAKE_TIMEOUT_S
    ping_interval_s: float = DEFAULT_PING_INTERVAL_S
    pong_timeout_s: float = DEFAULT_PONG_TIMEOUT_S
    # DESIGN §3 / §12.4.1 max_frame_size of client frames, replies and HTTP bodies.
    max_frame_bytes: int = MAX_FRAME_BYTES
    # Several gateways as one cluster (gateway/shared.py): the NATS server(s) to share
    # state through, and how to reach them; None is the embedded single-gateway mode.
    cluster_url: str | None = None
    cluster_creds: Path | None = None  # a NATS .creds file (JWT + nkey)
    cluster_ca: Path | None = None  # TLS to NATS: the CA, and a client cert for mTLS
    cluster_cert: Path | None = None
    cluster_key: Path | None = None
    cluster_lease_s: float = 10.0  # molecule ownership lease (protocol/lease.py)
    # Copies JetStream keeps of each bucket: 3 on a 3-server NATS cluster survives the loss
    # of one server; 1 for a single server (the buckets are made with it, once).
    cluster_replicas: int = 1


def make_cluster(config: GatewayConfig) -> ClusterState:
    """The shared state of ``config``: standalone, or NATS JetStream (imported only then,
    so the embedded mode needs no NATS package)."""
    if not config.cluster_url:
        return Standalone()
    from .nats_cluster import NatsCluster

    cluster: ClusterState = NatsCluster(config)
    return cluster


class CallbackTarget:
    """Reply target for the gateway's own packets (molecules, gateway-local elements)."""

    def __init__(
        self,
        on_frame: Callable[[bytes], None],
        on_dispatch: Callable[[str], None] | None = None,
        retry: bool = True,
    ) -> None:
        self.on_frame = on_frame
        self.on_dispatch = on_dispatch  # told the reactor id of every dispatch
        self.principal: Principal | None = GATEWAY
        # False: a reactor's ERROR is relayed as it is, never retried (a §7.3 reservation's
        # PF004 "no room" is an answer, not a fault to wait out).
        self.retry = retry

    def dispatched(self, reactor_id: str) -> None:
        if self.on_dispatch is not None:
            self.on_dispatch(reactor_id)

    def next_seq(self) -> int | None:
        return None

    def send(self, frame: bytes) -> bool:
        self.on_frame(frame)
        return True


class HttpTarget:
    """Reply target for ``POST /v1/packets``: the reply completes a future."""

    def __init__(self, principal: Principal | None = None) -> None:
        self.future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        # Who asked (DESIGN §8): set by http.py from the request; read through
        # security.guard.principal_of/source_of.
        self.principal = principal
        self.source_ip: str | None = None
        self.user_agent: str | None = None
        self.secure = False

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
        self.activity = Activity()  # recent figures for the dashboard (gateway/dashboard.py)
        self.stories: OrderedDict[str, PacketStory] = OrderedDict()
        self.deadlines: DeadlineWheel[Flight] = DeadlineWheel()
        self._rr = 0
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._peers: set[Peer] = set()
        self._discovery: list[Any] = []  # listeners with an async close()
        self.port = self.config.port
        self.max_connections = self.config.max_connections  # fd-bounded at start()
        self._refused_logged = 0.0
        self.started = time.monotonic()
        self.stopping = False
        self.draining = False  # after SIGTERM: new work refused, accepted work answered
        self._drained = False
        self._hurry = asyncio.Event()  # a second signal: end the grace period now
        self._backoff: set[Flight] = set()  # waiting for a §10.3.1 retry timer
        from .dashboard import PUBLIC_PATHS
        from .openapi import OPENAPI_PUBLIC_PATHS

        self.gatekeeper = Gatekeeper(
            self.config.security or SecurityConfig(data_dir=self.config.data_dir),
            OPEN_PATHS | PUBLIC_PATHS | OPENAPI_PUBLIC_PATHS,
        )
        self._index_entry: Path | None = None
        from .coordinator import MoleculeCoordinator

        self.coordinator = MoleculeCoordinator(self)
        self.cluster: ClusterState = make_cluster(self.config)
        self.metrics.tables.update({
            "in_flight": lambda: len(self.pending), "queued": lambda: self.queued,
            "stories": lambda: len(self.stories), "idempotency": lambda: len(self.window),
            "deadlines": lambda: len(self.deadlines), "reactors": lambda: len(self.registry),
            "peers": lambda: len(self._peers),
            "molecules_active": lambda: len(self.coordinator.active),
            "molecules_finished": lambda: len(self.coordinator.finished),
            "subscriptions": lambda: len(self.local.bus),
            "barriers": lambda: len(self.local.barriers),
            "health_trackers": lambda: len(self.monitor.trackers),
            "breakers": lambda: len(self.monitor.breakers),
            "probes": lambda: len(self.monitor.probes),
        })  # fmt: skip
        self.guard = self._make_guard()
        self.metrics.registry.register(self.guard.collector())

    def _make_guard(self) -> Guard:
        from ..security.audit import AuditLog
        from ..security.config import SecurityConfig, load

        config = self.config
        security = load(config.security_config) if config.security_config else SecurityConfig()
        path = config.audit_log or config.data_dir / "security" / "audit.log"
        return Guard(security, AuditLog(path, to_stdout=config.audit_stdout),
                     audit_submits=config.audit_submits)  # fmt: skip

    # ------------------------------------------------------------------ lifecycle

    def app(self) -> web.Application:
        from .dashboard import SECURITY_HEADERS, add_dashboard
        from .http import MAX_FRAME_BYTES_KEY, add_routes
        from .openapi import add_openapi

        app = web.Application(client_max_size=socket_limit(self.config.max_frame_bytes),
                              middlewares=[self.gatekeeper.middleware])  # fmt: skip
        app[MAX_FRAME_BYTES_KEY] = self.config.max_frame_bytes
        app.router.add_get("/ws", self._ws)
        add_routes(app, self)
        add_dashboard(app, self)
        self.coordinator.add_routes(app)
        add_openapi(app, dict(SECURITY_HEADERS))
        return app

    async def start(self) -> None:
        security = self.gatekeeper.config
        refusal = plaintext_bind_refusal("gateway", self.config.host, security.tls is not None,
                                         self.config.insecure)  # fmt: skip
        if refusal is not None:
            raise PermissionDenied(refusal, validation_rule="tls_required")
        # Before the keys: a cluster brings the keys the other gateways already share.
        await self.cluster.start(self)
        # Each reactor link is a connection held for good: aiohttp's default pool of 100
        # would leave the 101st reactor registered but never linked.
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        made = self.gatekeeper.keys.ensure_admin_key()
        if made is not None:
            log.warning("no API keys yet: created an admin key in %s (mode 0600)", made)
        self.max_connections = connection_budget(self.config.max_connections, raise_fd_limit())
        # aiohttp arms keepalive_timeout at connection_made and closes a connection whose
        # request has not fully arrived by then: that is the handshake timeout (and the
        # idle timeout between keep-alive HTTP requests; an upgraded WebSocket disarms it).
        self._runner = web.AppRunner(
            self.app(),
            access_log=None,
            handle_signals=False,
            keepalive_timeout=self.config.handshake_timeout_s,
            logger=server_logger(),
        )
        await self._runner.setup()
        ssl_context = security.tls.server_context() if security.tls is not None else None
        site = web.TCPSite(self._runner, self.config.host, self.config.port, reuse_address=True,
                           ssl_context=ssl_context)  # fmt: skip
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        self._record_credentials()
        self.gatekeeper.start()
        for url in self.config.static_reactors:
            self._spawn(self._add_static(url))
        if (self.config.multicast or self.config.dnssd) and not self.config.trust_multicast:
            log.warning(
                "multicast/DNS-SD announcements are unauthenticated and will be ignored: "
                "add --trust-multicast to dial reactors found that way"
            )
        elif self.config.multicast or self.config.dnssd:
            from .discovery import start_discovery

            self._discovery = await start_discovery(self)
        self.guard.audit.start()
        self.monitor.start()
        self._spawn(self._sweep_deadlines())
        await self.coordinator.start()
        log.info("gateway %s listening on %s", self.gateway_id, self.url)

    @property
    def url(self) -> str:
        scheme = "wss" if self.gatekeeper.config.tls is not None else "ws"
        return f"{scheme}://{self.config.host}:{self.port}/ws"

    def _record_credentials(self) -> None:
        """Tell the CLI and SDK of this user where this gateway's key is (DESIGN §8)."""
        import os

        from ..security import locator

        admin = self.gatekeeper.keys.admin_key_path
        tls = self.gatekeeper.config.tls
        client = self.gatekeeper.config.data_dir / "security" / "tls"
        entry = locator.Entry(
            api_key_file=str(admin.resolve()) if admin.exists() else None,
            ca_file=str((client / "ca.pem").resolve()) if tls and (client / "ca.pem").exists()
            else None,
            cert_file=str((client / "client-local.pem").resolve())
            if tls and (client / "client-local.pem").exists() else None,
            key_file=str((client / "client-local.key").resolve())
            if tls and (client / "client-local.key").exists() else None,
            pid=os.getpid(),
        )  # fmt: skip
        self._index_entry = locator.record(self.config.host, self.port, entry)

    async def drain(self, grace_s: float) -> bool:
        """Stop accepting, answer every accepted packet, say goodbye to every client.

        New SUBMITs are answered PF503 (retry_possible, retry_delay_ms), new WebSocket
        upgrades and HTTP POSTs 503 (gateway/http.py). Queued and in-flight packets keep
        being routed and answered for up to ``grace_s`` seconds (less if ``hurry()`` is
        called); what is left then is answered PF503 retry_possible. Then each client's
        outbox is written and its connection closed with 1001 (going away).
        Returns True when everything finished within the grace period.
        """
        if self._drained:
            return True
        self.draining = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        if self._work_left():
            log.info("gateway %s draining: %d in flight, %d queued, up to %.1f s",
                     self.gateway_id, len(self.pending), self.queued, grace_s)  # fmt: skip
        # Polled: an event set on every landing would cost the hot path for a rare wait.
        while self._work_left() and loop.time() < deadline and not self._hurry.is_set():  # noqa: ASYNC110
            await asyncio.sleep(DRAIN_POLL_S)
        finished = not self._work_left()
        if not finished:
            # Unfinished molecules stay in the journal and resume at the next start; the
            # coordinator stops first so the PF503s below do not end them.
            await self.coordinator.stop()
            self._answer_leftovers()
        self._drained = True
        await self._say_goodbye()
        return finished

    def hurry(self) -> None:
        """End a running drain's grace period now (a second SIGTERM or Ctrl-C)."""
        self._hurry.set()

    def _work_left(self) -> int:
        return len(self.pending) + self.queued + len(self._backoff) + self.local.waiting()

    def _answer_leftovers(self) -> None:
        """PF503 retry_possible to every packet the grace period did not see finish."""
        flights = [*self.pending.values(), *self._backoff]
        for queue in list(self.waiting.values()):  # _unqueue drops a queue it empties
            while (queued := queue.peek()) is not None:
                self._unqueue(queued)
                flights.append(queued)
        log.warning("gateway %s stopping: answering %d unfinished packets PF503",
                    self.gateway_id, len(flights))  # fmt: skip
        for flight in flights:
            self._fail(flight, _shutdown_error(f"Packet {flight.packet_id}"))
        self.local.drain(_shutdown_error("This packet"))

    async def _say_goodbye(self) -> None:
        """Write what each client is owed, then close its connection with 1001."""

        async def goodbye(peer: Peer) -> None:
            await peer.flush(CLIENT_FLUSH_S)
            with contextlib.suppress(asyncio.TimeoutError, ConnectionError, RuntimeError):
                await asyncio.wait_for(peer.ws.close(code=WSCloseCode.GOING_AWAY,
                                                     message=b"gateway shutting down"),
                                       CLIENT_CLOSE_S)  # fmt: skip

        await asyncio.gather(*(goodbye(peer) for peer in list(self._peers)))

    async def stop(self) -> None:
        """Stop now: what a drain would answer is answered PF503 at once (no grace)."""
        if self._runner is not None:
            await self.drain(0.0)
        self.stopping = True  # from here on, a lost link is expected and nothing is re-dialled
        for record in self.registry:
            if record.link is not None:
                record.link.closing = True
        await self.coordinator.stop()
        self.local.stop()
        await self.cluster.stop()
        await self.monitor.stop()
        await self.gatekeeper.stop()
        import os

        from ..security import locator

        locator.forget(self._index_entry, os.getpid())
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
        await asyncio.to_thread(self.guard.audit.close)

    async def serve_forever(self) -> None:
        from ..runner import announce_ready

        await self.start()
        announce_ready("gateway", self.gateway_id, self.url)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def on_signal() -> None:
            if stop.is_set():
                self.hurry()  # a second signal: skip the rest of the grace period
            stop.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, on_signal)
        await stop.wait()
        await self.drain(self.config.drain_grace_s)
        await self.stop()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ client frames

    async def _ws(self, request: web.Request) -> web.StreamResponse:
        config = self.config
        if len(self._peers) >= self.max_connections:
            now = time.monotonic()
            if now - self._refused_logged >= 1.0:  # one line a second under a flood
                self._refused_logged = now
                log.warning("refusing clients (from %s, ...): %d connections open",
                            request.remote, len(self._peers))  # fmt: skip
            return web.json_response({
                "error": "too many connections",
                "max_connections": self.max_connections,
            }, status=503, headers={"Retry-After": "1"})  # fmt: skip
        ws = PfapWebSocketResponse(max_msg_size=socket_limit(config.max_frame_bytes),
                                   decode_text=False,
                                   compress=True, heartbeat=config.ping_interval_s)  # fmt: skip
        set_pong_timeout(ws, config.pong_timeout_s)
        try:
            stream = await ws.prepare(request)
        except ConnectionResetError:  # the client left during the handshake
            return handshake_abandoned()
        peer = Peer(ws, f"gateway<-{request.remote}", stream,
                    max_outbox_bytes=config.max_outbox_bytes,
                    slow_consumer_s=config.slow_consumer_s,
                    max_requests=config.max_requests_per_connection)  # fmt: skip
        ws.answer_too_big(too_big_answer(self.gateway_id, peer.next_seq, config.max_frame_bytes))
        peer.principal = authenticated_principal(request)
        peer.secure = request.secure
        peer.attrs["reactor_only"] = peer.principal is not None and is_reactor_only(peer.principal)
        peer.attrs["remote"] = request.remote
        if peer.principal is not None:
            self.gatekeeper.track(peer, peer.principal, request.get("credentials_expire"),
                                  ws_closer(ws))  # fmt: skip
        self._peers.add(peer)
        try:
            while True:
                # Backpressure: while the client has not taken its replies (or has too many
                # packets unanswered), nothing more is read, so TCP pushes back on it.
                if peer.paused and not await peer.wait_readable():
                    break
                frame = await ws.receive()
                if frame.type == WSMsgType.TEXT:
                    self._on_frame_guarded(peer, frame.data)
                elif frame.type == WSMsgType.BINARY:
                    self._answer_frame_error(peer, binary_frame_error())
                elif frame.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED,
                                    WSMsgType.ERROR):  # fmt: skip
                    break
        except (ConnectionError, RuntimeError) as exc:
            log.debug("client %s: read failed: %s", peer.name, exc)
        finally:
            self.gatekeeper.untrack(peer)
            self._peers.discard(peer)
            self.local.peer_closed(peer)
            await peer.close()
        return ws

    def _on_frame_guarded(self, peer: Peer, data: bytes) -> None:
        """STYLE 4's boundary for a connection: a bug met while handling one frame answers
        PF500 (no internals) and the connection goes on, instead of ending its handler."""
        try:
            self.on_frame(peer, data)
        except Exception:
            log.exception("handling a frame from %s (%s) failed", peer.name, peer.remote_id)
            self.answer_error(peer, InternalError("The gateway failed while handling this frame"),
                              None, None)  # fmt: skip

    def on_frame(self, peer: Peer, data: bytes) -> None:
        for item in decode_frame(data, self.config.max_frame_bytes):
            # Packets from ordinary clients skip the reactor rule: it only narrows
            # reactor credentials, and announces are checked for everyone below.
            narrow = peer.attrs.get("reactor_only", False) or isinstance(item, Discover)
            if (
                narrow
                and not isinstance(item, FrameError)
                and not self._reactor_rule_allows(peer, item)
            ):
                continue
            if isinstance(item, Submit):
                self.accept(item, peer)
            elif isinstance(item, FrameError):
                self.guard.record_protocol_violation(peer)
                self._answer_frame_error(peer, item)
            elif isinstance(item, Discover):
                if self._discover_allowed(peer, item):
                    self._on_discover(peer, item)
            elif isinstance(item, Heartbeat):
                principal = principal_of(peer)
                if principal is not GATEWAY:
                    err = self.guard.check_action(principal, peer, REACTOR_HEARTBEAT,
                                                  "message_type", "heartbeat")  # fmt: skip
                    if err is not None:
                        self.answer_error(peer, err, item.message_id, None, item.source_id)
                        continue
                record = self.registry.get(item.payload.reactor_id or item.source_id)
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

    def _discover_allowed(self, peer: Peer, msg: Discover) -> bool:
        """DESIGN §8: announcing needs the reactor role; withdrawing a reactor other than
        the one this connection announced is an admin action; a query reads the registry."""
        principal = principal_of(peer)
        if principal is GATEWAY:
            return True
        kind = msg.payload.discovery_type
        info = msg.payload.reactor_info
        if kind == "announce":
            action = REACTOR_ANNOUNCE
        elif kind == "withdraw":
            own = info is not None and peer.remote_id == info.reactor_id
            action = REACTOR_ANNOUNCE if own else REACTOR_WITHDRAW_OTHER
        elif kind == "query":
            action = REACTOR_MONITOR
        else:
            return True  # answered PF002 by _on_discover
        resource = f"reactor:{info.reactor_id}" if info is not None else "registry"
        err = self.guard.check_action(principal, peer, action, "payload.discovery_type", resource)
        if err is None:
            return True
        self.answer_error(peer, err, msg.message_id, None, msg.source_id)
        return False

    def _reactor_rule_allows(self, peer: Peer, item: Message) -> bool:
        """DESIGN §8: reactor credentials announce, withdraw and heartbeat for one
        reactor only, and only admins or reactors announce (PF403 otherwise)."""
        principal = peer.principal
        if principal is None:
            return True
        info = None
        kind: str
        if isinstance(item, Discover):
            kind = item.payload.discovery_type
            info = item.payload.reactor_info
            reactor_id = info.reactor_id if info is not None else item.source_id
        elif isinstance(item, Heartbeat):
            kind, reactor_id = "heartbeat", item.payload.reactor_id or item.source_id
        else:
            kind, reactor_id = type(item).__name__.lower(), None
        try:
            check_reactor_message(principal, kind, reactor_id, peer.remote_id)
            if kind == "announce" and info is not None:
                url = info.endpoints.get("websocket")
                if url:
                    check_announced_endpoint(url, peer.attrs.get("remote"), principal)
        except PermissionDenied as err:
            log.warning("refused %s from %s (%s): %s", kind, principal.id, peer.name,
                        err.message)  # fmt: skip
            self.answer_error(peer, err, item.message_id, None, item.source_id)
            return False
        return True

    def _answer_frame_error(self, peer: Peer, item: FrameError) -> None:
        self.answer_error(peer, item.error, item.message_id, item.packet_id)

    def answer_error(
        self,
        target: FrameSink,
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
        principal = principal_of(target)
        key = packet_id
        if principal is not GATEWAY:
            err = self.guard.check_submit(msg, target, principal, now)
            if err is not None:
                self.answer_error(target, err, msg.message_id, packet_id, msg.source_id)
                return
            key = scoped_id(principal, packet_id)
        seen = self.window.lookup(key, now)
        if seen is not None:
            if seen.outcome is None:
                seen.join((msg, target))
                if isinstance(target, Peer):
                    target.request_opened()  # answered in _finish_window
            else:
                target.send(_readdressed(seen.outcome, msg, target))
            return
        if self.draining and not isinstance(target, CallbackTarget):
            # The gateway's own packets (molecules under way) still run during the grace.
            self.answer_error(target, ServiceUnavailable(
                "Gateway is shutting down; send the packet again to another gateway or "
                "after it restarts", retryable=True, retry_delay_ms=DRAIN_RETRY_DELAY_MS,
                details={"reason": "shutdown"},
            ), msg.message_id, packet_id, msg.source_id)  # fmt: skip
            return
        if msg.ttl == 0:
            self.answer_error(target, failover.ttl_expired(packet_id), msg.message_id, packet_id,
                              msg.source_id)  # fmt: skip
            return
        try:
            destination = resolve_destination(msg.destination_id, self.gateway_id,
                                              self._is_reactor)  # fmt: skip
        except PacketFlowError as unknown:
            self.answer_error(target, unknown, msg.message_id, packet_id, msg.source_id)
            return
        if isinstance(destination, Broadcast):
            self._broadcast(msg, target, packet_id, key)
            return
        pinned = (
            self.registry.get(destination.reactor_id) if isinstance(destination, Pinned) else None
        )
        if pinned is None and self.local.serves(packet.group, packet.element):
            if self.guard.rules:
                err = self.guard.check_abac(principal, target, packet,
                                            {"id": self.gateway_id, "served_by": "gateway"},
                                            time.time())  # fmt: skip
                if err is not None:
                    self.answer_error(target, err, msg.message_id, packet_id, msg.source_id)
                    return
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
        received_ms = now_ms()
        flight = Flight(
            msg=msg, target=target, packet_id=packet_id, priority=priority,
            timeout_ms=timeout_ms, received=now, received_ms=received_ms,
            deadline=now + timeout_ms / 1000.0,
            ttl_deadline=ttl_deadline, prefer=prefer,
            pinned=pinned.reactor_id if pinned is not None else None,
            wire_id=key if key != packet_id else None,
        )  # fmt: skip
        self.window.begin(key, now)
        if isinstance(target, Peer):
            target.request_opened()
            flight.counted = True
        self.metrics.accepted.inc()
        flight.story = self._new_story(packet_id, packet.group, packet.element, key, received_ms)
        self.dispatch(flight)

    def remember_outcome(self, key: str, frame: bytes, age_s: float = 0.0) -> None:
        """Another gateway of the cluster answered packet ``key`` for good, ``age_s``
        seconds ago (gateway/shared.py): a repeat of it here is answered with ``frame``,
        not run, until the window's age has passed since (DESIGN §4)."""
        now = time.monotonic()
        if age_s < self.window.ttl_s and self.window.lookup(key, now) is None:
            self.window.begin(key, now)
            self.window.finish(key, frame, replayable=True, now=now - age_s)

    def _is_reactor(self, reactor_id: str) -> bool:
        return self.registry.get(reactor_id) is not None

    def submit_internal(
        self,
        msg: Submit,
        on_frame: Callable[[bytes], None],
        *,
        prefer: str | None = None,
        on_dispatch: Callable[[str], None] | None = None,
        retry: bool = True,
    ) -> None:
        """Submit a packet on the gateway's own behalf; ``on_frame`` gets the encoded
        RESULT or ERROR. ``prefer`` names a reactor to use when it has a free slot;
        ``on_dispatch`` is told the id of each reactor the packet is sent to; ``retry``
        False relays a reactor's ERROR without retrying it."""
        self.accept(msg, CallbackTarget(on_frame, on_dispatch, retry), prefer=prefer)

    def _new_story(
        self, packet_id: str, group: str, element: str, key: str, ms: int | None = None
    ) -> PacketStory:
        """``key`` is the principal-scoped id (scoped_id): GET /v1/packets/{id} of one
        principal never finds another's story; ``ms`` the acceptance time (default now)."""
        if ms is None:
            ms = now_ms()
        story = PacketStory(packet_id, group, element, PacketState.VALIDATED, ms, ms)
        self.stories[key] = story
        self.stories.move_to_end(key)
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
        if flight.tried or (flight.deliveries and flight.suspect):
            avoid = failover.reactors_to_avoid(
                [r.reactor_id for r in candidates], flight.tried,
                [r.reactor_id for r in candidates if r.suspects], flight.suspect,
            )  # fmt: skip
            if avoid is None:  # a suspect, and every reactor already runs one
                self._enqueue(flight)
                return
            prefs = failover.with_avoided(prefs, avoid)
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

    def _broadcast(self, msg: Submit, target: ReplyTarget, packet_id: str, key: str) -> None:
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
                    packet, id=f"{key}@{record.reactor_id}")),
            )  # fmt: skip
            self.accept(child, CallbackTarget(functools.partial(collect, record.reactor_id)))

    def _send(self, flight: Flight, record: ReactorRecord, choice: routing.Chosen) -> None:
        now = time.monotonic()
        link = record.link
        assert link is not None and link.peer is not None
        if link.peer.closed and not self.stopping:
            # The socket closed before its read loop told us: fail the reactor over now,
            # so routing stops choosing it, and route this packet again (it never left).
            self.on_link_lost(record, link)
            if record.link is None:
                self.dispatch(flight)
                return
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
        if self.guard.rules and self._abac_refuses(flight, record):
            return
        message_id = new_message_id()
        wall_ms = now_ms()
        forwarded = forward_submit(
            flight.msg, packet_id=flight.wire_id or flight.packet_id, priority=flight.priority,
            message_id=message_id, now_ms=wall_ms,
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
        story = flight.story
        if story is not None:
            story.reactor_id = record.reactor_id
            story.attempts += 1
            story.score = choice.score
            story.route = choice.reason
            state = _ROUTED_AND_STARTED.get(story.state)
            if state is None:  # not a state the happy path knows: the table's own answer
                self._advance(flight, PacketEvent.ROUTED, PacketEvent.STARTED)
            else:
                story.state = state
                story.updated_ms = wall_ms
        self.registry.add_in_flight(record, 1)
        record.flights.add(flight)
        if flight.deliveries and flight.suspect:
            record.suspects += 1
        self.pending[message_id] = flight
        if isinstance(flight.target, CallbackTarget):  # the coordinator journals where it went
            flight.target.dispatched(record.reactor_id)
        self.deadlines.add(flight, flight.deadline + DEADLINE_SLACK_S)
        if not link.peer.send(encode(forwarded)):
            # It never reached the reactor: no delivery, no suspicion.
            self._reroute(flight, "reactor connection closed while sending", counted=False)
        else:
            if record.routed_counter is None:  # labels() costs a lookup: once per reactor
                record.routed_counter = self.metrics.routed.labels(record.reactor_id)
            record.routed_counter.inc()

    def _abac_refuses(self, flight: Flight, record: ReactorRecord) -> bool:
        """§11.2.2 rules see the reactor chosen for the packet (its security_zone comes
        from the announce's operational_constraints)."""
        constraints = record.announce.get("operational_constraints") or {}
        reactor = {"id": record.reactor_id, "locality": record.locality,
                   "implementation": record.implementation, "version": record.version,
                   "specializations": list(record.specializations),
                   "security_zone": constraints.get("security_zone")}  # fmt: skip
        err = self.guard.check_abac(principal_of(flight.target), flight.target, flight.packet,
                                    reactor, time.time())  # fmt: skip
        if err is None:
            return False
        self._fail(flight, err)
        return True

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
        flight.entry = queue.push(flight, flight.priority, flight.arrival)
        if flight.entry is not None:
            flight.arrival = flight.entry.seq
        stored_compact(flight.msg)  # a queue can hold 100,000 of them
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
            if flight.entry is not None:
                # Back in the queue (its routing or the one-suspect rule kept it off this
                # slot): the next freed slot tries again, rather than spinning here.
                return

    # ------------------------------------------------------------------ replies

    def on_reactor_message(self, record: ReactorRecord, item: Message | FrameError) -> None:
        if isinstance(item, Result | Error):
            monitor = self.monitor
            if monitor.probes and monitor.on_reply(record, item):  # no probe out: no lookup
                return
            flight = self.pending.pop(item.correlation_id or "", None)
            if flight is None:
                return  # late reply for a packet already answered (timeout, failover)
            self._land(flight)
            self._learn(flight, record, isinstance(item, Result) or not counts_against_reactor(
                item.payload.error_code, item.payload.retry_possible))  # fmt: skip
            if isinstance(item, Result):
                monitor.packet_finished(record, None)
                self._complete(flight, record, item.payload)
            else:
                self._reactor_error(flight, record, item.payload)
            if self.waiting:
                self._drain_waiting(record)
        elif isinstance(item, Heartbeat):
            self.on_heartbeat(record, item)
        elif isinstance(item, FrameError):
            log.warning("bad frame from reactor %s: %s", record.reactor_id, item.error)

    def _reactor_error(self, flight: Flight, record: ReactorRecord, payload: ErrorPayload) -> None:
        """A reactor answered ERROR: try elsewhere, retry with backoff, or relay it."""
        code = payload.error_code
        self.monitor.packet_finished(record, code, payload.retry_possible)
        action = failover.on_reactor_error(code, payload.retry_possible,
                                           self._has_alternative(flight))  # fmt: skip
        if not getattr(flight.target, "retry", True):
            action = "relay"
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
            self._backoff.discard(flight)
            self.retry_budget.release()
            flight.timer = None
            self.dispatch(flight)

        flight.timer = asyncio.get_running_loop().call_later(delay / 1000.0, fire)
        self._backoff.add(flight)
        return True

    def set_matrix(self, matrix: dict[str, dict[str, float]], version: str) -> None:
        """§6.4: the next routing decision uses ``matrix``."""
        self.matrix = matrix
        self.matrix_version = version
        self.registry.set_matrix(matrix)
        self.cluster.matrix_changed(matrix, version)

    def _learn(self, flight: Flight, record: ReactorRecord, ok: bool) -> None:
        """§6.3.2: fold the observed latency and outcome into the reactor's adjustment."""
        group = flight.packet.group
        now = time.monotonic()
        latency_ms = (now - flight.dispatched_at) * 1000.0
        self.activity.finished(record.reactor_id, now, latency_ms)
        value = self.learner.observe(record.reactor_id, group, latency_ms, ok)
        self.local.matrix_outcome(ok)  # §6.4: an update's rollback window counts it
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
            if flight in self._backoff:  # its retry will not fire: give the budget back
                self._backoff.discard(flight)
                self.retry_budget.release()
        record = flight.reactor
        if record is not None and flight in record.flights:  # landing twice counts once
            record.flights.discard(flight)
            self.registry.add_in_flight(record, -1)
            if flight.deliveries and flight.suspect:
                record.suspects -= 1
        if flight.gateway_message_id is not None:
            self.pending.pop(flight.gateway_message_id, None)
            flight.gateway_message_id = None

    def _complete(self, flight: Flight, record: ReactorRecord, payload: ResultPayload) -> None:
        now = time.monotonic()
        if flight.wire_id is not None:  # the client knows its packet by its own id
            payload = msgspec.structs.replace(payload, packet_id=flight.packet_id)
        wall_ms = now_ms()
        reply = client_result(
            payload, client_message_id=flight.msg.message_id,
            client_source_id=flight.msg.source_id, message_id=new_message_id(),
            now_ms=wall_ms, source_id=self.gateway_id, sequence_id=flight.target.next_seq(),
            total_ms=(now - flight.received) * 1000.0, reactor_id=record.reactor_id,
            affinity_score=flight.choice.affinity if flight.choice else 0.0,
        )  # fmt: skip
        frame = encode(reply)
        limit = self.config.max_frame_bytes
        if len(frame) > limit:
            # Past DESIGN §3's limit the client would refuse the frame and wait for a reply
            # that never comes; it gets the reason instead (our reactors never send one).
            self._fail(flight, result_too_large(record.reactor_id, len(frame), limit))
            return
        self._deliver(flight, frame, replayable=True)
        story = flight.story
        if story is not None and story.state is PacketState.PROCESSING:
            story.state = PacketState.COMPLETED  # §5.3: processing --succeeded--> completed
            story.updated_ms = wall_ms
        else:
            self._advance(flight, PacketEvent.SUCCEEDED)
        self.metrics.completed.inc()
        self.metrics.latency.observe(now - flight.received)

    def _relay_error(self, flight: Flight, payload: ErrorPayload) -> None:
        if flight.wire_id is not None:
            payload = msgspec.structs.replace(payload, packet_id=flight.packet_id)
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
        if flight.counted:
            flight.counted = False
            assert isinstance(flight.target, Peer)
            flight.target.request_closed()
        key = flight.wire_id or flight.packet_id
        waiters = self.window.finish(key, frame, replayable=replayable,
                                     now=time.monotonic())  # fmt: skip
        if replayable and self.cluster.shares_outcomes:
            self.cluster.outcome_recorded(key, frame)
        for msg, target in waiters:
            target.send(_readdressed(frame, msg, target))
            if isinstance(target, Peer):
                target.request_closed()

    async def _sweep_deadlines(self) -> None:
        """Answer every in-flight packet whose reactor missed its deadline (one sweep per
        wheel tick instead of one event-loop timer per packet)."""
        await every(self.deadlines.resolution_s, self.sweep_deadlines, "deadline sweep")

    def sweep_deadlines(self) -> None:
        for flight in self.deadlines.expired(time.monotonic()):
            try:
                if flight.entry is not None:
                    self._queued_expired(flight)
                else:
                    self._deadline_passed(flight)
            except Exception:  # the others expired in this sweep still get their answer
                log.exception("answering packet %s at its deadline failed", flight.packet_id)

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

    def _reroute(self, flight: Flight, reason: str, *, counted: bool = True) -> None:
        """The reactor running ``flight`` is gone: fail over, or fail as a poison packet.
        ``counted``: this death counts a delivery (failover.blame_for_death)."""
        self._land(flight)
        if counted:
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
            try:
                record = self.register(msg.payload, source="direct",
                                       dial_token=msg.payload.dial_token,
                                       source_id=msg.source_id)  # fmt: skip
            except PacketFlowError as err:
                self.answer_error(peer, err, msg.message_id, None, msg.source_id)
                return
            peer.remote_id = record.reactor_id
            self.cluster.reactor_announced(record)
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
                self.cluster.reactor_withdrew(leaving.reactor_id)
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

    def register(
        self,
        payload: DiscoverPayload,
        *,
        source: str,
        dial_token: str | None = None,
        source_id: str | None = None,
    ) -> ReactorRecord:
        """Add or refresh a reactor from its announce and make sure a link to it is up.

        ``dial_token`` is what the reactor asked to be shown when dialled (DESIGN §8);
        reactors from other sources are shown the operator's ``reactor_token``."""
        if source in ("multicast", "dnssd") and not self.config.trust_multicast:
            # Anyone on the LAN can send these: dialling them would let a stranger steer
            # the gateway's connections. The operator opts in with --trust-multicast.
            raise PermissionDenied(
                f"{source} announcements are unauthenticated; ignored without --trust-multicast",
                field="source", validation_rule="trust_multicast",
            )  # fmt: skip
        info = payload.reactor_info
        if info is None and source_id is not None:
            info = reactor_info_of(payload, source_id)  # §8.2's example names no reactor_info
        if info is None:
            raise InvalidPacket("An announce needs reactor_info", field="payload.reactor_info",
                                expected_type="object", received_type="missing",
                                validation_rule="required_field")  # fmt: skip
        capabilities = capabilities_of(payload)
        constraints = payload.operational_constraints or {}
        capacity = int(
            constraints.get("max_concurrent_packets")
            or info.max_capacity
            or DEFAULT_REACTOR_CAPACITY
        )
        known = self.registry.get(info.reactor_id)
        if (
            known is not None
            and known.link is None
            and known.endpoints.get("websocket") != info.endpoints.get("websocket")
        ):
            # Its connection was lost and it announces a new endpoint: a new process under
            # the same id (e.g. restarted by `packetflow up`). Its health starts afresh
            # (§9.3 unknown → healthy on the first probe) instead of serving the §9.4.2
            # probation of the process that died.
            log.info("reactor %s is back as a new process at %s", info.reactor_id,
                     info.endpoints.get("websocket"))  # fmt: skip
            self.monitor.forget(info.reactor_id)
            self.coordinator.history.forget_reactor(info.reactor_id)
        record = self.registry.upsert(ReactorRecord(
            reactor_id=info.reactor_id, specializations=tuple(info.specializations),
            implementation=info.implementation, capabilities=capabilities,
            capacity=max(1, capacity), endpoints=dict(info.endpoints), locality=info.locality,
            version=info.version, source=source, last_seen=time.monotonic(),
            announce=msgspec.to_builtins(msgspec.structs.replace(payload, dial_token=None)),
        ))  # fmt: skip
        record.dial_token = dial_token if dial_token is not None else self.config.reactor_token
        record.announced_capacity = max(1, capacity)
        self.refresh_capacity(record)
        if (record.link is None or not record.link.up) and not record.dialing and not self.stopping:
            record.dialing = True
            self._spawn(self._dial(record))
        return record

    async def _dial(self, record: ReactorRecord) -> None:
        url = record.endpoints.get("websocket")
        if not url or self._session is None:
            log.warning("reactor %s announced no websocket endpoint", record.reactor_id)
            return
        link = ReactorLink(self, record, url, self._link_ssl())
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
        self._fail_over(list(record.flights), f"reactor {record.reactor_id} connection lost")

    def _fail_over(self, flights: list[Flight], reason: str) -> None:
        """A reactor died with ``flights`` on it: DESIGN §6 blames its suspect if it had
        one, else all of them (failover.blame_for_death), and reroutes the rest."""
        blamed = failover.blame_for_death([(f, f.suspect) for f in flights])
        for flight in flights:
            self._reroute(flight, reason, counted=flight in blamed)

    def depart(self, record: ReactorRecord) -> None:
        """The reactor left (withdrew, or silent past departure_after_s): drop it and fail
        over whatever it still had.

        The order matters: its packets land first, while it is still registered (so its
        slots are given back where routing counts them), then it leaves the registry, and
        only then are they rerouted (so routing cannot pick the departing reactor again)."""
        if not self.registry.registered(record):
            return
        orphans = list(record.flights)
        blamed = failover.blame_for_death([(f, f.suspect) for f in orphans])
        for flight in orphans:
            self._land(flight)
        self.registry.remove(record.reactor_id)
        self.monitor.forget(record.reactor_id)
        self.coordinator.history.forget_reactor(record.reactor_id)
        self.learner.forget(record.reactor_id)
        self.activity.forget(record.reactor_id)
        link, record.link = record.link, None
        if link is not None:
            link.closing = True
            self._spawn(link.close())
        for flight in orphans:
            self._reroute(flight, f"reactor {record.reactor_id} departed",
                          counted=flight in blamed)  # fmt: skip

    def on_heartbeat(self, record: ReactorRecord, msg: Heartbeat) -> None:
        payload = msg.payload
        self.monitor.heartbeat(record, msg)
        record.last_seen = time.monotonic()
        self.cluster.reactor_seen(record, record.last_seen)
        record.last_heartbeat = msgspec.to_builtins(payload)
        if payload.health_status is not None:
            load = max(0.0, min(1.0, payload.health_status.load_factor))
            if load != record.reported_load:
                self.registry.set_reported_load(record, load)
        if payload.capacity_adjustments is not None:
            # A heartbeat without them (§4.2.4's shape) leaves the last ones in force.
            record.capacity_adjustments = payload.capacity_adjustments
            self.refresh_capacity(record)

    def refresh_capacity(self, record: ReactorRecord) -> None:
        """Route and queue by the §8.3 capacity (protocol/capacity.py): on every heartbeat,
        announce, and monitor tick (a maintenance window opens or closes with time)."""
        capacity = effective_capacity(record.announced_capacity or record.capacity,
                                      record.capacity_adjustments, now_ms())  # fmt: skip
        if capacity == record.capacity:
            return
        rose = capacity > record.capacity
        log.info("reactor %s: capacity %d -> %d (%s)", record.reactor_id, record.capacity,
                 capacity, record.capacity_adjustments)  # fmt: skip
        self.registry.set_capacity(record, capacity)
        if rose:
            self.slot_freed(record)

    def _link_ssl(self) -> Any:
        """The client TLS context for wss:// reactor links: trust the configured CA and
        present this gateway's certificate (DESIGN §8 mTLS ``CN=gateway-*``)."""
        tls = self.gatekeeper.config.tls
        if tls is None:
            return None
        from ..security.tls import client_context

        return client_context(tls.client_ca, tls.cert, tls.key)

    def _static_headers(self) -> dict[str, str]:
        from ..protocol.authentication import DIAL_TOKEN_HEADER

        token = self.config.reactor_token
        return {DIAL_TOKEN_HEADER: token} if token else {}

    async def _add_static(self, url: str) -> None:
        """A reactor from the static list: ask it to describe itself, then register it."""
        from ..client import AsyncClient

        def dial() -> AsyncClient:
            return AsyncClient(url, source_id=self.gateway_id, headers=self._static_headers(),
                               ssl=self._link_ssl(), credentials=False)  # fmt: skip

        client = dial()
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
                client = dial()
        if isinstance(reply, Discover):
            self.register(reply.payload, source="static")

    # ------------------------------------------------------------------ views

    def counts(self) -> GatewayCounts:
        """What protocol.service_health judges the gateway's health from."""
        reactors = healthy = routable = 0
        for record in self.registry:
            reactors += 1
            healthy += record.health == "healthy"
            routable += (
                record.link is not None
                and record.link.up
                and record.health in routing.ROUTABLE
                and not self.monitor.circuit_open(record)
            )
        return GatewayCounts(
            reactors=reactors, healthy=healthy, routable=routable, queue_depth=self.queued,
            max_queue=self.config.max_queue, in_flight=len(self.pending),
            stopping=self.draining or self.stopping,
        )  # fmt: skip

    def status(self) -> dict[str, Any]:
        """GET /health's body: the truth, whatever it is (the HTTP status stays 200 while the
        process lives; readiness is GET /health/ready)."""
        counts = self.counts()
        health = assess(counts)
        return {
            "status": health.status,
            "ready": health.ready,
            "reasons": list(health.reasons),
            "gateway_id": self.gateway_id,
            "protocol_version": PROTOCOL_VERSION,
            "uptime_seconds": round(time.monotonic() - self.started, 1),
            "reactors": counts.reactors,
            "healthy_reactors": counts.healthy,
            "routable_reactors": counts.routable,
            "in_flight": counts.in_flight,
            "queue_depth": counts.queue_depth,
            "max_queue": counts.max_queue,
            "stopping": counts.stopping,
            "affinity_matrix_version": self.matrix_version,
            "chemical_health": self.chemical_health(),
            "cluster": self.cluster.describe(),
        }

    def chemical_health(self) -> dict[str, Any]:
        """§9.1.3 for the whole system: molecule history (the coordinator's) and the share
        of routed packets that did not fail by a reactor's fault (the affinity learner)."""
        observed = self.learner.observed().values()
        samples = sum(n for _, _, n in observed)
        effective = sum((1.0 - failure) * n for _, failure, n in observed)
        return self.coordinator.history.metrics(effective / samples if samples else None)


def _shutdown_error(what: str) -> ServiceUnavailable:
    return ServiceUnavailable(
        f"{what} did not finish before the gateway shut down; send it again",
        retryable=True, retry_delay_ms=DRAIN_RETRY_DELAY_MS, details={"reason": "shutdown"},
    )  # fmt: skip


def _readdressed(frame: bytes, msg: Submit, target: ReplyTarget) -> bytes:
    """A stored reply answering the repeated SUBMIT ``msg`` (DESIGN §4 idempotency)."""
    return replay_for(frame, msg, message_id=new_message_id(), now_ms=now_ms(),
                      sequence_id=target.next_seq())  # fmt: skip
