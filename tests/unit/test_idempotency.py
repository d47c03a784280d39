"""DESIGN §4 idempotency window (protocol/idempotency.py): the same packet id never runs
twice; bounded in entries and age."""

from __future__ import annotations

from packetflow.protocol.idempotency import IdempotencyWindow


def test_running_id_collects_waiters_and_finish_returns_them() -> None:
    window: IdempotencyWindow[str, str] = IdempotencyWindow()
    window.begin("p1", now=0.0)
    seen = window.lookup("p1", now=1.0)
    assert seen is not None and seen.running and seen.outcome is None
    seen.join("second-submitter")
    assert window.finish("p1", "RESULT", replayable=True, now=2.0) == ["second-submitter"]
    replay = window.lookup("p1", now=3.0)
    assert replay is not None and replay.outcome == "RESULT" and not replay.running


def test_retryable_outcome_is_forgotten_so_the_packet_may_run_anew() -> None:
    window: IdempotencyWindow[str, str] = IdempotencyWindow()
    window.begin("p1", now=0.0)
    window.finish("p1", "PF005 retryable", replayable=False, now=1.0)
    assert window.lookup("p1", now=1.0) is None


def test_outcomes_expire_after_the_window() -> None:
    window: IdempotencyWindow[str, str] = IdempotencyWindow(ttl_s=10.0)
    window.begin("p1", now=0.0)
    window.finish("p1", "R", replayable=True, now=1.0)
    assert window.lookup("p1", now=11.0) is not None
    assert window.lookup("p1", now=11.5) is None


def test_admission_evicts_expired_oldest_entries() -> None:
    window: IdempotencyWindow[str, str] = IdempotencyWindow(ttl_s=5.0)
    for i in range(10):
        window.begin(f"old{i}", now=0.0)
        window.finish(f"old{i}", "R", replayable=True, now=0.0)
    window.begin("new", now=100.0)
    assert len(window) == 1


def test_size_cap_evicts_oldest_first() -> None:
    window: IdempotencyWindow[str, str] = IdempotencyWindow(max_entries=3)
    for i in range(5):
        window.begin(f"p{i}", now=float(i))
    assert len(window) == 3
    assert window.lookup("p0", now=5.0) is None
    assert window.lookup("p4", now=5.0) is not None
