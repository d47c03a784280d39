"""The gateway's front door (DESIGN §8): every HTTP request and WebSocket upgrade but the
health probes is authenticated once, by API key, JWT or client certificate, before any
handler runs; open connections are closed when their key is revoked or their token
expires."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import WSCloseCode, web

from ..protocol.authentication import (
    API_KEY_HEADER,
    AUTHORIZATION_HEADER,
    DEFAULT_ALLOWED_SUBJECTS,
    bearer_token,
    credential_in_query,
    missing_credentials,
    origin_allowed,
    principal_from_certificate,
)
from ..protocol.errors import AuthenticationFailed, InvalidPacket, PacketFlowError, PermissionDenied
from ..protocol.principals import Principal
from ..protocol.reactor_access import is_reactor_only
from .keystore import KeyStore
from .tls import TlsConfig, peer_common_name

if TYPE_CHECKING:
    # PyJWT (and the cryptography it loads) costs 8 MiB of every gateway's memory; only
    # one started with --jwt-* imports it (cli.py).
    from .tokens import JwtVerifier

log = logging.getLogger("packetflow.security")

# Paths anyone may read: liveness/readiness probes carry no data worth protecting, and
# orchestrators probe them without credentials.
OPEN_PATHS = frozenset({"/health", "/health/ready"})
# How often open connections are checked against revocations and token expiry; with the
# key file's own 1 s check this keeps "revoked → closed" well under the 5 s contract.
SWEEP_S = 1.0
PRINCIPAL_KEY = "principal"


@dataclass(slots=True)
class SecurityConfig:
    """Authentication settings of one gateway (or reactor) process."""

    data_dir: Path = field(default_factory=lambda: Path("data"))
    jwt: JwtVerifier | None = None
    tls: TlsConfig | None = None
    allowed_subjects: tuple[str, ...] = DEFAULT_ALLOWED_SUBJECTS
    allowed_origins: tuple[str, ...] = ()


@dataclass(slots=True)
class _Open:
    principal: Principal
    expires: float | None  # Unix seconds (JWT exp)
    close: Callable[[str], Awaitable[None]]


def denial(err: PacketFlowError, status: int) -> web.Response:
    """A 400/401/403 with the PF error's payload: what was wrong, never which keys exist."""
    return web.json_response({"error": err.to_payload()}, status=status)


class Gatekeeper:
    def __init__(self, config: SecurityConfig, open_paths: frozenset[str] = OPEN_PATHS) -> None:
        self.config = config
        # Paths served without credentials: the probes, plus whatever the server adds
        # that holds no data (the dashboard's static page and assets).
        self.open_paths = open_paths
        self.keys = KeyStore(config.data_dir)
        self._open: dict[int, _Open] = {}
        self._task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ authentication

    def authenticate(self, request: web.Request) -> tuple[Principal, float | None]:
        """The principal of ``request`` and when its credentials expire; PF401 otherwise."""
        self.keys.maybe_reload(time.monotonic())
        key = request.headers.get(API_KEY_HEADER)
        if key is not None:
            return self.keys.authenticate(key.strip()), None
        auth = request.headers.get(AUTHORIZATION_HEADER)
        if auth is not None:
            if self.config.jwt is None:
                raise AuthenticationFailed("This gateway accepts no JWTs (no --jwt-* key)",
                                           field=AUTHORIZATION_HEADER,
                                           validation_rule="jwt_disabled")  # fmt: skip
            return self.config.jwt.verify(bearer_token(auth))
        cn = peer_common_name(request.transport)
        if cn is not None:
            return principal_from_certificate(cn, self.config.allowed_subjects), None
        raise missing_credentials()

    @web.middleware
    async def middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        bad = credential_in_query(request.query.keys())
        if bad is not None:
            # Refused before anything else, and never logged with its value.
            return denial(InvalidPacket(
                f"Credentials are not accepted in the URL (query parameter {bad!r}); send "
                f"them in the {API_KEY_HEADER} or Authorization header",
                field=f"query.{bad}", validation_rule="no_credentials_in_url",
            ), 400)  # fmt: skip
        if request.path in self.open_paths:
            return await handler(request)
        upgrade = request.headers.get("Upgrade", "").lower() == "websocket"
        if upgrade and not origin_allowed(
            request.headers.get("Origin"), request.host, self.config.allowed_origins
        ):
            return denial(PermissionDenied(
                "WebSocket upgrade from a foreign Origin refused (gateway --allow-origin)",
                field="Origin", validation_rule="same_origin",
            ), 403)  # fmt: skip
        try:
            principal, expires = self.authenticate(request)
        except AuthenticationFailed as err:
            log.info("authentication failed from %s on %s: %s", request.remote, request.path,
                     err.message)  # fmt: skip
            return denial(err, 401)
        if is_reactor_only(principal) and not upgrade:
            # Reactor credentials announce and heartbeat over /ws; nothing over HTTP.
            return denial(PermissionDenied(
                "Reactor credentials only announce and heartbeat over /ws",
                field="path", validation_rule="reactor_role",
                details={"principal": principal.id, "operation": request.path},
            ), 403)  # fmt: skip
        request[PRINCIPAL_KEY] = principal
        request["credentials_expire"] = expires
        return await handler(request)

    # ------------------------------------------------------------------ open connections

    def track(self, token: object, principal: Principal, expires: float | None,
              close: Callable[[str], Awaitable[None]]) -> None:  # fmt: skip
        self._open[id(token)] = _Open(principal, expires, close)

    def untrack(self, token: object) -> None:
        self._open.pop(id(token), None)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._sweep_loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_S)
            try:
                await self.sweep(time.time())
            except (OSError, ValueError) as exc:  # never let one bad file end the sweeps
                log.error("credential sweep failed: %s", exc)

    async def sweep(self, now: float) -> None:
        """Close connections whose key was revoked or whose token expired."""
        self.keys.maybe_reload(time.monotonic())
        for token, entry in list(self._open.items()):
            reason = None
            p = entry.principal
            if p.method == "api_key" and not self.keys.is_live(p.id.removeprefix("key:")):
                reason = "credentials revoked"
            elif entry.expires is not None and now >= entry.expires:
                reason = "credentials expired"
            if reason is not None:
                self._open.pop(token, None)
                log.info("closing connection of %s: %s", p.id, reason)
                await entry.close(reason)


def ws_closer(ws: web.WebSocketResponse) -> Callable[[str], Awaitable[None]]:
    async def close(reason: str) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):  # it may be gone already
            await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=reason.encode())

    return close


def same_secret(presented: str | None, expected: str | None) -> bool:
    return presented is not None and expected is not None and hmac.compare_digest(
        presented.encode(), expected.encode())  # fmt: skip


def principal_of(request: web.Request) -> Principal | None:
    value: Any = request.get(PRINCIPAL_KEY)
    return value if isinstance(value, Principal) else None
