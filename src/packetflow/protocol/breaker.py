"""The per-reactor circuit breaker of PFAP §10.3.2 (DESIGN §6): decides whether a call to a
reactor may go ahead, from the outcomes of the calls before it.

Every rule that changes a breaker's state (closed, open, half_open) lives in this module and
nowhere else: the table ``BREAKER_TRANSITIONS`` lists the legal moves, ``next_breaker_state``
applies one, and ``CircuitBreaker`` decides when to apply which. Time arrives as ``now``
(float seconds on a monotonic clock) with every call; nothing here reads a clock.

How this works:

- closed: every call is allowed. The breaker trips (→ open) on ``failure_threshold``
  consecutive failures, or when the rolling window holds at least ``minimum_throughput``
  outcomes of which at least ``error_percentage_threshold`` % failed.
- open: no call is allowed until ``timeout_ms`` has passed since it opened; the first
  ``allow``/``poll`` after that moves it to half_open.
- half_open: at most ``half_open_max_calls`` trial calls are admitted. When that many trials
  have succeeded it closes; any failure reopens it (and restarts the timeout). Trials that
  never report back within ``timeout_ms`` of entering half_open count as failed, so a lost
  answer cannot wedge the breaker half-open.
- Outcomes reported while open (answers to calls admitted before it opened) are ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Final

from .errors import InternalError

__all__ = [
    "BREAKER_TRANSITIONS",
    "DEFAULT_BREAKER_CONFIG",
    "BreakerConfig",
    "BreakerEvent",
    "BreakerState",
    "BreakerTransition",
    "CircuitBreaker",
    "IllegalBreakerTransition",
    "RollingCounts",
    "next_breaker_state",
]


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class BreakerEvent(StrEnum):
    """What happened to the breaker (the table's events)."""

    TRIPPED = "tripped"  # failure threshold or error percentage reached while closed
    TIMEOUT_ELAPSED = "timeout_elapsed"  # timeout_ms passed since opening
    TRIAL_FAILED = "trial_failed"  # a half-open trial failed or never answered
    TRIALS_PASSED = "trials_passed"  # half_open_max_calls trials succeeded


_C, _O, _H = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN

# PFAP §10.3.2: state → {event: next state}. Anything not listed is illegal.
BREAKER_TRANSITIONS: Final[Mapping[BreakerState, Mapping[BreakerEvent, BreakerState]]] = (
    MappingProxyType(
        {
            _C: MappingProxyType({BreakerEvent.TRIPPED: _O}),
            _O: MappingProxyType({BreakerEvent.TIMEOUT_ELAPSED: _H}),
            _H: MappingProxyType({BreakerEvent.TRIAL_FAILED: _O, BreakerEvent.TRIALS_PASSED: _C}),
        }
    )
)


class IllegalBreakerTransition(InternalError):
    """A move the §10.3.2 table does not allow: a bug in the caller (PF500)."""

    def __init__(self, reactor_id: str, state: BreakerState, event: BreakerEvent) -> None:
        super().__init__(
            f"reactor {reactor_id!r}: circuit breaker cannot go from {state!s} "
            f"on {event!s} (PFAP §10.3.2)"
        )
        self.reactor_id = reactor_id
        self.state = state
        self.event = event


def next_breaker_state(reactor_id: str, state: BreakerState, event: BreakerEvent) -> BreakerState:
    """Apply ``event`` to ``state`` by the §10.3.2 table.

    Raises IllegalBreakerTransition (PF500) naming the reactor, state and event when the
    table has no such move.
    """
    try:
        return BREAKER_TRANSITIONS[state][event]
    except KeyError:
        raise IllegalBreakerTransition(reactor_id, state, event) from None


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    """PFAP §10.3.2 defaults, plus the rolling window the spec leaves open."""

    failure_threshold: int = 5  # §10.3.2: consecutive failures that trip the breaker
    timeout_ms: float = 60_000  # §10.3.2: open → half_open after this long
    half_open_max_calls: int = 3  # §10.3.2: trial calls admitted while half-open
    minimum_throughput: int = 10  # §10.3.2: outcomes in the window before % applies
    error_percentage_threshold: float = 50  # §10.3.2: % failed in the window that trips
    # Not in the spec: the window over which minimum_throughput and the error percentage
    # are counted. 60 s, the same as timeout_ms, as in Hystrix/resilience4j-style breakers
    # (Hystrix's default is 10 s; 60 s suits §9.2's 30 s probe cadence better).
    window_s: float = 60.0
    window_buckets: int = 12  # the window is kept as this many fixed buckets (5 s each)

    def __post_init__(self) -> None:
        if self.failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        if self.half_open_max_calls < 1:
            raise ValueError("half_open_max_calls must be at least 1")
        if self.timeout_ms < 0:
            raise ValueError("timeout_ms must not be negative")
        if self.window_s <= 0 or self.window_buckets < 1:
            raise ValueError("window_s must be positive and window_buckets at least 1")

    @property
    def timeout_s(self) -> float:
        return self.timeout_ms / 1000.0


DEFAULT_BREAKER_CONFIG: Final = BreakerConfig()


class RollingCounts:
    """Outcomes (total and failed) over roughly the last ``window_s`` seconds.

    Kept as at most ``buckets`` fixed-width time buckets, so memory is bounded however many
    outcomes arrive (STYLE 5). The window therefore covers between ``window_s - width``
    and ``window_s`` seconds, where width = window_s / buckets.
    """

    __slots__ = ("_buckets", "_n", "_width")

    def __init__(self, window_s: float, buckets: int = 10) -> None:
        if window_s <= 0 or buckets < 1:
            raise ValueError("window_s must be positive and buckets at least 1")
        self._width = window_s / buckets
        self._n = buckets
        # [bucket index, total, failed], oldest first; at most _n entries. A list, not a
        # deque: an empty deque is ~600 bytes and every reactor has a few of these.
        self._buckets: list[list[int]] = []

    def _prune(self, index: int) -> None:
        stale = 0
        for bucket in self._buckets:
            if bucket[0] > index - self._n:
                break
            stale += 1
        if stale:
            del self._buckets[:stale]

    def add(self, now: float, failed: bool, n: int = 1) -> None:
        """Count ``n`` outcomes (all failed, or all not) at ``now``."""
        index = int(now // self._width)
        self._prune(index)
        if self._buckets and self._buckets[-1][0] >= index:
            # Same bucket, or a clock that stepped back: count it in the newest bucket.
            bucket = self._buckets[-1]
        else:
            bucket = [index, 0, 0]
            self._buckets.append(bucket)
        bucket[1] += n
        if failed:
            bucket[2] += n

    def counts(self, now: float) -> tuple[int, int]:
        """(total, failed) within the window ending at ``now``."""
        self._prune(int(now // self._width))
        return sum(b[1] for b in self._buckets), sum(b[2] for b in self._buckets)

    def failure_rate(self, now: float) -> float:
        """Failed / total in the window; 0.0 when the window is empty."""
        total, failed = self.counts(now)
        return failed / total if total else 0.0

    def clear(self) -> None:
        self._buckets.clear()


@dataclass(frozen=True, slots=True)
class BreakerTransition:
    """A breaker state change, for the server to log or export."""

    reactor_id: str
    old: BreakerState
    new: BreakerState
    event: BreakerEvent
    reason: str
    at: float


class CircuitBreaker:
    """One reactor's §10.3.2 circuit breaker. Pure: no I/O, no clock.

    Each call the gateway makes to the reactor asks ``allow(now)`` first and then reports
    exactly one ``record_success(now)`` or ``record_failure(now)``. Only failures that are
    the reactor's fault should be recorded as failures (e.g. PF005, PF5xx, timeouts), not a
    client's PF001/PF002.
    """

    __slots__ = (
        "_consecutive_failures",
        "_half_open_at",
        "_opened_at",
        "_state",
        "_trial_successes",
        "_trials_admitted",
        "_window",
        "config",
        "reactor_id",
    )

    def __init__(self, reactor_id: str, config: BreakerConfig = DEFAULT_BREAKER_CONFIG) -> None:
        self.reactor_id = reactor_id
        self.config = config
        self._state = BreakerState.CLOSED
        self._consecutive_failures = 0
        self._window = RollingCounts(config.window_s, config.window_buckets)
        self._opened_at = 0.0
        self._half_open_at = 0.0
        self._trials_admitted = 0
        self._trial_successes = 0

    @property
    def state(self) -> BreakerState:
        """The current state, as of the last call (``poll`` applies elapsed timeouts)."""
        return self._state

    @property
    def opened_at(self) -> float | None:
        """When the breaker last opened, while it is open; else None."""
        return self._opened_at if self._state is BreakerState.OPEN else None

    @property
    def consecutive_failures(self) -> int:
        return self._consecutive_failures

    def retry_after_s(self, now: float) -> float:
        """Seconds until an open breaker admits a trial (0 when not open)."""
        if self._state is not BreakerState.OPEN:
            return 0.0
        return max(0.0, self._opened_at + self.config.timeout_s - now)

    def poll(self, now: float) -> BreakerTransition | None:
        """Apply the time-driven moves: open → half_open once ``timeout_ms`` has passed, and
        half_open → open when admitted trials went unanswered for ``timeout_ms``."""
        timeout = self.config.timeout_s
        if self._state is BreakerState.OPEN and now >= self._opened_at + timeout:
            return self._move(BreakerEvent.TIMEOUT_ELAPSED, now, "open timeout elapsed")
        if (
            self._state is BreakerState.HALF_OPEN
            and self._trials_admitted >= self.config.half_open_max_calls
            and now >= self._half_open_at + timeout
        ):
            return self._move(BreakerEvent.TRIAL_FAILED, now, "trial calls went unanswered")
        return None

    def allow(self, now: float) -> bool:
        """Whether a call may go to the reactor now. While half-open, a True answer
        reserves one of the ``half_open_max_calls`` trial slots."""
        self.poll(now)
        if self._state is BreakerState.CLOSED:
            return True
        if (
            self._state is BreakerState.HALF_OPEN
            and self._trials_admitted < self.config.half_open_max_calls
        ):
            self._trials_admitted += 1
            return True
        return False

    def record_success(self, now: float, n: int = 1) -> BreakerTransition | None:
        """``n`` calls to the reactor succeeded. Returns the transition if one happened."""
        if self._state is BreakerState.CLOSED:
            self._consecutive_failures = 0
            self._window.add(now, failed=False, n=n)
        elif self._state is BreakerState.HALF_OPEN:
            self._trial_successes = min(self._trials_admitted, self._trial_successes + n)
            if self._trial_successes >= self.config.half_open_max_calls:
                return self._move(
                    BreakerEvent.TRIALS_PASSED,
                    now,
                    f"{self._trial_successes} trial calls succeeded",
                )
        return None

    def record_failure(self, now: float) -> BreakerTransition | None:
        """A call to the reactor failed. Returns the transition if one happened."""
        cfg = self.config
        if self._state is BreakerState.CLOSED:
            self._consecutive_failures += 1
            self._window.add(now, failed=True)
            if self._consecutive_failures >= cfg.failure_threshold:
                return self._move(
                    BreakerEvent.TRIPPED,
                    now,
                    f"{self._consecutive_failures} consecutive failures",
                )
            total, failed = self._window.counts(now)
            if (
                total >= cfg.minimum_throughput
                and failed * 100.0 >= cfg.error_percentage_threshold * total
            ):
                return self._move(
                    BreakerEvent.TRIPPED,
                    now,
                    f"{failed}/{total} calls failed in the last {cfg.window_s:g}s "
                    f"(>= {cfg.error_percentage_threshold:g}%)",
                )
        elif self._state is BreakerState.HALF_OPEN:
            return self._move(BreakerEvent.TRIAL_FAILED, now, "a trial call failed")
        return None

    def _move(self, event: BreakerEvent, now: float, reason: str) -> BreakerTransition:
        old = self._state
        new = next_breaker_state(self.reactor_id, old, event)
        self._state = new
        self._trials_admitted = 0
        self._trial_successes = 0
        if new is BreakerState.OPEN:
            self._opened_at = now
        elif new is BreakerState.HALF_OPEN:
            self._half_open_at = now
        # Every move starts counting afresh.
        self._consecutive_failures = 0
        self._window.clear()
        return BreakerTransition(self.reactor_id, old, new, event, reason, now)
