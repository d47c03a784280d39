"""gateway/metrics.py: the table-size gauges read at scrape time."""

from __future__ import annotations

from prometheus_client import generate_latest

from packetflow.gateway.metrics import GatewayMetrics
from tests.prometheus import sample


def test_table_sizes_are_read_when_scraped() -> None:
    metrics = GatewayMetrics()
    table: dict[str, int] = {}
    metrics.tables["stories"] = lambda: len(table)
    metrics.tables["queued"] = lambda: 7
    first = generate_latest(metrics.registry).decode()
    assert sample(first, "packetflow_gateway_table_entries", table="stories") == 0
    assert sample(first, "packetflow_gateway_table_entries", table="queued") == 7
    table.update(a=1, b=2)
    again = generate_latest(metrics.registry).decode()
    assert sample(again, "packetflow_gateway_table_entries", table="stories") == 2


def test_no_tables_no_samples() -> None:
    text = generate_latest(GatewayMetrics().registry).decode()
    assert "packetflow_gateway_table_entries{" not in text
