"""Retry rules: PFAP §10.3.1 backoff, §10.1 retryability, and the DESIGN §6 deadline, retry
budget, poison-packet and different-reactor rules.

Randomness comes from seeded ``random.Random`` instances; time is passed explicitly.
"""

from __future__ import annotations

import dataclasses
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from packetflow.protocol import errors
from packetflow.protocol.retry import (
    DEFAULT_RETRY_POLICY,
    POISON_REASON,
    RetryBudget,
    RetryPolicy,
    backoff_ms,
    choose_retry_target,
    is_retryable,
    next_retry_delay_ms,
    poison_packet_error,
    retry_allowance,
    should_retry,
)

# §10.1 "Retry" column, typed out from the spec tables.
SPEC_RETRYABLE = {
    "PF001": False,
    "PF002": False,
    "PF003": True,
    "PF004": True,
    "PF005": True,
    "PF101": True,
    "PF102": True,
    "PF103": True,
    "PF104": False,
    "PF105": True,
    "PF500": True,
    "PF501": False,
    "PF502": True,
    "PF503": True,
    "PF504": True,
    # DESIGN §8, not §10.1: a denial stays a denial until the principal's roles change.
    # docs/security.md: credentials do not get better by retrying.
    "PF401": False,
    "PF403": False,
}

NO_JITTER = RetryPolicy(jitter_percent=0.0)


# ---------------------------------------------------------------- §10.3.1 backoff


def test_10_3_1_policy_defaults() -> None:
    p = RetryPolicy()
    assert p.initial_delay_ms == 1000
    assert p.multiplier == 2.0
    assert p.max_delay_ms == 30_000
    assert p.max_retries == 5
    assert p.jitter_percent == 0.1
    assert p == DEFAULT_RETRY_POLICY
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.max_retries = 9  # type: ignore[misc]


def test_10_3_1_policy_rejects_nonsense() -> None:
    for bad in (
        {"multiplier": 0.5},
        {"max_retries": -1},
        {"jitter_percent": 1.0},
        {"initial_delay_ms": -1.0},
    ):
        with pytest.raises(ValueError):
            RetryPolicy(**bad)


def test_10_3_1_backoff_doubles_from_one_second_and_caps_at_30s() -> None:
    rng = random.Random(0)
    delays = [backoff_ms(a, rng, NO_JITTER) for a in range(1, 9)]
    assert delays == [1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]


@given(attempt=st.integers(1, 60), seed=st.integers(0, 2**32 - 1))
def test_10_3_1_backoff_stays_within_jitter_bounds(attempt: int, seed: int) -> None:
    base = min(1000 * 2.0 ** (attempt - 1), 30_000)
    delay = backoff_ms(attempt, random.Random(seed))
    assert base * 0.9 - 1 <= delay <= min(base * 1.1, 30_000) + 1e-9
    assert delay <= 30_000


def test_10_3_1_backoff_never_exceeds_the_cap_even_for_huge_attempts() -> None:
    rng = random.Random(7)
    for attempt in (6, 100, 10_000, 10**9):
        assert 27_000 <= backoff_ms(attempt, rng) <= 30_000


def test_10_3_1_backoff_is_deterministic_with_a_seeded_random() -> None:
    a = [backoff_ms(n, random.Random(42)) for n in range(1, 6)]
    b = [backoff_ms(n, random.Random(42)) for n in range(1, 6)]
    assert a == b
    rng1, rng2 = random.Random(5), random.Random(5)
    assert [backoff_ms(n, rng1) for n in range(1, 6)] == [backoff_ms(n, rng2) for n in range(1, 6)]


def test_10_3_1_backoff_jitter_actually_varies() -> None:
    rng = random.Random(1)
    assert len({backoff_ms(1, rng) for _ in range(50)}) > 10


def test_10_3_1_attempt_counts_from_one() -> None:
    with pytest.raises(ValueError):
        backoff_ms(0, random.Random(0))


# ---------------------------------------------------------------- §10.1 retryability


@pytest.mark.parametrize(("code", "retryable"), sorted(SPEC_RETRYABLE.items()))
def test_10_1_retryability_follows_the_catalogue(code: str, retryable: bool) -> None:
    assert is_retryable(code) is retryable
    assert should_retry(code, 1, None, 0.0) is retryable


def test_10_1_every_catalogue_code_is_covered() -> None:
    assert set(SPEC_RETRYABLE) == set(errors.CATALOGUE)


def test_10_1_unknown_codes_are_not_retried() -> None:
    assert not is_retryable("PF999")
    assert not should_retry("PF999", 1, None, 0.0)


def test_10_1_an_errors_own_retryable_flag_wins() -> None:
    err = errors.ProcessingFailed("boom", retryable=False)
    assert not should_retry(err, 1, None, 0.0)
    assert should_retry(errors.NetworkTimeout("slow"), 1, None, 0.0)


