"""A bounded priority queue ordered by priority (high first), then age (DESIGN §5, §10).

Used by the gateway for packets waiting for a free reactor slot and by the reactor for
packets waiting for a free handler slot. Removal is lazy so a timed-out entry costs O(1).
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Container, Iterator, Mapping
from typing import Generic, TypeVar

T = TypeVar("T")
K = TypeVar("K")


class QueueEntry(Generic[T]):
    __slots__ = ("alive", "item", "priority", "seq")

    def __init__(self, priority: int, seq: int, item: T) -> None:
        self.priority = priority
        self.seq = seq
        self.item = item
        self.alive = True

    def __lt__(self, other: QueueEntry[T]) -> bool:
        if self.priority != other.priority:
            return self.priority > other.priority
        return self.seq < other.seq


class PriorityQueue(Generic[T]):
    """Highest priority first, oldest first within a priority; at most ``capacity`` live
    entries. ``push`` returns None when full (the caller answers PF004)."""

    def __init__(self, capacity: int, order: Iterator[int] | None = None) -> None:
        """``order`` numbers arrivals; queues sharing one can be compared by age."""
        self.capacity = capacity
        self._heap: list[QueueEntry[T]] = []
        self._live = 0
        self._seq = order if order is not None else itertools.count()

    def __len__(self) -> int:
        return self._live

    def push(self, item: T, priority: int, seq: int | None = None) -> QueueEntry[T] | None:
        """Queue ``item``; ``seq`` is the arrival number of an item going back to wait
        (taken out for a slot it could not use), so it keeps its place among equals."""
        if self._live >= self.capacity:
            return None
        entry = QueueEntry(priority, next(self._seq) if seq is None else seq, item)
        heapq.heappush(self._heap, entry)
        self._live += 1
        return entry

    def pop(self) -> T | None:
        while self._heap:
            entry = heapq.heappop(self._heap)
            if entry.alive:
                entry.alive = False
                self._live -= 1
                return entry.item
        return None

    def head(self) -> QueueEntry[T] | None:
        while self._heap and not self._heap[0].alive:
            heapq.heappop(self._heap)
        return self._heap[0] if self._heap else None

    def peek(self) -> T | None:
        entry = self.head()
        return entry.item if entry is not None else None

    def remove(self, entry: QueueEntry[T]) -> bool:
        """Drop ``entry`` if still queued; True when it was."""
        if not entry.alive:
            return False
        entry.alive = False
        self._live -= 1
        if self._live == 0:
            self._heap.clear()
        return True

    def __iter__(self) -> Iterator[T]:
        return (e.item for e in sorted(self._heap) if e.alive)


def first_among(queues: Mapping[K, PriorityQueue[T]], allowed: Container[K]) -> K | None:
    """The key of the queue, among those ``allowed``, whose head goes first: highest
    priority, then oldest. Ages compare across queues that share one ``order``."""
    best: tuple[QueueEntry[T], K] | None = None
    for key, queue in queues.items():
        if key not in allowed:
            continue
        head = queue.head()
        if head is not None and (best is None or head < best[0]):
            best = (head, key)
    return best[1] if best is not None else None
