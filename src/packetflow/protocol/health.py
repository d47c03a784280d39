"""Reactor health (PFAP §9.2-§9.4, DESIGN §6): the §9.3 state table and a per-reactor
tracker that turns probe, report, traffic, heartbeat and connection events into health
transitions.

Every rule that changes a reactor's health state lives in this module and nowhere else: the
table ``HEALTH_TRANSITIONS`` lists the legal moves, ``next_health_state`` applies one, and
``HealthTracker`` decides when to apply which. Time arrives as ``now`` (float seconds on a
monotonic clock) with every event; nothing here reads a clock or does I/O.

How the tracker decides (defaults from ``HealthConfig``):

- unknown → healthy on the first successful probe (§9.3).
- Failure detection, §9.4.1:
  - probe failures: ``failure_threshold`` failures of one check kind within that kind's
    ``failure_window_s`` (ping: 3 within 90 s; the §9.2 "3 consecutive" pings at a 30 s
    interval always fall inside it). healthy → degraded.
  - error-rate spike: packets that failed / all packets over ``error_rate_window_s``
    ≥ 0.1 with at least ``error_rate_min_samples`` outcomes, or a reactor-reported error
    rate ≥ 0.1. healthy → degraded.
  - resource exhaustion: reported memory ≥ 0.95 or cpu ≥ 0.98 (fractions) → failed.
  - response timeout: 2 consecutive probe responses slower than 30 000 ms → failed.
  - a reactor that reports its own status as degraded (or failed) is taken at its word.
  - connection lost (DESIGN §6): → failed at once.
  - silence: no heartbeat, probe answer or report for ``departure_after_s`` → failed
    (checked on ``TimerFired``); the server then removes it (``departed``).
- Escalation (DESIGN §6): every transition clears the probe-failure windows, so a degraded
  reactor that again collects ``failure_threshold`` failures of one kind within the window
  goes to failed (with defaults: 3 ping failures in 90 s degrade, 3 more fail). From
  unknown the same threshold goes straight to failed.
- Recovery, §9.4.2:
  - degraded → healthy when, since the later of entering degraded and the last failure
    signal, at least ``validation_period_s`` has passed and at least
    ``recovery_probe_successes`` probes succeeded, the error rate is below 0.01 and the
    last reported cpu and memory are below ``recovery_resource_fraction`` ("resource usage
    stable").
  - failed → recovery on a successful probe, or on a passing health report. Not while the
    last report still shows resource exhaustion, and after a lost connection only a probe
    (which travels the work connection) counts, never a report that may have come over
    the control connection.
  - recovery → healthy after ``probation_period_s`` without a failure. Any failure signal
    during recovery (a failed or slow probe, a degraded/failed/exhausted report, an
    error-rate spike, silence, connection loss) → failed. Single packet errors below the
    spike threshold are not failures.
- At most one transition per event; time-driven promotions are checked after every event
  that caused no other transition, so a periodic ``TimerFired`` keeps them timely.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Final, TypeAlias, assert_never

from .breaker import RollingCounts
from .errors import InternalError
from .messages import HeartbeatPayload

__all__ = [
    "DEFAULT_HEALTH_CONFIG",
    "HEALTH_TRANSITIONS",
    "ROUTABLE_STATES",
    "CheckKind",
    "CheckSchedule",
    "ConnectionLost",
    "HealthConfig",
    "HealthEvent",
    "HealthInput",
    "HealthReported",
    "HealthState",
    "HealthTracker",
    "HealthTransition",
    "HeartbeatReceived",
    "IllegalHealthTransition",
    "PacketFinished",
    "ProbeFailed",
    "ProbeSucceeded",
    "TimerFired",
    "heartbeat_expired",
    "next_health_state",
]


class HealthState(StrEnum):
    """The five states of §9.3 (string-valued: ``HealthState.HEALTHY == "healthy"``)."""

    UNKNOWN = "unknown"
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    FAILED = "failed"
    RECOVERY = "recovery"


class HealthEvent(StrEnum):
    """The verdicts that move a reactor between §9.3 states (the table's events)."""

    PROBE_PASSED = "probe_passed"  # a probe or health check succeeded
    DEGRADATION_DETECTED = "degradation_detected"  # §9.4.1 "mark_degraded"
    FAILURE_DETECTED = "failure_detected"  # §9.4.1 "mark_failed", escalation, silence
    CONNECTION_LOST = "connection_lost"  # DESIGN §6
    VALIDATION_PASSED = "validation_passed"  # §9.4.2 degraded_to_healthy
    PROBATION_PASSED = "probation_passed"  # §9.4.2 probation_period_seconds


_U, _H, _D, _F, _R = (
    HealthState.UNKNOWN,
    HealthState.HEALTHY,
    HealthState.DEGRADED,
    HealthState.FAILED,
    HealthState.RECOVERY,
)
_E = HealthEvent

# PFAP §9.3: state → {event: next state}. Anything not listed is illegal. The diagram's
# healthy→recovery and unknown-recovery lines have no trigger in §9.4 and are read as
# recovery → healthy; degraded → healthy is §9.4.2's degraded_to_healthy.
HEALTH_TRANSITIONS: Final[Mapping[HealthState, Mapping[HealthEvent, HealthState]]] = (
    MappingProxyType(
        {
            _U: MappingProxyType(
                {_E.PROBE_PASSED: _H, _E.FAILURE_DETECTED: _F, _E.CONNECTION_LOST: _F}
            ),
            _H: MappingProxyType(
                {_E.DEGRADATION_DETECTED: _D, _E.FAILURE_DETECTED: _F, _E.CONNECTION_LOST: _F}
            ),
            _D: MappingProxyType(
                {_E.VALIDATION_PASSED: _H, _E.FAILURE_DETECTED: _F, _E.CONNECTION_LOST: _F}
            ),
            _F: MappingProxyType({_E.PROBE_PASSED: _R}),
            _R: MappingProxyType(
                {_E.PROBATION_PASSED: _H, _E.FAILURE_DETECTED: _F, _E.CONNECTION_LOST: _F}
            ),
        }
    )
)

# DESIGN §5: the states a packet may be routed to (health_bonus 1.1 or 0.5).
ROUTABLE_STATES: Final = frozenset({_H, _D, _R})


class IllegalHealthTransition(InternalError):
    """A move the §9.3 table does not allow: a bug in the caller (PF500)."""

    def __init__(self, reactor_id: str, state: HealthState, event: HealthEvent) -> None:
        super().__init__(
            f"reactor {reactor_id!r}: health cannot go from {state!s} on {event!s} (PFAP §9.3)"
        )
        self.reactor_id = reactor_id
        self.state = state
        self.event = event


def next_health_state(reactor_id: str, state: HealthState, event: HealthEvent) -> HealthState:
    """Apply ``event`` to ``state`` by the §9.3 table.

    Raises IllegalHealthTransition (PF500) naming the reactor, state and event when the
    table has no such move.
    """
    try:
        return HEALTH_TRANSITIONS[state][event]
    except KeyError:
        raise IllegalHealthTransition(reactor_id, state, event) from None


def heartbeat_expired(last_seen: float, now: float, timeout: float) -> bool:
    """True when nothing was heard from a reactor for longer than ``timeout`` seconds
    (DESIGN §6 departure rule; all arguments in seconds on one monotonic clock)."""
    return now - last_seen > timeout


# ---------------------------------------------------------------- configuration (§9.2)


class CheckKind(StrEnum):
    """The five health checks of the §9.2 table."""

    PING = "ping"  # cf:ping, §9.1.1
    HEALTH = "health"  # cf:health, §9.1.2
    RESOURCES = "resources"  # resource metrics (rm:monitor / heartbeat figures)
    CHEMICAL = "chemical"  # mc:analyze chemical_health, §9.1.3
    MOLECULAR = "molecular"  # molecular validation


@dataclass(frozen=True, slots=True)
class CheckSchedule:
    """One row of §9.2: how often a check runs, how long it may take, and how many
    failures within ``failure_window_s`` count as a detection."""

    interval_s: float
    timeout_s: float
    failure_threshold: int
    # §9.4.1 gives 90 s for pings (3 x 30 s); the other rows use interval x threshold.
    failure_window_s: float


@dataclass(frozen=True, slots=True)
class HealthConfig:
    """Every interval and threshold of §9.2 and §9.4, with the spec's defaults (DESIGN §6:
    all configurable so tests can run in seconds; see ``scaled``)."""

    # §9.2 intervals table.
    ping: CheckSchedule = CheckSchedule(30.0, 5.0, 3, 90.0)
    detailed_health: CheckSchedule = CheckSchedule(60.0, 10.0, 2, 120.0)
    resource_metrics: CheckSchedule = CheckSchedule(15.0, 3.0, 5, 75.0)
    chemical_analysis: CheckSchedule = CheckSchedule(300.0, 30.0, 1, 300.0)
    molecular_validation: CheckSchedule = CheckSchedule(120.0, 15.0, 2, 240.0)
    # §9.4.1 error_rate_spike.
    error_rate_threshold: float = 0.1
    error_rate_window_s: float = 300.0
    # Not in the spec: outcomes needed before the rate counts, so one failed packet out of
    # one is not a "spike" (the same figure as §10.3.2's minimum_throughput).
    error_rate_min_samples: int = 10
    # §9.4.1 resource_exhaustion (fractions 0-1; §9.1.2 reports percent: divide by 100).
    memory_threshold: float = 0.95
    cpu_threshold: float = 0.98
    # §9.4.1 response_timeout.
    response_timeout_ms: float = 30_000.0
    response_timeout_count: int = 2
    # §9.4.2 degraded_to_healthy.
    recovery_probe_successes: int = 5
    recovery_error_rate: float = 0.01
    # Not in the spec: "resource_usage_stable" read as cpu and memory below this fraction.
    recovery_resource_fraction: float = 0.9
    validation_period_s: float = 60.0
    # §9.4.2 failed_to_recovery probation.
    probation_period_s: float = 300.0
    # DESIGN §6 departure: silent reactors leave the registry; default 3 x ping interval.
    departure_after_s: float = 90.0

    def __post_init__(self) -> None:
        for schedule in (
            self.ping,
            self.detailed_health,
            self.resource_metrics,
            self.chemical_analysis,
            self.molecular_validation,
        ):
            if schedule.failure_threshold < 1 or schedule.failure_window_s < 0:
                raise ValueError(f"bad health check schedule {schedule}")
        if self.error_rate_window_s <= 0:
            raise ValueError("error_rate_window_s must be positive")
        if self.response_timeout_count < 1:
            raise ValueError("response_timeout_count must be at least 1")

    def schedule(self, kind: CheckKind) -> CheckSchedule:
        """The §9.2 row for ``kind``."""
        return {
            CheckKind.PING: self.ping,
            CheckKind.HEALTH: self.detailed_health,
            CheckKind.RESOURCES: self.resource_metrics,
            CheckKind.CHEMICAL: self.chemical_analysis,
            CheckKind.MOLECULAR: self.molecular_validation,
        }[kind]

    def scaled(self, factor: float) -> HealthConfig:
        """This config with every duration multiplied by ``factor`` (thresholds and
        fractions unchanged): ``DEFAULT_HEALTH_CONFIG.scaled(0.01)`` runs in seconds."""
        changes: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, CheckSchedule):
                changes[f.name] = replace(
                    value,
                    interval_s=value.interval_s * factor,
                    timeout_s=value.timeout_s * factor,
                    failure_window_s=value.failure_window_s * factor,
                )
            elif f.name.endswith(("_s", "_ms")):
                changes[f.name] = value * factor
        return replace(self, **changes)


