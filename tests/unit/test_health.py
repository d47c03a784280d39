"""Reactor health: the PFAP §9.3 table, §9.2 intervals, §9.4.1 detection, §9.4.2 recovery
and the DESIGN §6 connection-loss, escalation and departure rules.

Every test passes ``now`` explicitly; nothing sleeps. Expected tables are typed out from
the spec text, independently of the code.
"""

from __future__ import annotations

import dataclasses
import itertools
import json

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from packetflow.protocol import errors
from packetflow.protocol.health import (
    DEFAULT_HEALTH_CONFIG,
    HEALTH_TRANSITIONS,
    CheckKind,
    CheckSchedule,
    ConnectionLost,
    HealthConfig,
    HealthEvent,
    HealthInput,
    HealthReported,
    HealthState,
    HealthTracker,
    HealthTransition,
    HeartbeatReceived,
    IllegalHealthTransition,
    PacketFinished,
    ProbeFailed,
    ProbeSucceeded,
    TimerFired,
    heartbeat_expired,
    next_health_state,
    reported_by_health_check,
    reported_in_heartbeat,
)
from packetflow.protocol.messages import (
    HealthStatus,
    Heartbeat,
    HeartbeatPayload,
    LoadMetrics,
    PerformanceMetrics,
    ResourceUtilization,
    decode_one,
)

U, H, D, F, R = (
    HealthState.UNKNOWN,
    HealthState.HEALTHY,
    HealthState.DEGRADED,
    HealthState.FAILED,
    HealthState.RECOVERY,
)
E = HealthEvent

# §9.3 as this project reads it (see the module docstring), typed out independently.
EXPECTED_TABLE = {
    (U, E.PROBE_PASSED): H,
    (U, E.FAILURE_DETECTED): F,
    (U, E.CONNECTION_LOST): F,
    (H, E.DEGRADATION_DETECTED): D,
    (H, E.FAILURE_DETECTED): F,
    (H, E.CONNECTION_LOST): F,
    (D, E.VALIDATION_PASSED): H,
    (D, E.FAILURE_DETECTED): F,
    (D, E.CONNECTION_LOST): F,
    (F, E.PROBE_PASSED): R,
    (R, E.PROBATION_PASSED): H,
    (R, E.FAILURE_DETECTED): F,
    (R, E.CONNECTION_LOST): F,
}

ALL_PAIRS = list(itertools.product(HealthState, HealthEvent))


# ---------------------------------------------------------------- helpers


def healthy_tracker(
    now: float = 0.0, config: HealthConfig = DEFAULT_HEALTH_CONFIG
) -> HealthTracker:
    t = HealthTracker("r1", now, config)
    tr = t.observe(ProbeSucceeded(now, 10.0))
    assert tr is not None and tr.new is H
    return t


def degraded_tracker(at: float = 60.0) -> HealthTracker:
    """Healthy at 0, degraded at ``at`` by 3 ping failures."""
    t = healthy_tracker()
    for now in (at - 20, at - 10):
        assert t.observe(ProbeFailed(now, "timeout")) is None
    tr = t.observe(ProbeFailed(at, "timeout"))
    assert tr is not None and tr.new is D
    return t


def failed_tracker(at: float = 10.0) -> HealthTracker:
    t = healthy_tracker()
    tr = t.observe(ConnectionLost(at))
    assert tr is not None and tr.new is F
    return t


def recovery_tracker(at: float = 20.0) -> HealthTracker:
    t = failed_tracker(at - 10)
    tr = t.observe(ProbeSucceeded(at, 10.0))
    assert tr is not None and tr.new is R
    return t


# ---------------------------------------------------------------- the §9.3 table


@pytest.mark.parametrize(("state", "event"), ALL_PAIRS, ids=[f"{s}-{e}" for s, e in ALL_PAIRS])
def test_9_3_table_every_pair_is_legal_or_raises(state: HealthState, event: HealthEvent) -> None:
    expected = EXPECTED_TABLE.get((state, event))
    if expected is not None:
        assert next_health_state("r1", state, event) is expected
    else:
        with pytest.raises(IllegalHealthTransition) as info:
            next_health_state("reactor-7", state, event)
        message = str(info.value)
        assert "reactor-7" in message and str(state) in message and str(event) in message
        assert info.value.state is state and info.value.event is event
        assert info.value.reactor_id == "reactor-7"


def test_9_3_table_has_exactly_the_expected_moves() -> None:
    actual = {(s, e): n for s, moves in HEALTH_TRANSITIONS.items() for e, n in moves.items()}
    assert actual == EXPECTED_TABLE
    assert set(HEALTH_TRANSITIONS) == set(HealthState)


