"""protocol/failover.py: the gateway's rules when a packet is not simply answered
(DESIGN §5, §6)."""

from __future__ import annotations

import pytest

from packetflow.protocol import failover
from packetflow.protocol.messages import RoutingPreferences


def test_a_client_error_is_relayed_even_when_a_reactor_calls_it_retryable() -> None:
    """Hardening issue 5: the client's mistake fails the same way anywhere."""
    assert failover.on_reactor_error("PF002", True, True) == "relay"
    assert failover.on_reactor_error("PF005", False, True) == "relay"
    assert failover.on_reactor_error("PF005", True, True) == "retry"


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


def test_design_6_a_death_with_no_suspect_blames_every_packet_on_the_reactor() -> None:
    assert failover.blame_for_death([("a", False), ("b", False)]) == {"a", "b"}
    assert failover.blame_for_death([]) == frozenset()


def test_design_6_a_death_with_a_suspect_blames_the_suspect_alone() -> None:
    on_reactor = [("bystander", False), ("poison", True), ("other", False)]
    assert failover.blame_for_death(on_reactor) == {"poison"}


def test_design_6_poison_convicted_and_no_bystander_reaches_the_limit() -> None:
    """Simulate the rule: each round a reactor runs the poison (once a suspect, the only
    suspect there) and fresh bystanders; it dies. The poison counts every death; the
    bystanders beside it count only the deaths before the poison became a suspect."""
    limit = 6
    deliveries = {"poison": 0} | {f"b{n}": 0 for n in range(60)}
    for death in range(limit):
        fresh = [b for b, d in deliveries.items() if b != "poison" and d == 0][:8]
        on_reactor = [(k, failover.is_suspect(deliveries[k])) for k in ("poison", *fresh)]
        for key in failover.blame_for_death(on_reactor):
            deliveries[key] += 1
        assert deliveries["poison"] == death + 1
    bystanders = max(v for k, v in deliveries.items() if k != "poison")
    assert bystanders < failover.SUSPECT_AFTER_DELIVERIES < limit


def test_design_6_suspect_after_two_deliveries() -> None:
    assert not failover.is_suspect(0) and not failover.is_suspect(1)
    assert failover.is_suspect(failover.SUSPECT_AFTER_DELIVERIES)


def test_design_6_a_suspect_avoids_reactors_running_one_and_waits_when_all_do() -> None:
    avoid = failover.reactors_to_avoid(["a", "b", "c"], tried=["a"], holders=["b"], suspect=True)
    assert avoid == {"a", "b"}
    # The untried one holds a suspect: the retry may go back to a tried reactor.
    avoid = failover.reactors_to_avoid(["a", "b"], tried=["a"], holders=["b"], suspect=True)
    assert avoid == {"b"}
    assert failover.reactors_to_avoid(["a", "b"], tried=[], holders=["a", "b"],
                                      suspect=True) is None  # fmt: skip
    # Not a suspect: holders do not matter, only the tried reactors.
    assert failover.reactors_to_avoid(["a", "b"], tried=["a"], holders=["b"],
                                      suspect=False) == {"a"}  # fmt: skip
    assert failover.reactors_to_avoid(["a"], tried=["a"], holders=[], suspect=False) == set()
    # A holder that no longer serves the element is no reason to wait.
    assert failover.reactors_to_avoid(["a"], tried=[], holders=["gone"], suspect=True) == set()


def test_with_avoided_adds_to_the_avoid_list_once() -> None:
    prefs = RoutingPreferences(avoid_reactors=["x"])
    out = failover.with_avoided(prefs, {"x", "b", "a"})
    assert out is not None and out.avoid_reactors == ["x", "a", "b"]
    assert failover.with_avoided(prefs, set()) is prefs
    assert failover.with_avoided(None, set()) is None
