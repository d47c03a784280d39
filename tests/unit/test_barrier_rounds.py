"""protocol/barrier_rounds.py: the co:sync rounds several gateways share (issue 14), driven
directly, and a Hypothesis model of gateways that arrive and time out in any interleaving
against a compare-and-set store."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from packetflow.protocol.barrier_rounds import (
    MAX_ROUND_BYTES,
    Absent,
    HeldArrivals,
    Released,
    Round,
    Token,
    Withdrawn,
    barrier_key,
    decode_round,
    encode_round,
    join,
    leave,
)
from packetflow.protocol.events import BarrierTable

from .expect import fails

D = "payload.packet.data"
A = Token("gw-a/1", 1)
A2 = Token("gw-a/1", 2)
B = Token("gw-b/7", 1)


def test_the_first_arrival_opens_a_round_it_names() -> None:
    opened = join(None, "stage", 3, A)
    assert opened == Round("stage", 3, str(A), {"gw-a/1": [1]})
    assert opened.count == 1 and not opened.full and opened.holds(A)


def test_the_arrival_that_fills_the_round_releases_it() -> None:
    current = join(join(None, "stage", 3, A), "stage", 3, B)
    full = join(current, "stage", 3, A2)
    assert full.full and full.round_id == str(A)
    assert full.arrivals == {"gw-a/1": [1, 2], "gw-b/7": [1]}


def test_an_arrival_at_a_full_round_opens_the_next() -> None:
    full = join(join(None, "s", 2, A), "s", 2, B)
    after = join(full, "s", 5, A2)  # a new round may have other parties
    assert after == Round("s", 5, str(A2), {"gw-a/1": [2]})


def test_one_party_is_full_at_once() -> None:
    assert join(None, "solo", 1, A).full


def test_joining_twice_changes_nothing() -> None:
    """A write whose answer was lost (a NATS timeout) is read back, not written again."""
    current = join(None, "s", 3, A)
    assert join(current, "s", 3, A) is current


def test_parties_mismatch_is_the_standalone_pf002() -> None:
    current = join(None, "b", 3, A)
    err = fails(lambda: join(current, "b", 2, B), "PF002", f"{D}.parties")
    assert err.validation_rule == "barrier_parties"
    table: BarrierTable[str] = BarrierTable()
    table.arrive("b", 3, "w", 0.0)
    alone = fails(lambda: table.arrive("b", 2, "x", 0.0), "PF002", f"{D}.parties")
    assert (alone.message, alone.details) == (err.message, err.details)


@pytest.mark.parametrize("parties", [0, -1, True, 1.5, "2", 10_001])
def test_bad_parties_pf002(parties: object) -> None:
    fails(lambda: join(None, "b", parties, A), "PF002", f"{D}.parties")  # type: ignore[arg-type]


@pytest.mark.parametrize("barrier", ["", 3, None, "x" * 300])
def test_bad_barrier_name_pf002(barrier: object) -> None:
    fails(lambda: join(None, barrier, 2, A), "PF002", f"{D}.barrier")  # type: ignore[arg-type]


def test_leaving_an_open_round_withdraws_the_token() -> None:
    current = join(join(None, "s", 3, A), "s", 3, B)
    left = leave(current, str(A), A)
    assert left == Withdrawn(Round("s", 3, str(A), {"gw-b/7": [1]}))
    emptied = leave(join(None, "s", 3, A), str(A), A)  # the last one: kept, empty
    assert emptied == Withdrawn(Round("s", 3, str(A), {}))
    assert isinstance(emptied, Withdrawn)
    assert join(emptied.round, "s", 2, B) == Round("s", 2, str(B), {"gw-b/7": [1]})


def test_a_full_round_replaced_by_one_that_emptied_still_means_released() -> None:
    """A's token filled round 1; round 2 opened and its only waiter left: A's timeout
    must still learn that it was released (a deleted round 2 would hide it)."""
    full = join(join(None, "s", 2, A), "s", 2, B)
    second = join(full, "s", 2, A2)
    emptied = leave(second, str(A2), A2)
    assert isinstance(emptied, Withdrawn) and emptied.round.count == 0
    assert leave(emptied.round, str(A), A) == Released()


def test_leaving_a_full_or_replaced_round_means_released() -> None:
    full = join(join(None, "s", 2, A), "s", 2, B)
    assert leave(full, str(A), B) == Released()
    nxt = join(full, "s", 2, A2)
    assert leave(nxt, str(A), B) == Released()


def test_leaving_what_is_gone_is_absent() -> None:
    assert leave(None, str(A), A) == Absent()
    assert leave(join(None, "s", 3, B), str(B), A) == Absent()


def test_a_join_cut_short_leaves_whatever_round_holds_it() -> None:
    """Its gateway stopped before the write's answer came: the token may be stored."""
    current = join(join(None, "s", 3, B), "s", 3, A)
    assert leave(current, None, A) == Withdrawn(Round("s", 3, str(B), {"gw-b/7": [1]}))
    assert leave(join(None, "s", 3, B), None, A) == Absent()
    assert leave(join(current, "s", 3, A2), None, A) == Released()