DEFAULT_HEALTH_CONFIG: Final = HealthConfig()


# ---------------------------------------------------------------- events in


@dataclass(frozen=True, slots=True)
class ProbeSucceeded:
    """A health probe (cf:ping, cf:health, ...) answered successfully in ``latency_ms``."""

    now: float
    latency_ms: float
    kind: CheckKind = CheckKind.PING


@dataclass(frozen=True, slots=True)
class ProbeFailed:
    """A health probe timed out or answered an error."""

    now: float
    reason: str
    kind: CheckKind = CheckKind.PING


@dataclass(frozen=True, slots=True)
class HealthReported:
    """Figures a reactor reported about itself (a cf:health answer or a HEARTBEAT's
    health_status). Fractions are 0-1; None means "not reported"."""

    now: float
    status: str | None = None
    cpu: float | None = None
    memory: float | None = None
    error_rate: float | None = None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _percent(value: Any) -> float | None:
    number = _number(value)
    return number / 100.0 if number is not None else None


def reported_in_heartbeat(now: float, payload: HeartbeatPayload) -> HealthReported:
    """What a §4.2.4 HEARTBEAT says of the reactor's health (§8.3 load_metrics). CPU is
    left out: a busy worker saturating its core is working, not exhausted; memory
    exhaustion (§9.4.1) is what kills processes."""
    status = payload.health_status
    load = payload.load_metrics
    util = load.resource_utilization if load is not None else None
    perf = payload.performance_metrics
    return HealthReported(
        now,
        status=status.status if status is not None else None,
        memory=_percent(util.memory_percent if util is not None else None),
        error_rate=perf.error_rate if perf is not None else None,
    )


