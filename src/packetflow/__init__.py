"""packetflow: the PacketFlow Affinity Protocol v1.0 — gateway, reactors, molecules, SDK."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .client import AsyncClient, PacketResult, SyncClient
    from .protocol.errors import GatewayUnreachable, PacketFlowError
    from .reactor.server import Reactor

__all__ = [
    "AsyncClient",
    "GatewayUnreachable",
    "PacketFlowError",
    "PacketResult",
    "Reactor",
    "SyncClient",
    "__version__",
    "connect",
    "connect_sync",
]


def connect(url: str | None = None, **options: Any) -> AsyncClient:
    """An async client: ``async with packetflow.connect(url) as pf: await pf.submit(...)``.

    ``url`` may be ``host:port``, ``http(s)://…`` or ``ws(s)://…/ws``; without one,
    ``$PACKETFLOW_URL`` or ``ws://127.0.0.1:8080/ws``. A failed dial raises
    ``packetflow.GatewayUnreachable``."""
    from .client import AsyncClient

    return AsyncClient(url, **options)


def connect_sync(url: str | None = None, **options: Any) -> SyncClient:
    """A blocking client: ``with packetflow.connect_sync(url) as pf: pf.submit(...)``."""
    from .client import SyncClient

    return SyncClient(url, **options)


def __getattr__(name: str) -> Any:
    # Lazy so `import packetflow` stays cheap for the CLI and the process pool.
    if name == "Reactor":
        from .reactor.server import Reactor

        return Reactor
    if name in ("AsyncClient", "SyncClient", "PacketResult"):
        from . import client

        return getattr(client, name)
    if name in ("PacketFlowError", "GatewayUnreachable"):
        from .protocol import errors

        return getattr(errors, name)
    raise AttributeError(name)
