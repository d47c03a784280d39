"""Routing decision cost: ``RoutingTable.decide`` next to the reference ``routing.decide`` scan.

In-process, no sockets: N reactors all supporting cf:ping (mixed specializations,
implementations, capacities, loads and health), one decision per call. Between two
decisions one reactor's in-flight count changes, as the gateway's dispatches and
completions do (untimed). Each value is the median over many decisions (fewer for the
reference at 10,000 reactors), repeated ``runs`` times; the row shows the median, min and
max of those medians, in µs. ``python -m benchmarks.routing [--smoke] [--runs N]``.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from typing import Any

from packetflow.gateway.registry import ReactorRecord
from packetflow.protocol import routing
from packetflow.protocol.chemistry import SPECIALIZATIONS, STANDARD_MATRIX
from packetflow.protocol.routing_table import RoutingTable

SIZES = (10, 100, 1_000, 10_000)
# Issue 15's goals for a decision at 1,000 and 10,000 reactors.
ROUTING_GOALS_US = {1_000: 10.0, 10_000: 25.0}
IMPLEMENTATIONS = ("python", "elixir", "javascript", "zig")
EXTRA_CAPABILITIES = (("cf", "health"), ("df", "transform"), ("ed", "emit"), ("co", "sync"))
TABLE_DECISIONS = 2_000
# The reference scans every reactor: cap its decisions at ~200,000 reactor visits.
REFERENCE_VISITS = 200_000


def _fleet(n: int, rng: random.Random) -> tuple[RoutingTable, list[ReactorRecord]]:
    table = RoutingTable(STANDARD_MATRIX)
    records = []
    for i in range(n):
        capabilities = frozenset({("cf", "ping"), *rng.sample(EXTRA_CAPABILITIES, 2)})
        record = ReactorRecord(
            reactor_id=f"reactor-{i:05d}",
            specializations=tuple(rng.sample(SPECIALIZATIONS, rng.randint(1, 2))),
            implementation=rng.choice(IMPLEMENTATIONS),
            capabilities=capabilities,
            capacity=rng.choice((16, 50, 100)),
            endpoints={},
            locality=rng.choice(("dc-a", "dc-b")),
            reported_load=round(rng.uniform(0.0, 0.6), 3),
            health=rng.choice(("healthy",) * 8 + ("degraded", "unknown")),
        )
        record.in_flight = rng.randrange(record.capacity)
        if rng.random() < 0.2:
            record.adjustments["cf"] = round(rng.uniform(-0.2, 0.2), 3)
        records.append(record)
        table.add(record.reactor_id, record.specializations, record.implementation,
                  record.locality, record.capacity, record.capabilities)  # fmt: skip
        table.set_health(record.reactor_id, record.health)
        table.set_in_flight(record.reactor_id, record.in_flight)
        table.set_reported_load(record.reactor_id, record.reported_load)
        for group, value in record.adjustments.items():
            table.set_adjustment(record.reactor_id, group, value)
    return table, records


def _jiggle(table: RoutingTable, records: list[ReactorRecord], rng: random.Random) -> None:
    """A dispatch or a completion somewhere in the fleet."""
    record = rng.choice(records)
    record.in_flight = max(0, min(record.capacity, record.in_flight + rng.choice((-1, 1))))
    table.set_in_flight(record.reactor_id, record.in_flight)


def _median_decision_us(n: int, decisions: int, use_table: bool, seed: int) -> float:
    rng = random.Random(seed)
    table, records = _fleet(n, rng)
    clock = time.perf_counter
    samples = []
    for i in range(decisions):
        _jiggle(table, records, rng)
        if use_table:
            start = clock()
            table.decide("cf", "ping", priority=5, round_robin=i)
            samples.append(clock() - start)
        else:
            start = clock()
            routing.decide(records, group="cf", priority=5, matrix=STANDARD_MATRIX, round_robin=i)
            samples.append(clock() - start)
        if i < 3:  # the two must agree (tests/unit/test_routing_table.py proves it at length)
            want = routing.decide(
                records, group="cf", priority=5, matrix=STANDARD_MATRIX, round_robin=i
            )
            assert table.decide("cf", "ping", priority=5, round_robin=i) == want
    return statistics.median(samples) * 1e6


def _stats(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "runs": len(values)}  # fmt: skip


def routing_rows(runs: int, smoke: bool) -> list[dict[str, Any]]:
    """One row per fleet size: the table's median decision time vs the reference scan's."""
    rows = []
    for n in SIZES:
        table_count = 50 if smoke else TABLE_DECISIONS
        reference_count = 5 if smoke else max(20, min(TABLE_DECISIONS, REFERENCE_VISITS // n))
        table_us = [_median_decision_us(n, table_count, True, seed) for seed in range(runs)]
        reference_us = [
            _median_decision_us(n, reference_count, False, seed) for seed in range(runs)
        ]
        value, baseline = _stats(table_us), _stats(reference_us)
        rows.append({
            "figure": f"routing decision, {n:,} reactors (µs)",
            "value": value, "baseline_name": "routing.decide (reference scan)",
            "baseline": baseline, "ratio": value["median"] / baseline["median"],
            "goal": ROUTING_GOALS_US.get(n), "unit": "µs",
        })  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.routing")
    parser.add_argument("--smoke", action="store_true", help="tiny runs: prove it works")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    for row in routing_rows(1 if args.smoke else args.runs, args.smoke):
        v, b = row["value"], row["baseline"]
        print(f"{row['figure']}\n"
              f"  RoutingTable {v['median']:>10.2f} (min {v['min']:.2f}, max {v['max']:.2f})\n"
              f"  reference    {b['median']:>10.2f} (min {b['min']:.2f}, max {b['max']:.2f})\n"
              f"  ratio {row['ratio']:.2%}")  # fmt: skip


if __name__ == "__main__":
    main()
