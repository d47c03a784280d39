"""The PFAP error catalogue (§10.1, Appendix A) and the one exception hierarchy that carries it.

Every failure inside packetflow is raised as a ``PacketFlowError`` and turned into exactly
one ERROR envelope at a single boundary (STYLE 4). The payload shape merges §4.2.3 and
§10.2 as DESIGN §6 describes.

Hierarchy (one family per §10.1 table)::

    PacketFlowError
    ├── ProtocolError            PF0xx
    │   ├── InvalidMessage       PF001  bad frame / JSON / envelope
    │   ├── InvalidAddress       PF001  a gateway address the client cannot dial
    │   ├── InvalidPacket        PF002  bad field (names the JSON path)
    │   ├── NoReactorAvailable   PF003
    │   ├── Overloaded           PF004
    │   └── ProcessingFailed     PF005
    ├── ChemicalError            PF1xx
    │   ├── LowAffinity          PF101
    │   ├── BondFormationFailed  PF102
    │   ├── MolecularInstability PF103
    │   ├── PropertyCalculation  PF104
    │   └── OptimizationFailed   PF105
    ├── SecurityError            PF4xx  (not in §10.1: DESIGN §8, docs/security.md)
    │   ├── AuthenticationFailed PF401  missing, malformed, unknown, revoked credentials
    │   └── PermissionDenied     PF403  authenticated, but not allowed to do this
    └── SystemFailure            PF5xx
        ├── InternalError        PF500  (never carries internals)
        ├── OutOfMemory          PF501
        ├── NetworkTimeout       PF502
        │   └── GatewayUnreachable      the client's dial failed
        ├── ServiceUnavailable   PF503
        └── GatewayTimeout       PF504
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final


@dataclass(frozen=True, slots=True)
class ErrorSpec:
    """One row of §10.1 (category, retry, recovery) joined with Appendix A (message, action)."""

    code: str
    category: str  # wire form, e.g. "validation_error" (§10.2)
    description: str  # §10.1 description
    retryable: bool  # §10.1 "Retry" column
    recovery: str  # §10.1 "Recovery" column
    appendix_message: str | None  # Appendix A "Message" (None: not listed there)
    appendix_action: str | None  # Appendix A "Recovery Action"
    suggestions: tuple[str, ...]


def _spec(
    code: str,
    category: str,
    description: str,
    retryable: bool,
    recovery: str,
    appendix: tuple[str, str] | None,
    *suggestions: str,
) -> ErrorSpec:
    message, action = appendix if appendix else (None, None)
    return ErrorSpec(
        code, category, description, retryable, recovery, message, action, tuple(suggestions)
    )


# §10.1.1-§10.1.3 and Appendix A. Where the two disagree on PF101 (§10.1 "Affinity / Low
# affinity match", Appendix A "Chemical / Affinity calculation failed") §10.1 gives the
# category, because DESIGN §5 raises PF101 for "below minimum_affinity".
CATALOGUE: dict[str, ErrorSpec] = {
    s.code: s
    for s in (
        _spec("PF001", "validation_error", "Invalid message format", False, "Fix format",
              ("Invalid JSON format", "Fix message structure"),
              "Send one UTF-8 JSON envelope (or an array of envelopes) per text frame",
              "Check the envelope's protocol_version, message_type and required fields"),
        _spec("PF002", "validation_error", "Invalid packet structure", False, "Fix packet",
              ("Invalid packet structure", "Correct packet fields"),
              "Correct the field named in error_details.field"),
        _spec("PF003", "routing_error", "No available reactors", True, "Wait/scale",
              ("No available reactors", "Wait or scale cluster"),
              "Start a reactor that supports this group:element",
              "Retry after a reactor announces itself"),
        _spec("PF004", "capacity_error", "Node overloaded", True, "Load balance",
              ("Node overloaded", "Route to different node"),
              "Retry after retry_delay_ms",
              "Add reactors or raise max_concurrent_packets"),
        _spec("PF005", "processing_error", "Packet processing failed", True, "Retry/route",
              ("Packet processing failed", "Retry with same/different node"),
              "Retry the packet, possibly on a different reactor",
              "Inspect error_details for the failure's reason"),
        _spec("PF101", "affinity_error", "Low affinity match", True, "Force route",
              ("Affinity calculation failed", "Use default routing"),
              "Lower routing_preferences.minimum_affinity",
              "Start a reactor whose specialization suits this group"),
        _spec("PF102", "molecular_error", "Bond formation failed", True, "Rebuild",
              ("Bond formation failed", "Rebuild molecular structure"),
              "Fix the bonds named in error_details and resubmit the molecule"),
        _spec("PF103", "molecular_error", "Molecular instability", True, "Optimize",
              ("Molecular instability detected", "Run optimization"),
              "Run coordinate optimize on the molecule",
              "Lower stability_threshold or enable healing"),
        _spec("PF104", "chemical_error", "Property calculation error", False, "Recalibrate",
              None,
              "Check the packet's group and priority",
              "Recalibrate the chemical property tables"),
        _spec("PF105", "optimization_error", "Optimization failed", True, "Fallback",
              None,
              "Fall back to the unoptimized molecule"),
        # §10.1 has no security codes; these follow HTTP's 401/403 (docs/security.md).
        _spec("PF401", "security_error", "Authentication failed", False, "Fix credentials",
              None,
              "Send an API key in X-PacketFlow-API-Key or a JWT in Authorization: Bearer",
              "Check that the key was not revoked and the token has not expired"),
        # Retrying cannot help until the principal's roles change.
        _spec("PF403", "security_error", "Permission denied", False, "Request access",
              None,
              "Ask an administrator for the permission named in error_details",
              "Check the roles of the credential this connection uses"),
        _spec("PF500", "internal_error", "Internal server error", True, "Investigate",
              ("Internal server error", "Check logs, restart if needed"),
              "Check the server logs", "Retry; restart the component if it persists"),
        _spec("PF501", "resource_error", "Out of memory", False, "Scale up",
              ("Out of memory", "Scale up or reduce load"),
              "Scale up the reactor's memory", "Reduce the packet's data size"),
        _spec("PF502", "network_error", "Network timeout", True, "Reconnect",
              ("Network timeout", "Check connectivity"),
              "Check connectivity", "Reconnect and retry"),
        _spec("PF503", "service_error", "Service unavailable", True, "Failover",
              ("Service unavailable", "Failover to backup"),
              "Fail over to another reactor or gateway", "Retry after retry_delay_ms"),
        _spec("PF504", "timeout_error", "Gateway timeout", True, "Extend timeout",
              None,
              "Extend the packet's timeout_ms or the envelope's ttl",
              "Retry when the cluster is less loaded"),
    )
}  # fmt: skip


class PacketFlowError(Exception):
    """A failure that becomes exactly one PFAP ERROR.

    ``field`` is the JSON path of the offending field (``payload.packet.priority``) for
    validation errors; ``details`` lands in ``error_details`` and ``context`` in
    ``error_context``.
    """

    code: str = "PF500"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        field: str | None = None,
        expected_type: str | None = None,
        received_type: str | None = None,
        validation_rule: str | None = None,
        details: dict[str, Any] | None = None,
        context: dict[str, Any] | None = None,
        retryable: bool | None = None,
        retry_delay_ms: int | None = None,
        packet_id: str | None = None,
    ) -> None:
        super().__init__(message)
        if code is not None:
            if code not in CATALOGUE:
                raise ValueError(f"unknown PFAP error code {code!r}")
            self.code = code
        self.message = message
        self.field = field
        self.expected_type = expected_type
        self.received_type = received_type
        self.validation_rule = validation_rule
        self.details = dict(details) if details else {}
        self.context = dict(context) if context else {}
        self._retryable = retryable
        self.retry_delay_ms = retry_delay_ms
        self.packet_id = packet_id

    @property
    def spec(self) -> ErrorSpec:
        return CATALOGUE[self.code]

    @property
    def category(self) -> str:
        return self.spec.category

    @property
    def retryable(self) -> bool:
        if self._retryable is not None:
            return self._retryable
        # §10.1 marks PF102 retryable ("Rebuild"), but a structure a rule rejected (a
        # cycle, a dangling bond) fails the same way every time it is resent unchanged.
        if self.code in _STRUCTURAL_CODES and self.validation_rule is not None:
            return False
        return self.spec.retryable

    def recovery_suggestions(self) -> list[str]:
        """What to do about this error: the reason-specific advice first, then the
        catalogue's, without any "retry" advice when a retry cannot help."""
        reason = self.details.get("reason") or self.validation_rule
        out = list(_specific_suggestions(self, reason))
        for text in self.spec.suggestions:
            if text in out or (not self.retryable and _mentions_retry(text)):
                continue
            if "error_details.field" in text and (self.field is None or out):
                continue  # no field to name, or the specific advice already names it
            out.append(text)
        if not out:
            out.append(self.spec.recovery)
        return out

    def error_details(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.field is not None:
            out["field"] = self.field
        if self.expected_type is not None:
            out["expected_type"] = self.expected_type
        if self.received_type is not None:
            out["received_type"] = self.received_type
        if self.validation_rule is not None:
            out["validation_rule"] = self.validation_rule
        out.update(self.details)
        return out

    def to_payload(
        self, packet_id: str | None = None, reactor_info: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """The ERROR payload of DESIGN §6 (§4.2.3 merged with §10.2)."""
        spec = self.spec
        delay = self.retry_delay_ms
        if delay is None and self.retryable:
            delay = DEFAULT_RETRY_DELAY_MS
        options: list[dict[str, Any]] = []
        if self.retryable:
            options.append({"strategy": "retry_with_delay", "delay_ms": delay, "max_retries": 3})
        return {
            "packet_id": packet_id if packet_id is not None else self.packet_id,
            "error_code": self.code,
            "error_category": spec.category,
            "error_message": self.message,
            "error_details": self.error_details(),
            "error_context": self.context,
            "reactor_info": reactor_info,
            "recovery_suggestions": self.recovery_suggestions(),
            "recovery_options": options,
            "retry_possible": self.retryable,
            "retry_delay_ms": delay,
        }


# §4.2.3's example and §10.3.1's initial_delay_ms.
DEFAULT_RETRY_DELAY_MS = 1000

# Whose fault an ERROR is: the one rule that a reactor's reported error rate, the gateway's
# health tracker, circuit breaker and affinity learner all apply, so a client's mistake
# never degrades a reactor or moves routing away from it.
#
# Codes that say the request itself is wrong (bad frame, bad field, nothing serves it, bad
# molecule, bad properties): it fails the same way on any reactor.
CLIENT_ERROR_CODES: Final = frozenset({"PF001", "PF002", "PF003", "PF101", "PF102", "PF104"})
# Codes that may say the reactor is in trouble (§9.4.1 error_rate_spike, §10.3.2 failures).
REACTOR_FAULT_CODES: Final = frozenset({"PF005", "PF500", "PF501", "PF502", "PF503", "PF504"})


def is_client_error(code: str, retryable: bool) -> bool:
    """Whether an ERROR is the submitter's: a client error code, or a PF005 its handler
    declared not retryable (a missing file, a result too large, data a handler rejects:
    §10.1's "Retry" is false exactly because any reactor would fail it the same way)."""
    return code in CLIENT_ERROR_CODES or (code == "PF005" and not retryable)


def counts_against_reactor(code: str | None, retryable: bool) -> bool:
    """Whether an outcome counts as a failure of the reactor that answered it (its error
    rate, health, breaker and learned affinity); ``code`` None is a success."""
    return code is not None and code in REACTOR_FAULT_CODES and not is_client_error(code, retryable)


# Codes whose rule rejections (a validation_rule is set) are about the request itself.
_STRUCTURAL_CODES = frozenset({"PF102"})


def _mentions_retry(text: str) -> bool:
    return "retry" in text.lower() or "resubmit" in text.lower()


def _specific_suggestions(err: PacketFlowError, reason: Any) -> tuple[str, ...]:
    """Advice that depends on the error's reason or offending field, not just its code."""
    d = err.details
    if err.code == "PF002" and err.field is not None:
        expected = f" (expected {err.expected_type})" if err.expected_type else ""
        return (f"Correct {err.field}{expected} and send the message again",)
    if err.code == "PF102":
        if "cycle" in d and isinstance(d["cycle"], list):
            path = " -> ".join(str(p) for p in d["cycle"])
            return (f"Remove one bond of the cycle {path}; molecules must be acyclic",)
        if "unknown_packet" in d:
            return (f"Add packet {d['unknown_packet']!r} to the molecule or fix the bond "
                    "or dependency naming it",)  # fmt: skip
        if d.get("skipped"):
            return ("Its source did not succeed: see that packet's error",)
        if reason is not None:
            return ("Fix the bonds named in error_details, then run the molecule again",)
    if err.code == "PF005":
        advice = _PF005_ADVICE.get(str(reason))
        if advice is not None:
            return advice
    return ()


_PF005_ADVICE: dict[str, tuple[str, ...]] = {
    "handler_exception": (
        "The element's handler raised (error_details.exception_type and "
        "exception_message say what): fix the packet's data or the handler",
    ),
    "result_too_large": ("Return a smaller result, or df:save it and return its path",),
    "result_not_serializable": ("Make the handler return JSON-serializable data",),
    "timeout": ("Raise the packet's timeout_ms, or send smaller work",),
    "file_not_found": (
        "Put the file in the reactor's data directory (packetflow reactor --data-dir), "
        "or name one that exists",
    ),
}


class ProtocolError(PacketFlowError):
    code = "PF001"


class InvalidMessage(ProtocolError):
    code = "PF001"


class InvalidAddress(ProtocolError):
    """A gateway address the client cannot use (never sent: raised before dialling)."""

    code = "PF001"


class InvalidPacket(ProtocolError):
    code = "PF002"


class NoReactorAvailable(ProtocolError):
    code = "PF003"


class Overloaded(ProtocolError):
    code = "PF004"


class ProcessingFailed(ProtocolError):
    code = "PF005"


class ChemicalError(PacketFlowError):
    code = "PF104"


class LowAffinity(ChemicalError):
    code = "PF101"


class BondFormationFailed(ChemicalError):
    code = "PF102"


class MolecularInstability(ChemicalError):
    code = "PF103"


class PropertyCalculationError(ChemicalError):
    code = "PF104"


class OptimizationFailed(ChemicalError):
    code = "PF105"


class SecurityError(PacketFlowError):
    code = "PF403"


class AuthenticationFailed(SecurityError):
    code = "PF401"


class PermissionDenied(SecurityError):
    """The principal lacks a permission (§11.2); ``field`` names what was denied and
    ``details["required_permission"]`` the permission it would need."""

    code = "PF403"


class SystemFailure(PacketFlowError):
    code = "PF500"


class InternalError(SystemFailure):
    code = "PF500"


class OutOfMemory(SystemFailure):
    code = "PF501"


class NetworkTimeout(SystemFailure):
    code = "PF502"


class GatewayUnreachable(NetworkTimeout):
    """The client could not open its connection: nothing listens there, or it is not a
    packetflow gateway (raised by the SDK instead of the HTTP library's exceptions)."""

    code = "PF502"


class ServiceUnavailable(SystemFailure):
    code = "PF503"


class GatewayTimeout(SystemFailure):
    code = "PF504"


def json_type(value: Any) -> str:
    """The JSON Schema name of a decoded value's type, for PF002's ``received_type``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def result_too_large(what: str, size: int, limit: int) -> ProcessingFailed:
    """PF005 for a result that cannot travel in one frame (the same data would produce
    the same result anywhere: not retryable)."""
    return ProcessingFailed(
        f"{what} returned a {size}-byte result; the limit is {limit} bytes",
        details={"reason": "result_too_large", "bytes": size, "limit_bytes": limit},
        retryable=False,
    )


def invalid_field(
    field: str, expected: str, received: str, rule: str, message: str | None = None
) -> InvalidPacket:
    """A PF002 naming the JSON path of the bad field (DESIGN §3)."""
    return InvalidPacket(
        message or f"Invalid field '{field}': expected {expected}, got {received}",
        field=field,
        expected_type=expected,
        received_type=received,
        validation_rule=rule,
    )
