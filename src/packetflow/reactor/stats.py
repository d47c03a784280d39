"""Real measurements a reactor reports: per-element latency and outcomes, rates, resources.

Feeds cf:health, HEARTBEAT (§4.2.4, §8.3), the announce's avg_processing_time_ms (§8.2)
and the Prometheus ``/metrics`` page. Every table here is bounded.
"""

from __future__ import annotations

import os
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import psutil
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Durations kept per element for percentiles; a ring, so memory is fixed.
LATENCY_SAMPLES = 1024
# Window for rates and the 5-minute error rate of §9.1.2.
RATE_WINDOW_S = 300.0
# Buckets of (second, count) kept for rates: one per second over the window.
_BUCKETS = int(RATE_WINDOW_S)


@dataclass(slots=True)
class ElementStats:
    processed: int = 0
    errors: int = 0
    total_ms: float = 0.0
    recent: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_SAMPLES))

    @property
    def avg_ms(self) -> float:
        return self.total_ms / self.processed if self.processed else 0.0


class _Rate:
    """Events per second over a sliding window of one-second buckets."""

    __slots__ = ("_buckets",)

    def __init__(self) -> None:
        self._buckets: deque[list[int]] = deque(maxlen=_BUCKETS)

    def add(self, now: float, n: int = 1) -> None:
        sec = int(now)
        if self._buckets and self._buckets[-1][0] == sec:
            self._buckets[-1][1] += n
        else:
            self._buckets.append([sec, n])

    def count(self, now: float, window_s: float) -> int:
        cutoff = now - window_s
        return sum(n for sec, n in self._buckets if sec >= cutoff)

    def per_second(self, now: float, window_s: float = 60.0) -> float:
        return self.count(now, window_s) / window_s


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    values = sorted(values)
    index = min(len(values) - 1, max(0, round(q * (len(values) - 1))))
    return values[index]


class ReactorStats:
    def __init__(self) -> None:
        self.started = time.monotonic()
        self.elements: dict[str, ElementStats] = {}
        self.errors_by_code: dict[str, int] = {}
        self.last_error: str | None = None
        self._done = _Rate()
        self._failed = _Rate()
        self._group_done: dict[str, _Rate] = {}
        self._process = psutil.Process(os.getpid())
        self._process.cpu_percent(None)  # prime: the first call always answers 0.0
        self.registry = CollectorRegistry()
        self.m_processed = Counter(
            "packetflow_packets_processed", "Packets finished by this reactor",
            ["group", "element", "status"], registry=self.registry,
        )  # fmt: skip
        self.m_errors = Counter(
            "packetflow_errors", "ERRORs answered, by PF code", ["code"], registry=self.registry
        )
        self.m_latency = Histogram(
            "packetflow_packet_latency_seconds", "Handler latency by group:element",
            ["element"], registry=self.registry,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5,
                     5, 10, 30, 60),
        )  # fmt: skip
        self.m_queue = Gauge("packetflow_queue_depth", "Packets waiting", registry=self.registry)
        self.m_in_flight = Gauge(
            "packetflow_in_flight", "Packets being processed", registry=self.registry
        )

    def record(self, group: str, element: str, duration_ms: float, error_code: str | None) -> None:
        now = time.monotonic()
        key = f"{group}:{element}"
        st = self.elements.get(key)
        if st is None:
            st = self.elements[key] = ElementStats()
        st.processed += 1
        st.total_ms += duration_ms
        st.recent.append(duration_ms)
        self._done.add(now)
        rate = self._group_done.get(group)
        if rate is None:
            rate = self._group_done[group] = _Rate()
        rate.add(now)
        status = "success"
        if error_code is not None:
            st.errors += 1
            status = "error"
            self._failed.add(now)
            self.record_error(error_code)
        self.m_processed.labels(group, element, status).inc()
        self.m_latency.labels(key).observe(duration_ms / 1000.0)

    def record_error(self, code: str, message: str | None = None) -> None:
        self.errors_by_code[code] = self.errors_by_code.get(code, 0) + 1
        self.m_errors.labels(code).inc()
        if message:
            self.last_error = message

    # ---- derived figures

    @property
    def processed(self) -> int:
        return sum(s.processed for s in self.elements.values())

    def uptime_s(self) -> float:
        return time.monotonic() - self.started

    def latency_summary(self) -> tuple[float, float]:
        samples = [d for s in self.elements.values() for d in s.recent]
        avg = sum(samples) / len(samples) if samples else 0.0
        return avg, _percentile(samples, 0.99)

    def error_rate(self, window_s: float = RATE_WINDOW_S) -> float:
        now = time.monotonic()
        done = self._done.count(now, window_s)
        return self._failed.count(now, window_s) / done if done else 0.0

    def throughput(self, window_s: float = 60.0) -> float:
        return self._done.per_second(time.monotonic(), min(window_s, max(1.0, self.uptime_s())))

    def group_rates(self) -> dict[str, float]:
        now = time.monotonic()
        window = min(60.0, max(1.0, self.uptime_s()))
        return {g: round(r.per_second(now, window), 3) for g, r in self._group_done.items()}

    def resources(self) -> dict[str, Any]:
        proc = self._process
        with proc.oneshot():
            mem = proc.memory_info().rss
            try:
                fds = proc.num_fds()
            except (AttributeError, psutil.Error):
                fds = 0
            try:
                conns = len(proc.net_connections(kind="inet"))
            except (psutil.Error, OSError):
                conns = 0
            cpu = proc.cpu_percent(None)
        vm = psutil.virtual_memory()
        disk = psutil.disk_usage(os.getcwd())
        return {
            "memory_usage_mb": round(mem / 2**20, 2),
            "memory_usage_percent": round(100.0 * mem / vm.total, 3),
            "system_memory_percent": vm.percent,
            "cpu_usage_percent": round(cpu, 2),
            "disk_usage_percent": disk.percent,
            "open_file_descriptors": fds,
            "network_connections": conns,
        }
