"""The gateway's authorization edge: it asks the pure rules (permissions, rate limits,
ABAC, classification, intrusion) about one request and audits what they decide.

The gateway calls one method per kind of request and gets back None (go ahead) or the
``PacketFlowError`` to answer; nothing here touches sockets. Principals come from the reply
target through ``principal_of``; authentication (security/gatekeeper.py) put it there.
"""

from __future__ import annotations

import functools
import hashlib
import time
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from typing import Any, Final

from aiohttp import web
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..protocol import abac, classification
from ..protocol.errors import Overloaded, PacketFlowError, PermissionDenied
from ..protocol.intrusion import (
    AUTH_FAILURE,
    PROTOCOL_VIOLATION,
    RATE_LIMITED,
    IntrusionDetector,
)
from ..protocol.messages import Packet, Submit, decode_json
from ..protocol.packets import PACKET_ID_MAX_LEN
from ..protocol.permissions import (
    MOLECULE_CREATE,
    Authorizer,
    element_action,
)
from ..protocol.principals import GATEWAY, Principal
from ..protocol.ratelimit import RateLimiter
from .audit import AuditLog, digest
from .config import SecurityConfig

# Owners of molecules remembered for status/abort checks; the oldest is forgotten first
# (its molecule is then visible to admins only).
MAX_OWNED: Final = 100_000
# Length of the principal tag in a wire packet id: 64 bits of sha256, no collision among
# any realistic number of principals, short enough to keep ids readable.
TAG_HEX: Final = 16

_BROADCAST_FIELD: Final = "destination_id"
_ELEMENT_FIELD: Final = "payload.packet.element"


# ---------------------------------------------------------------- reading a reply target


# A network-facing target whose principal was never set (authentication refuses such
# connections, so this is a second line of defence): no roles, so nothing is allowed.
ANONYMOUS: Final = Principal("anonymous", frozenset(), "none")


def principal_of(target: object) -> Principal:
    """The principal a reply target (``Peer``, ``HttpTarget``, ``CallbackTarget``) acts
    for. Targets the gateway's own code builds without a ``principal`` attribute act for
    the gateway; a network target without one acts for nobody."""
    if not hasattr(target, "principal"):
        return GATEWAY
    principal = target.principal
    return principal if isinstance(principal, Principal) else ANONYMOUS


def request_principal(request: web.Request) -> Principal:
    """The principal authentication (security.gatekeeper) left on an HTTP request."""
    from .gatekeeper import principal_of as authenticated

    return authenticated(request) or ANONYMOUS


def source_of(target: object) -> str | None:
    """The client's address: ``target.source_ip``, or the peer name's remote part."""
    ip = getattr(target, "source_ip", None)
    if isinstance(ip, str):
        return ip
    name = getattr(target, "name", None)
    if isinstance(name, str) and "<-" in name:
        return name.split("<-", 1)[1]
    return None


def secure_of(target: object) -> bool:
    """Whether the connection runs over TLS (``target.secure``, set where it was accepted)."""
    return bool(getattr(target, "secure", False))


def scoped_id(principal: Principal, packet_id: str) -> str:
    """The packet id under which the gateway (window, stories) and the reactor (SUBMIT,
    its own window) know a principal's packet: the gateway's own packets keep their id,
    anyone else's gets ``~<tag>`` of its principal, so two principals' same id never meet
    and a reactor sees no principal names."""
    if principal is GATEWAY or principal.id == GATEWAY.id:
        return packet_id
    wire = f"{packet_id}~{_tag(principal.id)}"
    if len(wire) > PACKET_ID_MAX_LEN:  # a long id: its digest, still per principal
        wire = "~" + hashlib.sha256(f"{principal.id}\0{packet_id}".encode()).hexdigest()
    return wire


@functools.lru_cache(maxsize=4096)  # principals active at once; a sha256 per packet otherwise
def _tag(principal_id: str) -> str:
    return hashlib.sha256(principal_id.encode()).hexdigest()[:TAG_HEX]