def test_9_3_illegal_move_is_a_pf500_packetflow_error() -> None:
    with pytest.raises(errors.InternalError) as info:
        next_health_state("r1", F, E.FAILURE_DETECTED)
    assert info.value.code == "PF500"


def test_9_3_table_is_read_only() -> None:
    with pytest.raises(TypeError):
        HEALTH_TRANSITIONS[H][E.PROBE_PASSED] = R  # type: ignore[index]


def test_9_3_states_are_strings_for_the_routing_score() -> None:
    assert H == "healthy" and R == "recovery"
    assert {s.value for s in HealthState} == {
        "unknown",
        "healthy",
        "degraded",
        "failed",
        "recovery",
    }


# ---------------------------------------------------------------- §9.2 configuration


def test_9_2_interval_table_defaults() -> None:
    cfg = HealthConfig()
    rows = {
        CheckKind.PING: (30, 5, 3),
        CheckKind.HEALTH: (60, 10, 2),
        CheckKind.RESOURCES: (15, 3, 5),
        CheckKind.CHEMICAL: (300, 30, 1),
        CheckKind.MOLECULAR: (120, 15, 2),
    }
    for kind, (interval, timeout, threshold) in rows.items():
        s = cfg.schedule(kind)
        assert (s.interval_s, s.timeout_s, s.failure_threshold) == (interval, timeout, threshold)
    assert cfg.ping.failure_window_s == 90  # §9.4.1 ping_failures.window_seconds


def test_9_4_detection_and_recovery_defaults() -> None:
    cfg = HealthConfig()
    assert cfg.error_rate_threshold == 0.1 and cfg.error_rate_window_s == 300
    assert cfg.memory_threshold == 0.95 and cfg.cpu_threshold == 0.98
    assert cfg.response_timeout_ms == 30_000 and cfg.response_timeout_count == 2
    assert cfg.recovery_probe_successes == 5 and cfg.recovery_error_rate == 0.01
    assert cfg.validation_period_s == 60 and cfg.probation_period_s == 300
    assert cfg.departure_after_s == 3 * cfg.ping.interval_s


def test_design_6_config_scales_to_seconds() -> None:
    small = HealthConfig().scaled(0.01)
    assert small.ping == CheckSchedule(0.3, 0.05, 3, 0.9)
    assert small.probation_period_s == pytest.approx(3.0)
    assert small.response_timeout_ms == pytest.approx(300.0)
    assert small.departure_after_s == pytest.approx(0.9)
    assert small.memory_threshold == 0.95 and small.recovery_probe_successes == 5


def test_health_config_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        HealthConfig().probation_period_s = 1  # type: ignore[misc]


def test_health_config_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        HealthConfig(ping=CheckSchedule(30, 5, 0, 90))
    with pytest.raises(ValueError):
        HealthConfig(error_rate_window_s=0)


# ---------------------------------------------------------------- §9.3 unknown


def test_9_3_unknown_to_healthy_on_first_successful_probe() -> None:
    t = HealthTracker("r1", 0.0)
    assert t.state is U and not t.routable
    tr = t.observe(ProbeSucceeded(1.0, 12.0))
    assert tr is not None
    assert (tr.reactor_id, tr.old, tr.new, tr.event, tr.at) == ("r1", U, H, E.PROBE_PASSED, 1.0)
    assert t.state is H and t.routable and t.since == 1.0


def test_9_3_unknown_ignores_reports_until_a_probe_answers() -> None:
    t = HealthTracker("r1", 0.0)
    assert t.observe(HealthReported(1.0, status="healthy", cpu=0.1, memory=0.1)) is None
    assert t.observe(HeartbeatReceived(2.0)) is None
    assert t.state is U


def test_9_4_1_unknown_that_fails_its_probes_goes_to_failed() -> None:
    t = HealthTracker("r1", 0.0)
    assert t.observe(ProbeFailed(0.0, "timeout")) is None
    assert t.observe(ProbeFailed(30.0, "timeout")) is None
    tr = t.observe(ProbeFailed(60.0, "timeout"))
    assert tr is not None and (tr.old, tr.new) == (U, F)


# ---------------------------------------------------------------- §9.4.1 ping failures


def test_9_4_1_three_ping_failures_within_90s_mark_degraded() -> None:
    t = healthy_tracker()
    assert t.observe(ProbeFailed(0.0, "timeout")) is None
    assert t.observe(ProbeFailed(30.0, "timeout")) is None
    tr = t.observe(ProbeFailed(60.0, "timeout"))
    assert tr is not None
    assert (tr.reactor_id, tr.old, tr.new, tr.event, tr.at) == (
        "r1",
        H,
        D,
        E.DEGRADATION_DETECTED,
        60.0,
    )
    assert "3 ping probe failures within 90s" in tr.reason
    assert t.state is D and t.routable


