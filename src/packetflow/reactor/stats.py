"""Real measurements a reactor reports: per-element latency and outcomes, rates, resources.

Feeds cf:health, HEARTBEAT (§4.2.4, §8.3), the announce's avg_processing_time_ms (§8.2)
and the Prometheus ``/metrics`` page. Every table here is bounded: per-element tables by
the registry (only served elements are recorded), per-code tables by the §10.1 catalogue.

How ``/metrics`` works: the hot path only bumps plain counters here (one event loop, no
locks); a Prometheus collector turns them into metric families when ``/metrics`` is
scraped. prometheus_client's own metric objects take a lock and a label lookup on every
update, which cost more than the rest of a cf:ping.
"""

from __future__ import annotations

import math
import os
import time
from bisect import bisect_left
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from ..protocol.capacity import IoSample, io_utilization
from ..protocol.errors import counts_against_reactor

# Durations kept per element for percentiles; a ring, so memory is fixed.
LATENCY_SAMPLES = 1024
# Window for rates and the 5-minute error rate of §9.1.2.
RATE_WINDOW_S = 300.0
# Buckets of (second, count) kept for rates: one per second over the window.
_BUCKETS = int(RATE_WINDOW_S)
# §9.4.1 resource_exhaustion (memory 0.95 of the budget): past it the reactor answers new
# packets PF501 instead of running them into the kernel's OOM killer (cf and rm packets
# still run: probes, and the elements that free resources).
MEMORY_EXHAUSTED_PERCENT = 95.0
# How stale the memory figure admission judges by may be.
MEMORY_CHECK_INTERVAL_S = 1.0
# Molecule ids remembered to count distinct molecules (one seen again after this many
# others counts twice: a participation figure, not an audit).
RECENT_MOLECULES = 1024
# cgroup v2's memory limit of this process's container ("max" when unlimited).
CGROUP_MEMORY_MAX = "/sys/fs/cgroup/memory.max"
# Histogram bucket bounds in seconds: 0.5 ms (a cf:ping) up to a minute (§5.2 timeouts).
LATENCY_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                     2.5, 5.0, 10.0, 30.0, 60.0)  # fmt: skip


@dataclass(slots=True)
class ElementStats:
    processed: int = 0
    errors: int = 0
    total_ms: float = 0.0
    recent: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_SAMPLES))
    # Counts per LATENCY_BUCKETS_S bucket, not cumulative; the last is +Inf.
    buckets: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS_S) + 1))

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
        buckets = self._buckets
        if buckets and buckets[-1][0] == sec:
            buckets[-1][1] += n
        else:
            buckets.append([sec, n])

    def count(self, now: float, window_s: float) -> int:
        # Bucket ``sec`` holds [sec, sec + 1): it counts if any of it is inside the window,
        # so what happened in the last fraction of a second is never left out.
        cutoff = now - window_s - 1.0
        return sum(n for sec, n in self._buckets if sec > cutoff)

    def per_second(self, now: float, window_s: float = 60.0) -> float:
        return self.count(now, window_s) / window_s


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    values = sorted(values)
    index = min(len(values) - 1, max(0, round(q * (len(values) - 1))))
    return values[index]


def _zero() -> int:
    return 0


def memory_budget_bytes(limit_mb: float | None) -> int:
    """The memory this process may use: the machine's, lowered by a cgroup v2 limit (a
    container) and by the operator's ``limit_mb``. §9.4.1 resource exhaustion is judged
    against it: a reactor is exhausted when it nears its own budget."""
    budget = int(psutil.virtual_memory().total)
    try:
        raw = Path(CGROUP_MEMORY_MAX).read_text().strip()
    except OSError:
        raw = "max"
    if raw.isdigit():
        budget = min(budget, int(raw))
    if limit_mb is not None and limit_mb > 0:
        budget = min(budget, int(limit_mb * 2**20))
    return max(1, budget)


