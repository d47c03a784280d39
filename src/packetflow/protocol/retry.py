"""Retry rules (PFAP §10.1, §10.3.1, DESIGN §6): whether a failed packet may run again, how
long to wait, where to send it, how many retries may be in flight, and when a packet that
keeps killing its reactor is given up as poison.

Every rule deciding whether and when a packet is retried lives in this module and nowhere
else. Time arrives as ``now``/``deadline`` (float seconds on one monotonic clock) and jitter
comes from a ``random.Random`` (or anything with ``random()``/``uniform()``) passed in;
nothing here reads a clock or a global RNG.

Attempts are counted from 1: ``attempt`` 1 is the first retry (the second delivery). With
the §10.3.1 defaults the base delays are 1, 2, 4, 8, 16 s for retries 1-5, each jittered by
±10 % and never above 30 s.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from .errors import CATALOGUE, PacketFlowError, ProcessingFailed

__all__ = [
    "DEFAULT_RETRY_POLICY",
    "POISON_REASON",
    "RETRY_BUDGET_MINIMUM",
    "RETRY_BUDGET_RATIO",
    "RandomSource",
    "RetryBudget",
    "RetryPolicy",
    "backoff_ms",
    "choose_retry_target",
    "is_retryable",
    "next_retry_delay_ms",
    "poison_packet_error",
    "retry_allowance",
    "should_retry",
]


class RandomSource(Protocol):
    """What jitter needs from an RNG; ``random.Random`` satisfies it."""

    def random(self) -> float: ...

    def uniform(self, a: float, b: float) -> float: ...


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """PFAP §10.3.1 exponential backoff, spec defaults."""

    initial_delay_ms: float = 1000.0
    multiplier: float = 2.0
    max_delay_ms: float = 30_000.0
    max_retries: int = 5
    jitter_percent: float = 0.1  # a fraction: 0.1 means ±10 %

    def __post_init__(self) -> None:
        if self.initial_delay_ms < 0 or self.max_delay_ms < 0:
            raise ValueError("delays must not be negative")
        if self.multiplier < 1:
            raise ValueError("multiplier must be at least 1")
        if self.max_retries < 0:
            raise ValueError("max_retries must not be negative")
        if not 0 <= self.jitter_percent < 1:
            raise ValueError("jitter_percent must be in [0, 1)")


DEFAULT_RETRY_POLICY: Final = RetryPolicy()

# DESIGN §6: retries in flight never exceed 20 % of packets in flight, at least 3 allowed
# (the same shape as gRPC's retry throttling and Finagle's RetryBudget: a ratio plus a
# floor so a quiet system can still retry).
RETRY_BUDGET_RATIO: Final = 0.2
RETRY_BUDGET_MINIMUM: Final = 3

# DESIGN §6: the error_details.reason of a poison packet.
POISON_REASON: Final = "reactor died while running it"


def backoff_ms(attempt: int, rng: RandomSource, policy: RetryPolicy = DEFAULT_RETRY_POLICY) -> int:
    """The delay before retry number ``attempt`` (1-based), PFAP §10.3.1:
    ``min(initial * multiplier**(attempt-1), max)`` jittered uniformly by ±``jitter_percent``
    and then capped at ``max_delay_ms`` (so the cap is never exceeded; at the cap the
    jitter only shortens the wait).

    Raises ValueError for ``attempt`` < 1.
    """
    if attempt < 1:
        raise ValueError(f"attempt counts from 1, got {attempt}")
    try:
        base = policy.initial_delay_ms * math.pow(policy.multiplier, attempt - 1)
    except OverflowError:
        base = math.inf
    base = min(base, policy.max_delay_ms)
    jitter = policy.jitter_percent
    delay = base * (1.0 + rng.uniform(-jitter, jitter)) if jitter else base
    return max(0, min(round(delay), math.floor(policy.max_delay_ms)))


def is_retryable(error: str | PacketFlowError) -> bool:
    """§10.1's Retry column for a code, or the error's own ``retryable`` (which may
    override it, e.g. a poison PF005). Unknown codes are not retryable."""
    if isinstance(error, PacketFlowError):
        return error.retryable
    spec = CATALOGUE.get(error)
    return spec is not None and spec.retryable


def should_retry(
    error: str | PacketFlowError,
    attempt: int,
    deadline: float | None,
    now: float,
    policy: RetryPolicy = DEFAULT_RETRY_POLICY,
    *,
    delay_ms: float = 0.0,
) -> bool:
    """Whether retry number ``attempt`` (1-based) may happen (DESIGN §6):

    - the error is retryable by §10.1 (``error`` is a code like ``"PF005"`` or a
      PacketFlowError, whose ``retryable`` wins);
    - ``attempt`` ≤ ``policy.max_retries``;
    - retries never outlive the packet's deadline: the retry, started ``delay_ms`` from
      ``now``, must start before ``deadline`` (None: no deadline).
    """
    if attempt < 1 or attempt > policy.max_retries:
        return False
    if not is_retryable(error):
        return False
    return deadline is None or now + delay_ms / 1000.0 < deadline


def next_retry_delay_ms(
    error: str | PacketFlowError,
    attempt: int,
    deadline: float | None,
    now: float,
    rng: RandomSource,
    policy: RetryPolicy = DEFAULT_RETRY_POLICY,
) -> int | None:
    """``backoff_ms`` and ``should_retry`` together: the delay before retry ``attempt``,
    or None when the packet must not be retried (not retryable, out of retries, or the
    delay would reach past the deadline)."""
    if attempt < 1 or attempt > policy.max_retries or not is_retryable(error):
        return None
    delay = backoff_ms(attempt, rng, policy)
    if not should_retry(error, attempt, deadline, now, policy, delay_ms=delay):
        return None
    return delay


def retry_allowance(
    packets_in_flight: int,
    ratio: float = RETRY_BUDGET_RATIO,
    minimum: int = RETRY_BUDGET_MINIMUM,
) -> int:
    """How many retries may be in flight alongside ``packets_in_flight`` packets:
    ``max(minimum, floor(ratio * packets_in_flight))`` (DESIGN §6)."""
    # The epsilon stops a product a hair below a whole number (float error) losing a slot.
    return max(minimum, math.floor(ratio * max(0, packets_in_flight) + 1e-9))


class RetryBudget:
    """Counts retries in flight against the DESIGN §6 budget. Pure: no I/O, no clock.

    A retry holds a slot from the moment it is scheduled (its backoff wait included) until
    its attempt finishes or is abandoned; ``packets_in_flight`` (retries included, a
    retried packet is still one packet) is passed in by the caller, which already counts it.
    """

    __slots__ = ("_in_flight", "minimum", "ratio")

    def __init__(
        self, ratio: float = RETRY_BUDGET_RATIO, minimum: int = RETRY_BUDGET_MINIMUM
    ) -> None:
        if not 0 <= ratio <= 1 or minimum < 0:
            raise ValueError("ratio must be in [0, 1] and minimum not negative")
        self.ratio = ratio
        self.minimum = minimum
        self._in_flight = 0

    @property
    def in_flight(self) -> int:
        """Retries currently holding a slot."""
        return self._in_flight

    def allowance(self, packets_in_flight: int) -> int:
        return retry_allowance(packets_in_flight, self.ratio, self.minimum)

    def try_acquire(self, packets_in_flight: int) -> bool:
        """Take a slot for one retry if the budget allows; False means fail the packet now
        (answer its last error) instead of retrying."""
        if self._in_flight >= self.allowance(packets_in_flight):
            return False
        self._in_flight += 1
        return True

    def release(self) -> None:
        """Give back a slot taken by ``try_acquire``. Raises ValueError if none is held."""
        if self._in_flight == 0:
            raise ValueError("RetryBudget.release without a matching try_acquire")
        self._in_flight -= 1


def poison_packet_error(
    packet_id: str, deliveries: int, policy: RetryPolicy = DEFAULT_RETRY_POLICY
) -> ProcessingFailed | None:
    """The DESIGN §6 poison-packet rule: ``deliveries`` counts the times the packet was
    delivered to a reactor that died while running it. After ``max_retries + 1`` such
    deliveries the packet fails for good: the PF005 returned here (``retry_possible``
    false, ``error_details.reason`` "reactor died while running it") is what to answer.
    None while the packet may still be delivered again.
    """
    if deliveries < policy.max_retries + 1:
        return None
    return ProcessingFailed(
        f"Packet processing failed: {POISON_REASON} ({deliveries} deliveries)",
        details={"reason": POISON_REASON, "deliveries": deliveries},
        retryable=False,
        packet_id=packet_id,
    )


def choose_retry_target(candidates: Iterable[str], tried: Iterable[str]) -> list[str]:
    """DESIGN §6: a retry goes to a different reactor where one exists. Returns the
    candidates (in their order) that were not tried yet, or all candidates when every one
    was tried already."""
    ordered: Sequence[str] = list(candidates)
    seen = set(tried)
    fresh = [c for c in ordered if c not in seen]
    return fresh if fresh else list(ordered)
