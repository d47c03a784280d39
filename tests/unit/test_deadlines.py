"""protocol/deadlines.py: the per-packet deadline wheel the gateway sweeps."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from packetflow.protocol.deadlines import DeadlineWheel


def test_items_expire_once_their_deadline_passes() -> None:
    wheel: DeadlineWheel[str] = DeadlineWheel(0.05)
    wheel.add("a", 1.00)
    wheel.add("b", 1.20)
    assert wheel.expired(0.99) == []
    assert wheel.expired(1.00) == ["a"]
    assert "a" not in wheel and "b" in wheel
    assert wheel.expired(1.19) == []
    assert wheel.expired(5.0) == ["b"]
    assert len(wheel) == 0 and wheel.next_deadline() is None


def test_discard_and_rearm() -> None:
    wheel: DeadlineWheel[str] = DeadlineWheel(0.1)
    wheel.add("a", 1.0)
    wheel.discard("a")
    wheel.discard("never-armed")
    assert wheel.expired(2.0) == []
    wheel.add("b", 1.0)
    wheel.add("b", 3.0)  # re-arming moves it
    assert wheel.expired(2.0) == []
    assert wheel.next_deadline() == 3.0
    assert wheel.expired(3.0) == ["b"]


@given(st.lists(st.tuples(st.integers(0, 50), st.floats(0, 10), st.booleans()), max_size=60),
       st.floats(0, 12))  # fmt: skip
def test_never_early_never_lost(ops: list[tuple[int, float, bool]], now: float) -> None:
    """An item comes out of expired() only at or after its deadline, at most one
    resolution late, exactly once, unless discarded."""
    wheel: DeadlineWheel[int] = DeadlineWheel(0.05)
    deadline: dict[int, float] = {}
    for item, when, keep in ops:
        if keep:
            wheel.add(item, when)
            deadline[item] = when
        else:
            wheel.discard(item)
            deadline.pop(item, None)
    out = wheel.expired(now)
    assert len(out) == len(set(out))
    for item in out:
        assert deadline[item] <= now + 0.05 + 1e-9
    for item, when in deadline.items():
        if when <= now - 0.05:
            assert item in out
    assert len(wheel) == len(deadline) - len(out)