def test_keys_are_kv_safe_and_distinct() -> None:
    for name in ("stage-1", "with space", "a.b", "é" * 200, "*"):
        assert re.fullmatch(r"[-/_=.a-zA-Z0-9]+", barrier_key(name))
    assert barrier_key("x") == barrier_key("x") != barrier_key("y")


def test_a_round_round_trips_and_junk_is_no_round() -> None:
    current = join(join(None, "s", 3, A), "s", 3, B)
    assert decode_round(encode_round(current)) == current
    for junk in (None, b"", b"{", b"[]", b'{"barrier":"s"}',
                 b'{"barrier":"s","parties":1,"round_id":"x","arrivals":{"a":[1,2]}}',
                 b'{"barrier":"","parties":2,"round_id":"x","arrivals":{}}'):  # fmt: skip
        assert decode_round(junk) is None


def test_the_largest_round_fits_and_a_larger_value_is_pf004() -> None:
    big = Round(
        "b" * 256,
        10_000,
        "x",
        {"gateway-" + "x" * 40 + "/abcdef12": list(range(10**9, 10**9 + 10_000))},
    )
    assert len(encode_round(big)) < MAX_ROUND_BYTES
    huge = Round("b", 10_000, "x", {f"g{'x' * 200}{i}": [i] for i in range(10_000)})
    err = fails(lambda: encode_round(huge), "PF004")
    assert err.details["reason"] == "barrier_round_too_large"


def test_held_arrivals_mint_tokens_and_answer_a_full_round() -> None:
    held: HeldArrivals[str] = HeldArrivals("gw-a/1")
    t1, t2 = held.hold("s", "w1"), held.hold("s", "w2")
    assert (t1, t2) == (A, A2) and len(held) == 2 and held.barriers() == 1
    open_round = join(join(None, "s", 3, t1), "s", 3, B)
    assert held.released_in(open_round) == []
    full = join(open_round, "s", 3, t2)
    assert held.released_in(full) == ["w1", "w2"]
    assert held.drop(t1) == "w1" and held.drop(t1) is None
    assert held.released_in(full) == ["w2"]
    assert held.drop(B) is None  # another source's token
    assert held.drop(t2) == "w2" and held.barriers() == 0


def test_held_arrivals_are_bounded_pf004() -> None:
    held: HeldArrivals[str] = HeldArrivals("g", max_barriers=1)
    held.hold("a", "w")
    err = fails(lambda: held.hold("b", "w"), "PF004")
    assert err.details["reason"] == "barriers_full"
    held.hold("a", "w2")  # the same barrier: fine


# ---------------------------------------------------------------------------------------------
# The model: three gateways arrive, time out and see the store's changes (their watch may lag)
# in any order, against one compare-and-set value.

# (gateway 0-2, what it does): arrive; "leave" (its oldest waiter times out); "see" (its
# watch delivers the oldest change it has not seen yet).
actions = st.lists(st.tuples(st.integers(0, 2), st.sampled_from(["arrive", "leave", "see"])),
                   max_size=80)  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 4), actions)
def test_every_arrival_is_answered_once_released_or_timed_out(
    parties: int, steps: list[tuple[int, str]]
) -> None:
    """Whatever the interleaving: every full round written holds exactly ``parties``
    arrivals; a waiter is answered once; it is answered released exactly when a round
    written full held it, whether its gateway's watch or its own timeout found out."""
    store: Round | None = None  # the barrier's value; never deleted, only replaced
    held = [HeldArrivals[list[Token]](f"gw{i}/n") for i in range(3)]
    unseen: list[list[Round]] = [[], [], []]
    waiting: dict[Token, str] = {}  # token -> the round id it joined
    answers: dict[Token, str] = {}
    in_full_rounds: set[Token] = set()

    def answer(token: Token, how: str) -> None:
        assert token not in answers, f"{token} answered twice"
        answers[token] = how
        waiting.pop(token, None)
        held[int(token.source[2])].drop(token)

    def release(gateway: int, value: Round) -> None:
        for (token,) in held[gateway].released_in(value):
            answer(token, "released")

    def write(gateway: int, value: Round) -> None:
        nonlocal store
        store = value
        for queue in unseen:
            queue.append(value)
        if value.full:
            assert value.count == parties
            in_full_rounds.update(Token(s, c) for s, cs in value.arrivals.items() for c in cs)
            release(gateway, value)  # the writer knows at once

    for gateway, action in steps:
        if action == "arrive":
            box: list[Token] = []  # the waiter: it learns its token once held
            token = held[gateway].hold("b", box)
            box.append(token)
            after = join(store, "b", parties, token)
            waiting[token] = after.round_id
            write(gateway, after)
        elif action == "see":
            if unseen[gateway]:
                release(gateway, unseen[gateway].pop(0))
        else:
            mine = [t for t in waiting if t.source == held[gateway].source]
            if not mine:
                continue
            outcome = leave(store, waiting[mine[0]], mine[0])
            if isinstance(outcome, Withdrawn):
                write(gateway, outcome.round)
            answer(mine[0], "released" if isinstance(outcome, Released) else "timeout")
    for gateway, queue in enumerate(unseen):
        for value in queue:
            release(gateway, value)
    assert {t for t, how in answers.items() if how == "released"} == in_full_rounds
    assert len(in_full_rounds) % parties == 0
    open_count = store.count if store is not None and not store.full else 0
    assert open_count == len(waiting)
