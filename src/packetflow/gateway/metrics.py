"""The gateway's Prometheus metrics: plain counters on the hot path, turned into metric
families only when ``/metrics`` is scraped.

prometheus_client's own Counter takes a lock and a label lookup per increment, which cost
the gateway several percent of its time per packet; these keep the same small API
(``inc``, ``labels(...).inc``, ``observe``, ``set``) for a fraction of it.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.0002, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                   1.0, 2.5, 5.0, 10.0, 30.0, 60.0)  # fmt: skip
# DESIGN §6: every table is bounded, metric labels included.
MAX_LABELS = 10_000


class Count:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount


class LabelledCount:
    __slots__ = ("children",)

    def __init__(self) -> None:
        self.children: dict[str, Count] = {}

    def labels(self, label: str) -> Count:
        child = self.children.get(label)
        if child is None:
            if len(self.children) >= MAX_LABELS:
                label = "other"
                child = self.children.get(label)
            if child is None:
                child = self.children[label] = Count()
        return child


class Level:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def set(self, value: float) -> None:
        self.value = value


class Latency:
    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.total += seconds


class GatewayMetrics(Collector):
    def __init__(self) -> None:
        self.accepted = Count()
        self.completed = Count()
        self.failovers = Count()
        self.retries = Count()
        self.errors = LabelledCount()
        self.routed = LabelledCount()
        self.queue_depth = Level()
        self.latency = Latency()
        # Entries in each in-memory table, read when scraped: DESIGN §6 bounds every table,
        # and the soak suite (tests/chaos) watches these for growth.
        self.tables: dict[str, Callable[[], int]] = {}
        self.registry = CollectorRegistry()
        self.registry.register(self)

    def collect(self) -> Iterator[Metric]:
        for name, doc, count in (
            ("packetflow_gateway_packets_accepted", "Packets accepted", self.accepted),
            ("packetflow_gateway_packets_completed", "Packets answered with a RESULT",
             self.completed),
            ("packetflow_gateway_failovers", "Packets moved to another reactor after a loss",
             self.failovers),
            ("packetflow_gateway_retries",
             "Packets retried with backoff after a retryable ERROR", self.retries),
        ):  # fmt: skip
            family = CounterMetricFamily(name, doc)
            family.add_metric([], count.value)
            yield family
        for name, doc, label, labelled in (
            ("packetflow_gateway_errors", "ERRORs answered, by PF code", "code", self.errors),
            ("packetflow_gateway_packets_routed", "Packets sent to a reactor", "reactor",
             self.routed),
        ):  # fmt: skip
            family = CounterMetricFamily(name, doc, labels=[label])
            for key, count in sorted(labelled.children.items()):
                family.add_metric([key], count.value)
            yield family
        gauge = GaugeMetricFamily("packetflow_gateway_queue_depth",
                                  "Packets waiting for a reactor slot")  # fmt: skip
        gauge.add_metric([], self.queue_depth.value)
        yield gauge
        tables = GaugeMetricFamily("packetflow_gateway_table_entries",
                                   "Entries in each in-memory table", labels=["table"])  # fmt: skip
        for name, size in sorted(self.tables.items()):
            tables.add_metric([name], size())
        yield tables
        cumulative, buckets = 0, []
        for bound, seen in zip((*LATENCY_BUCKETS, float("inf")), self.latency.counts,
                               strict=True):  # fmt: skip
            cumulative += seen
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
        histogram = HistogramMetricFamily("packetflow_gateway_packet_latency_seconds",
                                          "Accept-to-reply latency")  # fmt: skip
        histogram.add_metric([], buckets, self.latency.total)
        yield histogram