def test_9_4_1_window_boundary_is_inclusive_at_90s() -> None:
    t = healthy_tracker()
    t.observe(ProbeFailed(0.0, "timeout"))
    t.observe(ProbeFailed(45.0, "timeout"))
    tr = t.observe(ProbeFailed(90.0, "timeout"))
    assert tr is not None and tr.new is D


def test_9_4_1_three_ping_failures_spread_over_more_than_90s_do_not_degrade() -> None:
    t = healthy_tracker()
    assert t.observe(ProbeFailed(0.0, "timeout")) is None
    assert t.observe(ProbeFailed(50.0, "timeout")) is None
    assert t.observe(ProbeFailed(90.5, "timeout")) is None
    assert t.state is H
    # ... but the next one makes three within 90 s (50, 90.5, 100).
    tr = t.observe(ProbeFailed(100.0, "timeout"))
    assert tr is not None and tr.new is D


def test_9_4_1_ping_failures_count_within_the_window_even_with_successes_between() -> None:
    """§9.4.1 counts failures in the window; a flapping reactor still degrades."""
    t = healthy_tracker()
    t.observe(ProbeFailed(0.0, "timeout"))
    t.observe(ProbeSucceeded(10.0, 5.0))
    t.observe(ProbeFailed(20.0, "error"))
    t.observe(ProbeSucceeded(30.0, 5.0))
    tr = t.observe(ProbeFailed(40.0, "timeout"))
    assert tr is not None and tr.new is D


def test_9_2_each_check_kind_uses_its_own_threshold() -> None:
    t = healthy_tracker()
    # Detailed health: 2 failures (within 120 s) degrade.
    assert t.observe(ProbeFailed(0.0, "timeout", CheckKind.HEALTH)) is None
    tr = t.observe(ProbeFailed(60.0, "timeout", CheckKind.HEALTH))
    assert tr is not None and tr.new is D
    # Kinds do not add up: 2 ping failures + 1 health failure is no detection.
    t2 = healthy_tracker()
    t2.observe(ProbeFailed(0.0, "timeout"))
    t2.observe(ProbeFailed(1.0, "timeout"))
    assert t2.observe(ProbeFailed(2.0, "timeout", CheckKind.HEALTH)) is None
    assert t2.state is H
    t3 = healthy_tracker()
    tr3 = t3.observe(ProbeFailed(0.0, "analysis failed", CheckKind.CHEMICAL))
    assert tr3 is not None and tr3.new is D  # §9.2: 1 failure


def test_design_6_degraded_escalates_to_failed_when_the_threshold_is_reached_again() -> None:
    t = degraded_tracker(at=60.0)
    # The failures that degraded it do not count again: two more are not enough.
    assert t.observe(ProbeFailed(70.0, "timeout")) is None
    assert t.observe(ProbeFailed(80.0, "timeout")) is None
    assert t.state is D
    tr = t.observe(ProbeFailed(90.0, "timeout"))
    assert tr is not None
    assert (tr.old, tr.new, tr.event) == (D, F, E.FAILURE_DETECTED)
    assert not t.routable


def test_design_6_degraded_does_not_escalate_on_failures_spread_out() -> None:
    t = degraded_tracker(at=60.0)
    for now in (100.0, 200.0, 300.0, 400.0):
        assert t.observe(ProbeFailed(now, "timeout")) is None
    assert t.state is D


# ---------------------------------------------------------------- §9.4.1 error rate


def test_9_4_1_error_rate_spike_marks_degraded() -> None:
    t = healthy_tracker()
    for i in range(9):
        assert t.observe(PacketFinished(1.0 + i, ok=True)) is None
    tr = t.observe(PacketFinished(10.0, ok=False))  # 1/10 = 0.1 >= 0.1
    assert tr is not None and (tr.old, tr.new) == (H, D)
    assert "error rate 1/10" in tr.reason


def test_9_4_1_successes_counted_together_weigh_as_many_packets() -> None:
    """A batch of 10 successes told at once counts as 10 (the gateway reports successes on
    healthy reactors in batches): one failure then is 1/11, below the threshold."""
    t = healthy_tracker()
    assert t.observe(PacketFinished(5.0, ok=True, count=10)) is None
    assert t.observe(PacketFinished(6.0, ok=False)) is None
    assert t.error_rate(6.0) == pytest.approx(1 / 11)


