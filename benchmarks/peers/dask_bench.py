"""Dask (distributed) on the peer workloads, with a LocalCluster started and closed here."""

from __future__ import annotations

import logging
from typing import Any

from dask.distributed import Client, LocalCluster

from . import tasks
from .common import Peer, parse_args, report, run_all, sizes_from, versions

N_WORKERS = 1
THREADS_PER_WORKER = 2
TIMEOUT = 300.0


def make_peer(client: Client) -> Peer:
    # The plain functions of tasks.py, submitted as they are. pure=False everywhere: Dask
    # would otherwise give equal calls equal keys and reuse a result still held from an
    # earlier call instead of running the task.
    def ping_many(n: int) -> list[Any]:
        return client.gather(client.map(tasks.ping, range(n), pure=False))

    def ping_one(i: int) -> Any:
        return client.submit(tasks.ping, i, pure=False).result(timeout=TIMEOUT)

    def run_chain(text: str) -> Any:
        future = client.submit(tasks.upper, text, pure=False)
        for stage in (tasks.lower, tasks.reverse, tasks.length):
            future = client.submit(stage, future, pure=False)  # a future as the argument
        return future.result(timeout=TIMEOUT)

    def fanout(n: int) -> Any:
        futures = client.map(tasks.ping, range(n), pure=False)
        return client.submit(tasks.aggregate, futures, pure=False).result(timeout=TIMEOUT)

    return Peer(
        "Dask",
        ping_many,
        ping_one,
        run_chain,
        fanout,
        settings={
            "cluster": f"LocalCluster(n_workers={N_WORKERS}, "
            f"threads_per_worker={THREADS_PER_WORKER}, processes=True, host='127.0.0.1', "
            "dashboard_address=None): the scheduler in the driver process, one worker "
            "process (with its nanny) running 2 task threads",
            "many in flight": "client.map(ping, range(n), pure=False) then client.gather",
            "chain": "client.submit(stage, previous_future, pure=False) × 4, then .result()",
            "fan-out": "client.submit(aggregate, <list of 1,000 futures>)",
        },
    )


def main() -> None:
    args = parse_args("python -m benchmarks.peers.dask_bench")
    sizes = sizes_from(args)
    with (
        LocalCluster(
            n_workers=N_WORKERS,
            threads_per_worker=THREADS_PER_WORKER,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            silence_logs=logging.WARNING,
        ) as cluster,
        Client(cluster) as client,
    ):
        peer = make_peer(client)
        figures = run_all(peer, sizes)
    report(peer, sizes, figures, versions("dask", "distributed", "tornado"), args.json)


if __name__ == "__main__":
    main()