def reported_by_health_check(now: float, data: Any) -> HealthReported | None:
    """What a §9.1.2 cf:health RESULT says (None when its data is not an object)."""
    if not isinstance(data, Mapping):
        return None
    resources = data.get("resource_status") or {}
    indicators = data.get("performance_indicators") or {}
    status = data.get("status")
    return HealthReported(
        now,
        status=status if isinstance(status, str) else None,
        memory=_percent(resources.get("memory_usage_percent")),
        error_rate=_number(indicators.get("error_rate_5min")),
    )


def reported_by_resource_check(now: float, data: Any) -> HealthReported | None:
    """What an rm:monitor RESULT (the §9.2 Resource Metrics row) says: the process's
    memory as a share of its budget. CPU is left out, as in ``reported_in_heartbeat``."""
    if not isinstance(data, Mapping):
        return None
    memory = data.get("memory")
    if not isinstance(memory, Mapping):
        return None
    return HealthReported(now, memory=_percent(memory.get("process_percent")))


@dataclass(frozen=True, slots=True)
class PacketFinished:
    """``count`` packets routed to the reactor finished; ``ok`` False only for failures
    that are the reactor's fault (``errors.counts_against_reactor``), never a client's."""

    now: float
    ok: bool
    count: int = 1


@dataclass(frozen=True, slots=True)
class ConnectionLost:
    """The gateway's work connection to the reactor dropped (DESIGN §2, §6)."""

    now: float


