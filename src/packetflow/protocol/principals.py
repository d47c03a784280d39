"""Who is on the other end of a connection (PFAP §11.1, §11.2): the authenticated
principal that every authorization rule and every piece of per-owner state is keyed by.

Authentication (``packetflow.security``) makes one ``Principal`` per connection or HTTP
request; the gateway carries it on the reply target and the rules in this package decide
from it. A principal is immutable: a revoked key ends the connection, it never mutates it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

# §11.2.1's roles, plus the `reactor` role a reactor's credentials carry (DESIGN §8).
PACKET_USER = "packet_user"
MOLECULE_ORCHESTRATOR = "molecule_orchestrator"
SYSTEM_ADMIN = "system_admin"
REACTOR = "reactor"
# What a reactor's own elements send through its gateway (co:scatter's chunks, co:gather,
# cf:coordinate, ed:trigger): any non-admin packet, molecules, events. A role of its own so
# that `reactor` alone stays "announce and heartbeat, nothing else".
REACTOR_FANOUT = "reactor_fanout"
DEFAULT_ROLES = (PACKET_USER, MOLECULE_ORCHESTRATOR, SYSTEM_ADMIN, REACTOR, REACTOR_FANOUT)

_EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated identity.

    ``id`` is stable across connections of the same credential (``key:<key_id>``,
    ``jwt:<sub>``, ``cert:<CN>``, ``gateway`` for the gateway's own work); state that
    belongs to a principal (idempotency window, packets, molecules, subscriptions) is
    keyed by it. ``permissions`` are granted on top of the roles' (JWT ``permissions``
    claims); ``attributes`` feed §11.2.2 ABAC rules (``principal.clearance_level`` …).
    """

    id: str
    roles: frozenset[str]
    method: str  # "api_key", "jwt", "mtls" or "internal"
    permissions: frozenset[str] = frozenset()
    # A factory: Python 3.11 refuses an unhashable (mappingproxy) default as "mutable".
    attributes: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)

    @property
    def is_admin(self) -> bool:
        return SYSTEM_ADMIN in self.roles


# The gateway acting for itself (molecule steps, co:scatter children it submits): it may
# do anything, and what it does is attributed to the principal that asked for it.
GATEWAY = Principal("gateway", frozenset({SYSTEM_ADMIN}), "internal")
