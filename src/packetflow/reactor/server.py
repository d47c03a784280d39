"""The reactor process: serves ``/ws``, ``/health`` and ``/metrics``, announces itself to the
gateway and sends HEARTBEATs on the connections the gateway dialled (DESIGN §2).

This module only moves bytes: frames become messages (``protocol.messages``), SUBMITs go
to the runtime's scheduler, and every reply the runtime builds is written back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import signal
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import msgspec
from aiohttp import WSMsgType, web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ..client import AsyncClient
from ..framing import PfapWebSocketResponse, socket_limit, too_big_answer
from ..protocol.authentication import (
    DIAL_TOKEN_HEADER,
    credential_in_query,
    plaintext_bind_refusal,
)
from ..protocol.errors import (
    AuthenticationFailed,
    InvalidPacket,
    PacketFlowError,
    PermissionDenied,
)
from ..protocol.limits import MAX_FRAME_BYTES
from ..protocol.messages import (
    PROTOCOL_VERSION,
    Discover,
    DiscoverPayload,
    FrameError,
    Heartbeat,
    ReactorInfo,
    Submit,
    binary_frame_error,
    decode_frame,
    encode,
)
from ..protocol.reactor_access import is_loopback_host
from ..request_log import server_logger
from ..security.gatekeeper import denial, same_secret
from ..security.tls import TlsConfig, peer_common_name
from ..transport import (
    DEFAULT_PING_INTERVAL_S,
    DEFAULT_PONG_TIMEOUT_S,
    Peer,
    handshake_abandoned,
    new_message_id,
    now_ms,
    set_pong_timeout,
)
from .elements import load_standard
from .registry import Handler, Registry
from .runtime import ReactorConfig, ReactorRuntime

log = logging.getLogger("packetflow.reactor")

# DESIGN §8: 32 random bytes per announce, as the brief of the dial token asks.
DIAL_TOKEN_BYTES = 32
DIAL_TOKENS_KEPT = 2
# How long a stopping reactor waits for the gateway to acknowledge its withdraw.
WITHDRAW_TIMEOUT_S = 2.0


class Reactor:
    """A PFAP reactor. Register extra elements, then ``run()`` (blocking) or ``start()``.

    ``@reactor.element("df", "tokenize")`` on ``fn(data, ctx)`` adds an element; it is
    announced to the gateway and listed by cf:introspect.
    """

    def __init__(
        self,
        *,
        reactor_id: str | None = None,
        specializations: Iterable[str] = ("general_purpose",),
        gateway: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        implementation: str = "python",
        max_concurrent_packets: int | None = None,
        heartbeat_interval_s: float = 5.0,
        announce_interval_s: float = 60.0,
        data_dir: str | Path = "data",
        memory_limit_mb: float | None = None,
        locality: str | None = None,
        grace_s: float = 10.0,
        standard_elements: bool = True,
        multicast: bool = False,
        multicast_group: str = "224.0.1.100",
        multicast_port: int = 9999,
        dnssd: bool = False,
        payload_key_file: str | Path | None = None,
        api_key: str | None = None,
        api_key_file: str | None = None,
        accept_tokens: Iterable[str] = (),
        tls: TlsConfig | None = None,
        gateway_ca: str | None = None,
        insecure: bool = False,
        ping_interval_s: float = DEFAULT_PING_INTERVAL_S,
        pong_timeout_s: float = DEFAULT_PONG_TIMEOUT_S,
        max_frame_bytes: int = MAX_FRAME_BYTES,
    ) -> None:
        """Security (DESIGN §8): ``api_key``/``api_key_file`` authenticate the announce
        (else the SDK's lookup); the gateway that dials back must show the dial token of
        an announce, one of ``accept_tokens`` (operator-configured, for static lists,
        multicast and tests), or under mTLS a ``CN=gateway-*`` certificate. ``tls``
        serves wss (with ``client_ca``: mTLS) and its certificate also authenticates this
        reactor to a wss gateway; ``gateway_ca`` verifies that gateway."""
        config = ReactorConfig(
            specializations=tuple(specializations), gateway_url=gateway, host=host, port=port,
            implementation=implementation, heartbeat_interval_s=heartbeat_interval_s,
            announce_interval_s=announce_interval_s,
            data_dir=Path(data_dir), locality=locality, grace_s=grace_s,
            memory_limit_mb=memory_limit_mb,
        )  # fmt: skip
        if reactor_id:
            config.reactor_id = reactor_id
        if max_concurrent_packets:
            config.max_concurrent_packets = max_concurrent_packets
        if payload_key_file is not None:  # §11.3 end-to-end payload encryption
            config.payload_key_file = Path(payload_key_file)
        self.config = config
        self.registry = Registry()
        if standard_elements:
            load_standard(self.registry)
        self.runtime: ReactorRuntime | None = None
        self._runner: web.AppRunner | None = None
        self._gateway_peers: set[Peer] = set()
        self._peers: set[Peer] = set()
        self._tasks: list[asyncio.Task[Any]] = []
        self._stopped = asyncio.Event() if _has_loop() else None
        self.port: int = port
        # §8.1.2 multicast and §8.1.3 DNS-SD self-advertisement (reactor/advertise.py).
        self.multicast = multicast
        self.multicast_group = multicast_group
        self.multicast_port = multicast_port
        self.dnssd = dnssd
        self._advertisers: list[Any] = []  # each with an async close()
        self.api_key, self.api_key_file = api_key, api_key_file
        self.accept_tokens = tuple(t for t in accept_tokens if t)
        self.tls = tls
        self.gateway_ca = gateway_ca
        self.insecure = insecure
        # The tokens of the last announces: the newest, and the one before it for a dial
        # that was already under way when we re-announced.
        self._dial_tokens: deque[str] = deque(maxlen=DIAL_TOKENS_KEPT)
        # §12.4.1 ping/pong on /ws: a gateway gone half-open is found and its link closed.
        self.ping_interval_s = ping_interval_s
        self.pong_timeout_s = pong_timeout_s
        # DESIGN §3 / §12.4.1 max_frame_size of what /ws reads (results keep their own
        # bound below the default, runtime.MAX_RESULT_BYTES).
        self.max_frame_bytes = max_frame_bytes

    # ------------------------------------------------------------------ public API

    def element(self, group: str, element: str, *, cpu_bound: bool = False,
                inline_max_bytes: int = 0, data: dict[str, Any] | None = None,
                result: str | None = None) -> Callable[[Handler], Handler]:  # fmt: skip
        return self.registry.element(group, element, cpu_bound=cpu_bound,
                                     inline_max_bytes=inline_max_bytes, data=data,
                                     result=result)  # fmt: skip

    @property
    def reactor_id(self) -> str:
        return self.config.reactor_id

    @property
    def url(self) -> str:
        scheme = "wss" if self.tls is not None else "ws"
        return f"{scheme}://{self.config.host}:{self.port}/ws"

    def endpoints(self) -> dict[str, str]:
        base = f"{'https' if self.tls is not None else 'http'}://{self.config.host}:{self.port}"
        return {"websocket": self.url, "http": base, "metrics": f"{base}/metrics",
                "health": f"{base}/health"}  # fmt: skip

    async def start(self) -> None:
        refusal = plaintext_bind_refusal("reactor", self.config.host, self.tls is not None,
                                         self.insecure)  # fmt: skip
        if refusal is not None:
            raise PermissionDenied(refusal, validation_rule="tls_required")
        self.config.data_dir.mkdir(parents=True, exist_ok=True)
        self._stopped = asyncio.Event()
        self.runtime = ReactorRuntime(self.config, self.registry)
        self.runtime.on_shutdown = self._shutdown_requested
        self.runtime.on_restart = self._restart_requested
        app = web.Application(middlewares=[self._guard])
        app.router.add_get("/ws", self._ws)
        app.router.add_get("/health", self._health)
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False,
                                     logger=server_logger())  # fmt: skip
        await self._runner.setup()
        ssl_context = self.tls.server_context() if self.tls is not None else None
        site = web.TCPSite(self._runner, self.config.host, self.config.port, reuse_address=True,
                           ssl_context=ssl_context)  # fmt: skip
        await site.start()
        server = site._server
        assert server is not None and server.sockets  # type: ignore[attr-defined]
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._heartbeat_loop()))
        if self.config.gateway_url:
            await self._connect_gateway()
        log.info("reactor %s (%s) serving %s", self.reactor_id,
                 ",".join(self.config.specializations), self.url)  # fmt: skip
        if self.multicast or self.dnssd:
            from .advertise import start_advertisers

            self._advertisers = await start_advertisers(self)

    async def stop(self, grace_s: float | None = None) -> None:
        """Graceful: stop accepting (PF503), finish in-flight work within the grace period."""
        advertisers, self._advertisers = self._advertisers, []
        for advertiser in advertisers:
            await advertiser.close()
        rt = self.runtime
        if rt is not None:
            await rt.drain(self.config.grace_s if grace_s is None else grace_s)
            await self._withdraw()
        for peer in list(self._peers):
            await peer.flush(1.0)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        if rt is not None and rt.gateway is not None:
            await rt.gateway.close()
        for peer in list(self._peers):
            await peer.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if rt is not None:
            rt.close()
        if self._stopped is not None:
            self._stopped.set()

    async def wait_stopped(self) -> None:
        assert self._stopped is not None
        await self._stopped.wait()

    def run(self) -> None:
        """Run until SIGTERM/SIGINT or cf:shutdown, then drain and return (exit code 0)."""
        from ..runner import run_main

        run_main(self._main())

    async def _main(self) -> None:
        from ..runner import announce_ready

        await self.start()
        announce_ready("reactor", self.reactor_id, self.url)
        loop = asyncio.get_running_loop()
        stop_now = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop_now.set)
        assert self._stopped is not None
        waiters = [loop.create_task(stop_now.wait()), loop.create_task(self._stopped.wait())]
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        for w in waiters:
            w.cancel()
        if not self._stopped.is_set():
            await self.stop()

    # ------------------------------------------------------------------ gateway links

    async def _connect_gateway(self) -> None:
        assert self.runtime is not None
        tls = self.tls
        client = AsyncClient(self.config.gateway_url or "", source_id=self.reactor_id,
                             reconnect=True, on_connect=self._announce,
                             api_key=self.api_key, api_key_file=self.api_key_file,
                             ca_file=self.gateway_ca or (tls.client_ca if tls else None),
                             cert=tls.cert if tls else None,
                             key=tls.key if tls else None)  # fmt: skip
        self.runtime.gateway = client
        try:
            await client.connect()
        except (OSError, PacketFlowError, TimeoutError) as exc:
            # The gateway may start later: keep trying in the background.
            log.warning("reactor %s: gateway %s not reachable yet (%s); retrying",
                        self.reactor_id, self.config.gateway_url, exc)  # fmt: skip
            self._tasks.append(asyncio.get_running_loop().create_task(self._keep_dialing(client)))

    async def _keep_dialing(self, client: AsyncClient) -> None:
        delay = 0.1
        while True:
            await asyncio.sleep(delay)
            try:
                await client.connect()
                return
            except (OSError, PacketFlowError, TimeoutError) as exc:
                log.debug("reactor %s: gateway dial failed: %s", self.reactor_id, exc)
                delay = min(delay * 2, 5.0)

    async def _announce(self, client: AsyncClient) -> None:
        assert self.runtime is not None
        payload = msgspec.convert(self.runtime.announce_payload(self.endpoints()),
                                  DiscoverPayload)  # fmt: skip
        # A fresh token per announce (DESIGN §8): only the gateway we announced to can
        # dial back, whoever else learns our address.
        token = secrets.token_urlsafe(DIAL_TOKEN_BYTES)
        self._dial_tokens.append(token)
        payload = msgspec.structs.replace(payload, dial_token=token)
        msg = Discover(**client.envelope_fields(), payload=payload)
        reply = await client.request(msg, 10.0)
        log.info("reactor %s announced to %s (%s)", self.reactor_id, client.url,
                 type(reply).__name__)  # fmt: skip

    async def _withdraw(self) -> None:
        """Tell the gateway we are leaving (DISCOVER withdraw) so it drops us on purpose
        instead of reporting a lost reactor; best effort, bounded."""
        rt = self.runtime
        client = rt.gateway if rt is not None else None
        if client is None or not client.connected:
            return
        msg = Discover(**client.envelope_fields(), payload=DiscoverPayload(
            discovery_type="withdraw",
            reactor_info=ReactorInfo(reactor_id=self.reactor_id),
        ))  # fmt: skip
        try:
            await client.request(msg, WITHDRAW_TIMEOUT_S)
        except (PacketFlowError, OSError, TimeoutError) as exc:
            log.debug("reactor %s: withdraw not acknowledged: %s", self.reactor_id, exc)

    def _shutdown_requested(self, grace_s: float) -> None:
        asyncio.get_running_loop().create_task(self.stop(grace_s))

    def _restart_requested(self) -> None:
        async def restart() -> None:
            rt = self.runtime
            assert rt is not None
            await rt.drain(self.config.grace_s)
            rt.clear_caches()
            rt.draining = False
            await self._announce_again()

        asyncio.get_running_loop().create_task(restart())

    async def _heartbeat_loop(self) -> None:
        loop = asyncio.get_running_loop()
        next_announce = loop.time() + self.config.announce_interval_s
        while True:
            await asyncio.sleep(self.config.heartbeat_interval_s)
            self.send_heartbeats()
            interval = self.config.announce_interval_s
            if interval > 0 and loop.time() >= next_announce:
                next_announce = loop.time() + interval
                await self._announce_again()  # §8.2 with what was measured since

    def send_heartbeats(self) -> None:
        rt = self.runtime
        if rt is None or not self._gateway_peers:
            return
        payload = rt.heartbeat_payload()
        for peer in list(self._gateway_peers):
            msg = Heartbeat(
                protocol_version=PROTOCOL_VERSION, message_id=new_message_id(),
                timestamp=now_ms(), source_id=self.reactor_id, sequence_id=peer.next_seq(),
                destination_id=peer.remote_id, payload=payload,
            )  # fmt: skip
            peer.send(encode(msg))

    # ------------------------------------------------------------------ HTTP

    async def _ws(self, request: web.Request) -> web.StreamResponse:
        ws = PfapWebSocketResponse(max_msg_size=socket_limit(self.max_frame_bytes),
                                   decode_text=False,
                                   compress=True, heartbeat=self.ping_interval_s)  # fmt: skip
        set_pong_timeout(ws, self.pong_timeout_s)
        try:
            stream = await ws.prepare(request)
        except ConnectionResetError:  # the peer left during the handshake
            return handshake_abandoned()
        # A gateway's work link takes §12.4.2 batches (DESIGN §3): replies that are ready
        # together go back as one array frame, one message for the gateway to read.
        from_gateway = request.query.get("role") == "gateway"
        peer = Peer(ws, f"reactor<-{request.remote}", stream, batch=from_gateway)
        peer.remote_id = request.query.get("source_id")
        ws.answer_too_big(too_big_answer(self.reactor_id, peer.next_seq, self.max_frame_bytes))
        self._peers.add(peer)
        if from_gateway:
            self._gateway_peers.add(peer)
            self.send_heartbeats()  # the gateway learns our load at once
        try:
            async for frame in ws:
                if frame.type == WSMsgType.TEXT:
                    self._on_frame(peer, frame.data)
                elif frame.type == WSMsgType.BINARY:
                    self._on_error(peer, binary_frame_error())
                elif frame.type == WSMsgType.ERROR:
                    break
        finally:
            was_gateway = peer in self._gateway_peers
            self._gateway_peers.discard(peer)
            self._peers.discard(peer)
            await peer.close()
            if was_gateway and not self._gateway_peers:
                self._relink()
        return ws

    def _relink(self) -> None:
        """The gateway closed its work connection while ours to it may still be up (it
        dropped us as silent, or the link broke): announce again so it dials back."""
        rt = self.runtime
        if rt is not None and not rt.draining:
            self._tasks.append(asyncio.get_running_loop().create_task(self._announce_again()))

    async def _announce_again(self) -> None:
        """Re-send the announce over the control connection, if it is up; best effort."""
        rt = self.runtime
        if rt is None or rt.gateway is None or not rt.gateway.connected:
            return
        try:
            await self._announce(rt.gateway)
        except (PacketFlowError, OSError, TimeoutError) as exc:
            log.info("reactor %s: re-announce failed: %s", self.reactor_id, exc)

    def _on_frame(self, peer: Peer, data: bytes) -> None:
        rt = self.runtime
        assert rt is not None
        for item in decode_frame(data, self.max_frame_bytes):
            if isinstance(item, Submit):
                rt.submit(item, peer)
            elif isinstance(item, FrameError):
                self._on_error(peer, item)
            elif isinstance(item, Discover) and item.payload.discovery_type == "query":
                self._answer_query(peer, item)
            elif isinstance(item, Discover | Heartbeat):
                continue  # a gateway's acknowledgements need no answer
            else:
                rt.error_to(peer, InvalidPacket(
                    f"A reactor does not accept {type(item).__name__.lower()} messages",
                    field="message_type", expected_type="submit, discover or heartbeat",
                    received_type=type(item).__name__.lower(), validation_rule="not_served",
                ), item.message_id)  # fmt: skip

    def _on_error(self, peer: Peer, item: FrameError) -> None:
        assert self.runtime is not None
        self.runtime.error_to(peer, item.error, item.message_id, item.packet_id)

    def _answer_query(self, peer: Peer, msg: Discover) -> None:
        rt = self.runtime
        assert rt is not None
        announce = rt.announce_payload(self.endpoints())
        announce["discovery_type"] = "response"
        reply = Discover(
            protocol_version=PROTOCOL_VERSION, message_id=new_message_id(),
            timestamp=now_ms(), source_id=self.reactor_id, sequence_id=peer.next_seq(),
            correlation_id=msg.message_id, destination_id=msg.source_id,
            payload=msgspec.convert(announce, DiscoverPayload),
        )  # fmt: skip
        peer.send(encode(reply))

    def _gateway_admitted(self, request: web.Request) -> bool:
        """A gateway we announced to (its dial token), an operator's accept token, or a
        verified ``CN=gateway-*`` client certificate."""
        presented = request.headers.get(DIAL_TOKEN_HEADER)
        if presented is not None and any(
            same_secret(presented, t) for t in (*self._dial_tokens, *self.accept_tokens)
        ):
            return True
        cn = peer_common_name(request.transport)
        return cn is not None and cn.startswith("gateway-")

    @web.middleware
    async def _guard(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """Nobody reaches a reactor around the gateway (DESIGN §8): /ws only for an
        admitted gateway; /metrics for an admitted gateway or a loopback scraper;
        /health for anyone."""
        bad = credential_in_query(request.query.keys())
        if bad is not None:
            return denial(InvalidPacket(f"Credentials are not accepted in the URL ({bad!r})",
                                        field=f"query.{bad}",
                                        validation_rule="no_credentials_in_url"), 400)  # fmt: skip
        if request.path == "/health" or self._gateway_admitted(request):
            return await handler(request)
        if request.path == "/metrics" and is_loopback_host(request.remote or ""):
            return await handler(request)
        log.info("reactor %s refused %s from %s: no dial token", self.reactor_id, request.path,
                 request.remote)  # fmt: skip
        return denial(AuthenticationFailed(
            "A reactor accepts work only from the gateway it announced to: present its "
            f"{DIAL_TOKEN_HEADER}", field=DIAL_TOKEN_HEADER, validation_rule="dial_token",
        ), 401)  # fmt: skip

    async def _health(self, request: web.Request) -> web.Response:
        rt = self.runtime
        assert rt is not None
        body = msgspec.json.encode(rt.heartbeat_payload())
        status = 503 if rt.draining else 200
        return web.Response(body=body, status=status, content_type="application/json")

    async def _metrics(self, request: web.Request) -> web.Response:
        rt = self.runtime
        assert rt is not None
        return web.Response(body=generate_latest(rt.stats.registry),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})  # fmt: skip


def _has_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
