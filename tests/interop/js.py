"""Start the Node.js reactor of interop/js-reactor as a cluster node, beside our own processes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from packetflow.protocol.authentication import API_KEY_HEADER
from tests.integration.cluster import Cluster, Node, wait_for

REPO = Path(__file__).resolve().parents[2]
REACTOR_JS = REPO / "interop" / "js-reactor" / "reactor.js"
NODE = shutil.which("node")
WS_INSTALLED = (REPO / "interop" / "js-reactor" / "node_modules" / "ws" / "package.json").exists()

needs_node = pytest.mark.skipif(
    NODE is None or not WS_INSTALLED,
    reason="the JavaScript reactor needs `node` on PATH and `npm ci --prefix interop/js-reactor`"
    " (scripts/test.sh runs it)",
)


def reactor_key(cluster: Cluster, gateway: Node) -> Path:
    """A reactor-role API key made with our CLI in the gateway's data dir (the gateway
    re-reads its key file, so no restart); the JS reactor reads it from this file."""
    path = cluster.root / f"js-{gateway.id}.key"
    if not path.exists():
        assert gateway.data_dir is not None
        out = subprocess.run(
            [sys.executable, "-m", "packetflow", "keys", "create", "--role", "reactor",
             "--label", "js-reactor", "--data-dir", str(gateway.data_dir)],
            check=True, capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        path.touch(mode=0o600)
        path.write_text(out.stdout.strip())
        # The gateway re-reads its key file within ~1 s: wait until it knows the key (a
        # reactor key gets 403 over HTTP, an unknown one 401) so the first announce counts.
        wait_for(lambda: _http_status(gateway, out.stdout.strip()) == 403, 20,
                 "the gateway to load the new reactor key")  # fmt: skip
    return path


def _http_status(gateway: Node, key: str) -> int:
    request = urllib.request.Request(gateway.http + "/v1/reactors", headers={API_KEY_HEADER: key})
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return int(err.code)


def js_reactor(cluster: Cluster, gateway: Node | None, *args: str, linked: bool = True) -> Node:
    """``node reactor.js`` on an ephemeral port; announced to ``gateway`` with a reactor
    key, and accepting the cluster's accept token so tests can talk to it directly."""
    assert NODE is not None
    env = dict(os.environ)
    cmd = [NODE, str(REACTOR_JS), "--port", "0",
           "--accept-token-file", str(cluster.accept_token_file), *args]  # fmt: skip
    if gateway is not None:
        cmd += ["--gateway", gateway.url]
        env["PACKETFLOW_API_KEY_FILE"] = str(reactor_key(cluster, gateway))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, env=env)
    node = cluster.adopt(proc, "node reactor.js", role="reactor")
    if gateway is not None and linked:
        cluster.wait_linked(gateway, node)
    return node
