"""`packetflow up` supervises its children (hardening issue 14): a reactor or gateway that
dies comes back and re-links; one that keeps dying stops the cluster with exit status 1."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from .cluster import wait_for

TWO_REACTORS = ("-s", "cpu_intensive", "-s", "io_intensive")
START_S = 60.0  # generous: the machine is shared


class Up:
    """A `packetflow up` process, its stderr in a file (children inherit it)."""

    def __init__(self, tmp: Path) -> None:
        self.stderr_path = tmp / "stderr.txt"
        self._stderr = self.stderr_path.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "packetflow", "up", "--port", "0",
             "--data-dir", str(tmp / "data"), *TWO_REACTORS],
            stdout=subprocess.PIPE, stderr=self._stderr, text=True, cwd=tmp,
        )  # fmt: skip
        self.http = ""
        self.admin_key = tmp / "data" / "gateway" / "security" / "admin.key"

    def wait_ready(self) -> None:
        assert self.proc.stdout is not None
        lines: list[str] = []
        while not any(line.startswith("Ready.") for line in lines):
            line = self.proc.stdout.readline()
            assert line, f"packetflow up exited early: {self.stderr()}"
            lines.append(line)
        self.http = lines[0].split()[-1].replace("ws://", "http://").removesuffix("/ws")

    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def child(self, marker: str) -> psutil.Process | None:
        """The live child whose command line holds ``marker`` (a reactor id, "gateway")."""
        for c in psutil.Process(self.proc.pid).children():
            try:
                if marker in c.cmdline() and c.status() != psutil.STATUS_ZOMBIE:
                    return c
            except psutil.NoSuchProcess:
                continue
        return None

    def health(self) -> dict[str, str]:
        # `up`'s gateway is secure by default: its admin key is in its own data dir.
        key = self.admin_key.read_text().strip()
        request = urllib.request.Request(self.http + "/v1/reactors",
                                         headers={"X-PacketFlow-API-Key": key})  # fmt: skip
        with urllib.request.urlopen(request, timeout=5) as resp:
            rows = json.load(resp)["reactors"]
        return {r["reactor_id"]: r["health"] for r in rows}

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._stderr.close()


@pytest.fixture
def up(tmp_path: Path) -> Iterator[Up]:
    cluster = Up(tmp_path)
    try:
        yield cluster
    finally:
        cluster.close()


def _kill_and_wait_for_a_new_one(up: Up, marker: str) -> None:
    old = up.child(marker)
    assert old is not None, f"no child {marker}"
    os.kill(old.pid, signal.SIGKILL)
    wait_for(lambda: (c := up.child(marker)) is not None and c.pid != old.pid, START_S,
             f"{marker} to be restarted")  # fmt: skip


def test_a_killed_reactor_and_gateway_come_back_and_relink(up: Up) -> None:
    up.wait_ready()
    both = {"reactor-cpu-intensive": "healthy", "reactor-io-intensive": "healthy"}
    assert up.health() == both
    _kill_and_wait_for_a_new_one(up, "reactor-io-intensive")
    wait_for(lambda: up.health() == both, START_S, "the restarted reactor to be healthy")
    assert "reactor-io-intensive exited with signal SIGKILL; restarting in 0.5 s" in up.stderr()
    # The gateway comes back on the same port; both reactors re-link to it.
    _kill_and_wait_for_a_new_one(up, "gateway")
    wait_for(lambda: up.health() == both, START_S, "the reactors to re-link to the gateway")
    assert "gateway exited with signal SIGKILL; restarting in" in up.stderr()
    assert up.proc.poll() is None
    up.proc.send_signal(signal.SIGINT)
    assert up.proc.wait(30) == 0  # Ctrl-C is a clean stop
    assert "Traceback" not in up.stderr()


def test_a_reactor_that_keeps_dying_stops_the_cluster_with_a_failure(up: Up) -> None:
    up.wait_ready()
    for _ in range(4):  # restarts 1-4: 0.5, 1, 2, 4 s
        _kill_and_wait_for_a_new_one(up, "reactor-cpu-intensive")
    last = up.child("reactor-cpu-intensive")
    assert last is not None
    others = psutil.Process(up.proc.pid).children()
    os.kill(last.pid, signal.SIGKILL)  # the fifth exit within a minute
    assert up.proc.wait(START_S) == 1
    err = up.stderr()
    assert "reactor-cpu-intensive exited 5 times within 60 s; giving up" in err
    assert "restarting in 4 s (restart 4)" in err
    # Nothing is left behind.
    wait_for(lambda: not any(_alive(c) for c in others), 15.0, "the other children to stop")


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
