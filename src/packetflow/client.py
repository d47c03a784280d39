"""The Python SDK: an async PFAP client over one WebSocket, and a blocking wrapper.

Many requests share one connection; replies are matched by ``correlation_id``. Messages
that stream (ED events, molecule progress) are delivered to a per-request queue.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import aiohttp
import msgspec
from aiohttp import WSMsgType
from msgspec import UNSET, UnsetType

from .addresses import gateway_ws_url
from .protocol.errors import (
    AuthenticationFailed,
    GatewayUnreachable,
    NetworkTimeout,
    PacketFlowError,
    PermissionDenied,
    ServiceUnavailable,
)
from .protocol.messages import (
    PROTOCOL_VERSION,
    Coordinate,
    CoordinatePayload,
    Discover,
    DiscoverPayload,
    Error,
    FrameError,
    Message,
    Packet,
    Result,
    RoutingPreferences,
    Submit,
    SubmitPayload,
    decode_frame,
    decode_json,
    encode,
    encode_json,
    error_from_payload,
)
from .runner import cancel_and_wait
from .transport import DEFLATE_WINDOW_BITS, Peer, new_message_id, now_ms

if TYPE_CHECKING:
    from .security.crypto import PayloadCipher

log = logging.getLogger("packetflow.client")

T = TypeVar("T")

# Room for the largest frame plus slack; frames over DESIGN §3's limit are refused upstream.
CLIENT_MAX_MSG = 8 * 1024 * 1024
# What a reply may take beyond the packet's own timeout before the client gives up.
REPLY_SLACK_S = 5.0


@dataclass(frozen=True, slots=True)
class PacketResult:
    """A RESULT, decoded: ``data`` is the handler's result data."""

    packet_id: str | None
    status: str
    data: Any
    processing_metadata: dict[str, Any] | None
    reactor_info: dict[str, Any] | None
    message: Result

    @property
    def result(self) -> Any:
        return self.data.get("result") if isinstance(self.data, dict) else self.data

    @property
    def reactor_id(self) -> str | None:
        meta = self.processing_metadata or self.reactor_info or {}
        value = meta.get("reactor_id")
        return value if isinstance(value, str) else None


def _packet_result(msg: Result) -> PacketResult:
    return PacketResult(
        packet_id=msg.payload.packet_id,
        status=msg.payload.status,
        data=decode_json(msg.payload.data),
        processing_metadata=msg.payload.processing_metadata,
        reactor_info=msg.payload.reactor_info,
        message=msg,
    )


def raise_for(msg: Message) -> Message:
    """Raise the PacketFlowError an ERROR reply carries; pass other replies through."""
    if isinstance(msg, Error):
        err = error_from_payload(msg.payload)
        err.envelope = msg  # type: ignore[attr-defined]
        raise err
    return msg


