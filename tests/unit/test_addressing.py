"""protocol/addressing.py: what a SUBMIT's destination_id asks of the gateway (§4.1,
DESIGN §3)."""

from __future__ import annotations

import msgspec
import pytest

from packetflow.protocol.addressing import (
    BROADCAST,
    ROUTED,
    Pinned,
    resolve_destination,
)
from packetflow.protocol.errors import NoReactorAvailable

REACTORS = {"reactor-cpu-intensive", "reactor-memory-bound"}


def _resolve(destination_id: object) -> object:
    return resolve_destination(destination_id, "gateway-7f3a", REACTORS.__contains__)


@pytest.mark.parametrize("absent", [msgspec.UNSET, "gateway", "gateway-7f3a"])
def test_absent_or_naming_the_gateway_means_route_it_4_1(absent: object) -> None:
    assert _resolve(absent) is ROUTED


def test_null_broadcasts_4_1() -> None:
    assert _resolve(None) is BROADCAST


def test_a_registered_reactor_pins_the_packet() -> None:
    assert _resolve("reactor-memory-bound") == Pinned("reactor-memory-bound")


@pytest.mark.parametrize("unknown", ["reactor-cpu", "gateway-01", "", "GATEWAY"])
def test_a_name_of_no_reactor_is_pf003_naming_the_field(unknown: str) -> None:
    """It was silently routed by affinity, so `cf:shutdown` for `reactor-cpu` stopped a
    random reactor."""
    with pytest.raises(NoReactorAvailable) as caught:
        _resolve(unknown)
    err = caught.value
    assert err.code == "PF003"
    assert err.field == "destination_id"
    payload = err.to_payload()
    assert payload["error_details"]["field"] == "destination_id"
    assert payload["error_details"]["received_value"] == unknown
    assert payload["error_context"]["destination_id"] == unknown
    assert repr(unknown) in err.message
