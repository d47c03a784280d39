"""The packet lifecycle of PFAP §5.1/§5.3 and DESIGN §4: the table of legal moves and the
single entry point that applies one."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from packetflow.protocol import errors
from packetflow.protocol.lifecycle import (
    LIFECYCLE,
    TERMINAL_STATES,
    IllegalPacketTransition,
    PacketEvent,
    PacketState,
    advance,
    is_terminal,
)

S = PacketState
E = PacketEvent

# The table as the module docstring reads §5.3, typed out independently.
EXPECTED = {
    (S.CREATED, E.VALIDATION_PASSED): S.VALIDATED,
    (S.CREATED, E.VALIDATION_FAILED): S.INVALID,
    (S.CREATED, E.ABORTED): S.ABORTED,
    (S.INVALID, E.FAILED): S.FAILED,
    (S.VALIDATED, E.ROUTED): S.ROUTED,
    (S.VALIDATED, E.ENQUEUED): S.QUEUED,
    (S.VALIDATED, E.FAILED): S.FAILED,
    (S.VALIDATED, E.ABORTED): S.ABORTED,
    (S.ROUTED, E.ENQUEUED): S.QUEUED,
    (S.ROUTED, E.STARTED): S.PROCESSING,
    (S.ROUTED, E.FAILED): S.FAILED,
    (S.ROUTED, E.ABORTED): S.ABORTED,
    (S.QUEUED, E.ENQUEUED): S.QUEUED,  # taken for a slot it may not use: back to wait
    (S.QUEUED, E.ROUTED): S.ROUTED,
    (S.QUEUED, E.STARTED): S.PROCESSING,
    (S.QUEUED, E.FAILED): S.FAILED,
    (S.QUEUED, E.ABORTED): S.ABORTED,
    (S.PROCESSING, E.SUCCEEDED): S.COMPLETED,
    (S.PROCESSING, E.FAILED): S.FAILED,
    (S.PROCESSING, E.ABORTED): S.ABORTED,
    (S.FAILED, E.RETRY_SCHEDULED): S.RETRIED,
    (S.FAILED, E.ABORTED): S.ABORTED,
    (S.RETRIED, E.ROUTED): S.ROUTED,
    (S.RETRIED, E.ENQUEUED): S.QUEUED,  # a retry waits for a slot (DESIGN §5 queue)
    (S.RETRIED, E.FAILED): S.FAILED,
    (S.RETRIED, E.ABORTED): S.ABORTED,
}
ALL_PAIRS = list(itertools.product(PacketState, PacketEvent))


def walk(*events: PacketEvent, packet_id: str = "p1") -> list[PacketState]:
    state = S.CREATED
    seen = [state]
    for event in events:
        state = advance(packet_id, state, event)
        seen.append(state)
    return seen


@pytest.mark.parametrize(("state", "event"), ALL_PAIRS, ids=[f"{s}-{e}" for s, e in ALL_PAIRS])
def test_5_3_every_pair_is_legal_or_raises(state: PacketState, event: PacketEvent) -> None:
    expected = EXPECTED.get((state, event))
    if expected is not None:
        assert advance("p1", state, event) is expected
    else:
        with pytest.raises(IllegalPacketTransition) as info:
            advance("packet_42", state, event)
        message = str(info.value)
        assert "packet_42" in message and str(state) in message and str(event) in message
        assert info.value.state is state and info.value.event is event
        assert info.value.packet_id == "packet_42"
        assert isinstance(info.value, errors.InternalError) and info.value.code == "PF500"


def test_5_3_table_has_exactly_the_expected_moves() -> None:
    actual = {(s, e): n for s, moves in LIFECYCLE.items() for e, n in moves.items()}
    assert actual == EXPECTED
    assert set(LIFECYCLE) == set(PacketState)


def test_5_3_happy_path() -> None:
    assert walk(E.VALIDATION_PASSED, E.ROUTED, E.ENQUEUED, E.STARTED, E.SUCCEEDED) == [
        S.CREATED,
        S.VALIDATED,
        S.ROUTED,
        S.QUEUED,
        S.PROCESSING,
        S.COMPLETED,
    ]


def test_5_3_invalid_packet_fails() -> None:
    assert walk(E.VALIDATION_FAILED, E.FAILED)[-1] is S.FAILED


def test_5_3_failed_packet_is_retried_through_routing() -> None:
    states = walk(
        E.VALIDATION_PASSED,
        E.ROUTED,
        E.STARTED,
        E.FAILED,
        E.RETRY_SCHEDULED,
        E.ROUTED,
        E.STARTED,
        E.SUCCEEDED,
    )
    assert states[3:] == [S.PROCESSING, S.FAILED, S.RETRIED, S.ROUTED, S.PROCESSING, S.COMPLETED]


def test_5_3_failed_packet_may_be_aborted() -> None:
    assert walk(E.VALIDATION_PASSED, E.FAILED, E.ABORTED)[-1] is S.ABORTED


def test_design_4_queued_may_go_back_to_routed() -> None:
    states = walk(E.VALIDATION_PASSED, E.ROUTED, E.ENQUEUED, E.ROUTED, E.STARTED)
    assert states[-3:] == [S.QUEUED, S.ROUTED, S.PROCESSING]


def test_design_5_packet_put_back_in_the_queue_stays_queued() -> None:
    """The gateway drains its queue into a freed slot the packet may not use (routing
    preferences, DESIGN §6 one suspect per reactor): it goes back to wait. This raised
    IllegalPacketTransition inside the reactor link's read loop (chaos test_poison)."""
    assert walk(E.VALIDATION_PASSED, E.ENQUEUED, E.ENQUEUED, E.ROUTED, E.STARTED)[-3:] == [
        S.QUEUED, S.ROUTED, S.PROCESSING,
    ]  # fmt: skip


