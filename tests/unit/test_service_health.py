"""protocol/service_health.py: the gateway's status and readiness from its counts
(DESIGN §2 GET /health, GET /health/ready)."""

from __future__ import annotations

import dataclasses

import pytest

from packetflow.protocol.service_health import (
    DEGRADED,
    HEALTHY,
    QUEUE_DEGRADED_FRACTION,
    UNHEALTHY,
    GatewayCounts,
    assess,
)

ALL_WELL = GatewayCounts(reactors=3, healthy=3, routable=3, queue_depth=0, max_queue=100,
                         in_flight=5, stopping=False)  # fmt: skip


def _assess(**changes: object) -> tuple[str, bool, tuple[str, ...]]:
    health = assess(dataclasses.replace(ALL_WELL, **changes))  # type: ignore[arg-type]
    return health.status, health.ready, health.reasons


def test_every_reactor_healthy_is_healthy_and_ready() -> None:
    assert _assess() == (HEALTHY, True, ())


def test_no_reactor_at_all_is_unhealthy_and_not_ready() -> None:
    status, ready, reasons = _assess(reactors=0, healthy=0, routable=0)
    assert (status, ready) == (UNHEALTHY, False)
    assert reasons == ("no reactor is registered",)


def test_registered_but_none_routable_is_unhealthy_and_not_ready() -> None:
    """The defect: /health said healthy with every reactor failed."""
    status, ready, reasons = _assess(healthy=0, routable=0)
    assert (status, ready) == (UNHEALTHY, False)
    assert "no routable reactor" in reasons[0]


def test_some_reactors_unwell_is_degraded_but_ready() -> None:
    status, ready, reasons = _assess(healthy=1, routable=2)
    assert (status, ready) == (DEGRADED, True)
    assert reasons == ("2 of 3 reactors not healthy",)


@pytest.mark.parametrize("depth", [80, 100, 150])
def test_a_nearly_full_queue_is_degraded_but_ready(depth: int) -> None:
    status, ready, reasons = _assess(queue_depth=depth)
    assert (status, ready) == (DEGRADED, True)
    assert reasons == (f"queue at {depth} of 100 packets",)


def test_a_queue_below_the_threshold_is_healthy() -> None:
    assert _assess(queue_depth=int(QUEUE_DEGRADED_FRACTION * 100) - 1)[0] == HEALTHY


def test_stopping_is_never_ready() -> None:
    status, ready, reasons = _assess(stopping=True)
    assert (status, ready) == (DEGRADED, False)
    assert "stopping" in reasons[0]
    assert _assess(stopping=True, routable=0, healthy=0)[:2] == (UNHEALTHY, False)


def test_a_zero_max_queue_never_divides() -> None:
    assert _assess(max_queue=0, queue_depth=0)[0] == HEALTHY
