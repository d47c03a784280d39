"""Summary statistics for df:aggregate and mc:analyze: exact sums, sample standard
deviation, type-7 percentiles, and PF005 when a result overflows."""

from __future__ import annotations

import math
from typing import Any

from ...protocol.errors import ProcessingFailed


def finite(value: float | int, what: str) -> float | int:
    """PF005 (not retryable) when a computation overflowed to inf/nan."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ProcessingFailed(
            f"{what} overflowed (the result is not a finite number)",
            details={"reason": "overflow"},
            retryable=False,
        )
    return value


def total(values: list[Any]) -> int | float:
    """Exact for ints, math.fsum for floats."""
    if all(isinstance(v, int) for v in values):
        return int(sum(values))
    return finite(math.fsum(values), "sum")


def mean(values: list[float]) -> float:
    return finite(math.fsum(values) / len(values), "mean")


def median(values: list[float]) -> float:
    ordered = sorted(values)
    n = len(ordered)
    mid = n // 2
    if n % 2:
        return float(ordered[mid])
    return (ordered[mid - 1] + ordered[mid]) / 2


def stddev(values: list[float]) -> float:
    """Sample standard deviation (n - 1 denominator); 0.0 for a single value."""
    n = len(values)
    if n < 2:
        return 0.0
    m = math.fsum(values) / n
    return finite(math.sqrt(math.fsum((v - m) ** 2 for v in values) / (n - 1)), "stddev")


def percentile(ordered: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default, Hyndman-Fan type 7);
    ``ordered`` must be sorted and non-empty, ``q`` in [0, 100]."""
    pos = (len(ordered) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return float(ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo))
