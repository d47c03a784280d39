"""The gateway's Prometheus metrics, in a registry of its own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.accepted = Counter("packetflow_gateway_packets_accepted", "Packets accepted",
                                registry=r)  # fmt: skip
        self.completed = Counter("packetflow_gateway_packets_completed",
                                 "Packets answered with a RESULT", registry=r)  # fmt: skip
        self.errors = Counter("packetflow_gateway_errors", "ERRORs answered, by PF code",
                              ["code"], registry=r)  # fmt: skip
        self.routed = Counter("packetflow_gateway_packets_routed", "Packets sent to a reactor",
                              ["reactor"], registry=r)  # fmt: skip
        self.failovers = Counter(
            "packetflow_gateway_failovers",
            "Packets moved to another reactor after a loss",
            registry=r,
        )
        self.retries = Counter("packetflow_gateway_retries",
                               "Packets retried with backoff after a retryable ERROR",
                               registry=r)  # fmt: skip
        self.queue_depth = Gauge("packetflow_gateway_queue_depth",
                                 "Packets waiting for a reactor slot", registry=r)  # fmt: skip
        self.latency = Histogram(
            "packetflow_gateway_packet_latency_seconds", "Accept-to-reply latency",
            registry=r,
            buckets=(0.0002, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                     1, 2.5, 5, 10, 30, 60),
        )  # fmt: skip
