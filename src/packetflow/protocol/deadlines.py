"""A coarse timer wheel for per-packet deadlines: O(1) to arm and disarm, one sweep for
all that expired.

The gateway arms one deadline per packet in flight and disarms it when the reply comes;
an event-loop timer per packet costs more than the rest of the relay path, and a
deadline answered up to one ``resolution_s`` late is well inside the slack it already
gives the reactor to answer first.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Hashable
from typing import Final, Generic, TypeVar

T = TypeVar("T", bound=Hashable)

DEFAULT_RESOLUTION_S: Final = 0.05


class DeadlineWheel(Generic[T]):
    def __init__(self, resolution_s: float = DEFAULT_RESOLUTION_S) -> None:
        if resolution_s <= 0:
            raise ValueError("resolution_s must be positive")
        self.resolution_s = resolution_s
        self._buckets: dict[int, set[T]] = {}
        self._slot_of: dict[T, int] = {}
        self._keys: list[int] = []  # heap of bucket keys that may hold items

    def __len__(self) -> int:
        return len(self._slot_of)

    def __contains__(self, item: object) -> bool:
        return item in self._slot_of

    def add(self, item: T, deadline: float) -> None:
        """Arm (or re-arm) ``item`` to expire at ``deadline`` (rounded up to the wheel)."""
        self.discard(item)
        key = math.ceil(deadline / self.resolution_s)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = set()
            heapq.heappush(self._keys, key)
        bucket.add(item)
        self._slot_of[item] = key

    def discard(self, item: T) -> None:
        key = self._slot_of.pop(item, None)
        if key is not None:
            bucket = self._buckets[key]
            bucket.discard(item)
            if not bucket:
                del self._buckets[key]  # its key stays in the heap until swept

    def expired(self, now: float) -> list[T]:
        """Remove and return every item whose deadline is at or before ``now``."""
        limit = math.floor(now / self.resolution_s)
        out: list[T] = []
        keys = self._keys
        while keys and keys[0] <= limit:
            bucket = self._buckets.pop(heapq.heappop(keys), None)
            if bucket:
                for item in bucket:
                    del self._slot_of[item]
                out.extend(bucket)
        return out

    def next_deadline(self) -> float | None:
        """When the earliest armed item expires (None when empty)."""
        while self._keys and self._keys[0] not in self._buckets:
            heapq.heappop(self._keys)
        return self._keys[0] * self.resolution_s if self._keys else None