def test_9_4_1_error_rate_below_threshold_does_not_degrade() -> None:
    t = healthy_tracker()
    for i in range(10):
        t.observe(PacketFinished(1.0 + i, ok=True))
    assert t.observe(PacketFinished(11.0, ok=False)) is None  # 1/11 < 0.1
    assert t.state is H
    assert t.error_rate(11.0) == pytest.approx(1 / 11)


def test_9_4_1_error_rate_needs_minimum_samples() -> None:
    t = healthy_tracker()
    for i in range(9):
        assert t.observe(PacketFinished(1.0 + i, ok=False)) is None  # 9/9 but only 9
    assert t.state is H
    tr = t.observe(PacketFinished(10.0, ok=False))
    assert tr is not None and tr.new is D


def test_9_4_1_error_rate_window_is_300s() -> None:
    t = healthy_tracker()
    for i in range(9):
        t.observe(PacketFinished(float(i), ok=False))
    # 400 s later those errors have left the 300 s window; 1 error in 10 fresh outcomes.
    for i in range(9):
        t.observe(PacketFinished(400.0 + i, ok=True))
    tr = t.observe(PacketFinished(409.0, ok=False))
    assert tr is not None and tr.new is D  # 1/10 fresh
    t2 = healthy_tracker()
    for i in range(9):
        t2.observe(PacketFinished(float(i), ok=False))
    for i in range(20):
        t2.observe(PacketFinished(400.0 + i, ok=True))
    assert t2.observe(PacketFinished(420.0, ok=False)) is None  # 1/21 fresh, old ones gone
    assert t2.state is H


def test_9_4_1_reported_error_rate_spike_marks_degraded() -> None:
    t = healthy_tracker()
    assert t.observe(HealthReported(5.0, status="healthy", error_rate=0.05)) is None
    tr = t.observe(HealthReported(6.0, status="healthy", error_rate=0.12))
    assert tr is not None and tr.new is D


# ---------------------------------------------------------------- §9.4.1 resources


@pytest.mark.parametrize(
    ("cpu", "memory", "fails"),
    [
        (0.10, 0.95, True),
        (0.98, 0.10, True),
        (0.99, 0.99, True),
        (0.979, 0.949, False),
        (None, None, False),
    ],
)
def test_9_4_1_resource_exhaustion_marks_failed(
    cpu: float | None, memory: float | None, fails: bool
) -> None:
    t = healthy_tracker()
    tr = t.observe(HealthReported(5.0, cpu=cpu, memory=memory))
    if fails:
        assert tr is not None and (tr.old, tr.new, tr.event) == (H, F, E.FAILURE_DETECTED)
        assert "resource exhaustion" in tr.reason
    else:
        assert tr is None and t.state is H


def test_9_4_1_resource_exhaustion_fails_a_degraded_reactor() -> None:
    t = degraded_tracker()
    tr = t.observe(HealthReported(70.0, memory=0.96))
    assert tr is not None and (tr.old, tr.new) == (D, F)


def test_9_4_2_exhausted_reactor_recovers_only_when_a_report_shows_relief() -> None:
    t = healthy_tracker()
    t.observe(HealthReported(5.0, memory=0.97))
    assert t.state is F
    # A ping still answers, but the reactor is out of memory: no recovery yet.
    assert t.observe(ProbeSucceeded(10.0, 5.0)) is None
    assert t.state is F
    tr = t.observe(HealthReported(20.0, status="healthy", memory=0.5))
    assert tr is not None and (tr.old, tr.new) == (F, R)
    assert tr.reason == "health check passed"


# ---------------------------------------------------------------- §9.4.1 response timeout


def test_9_4_1_two_consecutive_slow_responses_mark_failed() -> None:
    t = healthy_tracker()
    assert t.observe(ProbeSucceeded(10.0, 30_001.0)) is None
    tr = t.observe(ProbeSucceeded(20.0, 45_000.0))
    assert tr is not None and (tr.old, tr.new) == (H, F)
    assert "2 consecutive responses over 30000 ms" in tr.reason


def test_9_4_1_slow_responses_must_be_consecutive() -> None:
    t = healthy_tracker()
    t.observe(ProbeSucceeded(10.0, 31_000.0))
    t.observe(ProbeSucceeded(20.0, 100.0))
    assert t.observe(ProbeSucceeded(30.0, 31_000.0)) is None
    assert t.observe(ProbeSucceeded(40.0, 30_000.0)) is None  # exactly the limit is not over
    assert t.state is H


# ---------------------------------------------------------------- reported status


def test_9_1_2_reactor_reporting_degraded_is_marked_degraded() -> None:
    t = healthy_tracker()
    tr = t.observe(HealthReported(5.0, status="degraded"))
    assert tr is not None and (tr.old, tr.new) == (H, D)


