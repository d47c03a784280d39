"""The JS reactor passes `packetflow conformance` (PFAP §12.3.1) on its own. The kit lands
on another branch: this runs as soon as `packetflow conformance --help` works."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys

import pytest

from tests.integration.cluster import Cluster

from .js import js_reactor, needs_node


def _conformance_kit_present() -> bool:
    try:
        probe = subprocess.run([sys.executable, "-m", "packetflow", "conformance", "--help"],
                               capture_output=True, timeout=60)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


pytestmark = [
    needs_node,
    pytest.mark.skipif(
        not _conformance_kit_present(), reason="`packetflow conformance` is not on this branch yet"
    ),
]


def test_js_reactor_passes_the_conformance_kit(cluster: Cluster) -> None:
    js = js_reactor(cluster, None, "--id", "reactor-js-conformance")
    proc = subprocess.run(
        [sys.executable, "-m", "packetflow", "conformance", js.url, "--role", "reactor",
         "--json", "--token-file", str(cluster.accept_token_file)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    report = proc.stdout
    if proc.returncode != 0:
        with contextlib.suppress(ValueError):
            report = json.dumps(json.loads(proc.stdout), indent=1)
    assert proc.returncode == 0, f"{report}\n{proc.stderr}"
