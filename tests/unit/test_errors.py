"""The PFAP error catalogue: every code of §10.1 and Appendix A, categories in their wire
form (`<category>_error`), retryability exactly as §10.1's Retry column, the exception
hierarchy (STYLE 4) and the DESIGN §6 payload shape.
"""

from __future__ import annotations

import json

import pytest

from packetflow.protocol import errors

# PFAP §10.1.1-§10.1.3: code, category (as printed), description, Retry, Recovery.
SPEC_10_1 = [
    ("PF001", "Validation", "Invalid message format", False, "Fix format"),
    ("PF002", "Validation", "Invalid packet structure", False, "Fix packet"),
    ("PF003", "Routing", "No available reactors", True, "Wait/scale"),
    ("PF004", "Capacity", "Node overloaded", True, "Load balance"),
    ("PF005", "Processing", "Packet processing failed", True, "Retry/route"),
    ("PF101", "Affinity", "Low affinity match", True, "Force route"),
    ("PF102", "Molecular", "Bond formation failed", True, "Rebuild"),
    ("PF103", "Molecular", "Molecular instability", True, "Optimize"),
    ("PF104", "Chemical", "Property calculation error", False, "Recalibrate"),
    ("PF105", "Optimization", "Optimization failed", True, "Fallback"),
    ("PF500", "Internal", "Internal server error", True, "Investigate"),
    ("PF501", "Resource", "Out of memory", False, "Scale up"),
    ("PF502", "Network", "Network timeout", True, "Reconnect"),
    ("PF503", "Service", "Service unavailable", True, "Failover"),
    ("PF504", "Timeout", "Gateway timeout", True, "Extend timeout"),
]

# Appendix A: code, message, recovery action.
SPEC_APPENDIX_A = [
    ("PF001", "Invalid JSON format", "Fix message structure"),
    ("PF002", "Invalid packet structure", "Correct packet fields"),
    ("PF003", "No available reactors", "Wait or scale cluster"),
    ("PF004", "Node overloaded", "Route to different node"),
    ("PF005", "Packet processing failed", "Retry with same/different node"),
    ("PF101", "Affinity calculation failed", "Use default routing"),
    ("PF102", "Bond formation failed", "Rebuild molecular structure"),
    ("PF103", "Molecular instability detected", "Run optimization"),
    ("PF500", "Internal server error", "Check logs, restart if needed"),
    ("PF501", "Out of memory", "Scale up or reduce load"),
    ("PF502", "Network timeout", "Check connectivity"),
    ("PF503", "Service unavailable", "Failover to backup"),
]

# DESIGN §6: the keys of every ERROR payload.
PAYLOAD_KEYS = {
    "packet_id",
    "error_code",
    "error_category",
    "error_message",
    "error_details",
    "error_context",
    "reactor_info",
    "recovery_suggestions",
    "recovery_options",
    "retry_possible",
    "retry_delay_ms",
}


def test_spec_tables_are_complete() -> None:
    assert len(SPEC_10_1) == 15
    assert len(SPEC_APPENDIX_A) == 12


# DESIGN §8 / docs/security.md: §10.1 has no security codes, so these two are added.
SECURITY_CODES = {"PF401", "PF403"}


def test_catalogue_is_exactly_the_spec_codes() -> None:
    """§10.1 ∪ Appendix A ∪ the two documented security codes; nothing else invented."""
    spec_codes = {row[0] for row in SPEC_10_1} | {row[0] for row in SPEC_APPENDIX_A}
    assert set(errors.CATALOGUE) == spec_codes | SECURITY_CODES
    for code, spec in errors.CATALOGUE.items():
        assert spec.code == code


@pytest.mark.parametrize(
    ("code", "category", "description", "retry", "recovery"),
    SPEC_10_1,
    ids=[row[0] for row in SPEC_10_1],
)
def test_catalogue_row_pfap_10_1(
    code: str, category: str, description: str, retry: bool, recovery: str
) -> None:
    """PFAP §10.1: category (wire form `<category>_error`), description, Retry, Recovery."""
    spec = errors.CATALOGUE[code]
    assert spec.category == f"{category.lower()}_error"
    assert spec.description == description
    assert spec.retryable is retry
    assert spec.recovery == recovery


