"""protocol/queueing.py: the bounded queue ordered by priority, then age (DESIGN §5)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from packetflow.protocol.queueing import PriorityQueue


def test_highest_priority_first_then_oldest() -> None:
    q: PriorityQueue[str] = PriorityQueue(10)
    for item, priority in (("a", 5), ("b", 9), ("c", 5), ("d", 10), ("e", 1)):
        assert q.push(item, priority) is not None
    assert [q.pop() for _ in range(5)] == ["d", "b", "a", "c", "e"]
    assert q.pop() is None and len(q) == 0


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
