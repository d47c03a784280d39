"""Roles, permissions and the per-action authorization verdict of PFAP §11.2.1 (DESIGN §8).

How this works
--------------
A permission is a string. Three kinds exist:

- ``group:element`` patterns for packets, ``*`` as a whole part (``cf:*``, ``*:ping``) or as
  a suffix (``df:trans*``); ``*`` alone is every permission (the spec's ``system_admin``);
- §11.1.1 scopes for actions that are not one element: ``packet:submit`` (any element that
  is not an admin action), ``molecule:create``, ``reactor:monitor`` (registry, metrics,
  affinity views), ``system:admin`` (same as ``*``), plus ``reactor:announce`` and
  ``reactor:heartbeat`` for the ``reactor`` role;
- ``topic:<pattern>`` for the event bus (events.py syntax): which topics a principal may
  publish to and subscribe to. A principal reads exactly the topics it may publish.

Admin actions (``cf:shutdown`` ...) are the policy's ``admin_actions`` list: they need
``system:admin`` (or ``*``) and no element wildcard grants them, so a JWT carrying ``cf:*``
cannot shut a reactor down.

The verdict for one (principal, permission) is a pure function; ``Authorizer`` memoises it
in a bounded dict so the per-packet cost is one dict lookup.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from .principals import (
    MOLECULE_ORCHESTRATOR,
    PACKET_USER,
    REACTOR,
    REACTOR_FANOUT,
    SYSTEM_ADMIN,
    Principal,
)

ALL: Final = "*"
SYSTEM_ADMIN_SCOPE: Final = "system:admin"
PACKET_SUBMIT: Final = "packet:submit"
MOLECULE_CREATE: Final = "molecule:create"
REACTOR_MONITOR: Final = "reactor:monitor"
REACTOR_ANNOUNCE: Final = "reactor:announce"
REACTOR_HEARTBEAT: Final = "reactor:heartbeat"
AFFINITY_UPDATE: Final = "affinity:update"  # PUT /v1/affinity
REACTOR_WITHDRAW_OTHER: Final = "reactor:withdraw_other"  # DISCOVER withdraw of another
TOPIC_PREFIX: Final = "topic:"

# Namespaces of the scopes: a ``group:element`` wildcard never grants these.
SCOPE_NAMESPACES: Final = frozenset({"packet", "molecule", "reactor", "system", "affinity",
                                     "topic"})  # fmt: skip

# Verdicts cached per Authorizer: principals x actions in use at once. 65,536 entries of
# ~200 bytes each is ~13 MiB at worst; a full cache drops its oldest entry.
MAX_CACHED_VERDICTS: Final = 65_536

# DESIGN §8 "Admin only whatever the role file says": the default list.
DEFAULT_ADMIN_ACTIONS: Final = frozenset({
    "cf:shutdown", "cf:restart", "rm:scale", "mc:update_affinity", "mc:optimize:apply",
    AFFINITY_UPDATE, REACTOR_WITHDRAW_OTHER,
})  # fmt: skip


@dataclass(frozen=True, slots=True)
class RateLimits:
    """§11.2.1 ``rate_limits`` of a role; None is "unlimited" (the spec's ``null``).

    The spec's keys are kept: packets per minute, molecules per minute or hour,
    coordination ops per hour (co:* and COORDINATE requests)."""

    packets_per_minute: float | None = None
    molecules_per_minute: float | None = None
    molecules_per_hour: float | None = None
    coordination_ops_per_hour: float | None = None

    def per_second(self) -> dict[str, float]:
        """Bucket kind -> sustained rate in tokens per second (only the limited kinds)."""
        out: dict[str, float] = {}
        if self.packets_per_minute is not None:
            out["packets"] = self.packets_per_minute / 60.0
        rates = [r for r in (
            None if self.molecules_per_minute is None else self.molecules_per_minute / 60.0,
            None if self.molecules_per_hour is None else self.molecules_per_hour / 3600.0,
        ) if r is not None]  # fmt: skip
        if rates:
            out["molecules"] = min(rates)  # the stricter of the two windows
        if self.coordination_ops_per_hour is not None:
            out["coordination"] = self.coordination_ops_per_hour / 3600.0
        return out


@dataclass(frozen=True, slots=True)
class Role:
    name: str
    permissions: frozenset[str]
    rate_limits: RateLimits | None = None  # None: unlimited


# §11.2.1 verbatim, plus the scopes each role needs to use what the spec lists (a
# packet_user has molecule rate limits, so it may create molecules; both read the topics
# their signals publish) and the `reactor` role of DESIGN §8.
DEFAULT_ROLES: Final[Mapping[str, Role]] = {
    PACKET_USER: Role(PACKET_USER, frozenset({
        "cf:ping", "cf:health", "df:transform", "df:validate", "ed:signal",
        MOLECULE_CREATE, "topic:signal.**",
    }), RateLimits(packets_per_minute=1000, molecules_per_hour=100)),
    MOLECULE_ORCHESTRATOR: Role(MOLECULE_ORCHESTRATOR, frozenset({
        "cf:coordinate", "co:broadcast", "co:consensus", "mc:optimize", "mc:analyze",
        MOLECULE_CREATE, REACTOR_MONITOR, "topic:**",
    }), RateLimits(molecules_per_minute=50, coordination_ops_per_hour=1000)),
    SYSTEM_ADMIN: Role(SYSTEM_ADMIN, frozenset({ALL}), None),
    REACTOR: Role(REACTOR, frozenset({REACTOR_ANNOUNCE, REACTOR_HEARTBEAT}), None),
    REACTOR_FANOUT: Role(REACTOR_FANOUT, frozenset({
        PACKET_SUBMIT, MOLECULE_CREATE, "topic:**",
    }), None),
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Policy:
    """Roles and admin actions in force (defaults, overridden by the security config)."""

    roles: Mapping[str, Role] = field(default_factory=lambda: dict(DEFAULT_ROLES))
    admin_actions: frozenset[str] = DEFAULT_ADMIN_ACTIONS

    def permissions_of(self, principal: Principal) -> frozenset[str]:
        perms = set(principal.permissions)
        for name in principal.roles:
            role = self.roles.get(name)
            if role is not None:
                perms |= role.permissions
        return frozenset(perms)

    def rate_limits_of(self, principal: Principal) -> dict[str, float]:
        """The most generous limit of the principal's roles per bucket kind; a kind that
        any role leaves unlimited (or a role with ``rate_limits = null``) is unlimited."""
        out: dict[str, float] = {}
        unlimited: set[str] = set()
        known = [self.roles[r] for r in principal.roles if r in self.roles]
        for role in known:
            if role.rate_limits is None:
                return {}
            rates = role.rate_limits.per_second()
            for kind in ("packets", "molecules", "coordination"):
                if kind not in rates:
                    unlimited.add(kind)
                else:
                    out[kind] = max(out.get(kind, 0.0), rates[kind])
        return {k: v for k, v in out.items() if k not in unlimited}


def element_action(group: str, element: str, data: Any = None) -> str:
    """The permission a SUBMIT of ``group:element`` needs; ``mc:optimize`` with
    ``apply: true`` changes the cluster, so it is its own (admin) action."""
    if group == "mc" and element == "optimize" and isinstance(data, dict) and data.get("apply"):
        return "mc:optimize:apply"
    return f"{group}:{element}"


def _part_matches(pattern: str, value: str) -> bool:
    if pattern == ALL:
        return True
    if pattern.endswith(ALL):
        return value.startswith(pattern[:-1])
    return pattern == value


def permission_matches(pattern: str, action: str) -> bool:
    """Whether the granted ``pattern`` covers ``action`` (module doc); scopes and topics
    are matched exactly here (topics go through ``topic_allowed``)."""
    if pattern == ALL:
        return True
    p_group, _, p_rest = pattern.partition(":")
    a_group, _, a_rest = action.partition(":")
    if a_group in SCOPE_NAMESPACES or p_group in SCOPE_NAMESPACES:
        return pattern == action
    return _part_matches(p_group, a_group) and _part_matches(p_rest, a_rest)


def granted(perms: Iterable[str], action: str, admin_actions: frozenset[str]) -> bool:
    """Whether a principal holding ``perms`` may do ``action``."""
    perms = frozenset(perms)
    if ALL in perms or SYSTEM_ADMIN_SCOPE in perms:
        return True
    if action in admin_actions or action == SYSTEM_ADMIN_SCOPE:
        return False
    if action.partition(":")[0] not in SCOPE_NAMESPACES and PACKET_SUBMIT in perms:
        return True
    return any(permission_matches(p, action) for p in perms)


def pattern_covers(granted_pattern: str, wanted: str) -> bool:
    """Whether every topic ``wanted`` (a topic or subscription pattern, events.py syntax)
    can match is matched by ``granted_pattern``."""
    if granted_pattern in ("*", "**"):
        return True
    if wanted in ("*", "**"):
        return False
    g = granted_pattern.split(".")
    w = wanted.split(".")
    if g[-1] == "**":
        head = g[:-1]
        if len(w) <= len(head):
            return False
        return all(_segment_covers(a, b) for a, b in zip(head, w, strict=False))
    if len(g) != len(w):
        return False
    return all(_segment_covers(a, b) for a, b in zip(g, w, strict=True))


def _segment_covers(granted_segment: str, wanted_segment: str) -> bool:
    if granted_segment == "*":
        return wanted_segment != "**"
    return granted_segment == wanted_segment


def topic_allowed(perms: Iterable[str], topic_or_pattern: str) -> bool:
    """Whether ``perms`` let a principal publish to / subscribe to ``topic_or_pattern``."""
    for p in perms:
        if p in (ALL, SYSTEM_ADMIN_SCOPE):
            return True
        if p.startswith(TOPIC_PREFIX) and pattern_covers(p[len(TOPIC_PREFIX) :], topic_or_pattern):
            return True
    return False


_Who = tuple[str, frozenset[str], frozenset[str]]


@dataclass(slots=True)
class Profile:
    """What a policy grants one principal, resolved once: its permissions, its rate
    limits per bucket kind, and the verdicts asked so far (bounded)."""

    permissions: frozenset[str]
    limits: dict[str, float]
    verdicts: dict[str, bool] = field(default_factory=dict)


class Authorizer:
    """The cached verdicts of one policy: ``allows(principal, action)`` costs two dict
    lookups after the first call. A new policy (config reload) or a changed key means
    ``invalidate()``: principals are immutable, so nothing else goes stale.

    Profiles are keyed by the principal's id, roles and permissions (frozensets cache
    their hash), so a JWT re-issued with other claims under the same subject gets its own.
    """

    def __init__(self, policy: Policy | None = None, max_entries: int = MAX_CACHED_VERDICTS):
        self.policy = policy or Policy()
        self.max_entries = max_entries
        self._profiles: OrderedDict[_Who, Profile] = OrderedDict()
        self._count = 0  # verdicts cached across all profiles

    def __len__(self) -> int:
        return self._count

    def invalidate(self, policy: Policy | None = None) -> None:
        if policy is not None:
            self.policy = policy
        self._profiles.clear()
        self._count = 0

    def profile(self, principal: Principal) -> Profile:
        who = (principal.id, principal.roles, principal.permissions)
        profile = self._profiles.get(who)
        if profile is None:
            policy = self.policy
            profile = Profile(policy.permissions_of(principal), policy.rate_limits_of(principal))
            self._profiles[who] = profile
        return profile

    def permissions(self, principal: Principal) -> frozenset[str]:
        return self.profile(principal).permissions

    def allows(self, principal: Principal, action: str) -> bool:
        profile = self.profile(principal)
        verdict = profile.verdicts.get(action)
        if verdict is None:
            verdict = granted(profile.permissions, action, self.policy.admin_actions)
            self._remember(principal, profile, action, verdict)
        return verdict

    def _remember(self, principal: Principal, profile: Profile, action: str,
                  verdict: bool) -> None:  # fmt: skip
        """Cache a verdict; past ``max_entries`` the least recently created profile (and
        its verdicts) goes."""
        profile.verdicts[action] = verdict
        self._count += 1
        while self._count > self.max_entries and self._profiles:
            _, oldest = self._profiles.popitem(last=False)
            self._count -= len(oldest.verdicts)
        if (
            not self._profiles
            or self._profiles.get((principal.id, principal.roles, principal.permissions))
            is not profile
        ):
            # Evicted itself: keep the principal's profile so the next call is cached.
            self._profiles[(principal.id, principal.roles, principal.permissions)] = profile
            self._count += len(profile.verdicts)

    def may_use_topic(self, principal: Principal, topic_or_pattern: str) -> bool:
        return topic_allowed(self.permissions(principal), topic_or_pattern)
