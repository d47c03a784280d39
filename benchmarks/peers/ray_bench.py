"""Ray on the peer workloads, with a local Ray instance (2 CPUs) started and shut down here."""

from __future__ import annotations

import logging
import os
from typing import Any

# Read when ray is imported: no usage-stats report leaves the machine, and the node's address
# is the loopback one (Ray's single-machine mode; otherwise it would turn even an explicit
# 127.0.0.1 into the machine's outward address).
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import ray

from . import tasks
from .common import Peer, parse_args, report, run_all, sizes_from, versions

NUM_CPUS = 2
THROUGHPUT_TASKS = 20_000


# Default options: 1 CPU each, so NUM_CPUS of them run at once.
ping = ray.remote(tasks.ping)
upper = ray.remote(tasks.upper)
lower = ray.remote(tasks.lower)
reverse = ray.remote(tasks.reverse)
length = ray.remote(tasks.length)


@ray.remote
def aggregate(*values: int) -> int:
    # Ray resolves ObjectRefs to values only as top-level arguments: the pings come as *args.
    return tasks.aggregate(list(values))


def ping_many(n: int) -> list[Any]:
    return ray.get([ping.remote(i) for i in range(n)])


def ping_one(i: int) -> Any:
    return ray.get(ping.remote(i))


def run_chain(text: str) -> Any:
    # Each stage gets the previous stage's ObjectRef; Ray resolves it on the worker.
    return ray.get(length.remote(reverse.remote(lower.remote(upper.remote(text)))))


def fanout(n: int) -> Any:
    return ray.get(aggregate.remote(*[ping.remote(i) for i in range(n)]))


def main() -> None:
    args = parse_args("python -m benchmarks.peers.ray_bench", THROUGHPUT_TASKS)
    sizes = sizes_from(args)
    ray.init(
        address="local",  # always a new instance, never one found running on the machine
        num_cpus=NUM_CPUS,
        include_dashboard=False,
        logging_level=logging.WARNING,
        log_to_driver=False,
        _node_ip_address="127.0.0.1",
    )
    try:
        peer = Peer(
            "Ray",
            ping_many,
            ping_one,
            run_chain,
            fanout,
            settings={
                "cluster": f"ray.init(address='local', num_cpus={NUM_CPUS}, "
                "include_dashboard=False, _node_ip_address='127.0.0.1'): one local node, "
                "2 CPU slots (Ray runs one worker process per slot)",
                "tasks": "ray.remote(function), default options (num_cpus=1 each)",
                "many in flight": "[ping.remote(i) ...] then ray.get(refs)",
                "chain": "each stage's ObjectRef passed to the next .remote()",
                "fan-out": "aggregate.remote(*refs) over 1,000 ping refs",
            },
        )
        figures = run_all(peer, sizes)
    finally:
        ray.shutdown()
    report(peer, sizes, figures, versions("ray"), args.json)


if __name__ == "__main__":
    main()
