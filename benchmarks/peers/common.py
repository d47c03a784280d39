"""What the three peer benchmarks share: workload sizes, measuring and checking, statistics
and output."""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Any

# The same number format as packetflow's own table (that module imports no packetflow at load).
from benchmarks.__main__ import _num as fmt_number

# The workloads' sizes (the same for every peer; `--smoke` shrinks them to prove the code runs).
THROUGHPUT_TASKS = 2_000
LATENCY_TASKS = 500
CHAINS = 200
FANOUT = 1_000
RUNS = 5
CHAIN_INPUT = "packetflow-chain-{i}"

# Figure keys, in table order: (key, label, unit).
FIGURES: tuple[tuple[str, str, str], ...] = (
    ("throughput", "trivial task, many in flight (tasks/s)", "tasks/s"),
    ("latency_p50", "trivial task, one at a time, p50 (ms)", "ms"),
    ("latency_p99", "trivial task, one at a time, p99 (ms)", "ms"),
    ("chain", "4-stage chain, sequential (mean ms per chain)", "ms"),
    ("fanout", "fan-out + 1 aggregate, submit to result (s)", "s"),
)


def expected_chain(i: int) -> int:
    """What chain i's last stage returns: the length of the reversed, re-lowercased input."""
    return len(CHAIN_INPUT.format(i=i))


@dataclass
class Sizes:
    """How much work one run does (shrunk by --smoke)."""

    throughput: int
    latency: int
    chains: int
    fanout: int
    runs: int
    smoke: bool = False


@dataclass
class Peer:
    """One framework's way to run each workload once; the measuring and checking are here.

    ``ping_many(n)`` submits ``ping(0)`` … ``ping(n - 1)`` all at once and returns their results
    in order; ``ping_one(i)`` submits ``ping(i)`` and waits for its result; ``chain(text)`` runs
    upper → lower → reverse → length on ``text``, each stage consuming the previous stage's
    result, and returns the last one's; ``fanout(n)`` runs ``ping(0)`` … ``ping(n - 1)`` and
    one aggregate of all their results, and returns the aggregate's.
    """

    name: str
    ping_many: Callable[[int], list[Any]]
    ping_one: Callable[[int], Any]
    chain: Callable[[str], Any]
    fanout: Callable[[int], Any]
    settings: dict[str, Any] = field(default_factory=dict)


def parse_args(prog: str, throughput_default: int = THROUGHPUT_TASKS) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=prog)
    parser.add_argument("--json", action="store_true", help="print machine-readable results")
    parser.add_argument("--runs", type=int, default=RUNS, help="measured runs per figure")
    parser.add_argument(
        "--count",
        type=int,
        default=throughput_default,
        help=f"tasks in the many-in-flight throughput run (default {throughput_default:,})",
    )
    parser.add_argument("--smoke", action="store_true", help="tiny counts, 1 run: proves it works")
    return parser.parse_args()


