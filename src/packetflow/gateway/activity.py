"""Bounded records of recent activity that the dashboard shows and no routing rule reads:
per-reactor completions (packets/s, p99 latency), errors by code sampled over time, and
the event bus's published topics.

Everything here is a fixed-size ring or a capped table (DESIGN §6: every in-memory table
has a cap and an eviction rule), and the clock is passed in, so tests need no sleeps.
"""

from __future__ import annotations

import math
from array import array
from collections import OrderedDict, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

import numpy as np

# ---------------------------------------------------------------- limits (STYLE 5)

# Completions remembered per reactor. The p99 of 512 samples is the 6th largest, enough to
# be more than one outlier; two float arrays of 512 cost 8 KiB a reactor.
COMPLETIONS_PER_REACTOR: Final = 512
# packets/s is averaged over this window: long enough to be steady at a glance, short
# enough that a reactor that stopped drops to 0 within a poll or two of the dashboard.
RATE_WINDOW_S: Final = 10.0
# p99 is over completions of the last minute, so an idle reactor's stale figure fades.
LATENCY_WINDOW_S: Final = 60.0
# Reactors tracked; past it the first tracked is forgotten (the registry departs
# silent ones, and depart() forgets them here too).
MAX_TRACKED_REACTORS: Final = 10_000
# Error-series points: two minutes at one sample a second.
ERROR_SERIES_POINTS: Final = 120
# Codes kept per point. Appendix A has ~25 PF codes; gateway metrics fold labels past
# their own cap into "other", so this is never reached by real codes.
MAX_ERROR_CODES: Final = 64
# Published topics remembered (least recently published evicted first). Topics are
# routing keys chosen by users, so the table must not grow with them.
MAX_TOPICS: Final = 256


class CompletionRing:
    """The last ``COMPLETIONS_PER_REACTOR`` completions of one reactor: when, how long."""

    __slots__ = ("_at", "_latency_ms", "_next", "_size", "count")

    def __init__(self, size: int = COMPLETIONS_PER_REACTOR) -> None:
        self._at = array("d", bytes(8 * size))
        self._latency_ms = array("d", bytes(8 * size))
        self._size = size
        self._next = 0
        self.count = 0  # filled slots, at most size

    def add(self, at: float, latency_ms: float) -> None:
        # On the gateway's per-reply path: plain branches, no min() or modulo.
        i = self._next
        self._at[i] = at
        self._latency_ms[i] = latency_ms
        i += 1
        self._next = 0 if i == self._size else i
        if self.count < self._size:
            self.count += 1

    def _recent(self, now: float, window_s: float) -> tuple[np.ndarray, np.ndarray]:
        """Times and latencies of the completions in the last ``window_s`` (zero-copy
        views of the filled slots, then one vectorised mask: a snapshot reads every
        reactor's ring, so this must not be a Python loop over 512 samples each)."""
        at = np.frombuffer(self._at, count=self.count)
        recent = at > now - window_s
        return at[recent], np.frombuffer(self._latency_ms, count=self.count)[recent]

    def rate(self, now: float, window_s: float = RATE_WINDOW_S) -> float:
        """Completions per second over the last ``window_s``. When the ring is full and its
        oldest sample is inside the window, the rate is over the span the ring covers (a
        fast reactor fills the ring in less than the window)."""
        times, _ = self._recent(now, window_s)
        if not len(times):
            return 0.0
        span = window_s
        if self.count == self._size and len(times) == self.count:
            span = max(now - float(times.min()), 1e-3)
        return len(times) / span

    def p99_ms(self, now: float, window_s: float = LATENCY_WINDOW_S) -> float | None:
        """The 99th percentile latency of completions in the last ``window_s`` (nearest
        rank), or None when there were none."""
        _, values = self._recent(now, window_s)
        if not len(values):
            return None
        rank = max(0, math.ceil(0.99 * len(values)) - 1)
        return float(np.partition(values, rank)[rank])


@dataclass(frozen=True, slots=True)
class ErrorPoint:
    """Errors answered in one sampling interval, by PF code (codes with none omitted)."""

    at_ms: int
    counts: Mapping[str, int]


class ErrorSeries:
    """Errors by code over time: cumulative totals sampled into per-interval deltas."""

    def __init__(self, points: int = ERROR_SERIES_POINTS) -> None:
        self.points: deque[ErrorPoint] = deque(maxlen=points)
        self._last: dict[str, float] = {}

    def sample(self, at_ms: int, totals: Mapping[str, float]) -> ErrorPoint:
        """Record what changed since the previous sample (the first sample counts every
        error so far, so none answered before it is lost)."""
        counts: dict[str, int] = {}
        for code, total in totals.items():
            delta = int(total - self._last.get(code, 0.0))
            if delta > 0 and (code in counts or len(counts) < MAX_ERROR_CODES):
                counts[code] = delta
        self._last = {code: totals[code] for code in list(totals)[: 4 * MAX_ERROR_CODES]}
        point = ErrorPoint(at_ms, counts)
        self.points.append(point)
        return point


@dataclass(slots=True)
class TopicStats:
    published: int = 0
    last_ms: int = 0


@dataclass(slots=True)
class Activity:
    """All of the above for one gateway."""

    reactors: OrderedDict[str, CompletionRing] = field(default_factory=OrderedDict)
    errors: ErrorSeries = field(default_factory=ErrorSeries)
    topics: OrderedDict[str, TopicStats] = field(default_factory=OrderedDict)

    def finished(self, reactor_id: str, at: float, latency_ms: float) -> None:
        """A reactor answered a packet ``latency_ms`` after it was sent."""
        ring = self.reactors.get(reactor_id)
        if ring is None:
            # Oldest tracked first out: depart() forgets reactors that leave, so this only
            # guards against ids churning faster than departures.
            ring = self.reactors[reactor_id] = CompletionRing()
            if len(self.reactors) > MAX_TRACKED_REACTORS:
                self.reactors.popitem(last=False)
        ring.add(at, latency_ms)

    def forget(self, reactor_id: str) -> None:
        self.reactors.pop(reactor_id, None)

    def published(self, topic: str, at_ms: int) -> None:
        stats = self.topics.get(topic)
        if stats is None:
            stats = self.topics[topic] = TopicStats()
            if len(self.topics) > MAX_TOPICS:
                self.topics.popitem(last=False)
        else:
            self.topics.move_to_end(topic)
        stats.published += 1
        stats.last_ms = at_ms