def test_9_1_2_reactor_reporting_failed_is_marked_failed() -> None:
    t = healthy_tracker()
    tr = t.observe(HealthReported(5.0, status="unhealthy"))
    assert tr is not None and (tr.old, tr.new) == (H, F)


def test_9_1_2_unrecognised_status_says_nothing() -> None:
    t = healthy_tracker()
    assert t.observe(HealthReported(5.0, status="draining")) is None
    assert t.state is H


# ---------------------------------------------------------------- DESIGN §6 connection loss


@pytest.mark.parametrize("start", ["unknown", "healthy", "degraded", "recovery"])
def test_design_6_connection_lost_marks_failed_at_once(start: str) -> None:
    t = {
        "unknown": lambda: HealthTracker("r1", 0.0),
        "healthy": healthy_tracker,
        "degraded": degraded_tracker,
        "recovery": recovery_tracker,
    }[start]()
    old = t.state
    tr = t.observe(ConnectionLost(100.0))
    assert tr is not None
    assert (tr.old, tr.new, tr.event, tr.reason) == (old, F, E.CONNECTION_LOST, "connection lost")
    assert not t.routable


def test_design_6_connection_lost_while_failed_is_no_transition() -> None:
    t = failed_tracker()
    assert t.observe(ConnectionLost(50.0)) is None
    assert t.state is F


def test_design_6_after_connection_loss_only_a_probe_starts_recovery() -> None:
    t = failed_tracker(at=10.0)
    # A report may come over the control connection: it proves nothing about the work one.
    assert t.observe(HealthReported(20.0, status="healthy", cpu=0.1, memory=0.1)) is None
    assert t.state is F
    tr = t.observe(ProbeSucceeded(30.0, 4.0))
    assert tr is not None and (tr.old, tr.new, tr.event) == (F, R, E.PROBE_PASSED)


# ---------------------------------------------------------------- §9.4.2 recovery


def test_9_4_2_failed_to_recovery_on_successful_probe() -> None:
    t = failed_tracker(at=10.0)
    assert t.observe(ProbeFailed(15.0, "timeout")) is None  # still failed
    tr = t.observe(ProbeSucceeded(20.0, 10.0))
    assert tr is not None and (tr.old, tr.new) == (F, R)
    assert t.routable  # DESIGN §5: recovery is routable at health_bonus 0.5


def test_9_4_2_failed_to_recovery_on_passed_health_check() -> None:
    t = healthy_tracker()
    t.observe(HealthReported(5.0, status="failed"))
    assert t.state is F
    tr = t.observe(HealthReported(10.0, status="healthy", cpu=0.2, memory=0.3))
    assert tr is not None and (tr.old, tr.new) == (F, R)


def test_9_4_2_recovery_to_healthy_after_probation_period() -> None:
    t = recovery_tracker(at=20.0)
    assert t.observe(ProbeSucceeded(50.0, 5.0)) is None
    assert t.observe(HeartbeatReceived(300.0)) is None  # not silent
    assert t.observe(TimerFired(319.9)) is None
    assert t.state is R
    tr = t.observe(TimerFired(320.0))
    assert tr is not None
    assert (tr.old, tr.new, tr.event, tr.at) == (R, H, E.PROBATION_PASSED, 320.0)


def test_9_4_2_probation_is_checked_on_any_event() -> None:
    t = recovery_tracker(at=20.0)
    tr = t.observe(ProbeSucceeded(400.0, 5.0))
    assert tr is not None and tr.new is H


@pytest.mark.parametrize(
    "event",
    [
        ProbeFailed(100.0, "timeout"),
        ProbeSucceeded(100.0, 31_000.0),
        HealthReported(100.0, status="degraded"),
        HealthReported(100.0, memory=0.99),
        HealthReported(100.0, error_rate=0.5),
        ConnectionLost(100.0),
    ],
    ids=["ping-failure", "slow-response", "reported-degraded", "exhaustion", "error-rate", "conn"],
)
def test_9_4_2_a_failure_during_recovery_marks_failed(event: HealthInput) -> None:
    t = recovery_tracker(at=20.0)
    tr = t.observe(event)
    assert tr is not None and (tr.old, tr.new) == (R, F)


def test_9_4_2_recovery_does_not_inherit_old_packet_errors() -> None:
    t = healthy_tracker()
    for i in range(20):
        t.observe(PacketFinished(1.0 + i, ok=i % 2 == 0))  # lots of errors → degraded
    t.observe(ConnectionLost(30.0))
    t.observe(ProbeSucceeded(40.0, 5.0))
    assert t.state is R
    # One fresh packet error is not a spike (the old ones were forgotten).
    assert t.observe(PacketFinished(41.0, ok=False)) is None
    assert t.state is R


