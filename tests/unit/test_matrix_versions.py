"""PFAP §6.4 affinity matrix updates as a pure state machine (protocol/matrix_versions.py):
scheduled updates, automatic rollback within the observation window, manual rollback."""

from __future__ import annotations

from typing import Any

import pytest

from packetflow.protocol.chemistry import STANDARD_MATRIX
from packetflow.protocol.errors import InvalidPacket
from packetflow.protocol.matrix_versions import MAX_PENDING, MatrixVersions

T0 = 1_700_000_000_000


def versions() -> MatrixVersions:
    return MatrixVersions(STANDARD_MATRIX, "1.0", T0)


def update(value: float = 0.95, **extra: Any) -> dict[str, Any]:
    return {"matrix_updates": {"cf": {"cpu_intensive": value}}, **extra}


def test_an_update_without_effective_date_applies_at_once_s6_4() -> None:
    mv = versions()
    upd, change = mv.submit(update(version="1.1"), "data", T0)
    assert change is not None and change.version == "1.1" and change.previous_version == "1.0"
    assert mv.version == "1.1" and mv.matrix["cf"]["cpu_intensive"] == 0.95
    assert mv.history[-1]["version"] == "1.0"
    assert upd.effective_at is None


def test_a_future_effective_date_is_scheduled_not_applied_s6_4() -> None:
    mv = versions()
    _, change = mv.submit(update(version="1.1", effective_date=T0 + 5000), "data", T0)
    assert change is None
    assert mv.version == "1.0" and mv.matrix["cf"]["cpu_intensive"] != 0.95
    assert [p["version"] for p in mv.view()["pending"]] == ["1.1"]
    assert mv.next_due() == T0 + 5000
    assert mv.tick(T0 + 4999) == []
    (change,) = mv.tick(T0 + 5000)
    assert change.reason == "scheduled" and mv.version == "1.1"
    assert mv.matrix["cf"]["cpu_intensive"] == 0.95
    assert mv.view()["pending"] == [] and mv.next_due() is None


def test_a_past_effective_date_applies_at_once() -> None:
    mv = versions()
    _, change = mv.submit(update(effective_date=T0 - 1), "data", T0)
    assert change is not None and mv.version == "1.1"


def test_scheduled_updates_apply_in_order_on_the_matrix_then_in_force() -> None:
    mv = versions()
    mv.submit({"matrix_updates": {"df": {"memory_bound": 0.5}}, "version": "b",
               "effective_date": T0 + 200}, "data", T0)  # fmt: skip
    mv.submit(update(version="a", effective_date=T0 + 100), "data", T0)
    mv.submit({"matrix_updates": {"ed": {"io_intensive": 0.1}}, "version": "now"}, "data", T0)
    changes = mv.tick(T0 + 300)
    assert [c.version for c in changes] == ["a", "b"]
    assert mv.matrix["cf"]["cpu_intensive"] == 0.95
    assert mv.matrix["df"]["memory_bound"] == 0.5
    assert mv.matrix["ed"]["io_intensive"] == 0.1  # the immediate one survived both


def test_automatic_rollback_when_success_rate_falls_below_threshold() -> None:
    mv = versions()
    policy = {"type": "automatic", "success_rate_threshold": 0.8, "min_samples": 10,
              "observation_window_ms": 60_000}  # fmt: skip
    mv.submit(update(version="1.1", rollback_policy=policy), "data", T0)
    assert mv.view()["watch"]["rollback_to"] == "1.0"
    for _ in range(7):
        assert mv.observe(True, T0 + 10) is None
    for _ in range(2):
        assert mv.observe(False, T0 + 10) is None  # 9 samples: below min_samples
    change = mv.observe(False, T0 + 20)  # 7/10 = 0.7 < 0.8
    assert change is not None and change.reason == "automatic_rollback"
    assert change.version == "1.0" and change.details["rolled_back"] == "1.1"
    assert (
        mv.version == "1.0"
        and mv.matrix["cf"]["cpu_intensive"] == STANDARD_MATRIX["cf"]["cpu_intensive"]
    )
    assert mv.watch is None
    assert mv.observe(False, T0 + 30) is None


def test_no_rollback_after_the_observation_window_closes() -> None:
    mv = versions()
    mv.submit(update(version="1.1", rollback_policy="gradual_rollout"), "data", T0)
    assert mv.next_due() == T0 + 60_000
    assert mv.tick(T0 + 60_000) == []
    assert mv.watch is None
    for _ in range(50):
        assert mv.observe(False, T0 + 70_000) is None
    assert mv.version == "1.1"


