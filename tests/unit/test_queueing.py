"""protocol/queueing.py: the bounded queue ordered by priority, then age (DESIGN §5)."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from packetflow.protocol.queueing import PriorityQueue, first_among


def test_highest_priority_first_then_oldest() -> None:
    q: PriorityQueue[str] = PriorityQueue(10)
    for item, priority in (("a", 5), ("b", 9), ("c", 5), ("d", 10), ("e", 1)):
        assert q.push(item, priority) is not None
    assert [q.pop() for _ in range(5)] == ["d", "b", "a", "c", "e"]
    assert q.pop() is None and len(q) == 0


def test_an_item_put_back_with_its_arrival_number_keeps_its_place() -> None:
    q: PriorityQueue[str] = PriorityQueue(10)
    first = q.push("a", 5)
    assert first is not None and q.push("b", 5) is not None
    assert q.pop() == "a"
    assert q.push("a", 5, seq=first.seq) is not None  # back to wait, still the oldest
    assert q.push("c", 5) is not None
    assert [q.pop() for _ in range(3)] == ["a", "b", "c"]


def test_full_queue_refuses_and_removal_frees_a_place() -> None:
    q: PriorityQueue[str] = PriorityQueue(2)
    first = q.push("a", 5)
    assert first is not None and q.push("b", 5) is not None
    assert q.push("c", 5) is None
    assert q.remove(first) and not q.remove(first)
    assert q.push("c", 5) is not None
    assert list(q) == ["b", "c"]
    assert q.peek() == "b"


@given(st.lists(st.tuples(st.integers(1, 10), st.booleans()), max_size=50))
def test_pop_order_matches_sorted_order(ops: list[tuple[int, bool]]) -> None:
    q: PriorityQueue[int] = PriorityQueue(1000)
    kept = []
    for i, (priority, keep) in enumerate(ops):
        entry = q.push(i, priority)
        assert entry is not None
        if keep:
            kept.append((-priority, i))
        else:
            q.remove(entry)
    assert len(q) == len(kept)
    assert [q.pop() for _ in kept] == [i for _, i in sorted(kept)]


def test_first_among_picks_priority_then_age_across_queues_sharing_an_order() -> None:
    """DESIGN §5: a freed slot takes the highest-priority, then oldest, packet among the
    elements the reactor serves. Ages compare only with a shared arrival order."""
    order = itertools.count()
    queues: dict[str, PriorityQueue[str]] = {
        "cf:ping": PriorityQueue(10, order),
        "df:map": PriorityQueue(10, order),
        "mc:learn": PriorityQueue(10, order),
    }
    queues["df:map"].push("old-df", 5)
    queues["cf:ping"].push("new-cf", 5)
    queues["mc:learn"].push("urgent-mc", 9)
    assert first_among(queues, {"cf:ping", "df:map", "mc:learn"}) == "mc:learn"
    assert first_among(queues, {"cf:ping", "df:map"}) == "df:map"  # same priority: older
    assert first_among(queues, {"cf:ping"}) == "cf:ping"
    assert first_among(queues, {"rm:scale"}) is None