def test_9_4_2_degraded_to_healthy_after_validation() -> None:
    t = degraded_tracker(at=60.0)
    # 5 successes, but only 50 s since degrading: not yet.
    for now in (70.0, 80.0, 90.0, 100.0):
        assert t.observe(ProbeSucceeded(now, 5.0)) is None
    assert t.observe(ProbeSucceeded(110.0, 5.0)) is None
    assert t.state is D
    tr = t.observe(TimerFired(120.0))  # 60 s since the last failure signal
    assert tr is not None
    assert (tr.old, tr.new, tr.event) == (D, H, E.VALIDATION_PASSED)


def test_9_4_2_degraded_needs_five_probe_successes() -> None:
    t = degraded_tracker(at=60.0)
    for now in (70.0, 80.0, 90.0, 100.0):
        t.observe(ProbeSucceeded(now, 5.0))
    assert t.observe(HeartbeatReceived(500.0)) is None  # long enough, but only 4 successes
    tr = t.observe(ProbeSucceeded(510.0, 5.0))
    assert tr is not None and tr.new is H


def test_9_4_2_a_failure_restarts_the_validation_period() -> None:
    t = degraded_tracker(at=60.0)
    for now in (70.0, 80.0, 90.0, 100.0, 110.0):
        t.observe(ProbeSucceeded(now, 5.0))
    t.observe(ProbeFailed(115.0, "timeout"))
    for now in (120.0, 130.0, 140.0, 150.0, 160.0):
        assert t.observe(ProbeSucceeded(now, 5.0)) is None
    assert t.observe(TimerFired(174.9)) is None
    tr = t.observe(TimerFired(175.0))
    assert tr is not None and tr.new is H


def test_9_4_2_degraded_needs_error_rate_below_one_percent() -> None:
    t = degraded_tracker(at=60.0)
    for i in range(50):
        t.observe(PacketFinished(61.0 + i * 0.1, ok=i != 0))  # 1/50 = 0.02
    for now in (70.0, 80.0, 90.0, 100.0, 110.0):
        t.observe(ProbeSucceeded(now, 5.0))
    assert t.observe(HeartbeatReceived(200.0)) is None
    assert t.state is D
    # Once the error leaves the 300 s window the rate is 0 and the reactor recovers.
    tr = t.observe(HeartbeatReceived(400.0))
    assert tr is not None and tr.new is H


def test_9_4_2_degraded_needs_stable_resources() -> None:
    t = degraded_tracker(at=60.0)
    t.observe(HealthReported(65.0, cpu=0.93, memory=0.5))
    for now in (70.0, 80.0, 90.0, 100.0, 110.0):
        t.observe(ProbeSucceeded(now, 5.0))
    assert t.observe(HeartbeatReceived(200.0)) is None
    tr = t.observe(HealthReported(201.0, cpu=0.4))  # the report that shows relief promotes
    assert tr is not None and tr.new is H


def test_9_4_2_reactor_still_reporting_degraded_stays_degraded() -> None:
    t = healthy_tracker()
    t.observe(HealthReported(5.0, status="degraded"))
    for now in (10.0, 20.0, 30.0, 40.0, 50.0):
        t.observe(ProbeSucceeded(now, 5.0))
    assert t.observe(TimerFired(100.0)) is None
    assert t.state is D
    tr = t.observe(HealthReported(110.0, status="healthy"))
    assert tr is not None and (tr.old, tr.new, tr.event) == (D, H, E.VALIDATION_PASSED)


def test_9_4_2_recovery_runs_end_to_end_in_seconds_with_a_scaled_config() -> None:
    cfg = HealthConfig().scaled(0.01)
    t = healthy_tracker(0.0, cfg)
    for now in (0.1, 0.2, 0.3):
        t.observe(ProbeFailed(now, "timeout"))
    assert t.state is D
    for now in (0.4, 0.5, 0.6):
        t.observe(ProbeFailed(now, "timeout"))
    assert t.state is F
    t.observe(ProbeSucceeded(0.7, 1.0))
    assert t.state is R
    tr = t.observe(HeartbeatReceived(0.7 + cfg.probation_period_s))
    assert tr is not None and tr.new is H


# ---------------------------------------------------------------- DESIGN §6 departure


def test_design_6_heartbeat_expired_rule() -> None:
    assert not heartbeat_expired(10.0, 100.0, 90.0)
    assert heartbeat_expired(10.0, 100.1, 90.0)
    assert not heartbeat_expired(10.0, 10.0, 0.0)