class AsyncClient:
    """``async with AsyncClient(url) as pf: await pf.submit("cf", "ping")``.

    With ``reconnect=True`` a lost connection is re-dialled with backoff and
    ``on_connect`` runs again after each dial (reactors re-announce there); requests that
    were waiting on the lost connection fail with PF502.

    Credentials (DESIGN §8): ``api_key`` or ``api_key_file``, else ``PACKETFLOW_API_KEY``
    / ``PACKETFLOW_API_KEY_FILE``, else the key a gateway on this machine recorded for
    the URL's host:port (security/locator.py). For ``wss://``: ``ca_file`` and, for mTLS,
    ``cert``/``key`` (also found through the same record); ``ssl`` overrides all three.
    ``credentials=False`` sends only ``headers``.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        source_id: str | None = None,
        reconnect: bool = False,
        on_connect: Callable[[AsyncClient], Awaitable[None]] | None = None,
        headers: dict[str, str] | None = None,
        connect_timeout: float = 10.0,
        encryption_key: str | bytes | None = None,
        api_key: str | None = None,
        api_key_file: str | None = None,
        ca_file: str | None = None,
        cert: str | None = None,
        key: str | None = None,
        ssl: Any = None,
        credentials: bool = True,
    ) -> None:
        # host:port and http(s):// are accepted too; a bad address raises InvalidAddress.
        url = gateway_ws_url(url)
        self.url = url
        self.source_id = source_id or f"client-py-{uuid.uuid4().hex[:8]}"
        self.reconnect = reconnect
        self.on_connect = on_connect
        self.headers = headers or {}
        self.ssl: Any = ssl
        if credentials:
            from .security import locator

            self.headers = locator.auth_headers(url, self.headers, api_key=api_key,
                                                api_key_file=api_key_file)  # fmt: skip
            if ssl is None and url.startswith("wss://"):
                entry = locator.lookup(url) or locator.Entry()
                from .security.tls import client_context

                self.ssl = client_context(ca_file or entry.ca_file, cert or entry.cert_file,
                                          key or entry.key_file)  # fmt: skip
        self.connect_timeout = connect_timeout
        self._session: aiohttp.ClientSession | None = None
        self._peer: Peer | None = None
        self._pending: dict[str, asyncio.Future[Message]] = {}
        self._streams: dict[str, asyncio.Queue[Message]] = {}
        self._reader: asyncio.Task[None] | None = None
        self._on_connect_task: asyncio.Task[None] | None = None  # after a redial
        self._closing = False
        self._connected = asyncio.Event()
        # §11.3 end-to-end payload encryption: data is sealed for the reactor, the gateway
        # routes ciphertext (security/crypto.py); None sends data in clear.
        self._cipher: PayloadCipher | None = None
        if encryption_key is not None:
            from .security.crypto import PayloadCipher

            secret = encryption_key.encode() if isinstance(encryption_key, str) else encryption_key
            self._cipher = PayloadCipher(secret)

    # ------------------------------------------------------------------ connection

    async def __aenter__(self) -> AsyncClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __await__(self) -> Any:
        return self.__aenter__().__await__()

    @property
    def connected(self) -> bool:
        return self._peer is not None and not self._peer.closed

    async def connect(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        try:
            await self._dial()
        except BaseException:
            # A refused or failed dial leaves nothing open (callers retry with new
            # clients: the gateway's static list, a reactor waiting for its gateway).
            session, self._session = self._session, None
            await session.close()
            raise
        self._reader = asyncio.get_running_loop().create_task(self._read_loop())
        if self.on_connect is not None:
            await self.on_connect(self)

    async def _dial(self) -> None:
        assert self._session is not None
        try:
            ws = await self._session.ws_connect(
                self.url, headers=self.headers, max_msg_size=CLIENT_MAX_MSG, decode_text=False,
                ssl=self.ssl if self.ssl is not None else True,
                timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=5.0),
                autoping=True,
                # §12.4.1 permessage-deflate, offered; the gateway deflates only large
                # replies (transport.DEFAULT_DEFLATE_MIN_BYTES).
                compress=DEFLATE_WINDOW_BITS,
            )  # fmt: skip
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status == 401:
                raise AuthenticationFailed(
                    f"{self.url} refused the credentials ({exc.message}); pass api_key, set "
                    "PACKETFLOW_API_KEY, or run on the gateway's machine",
                    details={"status": exc.status},
                ) from None
            if exc.status in (400, 403):
                raise PermissionDenied(f"{self.url} refused the connection: {exc.message}",
                                       details={"status": exc.status}) from None  # fmt: skip
            hint = ("gateway URLs end in /ws" if exc.status == 404
                    else "is it a packetflow gateway?")  # fmt: skip
            raise GatewayUnreachable(
                f"{self.url} answered HTTP {exc.status} to the WebSocket upgrade: {hint}",
                details={"reason": "handshake_refused", "status": exc.status},
            ) from None
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise GatewayUnreachable(
                f"cannot reach {self.url} ({_describe(exc)}): is packetflow up running?",
                details={"reason": "unreachable", "exception_type": type(exc).__name__},
            ) from None
        self._peer = Peer(ws, f"client->{self.url}")
        self._connected.set()

    async def close(self) -> None:
        self._closing = True
        await cancel_and_wait(self._on_connect_task)
        await cancel_and_wait(self._reader)
        if self._peer is not None:
            await self._peer.close()
        if self._session is not None:
            await self._session.close()
            self._session = None
        self._fail_pending(NetworkTimeout("Client closed", details={"reason": "closed"}))

    async def _read_loop(self) -> None:
        while not self._closing:
            peer = self._peer
            assert peer is not None
            try:
                async for frame in peer.ws:
                    if frame.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                        self._dispatch(frame.data)
                    elif frame.type == WSMsgType.ERROR:
                        break
            except (ConnectionError, aiohttp.ClientError) as exc:
                log.debug("client %s: read failed: %s", self.source_id, exc)
            await peer.close()
            self._connected.clear()
            self._fail_pending(
                NetworkTimeout(
                    f"Connection to {self.url} was lost", details={"reason": "connection_lost"}
                )
            )
            if self._closing or not self.reconnect:
                return
            await self._redial()

    async def _redial(self) -> None:
        delay = 0.05
        while not self._closing:
            try:
                await self._dial()
            except (OSError, aiohttp.ClientError, TimeoutError, PacketFlowError) as exc:
                log.debug("client %s: redial failed: %s", self.source_id, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            if self.on_connect is not None:
                # Not awaited here: this runs inside the read loop, and on_connect waits
                # for replies (a reactor's re-announce) that only the read loop can read.
                # Awaiting it starved itself: "No reply within 10 s", though the gateway
                # had answered at once.
                self._on_connect_task = asyncio.get_running_loop().create_task(
                    self._run_on_connect(self.on_connect)
                )
            return

    async def _run_on_connect(self, on_connect: Callable[[AsyncClient], Awaitable[None]]) -> None:
        try:
            await on_connect(self)
        except (PacketFlowError, OSError, aiohttp.ClientError, TimeoutError) as exc:
            log.warning("client %s: on_connect failed: %s", self.source_id, exc)

    def _fail_pending(self, err: PacketFlowError) -> None:
        pending, self._pending = self._pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(err)
        for queue in self._streams.values():
            queue.put_nowait(_closed_marker(err))

    def _dispatch(self, raw: bytes | str) -> None:
        for item in decode_frame(raw):
            if isinstance(item, FrameError):
                log.warning("client %s: bad frame from server: %s", self.source_id, item.error)
                continue
            cid = item.correlation_id
            if cid is None:
                continue
            stream = self._streams.get(cid)
            if stream is not None:
                stream.put_nowait(item)
                continue
            fut = self._pending.pop(cid, None)
            if fut is not None and not fut.done():
                fut.set_result(item)

    # ------------------------------------------------------------------ requests

    def envelope_fields(self) -> dict[str, Any]:
        peer = self._peer
        return {
            "protocol_version": PROTOCOL_VERSION,
            "message_id": new_message_id(),
            "timestamp": now_ms(),
            "source_id": self.source_id,
            "sequence_id": peer.next_seq() if peer is not None else None,
        }

    async def send(self, msg: Message | bytes) -> None:
        """Send without waiting for a reply."""
        if not self.connected and self.reconnect and not self._closing:
            await asyncio.wait_for(self._connected.wait(), self.connect_timeout)
        peer = self._peer
        if peer is None or not peer.send(msg if isinstance(msg, bytes) else encode(msg)):
            raise NetworkTimeout(f"Not connected to {self.url}", details={"reason": "closed"})

    async def request(self, msg: Message, timeout: float | None = 60.0) -> Message:
        """Send ``msg`` and wait for the message correlated to it (ERRORs raise)."""
        fut: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._pending[msg.message_id] = fut
        try:
            await self.send(msg)
            reply = await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            raise NetworkTimeout(
                f"No reply to {msg.message_id} within {timeout} s",
                details={"reason": "reply_timeout"},
            ) from None
        finally:
            self._pending.pop(msg.message_id, None)
        return raise_for(reply)

    async def stream(self, msg: Message) -> AsyncIterator[Message]:
        """Send ``msg`` and yield every message correlated to it until the caller stops."""
        queue: asyncio.Queue[Message] = asyncio.Queue()
        self._streams[msg.message_id] = queue
        try:
            await self.send(msg)
            while True:
                item = await queue.get()
                if isinstance(item, _Closed):
                    raise item.error
                yield raise_for(item)
        finally:
            self._streams.pop(msg.message_id, None)

    def build_submit(
        self,
        group: str,
        element: str,
        data: dict[str, Any] | None = None,
        *,
        priority: int | None = None,
        timeout_ms: int | None = None,
        packet_id: str | None = None,
        ttl: int | None = None,
        routing_preferences: dict[str, Any] | RoutingPreferences | None = None,
        dependencies: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        destination_id: str | UnsetType | None = UNSET,
    ) -> Submit:
        prefs = routing_preferences
        if isinstance(prefs, dict):
            prefs = msgspec.convert(prefs, RoutingPreferences)
        # Built without validation: the gateway validates once, and its PF002 names the
        # field, so a client sees the same answer whatever SDK it uses.
        packet = Packet(
            group=group,  # type: ignore[arg-type]
            element=element, id=packet_id, priority=priority, timeout_ms=timeout_ms,
            dependencies=tuple(dependencies or ()), metadata=metadata,
            data=msgspec.Raw(encode_json(self._seal(group, element, data))),
        )  # fmt: skip
        fields = self.envelope_fields()
        # UNSET: the gateway routes; a reactor id pins it there; None broadcasts (§4.1).
        fields["destination_id"] = destination_id
        return Submit(
            **fields, ttl=ttl, priority=priority,
            payload=SubmitPayload(packet=packet, routing_preferences=prefs),
        )  # fmt: skip

    def _seal(self, group: str, element: str, data: dict[str, Any] | None) -> Any:
        value = data if data is not None else {}
        if self._cipher is None:
            return value
        return self._cipher.seal(value, group, element)

    def _opened(self, result: PacketResult, group: str, element: str) -> PacketResult:
        """A sealed RESULT's data, decrypted (PF002 DecryptionFailed if it cannot be)."""
        from .security.crypto import is_envelope

        if self._cipher is None or not is_envelope(result.data):
            return result
        value, _, _ = self._cipher.open(result.data, group, element, result=True)
        return dataclasses.replace(result, data=value)

    async def submit(
        self,
        group: str,
        element: str,
        data: dict[str, Any] | None = None,
        *,
        wait: float | None = None,
        **options: Any,
    ) -> PacketResult:
        """Submit one packet and wait for its RESULT; an ERROR raises PacketFlowError.

        ``options``: priority, timeout_ms, packet_id, ttl, routing_preferences,
        dependencies, metadata, destination_id. ``wait`` bounds the wait in seconds
        (default: the packet's timeout plus slack).
        """
        msg = self.build_submit(group, element, data, **options)
        timeout_ms = options.get("timeout_ms")
        limit = wait if wait is not None else (
            (timeout_ms / 1000.0 if timeout_ms else 3600.0) + REPLY_SLACK_S
        )  # fmt: skip
        reply = await self.request(msg, limit)
        if not isinstance(reply, Result):
            raise ServiceUnavailable(f"Expected a RESULT, got {type(reply).__name__}")
        return self._opened(_packet_result(reply), group, element)

    async def subscribe(self, topic: str, **options: Any) -> AsyncIterator[dict[str, Any]]:
        """ed:subscribe: yields each event's data (DESIGN §10) until the caller stops."""
        msg = self.build_submit("ed", "subscribe", {"topic": topic}, **options)
        async for item in self.stream(msg):
            if isinstance(item, Result) and item.payload.status == "event":
                yield decode_json(item.payload.data)

    async def discover(self, query: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """DISCOVER query: the gateway's registry (§4.2.5 response)."""
        msg = Discover(**self.envelope_fields(),
                       payload=DiscoverPayload(discovery_type="query", query=query))  # fmt: skip
        reply = await self.request(msg, 10.0)
        if not isinstance(reply, Discover):
            raise ServiceUnavailable(f"Expected a DISCOVER response, got {type(reply).__name__}")
        return reply.payload.reactors or []

    async def coordinate(self, payload: dict[str, Any]) -> AsyncIterator[Coordinate]:
        """Send a COORDINATE message and yield every COORDINATE correlated to it."""
        msg = Coordinate(**self.envelope_fields(),
                         payload=msgspec.convert(payload, CoordinatePayload))  # fmt: skip
        async for item in self.stream(msg):
            if isinstance(item, Coordinate):
                yield item


def _describe(exc: BaseException) -> str:
    """The cause of a failed dial in a few words (aiohttp's messages repeat the URL)."""
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return "timed out"
    os_error = getattr(exc, "os_error", exc)
    if isinstance(os_error, OSError):
        if os_error.errno and os_error.errno > 0:
            return os.strerror(os_error.errno).lower()
        if os_error.strerror:  # name resolution (gaierror) uses negative codes
            return os_error.strerror.lower()
    return str(exc) or type(exc).__name__


@dataclass(frozen=True, slots=True)
class _Closed:
    error: PacketFlowError


def _closed_marker(err: PacketFlowError) -> Any:
    return _Closed(err)


class SyncClient:
    """A blocking client for scripts: runs an AsyncClient on a private event loop thread."""

    def __init__(self, url: str | None = None, **options: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name="packetflow-client")  # fmt: skip
        self._thread.start()
        self._client = AsyncClient(url, **options)

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def __enter__(self) -> SyncClient:
        try:
            self._run(self._client.connect())
        except BaseException:
            self._stop_loop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def submit(self, group: str, element: str, data: dict[str, Any] | None = None,
               **options: Any) -> PacketResult:  # fmt: skip
        return self._run(self._client.submit(group, element, data, **options))

    def discover(self, query: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        return self._run(self._client.discover(query))

    def close(self) -> None:
        if self._loop.is_running():
            self._run(self._client.close())
        self._stop_loop()

    def _stop_loop(self) -> None:
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
        if not self._loop.is_running():
            self._loop.close()
