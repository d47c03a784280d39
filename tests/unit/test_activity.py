"""gateway/activity.py: the bounded rings behind the dashboard's packets/s, p99, errors
over time and topics. The clock is passed in, so no test sleeps."""

from __future__ import annotations

import pytest

from packetflow.gateway.activity import (
    COMPLETIONS_PER_REACTOR,
    ERROR_SERIES_POINTS,
    MAX_ERROR_CODES,
    MAX_TOPICS,
    MAX_TRACKED_REACTORS,
    RATE_WINDOW_S,
    Activity,
    CompletionRing,
    ErrorSeries,
)


def test_rate_counts_completions_in_the_window() -> None:
    ring = CompletionRing()
    for i in range(20):
        ring.add(100.0 + i * 0.5, 5.0)  # 20 completions over 10 s
    assert ring.rate(109.75) == pytest.approx(20 / RATE_WINDOW_S)
    assert ring.rate(200.0) == 0.0  # an idle reactor drops to 0


def test_rate_of_a_full_ring_uses_the_span_it_covers() -> None:
    """A reactor faster than size/window fills the ring within the window: the rate is not
    capped at size/window."""
    ring = CompletionRing(size=100)
    for i in range(300):
        ring.add(50.0 + i * 0.001, 1.0)  # 1000 per second
    assert ring.count == 100
    assert ring.rate(50.3) == pytest.approx(100 / (50.3 - 50.2), rel=0.05)


def test_p99_is_the_nearest_rank_of_recent_completions() -> None:
    ring = CompletionRing()
    for i in range(1, 101):
        ring.add(10.0, float(i))
    assert ring.p99_ms(11.0) == 99.0
    assert ring.p99_ms(1000.0) is None  # nothing in the last minute
    assert CompletionRing().p99_ms(0.0) is None


def test_ring_keeps_only_the_latest_completions() -> None:
    ring = CompletionRing()
    for i in range(COMPLETIONS_PER_REACTOR * 3):
        ring.add(1.0, 1000.0 if i < COMPLETIONS_PER_REACTOR * 2 else 1.0)
    assert ring.count == COMPLETIONS_PER_REACTOR
    assert ring.p99_ms(2.0) == 1.0  # the old slow ones were overwritten


def test_error_series_records_deltas_by_code_in_a_bounded_ring() -> None:
    series = ErrorSeries()
    assert dict(series.sample(1000, {"PF002": 3.0}).counts) == {"PF002": 3}
    assert dict(series.sample(2000, {"PF002": 3.0, "PF504": 1.0}).counts) == {"PF504": 1}
    assert dict(series.sample(3000, {"PF002": 5.0, "PF504": 1.0}).counts) == {"PF002": 2}
    for t in range(ERROR_SERIES_POINTS * 2):
        series.sample(4000 + t, {"PF002": 5.0 + t})
    assert len(series.points) == ERROR_SERIES_POINTS
    assert all(dict(p.counts) in ({"PF002": 1}, {}) for p in series.points)


def test_error_series_caps_codes_per_point() -> None:
    series = ErrorSeries()
    point = series.sample(0, {f"PF{i:03d}": 1.0 for i in range(MAX_ERROR_CODES * 3)})
    assert len(point.counts) == MAX_ERROR_CODES


def test_topics_are_capped_least_recently_published_first() -> None:
    activity = Activity()
    for i in range(MAX_TOPICS + 10):
        activity.published(f"t.{i}", i)
    activity.published("t.20", 9999)
    assert len(activity.topics) == MAX_TOPICS
    assert "t.0" not in activity.topics
    stats = activity.topics["t.20"]
    assert (stats.published, stats.last_ms) == (2, 9999)
    assert next(reversed(activity.topics)) == "t.20"


def test_reactors_tracked_are_capped_and_forgotten() -> None:
    activity = Activity()
    for i in range(MAX_TRACKED_REACTORS + 5):
        activity.finished(f"r{i}", 1.0, 2.0)
    assert len(activity.reactors) == MAX_TRACKED_REACTORS
    assert "r0" not in activity.reactors
    activity.forget("r9")
    assert "r9" not in activity.reactors
