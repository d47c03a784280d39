"""The ``packetflow`` command as a newcomer meets it: run as a subprocess against real
gateway and reactor processes; every failure is one line and a non-zero exit."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .cluster import Cluster, Node, wait_for

CLI_TIMEOUT_S = 60.0
ROOT = Path(__file__).resolve().parents[2]


def run_cli(*args: str, env: dict[str, str] | None = None,
            timeout: float = CLI_TIMEOUT_S) -> subprocess.CompletedProcess[str]:  # fmt: skip
    full = {**os.environ, "PYTHONWARNINGS": "error::ResourceWarning"}
    full.pop("PACKETFLOW_URL", None)
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", "packetflow", *args], capture_output=True,
                          text=True, env=full, timeout=timeout, check=False)  # fmt: skip


def assert_one_line(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    """Exit code 2 and a single line on stderr naming what to do; no traceback, no
    unclosed-session warning."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def gw(cluster: Cluster) -> Node:
    gateway = cluster.gateway()
    cluster.reactor(gateway, "--specialization", "general_purpose", "--id", "reactor-gp")
    return gateway


def host_port(node: Node) -> str:
    return node.url.removeprefix("ws://").removesuffix("/ws")


# ---------------------------------------------------------------- nothing listening


@pytest.mark.parametrize("form", ["ws://127.0.0.1:{p}/ws", "ws://127.0.0.1:{p}",
                                  "127.0.0.1:{p}", "http://127.0.0.1:{p}"])  # fmt: skip
def test_submit_to_nothing_is_one_line(form: str) -> None:
    proc = run_cli("submit", "cf", "ping", "--gateway", form.format(p=free_port()))
    assert_one_line(proc, "cannot reach", "is packetflow up running?")


@pytest.mark.parametrize("command", [["status"], ["reactors"], ["affinity"],
                                     ["molecule", "status", "m"], ["molecule", "abort", "m"],
                                     ["molecule", "run", "examples/molecules/"
                                      "data_processing_pipeline.json"]])  # fmt: skip
def test_every_client_command_to_nothing_is_one_line(command: list[str]) -> None:
    url = f"127.0.0.1:{free_port()}"
    proc = subprocess.run(
        [sys.executable, "-m", "packetflow", *command, "--url", url], capture_output=True,
        text=True, cwd=ROOT, timeout=CLI_TIMEOUT_S, check=False,
        env={**os.environ, "PYTHONWARNINGS": "error::ResourceWarning"},
    )  # fmt: skip
    assert_one_line(proc, "cannot reach", "is packetflow up running?")


def test_the_env_var_is_the_default_gateway() -> None:
    url = f"127.0.0.1:{free_port()}"
    proc = run_cli("submit", "cf", "ping", env={"PACKETFLOW_URL": url})
    assert_one_line(proc, f"ws://{url}/ws")


@pytest.mark.parametrize("address", ["ftp://127.0.0.1:1", "127.0.0.1:port", "ws://:80/ws"])
def test_a_bad_address_is_one_line(address: str) -> None:
    assert_one_line(run_cli("submit", "cf", "ping", "--gateway", address), repr(address))


def test_port_in_use_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = str(holder.getsockname()[1])
        for command in (["gateway"], ["up"]):
            proc = run_cli(*command, "--port", port, "--data-dir", str(tmp_path / "d"))
            assert_one_line(proc, f"port {port}", "in use", "--port")


def test_no_arguments_prints_help_and_exits_0() -> None:
    proc = run_cli()
    assert proc.returncode == 0, proc.stderr
    assert "Usage:" in proc.stdout and "submit" in proc.stdout


# ---------------------------------------------------------------- against a gateway


@pytest.mark.parametrize("form", ["{hp}", "ws://{hp}", "http://{hp}", "http://{hp}/",
                                  "ws://{hp}/ws"])  # fmt: skip
def test_every_address_form_reaches_the_gateway(gw: Node, form: str) -> None:
    proc = run_cli("submit", "cf", "ping", "--json", "--url", form.format(hp=host_port(gw)))
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["status"] == "success" and out["data"]["pong"] is True
    assert proc.stderr == ""


def test_a_path_other_than_ws_says_urls_end_in_ws(gw: Node) -> None:
    proc = run_cli("submit", "cf", "ping", "--gateway", f"ws://{host_port(gw)}/nope")
    assert_one_line(proc, "HTTP 404", "end in /ws")


def test_submit_pretty_and_json(gw: Node) -> None:
    env = {"PACKETFLOW_URL": gw.url}
    ok = run_cli("submit", "cf", "ping", env=env)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("success on reactor-gp")
    bad = run_cli("submit", "df", "transform", "--data", '{"operation": "uppercase"}', env=env)
    assert bad.returncode == 1
    first, *rest = bad.stderr.splitlines()
    assert first.startswith("PF002 validation_error: ")
    assert any("payload.packet.data.input" in line for line in rest)
    as_json = run_cli("submit", "df", "transform", "--json", "--data",
                      '{"operation": "uppercase"}', env=env)  # fmt: skip
    assert as_json.returncode == 1
    error = json.loads(as_json.stdout)["error"]
    assert error["error_code"] == "PF002"
    assert error["error_details"]["field"] == "payload.packet.data.input"


