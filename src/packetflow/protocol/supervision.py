"""What `packetflow up` does when one of its children exits: restart it after a backoff, or
give up and stop the cluster with a failure.

Every rule of the supervisor lives here; ``cluster.py`` only spawns processes, reads the
clock and carries out the decision. Time arrives as ``now`` (seconds on one monotonic
clock).

How it decides (defaults from ``RestartPolicy``, after Erlang/OTP's restart intensity and
systemd's ``Restart=`` with ``StartLimitBurst``):

- a child that exits is restarted after ``initial_delay_s``, doubling on each exit up to
  ``max_delay_s``;
- a child that stayed up ``stable_after_s`` before exiting was healthy: its backoff starts
  again from ``initial_delay_s``;
- a child that exits ``max_exits`` times within ``window_s`` keeps dying: the supervisor
  gives up on it (and the cluster stops with a failure).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import TypeAlias

__all__ = ["ChildSupervisor", "GiveUp", "Restart", "RestartPolicy", "SupervisorDecision"]


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """How a child is restarted; every figure configurable so tests run in seconds."""

    initial_delay_s: float = 0.5
    max_delay_s: float = 30.0
    multiplier: float = 2.0
    # Up this long before exiting: it was running fine, the backoff resets.
    stable_after_s: float = 60.0
    # This many exits within window_s: it keeps dying, give up (systemd's default burst
    # is 5 in 10 s; a minute also catches a child that dies a few seconds after start).
    max_exits: int = 5
    window_s: float = 60.0

    def __post_init__(self) -> None:
        if self.initial_delay_s < 0 or self.max_delay_s < self.initial_delay_s:
            raise ValueError("need 0 <= initial_delay_s <= max_delay_s")
        if self.multiplier < 1:
            raise ValueError("multiplier must be at least 1")
        if self.max_exits < 1 or self.window_s <= 0:
            raise ValueError("max_exits must be at least 1 and window_s positive")


DEFAULT_RESTART_POLICY = RestartPolicy()


@dataclass(frozen=True, slots=True)
class Restart:
    """Start the child again at ``at`` (``delay_s`` after it exited); ``attempt`` counts
    restarts since it last ran stably."""

    at: float
    delay_s: float
    attempt: int


@dataclass(frozen=True, slots=True)
class GiveUp:
    """The child keeps dying: stop the cluster with a failure."""

    reason: str


SupervisorDecision: TypeAlias = Restart | GiveUp


class ChildSupervisor:
    """One child's restart bookkeeping. Pure: no I/O, no clock.

    Bounded: it keeps at most ``max_exits`` exit times.
    """

    __slots__ = ("_attempt", "_exits", "_started", "name", "policy")

    def __init__(
        self, name: str, now: float, policy: RestartPolicy = DEFAULT_RESTART_POLICY
    ) -> None:
        self.name = name
        self.policy = policy
        self._started = now
        self._attempt = 0
        self._exits: deque[float] = deque(maxlen=policy.max_exits)

    @property
    def attempt(self) -> int:
        """Restarts since the child last ran stably."""
        return self._attempt

    def started(self, now: float) -> None:
        """The child was (re)started at ``now``."""
        self._started = now

    def exited(self, now: float) -> SupervisorDecision:
        """The child exited at ``now``: when to restart it, or give up."""
        policy = self.policy
        if now - self._started >= policy.stable_after_s:
            self._attempt = 0
        self._exits.append(now)
        recent = sum(1 for t in self._exits if now - t < policy.window_s)
        if recent >= policy.max_exits:
            return GiveUp(
                f"{self.name} exited {recent} times within {policy.window_s:g} s; giving up"
            )
        delay = min(policy.max_delay_s, policy.initial_delay_s * policy.multiplier**self._attempt)
        self._attempt += 1
        return Restart(now + delay, delay, self._attempt)