@dataclass(frozen=True, slots=True)
class HeartbeatReceived:
    """A HEARTBEAT (§4.2.4) arrived from the reactor on either connection."""

    now: float


@dataclass(frozen=True, slots=True)
class TimerFired:
    """Time passed: re-check silence, validation and probation periods."""

    now: float


HealthInput: TypeAlias = (
    ProbeSucceeded
    | ProbeFailed
    | HealthReported
    | PacketFinished
    | ConnectionLost
    | HeartbeatReceived
    | TimerFired
)


# ---------------------------------------------------------------- transitions out


@dataclass(frozen=True, slots=True)
class HealthTransition:
    """A health state change, for the server to log, broadcast and act on."""

    reactor_id: str
    old: HealthState
    new: HealthState
    event: HealthEvent
    reason: str
    at: float


# Reported status strings (§9.1.2 "status", §4.2.4 health_status.status). Anything not
# listed says nothing either way.
_STATUS_PASSING: Final = frozenset({"healthy", "ok", "up", "recovery"})
_STATUS_DEGRADED: Final = frozenset({"degraded", "warning"})
_STATUS_FAILING: Final = frozenset({"failed", "unhealthy", "critical", "error", "down"})

_Verdict: TypeAlias = tuple[HealthEvent, str]


@dataclass(slots=True)
class _Reported:
    """The latest figures the reactor reported about itself."""

    status_degraded: bool = False
    cpu: float | None = None
    memory: float | None = None
    error_rate: float | None = None


