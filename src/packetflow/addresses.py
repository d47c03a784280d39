"""How a user may write a gateway's address, and the one WebSocket URL it means."""

from __future__ import annotations

import os
from urllib.parse import urlsplit, urlunsplit

from .protocol.errors import InvalidAddress

# The gateway serves PFAP at this path (DESIGN §2); every other path answers 404.
WS_PATH = "/ws"
# Where clients look when given no address: the env var first, so scripts and the README's
# flag-free commands can point at a gateway on another port.
ENV_URL = "PACKETFLOW_URL"
LOCAL_GATEWAY = "ws://127.0.0.1:8080/ws"
_SCHEMES = {"ws": "ws", "wss": "wss", "http": "ws", "https": "wss"}


def default_gateway() -> str:
    """``$PACKETFLOW_URL``, else the local gateway ``packetflow up`` starts."""
    return os.environ.get(ENV_URL) or LOCAL_GATEWAY


def gateway_ws_url(text: str | None) -> str:
    """``host:port``, ``http(s)://host:port[/]`` or ``ws(s)://host:port[/ws]`` → the
    ``ws(s)://host:port/ws`` URL to dial. Raises InvalidAddress with a one-line hint."""
    if text is None:
        text = default_gateway()
    value = text.strip()
    if not value:
        raise InvalidAddress("the gateway address is empty; e.g. ws://127.0.0.1:8080/ws")
    if "://" not in value:
        value = "ws://" + value
    parts = urlsplit(value)
    scheme = _SCHEMES.get(parts.scheme.lower())
    if scheme is None:
        raise InvalidAddress(
            f"{text!r}: a gateway address is ws://, wss://, http://, https:// or host:port",
            details={"address": text},
        )
    try:
        _ = parts.port  # urlsplit checks the port only when asked
    except ValueError:
        raise InvalidAddress(f"{text!r}: the port is not a number",
                             details={"address": text}) from None  # fmt: skip
    if not parts.hostname:
        raise InvalidAddress(f"{text!r} names no host; e.g. 127.0.0.1:8080",
                             details={"address": text})  # fmt: skip
    # Another path is kept: a proxy may serve PFAP elsewhere; a 404 there says /ws.
    path = parts.path.rstrip("/") or WS_PATH
    return urlunsplit((scheme, parts.netloc, path, parts.query, ""))


def http_base(ws_url: str | None) -> str:
    """``ws://h:p/ws`` → ``http://h:p`` (the gateway's HTTP API shares the port)."""
    parts = urlsplit(gateway_ws_url(ws_url))
    scheme = "https" if parts.scheme == "wss" else "http"
    return urlunsplit((scheme, parts.netloc, "", "", ""))
