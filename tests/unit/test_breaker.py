"""The per-reactor circuit breaker of PFAP §10.3.2 and its rolling window.

Every test passes ``now`` explicitly; nothing sleeps.
"""

from __future__ import annotations

import dataclasses
import itertools

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from packetflow.protocol import errors
from packetflow.protocol.breaker import (
    BREAKER_TRANSITIONS,
    BreakerConfig,
    BreakerEvent,
    BreakerState,
    CircuitBreaker,
    IllegalBreakerTransition,
    RollingCounts,
    next_breaker_state,
)

CL, OP, HO = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN
E = BreakerEvent

EXPECTED_TABLE = {
    (CL, E.TRIPPED): OP,
    (OP, E.TIMEOUT_ELAPSED): HO,
    (HO, E.TRIAL_FAILED): OP,
    (HO, E.TRIALS_PASSED): CL,
}
ALL_PAIRS = list(itertools.product(BreakerState, BreakerEvent))


def open_breaker(at: float = 0.0) -> CircuitBreaker:
    b = CircuitBreaker("r1")
    for i in range(5):
        assert b.allow(at)
        tr = b.record_failure(at)
        assert (tr is None) == (i < 4)
    assert b.state is OP and b.opened_at == at
    return b


# ---------------------------------------------------------------- the table


@pytest.mark.parametrize(("state", "event"), ALL_PAIRS, ids=[f"{s}-{e}" for s, e in ALL_PAIRS])
def test_10_3_2_table_every_pair_is_legal_or_raises(
    state: BreakerState, event: BreakerEvent
) -> None:
    expected = EXPECTED_TABLE.get((state, event))
    if expected is not None:
        assert next_breaker_state("r1", state, event) is expected
    else:
        with pytest.raises(IllegalBreakerTransition) as info:
            next_breaker_state("reactor-9", state, event)
        message = str(info.value)
        assert "reactor-9" in message and str(state) in message and str(event) in message
        assert info.value.code == "PF500"
        assert isinstance(info.value, errors.InternalError)


def test_10_3_2_table_has_exactly_the_expected_moves() -> None:
    actual = {(s, e): n for s, moves in BREAKER_TRANSITIONS.items() for e, n in moves.items()}
    assert actual == EXPECTED_TABLE


def test_10_3_2_defaults() -> None:
    cfg = BreakerConfig()
    assert cfg.failure_threshold == 5
    assert cfg.timeout_ms == 60_000
    assert cfg.half_open_max_calls == 3
    assert cfg.minimum_throughput == 10
    assert cfg.error_percentage_threshold == 50
    assert cfg.window_s == 60
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.timeout_ms = 1  # type: ignore[misc]


def test_10_3_2_config_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        BreakerConfig(failure_threshold=0)
    with pytest.raises(ValueError):
        BreakerConfig(half_open_max_calls=0)
    with pytest.raises(ValueError):
        BreakerConfig(window_s=0)


# ---------------------------------------------------------------- closed


def test_10_3_2_closed_allows_every_call() -> None:
    b = CircuitBreaker("r1")
    assert b.state is CL
    assert all(b.allow(float(t)) for t in range(100))


def test_10_3_2_opens_on_five_consecutive_failures() -> None:
    b = CircuitBreaker("r1")
    for t in range(4):
        assert b.record_failure(float(t)) is None
    assert b.state is CL and b.consecutive_failures == 4
    tr = b.record_failure(4.0)
    assert tr is not None
    assert (tr.reactor_id, tr.old, tr.new, tr.event, tr.at) == ("r1", CL, OP, E.TRIPPED, 4.0)
    assert "5 consecutive failures" in tr.reason
    assert not b.allow(4.0)


def test_10_3_2_a_success_resets_the_consecutive_count() -> None:
    b = CircuitBreaker("r1")
    for t in range(4):
        b.record_failure(float(t))
    b.record_success(4.0)
    for t in range(5, 9):
        assert b.record_failure(float(t)) is None
    # 8 failures of 9 calls, but fewer than minimum_throughput (10) calls in the window.
    assert b.state is CL


def test_10_3_2_opens_on_error_percentage_with_minimum_throughput() -> None:
    b = CircuitBreaker("r1")
    # S F S F ... : never two failures in a row; the 10th call brings 5/10 = 50 %.
    for i in range(9):
        t = float(i)
        tr = b.record_failure(t) if i % 2 else b.record_success(t)
        assert tr is None
    tr = b.record_failure(9.0)
    assert tr is not None and tr.new is OP
    assert "5/10 calls failed" in tr.reason