@pytest.mark.parametrize(
    ("code", "category"),
    [("PF001", "validation_error"), ("PF003", "routing_error"), ("PF101", "affinity_error")],
)
def test_category_wire_form_examples_pfap_10_2(code: str, category: str) -> None:
    """PFAP §10.2 shows `routing_error` for PF003; §4.2.3 `validation_error` for PF001;
    PF101 follows §10.1 ("Affinity"), not Appendix A ("Chemical")."""
    assert errors.CATALOGUE[code].category == category


@pytest.mark.parametrize(
    ("code", "message", "action"), SPEC_APPENDIX_A, ids=[row[0] for row in SPEC_APPENDIX_A]
)
def test_appendix_a_row(code: str, message: str, action: str) -> None:
    """Appendix A: message and recovery action."""
    spec = errors.CATALOGUE[code]
    assert spec.appendix_message == message
    assert spec.appendix_action == action


@pytest.mark.parametrize("code", ["PF104", "PF105", "PF504"])
def test_codes_absent_from_appendix_a(code: str) -> None:
    """PF104, PF105 and PF504 appear in §10.1 only."""
    spec = errors.CATALOGUE[code]
    assert spec.appendix_message is None
    assert spec.appendix_action is None


@pytest.mark.parametrize(
    ("code", "retry"), [(row[0], row[3]) for row in SPEC_10_1], ids=[row[0] for row in SPEC_10_1]
)
def test_exception_retryable_follows_retry_column_pfap_10_1(code: str, retry: bool) -> None:
    """PFAP §10.1 Retry column, as seen on a raised error and in its payload."""
    err = errors.PacketFlowError("boom", code=code)
    assert err.code == code
    assert err.retryable is retry
    payload = err.to_payload()
    assert payload["retry_possible"] is retry
    assert payload["error_code"] == code
    assert payload["error_category"] == errors.CATALOGUE[code].category


@pytest.mark.parametrize("code", [row[0] for row in SPEC_10_1])
def test_every_code_has_recovery_suggestions_design_6(code: str) -> None:
    """DESIGN §6: recovery_suggestions are strings."""
    suggestions = errors.CATALOGUE[code].suggestions
    assert suggestions
    assert all(isinstance(s, str) and s for s in suggestions)


# ---------------------------------------------------------------- hierarchy (STYLE 4)

SUBCLASS_CODES = [
    (errors.InvalidMessage, "PF001", errors.ProtocolError),
    (errors.InvalidPacket, "PF002", errors.ProtocolError),
    (errors.NoReactorAvailable, "PF003", errors.ProtocolError),
    (errors.Overloaded, "PF004", errors.ProtocolError),
    (errors.ProcessingFailed, "PF005", errors.ProtocolError),
    (errors.LowAffinity, "PF101", errors.ChemicalError),
    (errors.BondFormationFailed, "PF102", errors.ChemicalError),
    (errors.MolecularInstability, "PF103", errors.ChemicalError),
    (errors.PropertyCalculationError, "PF104", errors.ChemicalError),
    (errors.OptimizationFailed, "PF105", errors.ChemicalError),
    (errors.InternalError, "PF500", errors.SystemFailure),
    (errors.OutOfMemory, "PF501", errors.SystemFailure),
    (errors.NetworkTimeout, "PF502", errors.SystemFailure),
    (errors.ServiceUnavailable, "PF503", errors.SystemFailure),
    (errors.GatewayTimeout, "PF504", errors.SystemFailure),
]