def packet_attributes(packet: Packet) -> dict[str, Any]:
    """``packet.*`` for ABAC: everything but ``data``, which the gateway never reads."""
    return {
        "group": packet.group,
        "element": packet.element,
        "id": packet.id,
        "priority": packet.priority,
        "timeout_ms": packet.timeout_ms,
        "metadata": packet.metadata or {},
    }


def principal_attributes(principal: Principal) -> dict[str, Any]:
    return {
        **principal.attributes,
        "id": principal.id,
        "roles": sorted(principal.roles),
        "method": principal.method,
    }


# ---------------------------------------------------------------- the guard


class Guard:
    def __init__(
        self,
        config: SecurityConfig | None = None,
        audit: AuditLog | None = None,
        *,
        audit_submits: bool | None = None,
    ) -> None:
        self.config = config or SecurityConfig()
        self.authorizer = Authorizer(self.config.policy)
        self.limiter = RateLimiter()
        self.intrusion = IntrusionDetector(self.config.intrusion)
        self.audit = audit or AuditLog(None)
        self.audit_submits = self.config.audit_submits if audit_submits is None else audit_submits
        self.rules = self.config.rules
        self.denials = 0
        self._owners: OrderedDict[tuple[str, str], str] = OrderedDict()

    def reload(self, config: SecurityConfig) -> None:
        """A new config (or changed keys): cached verdicts go."""
        self.config = config
        self.rules = config.rules
        self.authorizer.invalidate(config.policy)

    # ------------------------------------------------------------ authentication hooks

    def record_auth_success(
        self,
        principal: Principal,
        source_ip: str | None,
        user_agent: str | None = None,
        *,
        resource: str = "gateway",
    ) -> None:
        self.audit.record(
            "authenticate",
            resource,
            "success",
            user_id=principal.id,
            source_ip=source_ip,
            user_agent=user_agent,
            method=principal.method,
        )

    def record_auth_failure(
        self,
        source_ip: str | None,
        user_agent: str | None = None,
        *,
        reason: str = "",
        claimed_id: str | None = None,
        now: float | None = None,
    ) -> None:
        """One failed authentication: audited, counted, and a source past the threshold is
        blocked (the block is audited too)."""
        self.audit.record(
            "authenticate",
            "gateway",
            "failure",
            user_id=claimed_id,
            source_ip=source_ip,
            user_agent=user_agent,
            reason=reason,
        )
        if source_ip is None:
            return
        now = time.monotonic() if now is None else now
        blocked = self.intrusion.record(source_ip, AUTH_FAILURE, now)
        if blocked is not None:
            self.audit.record(
                "block_source",
                source_ip,
                "blocked",
                user_id=None,
                source_ip=source_ip,
                user_agent=user_agent,
                failures=blocked.failures,
                blocked_for_s=round(blocked.until - now, 3),
            )

    def is_blocked(self, source_ip: str | None, now: float | None = None) -> bool:
        if source_ip is None:
            return False
        return self.intrusion.is_blocked(source_ip, time.monotonic() if now is None else now)

    def record_protocol_violation(self, target: object) -> None:
        source = source_of(target)
        if source is not None:
            self.intrusion.record(source, PROTOCOL_VIOLATION, time.monotonic())

    # ------------------------------------------------------------ packets

    def check_submit(
        self, msg: Submit, target: object, principal: Principal, now: float
    ) -> PacketFlowError | None:
        """Authorization, classification and rate limit of one SUBMIT (None: go ahead).
        The gateway's own packets pass unchecked."""
        if principal is GATEWAY:
            return None
        packet = msg.payload.packet
        data: Any = None
        if packet.group == "mc" and packet.element == "optimize":
            try:
                data = decode_json(packet.data)
            except ValueError:
                data = None  # the element answers PF002 for it
        action = element_action(packet.group, packet.element, data)
        authorizer = self.authorizer
        profile = authorizer.profile(principal)
        allowed = profile.verdicts.get(action)
        if allowed is None:
            allowed = authorizer.allows(principal, action)
        if not allowed:
            where = _BROADCAST_FIELD if msg.destination_id is None else _ELEMENT_FIELD
            return self.deny(principal, target, action, where, f"{packet.group}:{packet.element}")
        try:
            level = classification.level_of(packet.metadata)
            if level.special_handling:
                classification.check_transport(level, secure_of(target))
        except PermissionDenied as err:
            self._audit_denial(principal, target, "transport:tls", err.field or "", packet.id)
            return err
        except PacketFlowError as err:
            return err
        limits = profile.limits
        if limits:
            # co:* packets spend a coordination token when the role has that limit.
            co = packet.group == "co" and "coordination" in limits
            kind = "coordination" if co else "packets"
            refused = self._spend(principal, target, kind, now, limits)
            if refused is not None:
                return refused
        if action in authorizer.policy.admin_actions:
            self.audit.record(
                "admin_action",
                action,
                "allowed",
                user_id=principal.id,
                source_ip=source_of(target),
                user_agent=getattr(target, "user_agent", None),
                packet_id=packet.id,
                data=digest(bytes(packet.data)),
            )
        elif self.audit_submits or level.audit_logging:
            self.audit.record(
                "submit",
                f"{packet.group}:{packet.element}",
                "accepted",
                user_id=principal.id,
                source_ip=source_of(target),
                user_agent=getattr(target, "user_agent", None),
                packet_id=packet.id,
                classification=level.name,
                retention_days=level.retention_days,
                data=digest(bytes(packet.data)),
            )
        return None

    def check_abac(
        self,
        principal: Principal,
        target: object,
        packet: Packet,
        reactor: Mapping[str, Any],
        wall: float,
    ) -> PacketFlowError | None:
        """§11.2.2 rules for a packet about to run on ``reactor`` (None: go ahead)."""
        if not self.rules or principal is GATEWAY:
            return None
        attrs = {
            "packet": packet_attributes(packet),
            "reactor": dict(reactor),
            "time": abac.time_attributes(wall),
        }
        attrs["principal"] = attrs["user"] = principal_attributes(principal)
        verdict = abac.decide(self.rules, attrs)
        resource = f"{packet.group}:{packet.element}"
        if not verdict.allowed:
            what = verdict.failed_requirement or f"rule {verdict.rule_id} (deny)"
            return self.deny(
                principal, target, f"abac:{verdict.rule_id}", _ELEMENT_FIELD, resource, reason=what
            )
        if verdict.audit:
            self.audit.record(
                "abac_allow",
                resource,
                "allowed",
                user_id=principal.id,
                source_ip=source_of(target),
                user_agent=getattr(target, "user_agent", None),
                rule_id=verdict.rule_id,
                packet_id=packet.id,
                reactor_id=reactor.get("id"),
            )
        return None

    # ------------------------------------------------------------ other actions

    def check_action(
        self,
        principal: Principal,
        target: object,
        action: str,
        field: str,
        resource: str | None = None,
    ) -> PacketFlowError | None:
        """A scope check for a non-packet action (``molecule:create``, ``reactor:monitor``,
        ``affinity:update`` ...); admin actions that pass are audited."""
        if principal is GATEWAY:
            return None
        if not self.authorizer.allows(principal, action):
            return self.deny(principal, target, action, field, resource or action)
        if action in self.authorizer.policy.admin_actions:
            self.audit.record(
                "admin_action",
                resource or action,
                "allowed",
                user_id=principal.id,
                source_ip=source_of(target),
                user_agent=getattr(target, "user_agent", None),
            )
        return None

    def check_molecule_start(
        self, principal: Principal, target: object, now: float
    ) -> PacketFlowError | None:
        err = self.check_action(
            principal, target, MOLECULE_CREATE, "payload.coordination_type", "molecule"
        )
        if err is not None or principal is GATEWAY:
            return err
        return self._spend(principal, target, "molecules", now)

    def check_coordinate(
        self, principal: Principal, target: object, kind: str, molecule_id: str | None, now: float
    ) -> PacketFlowError | None:
        """A COORDINATE (or its HTTP form): starting needs ``molecule:create`` and a molecule
        token; reading or aborting one needs to own it (or be an admin); planning needs
        ``molecule:create``. Every request spends a coordination token."""
        if principal is GATEWAY:
            return None
        if kind in ("initiate", "execute"):  # §7.3 phase 3 starts a molecule too
            err = self.check_molecule_start(principal, target, now)
        elif kind in ("status", "progress", "abort") and molecule_id is not None:
            verb = "abort" if kind == "abort" else "read"
            err = self.check_owner(
                principal, target, "molecule", molecule_id, "payload.molecule_id", verb
            )
        else:
            err = self.check_action(
                principal, target, MOLECULE_CREATE, "payload.coordination_type", f"molecule:{kind}"
            )
        if err is not None:
            return err
        return self._spend(principal, target, "coordination", now)

    def molecule_event(
        self, principal: Principal, target: object, event: str, molecule_id: str, **extra: Any
    ) -> None:
        """Audit a molecule start or abort (§11.4.1), whoever asked."""
        self.audit.record(
            event,
            f"molecule:{molecule_id}",
            "accepted",
            user_id=principal.id,
            source_ip=source_of(target),
            user_agent=getattr(target, "user_agent", None),
            **extra,
        )

    def check_topic(
        self, principal: Principal, target: object, topic: str, field: str, verb: str
    ) -> PacketFlowError | None:
        """``ed:publish``/``ed:subscribe``: the principal's ``topic:`` permissions must
        cover the topic or the whole subscription pattern."""
        if principal is GATEWAY or self.authorizer.may_use_topic(principal, topic):
            return None
        return self.deny(principal, target, f"topic:{topic}", field, f"topic:{topic}", verb=verb)

    # ------------------------------------------------------------ ownership

    def own(self, kind: str, resource_id: str, principal_id: str) -> None:
        key = (kind, resource_id)
        self._owners[key] = principal_id
        self._owners.move_to_end(key)
        if len(self._owners) > MAX_OWNED:
            self._owners.popitem(last=False)

    def sees(self, principal: Principal, kind: str, resource_id: str) -> bool:
        """Whether ``principal`` may see a resource in a listing: its own, or any for an
        admin (the same rule as ``check_owner``, without the denial and audit)."""
        return principal.is_admin or self._owners.get((kind, resource_id)) == principal.id

    def check_owner(
        self,
        principal: Principal,
        target: object,
        kind: str,
        resource_id: str,
        field: str,
        verb: str,
    ) -> PacketFlowError | None:
        """Only the principal that created a molecule (or an admin) sees or aborts it."""
        if principal.is_admin:
            if principal is not GATEWAY and verb == "abort":
                owner = self._owners.get((kind, resource_id))
                if owner is not None and owner != principal.id:
                    self.audit.record(
                        "admin_action",
                        f"{kind}:{resource_id}",
                        verb,
                        user_id=principal.id,
                        source_ip=source_of(target),
                        user_agent=getattr(target, "user_agent", None),
                    )
            return None
        if self._owners.get((kind, resource_id)) == principal.id:
            return None
        return self.deny(
            principal,
            target,
            f"{kind}:{verb}",
            field,
            f"{kind}:{resource_id}",
            reason="not the owner",
        )

    def owner_of(self, kind: str, resource_id: str) -> str | None:
        return self._owners.get((kind, resource_id))

    def disown(self, kind: str, resource_id: str) -> None:
        """Forget who owns a resource (a start that was refused after all)."""
        self._owners.pop((kind, resource_id), None)

    # ------------------------------------------------------------ denials

    def deny(
        self,
        principal: Principal,
        target: object,
        action: str,
        field: str,
        resource: str,
        *,
        reason: str | None = None,
        verb: str | None = None,
    ) -> PermissionDenied:
        """One PF403 naming the missing permission, audited."""
        self.denials += 1
        message = f"Permission denied: {principal.id} may not {verb or 'use'} {resource}"
        if reason:
            message += f" ({reason})"
        details: dict[str, Any] = {"required_permission": action}
        if reason:
            details["reason"] = reason
        self._audit_denial(principal, target, action, field, resource, reason)
        return PermissionDenied(message, field=field, validation_rule="permission", details=details)

    def _audit_denial(
        self,
        principal: Principal,
        target: object,
        action: str,
        field: str,
        resource: str | None,
        reason: str | None = None,
    ) -> None:
        self.audit.record(
            "deny",
            resource or action,
            "denied",
            user_id=principal.id,
            source_ip=source_of(target),
            user_agent=getattr(target, "user_agent", None),
            required_permission=action,
            field=field,
            reason=reason,
        )

    def _spend(
        self,
        principal: Principal,
        target: object,
        kind: str,
        now: float,
        limits: Mapping[str, float] | None = None,
    ) -> Overloaded | None:
        """Take one ``kind`` token from the principal's rate limit (``limits``: its
        profile's, when the caller has them); PF004 when there is none left."""
        if limits is None:
            limits = self.authorizer.profile(principal).limits
        rate = limits.get(kind)
        if rate is None:
            return None
        wait_ms = self.limiter.take(principal.id, kind, rate, now)
        return self._rate_limited(principal, target, kind, wait_ms) if wait_ms else None

    def _rate_limited(
        self, principal: Principal, target: object, kind: str, wait_ms: int
    ) -> Overloaded:
        source = source_of(target)
        if source is not None:
            self.intrusion.record(source, RATE_LIMITED, time.monotonic())
        self.audit.record(
            "rate_limited",
            kind,
            "denied",
            user_id=principal.id,
            source_ip=source,
            user_agent=getattr(target, "user_agent", None),
            retry_delay_ms=wait_ms,
        )
        return Overloaded(
            f"Rate limit for {principal.id}'s {kind} exceeded; retry in {wait_ms} ms",
            retry_delay_ms=wait_ms,
            validation_rule="rate_limit",
            details={"limit": kind, "principal_id": principal.id},
        )

    def collector(self) -> Collector:
        return _SecurityCollector(self)


class _SecurityCollector(Collector):
    """``/metrics`` intrusion signals: totals, and per-source counts for the top-N sources
    only (bounded label cardinality, §11.4.2)."""

    def __init__(self, guard: Guard) -> None:
        self.guard = guard

    def collect(self) -> Iterator[Metric]:
        intrusion = self.guard.intrusion
        totals = CounterMetricFamily(
            "packetflow_security_signals", "Intrusion signals seen (all sources)", labels=["signal"]
        )
        for signal, value in intrusion.totals.items():
            totals.add_metric([signal], value)
        yield totals
        per_source = CounterMetricFamily(
            "packetflow_security_source_signals",
            "Intrusion signals of the busiest sources (top N)",
            labels=["source", "signal"],
        )
        for source, counts in intrusion.top():
            for signal, value in counts.items():
                per_source.add_metric([source, signal], value)
        yield per_source
        denials = CounterMetricFamily("packetflow_security_denials", "Requests refused with PF403")
        denials.add_metric([], self.guard.denials)
        yield denials
        blocks = GaugeMetricFamily(
            "packetflow_security_blocks", "Sources blocked after repeated authentication failures"
        )
        blocks.add_metric([], intrusion.blocks)
        yield blocks
