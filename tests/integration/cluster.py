"""Real gateway and reactor processes on 127.0.0.1 ephemeral ports, for integration tests."""

from __future__ import annotations

import json
import secrets
import shutil
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from subprocess import Popen
from typing import Any, TypeVar

from packetflow.cluster import read_ready, spawn, stop_all
from packetflow.protocol.authentication import API_KEY_HEADER, DIAL_TOKEN_HEADER

T = TypeVar("T")
START_TIMEOUT_S = 20.0


@dataclass
class Node:
    proc: Popen[bytes]
    url: str
    id: str
    role: str = "gateway"
    data_dir: Path | None = None
    accept_token: str | None = None  # a reactor's --accept-token-file content

    @property
    def http(self) -> str:
        return self.url.replace("ws://", "http://", 1).removesuffix("/ws")

    def auth_headers(self) -> dict[str, str]:
        """Credentials for a raw HTTP request or WebSocket upgrade to this node. Every test
        that talks to a node without the SDK takes its headers from here, so the tests
        follow whatever the node requires (DESIGN §8: security is on by default): a
        gateway's admin key from its data dir, a reactor's accept token."""
        if self.role == "reactor":
            return {DIAL_TOKEN_HEADER: self.accept_token} if self.accept_token else {}
        if self.data_dir is None:
            return {}
        key = self.data_dir / "security" / "admin.key"
        return {API_KEY_HEADER: key.read_text().strip()} if key.exists() else {}

    def get(self, path: str) -> Any:
        request = urllib.request.Request(self.http + path, headers=self.auth_headers())
        with urllib.request.urlopen(request, timeout=5) as resp:
            return json.load(resp)


def wait_for(predicate: Callable[[], T], timeout: float = 10.0, what: str = "condition") -> T:
    """Poll ``predicate`` until it returns something truthy, or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        try:
            value = predicate()
        except (OSError, ValueError, KeyError):
            value = None  # type: ignore[assignment]
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


@dataclass
class Cluster:
    nodes: list[Node] = field(default_factory=list)
    # Each node gets its own data dir unless the test names one, so parallel tests never
    # share a molecule journal (the journal is locked to one gateway) or df:save files.
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="pf-cluster-")))

    @property
    def accept_token_file(self) -> Path:
        """One token for this cluster's reactors: tests (and gateways given it as
        --reactor-token-file) may connect to them directly."""
        path = self.root / "accept.token"
        if not path.exists():
            path.write_text(secrets.token_urlsafe(32))
        return path

    def adopt(self, proc: Popen[bytes], what: str, role: str = "gateway",
              data_dir: Path | None = None) -> Node:  # fmt: skip
        """Wait for the ready line of ``proc`` (a packetflow process started with its stdout
        piped) and keep it as one of this cluster's nodes."""
        ready = read_ready(proc, START_TIMEOUT_S)
        if ready is None:
            stop_all([proc], 2)
            raise AssertionError(f"{what} did not start")
        token = self.accept_token_file.read_text() if role == "reactor" else None
        node = Node(proc, ready["url"], ready["id"], role, data_dir, token)
        self.nodes.append(node)
        return node

    def wait_linked(self, gateway: Node, reactor: Node) -> None:
        """Wait until ``gateway`` lists ``reactor`` as healthy."""
        wait_for(lambda: self.health_of(gateway, reactor.id) == "healthy", START_TIMEOUT_S,
                 f"reactor {reactor.id} to link")  # fmt: skip

    def _start(self, args: list[str]) -> Node:
        proc = spawn(["--log-level", "WARNING", *args], new_session=False)
        data_dir = Path(args[args.index("--data-dir") + 1]) if "--data-dir" in args else None
        return self.adopt(proc, f"packetflow {' '.join(args)}", args[0], data_dir)

    def _data_dir(self, args: tuple[str, ...]) -> list[str]:
        if "--data-dir" in args:
            return []
        path = self.root / f"node-{len(self.nodes)}"
        return ["--data-dir", str(path)]

    def gateway(self, *args: str) -> Node:
        return self._start(["gateway", "--port", "0", *self._data_dir(args), *args])

    def reactor(self, gateway: Node | None, *args: str, linked: bool = True) -> Node:
        extra = ["--gateway", gateway.url] if gateway is not None else []
        extra += ["--accept-token-file", str(self.accept_token_file)]
        node = self._start(["reactor", "--port", "0", *extra, *self._data_dir(args), *args])
        if gateway is not None and linked:
            self.wait_linked(gateway, node)
        return node

    @staticmethod
    def health_of(gateway: Node, reactor_id: str) -> str | None:
        for row in gateway.get("/v1/reactors")["reactors"]:
            if row["reactor_id"] == reactor_id:
                return str(row["health"])
        return None

    def stop(self) -> None:
        stop_all([n.proc for n in reversed(self.nodes)], 10)
        self.nodes.clear()
        shutil.rmtree(self.root, ignore_errors=True)
