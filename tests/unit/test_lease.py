"""protocol/lease.py: who runs an unfinished molecule among several gateways (issue 14)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from packetflow.protocol.lease import MAX_GATEWAYS, Decision, LeaseBook, renew_every


def book(start: float = 100.0, lease: float = 10.0) -> LeaseBook:
    return LeaseBook("gw-me", lease, start)


def test_own_molecules_are_mine_whatever_the_time() -> None:
    b = book()
    assert b.decide("gw-me", 0.0) is Decision.MINE
    assert b.decide("gw-me", 1e9) is Decision.MINE


def test_an_owner_seen_renewing_keeps_its_molecules() -> None:
    b = book()
    b.renewed("gw-a", 105.0)
    assert b.decide("gw-a", 114.9) is Decision.WAIT
    b.renewed("gw-a", 114.0)
    assert b.decide("gw-a", 123.9) is Decision.WAIT


def test_an_owner_silent_for_a_lease_is_taken_over() -> None:
    b = book()
    b.renewed("gw-a", 105.0)
    assert b.decide("gw-a", 115.0) is Decision.TAKE_OVER


def test_an_owner_never_seen_counts_from_this_gateways_start() -> None:
    """A gateway just started has not watched anyone yet: it waits a whole lease."""
    b = book(start=100.0)
    assert b.decide("gw-unknown", 109.9) is Decision.WAIT
    assert b.decide("gw-unknown", 110.0) is Decision.TAKE_OVER
    assert b.decide(None, 109.9) is Decision.WAIT
    assert b.decide(None, 110.0) is Decision.TAKE_OVER


def test_a_released_lease_lapses_at_once() -> None:
    b = book()
    b.renewed("gw-a", 105.0)
    b.released("gw-a", 106.0)
    assert b.decide("gw-a", 106.0) is Decision.TAKE_OVER


def test_a_late_renewal_report_never_moves_the_lease_back() -> None:
    b = book()
    b.renewed("gw-a", 120.0)
    b.renewed("gw-a", 110.0)  # delivered late, seen with an older clock reading
    assert b.lapses_at("gw-a") == 130.0


def test_live_lists_this_gateway_and_the_renewing_ones() -> None:
    b = book()
    b.renewed("gw-b", 105.0)
    b.renewed("gw-a", 101.0)
    assert b.live(112.0) == ["gw-me", "gw-b"]


def test_the_book_is_bounded() -> None:
    b = book()
    for i in range(MAX_GATEWAYS + 5):
        b.renewed(f"gw-{i}", float(i))
    assert len(b.seen) == MAX_GATEWAYS


def test_renewals_fit_in_a_lease() -> None:
    assert renew_every(9.0) == 3.0
    with pytest.raises(ValueError):
        renew_every(0.0)
    with pytest.raises(ValueError):
        LeaseBook("gw", -1.0, 0.0)


@given(st.lists(st.floats(0, 1000), max_size=20), st.floats(0, 2000))
def test_take_over_exactly_when_a_lease_passed_since_the_last_renewal(
    renewals: list[float], now: float
) -> None:
    b = book(start=0.0)
    for at in renewals:
        b.renewed("gw-a", at)
    last = max([0.0, *renewals])
    expected = Decision.TAKE_OVER if now >= last + 10.0 else Decision.WAIT
    assert b.decide("gw-a", now) is expected
