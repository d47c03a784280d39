"""The idempotency window of DESIGN §4: the same packet id never runs twice.

A packet id seen again while it runs joins the running attempt; after success or a
non-retryable failure the stored outcome is answered again; after a retryable failure the
id is forgotten so it may run anew. The window is bounded in entries and in age.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Final, Generic, TypeVar

T = TypeVar("T")
W = TypeVar("W")

# DESIGN §4: a bounded window, default 10,000 ids / 10 min.
DEFAULT_MAX_ENTRIES: Final = 10_000
DEFAULT_TTL_S: Final = 600.0
# Expired outcomes are swept from the oldest end at most this often (in the caller's
# clock), up to EVICT_SCAN of them: amortised cleanup without a timer, and no per-packet
# cost at full speed. An expired outcome is never answered (lookup checks its age).
EVICT_EVERY_S: Final = 1.0
EVICT_SCAN: Final = 1024


@dataclass(slots=True)
class Entry(Generic[T, W]):
    started_at: float
    outcome: T | None = None
    finished_at: float | None = None
    waiters: list[W] | None = None  # made when a repeat joins: almost never

    @property
    def running(self) -> bool:
        return self.finished_at is None

    def join(self, waiter: W) -> None:
        """A repeat of the running packet: answered with its outcome."""
        if self.waiters is None:
            self.waiters = []
        self.waiters.append(waiter)


class IdempotencyWindow(Generic[T, W]):
    """Outcomes of type T (e.g. the encoded reply), waiters of type W (who asked again)."""

    def __init__(
        self, max_entries: int = DEFAULT_MAX_ENTRIES, ttl_s: float = DEFAULT_TTL_S
    ) -> None:
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        self._entries: OrderedDict[str, Entry[T, W]] = OrderedDict()
        self._swept_at = -math.inf

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, key: str, now: float) -> Entry[T, W] | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.finished_at is not None and now - entry.finished_at > self.ttl_s:
            del self._entries[key]
            return None
        return entry

    def begin(self, key: str, now: float) -> Entry[T, W]:
        entries = self._entries
        entry: Entry[T, W] = Entry(now)
        if key in entries:
            del entries[key]  # to the young end
        entries[key] = entry
        if len(entries) > self.max_entries:
            # Oldest first; running entries are kept unless the table is over its cap.
            entries.popitem(last=False)
        if now - self._swept_at >= EVICT_EVERY_S:
            self._evict(now)
        return entry

    def finish(self, key: str, outcome: T, *, replayable: bool, now: float) -> list[W]:
        """Record the outcome; returns the waiters that joined the running attempt.

        A non-replayable outcome (a retryable error) forgets the id so it can run anew.
        """
        entry = self._entries.get(key)
        if entry is None:
            return []
        waiters, entry.waiters = entry.waiters or [], None
        if replayable:
            entry.outcome = outcome
            entry.finished_at = now
        else:
            del self._entries[key]
        return waiters

    def forget(self, key: str) -> None:
        self._entries.pop(key, None)

    def _evict(self, now: float) -> None:
        # Only the oldest entries are examined, so admission stays O(1) amortised.
        self._swept_at = now
        entries = self._entries
        for _ in range(EVICT_SCAN):
            oldest = next(iter(entries.values()), None)
            if oldest is None or oldest.finished_at is None:
                return
            if now - oldest.finished_at <= self.ttl_s:
                return
            entries.popitem(last=False)
