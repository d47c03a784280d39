"""What a connection may do with reactor credentials (DESIGN §8): announce, withdraw and
heartbeat for the one reactor it speaks for, and announce only endpoints the gateway may
safely dial. Authorization proper (roles per packet) is the general check's; this is the
part that is about reactor credentials, kept small so it can fold into it.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from .errors import PermissionDenied
from .principals import REACTOR, Principal

# Who may announce a reactor: its own credentials, or an operator.
ANNOUNCE_ROLES = frozenset({REACTOR, "system_admin"})


def is_reactor_only(principal: Principal) -> bool:
    """Reactor credentials and nothing more: the narrow rule below applies. A reactor
    whose elements fan out (``reactor_fanout``, as `packetflow up` gives its reactors) may
    also submit what that role allows."""
    return principal.roles == {REACTOR}


def check_reactor_message(
    principal: Principal, kind: str, reactor_id: str | None, bound_id: str | None
) -> None:
    """Raise PermissionDenied (PF403) unless ``principal`` may send this message.

    ``kind`` is ``announce``, ``withdraw``, ``query`` (DISCOVER types), ``heartbeat``,
    ``submit`` or ``coordinate``; ``reactor_id`` the reactor the message speaks for;
    ``bound_id`` the reactor this connection first announced (None before that).
    A reactor-only principal speaks for one reactor per connection; anyone announcing
    needs a role in ANNOUNCE_ROLES.
    """
    if kind in ("announce", "withdraw") and not (principal.roles & ANNOUNCE_ROLES):
        raise PermissionDenied(
            f"{principal.id} may not {kind} reactors: that needs reactor credentials",
            field="payload.discovery_type", validation_rule="reactor_role",
            details={"principal": principal.id, "operation": f"discover:{kind}",
                     "required_permission": "reactor:announce"},
        )  # fmt: skip
    if not is_reactor_only(principal):
        return
    if kind not in ("announce", "withdraw", "heartbeat"):
        raise PermissionDenied(
            f"Reactor credentials only announce, withdraw and heartbeat (not {kind})",
            field="message_type", validation_rule="reactor_role",
            details={"principal": principal.id, "operation": kind,
                     "required_permission": "packet:submit" if kind == "submit" else kind},
        )  # fmt: skip
    if bound_id is not None and reactor_id != bound_id:
        raise PermissionDenied(
            f"This connection speaks for reactor {bound_id}, not {reactor_id}",
            field="payload.reactor_id", validation_rule="own_reactor",
            details={"principal": principal.id, "reactor_id": reactor_id,
                     "required_permission": "reactor:withdraw_other"},
        )  # fmt: skip


def is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_announced_endpoint(url: str, peer_host: str | None, principal: Principal) -> None:
    """The gateway dials what reactors announce: without this, a stolen reactor key would
    make the gateway connect anywhere (SSRF). The endpoint's host must be the announcing
    connection's own address or loopback; an admin may announce any endpoint."""
    if principal.is_admin:
        return
    host = urlsplit(url).hostname or ""
    if is_loopback_host(host) or (peer_host is not None and _same_host(host, peer_host)):
        return
    raise PermissionDenied(
        f"Announced endpoint host {host!r} is neither this connection's address nor loopback",
        field="payload.reactor_info.endpoints.websocket", validation_rule="endpoint_host",
        details={"principal": principal.id, "peer": peer_host,
                 "required_permission": "system:admin"},
    )  # fmt: skip


def _same_host(a: str, b: str) -> bool:
    try:
        return ipaddress.ip_address(a.strip("[]")) == ipaddress.ip_address(b.strip("[]"))
    except ValueError:
        return a.lower() == b.lower()
