"""Recovery advice matches the error it comes with: no "retry" on an error a retry cannot
fix, advice naming the reason or the bad field."""

from __future__ import annotations

from typing import Any

import pytest

from packetflow.protocol.errors import (
    CATALOGUE,
    BondFormationFailed,
    InvalidPacket,
    PacketFlowError,
    ProcessingFailed,
    invalid_field,
)
from packetflow.protocol.molecules import parse_molecule


def _mentions_retry(payload: dict[str, Any]) -> bool:
    suggestions: list[str] = payload["recovery_suggestions"]
    return any("retry" in s.lower() or "resubmit" in s.lower() for s in suggestions)


def test_a_cycle_is_not_retryable_and_names_the_cycle() -> None:
    with pytest.raises(BondFormationFailed) as info:
        parse_molecule({"molecule_id": "m",
            "packets": [{"id": "a", "group": "cf", "element": "ping"},
                        {"id": "b", "group": "cf", "element": "ping"}],
            "bonds": [{"from": "a", "to": "b", "type": "ionic"},
                      {"from": "b", "to": "a", "type": "ionic"}],
        })  # fmt: skip
    payload = info.value.to_payload()
    assert payload["retry_possible"] is False
    assert payload["recovery_options"] == []
    assert not _mentions_retry(payload)
    assert any("cycle" in s for s in payload["recovery_suggestions"])


def test_a_handler_exception_does_not_suggest_a_retry() -> None:
    err = ProcessingFailed(
        "df:x failed: KeyError: 'input'",
        details={"reason": "handler_exception", "exception_type": "KeyError"},
        retryable=False,
    )
    payload = err.to_payload()
    assert payload["retry_possible"] is False
    assert not _mentions_retry(payload)
    assert "handler raised" in payload["recovery_suggestions"][0]


def test_a_retryable_processing_failure_still_suggests_a_retry() -> None:
    payload = ProcessingFailed("lost", details={"reason": "connection_lost"}).to_payload()
    assert payload["retry_possible"] is True
    assert _mentions_retry(payload)


def test_a_missing_file_says_where_files_go() -> None:
    payload = ProcessingFailed("No file 'x.csv'", details={"reason": "file_not_found"},
                               retryable=True).to_payload()  # fmt: skip
    assert "data directory" in payload["recovery_suggestions"][0]


def test_pf002_names_the_field_and_not_serialization() -> None:
    err = invalid_field("payload.packet.priority", "integer 1-10", "11", "range")
    suggestions = err.to_payload()["recovery_suggestions"]
    assert "payload.packet.priority" in suggestions[0]
    assert not any("serialization" in s for s in suggestions)


def test_pf002_without_a_field_does_not_point_at_error_details_field() -> None:
    suggestions = InvalidPacket("bad").to_payload()["recovery_suggestions"]
    assert suggestions
    assert not any("error_details.field" in s for s in suggestions)


@pytest.mark.parametrize("code", sorted(CATALOGUE))
def test_every_code_has_advice_consistent_with_its_retry_flag(code: str) -> None:
    for retryable in (True, False):
        payload = PacketFlowError("x", code=code, retryable=retryable).to_payload()
        assert payload["recovery_suggestions"], code
        assert payload["retry_possible"] is retryable
        if not retryable:
            assert not _mentions_retry(payload), (code, payload["recovery_suggestions"])
