"""protocol/failover.py: the gateway's rules when a packet is not simply answered
(DESIGN §5, §6)."""

from __future__ import annotations

import pytest

from packetflow.protocol import failover
from packetflow.protocol.messages import RoutingPreferences


@pytest.mark.parametrize(
    ("code", "retry_possible", "has_alternative", "action"),
    [
        ("PF004", True, True, "reroute"),  # "not here": another reactor at once
        ("PF503", True, True, "reroute"),
        ("PF003", False, True, "reroute"),
        ("PF004", True, False, "retry"),  # no other reactor: back off and try again
        ("PF005", True, True, "retry"),  # a handler's transient failure
        ("PF005", False, True, "relay"),  # a handler raised: same data would fail again
        ("PF002", False, True, "relay"),  # the packet is bad
        ("PF503", False, False, "relay"),
    ],
)
def test_on_reactor_error_design_6(
    code: str, retry_possible: bool, has_alternative: bool, action: str
) -> None:
    assert failover.on_reactor_error(code, retry_possible, has_alternative) == action


def test_queued_packet_gets_pf004_with_retry_delay_or_pf504_when_ttl_bound() -> None:
    err = failover.no_slot_in_time("p1", "cf", "ping", ttl_bound=False, queued_ms=500,
                                   queue_depth=3)  # fmt: skip
    assert err.code == "PF004" and err.retry_delay_ms == 1000
    assert err.context == {"queued_ms": 500, "queue_depth": 3}
    ttl = failover.no_slot_in_time("p1", "cf", "ping", ttl_bound=True, queued_ms=500,
                                   queue_depth=3)  # fmt: skip
    assert ttl.code == "PF504" and ttl.field == "ttl"


def test_no_reply_is_pf504_naming_the_timeout() -> None:
    err = failover.no_reply_in_time("p1", ttl_bound=False, timeout_ms=5000, reactor_id="r1")
    assert err.code == "PF504"
    assert err.details == {"reason": "timeout", "timeout_ms": 5000}
    assert err.context == {"reactor_id": "r1"}
    assert (
        failover.no_reply_in_time("p1", ttl_bound=True, timeout_ms=5000, reactor_id=None).details[
            "reason"
        ]
        == "ttl_expired"
    )


def test_ttl_is_binding() -> None:
    assert failover.ttl_is_binding(1.0, 2.0)
    assert failover.ttl_is_binding(2.0, 2.0)
    assert not failover.ttl_is_binding(3.0, 2.0)
    assert not failover.ttl_is_binding(None, 2.0)


def test_retries_avoid_tried_reactors_while_an_untried_one_remains() -> None:
    prefs = RoutingPreferences(avoid_reactors=["x"], preferred_implementation="zig")
    out = failover.avoiding_tried(prefs, {"b", "a"}, ["a", "b", "c"])
    assert out is not None
    assert out.avoid_reactors == ["x", "a", "b"]
    assert out.preferred_implementation == "zig"
    # Every candidate tried: the preferences stay as they were (a retry may reuse one).
    assert failover.avoiding_tried(prefs, {"a", "b"}, ["a", "b"]) is prefs
    assert failover.avoiding_tried(None, set(), ["a"]) is None