def test_a_healthy_update_is_kept() -> None:
    mv = versions()
    mv.submit(update(version="1.1", rollback_policy="automatic"), "data", T0)
    for _ in range(100):
        assert mv.observe(True, T0 + 1) is None
    assert mv.version == "1.1"


def test_manual_policy_never_rolls_back_by_itself() -> None:
    mv = versions()
    mv.submit(update(version="1.1", rollback_policy="manual"), "data", T0)
    for _ in range(100):
        assert mv.observe(False, T0 + 1) is None
    assert mv.version == "1.1"


def test_manual_rollback_to_the_previous_and_to_a_named_version() -> None:
    mv = versions()
    mv.submit(update(0.91, version="1.1"), "data", T0)
    mv.submit(update(0.92, version="1.2"), "data", T0 + 1)
    change = mv.rollback(None, "body.version", T0 + 2)
    assert change.reason == "manual_rollback" and mv.version == "1.1"
    assert mv.matrix["cf"]["cpu_intensive"] == 0.91
    mv.rollback("1.0", "body.version", T0 + 3)
    assert mv.version == "1.0"
    assert mv.matrix["cf"]["cpu_intensive"] == STANDARD_MATRIX["cf"]["cpu_intensive"]


def test_cancel_a_scheduled_update() -> None:
    mv = versions()
    mv.submit(update(version="1.1", effective_date=T0 + 100), "data", T0)
    assert mv.cancel("1.1", "version").version == "1.1"
    assert mv.tick(T0 + 1000) == [] and mv.version == "1.0"
    with pytest.raises(InvalidPacket) as info:
        mv.cancel("1.1", "version")
    assert info.value.field == "version"


@pytest.mark.parametrize(
    ("data", "field", "rule"),
    [
        ({}, "data.matrix_updates", "required_field"),
        ({"matrix_updates": []}, "data.matrix_updates", "required_field"),
        ({"matrix_updates": {"cf": 1}}, "data.matrix_updates.cf", "type"),
        ({"matrix_updates": {"zz": {"cpu_intensive": 0.5}}}, "data.matrix_updates.zz",
         "matrix_update"),
        ({"matrix_updates": {"cf": {"cpu_intensive": 1.5}}},
         "data.matrix_updates.cf.cpu_intensive", "matrix_update"),
        (update(version=3), "data.version", "type"),
        (update(version="1.0"), "data.version", "unique_version"),
        (update(effective_date="tomorrow"), "data.effective_date", "type"),
        (update(effective_date=T0 * 1000), "data.effective_date", "range"),
        (update(rollback_policy="sometimes"), "data.rollback_policy", "enum"),
        (update(rollback_policy=7), "data.rollback_policy", "type"),
        (update(rollback_policy={"type": "x"}), "data.rollback_policy.type", "enum"),
        (update(rollback_policy={"success_rate_threshold": 2}),
         "data.rollback_policy.success_rate_threshold", "range"),
        (update(rollback_policy={"min_samples": 0}), "data.rollback_policy.min_samples",
         "range"),
        (update(rollback_policy={"observation_window_ms": "1m"}),
         "data.rollback_policy.observation_window_ms", "range"),
    ],
)  # fmt: skip
def test_bad_requests_are_pf002_naming_the_field(data: dict[str, Any], field: str,
                                                 rule: str) -> None:  # fmt: skip
    mv = versions()
    with pytest.raises(InvalidPacket) as info:
        mv.submit(data, "data", T0)
    assert info.value.code == "PF002"
    assert info.value.field == field
    assert info.value.validation_rule == rule
    assert mv.version == "1.0" and not mv.pending


@pytest.mark.parametrize(
    ("version", "rule"), [(None, "has_history"), ("1.0", "not_current"), ("9", "known_version"),
                          (5, "type")],
)  # fmt: skip
def test_bad_rollbacks_are_pf002(version: Any, rule: str) -> None:
    mv = versions()
    with pytest.raises(InvalidPacket) as info:
        mv.rollback(version, "body.version", T0)
    assert info.value.field == "body.version" and info.value.validation_rule == rule


def test_pending_updates_are_bounded() -> None:
    mv = versions()
    for i in range(MAX_PENDING):
        mv.submit(update(version=f"s{i}", effective_date=T0 + 1000 + i), "data", T0)
    with pytest.raises(InvalidPacket) as info:
        mv.submit(update(version="one-more", effective_date=T0 + 5000), "data", T0)
    assert info.value.validation_rule == "max_pending"


def test_versions_are_generated_without_reusing_one_in_use() -> None:
    mv = versions()
    mv.submit(update(effective_date=T0 + 100), "data", T0)  # 1.1, scheduled
    upd, _ = mv.submit(update(0.5), "data", T0)
    assert upd.version == "1.2"
