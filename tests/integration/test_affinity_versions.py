"""PFAP §6.4 affinity matrix updates at a real gateway with real reactors: an update with
an ``effective_date`` waits (visible as pending) and then takes effect, an admin rolls it
back by hand, and an update under an automatic ``rollback_policy`` rolls itself back when
the packets routed after it fail."""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

import pytest

import packetflow
from packetflow.protocol.errors import PacketFlowError

from .cluster import Cluster, Node, wait_for
from .test_gateway import _http

PROBE = ("--module", "tests.integration.probe_elements")


def whoami(url: str) -> str:
    with packetflow.connect_sync(url) as pf:
        return str(pf.submit("cf", "whoami", {}).data["reactor_id"])


def call(node: Node, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    return _http(node, method, node.http + path, body)


def field_of(body: Any) -> str:
    return str(body["error"]["error_details"]["field"])


def two_reactors(cluster: Cluster) -> Node:
    gateway = cluster.gateway()
    cluster.reactor(gateway, "--specialization", "cpu_intensive", "--id", "cpu", *PROBE)
    cluster.reactor(gateway, "--specialization", "memory_bound", "--id", "mem", *PROBE)
    return gateway


def test_scheduled_update_waits_then_applies_and_an_admin_rolls_it_back(
    cluster: Cluster,
) -> None:
    gateway = two_reactors(cluster)
    assert whoami(gateway.url) == "cpu"
    due = int(time.time() * 1000) + 1500
    status, out = call(gateway, "PUT", "/v1/affinity", {
        "matrix_updates": {"cf": {"memory_bound": 0.95}}, "version": "2.0",
        "effective_date": due, "rollback_policy": "manual",
    })  # fmt: skip
    assert status == 200, out
    assert out["applied"] is False and out["scheduled"] is True
    assert out["effective_at"] == due
    view = gateway.get("/v1/affinity")
    assert view["version"] == "1.0"
    assert [p["version"] for p in view["pending"]] == ["2.0"]
    assert view["pending"][0]["effective_date"] == due
    assert whoami(gateway.url) == "cpu"  # not applied at once

    cli = subprocess.run(
        [sys.executable, "-m", "packetflow", "affinity", "--url", gateway.url,
         "--api-key", gateway.auth_headers()["X-PacketFlow-API-Key"]],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    assert "scheduled: v2.0" in cli.stdout

    wait_for(lambda: gateway.get("/v1/affinity")["version"] == "2.0", 10, "the update")
    assert time.time() * 1000 >= due
    view = gateway.get("/v1/affinity")
    assert view["pending"] == [] and view["last_change"]["reason"] == "scheduled"
    assert whoami(gateway.url) == "mem"

    status, out = call(gateway, "POST", "/v1/affinity/rollback", {})
    assert status == 200, out
    assert out["version"] == "1.0" and out["previous_version"] == "2.0"
    assert out["reason"] == "manual_rollback"
    assert whoami(gateway.url) == "cpu"
    assert gateway.get("/v1/affinity")["history"][-1]["version"] == "2.0"


def test_bad_updates_and_rollbacks_are_pf002_naming_the_field(cluster: Cluster) -> None:
    gateway = cluster.gateway()
    update = {"matrix_updates": {"cf": {"memory_bound": 0.5}}}
    cases = [
        ("PUT", "/v1/affinity", {**update, "effective_date": "tomorrow"},
         "body.effective_date"),
        ("PUT", "/v1/affinity", {**update, "rollback_policy": "sometimes"},
         "body.rollback_policy"),
        ("PUT", "/v1/affinity", {**update, "rollback_policy": {"min_samples": -1}},
         "body.rollback_policy.min_samples"),
        ("PUT", "/v1/affinity", {**update, "version": "1.0"}, "body.version"),
        ("POST", "/v1/affinity/rollback", {"version": "9.9"}, "body.version"),
        ("POST", "/v1/affinity/rollback", {"version": 9}, "body.version"),
    ]  # fmt: skip
    for method, path, body, field in cases:
        status, out = call(gateway, method, path, body)
        assert status == 400, (body, out)
        assert out["error"]["error_code"] == "PF002"
        assert field_of(out) == field
    status, out = call(gateway, "DELETE", "/v1/affinity/pending/nope")
    assert status == 404 and field_of(out) == "version"
    assert gateway.get("/v1/affinity")["version"] == "1.0"
    with packetflow.connect_sync(gateway.url) as pf, pytest.raises(PacketFlowError) as info:
        pf.submit("mc", "update_affinity", {**update, "effective_date": -5.5})
    assert info.value.code == "PF002"
    assert info.value.field == "payload.packet.data.effective_date"


def test_a_scheduled_update_can_be_withdrawn(cluster: Cluster) -> None:
    gateway = cluster.gateway()
    due = int(time.time() * 1000) + 60_000
    status, _ = call(gateway, "PUT", "/v1/affinity", {
        "matrix_updates": {"cf": {"memory_bound": 0.5}}, "version": "later",
        "effective_date": due})  # fmt: skip
    assert status == 200
    status, out = call(gateway, "DELETE", "/v1/affinity/pending/later")
    assert status == 200 and out["cancelled"]["version"] == "later"
    assert gateway.get("/v1/affinity")["pending"] == []


def test_automatic_rollback_when_the_success_rate_falls(cluster: Cluster) -> None:
    gateway = two_reactors(cluster)
    policy = {"type": "automatic", "success_rate_threshold": 0.9, "min_samples": 4,
              "observation_window_ms": 60_000}  # fmt: skip
    with packetflow.connect_sync(gateway.url) as pf:
        res = pf.submit("mc", "update_affinity", {
            "matrix_updates": {"cf": {"memory_bound": 0.95}}, "version": "3.0",
            "rollback_policy": policy,
        })  # fmt: skip
        assert res.data["applied"] is True
        watch = gateway.get("/v1/affinity")["watch"]
        assert watch["version"] == "3.0" and watch["rollback_to"] == "1.0"
        for _ in range(4):
            if gateway.get("/v1/affinity")["version"] != "3.0":
                break
            with pytest.raises(PacketFlowError) as info:
                pf.submit("cf", "boom", {}, timeout_ms=1000)
            assert info.value.code in ("PF005", "PF504")
    view = wait_for(lambda: (v := gateway.get("/v1/affinity"))["version"] == "1.0" and v, 10,
                    "the automatic rollback")  # fmt: skip
    change = view["last_change"]
    assert change["reason"] == "automatic_rollback" and change["rolled_back"] == "3.0"
    assert change["success_rate"] < 0.9 and change["samples"] >= 4
    assert view["watch"] is None
    assert view["history"][-1]["reason"] == "automatic_rollback"
