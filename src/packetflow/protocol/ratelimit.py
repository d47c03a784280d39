"""Per-principal token buckets for the §11.2.1 role rate limits (time passed in).

A bucket holds at most ``burst`` tokens and refills at ``rate`` tokens per second; a packet
takes one. Over the limit the caller answers PF004 with ``retry_delay_ms`` = the time until
one token is back. The table is bounded: a full table drops the bucket idle the longest
(a full bucket carries no state worth keeping, so dropping idle ones is lossless).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Final

# Principals x kinds tracked at once; each bucket is ~100 bytes.
MAX_BUCKETS: Final = 100_000
# A burst of this many seconds' worth of the sustained rate is allowed (at least one token):
# a packet_user's 1000/minute may arrive as 1000 at once, then ~16.7/s.
BURST_SECONDS: Final = 60.0


@dataclass(slots=True)
class TokenBucket:
    rate: float  # tokens per second
    burst: float
    tokens: float
    updated: float

    def take(self, now: float, cost: float = 1.0) -> float:
        """Take ``cost`` tokens: 0.0 when granted, else the seconds until they would be."""
        if now > self.updated:
            self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
            self.updated = now
        if self.tokens >= cost:
            self.tokens -= cost
            return 0.0
        return (cost - self.tokens) / self.rate


class RateLimiter:
    """Buckets keyed by (principal id, kind)."""

    def __init__(self, max_buckets: int = MAX_BUCKETS, burst_seconds: float = BURST_SECONDS):
        self.max_buckets = max_buckets
        self.burst_seconds = burst_seconds
        self._buckets: OrderedDict[tuple[str, str], TokenBucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, principal_id: str, kind: str, rate: float, now: float) -> int:
        """0 when the action may go ahead, else the milliseconds until it may (>= 1)."""
        key = (principal_id, kind)
        bucket = self._buckets.get(key)
        if bucket is None or bucket.rate != rate:
            burst = max(1.0, rate * self.burst_seconds)
            bucket = TokenBucket(rate, burst, burst, now)
            self._buckets[key] = bucket
            if len(self._buckets) > self.max_buckets:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        wait_s = bucket.take(now)
        if wait_s <= 0.0:
            return 0
        return max(1, math.ceil(wait_s * 1000.0))

    def forget(self, principal_id: str) -> None:
        for key in [k for k in self._buckets if k[0] == principal_id]:
            del self._buckets[key]
