"""The HTTP API contract against real processes: GET /openapi.json and /docs are served
without credentials, and a schemathesis run against a live gateway (and its reactor)
finds no 5xx and no response outside the schema the gateway publishes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from .cluster import Cluster

# Per-operation examples and the whole run's time budget: enough to reach the handlers'
# error paths, bounded so the run stays a normal part of the suite on a loaded machine.
MAX_EXAMPLES = 20
MAX_TIME_S = 40
# A 5xx is a bug, except where PFAP itself answers one about a packet: PF005 (the reactor
# failed it, 502), PF003/PF503 (no reactor can serve it now, 503), PF504 (deadline, 504).
# Generated packets name elements no reactor serves, so those answers are expected there.
SCHEMATHESIS_CONFIG = """
[[operations]]
include-path = "/v1/packets"
include-method = "POST"
checks.not_a_server_error.expected-statuses = ["2xx", "3xx", "4xx", "502", "503", "504"]
"""
# No 5xx, every body in its schema, and no status or media type the document does not list.
CHECKS = ",".join((
    "not_a_server_error", "response_schema_conformance", "status_code_conformance",
    "content_type_conformance",
))  # fmt: skip
# /ws is documented (101) but is no HTTP request/response operation to fuzz.
EXCLUDED_PATHS = ("/ws",)


def _fetch(url: str, headers: dict[str, str] | None = None) -> tuple[int, str, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers.get("Content-Type", ""), err.read()


def test_openapi_and_docs_are_served_without_credentials(cluster: Cluster) -> None:
    gw = cluster.gateway()
    status, ctype, body = _fetch(gw.http + "/openapi.json")
    assert status == 200 and ctype.startswith("application/json")
    doc = json.loads(body)
    assert doc["openapi"].startswith("3.")
    assert "/v1/packets" in doc["paths"] and "/v1/molecules/{molecule_id}" in doc["paths"]
    status, ctype, body = _fetch(gw.http + "/docs")
    assert status == 200 and ctype.startswith("text/html") and b"/docs/docs.js" in body
    assert b"http://" not in body and b"https://" not in body  # nothing from elsewhere
    status, ctype, _ = _fetch(gw.http + "/docs/docs.js")
    assert status == 200 and "javascript" in ctype
    # The rest stays closed: the contract being open opens nothing else.
    assert _fetch(gw.http + "/v1/reactors")[0] == 401


def test_schemathesis_finds_no_server_error_and_no_schema_violation(
    cluster: Cluster, tmp_path: Path
) -> None:
    gw = cluster.gateway()
    cluster.reactor(gw)
    headers = [arg for k, v in gw.auth_headers().items() for arg in ("-H", f"{k}: {v}")]
    exclude = [arg for p in EXCLUDED_PATHS for arg in ("--exclude-path", p)]
    report = tmp_path / "junit.xml"
    config = tmp_path / "schemathesis.toml"
    config.write_text(SCHEMATHESIS_CONFIG)
    command = [
        sys.executable, "-m", "schemathesis.cli", "--config-file", str(config),
        "run", gw.http + "/openapi.json",
        "--checks", CHECKS,
        "--max-examples", str(MAX_EXAMPLES), "--max-time", str(MAX_TIME_S),
        "--request-timeout", "30", "--workers", "1", "--seed", "1",
        "--report", "junit", "--report-junit-path", str(report),
        *headers, *exclude,
    ]  # fmt: skip
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "", "NO_COLOR": "1"}
    # cwd: schemathesis keeps a cache of crashes in ./.schemathesis; not in the checkout.
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=MAX_TIME_S * 3, check=False)  # fmt: skip
    output = done.stdout[-8000:] + done.stderr[-4000:]
    assert done.returncode == 0, output
    # A run that tested nothing would pass as well: the report must list the operations.
    assert report.exists() and "/v1/packets" in report.read_text(), output


pytestmark = pytest.mark.timeout(MAX_TIME_S * 4)
