"""The CPU figure a reactor's HEARTBEAT reports (§8.3 resource_utilization.cpu_percent)."""

from __future__ import annotations

import time

from packetflow.protocol.capacity import resource_constraints
from packetflow.protocol.messages import ResourceUtilization
from packetflow.reactor.stats import ReactorStats


def _spin(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_first_heartbeat_reports_no_cpu_figure() -> None:
    assert ReactorStats().heartbeat_cpu_percent() is None


def test_cpu_covers_the_whole_interval_whoever_else_reads_resources() -> None:
    """A cf:health probe (``resources()``) just before a heartbeat used to shorten the
    heartbeat's interval to its own burst: 100 % and cpu_pressure on an idle reactor."""
    stats = ReactorStats()
    stats.heartbeat_cpu_percent()
    deadline = time.monotonic() + 0.4
    while time.monotonic() < deadline:  # mostly idle: short bursts, long pauses
        _spin(0.002)
        time.sleep(0.02)
    stats.resources()  # the probe
    _spin(0.03)  # its burst
    cpu = stats.heartbeat_cpu_percent()
    assert cpu is not None and cpu < 60
    util = ResourceUtilization(cpu_percent=cpu)
    assert "cpu_pressure" not in resource_constraints(util)


def test_a_busy_interval_reads_busy() -> None:
    stats = ReactorStats()
    stats.heartbeat_cpu_percent()
    _spin(0.2)
    cpu = stats.heartbeat_cpu_percent()
    assert cpu is not None and cpu > 25  # ~100 % alone; other processes may share the core