class ReactorStats:
    def __init__(self, memory_limit_mb: float | None = None) -> None:
        self.started = time.monotonic()
        self.memory_budget = memory_budget_bytes(memory_limit_mb)
        self.elements: dict[str, ElementStats] = {}
        self.errors_by_code: dict[str, int] = {}
        self.last_error: str | None = None
        self.processed = 0
        # §9.1.3 from what this reactor saw of molecules: packets that ran with an applied
        # §7.4 optimization, bonds ending at molecule packets it ran (held when the packet
        # succeeded, broken when it failed), and the molecules it took part in.
        self.optimized_packets = 0
        self.bonds_held = 0
        self.bonds_broken = 0
        self.molecules = 0
        self._recent_molecules: OrderedDict[str, None] = OrderedDict()
        self._done = _Rate()
        self._failed = _Rate()
        self._group_done: dict[str, _Rate] = {}
        # Live values read at scrape time (bound by the runtime that owns the queue).
        self.queue_depth: Callable[[], int] = _zero
        self.in_flight: Callable[[], int] = _zero
        self._memory_checked_at = -math.inf
        self._memory_percent = 0.0
        self._last_io: IoSample | None = None
        self._last_cpu: tuple[float, float] | None = None  # (monotonic s, CPU s used)
        self._nic_speeds: dict[str, float] = {}
        self._process = psutil.Process(os.getpid())
        self._process.cpu_percent(None)  # prime: the first call always answers 0.0
        self.registry = CollectorRegistry()
        self.registry.register(_StatsCollector(self))

    def bind(self, *, queue_depth: Callable[[], int], in_flight: Callable[[], int]) -> None:
        self.queue_depth = queue_depth
        self.in_flight = in_flight

    def record(
        self,
        key: str,
        group: str,
        duration_ms: float,
        error_code: str | None,
        retryable: bool = False,
    ) -> None:
        """One packet of ``key`` ("group:element") finished: a result or an error. Only
        errors that are the reactor's own (``protocol.errors.counts_against_reactor``)
        enter the error rate a HEARTBEAT reports; a client's bad input never does."""
        now = time.monotonic()
        st = self.elements.get(key)
        if st is None:
            st = self.elements[key] = ElementStats()
        st.processed += 1
        st.total_ms += duration_ms
        st.recent.append(duration_ms)
        st.buckets[bisect_left(LATENCY_BUCKETS_S, duration_ms / 1000.0)] += 1
        self.processed += 1
        self._done.add(now)
        rate = self._group_done.get(group)
        if rate is None:
            rate = self._group_done[group] = _Rate()
        rate.add(now)
        if error_code is not None:
            st.errors += 1
            if counts_against_reactor(error_code, retryable):
                self._failed.add(now)
            self.record_error(error_code)

    def record_molecule_packet(self, molecule_id: str, bonds: int, ok: bool) -> None:
        """A packet of molecule ``molecule_id`` with ``bonds`` incoming bonds finished."""
        if molecule_id in self._recent_molecules:
            self._recent_molecules.move_to_end(molecule_id)
        else:
            self.molecules += 1
            self._recent_molecules[molecule_id] = None
            if len(self._recent_molecules) > RECENT_MOLECULES:
                self._recent_molecules.popitem(last=False)
        if ok:
            self.bonds_held += bonds
        else:
            self.bonds_broken += bonds

    def bond_success_rate(self) -> float:
        """Held / all bonds ending at molecule packets run here; 1.0 before any (none
        broke)."""
        total = self.bonds_held + self.bonds_broken
        return self.bonds_held / total if total else 1.0

    def record_error(self, code: str, message: str | None = None) -> None:
        self.errors_by_code[code] = self.errors_by_code.get(code, 0) + 1
        if message:
            self.last_error = message

    # ---- derived figures

    def uptime_s(self) -> float:
        return time.monotonic() - self.started

    def latency_summary(self) -> tuple[float, float]:
        samples = [d for s in self.elements.values() for d in s.recent]
        avg = sum(samples) / len(samples) if samples else 0.0
        return avg, _percentile(samples, 0.99)

    def error_rate(self, window_s: float = RATE_WINDOW_S) -> float:
        """The reactor's own failures / packets finished over the window (§9.4.1)."""
        now = time.monotonic()
        done = self._done.count(now, window_s)
        return self._failed.count(now, window_s) / done if done else 0.0

    def throughput(self, window_s: float = 60.0) -> float:
        return self._done.per_second(time.monotonic(), min(window_s, max(1.0, self.uptime_s())))

    def group_rates(self) -> dict[str, float]:
        now = time.monotonic()
        window = min(60.0, max(1.0, self.uptime_s()))
        return {g: round(r.per_second(now, window), 3) for g, r in self._group_done.items()}

    def memory_exhausted(self, now: float) -> float | None:
        """The process's memory in percent of its budget when at or past
        MEMORY_EXHAUSTED_PERCENT (§9.4.1's 0.95), else None. Read at most once per
        MEMORY_CHECK_INTERVAL_S (``now``: time.monotonic()), so admission costs a
        comparison per packet."""
        if now - self._memory_checked_at >= MEMORY_CHECK_INTERVAL_S:
            self._memory_checked_at = now
            try:
                rss = self._process.memory_info().rss
            except psutil.Error:
                rss = 0
            self._memory_percent = 100.0 * rss / self.memory_budget
        used = self._memory_percent
        return round(used, 2) if used >= MEMORY_EXHAUSTED_PERCENT else None

    def io_utilization(self) -> tuple[float | None, float | None]:
        """§8.3 (disk_io_percent, network_io_percent) since the previous call (None on the
        first): the reactor calls this once per HEARTBEAT, so the figures cover the time
        between two heartbeats."""
        sample = _io_sample(self._nic_speeds)
        figures = io_utilization(self._last_io, sample)
        self._last_io = sample
        return figures

    def heartbeat_cpu_percent(self) -> float | None:
        """This process's CPU (percent of one core) since the previous call, None on the
        first: the reactor calls it once per HEARTBEAT, so the figure covers the whole
        time between two heartbeats. psutil's cpu_percent(None) measures since *any*
        caller's last call, and a cf:health probe a few ms before a heartbeat made that
        interval a burst reading 100 %: §8.3 cpu_pressure on an idle reactor, and the
        gateway halved its capacity."""
        times = self._process.cpu_times()
        sample = (time.monotonic(), times.user + times.system)
        last, self._last_cpu = self._last_cpu, sample
        if last is None or sample[0] <= last[0]:
            return None
        return round(100.0 * float(sample[1] - last[1]) / (sample[0] - last[0]), 2)

    def resources(self) -> dict[str, Any]:
        """Process and host figures from psutil: for reports, never per packet."""
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
            # Of this reactor's budget: HEARTBEAT memory_percent and cf:health's
            # memory_usage_percent, both judged by §9.4.1 resource exhaustion.
            "memory_usage_percent": round(100.0 * mem / self.memory_budget, 3),
            "system_memory_percent": vm.percent,
            "cpu_usage_percent": round(cpu, 2),
            "disk_usage_percent": disk.percent,
            "open_file_descriptors": fds,
            "network_connections": conns,
        }


