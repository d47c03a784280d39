"""The gateway's security flags as a user meets them: a bad ``--security-config`` stops the
gateway at start naming the entry and position; the audit log lands in
DATA_DIR/security/audit.log by default."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import packetflow

from .cluster import Cluster, wait_for


def test_bad_abac_rule_stops_the_gateway_with_its_position(tmp_path: Path) -> None:
    config = tmp_path / "security.toml"
    config.write_text("[[abac.policy_rules]]\nrule_id = 'r1'\n"
                      "condition = \"packet.group == 'df' and (\"\naction = 'deny'\n")  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-m", "packetflow", "gateway", "--port", "0", "--data-dir",
         str(tmp_path / "gw"), "--security-config", str(config)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "abac.policy_rules[0] (r1)" in proc.stderr
    assert "unexpected end of expression at position 26" in proc.stderr


async def test_audit_log_defaults_to_the_gateway_data_dir(cluster: Cluster,
                                                          tmp_path: Path) -> None:  # fmt: skip
    data = tmp_path / "gw"
    gateway = cluster.gateway("--data-dir", str(data))
    cluster.reactor(gateway)
    payload = {"coordination_type": "initiate", "molecule_id": "mol-audited",
               "molecular_structure": {"packets": [{"id": "p", "group": "cf",
                                                    "element": "ping"}]}}  # fmt: skip
    async with packetflow.connect(gateway.url) as pf:
        async for msg in pf.coordinate(payload):
            if msg.payload.coordination_type in ("complete", "abort"):
                break
    log = data / "security" / "audit.log"

    def started() -> list[dict[str, object]]:
        lines = [json.loads(line) for line in log.read_text().splitlines()]
        return [a for a in lines if a["action"] == "molecule_start"]

    (line,) = wait_for(started, 10, "the molecule_start audit line")
    assert line["resource"] == "molecule:mol-audited"
    assert log.stat().st_mode & 0o777 == 0o600
    assert (data / "security").stat().st_mode & 0o777 == 0o700


def test_admin_http_action_is_audited_with_real_credentials(cluster: Cluster,
                                                            tmp_path: Path) -> None:  # fmt: skip
    data = tmp_path / "gw"
    gateway = cluster.gateway("--data-dir", str(data))
    body = json.dumps({"matrix_updates": {"cf": {"general_purpose": 0.8}}}).encode()
    request = urllib.request.Request(
        gateway.http + "/v1/affinity", data=body, method="PUT",
        headers={**gateway.auth_headers(), "Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=10) as resp:
        assert resp.status == 200
    log = data / "security" / "audit.log"

    def admin_lines() -> list[dict[str, object]]:
        lines = [json.loads(line) for line in log.read_text().splitlines()]
        return [a for a in lines if a["action"] == "admin_action"]

    (line,) = wait_for(admin_lines, 10, "the admin_action audit line")
    assert line["resource"] == "PUT /v1/affinity"
    assert line["user_id"] not in (None, "gateway")  # the key's principal
    assert line["source_ip"] == "127.0.0.1"