class HealthTracker:
    """One reactor's health (§9.3/§9.4). Pure: no I/O, no clock.

    Feed it events with ``observe``; it answers the transition when the state changed.
    Every in-memory record is bounded: failure windows hold at most ``failure_threshold``
    timestamps per check kind, the error-rate window a fixed number of buckets.
    """

    __slots__ = (
        "_clear_since",
        "_connected",
        "_errors",
        "_last_seen",
        "_probe_failures",
        "_reported",
        "_since",
        "_slow_responses",
        "_state",
        "_successes",
        "config",
        "reactor_id",
    )

    def __init__(
        self, reactor_id: str, now: float, config: HealthConfig = DEFAULT_HEALTH_CONFIG
    ) -> None:
        self.reactor_id = reactor_id
        self.config = config
        self._state = HealthState.UNKNOWN
        self._since = now
        self._last_seen = now
        self._connected = True
        # Made on a kind's first failure: an empty deque is ~600 bytes, five of them per
        # reactor were 3 MiB of a gateway with 1,000 healthy reactors.
        self._probe_failures: dict[CheckKind, deque[float]] = {}
        self._slow_responses = 0
        self._successes = 0  # probe successes since the last failure signal / transition
        self._clear_since = now  # the later of the last failure signal and the last move
        # 30 buckets: 10 s each over the default 300 s window.
        self._errors = RollingCounts(config.error_rate_window_s, 30)
        self._reported = _Reported()

    # ------------------------------------------------------------ queries

    @property
    def state(self) -> HealthState:
        return self._state

    @property
    def routable(self) -> bool:
        """Whether packets may be routed to the reactor (healthy, degraded, recovery)."""
        return self._state in ROUTABLE_STATES

    @property
    def since(self) -> float:
        """When the reactor entered its current state."""
        return self._since

    @property
    def last_seen(self) -> float:
        """When the reactor was last heard from (heartbeat, probe answer or report)."""
        return self._last_seen

    def departed(self, now: float) -> bool:
        """DESIGN §6: the reactor has been silent for ``departure_after_s`` and should
        leave the registry."""
        return heartbeat_expired(self._last_seen, now, self.config.departure_after_s)

    def error_rate(self, now: float) -> float:
        """Failed / finished packets over the §9.4.1 window (0.0 with no traffic)."""
        return self._errors.failure_rate(now)

    # ------------------------------------------------------------ the entry point

    def observe(self, event: HealthInput) -> HealthTransition | None:
        """Apply one event; return the transition when the state changed.

        Raises IllegalHealthTransition only on a bug in this module (the tracker never
        asks the table for a move it does not hold).
        """
        verdict: _Verdict | None
        match event:
            case ProbeSucceeded():
                verdict = self._probe_succeeded(event)
            case ProbeFailed():
                verdict = self._probe_failed(event)
            case HealthReported():
                verdict = self._health_reported(event)
            case PacketFinished():
                verdict = self._packet_finished(event)
            case ConnectionLost():
                verdict = self._connection_lost(event)
            case HeartbeatReceived():
                self._last_seen = max(self._last_seen, event.now)
                verdict = None
            case TimerFired():
                verdict = self._timer_fired(event)
            case _:
                assert_never(event)
        if verdict is None:
            verdict = self._promotion(event.now)
        if verdict is None:
            return None
        return self._move(verdict, event.now)

    # ------------------------------------------------------------ detection

    def _failure_signal(self, now: float) -> None:
        """Something went wrong: restart the §9.4.2 validation clock."""
        self._successes = 0
        self._clear_since = now

    def _fail(self, reason: str) -> _Verdict | None:
        if self._state is HealthState.FAILED:
            return None
        return HealthEvent.FAILURE_DETECTED, reason

    def _degrade(self, reason: str) -> _Verdict | None:
        """A §9.4.1 mark_degraded: healthy → degraded; during recovery it is a failure."""
        if self._state is HealthState.HEALTHY:
            return HealthEvent.DEGRADATION_DETECTED, reason
        if self._state is HealthState.RECOVERY:
            return self._fail(f"{reason} during recovery")
        return None

    def _probe_succeeded(self, event: ProbeSucceeded) -> _Verdict | None:
        cfg = self.config
        self._last_seen = max(self._last_seen, event.now)
        self._connected = True  # probes travel the work connection
        if event.latency_ms > cfg.response_timeout_ms:
            self._slow_responses += 1
            self._failure_signal(event.now)
            slow = f"{event.kind} response took {event.latency_ms:g} ms"
            if self._slow_responses >= cfg.response_timeout_count:
                return self._fail(
                    f"{self._slow_responses} consecutive responses over "
                    f"{cfg.response_timeout_ms:g} ms"
                )
            if self._state is HealthState.RECOVERY:
                return self._fail(f"{slow} during recovery")
            return None
        self._slow_responses = 0
        self._successes += 1
        if self._state is HealthState.UNKNOWN:
            return HealthEvent.PROBE_PASSED, f"first {event.kind} probe succeeded"
        if self._state is HealthState.FAILED and not self._exhausted():
            return HealthEvent.PROBE_PASSED, f"{event.kind} probe succeeded"
        return None

    def _probe_failed(self, event: ProbeFailed) -> _Verdict | None:
        schedule = self.config.schedule(event.kind)
        window = self._probe_failures.get(event.kind)
        if window is None:
            window = self._probe_failures[event.kind] = deque(maxlen=schedule.failure_threshold)
        window.append(event.now)
        self._failure_signal(event.now)
        if self._state is HealthState.RECOVERY:
            return self._fail(f"{event.kind} probe failed during recovery: {event.reason}")
        if (
            len(window) >= schedule.failure_threshold
            and event.now - window[0] <= schedule.failure_window_s
        ):
            reason = (
                f"{len(window)} {event.kind} probe failures within "
                f"{schedule.failure_window_s:g}s (last: {event.reason})"
            )
            if self._state is HealthState.HEALTHY:
                return self._degrade(reason)
            # unknown: never was healthy; degraded: the threshold reached again escalates.
            return self._fail(reason)
        return None

    def _exhausted(self) -> bool:
        cfg, rep = self.config, self._reported
        return (rep.memory is not None and rep.memory >= cfg.memory_threshold) or (
            rep.cpu is not None and rep.cpu >= cfg.cpu_threshold
        )

    def _health_reported(self, event: HealthReported) -> _Verdict | None:
        cfg, rep = self.config, self._reported
        self._last_seen = max(self._last_seen, event.now)
        if event.cpu is not None:
            rep.cpu = event.cpu
        if event.memory is not None:
            rep.memory = event.memory
        if event.error_rate is not None:
            rep.error_rate = event.error_rate
        status = event.status.lower() if event.status is not None else None
        if status is not None:
            rep.status_degraded = status in _STATUS_DEGRADED or status in _STATUS_FAILING
        if self._exhausted():
            self._failure_signal(event.now)
            return self._fail(
                f"resource exhaustion: memory {rep.memory}, cpu {rep.cpu} "
                f"(limits {cfg.memory_threshold:g}, {cfg.cpu_threshold:g})"
            )
        if status in _STATUS_FAILING:
            self._failure_signal(event.now)
            return self._fail(f"reactor reported status {event.status!r}")
        if status in _STATUS_DEGRADED:
            self._failure_signal(event.now)
            return self._degrade(f"reactor reported status {event.status!r}")
        if event.error_rate is not None and event.error_rate >= cfg.error_rate_threshold:
            self._failure_signal(event.now)
            return self._degrade(
                f"reported error rate {event.error_rate:.3f} >= {cfg.error_rate_threshold:g}"
            )
        # A passing health check (§9.4.2 failed_to_recovery "health_check_passed"). After
        # a lost connection only a probe proves the work connection is back.
        if self._state is HealthState.FAILED and self._connected:
            return HealthEvent.PROBE_PASSED, "health check passed"
        return None

    def _packet_finished(self, event: PacketFinished) -> _Verdict | None:
        cfg = self.config
        self._errors.add(event.now, failed=not event.ok, n=event.count)
        if event.ok:
            return None
        total, failed = self._errors.counts(event.now)
        if total >= cfg.error_rate_min_samples and failed >= cfg.error_rate_threshold * total:
            self._failure_signal(event.now)
            return self._degrade(
                f"error rate {failed}/{total} over {cfg.error_rate_window_s:g}s "
                f">= {cfg.error_rate_threshold:g}"
            )
        return None

    def _connection_lost(self, event: ConnectionLost) -> _Verdict | None:
        self._connected = False
        self._failure_signal(event.now)
        if self._state is HealthState.FAILED:
            return None
        return HealthEvent.CONNECTION_LOST, "connection lost"

    def _timer_fired(self, event: TimerFired) -> _Verdict | None:
        if self.departed(event.now):
            self._failure_signal(event.now)
            return self._fail(f"silent for {event.now - self._last_seen:g}s")
        return None

    # ------------------------------------------------------------ recovery

    def _promotion(self, now: float) -> _Verdict | None:
        cfg = self.config
        if self._state is HealthState.RECOVERY:
            if now - self._since >= cfg.probation_period_s:
                return (
                    HealthEvent.PROBATION_PASSED,
                    f"probation of {cfg.probation_period_s:g}s passed without failure",
                )
            return None
        if self._state is not HealthState.DEGRADED:
            return None
        rep = self._reported
        rate = self._errors.failure_rate(now)
        stable = all(v is None or v < cfg.recovery_resource_fraction for v in (rep.cpu, rep.memory))
        if (
            self._successes >= cfg.recovery_probe_successes
            and now - self._clear_since >= cfg.validation_period_s
            and rate < cfg.recovery_error_rate
            and (rep.error_rate is None or rep.error_rate < cfg.recovery_error_rate)
            and stable
            and not rep.status_degraded
        ):
            return (
                HealthEvent.VALIDATION_PASSED,
                f"{self._successes} probe successes, error rate {rate:.3f}, stable for "
                f"{now - self._clear_since:g}s",
            )
        return None

    # ------------------------------------------------------------ the move

    def _move(self, verdict: _Verdict, now: float) -> HealthTransition:
        event, reason = verdict
        old = self._state
        new = next_health_state(self.reactor_id, old, event)
        self._state = new
        self._since = now
        # Every move starts the counters afresh; this is what makes escalation need the
        # threshold to be reached *again*.
        self._probe_failures.clear()
        self._slow_responses = 0
        self._successes = 0
        self._clear_since = now
        if new is HealthState.RECOVERY:
            # Errors from before the failure (e.g. packets lost with the connection) must
            # not fail the probation at its first packet.
            self._errors.clear()
            self._reported.error_rate = None
        return HealthTransition(self.reactor_id, old, new, event, reason, now)
