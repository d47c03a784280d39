"""PFAP §11.2.1 roles and permissions (protocol/permissions.py), DESIGN §8."""

from __future__ import annotations

import pytest

from packetflow.protocol.permissions import (
    DEFAULT_ADMIN_ACTIONS,
    Authorizer,
    Policy,
    RateLimits,
    Role,
    element_action,
    granted,
    pattern_covers,
    topic_allowed,
)
from packetflow.protocol.principals import (
    GATEWAY,
    MOLECULE_ORCHESTRATOR,
    PACKET_USER,
    REACTOR,
    SYSTEM_ADMIN,
    Principal,
)


def who(*roles: str, perms: tuple[str, ...] = (), pid: str = "key:u1") -> Principal:
    return Principal(pid, frozenset(roles), "api_key", frozenset(perms))


# (role, a permitted action, a forbidden action): one row per default role.
ROLE_CASES = [
    (PACKET_USER, "df:transform", "co:broadcast"),
    (PACKET_USER, "cf:ping", "cf:shutdown"),
    (MOLECULE_ORCHESTRATOR, "co:consensus", "df:transform"),
    (MOLECULE_ORCHESTRATOR, "mc:optimize", "mc:optimize:apply"),
    (SYSTEM_ADMIN, "cf:shutdown", None),
    (REACTOR, "reactor:announce", "cf:ping"),
    (REACTOR, "reactor:heartbeat", "reactor:withdraw_other"),
]


@pytest.mark.parametrize(("role", "allowed", "denied"), ROLE_CASES)
def test_default_roles_pfap_11_2_1(role: str, allowed: str, denied: str | None) -> None:
    auth = Authorizer()
    principal = who(role)
    assert auth.allows(principal, allowed)
    if denied is not None:
        assert not auth.allows(principal, denied)


def test_admin_may_do_every_admin_action() -> None:
    auth = Authorizer()
    for action in DEFAULT_ADMIN_ACTIONS:
        assert auth.allows(who(SYSTEM_ADMIN), action)
        assert auth.allows(GATEWAY, action)
        assert not auth.allows(who(PACKET_USER, MOLECULE_ORCHESTRATOR), action)


def test_element_wildcards_never_grant_admin_actions() -> None:
    """A JWT's "cf:*" (§11.1.2 example) may ping and health-check, not shut down."""
    perms = {"cf:*", "df:trans*", "*:ping"}
    assert granted(perms, "cf:health", DEFAULT_ADMIN_ACTIONS)
    assert granted(perms, "df:transform", DEFAULT_ADMIN_ACTIONS)
    assert granted(perms, "co:ping", DEFAULT_ADMIN_ACTIONS)
    assert not granted(perms, "df:validate", DEFAULT_ADMIN_ACTIONS)
    assert not granted(perms, "cf:shutdown", DEFAULT_ADMIN_ACTIONS)
    assert not granted(perms, "cf:restart", DEFAULT_ADMIN_ACTIONS)
    assert not granted({"*:*"}, "molecule:create", DEFAULT_ADMIN_ACTIONS)  # scopes: exact


def test_scopes_pfap_11_1_1() -> None:
    assert granted({"packet:submit"}, "df:anything", DEFAULT_ADMIN_ACTIONS)
    assert not granted({"packet:submit"}, "rm:scale", DEFAULT_ADMIN_ACTIONS)
    assert not granted({"packet:submit"}, "molecule:create", DEFAULT_ADMIN_ACTIONS)
    assert granted({"system:admin"}, "rm:scale", DEFAULT_ADMIN_ACTIONS)
    assert granted({"reactor:monitor"}, "reactor:monitor", DEFAULT_ADMIN_ACTIONS)
    assert not granted({"reactor:monitor"}, "cf:ping", DEFAULT_ADMIN_ACTIONS)


def test_mc_optimize_with_apply_is_its_own_action() -> None:
    assert element_action("mc", "optimize", {"apply": True}) == "mc:optimize:apply"
    assert element_action("mc", "optimize", {"apply": False}) == "mc:optimize"
    assert element_action("mc", "optimize", None) == "mc:optimize"
    assert element_action("df", "transform", {"apply": True}) == "df:transform"


def test_jwt_permissions_add_to_roles() -> None:
    auth = Authorizer()
    assert auth.allows(who(perms=("df:aggregate",)), "df:aggregate")
    assert not auth.allows(who(), "df:aggregate")


def test_topic_patterns_cover_subscriptions() -> None:
    assert pattern_covers("orders.*", "orders.created")
    assert pattern_covers("orders.*", "orders.*")
    assert not pattern_covers("orders.*", "orders.**")  # would leak orders.a.b
    assert not pattern_covers("orders.*", "orders.a.b")
    assert pattern_covers("orders.**", "orders.a.b")
    assert pattern_covers("orders.**", "orders.*.eu")
    assert not pattern_covers("orders.**", "orders")
    assert not pattern_covers("orders.**", "*")
    assert pattern_covers("**", "*")
    assert not pattern_covers("orders.created", "payments.created")
    assert topic_allowed({"topic:signal.**"}, "signal.deploy")
    assert not topic_allowed({"topic:signal.**"}, "orders.created")
    assert not topic_allowed({"ed:subscribe"}, "orders.created")
    assert topic_allowed({"*"}, "anything")


def test_verdicts_are_cached_bounded_and_invalidated() -> None:
    auth = Authorizer(max_entries=8)
    for n in range(20):
        auth.allows(who(PACKET_USER, pid=f"key:{n}"), "cf:ping")
    assert len(auth) == 8
    principal = who("auditor")
    assert not auth.allows(principal, "cf:health")
    auth.invalidate(Policy({"auditor": Role("auditor", frozenset({"cf:health"}))}))
    assert auth.allows(principal, "cf:health")


def test_same_id_with_other_claims_gets_its_own_verdict() -> None:
    auth = Authorizer()
    assert not auth.allows(who(pid="jwt:sam"), "df:aggregate")
    assert auth.allows(who(pid="jwt:sam", perms=("df:aggregate",)), "df:aggregate")


def test_rate_limits_per_role() -> None:
    policy = Policy()
    limits = policy.rate_limits_of(who(PACKET_USER))
    assert limits["packets"] == pytest.approx(1000 / 60)
    assert limits["molecules"] == pytest.approx(100 / 3600)
    assert policy.rate_limits_of(who(SYSTEM_ADMIN)) == {}
    assert policy.rate_limits_of(who(PACKET_USER, SYSTEM_ADMIN)) == {}  # null: unlimited
    # packet_user limits packets, the orchestrator does not: together, unlimited packets.
    both = policy.rate_limits_of(who(PACKET_USER, MOLECULE_ORCHESTRATOR))
    assert "packets" not in both
    assert both["molecules"] == pytest.approx(max(100 / 3600, 50 / 60))
    assert RateLimits(molecules_per_minute=60, molecules_per_hour=60).per_second() == {
        "molecules": pytest.approx(60 / 3600)
    }