def test_design_6_silent_reactor_fails_then_departs() -> None:
    t = healthy_tracker()
    assert not t.departed(90.0)
    assert t.observe(TimerFired(90.0)) is None
    tr = t.observe(TimerFired(91.0))
    assert tr is not None and (tr.old, tr.new) == (H, F) and "silent" in tr.reason
    assert t.departed(91.0)


def test_design_6_heartbeats_keep_an_idle_reactor_healthy() -> None:
    """DESIGN §12: health comes from probes and heartbeats, never from traffic."""
    t = healthy_tracker()
    for now in range(30, 1000, 30):
        t.observe(HeartbeatReceived(float(now)))
        assert t.observe(TimerFired(now + 29.0)) is None
    assert t.state is H and not t.departed(1000.0)
    assert t.last_seen == 990.0


def test_design_6_departure_after_is_configurable() -> None:
    t = HealthTracker("r1", 0.0, HealthConfig(departure_after_s=5.0))
    assert not t.departed(5.0)
    assert t.departed(5.5)


# ---------------------------------------------------------------- stateful (Hypothesis)

_DT = st.sampled_from([0.0, 0.5, 5.0, 10.0, 30.0, 61.0, 100.0, 301.0])


class HealthMachine(RuleBasedStateMachine):
    """Random event sequences never break the §9.3 invariants."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.tracker = HealthTracker("r-h", self.now)
        self.left_unknown = False

    def _feed(self, event: object) -> HealthTransition | None:
        old = self.tracker.state
        tr = self.tracker.observe(event)  # type: ignore[arg-type]
        if tr is None:
            assert self.tracker.state is old
        else:
            assert tr.old is old and tr.new is self.tracker.state and tr.at == self.now
            assert HEALTH_TRANSITIONS[tr.old][tr.event] is tr.new
            assert tr.reason
        return tr

    @rule(dt=_DT, latency=st.sampled_from([1.0, 100.0, 29_999.0, 30_001.0]))
    def probe_succeeded(self, dt: float, latency: float) -> None:
        self.now += dt
        self._feed(ProbeSucceeded(self.now, latency, CheckKind.PING))

    @rule(dt=_DT, kind=st.sampled_from(list(CheckKind)))
    def probe_failed(self, dt: float, kind: CheckKind) -> None:
        self.now += dt
        self._feed(ProbeFailed(self.now, "timeout", kind))

    @rule(
        dt=_DT,
        status=st.sampled_from([None, "healthy", "degraded", "failed", "odd"]),
        cpu=st.sampled_from([None, 0.1, 0.92, 0.99]),
        memory=st.sampled_from([None, 0.2, 0.96]),
        error_rate=st.sampled_from([None, 0.0, 0.05, 0.2]),
    )
    def health_reported(
        self,
        dt: float,
        status: str | None,
        cpu: float | None,
        memory: float | None,
        error_rate: float | None,
    ) -> None:
        self.now += dt
        self._feed(HealthReported(self.now, status, cpu, memory, error_rate))
        if (cpu is not None and cpu >= 0.98) or (memory is not None and memory >= 0.95):
            assert self.tracker.state is F  # §9.4.1 resource exhaustion

    @rule(dt=_DT, ok=st.booleans())
    def packet_finished(self, dt: float, ok: bool) -> None:
        self.now += dt
        self._feed(PacketFinished(self.now, ok))

    @rule(dt=_DT)
    def connection_lost(self, dt: float) -> None:
        self.now += dt
        self._feed(ConnectionLost(self.now))
        assert self.tracker.state is F  # DESIGN §6: at once

    @rule(dt=_DT)
    def heartbeat(self, dt: float) -> None:
        self.now += dt
        self._feed(HeartbeatReceived(self.now))

    @rule(dt=_DT)
    def timer(self, dt: float) -> None:
        self.now += dt
        self._feed(TimerFired(self.now))

    @rule()
    def a_quiet_minute_of_good_probes(self) -> None:
        for _ in range(6):
            self.now += 12.0
            self._feed(ProbeSucceeded(self.now, 5.0))

    @precondition(lambda self: self.tracker.state is R)
    @rule()
    def probation_elapses(self) -> None:
        self.now = max(self.now, self.tracker.since + DEFAULT_HEALTH_CONFIG.probation_period_s)
        self.tracker.observe(HeartbeatReceived(self.now))  # keeps it from going silent
        assert self.tracker.state is H

    @invariant()
    def state_is_one_of_the_five(self) -> None:
        assert self.tracker.state in set(HealthState)

    @invariant()
    def failed_is_never_routable(self) -> None:
        assert self.tracker.routable == (self.tracker.state in {H, D, R})
        if self.tracker.state is F:
            assert not self.tracker.routable

    @invariant()
    def unknown_is_never_reentered(self) -> None:
        if self.tracker.state is not U:
            self.left_unknown = True
        assert not (self.left_unknown and self.tracker.state is U)


HealthMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
test_9_3_health_state_machine = HealthMachine.TestCase


# ---------------------------------------------------------------- what reactors report


def test_a_heartbeat_reports_status_memory_and_error_rate_but_not_cpu() -> None:
    payload = HeartbeatPayload(
        reactor_id="r1", health_status=HealthStatus(status="degraded", load_factor=0.5),
        performance_metrics=PerformanceMetrics(error_rate=0.02),
        load_metrics=LoadMetrics(
            resource_utilization=ResourceUtilization(memory_percent=85, cpu_percent=99)),
    )  # fmt: skip
    assert reported_in_heartbeat(3.0, payload) == HealthReported(
        3.0, status="degraded", memory=0.85, error_rate=0.02
    )
    assert reported_in_heartbeat(4.0, HeartbeatPayload(reactor_id="r1")) == HealthReported(4.0)


def test_the_spec_example_heartbeat_is_read_pfap_4_2_4_and_8_3() -> None:
    """§4.2.4's example with §8.3's load_metrics, as a foreign reactor sends it: decoded at
    the edge, its memory_percent and error_rate reach the health rules."""
    frame = json.dumps({
        "protocol_version": "1.0", "message_type": "heartbeat", "message_id": "m1",
        "timestamp": 1, "source_id": "reactor-zig-02",
        "payload": {
            "reactor_id": "reactor-zig-02", "implementation": "zig",
            "health_status": {"status": "healthy", "load_factor": 0.45, "queue_depth": 12,
                              "memory_usage_mb": 156.7, "cpu_usage_percent": 23.4,
                              "network_connections": 34, "uptime_seconds": 86400,
                              "last_error": None},
            "performance_metrics": {"packets_processed": 15420, "avg_processing_time_ms": 12.5,
                                    "p99_processing_time_ms": 85.3, "error_rate": 0.002,
                                    "throughput_pps": 145.7},
            "chemical_metrics": {"affinity_effectiveness": 0.91, "molecular_participation": 23,
                                 "optimization_count": 5, "bond_success_rate": 0.97},
            "capabilities": ["ed:signal", "df:validate"],
            "load_metrics": {
                "current_load_factor": 0.67, "queue_depths": {"cf": 3, "df": 12},
                "processing_rates_pps": {"cf": 45.2, "df": 123.7},
                "resource_utilization": {"cpu_percent": 67.2, "memory_percent": 96.5,
                                         "disk_io_percent": 23.1, "network_io_percent": 34.7},
            },
            "capacity_adjustments": {"temporary_capacity_boost": 1.2,
                                     "scheduled_maintenance": None,
                                     "resource_constraints": ["memory_pressure"]},
        },
    }).encode()  # fmt: skip
    msg = decode_one(frame)
    assert isinstance(msg, Heartbeat)
    reported = reported_in_heartbeat(2.0, msg.payload)
    assert reported == HealthReported(2.0, status="healthy", memory=0.965, error_rate=0.002)
    tracker = HealthTracker("reactor-zig-02", 0.0)
    tracker.observe(ProbeSucceeded(1.0, 1.0))
    moved = tracker.observe(reported)
    assert moved is not None and moved.new is HealthState.FAILED  # §9.4.1 memory >= 0.95


def test_a_health_check_result_reports_its_9_1_2_figures() -> None:
    data = {"status": "healthy", "resource_status": {"memory_usage_percent": 40.0},
            "performance_indicators": {"error_rate_5min": 0.0}}  # fmt: skip
    assert reported_by_health_check(1.0, data) == HealthReported(
        1.0, status="healthy", memory=0.4, error_rate=0.0
    )
    odd = {"status": 3, "resource_status": {"memory_usage_percent": "lots"}}
    assert reported_by_health_check(1.0, odd) == HealthReported(1.0)
    assert reported_by_health_check(1.0, ["not", "an", "object"]) is None


def test_9_2_resource_metrics_row_reads_rm_monitor_memory_of_budget() -> None:
    """The §9.2 Resource Metrics probe (rm:monitor) feeds memory, never CPU, to §9.4.1."""
    from packetflow.protocol.health import reported_by_resource_check

    data = {"cpu": {"process_percent": 99.9}, "memory": {"process_percent": 96.0}}
    reported = reported_by_resource_check(1.0, data)
    assert reported is not None and reported.memory == 0.96 and reported.cpu is None
    assert reported_by_resource_check(1.0, {"memory": 3}) is None
    assert reported_by_resource_check(1.0, [1]) is None
