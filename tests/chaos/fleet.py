"""Starting the chaos suites' reactors and reading what the gateway says about them."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from packetflow.protocol.routing import ROUTABLE
from tests.integration.cluster import START_TIMEOUT_S, Cluster, Node, wait_for

from .chaos_elements import FINISHED, STARTED, runs

MODULE = "tests.chaos.chaos_elements"


def start_reactor(cluster: Cluster, gateway: Node, data: Path, reactor_id: str,
                  *extra: str) -> Node:  # fmt: skip
    """A reactor serving the chaos elements, sharing ``data`` with the others, started
    and routable (or already dead). A reactor restarted under the id of one that died
    comes back through §9.4.2 recovery (probation), which is routable, so that counts as
    linked too."""
    node = cluster.reactor(gateway, "--module", MODULE, "--data-dir", str(data),
                           "--id", reactor_id, *extra, linked=False)  # fmt: skip
    # A restarted reactor may take a poison packet and die before it is seen routable:
    # its exit ends the wait too, and the supervisor sees it dead and starts it again.
    wait_for(lambda: health_of(gateway, reactor_id) in ROUTABLE or node.proc.poll() is not None,
             START_TIMEOUT_S, f"reactor {reactor_id} to link")  # fmt: skip
    return node


def health_of(gateway: Node, reactor_id: str) -> str | None:
    row = rows(gateway).get(reactor_id)
    return str(row["health"]) if row is not None else None


def rows(gateway: Node) -> dict[str, dict[str, object]]:
    return {str(r["reactor_id"]): r for r in gateway.get("/v1/reactors")["reactors"]}


async def wait_async(predicate: object, timeout: float, what: str) -> object:
    """``wait_for`` off the event loop, so the loop keeps reading replies meanwhile."""
    return await asyncio.to_thread(wait_for, predicate, timeout, what)  # type: ignore[arg-type]


def sigkill(node: Node) -> None:
    os.kill(node.proc.pid, signal.SIGKILL)
    node.proc.wait(10)


def running_on(data: Path, reactor_id: str) -> set[str]:
    """Packets whose execution on ``reactor_id`` started and never finished, from the
    chaos elements' markers: what a reactor held when it was killed or stopped."""
    started, finished = runs(data, STARTED), runs(data, FINISHED)
    return {packet for packet, ids in started.items()
            if ids.count(reactor_id) > finished.get(packet, []).count(reactor_id)}  # fmt: skip


def http_json(node: Node, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """One HTTP request to ``node`` with its credentials; the status and the JSON body."""
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json", **node.auth_headers()}
    request = urllib.request.Request(node.http + path, data=data, method=method,
                                     headers=headers)  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)
