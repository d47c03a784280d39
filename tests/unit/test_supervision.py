"""The `packetflow up` restart rule (protocol/supervision.py), driven with time passed in."""

from __future__ import annotations

import pytest

from packetflow.protocol.supervision import (
    ChildSupervisor,
    GiveUp,
    Restart,
    RestartPolicy,
)


def test_restarts_back_off_exponentially_up_to_the_cap() -> None:
    policy = RestartPolicy(max_exits=100)
    child = ChildSupervisor("reactor-a", 0.0, policy)
    delays = []
    now = 0.0
    for _ in range(9):
        now += 1.0  # dies a second after each start
        decision = child.exited(now)
        assert isinstance(decision, Restart)
        assert decision.at == pytest.approx(now + decision.delay_s)
        delays.append(decision.delay_s)
        now = decision.at
        child.started(now)
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]


def test_a_child_that_ran_stably_starts_its_backoff_again() -> None:
    child = ChildSupervisor("gateway", 0.0)
    first = child.exited(5.0)
    assert isinstance(first, Restart) and first.delay_s == 0.5
    child.started(first.at)
    second = child.exited(first.at + 2.0)
    assert isinstance(second, Restart) and second.delay_s == 1.0 and second.attempt == 2
    child.started(second.at)
    # Up for the whole stable period: the next exit is a fresh first restart.
    third = child.exited(second.at + 60.0)
    assert isinstance(third, Restart) and third.delay_s == 0.5 and third.attempt == 1


def test_five_exits_within_a_minute_give_up() -> None:
    child = ChildSupervisor("reactor-b", 0.0)
    now = 0.0
    for _ in range(4):
        now += 2.0
        decision = child.exited(now)
        assert isinstance(decision, Restart)
        child.started(decision.at)
        now = decision.at
    gave_up = child.exited(now + 0.1)
    assert isinstance(gave_up, GiveUp)
    assert "reactor-b" in gave_up.reason and "5 times" in gave_up.reason


def test_exits_spread_beyond_the_window_never_give_up() -> None:
    child = ChildSupervisor("reactor-c", 0.0)
    now = 0.0
    for _ in range(20):
        now += 30.0  # dies every 30 s: at most two exits in any minute
        decision = child.exited(now)
        assert isinstance(decision, Restart)
        child.started(decision.at)


@pytest.mark.parametrize(
    "bad",
    [
        {"initial_delay_s": -1.0},
        {"initial_delay_s": 5.0, "max_delay_s": 1.0},
        {"multiplier": 0.5},
        {"max_exits": 0},
        {"window_s": 0.0},
    ],
)
def test_a_nonsensical_policy_is_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RestartPolicy(**bad)  # type: ignore[arg-type]


def test_the_restart_line_names_the_exit_code_or_the_signal() -> None:
    from packetflow.cluster import describe_exit

    assert describe_exit(0) == "exit code 0"
    assert describe_exit(3) == "exit code 3"
    assert describe_exit(-9) == "signal SIGKILL"
    assert describe_exit(-15) == "signal SIGTERM"
    assert describe_exit(-200) == "signal 200"  # not a known signal number
