"""§11.4.2 intrusion signals (protocol/intrusion.py): counters and temporary blocks."""

from __future__ import annotations

from packetflow.protocol.intrusion import (
    AUTH_FAILURE,
    PROTOCOL_VIOLATION,
    RATE_LIMITED,
    IntrusionConfig,
    IntrusionDetector,
)


def test_n_failures_in_window_block_the_source_for_a_while() -> None:
    ids = IntrusionDetector(IntrusionConfig(max_failures=3, window_s=10.0, block_s=60.0))
    assert ids.record("10.0.0.1", AUTH_FAILURE, 0.0) is None
    assert ids.record("10.0.0.1", AUTH_FAILURE, 1.0) is None
    blocked = ids.record("10.0.0.1", AUTH_FAILURE, 2.0)
    assert blocked is not None and blocked.until == 62.0
    assert ids.is_blocked("10.0.0.1", 30.0)
    assert not ids.is_blocked("10.0.0.2", 30.0)
    assert not ids.is_blocked("10.0.0.1", 62.5)  # the block ends
    assert ids.blocks == 1


def test_failures_spread_beyond_the_window_do_not_block() -> None:
    ids = IntrusionDetector(IntrusionConfig(max_failures=3, window_s=10.0, block_s=60.0))
    for t in (0.0, 11.0, 22.0, 33.0):
        assert ids.record("s", AUTH_FAILURE, t) is None
    assert not ids.is_blocked("s", 34.0)


def test_other_signals_count_but_never_block() -> None:
    ids = IntrusionDetector(IntrusionConfig(max_failures=1))
    for _ in range(5):
        assert ids.record("s", PROTOCOL_VIOLATION, 0.0) is None
        assert ids.record("s", RATE_LIMITED, 0.0) is None
    assert not ids.is_blocked("s", 0.0)
    assert ids.totals[PROTOCOL_VIOLATION] == 5
    assert ids.top(1) == [("s", {AUTH_FAILURE: 0, PROTOCOL_VIOLATION: 5, RATE_LIMITED: 5})]


def test_table_and_metrics_labels_are_bounded() -> None:
    ids = IntrusionDetector(IntrusionConfig(max_sources=100))
    for n in range(1000):
        ids.record(f"10.0.{n // 256}.{n % 256}", PROTOCOL_VIOLATION, 0.0)
    assert len(ids) == 100
    assert len(ids.top(20)) == 20
    assert ids.totals[PROTOCOL_VIOLATION] == 1000