def sizes_from(args: argparse.Namespace) -> Sizes:
    if args.smoke:
        return Sizes(throughput=100, latency=20, chains=5, fanout=50, runs=1, smoke=True)
    return Sizes(args.count, LATENCY_TASKS, CHAINS, FANOUT, args.runs)


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (the kernel's pick from the ephemeral range)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout:g} s")


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0–100) by the nearest-rank method."""
    ordered = sorted(values)
    rank = max(1, round(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def summary(samples: list[float]) -> dict[str, Any]:
    return {
        "median": statistics.median(samples),
        "min": min(samples),
        "max": max(samples),
        "samples": samples,
    }


def versions(*packages: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for name in packages:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    return found


def machine() -> str:
    return (
        f"{platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, {platform.system()}"
    )


def measure_throughput(ping_many: Callable[[int], list[Any]], n: int) -> float:
    """Tasks/s: n pings in flight at once, from the first submit until every result is in."""
    start = time.perf_counter()
    values = ping_many(n)
    elapsed = time.perf_counter() - start
    check(values == list(range(n)), "pings")
    return n / elapsed


def measure_one_at_a_time(call: Callable[[int], Any], n: int) -> list[float]:
    """The n latencies (s) of ``call(i)``: submit ``ping(i)``, wait for its result, repeat."""
    latencies: list[float] = []
    for i in range(n):
        start = time.perf_counter()
        value = call(i)
        latencies.append(time.perf_counter() - start)
        check(value == i, "ping")
    return latencies


def measure_chains(chain: Callable[[str], Any], n: int) -> float:
    """Mean seconds per 4-stage chain, over n chains run one after another."""
    start = time.perf_counter()
    for i in range(n):
        check(chain(CHAIN_INPUT.format(i=i)) == expected_chain(i), "chain")
    return (time.perf_counter() - start) / n


def measure_fanout(fanout: Callable[[int], Any], n: int) -> float:
    """Seconds from the first of n pings' submit to the result of their aggregate."""
    start = time.perf_counter()
    total = fanout(n)
    elapsed = time.perf_counter() - start
    check(total == n * (n - 1) // 2, "aggregate")
    return elapsed


def warm_up(peer: Peer) -> None:
    """A small pass of every workload: worker start-up, imports and connections are paid here."""
    measure_throughput(peer.ping_many, 200)
    measure_one_at_a_time(peer.ping_one, 50)
    measure_chains(peer.chain, 10)
    measure_fanout(peer.fanout, 100)


def run_all(peer: Peer, sizes: Sizes) -> dict[str, dict[str, Any]]:
    """Warm up, then ``sizes.runs`` rounds of all workloads, interleaved so that drift on a
    shared machine falls on every figure alike; each figure is the median of its rounds."""
    warm_up(peer)
    samples: dict[str, list[float]] = {key: [] for key, _, _ in FIGURES}
    for _ in range(sizes.runs):
        samples["throughput"].append(measure_throughput(peer.ping_many, sizes.throughput))
        latencies_ms = [s * 1000 for s in measure_one_at_a_time(peer.ping_one, sizes.latency)]
        samples["latency_p50"].append(percentile(latencies_ms, 50))
        samples["latency_p99"].append(percentile(latencies_ms, 99))
        samples["chain"].append(measure_chains(peer.chain, sizes.chains) * 1000)
        samples["fanout"].append(measure_fanout(peer.fanout, sizes.fanout))
    return {key: summary(values) for key, values in samples.items()}


def fmt_stats(stats: dict[str, Any] | None) -> str:
    if not stats:
        return "-"
    return f"{fmt_number(stats['median'])} ({fmt_number(stats['min'])}–{fmt_number(stats['max'])})"


def report(
    peer: Peer,
    sizes: Sizes,
    figures: dict[str, dict[str, Any]],
    packages: dict[str, str],
    as_json: bool,
) -> None:
    """Print one peer's results: a JSON object with --json, a short table otherwise."""
    result = {
        "peer": peer.name,
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine(),
        "versions": packages,
        "settings": peer.settings,
        "sizes": vars(sizes),
        "smoke": sizes.smoke,
        "figures": figures,
    }
    if as_json:
        print(json.dumps(result, indent=2))
        return
    smoke = " — SMOKE (not a measurement)" if sizes.smoke else ""
    print(f"{peer.name} — {result['date']} — {result['machine']}{smoke}")
    print("  " + ", ".join(f"{k} {v}" for k, v in packages.items()))
    for key, value in peer.settings.items():
        print(f"  {key}: {value}")
    print(
        f"  median of {sizes.runs} runs (min–max); {sizes.throughput:,} tasks in flight, "
        f"{sizes.latency} one at a time, {sizes.chains} chains, fan-out of {sizes.fanout:,}"
    )
    for key, label, _ in FIGURES:
        print(f"  {label:<52} {fmt_stats(figures.get(key))}")


def check(condition: bool, what: str) -> None:
    """Fail loudly when a framework returned a wrong result (a benchmark of wrong work is void)."""
    if not condition:
        raise RuntimeError(f"wrong result: {what}")
