"""§11.4.2 intrusion signals: per-source counters and the temporary block after repeated
authentication failures (time passed in; a bounded table).

A source (an IP address) with ``max_failures`` authentication failures within
``window_s`` is blocked for ``block_s``. Counters of auth failures, protocol violations and
rate-limit hits are kept per source for ``/metrics``; the table holds at most
``max_sources`` sources and drops the one seen longest ago, so a scan from many addresses
cannot grow memory or the metrics' label set.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Final

AUTH_FAILURE: Final = "auth_failure"
PROTOCOL_VIOLATION: Final = "protocol_violation"
RATE_LIMITED: Final = "rate_limited"
SIGNALS: Final = (AUTH_FAILURE, PROTOCOL_VIOLATION, RATE_LIMITED)

# fail2ban's defaults (maxretry 5 within findtime 10 min, bantime 10 min).
DEFAULT_MAX_FAILURES: Final = 5
DEFAULT_WINDOW_S: Final = 600.0
DEFAULT_BLOCK_S: Final = 600.0
# Sources tracked at once (each ~300 bytes); /metrics shows only the top METRICS_TOP_N.
MAX_SOURCES: Final = 10_000
METRICS_TOP_N: Final = 20


@dataclass(frozen=True, slots=True)
class IntrusionConfig:
    max_failures: int = DEFAULT_MAX_FAILURES
    window_s: float = DEFAULT_WINDOW_S
    block_s: float = DEFAULT_BLOCK_S
    max_sources: int = MAX_SOURCES


@dataclass(slots=True)
class _Source:
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SIGNALS, 0))
    failures: deque[float] = field(default_factory=deque)
    blocked_until: float = 0.0


@dataclass(frozen=True, slots=True)
class Blocked:
    """A source has just been blocked (the caller audits it)."""

    source: str
    until: float
    failures: int


class IntrusionDetector:
    def __init__(self, config: IntrusionConfig | None = None) -> None:
        self.config = config or IntrusionConfig()
        self._sources: OrderedDict[str, _Source] = OrderedDict()
        self.totals: dict[str, int] = dict.fromkeys(SIGNALS, 0)
        self.blocks = 0

    def __len__(self) -> int:
        return len(self._sources)

    def _source(self, source: str) -> _Source:
        entry = self._sources.get(source)
        if entry is None:
            entry = self._sources[source] = _Source()
            if len(self._sources) > self.config.max_sources:
                self._sources.popitem(last=False)
        else:
            self._sources.move_to_end(source)
        return entry

    def record(self, source: str, signal: str, now: float) -> Blocked | None:
        """Count one ``signal`` from ``source``; an auth failure that crosses the threshold
        returns the new block."""
        entry = self._source(source)
        entry.counts[signal] = entry.counts.get(signal, 0) + 1
        self.totals[signal] = self.totals.get(signal, 0) + 1
        if signal != AUTH_FAILURE:
            return None
        window = entry.failures
        window.append(now)
        while window and now - window[0] > self.config.window_s:
            window.popleft()
        while len(window) > self.config.max_failures:
            window.popleft()
        if len(window) >= self.config.max_failures and entry.blocked_until <= now:
            entry.blocked_until = now + self.config.block_s
            window.clear()
            self.blocks += 1
            return Blocked(source, entry.blocked_until, self.config.max_failures)
        return None

    def is_blocked(self, source: str, now: float) -> bool:
        entry = self._sources.get(source)
        return entry is not None and entry.blocked_until > now

    def top(self, n: int = METRICS_TOP_N) -> list[tuple[str, dict[str, int]]]:
        """The ``n`` sources with the most signals, for bounded metric labels."""
        ranked = sorted(self._sources.items(), key=lambda kv: -sum(kv[1].counts.values()))
        return [(source, dict(entry.counts)) for source, entry in ranked[:n]]