def _io_sample(speeds: dict[str, float]) -> IoSample:
    """Cumulative disk busy time and network bytes (psutil: /proc/diskstats, /proc/net/dev).
    Link speeds are read once per interface into ``speeds`` (an ioctl each)."""
    try:
        disks = psutil.disk_io_counters(perdisk=True, nowrap=True) or {}
    except (OSError, RuntimeError):
        disks = {}
    busy = {name: int(getattr(d, "busy_time", 0)) for name, d in disks.items()}
    try:
        nics = psutil.net_io_counters(pernic=True, nowrap=True) or {}
    except (OSError, RuntimeError):
        nics = {}
    moved = {name: n.bytes_sent + n.bytes_recv for name, n in nics.items() if name != "lo"}
    if set(moved) - set(speeds):
        try:
            stats = psutil.net_if_stats()
        except OSError:
            stats = {}
        for name in moved:
            speeds[name] = float(stats[name].speed) if name in stats else 0.0
    return IoSample(time.monotonic(), busy, moved, {n: speeds.get(n, 0.0) for n in moved})


class _StatsCollector(Collector):
    """The ``/metrics`` families, built from ReactorStats when scraped."""

    def __init__(self, stats: ReactorStats) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        st = self._stats
        processed = CounterMetricFamily(
            "packetflow_packets_processed", "Packets finished by this reactor",
            labels=["group", "element", "status"],
        )  # fmt: skip
        latency = HistogramMetricFamily(
            "packetflow_packet_latency_seconds", "Handler latency by group:element",
            labels=["element"],
        )  # fmt: skip
        for key, el in list(st.elements.items()):
            group, _, element = key.partition(":")
            processed.add_metric([group, element, "success"], el.processed - el.errors)
            if el.errors:
                processed.add_metric([group, element, "error"], el.errors)
            cumulative, buckets = 0, []
            for bound, count in zip((*LATENCY_BUCKETS_S, float("inf")), el.buckets, strict=True):
                cumulative += count
                buckets.append((_le(bound), cumulative))
            latency.add_metric([key], buckets, el.total_ms / 1000.0)
        errors = CounterMetricFamily("packetflow_errors", "ERRORs answered, by PF code",
                                     labels=["code"])  # fmt: skip
        for code, count in sorted(st.errors_by_code.items()):
            errors.add_metric([code], count)
        yield processed
        yield errors
        yield latency
        yield GaugeMetricFamily("packetflow_queue_depth", "Packets waiting",
                                value=st.queue_depth())  # fmt: skip
        yield GaugeMetricFamily("packetflow_in_flight", "Packets being processed",
                                value=st.in_flight())  # fmt: skip


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))
