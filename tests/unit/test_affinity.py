"""PFAP §6.3.2 dynamic affinity adjustment (protocol/affinity.py): learned from observed
latency and errors, bounded to ±0.2 (DESIGN §5), decaying back to 0."""

from __future__ import annotations

import pytest

from packetflow.protocol.affinity import MIN_SAMPLES, AffinityLearner


def _train(learner: AffinityLearner, n: int = MIN_SAMPLES) -> None:
    for _ in range(n):
        learner.observe("fast", "cf", 1.0, True)
        learner.observe("slow", "cf", 9.0, True)
        learner.observe("bad", "cf", 5.0, False)


def test_no_adjustment_before_enough_samples() -> None:
    learner = AffinityLearner()
    _train(learner, MIN_SAMPLES - 1)
    assert learner.adjustment("fast", "cf") == 0.0
    assert learner.adjustment("bad", "cf") == 0.0


def test_faster_than_the_group_gains_slower_and_failing_lose() -> None:
    learner = AffinityLearner()
    _train(learner)
    fast, slow, bad = (learner.adjustment(r, "cf") for r in ("fast", "slow", "bad"))
    assert 0 < fast <= 0.1
    assert -0.1 <= slow < 0
    assert bad == -0.2  # failure dominates, clamped to the DESIGN §5 bound
    assert learner.adjustment("fast", "df") == 0.0  # per group


def test_adjustments_stay_within_bounds() -> None:
    learner = AffinityLearner()
    for _ in range(200):
        learner.observe("a", "mc", 0.001, True)
        learner.observe("b", "mc", 10_000.0, False)
    assert learner.adjustment("a", "mc") <= 0.2
    assert learner.adjustment("b", "mc") >= -0.2


def test_decay_halves_per_half_life_and_reaches_zero() -> None:
    learner = AffinityLearner(half_life_s=10.0)
    _train(learner)
    before = learner.adjustment("bad", "cf")
    assert learner.decay(100.0) == {}  # the first call only starts the clock
    changed = learner.decay(110.0)
    assert changed[("bad", "cf")] == pytest.approx(before / 2)
    learner.decay(1_000.0)
    assert learner.adjustment("bad", "cf") == 0.0


def test_forget_removes_a_reactor_from_the_group_mean() -> None:
    learner = AffinityLearner()
    _train(learner)
    learner.forget("slow")
    learner.forget("bad")
    assert learner.adjustment("slow", "cf") == 0.0
    # Alone in its group, "fast" is exactly average: no latency bonus.
    assert learner.observe("fast", "cf", 1.0, True) == pytest.approx(0.0)
    assert set(learner.observed()) == {("fast", "cf")}