def test_10_3_2_error_percentage_below_threshold_stays_closed() -> None:
    b = CircuitBreaker("r1")
    for i in range(100):
        t = i * 0.1
        if i % 3 == 0:
            assert b.record_failure(t) is None  # 34 % failures
        else:
            b.record_success(t)
    assert b.state is CL


def test_10_3_2_error_percentage_uses_a_60s_rolling_window() -> None:
    b = CircuitBreaker("r1")
    for i in range(4):
        b.record_failure(float(i))
        b.record_success(float(i) + 0.5)
    # Those 8 calls are more than 60 s old by now; 2 fresh calls are below throughput.
    assert b.record_success(100.0) is None
    assert b.record_failure(100.5) is None
    assert b.state is CL


def test_10_3_2_error_percentage_is_judged_when_a_failure_is_recorded() -> None:
    """A success never opens the breaker, even when it brings the window to throughput."""
    b = CircuitBreaker("r1", BreakerConfig(failure_threshold=100))
    for i in range(5):
        assert b.record_failure(float(i)) is None  # 5 calls: below minimum_throughput
    for i in range(5, 10):
        assert b.record_success(float(i)) is None  # 5/10 = 50 %, but on a success
    assert b.state is CL
    tr = b.record_failure(10.0)  # 6/11 = 55 %
    assert tr is not None and tr.new is OP


# ---------------------------------------------------------------- open → half_open


def test_10_3_2_open_never_allows_before_timeout() -> None:
    b = open_breaker(at=10.0)
    for t in (10.0, 30.0, 69.999):
        assert not b.allow(t)
        assert b.state is OP
    assert b.retry_after_s(40.0) == pytest.approx(30.0)


def test_10_3_2_half_open_after_timeout_admits_three_trials() -> None:
    b = open_breaker(at=10.0)
    tr = b.poll(70.0)
    assert tr is not None and (tr.old, tr.new, tr.event) == (OP, HO, E.TIMEOUT_ELAPSED)
    assert [b.allow(70.0) for _ in range(5)] == [True, True, True, False, False]
    assert b.retry_after_s(70.0) == 0.0


def test_10_3_2_allow_moves_open_to_half_open_itself() -> None:
    b = open_breaker(at=0.0)
    assert b.allow(60.0)
    assert b.state is HO


def test_10_3_2_trial_successes_close_the_breaker() -> None:
    b = open_breaker(at=0.0)
    for _ in range(3):
        assert b.allow(60.0)
    assert b.record_success(61.0) is None
    assert b.record_success(62.0) is None
    tr = b.record_success(63.0)
    assert tr is not None and (tr.old, tr.new, tr.event) == (HO, CL, E.TRIALS_PASSED)
    assert b.allow(63.0) and b.consecutive_failures == 0


def test_10_3_2_successes_counted_together() -> None:
    """record_success(n): n calls at once; while half-open they count as trial successes,
    never more than the trials admitted."""
    closed = CircuitBreaker("r1")
    assert closed.record_success(0.0, 9) is None
    tr = closed.record_failure(1.0)  # 1/10 failed: below 50 %, and not 5 in a row
    assert tr is None and closed.state is CL
    b = open_breaker(at=0.0)
    assert b.allow(60.0) and b.allow(60.0)
    assert b.record_success(61.0, 5) is None  # only the 2 admitted trials count
    assert b.allow(61.0)
    tr = b.record_success(62.0)
    assert tr is not None and (tr.old, tr.new) == (HO, CL)


def test_10_3_2_closed_after_trials_starts_with_a_clean_window() -> None:
    b = open_breaker(at=0.0)
    for _ in range(3):
        b.allow(60.0)
    for t in (61.0, 62.0, 63.0):
        b.record_success(t)
    for t in range(4):
        assert b.record_failure(64.0 + t) is None
    assert b.state is CL


def test_10_3_2_any_trial_failure_reopens_and_restarts_the_timeout() -> None:
    b = open_breaker(at=0.0)
    assert b.allow(60.0) and b.allow(60.0)
    b.record_success(61.0)
    tr = b.record_failure(62.0)
    assert tr is not None and (tr.old, tr.new, tr.event) == (HO, OP, E.TRIAL_FAILED)
    assert b.opened_at == 62.0
    assert not b.allow(121.9)
    assert b.allow(122.0)