# ---------------------------------------------------------------- attempts and deadline


def test_10_3_1_at_most_max_retries() -> None:
    assert should_retry("PF005", 5, None, 0.0)
    assert not should_retry("PF005", 6, None, 0.0)
    assert not should_retry("PF005", 0, None, 0.0)
    assert not should_retry("PF005", 3, None, 0.0, RetryPolicy(max_retries=2))


def test_design_6_retries_never_outlive_the_deadline() -> None:
    # now 10 s, deadline 12 s.
    assert should_retry("PF005", 1, 12.0, 10.0, delay_ms=1999)
    assert not should_retry("PF005", 1, 12.0, 10.0, delay_ms=2000)
    assert not should_retry("PF005", 1, 12.0, 12.0)
    assert not should_retry("PF005", 1, 12.0, 13.0)


def test_design_6_next_retry_delay_combines_backoff_and_deadline() -> None:
    rng = random.Random(3)
    delay = next_retry_delay_ms("PF502", 1, 100.0, 0.0, rng)
    assert delay is not None and 900 <= delay <= 1100
    # Retry 5 waits ~16 s: not with only 10 s to go.
    assert next_retry_delay_ms("PF502", 5, 10.0, 0.0, random.Random(3)) is None
    assert next_retry_delay_ms("PF502", 5, None, 0.0, random.Random(3)) is not None
    assert next_retry_delay_ms("PF002", 1, None, 0.0, rng) is None
    assert next_retry_delay_ms("PF502", 6, None, 0.0, rng) is None


# ---------------------------------------------------------------- DESIGN §6 retry budget


@pytest.mark.parametrize(
    ("in_flight", "allowed"),
    [(0, 3), (1, 3), (15, 3), (19, 3), (20, 4), (24, 4), (25, 5), (100, 20), (1001, 200)],
)
def test_design_6_retry_allowance_is_20_percent_at_least_3(in_flight: int, allowed: int) -> None:
    assert retry_allowance(in_flight) == allowed


def test_design_6_retry_budget_acquire_and_release() -> None:
    budget = RetryBudget()
    assert [budget.try_acquire(10) for _ in range(4)] == [True, True, True, False]
    assert budget.in_flight == 3
    budget.release()
    assert budget.try_acquire(10)
    assert budget.try_acquire(20)  # 20 in flight allow 4
    assert not budget.try_acquire(20)
    for _ in range(4):
        budget.release()
    assert budget.in_flight == 0
    with pytest.raises(ValueError):
        budget.release()


@given(st.lists(st.tuples(st.booleans(), st.integers(0, 200)), max_size=200))
def test_design_6_retries_in_flight_never_exceed_the_budget(
    steps: list[tuple[bool, int]],
) -> None:
    budget = RetryBudget()
    for acquire, packets in steps:
        if acquire:
            before = budget.in_flight
            if budget.try_acquire(packets):
                assert budget.in_flight == before + 1 <= max(3, packets // 5)
        elif budget.in_flight:
            budget.release()
        assert budget.in_flight >= 0


# ---------------------------------------------------------------- DESIGN §6 poison packets


def test_design_6_poison_packet_fails_after_max_retries_plus_one_deliveries() -> None:
    for deliveries in range(6):
        assert poison_packet_error("p1", deliveries) is None
    err = poison_packet_error("p1", 6)
    assert err is not None
    assert isinstance(err, errors.ProcessingFailed) and err.code == "PF005"
    assert err.retryable is False
    payload = err.to_payload()
    assert payload["packet_id"] == "p1"
    assert payload["error_code"] == "PF005"
    assert payload["retry_possible"] is False
    assert payload["recovery_options"] == []
    assert payload["error_details"]["reason"] == POISON_REASON == "reactor died while running it"
    assert payload["error_details"]["deliveries"] == 6
    assert not should_retry(err, 1, None, 0.0)


def test_design_6_poison_threshold_follows_the_policy() -> None:
    policy = RetryPolicy(max_retries=1)
    assert poison_packet_error("p1", 1, policy) is None
    assert poison_packet_error("p1", 2, policy) is not None


# ---------------------------------------------------------------- DESIGN §6 retry target


def test_design_6_retry_prefers_a_reactor_not_yet_tried() -> None:
    assert choose_retry_target(["a", "b", "c"], ["a"]) == ["b", "c"]
    assert choose_retry_target(["a", "b", "c"], {"b", "c"}) == ["a"]


def test_design_6_retry_falls_back_to_tried_reactors_when_none_is_left() -> None:
    assert choose_retry_target(["a", "b"], ["a", "b", "z"]) == ["a", "b"]
    assert choose_retry_target([], ["a"]) == []
    assert choose_retry_target(iter(["b", "a"]), iter([])) == ["b", "a"]
