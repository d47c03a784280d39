"""DESIGN §8: what reactor credentials may do, and which announced endpoints the gateway
may dial (no SSRF through a stolen reactor key)."""

from __future__ import annotations

import pytest

from packetflow.protocol.errors import PermissionDenied
from packetflow.protocol.principals import GATEWAY, Principal
from packetflow.protocol.reactor_access import check_announced_endpoint, check_reactor_message

REACTOR = Principal("key:r", frozenset({"reactor"}), "api_key")
USER = Principal("key:u", frozenset({"packet_user"}), "api_key")


def test_reactor_announces_withdraws_and_heartbeats_for_itself() -> None:
    check_reactor_message(REACTOR, "announce", "r1", None)
    check_reactor_message(REACTOR, "announce", "r1", "r1")
    check_reactor_message(REACTOR, "withdraw", "r1", "r1")
    check_reactor_message(REACTOR, "heartbeat", "r1", "r1")


@pytest.mark.parametrize(
    ("principal", "kind", "rid", "bound", "rule"),
    [
        (REACTOR, "submit", None, "r1", "reactor_role"),
        (REACTOR, "query", None, None, "reactor_role"),
        (REACTOR, "coordinate", None, None, "reactor_role"),
        (REACTOR, "announce", "r2", "r1", "own_reactor"),
        (REACTOR, "withdraw", "r2", "r1", "own_reactor"),
        (USER, "announce", "r1", None, "reactor_role"),
        (USER, "withdraw", "r1", None, "reactor_role"),
    ],
)
def test_refusals_are_pf403(principal: Principal, kind: str, rid: str | None,
                            bound: str | None, rule: str) -> None:  # fmt: skip
    with pytest.raises(PermissionDenied) as caught:
        check_reactor_message(principal, kind, rid, bound)
    assert caught.value.code == "PF403" and caught.value.validation_rule == rule


def test_users_and_admins_are_not_narrowed() -> None:
    check_reactor_message(USER, "submit", None, None)
    check_reactor_message(GATEWAY, "announce", "any", None)


@pytest.mark.parametrize(
    ("url", "peer", "ok"),
    [
        ("ws://127.0.0.1:9/ws", "10.0.0.1", True),
        ("ws://localhost:9/ws", None, True),
        ("ws://[::1]:9/ws", None, True),
        ("ws://10.0.0.1:9/ws", "10.0.0.1", True),
        ("ws://10.0.0.2:9/ws", "10.0.0.1", False),
        ("ws://169.254.169.254/ws", "10.0.0.1", False),
        ("ws://internal.example:9/ws", "10.0.0.1", False),
    ],
)
def test_announced_endpoint_host(url: str, peer: str | None, ok: bool) -> None:
    if ok:
        check_announced_endpoint(url, peer, REACTOR)
    else:
        with pytest.raises(PermissionDenied):
            check_announced_endpoint(url, peer, REACTOR)
    check_announced_endpoint(url, peer, GATEWAY)  # an admin may announce anything