@pytest.mark.parametrize(
    ("cls", "code", "family"), SUBCLASS_CODES, ids=[c.__name__ for c, _, _ in SUBCLASS_CODES]
)
def test_exception_subclass_carries_code(
    cls: type[errors.PacketFlowError], code: str, family: type[errors.PacketFlowError]
) -> None:
    """STYLE 4: one subclass per §10.1 family; each carries its code, category and retry."""
    err = cls("something went wrong")
    assert err.code == code
    assert isinstance(err, family)
    assert isinstance(err, errors.PacketFlowError)
    assert isinstance(err, Exception)
    spec_row = next(row for row in SPEC_10_1 if row[0] == code)
    assert err.category == f"{spec_row[1].lower()}_error"
    assert err.retryable is spec_row[3]
    assert str(err) == "something went wrong"


def test_families_partition_by_code_prefix() -> None:
    """PF0xx protocol, PF1xx chemical, PF5xx system."""
    prefix = {errors.ProtocolError: "PF0", errors.ChemicalError: "PF1", errors.SystemFailure: "PF5"}
    for cls, code, family in SUBCLASS_CODES:
        assert code.startswith(prefix[family]), cls


def test_unknown_code_is_rejected() -> None:
    with pytest.raises(ValueError, match="PF999"):
        errors.PacketFlowError("x", code="PF999")


def test_code_override_on_generic_error() -> None:
    err = errors.PacketFlowError("no reactors", code="PF003")
    assert err.code == "PF003"
    assert err.category == "routing_error"
    assert errors.PacketFlowError("bug").code == "PF500"


def test_retryable_override_design_6() -> None:
    """DESIGN §6 poison packets: PF005 with retry_possible false."""
    err = errors.ProcessingFailed("reactor died while running it", retryable=False)
    assert err.retryable is False
    payload = err.to_payload()
    assert payload["retry_possible"] is False
    assert payload["error_code"] == "PF005"


# ---------------------------------------------------------------- payload (DESIGN §6)


@pytest.mark.parametrize("code", [row[0] for row in SPEC_10_1])
def test_payload_has_every_design_6_key(code: str) -> None:
    """DESIGN §6: one shape merging §4.2.3 and §10.2, with all eleven keys."""
    payload = errors.PacketFlowError("m", code=code).to_payload()
    assert set(payload) == PAYLOAD_KEYS
    json.dumps(payload)  # serialisable as is
    assert isinstance(payload["recovery_suggestions"], list)
    assert all(isinstance(s, str) for s in payload["recovery_suggestions"])
    assert isinstance(payload["recovery_options"], list)
    assert all(isinstance(o, dict) and "strategy" in o for o in payload["recovery_options"])
    assert isinstance(payload["error_details"], dict)
    assert isinstance(payload["error_context"], dict)


def test_payload_of_validation_error_pfap_4_2_3() -> None:
    """PFAP §4.2.3 / DESIGN §3: PF002 details {field, expected_type, received_type,
    validation_rule}; not retryable, so no delay."""
    err = errors.invalid_field("payload.packet.priority", "int", "str", "type")
    assert isinstance(err, errors.InvalidPacket)
    payload = err.to_payload(packet_id="packet_12345", reactor_info={"reactor_id": "r1"})
    assert payload["packet_id"] == "packet_12345"
    assert payload["error_code"] == "PF002"
    assert payload["error_category"] == "validation_error"
    assert payload["error_details"] == {
        "field": "payload.packet.priority",
        "expected_type": "int",
        "received_type": "str",
        "validation_rule": "type",
    }
    assert payload["reactor_info"] == {"reactor_id": "r1"}
    assert payload["retry_possible"] is False
    assert payload["retry_delay_ms"] is None
    assert payload["recovery_options"] == []
    assert "payload.packet.priority" in payload["error_message"]


def test_payload_of_retryable_error_pfap_10_2() -> None:
    """PFAP §10.2: recovery_options with retry_with_delay; default delay 1000 ms (§4.2.3
    example and §10.3.1's initial delay)."""
    err = errors.NoReactorAvailable(
        "No available reactors for packet group 'mc'",
        context={"requested_group": "mc", "requested_element": "optimize"},
        packet_id="packet_12345",
    )
    payload = err.to_payload()
    assert payload["packet_id"] == "packet_12345"
    assert payload["error_category"] == "routing_error"
    assert payload["error_message"] == "No available reactors for packet group 'mc'"
    assert payload["error_context"] == {"requested_group": "mc", "requested_element": "optimize"}
    assert payload["retry_possible"] is True
    assert payload["retry_delay_ms"] == 1000
    assert errors.DEFAULT_RETRY_DELAY_MS == 1000
    strategies = [o["strategy"] for o in payload["recovery_options"]]
    assert "retry_with_delay" in strategies
    retry = payload["recovery_options"][strategies.index("retry_with_delay")]
    assert retry["delay_ms"] == 1000
    assert payload["reactor_info"] is None


