"""Per-principal token buckets (protocol/ratelimit.py) for §11.2.1 rate limits."""

from __future__ import annotations

from packetflow.protocol.ratelimit import RateLimiter


def test_limit_exceeded_then_recovered() -> None:
    limiter = RateLimiter(burst_seconds=1.0)
    rate = 5.0  # tokens/s, burst of 5
    assert [limiter.take("u", "packets", rate, 100.0) for _ in range(5)] == [0] * 5
    wait = limiter.take("u", "packets", rate, 100.0)
    assert wait == 200  # one token back in 1/5 s
    assert limiter.take("u", "packets", rate, 100.1) > 0  # half a token: still over
    assert limiter.take("u", "packets", rate, 100.0 + wait / 1000.0) == 0  # recovered


def test_principals_have_separate_buckets() -> None:
    limiter = RateLimiter(burst_seconds=1.0)
    assert limiter.take("a", "packets", 1.0, 0.0) == 0
    assert limiter.take("a", "packets", 1.0, 0.0) > 0
    assert limiter.take("b", "packets", 1.0, 0.0) == 0
    assert limiter.take("a", "molecules", 1.0, 0.0) == 0


def test_table_is_bounded_by_evicting_the_idlest() -> None:
    limiter = RateLimiter(max_buckets=3, burst_seconds=1.0)
    for name in "abcd":
        limiter.take(name, "packets", 1.0, 0.0)
    assert len(limiter) == 3
    limiter.forget("d")
    assert len(limiter) == 2


def test_slow_rate_gives_a_long_but_exact_delay() -> None:
    limiter = RateLimiter(burst_seconds=0.0)  # burst floor: one token
    assert limiter.take("u", "molecules", 100 / 3600, 0.0) == 0
    assert limiter.take("u", "molecules", 100 / 3600, 0.0) == 36_000