def test_molecule_status_of_an_unknown_id_reads_like_submit(gw: Node) -> None:
    env = {"PACKETFLOW_URL": gw.url}
    pretty = run_cli("molecule", "status", "nosuch", env=env)
    assert pretty.returncode == 1
    assert pretty.stderr.splitlines()[0].startswith("PF002 validation_error: ")
    as_json = run_cli("molecule", "status", "nosuch", "--json", env=env)
    assert as_json.returncode == 1
    error = json.loads(as_json.stdout)["error"]
    submit_error = json.loads(run_cli("submit", "df", "transform", "--json", env=env).stdout)
    assert set(error) == set(submit_error["error"])


def test_reactors_and_affinity(gw: Node) -> None:
    env = {"PACKETFLOW_URL": gw.url}
    reactors = run_cli("reactors", env=env)
    assert reactors.returncode == 0, reactors.stderr
    assert "reactor-gp" in reactors.stdout
    rows = json.loads(run_cli("reactors", "--json", env=env).stdout)
    assert [r["reactor_id"] for r in rows] == ["reactor-gp"]
    assert "adjustments" in rows[0]
    table = run_cli("affinity", env=env)
    assert table.returncode == 0, table.stderr
    assert "general_purpose" in table.stdout and "reactor-gp" in table.stdout
    body = json.loads(run_cli("affinity", "--json", env=env).stdout)
    assert body["matrix"]["cf"]["cpu_intensive"] == pytest.approx(0.9)
    assert set(body["adjustments"]) == {"reactor-gp"}


@pytest.fixture
def watcher(gw: Node) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "packetflow", "status", "--watch", "--interval", "0.2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PACKETFLOW_URL": gw.url},
    )  # fmt: skip
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def test_status_watch_refreshes_and_ctrl_c_exits_0(watcher: subprocess.Popen[str]) -> None:
    assert watcher.stdout is not None
    seen: list[str] = []

    def two_tables() -> bool:
        seen.append(watcher.stdout.readline())  # type: ignore[union-attr]
        return sum("reactor-gp" in line for line in seen) >= 2

    wait_for(two_tables, 60, "two refreshes of the status table")
    watcher.send_signal(signal.SIGINT)
    _, err = watcher.communicate(timeout=30)
    assert watcher.returncode == 0, err
    assert "Traceback" not in err


def test_molecule_run_progress_counts_failures_as_failed(gw: Node, tmp_path: Path) -> None:
    molecule = {
        "molecule_id": "m_fail",
        "packets": [
            {"id": "a", "group": "cf", "element": "ping"},
            {"id": "b", "group": "df", "element": "load",
             "data": {"source": "s3://bucket/x.csv"}},
            {"id": "c", "group": "cf", "element": "ping"},
        ],
        "bonds": [{"from": "a", "to": "b", "type": "ionic"},
                  {"from": "b", "to": "c", "type": "ionic"}],
        "properties": {"fault_tolerance": "isolate_and_continue"},
    }  # fmt: skip
    path = tmp_path / "m.json"
    path.write_text(json.dumps(molecule))
    proc = run_cli("molecule", "run", str(path), env={"PACKETFLOW_URL": gw.url},
                   timeout=180)  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    last = proc.stderr.strip().splitlines()
    progress = [line for line in last if line.startswith("m_fail: ")]
    assert progress, proc.stderr
    final = progress[-1]
    assert final.startswith("m_fail: 1 done, 1 failed, 1 skipped"), final
    assert "running" not in final
    assert "\n{}\n" not in proc.stdout + "\n"


SDK_UNREACHABLE = """
import asyncio, gc
import packetflow

async def main():
    try:
        async with packetflow.connect("127.0.0.1:{port}"):
            pass
    except packetflow.GatewayUnreachable as err:
        print("async", err.code)

asyncio.run(main())
try:
    with packetflow.connect_sync("http://127.0.0.1:{port}"):
        pass
except packetflow.GatewayUnreachable as err:
    print("sync", err.code)
gc.collect()
"""


def test_the_sdk_raises_gateway_unreachable_and_leaves_nothing_open() -> None:
    code = SDK_UNREACHABLE.format(port=free_port())
    proc = subprocess.run([sys.executable, "-W", "error::ResourceWarning", "-c", code],
                          capture_output=True, text=True, timeout=CLI_TIMEOUT_S,
                          check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["async", "PF502", "sync", "PF502"]
    assert proc.stderr == ""


def test_shell_completion_as_documented() -> None:
    proc = run_cli(env={"_PACKETFLOW_COMPLETE": "bash_source"})
    assert proc.returncode == 0, proc.stderr
    assert "_packetflow_completion" in proc.stdout
    words = run_cli(env={"_PACKETFLOW_COMPLETE": "bash_complete", "COMP_WORDS": "packetflow mol",
                         "COMP_CWORD": "1"})  # fmt: skip
    assert "molecule" in words.stdout