def test_design_5_full_pool_queues_before_routing() -> None:
    assert walk(E.VALIDATION_PASSED, E.ENQUEUED, E.ROUTED, E.STARTED)[-1] is S.PROCESSING


def test_design_6_retry_that_cannot_start_before_its_deadline_fails() -> None:
    assert walk(E.VALIDATION_PASSED, E.FAILED, E.RETRY_SCHEDULED, E.FAILED)[-1] is S.FAILED


def test_5_3_terminal_states() -> None:
    assert {S.COMPLETED, S.ABORTED} == TERMINAL_STATES
    assert is_terminal(S.COMPLETED) and is_terminal(S.ABORTED)
    assert not is_terminal(S.FAILED)  # it may still be retried
    with pytest.raises(IllegalPacketTransition):
        advance("p1", S.COMPLETED, E.FAILED)


def test_5_3_every_state_is_reachable_and_every_unfinished_state_can_finish() -> None:
    reachable = {S.CREATED}
    frontier = [S.CREATED]
    while frontier:
        state = frontier.pop()
        for nxt in LIFECYCLE[state].values():
            if nxt not in reachable:
                reachable.add(nxt)
                frontier.append(nxt)
    assert reachable == set(PacketState)
    # From every state some path ends in a terminal state (no dead ends, no trap cycles).
    can_finish = set(TERMINAL_STATES)
    changed = True
    while changed:
        changed = False
        for state, moves in LIFECYCLE.items():
            if state not in can_finish and can_finish & set(moves.values()):
                can_finish.add(state)
                changed = True
    assert can_finish == set(PacketState)


@given(st.lists(st.sampled_from(list(PacketEvent)), max_size=40))
def test_5_3_random_event_sequences_only_raise_illegal_transition(
    events: list[PacketEvent],
) -> None:
    state = S.CREATED
    for event in events:
        legal = event in LIFECYCLE[state]
        try:
            new = advance("p-hyp", state, event)
        except IllegalPacketTransition:
            assert not legal
        else:
            assert legal and new is LIFECYCLE[state][event]
            state = new
        assert state in set(PacketState)