def test_payload_explicit_retry_delay_design_5() -> None:
    """DESIGN §5: a full queue answers PF004 with retry_delay_ms."""
    payload = errors.Overloaded("queue full", retry_delay_ms=5000).to_payload()
    assert payload["retry_delay_ms"] == 5000
    assert payload["recovery_options"][0]["delay_ms"] == 5000


def test_payload_packet_id_argument_wins() -> None:
    err = errors.ProcessingFailed("x", packet_id="from_error")
    assert err.to_payload()["packet_id"] == "from_error"
    assert err.to_payload(packet_id="from_caller")["packet_id"] == "from_caller"


def test_details_merge_without_dropping_field() -> None:
    err = errors.ProcessingFailed("t", details={"reason": "timeout"}, field="payload.packet")
    assert err.error_details() == {"field": "payload.packet", "reason": "timeout"}


def test_error_inputs_are_copied() -> None:
    details = {"reason": "timeout"}
    context = {"a": 1}
    err = errors.ProcessingFailed("t", details=details, context=context)
    details["reason"] = "changed"
    context["a"] = 2
    assert err.to_payload()["error_details"] == {"reason": "timeout"}
    assert err.to_payload()["error_context"] == {"a": 1}


# ---------------------------------------------------------------- whose fault (issue 5)


@pytest.mark.parametrize(
    ("code", "retryable", "client", "against_reactor"),
    [
        ("PF001", False, True, False),
        ("PF002", False, True, False),
        ("PF002", True, True, False),  # whatever a reactor claims, bad input stays bad
        ("PF003", True, True, False),
        ("PF102", True, True, False),
        ("PF005", False, True, False),  # missing file, result too large, handler rejects
        ("PF005", True, False, True),  # timeout, transient failure
        ("PF500", True, False, True),
        ("PF501", False, False, True),  # out of memory is the reactor's trouble
        ("PF503", True, False, True),
        ("PF504", True, False, True),
        ("PF004", True, False, False),  # busy is neither
    ],
)
def test_whose_fault_an_error_is(
    code: str, retryable: bool, client: bool, against_reactor: bool
) -> None:
    assert errors.is_client_error(code, retryable) is client
    assert errors.counts_against_reactor(code, retryable) is against_reactor


def test_a_success_never_counts_against_a_reactor() -> None:
    assert not errors.counts_against_reactor(None, False)


def test_permission_denied_is_pf403_security_not_retryable() -> None:
    """DESIGN §8: a forbidden action is one PF403 naming what was denied."""
    err = errors.PermissionDenied(
        "no", field="payload.packet.element", details={"required_permission": "cf:shutdown"}
    )
    payload = err.to_payload("p1")
    assert isinstance(err, errors.SecurityError)
    assert payload["error_code"] == "PF403"
    assert payload["error_category"] == "security_error"
    assert payload["retry_possible"] is False
    assert payload["error_details"]["field"] == "payload.packet.element"
    assert payload["error_details"]["required_permission"] == "cf:shutdown"


@pytest.mark.parametrize(
    ("cls", "code"),
    [(errors.AuthenticationFailed, "PF401"), (errors.PermissionDenied, "PF403")],
)
def test_security_codes_are_not_retryable(cls: type[errors.PacketFlowError], code: str) -> None:
    """docs/security.md: PF401/PF403, category security_error, never retried."""
    err = cls("no")
    assert isinstance(err, errors.SecurityError)
    assert err.code == code
    assert err.category == "security_error"
    assert err.retryable is False