def test_10_3_2_successes_beyond_admitted_trials_do_not_close() -> None:
    b = open_breaker(at=0.0)
    assert b.allow(60.0)
    # A late answer from before the breaker opened, plus the one trial, cannot close it.
    for t in (61.0, 62.0, 63.0):
        assert b.record_success(t) is None
    assert b.state is HO


def test_10_3_2_unanswered_trials_count_as_failed_after_timeout() -> None:
    b = open_breaker(at=0.0)
    for _ in range(3):
        assert b.allow(60.0)
    assert not b.allow(119.0)
    assert b.state is HO
    assert not b.allow(120.0)
    assert b.state is OP and b.opened_at == 120.0


def test_10_3_2_outcomes_while_open_are_ignored() -> None:
    b = open_breaker(at=0.0)
    assert b.record_failure(1.0) is None
    assert b.record_success(2.0) is None
    assert b.state is OP and b.opened_at == 0.0


def test_10_3_2_timeout_is_configurable_for_fast_tests() -> None:
    b = CircuitBreaker("r1", BreakerConfig(timeout_ms=100, failure_threshold=1))
    b.record_failure(0.0)
    assert not b.allow(0.099)
    assert b.allow(0.1)


# ---------------------------------------------------------------- the rolling window


def test_rolling_counts_expire_and_stay_bounded() -> None:
    w = RollingCounts(60.0, 12)
    for i in range(10_000):
        w.add(i * 0.01, failed=i % 4 == 0)
    assert len(w._buckets) <= 12
    total, failed = w.counts(99.99)
    assert 55 * 100 <= total <= 60 * 100 and failed == pytest.approx(total / 4, abs=2)
    assert w.counts(1000.0) == (0, 0)
    assert w.failure_rate(1000.0) == 0.0


def test_rolling_counts_tolerates_a_clock_step_back() -> None:
    w = RollingCounts(10.0, 10)
    w.add(5.0, failed=True)
    w.add(3.0, failed=False)
    assert w.counts(5.0) == (2, 1)


# ---------------------------------------------------------------- stateful (Hypothesis)


class BreakerMachine(RuleBasedStateMachine):
    """Random call sequences never break the §10.3.2 invariants."""

    def __init__(self) -> None:
        super().__init__()
        self.cfg = BreakerConfig()
        self.b = CircuitBreaker("r-b", self.cfg)
        self.now = 0.0
        self.admitted_in_half_open = 0
        self.outstanding = 0

    @rule(dt=st.sampled_from([0.0, 0.1, 1.0, 10.0, 30.0, 59.9, 60.0, 61.0]))
    def time_passes(self, dt: float) -> None:
        self.now += dt

    @rule()
    def wait_out_the_timeout(self) -> None:
        self.now += self.cfg.timeout_s

    @rule(ok=st.booleans())
    def a_burst_of_calls(self, ok: bool) -> None:
        for _ in range(self.cfg.failure_threshold):
            self.ask()
            self.answer(ok)

    @rule()
    def ask(self) -> None:
        before = self.b.state
        opened_at = self.b.opened_at
        allowed = self.b.allow(self.now)
        if before is OP and opened_at is not None and self.now < opened_at + self.cfg.timeout_s:
            assert not allowed  # open never allows before the timeout
            assert self.b.state is OP
        if self.b.state is CL:
            assert allowed
        if allowed:
            self.outstanding += 1

    @rule(ok=st.booleans())
    def answer(self, ok: bool) -> None:
        before = self.b.state
        tr = self.b.record_success(self.now) if ok else self.b.record_failure(self.now)
        if tr is not None:
            assert tr.old is before and tr.new is self.b.state
            assert BREAKER_TRANSITIONS[tr.old][tr.event] is tr.new
        if before is HO and not ok:
            assert self.b.state is OP  # any trial failure reopens
        if before is OP:
            assert tr is None and self.b.state is OP

    @invariant()
    def state_is_one_of_three(self) -> None:
        assert self.b.state in set(BreakerState)

    @invariant()
    def half_open_admits_at_most_max_calls(self) -> None:
        if self.b.state is HO:
            assert self.b._trials_admitted <= self.cfg.half_open_max_calls
            assert self.b._trial_successes <= self.b._trials_admitted
        else:
            assert self.b._trials_admitted == 0

    @invariant()
    def opened_at_only_when_open(self) -> None:
        assert (self.b.opened_at is not None) == (self.b.state is OP)


BreakerMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=60, deadline=None)
test_10_3_2_breaker_state_machine = BreakerMachine.TestCase
