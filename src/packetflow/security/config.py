"""The security config file (``--security-config F``, TOML): roles, admin actions, ABAC
rules, intrusion thresholds, audit options, parsed and checked once at start.

Example::

    admin_actions = ["cf:shutdown", "cf:restart", "rm:scale", "mc:update_affinity",
                     "mc:optimize:apply", "affinity:update", "reactor:withdraw_other"]

    [roles.auditor]                      # a new role
    permissions = ["reactor:monitor", "cf:health"]
    rate_limits = { packets_per_minute = 60 }

    [roles.packet_user]                  # replaces the default role of that name
    permissions = ["cf:ping", "df:*"]
    rate_limits = { packets_per_minute = 1000, molecules_per_hour = 100 }

    [[abac.policy_rules]]                # §11.2.2, written as the spec writes it
    rule_id = "sensitive_data_access"
    condition = "packet.metadata.classification == 'confidential'"
    requirements = ["user.clearance_level >= 'secret'",
                    "reactor.security_zone == 'secure'",
                    "time.hour >= 9 AND time.hour <= 17"]
    action = "allow_with_audit"

    [intrusion]
    max_failures = 5
    window_s = 600
    block_s = 600

    [audit]
    submits = false

A role without ``rate_limits`` (or with ``rate_limits = "none"``) is unlimited, as the
spec's ``null`` (TOML has no null).
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..protocol.abac import AbacSyntaxError, Rule, make_rule
from ..protocol.intrusion import IntrusionConfig
from ..protocol.permissions import DEFAULT_ROLES, Policy, RateLimits, Role

_RATE_KEYS = frozenset(RateLimits.__slots__)


class SecurityConfigError(ValueError):
    """The security config cannot be used; the message names the file and the entry."""


@dataclass(frozen=True, slots=True)
class SecurityConfig:
    policy: Policy = field(default_factory=Policy)
    rules: tuple[Rule, ...] = ()
    intrusion: IntrusionConfig = field(default_factory=IntrusionConfig)
    audit_submits: bool = False


def load(path: Path | str) -> SecurityConfig:
    """Read and check ``path``. Raises ``SecurityConfigError``."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SecurityConfigError(f"{path}: cannot read: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise SecurityConfigError(f"{path}: not valid TOML: {exc}") from exc
    return parse(raw, str(path))


def parse(raw: Mapping[str, Any], where: str = "security config") -> SecurityConfig:
    """A ``SecurityConfig`` from decoded TOML. Raises ``SecurityConfigError``."""
    unknown = set(raw) - {"roles", "admin_actions", "abac", "intrusion", "audit"}
    if unknown:
        raise SecurityConfigError(f"{where}: unknown section(s) {sorted(unknown)}")
    roles: dict[str, Role] = dict(DEFAULT_ROLES)
    for name, body in _table(raw, "roles", where).items():
        roles[name] = _role(name, body, where)
    admin = Policy().admin_actions
    if "admin_actions" in raw:
        admin = frozenset(_strings(raw["admin_actions"], f"{where}: admin_actions"))
    rules: list[Rule] = []
    abac = _table(raw, "abac", where)
    for index, body in enumerate(abac.get("policy_rules", [])):
        rules.append(_rule(index, body, where))
    intrusion = _table(raw, "intrusion", where)
    try:
        intrusion_config = IntrusionConfig(**{k: intrusion[k] for k in intrusion})
    except TypeError as exc:
        raise SecurityConfigError(f"{where}: [intrusion]: {exc}") from exc
    audit = _table(raw, "audit", where)
    return SecurityConfig(
        Policy(roles, admin), tuple(rules), intrusion_config, bool(audit.get("submits", False))
    )


def _table(raw: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    value = raw.get(key, {})
    if not isinstance(value, Mapping):
        raise SecurityConfigError(f"{where}: [{key}] must be a table")
    return value


def _strings(value: Any, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise SecurityConfigError(f"{where}: must be a list of non-empty strings")
    return list(value)


def _role(name: str, body: Any, where: str) -> Role:
    here = f"{where}: [roles.{name}]"
    if not isinstance(body, Mapping):
        raise SecurityConfigError(f"{here} must be a table")
    perms = frozenset(_strings(body.get("permissions", []), f"{here} permissions"))
    for perm in perms:
        if perm != "*" and ":" not in perm:
            raise SecurityConfigError(
                f"{here}: permission {perm!r} is not group:element, a scope or '*'"
            )
    limits = body.get("rate_limits")
    if limits is None or limits == "none":
        return Role(name, perms, None)
    if not isinstance(limits, Mapping) or not set(limits) <= _RATE_KEYS:
        raise SecurityConfigError(f"{here}: rate_limits takes {sorted(_RATE_KEYS)}")
    for key, value in limits.items():
        if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
            raise SecurityConfigError(f"{here}: rate_limits.{key} must be a positive number")
    return Role(name, perms, RateLimits(**{k: float(v) for k, v in limits.items()}))


def _rule(index: int, body: Any, where: str) -> Rule:
    here = f"{where}: abac.policy_rules[{index}]"
    if not isinstance(body, Mapping):
        raise SecurityConfigError(f"{here} must be a table")
    rule_id = body.get("rule_id", f"rule_{index}")
    condition = body.get("condition")
    if not isinstance(condition, str):
        raise SecurityConfigError(f"{here} ({rule_id}): condition must be a string")
    requirements = (
        _strings(body.get("requirements", []), f"{here} requirements")
        if body.get("requirements")
        else []
    )
    try:
        return make_rule(str(rule_id), condition, requirements, str(body.get("action", "")))
    except AbacSyntaxError as exc:
        raise SecurityConfigError(f"{here} ({rule_id}): {exc}") from exc
    except ValueError as exc:
        raise SecurityConfigError(f"{here}: {exc}") from exc
