"""Molecules end to end (PFAP §7, DESIGN §7): real gateway and reactor processes, the
coordinator's COORDINATE and HTTP interfaces, the journal across a SIGKILL, the CLI and
the examples.

Most tests share one gateway and two reactors (module scope) that load the test elements
of ``slow_elements.py`` and share one data directory, so run markers count executions
across both reactors.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest

from packetflow.client import AsyncClient
from packetflow.protocol.errors import PacketFlowError
from packetflow.protocol.messages import Coordinate

from .cluster import Cluster, Node, wait_for
from .slow_elements import runs_of, safe_name

MODULE = "tests.integration.slow_elements"
EXAMPLES = Path(__file__).parents[2] / "examples" / "molecules"
RUN_TIMEOUT_S = 30.0
BAD_OP = {"input": "x", "operation": "no_such_operation"}  # df:transform: PF002, not retryable


@dataclass
class Molecules:
    gateway: Node
    reactors: list[Node]
    data: Path  # the reactors' shared data dir


@pytest.fixture(scope="module")
def mc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Molecules]:
    base = tmp_path_factory.mktemp("molecules")
    data = base / "reactor-data"
    cluster = Cluster()
    try:
        gateway = cluster.gateway("--data-dir", str(base / "gateway"))
        reactors = [
            cluster.reactor(gateway, "--module", MODULE, "--data-dir", str(data), "--id", rid)
            for rid in ("reactor-a", "reactor-b")
        ]
        yield Molecules(gateway, reactors, data)
    finally:
        cluster.stop()


def mid(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:6]}"


def pk(pid: str, element: str, data: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    return {"id": pid, "group": "df", "element": element, "data": data or {}, **extra}


def bond(src: str, dst: str, kind: str = "ionic", **extra: Any) -> dict[str, Any]:
    return {"from": src, "to": dst, "type": kind, **extra}


def initiate(
    molecule_id: str,
    packets: list[dict[str, Any]],
    bonds: list[dict[str, Any]] | None = None,
    **properties: Any,
) -> dict[str, Any]:
    return {
        "coordination_type": "initiate",
        "molecule_id": molecule_id,
        "molecular_structure": {"packets": packets, "bonds": bonds or [], "properties": properties},
    }


async def until_finished(stream: AsyncIterator[Coordinate]) -> list[dict[str, Any]]:
    """Every payload ``stream`` brings up to and including the complete or abort."""
    seen: list[dict[str, Any]] = []
    async for msg in stream:
        seen.append(msgspec.to_builtins(msg.payload))
        if seen[-1]["coordination_type"] in ("complete", "abort"):
            return seen
    raise AssertionError("stream ended without complete/abort")


async def run_ws(url: str, payload: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Initiate over /ws; every COORDINATE payload received, and the final one."""
    async with AsyncClient(url) as pf, asyncio.timeout(RUN_TIMEOUT_S):
        seen = await until_finished(pf.coordinate(payload))
    return seen, seen[-1]


async def ask(pf: AsyncClient, payload: dict[str, Any]) -> dict[str, Any]:
    """The first COORDINATE payload answering ``payload``."""
    msg = await anext(pf.coordinate(payload))
    body: dict[str, Any] = msgspec.to_builtins(msg.payload)
    return body


def overtook(seen: list[dict[str, Any]], done: str, running: str) -> bool:
    """Some progress update shows ``done`` completed while ``running`` was still active."""
    return any(
        done in p["execution_state"]["completed_packets"]
        and running in p["execution_state"]["active_packets"]
        for p in seen
        if p["coordination_type"] == "progress"
    )


async def expect_error(url: str, payload: dict[str, Any]) -> PacketFlowError:
    async with AsyncClient(url) as pf, asyncio.timeout(10):
        with pytest.raises(PacketFlowError) as info:
            async for _ in pf.coordinate(payload):
                pass
    return info.value


def http(node: Node, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json", **node.auth_headers()}
    req = urllib.request.Request(node.http + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=RUN_TIMEOUT_S) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def finished(node: Node, molecule_id: str) -> dict[str, Any] | None:
    status, body = http(node, "GET", f"/v1/molecules/{molecule_id}")
    if status == 200 and body["coordination_type"] in ("complete", "abort"):
        return dict(body)
    return None


# ---------------------------------------------------------------- the wire shape


async def test_coordinate_messages_correlate_to_the_initiate(mc: Molecules) -> None:
    """DESIGN §7: every COORDINATE about a molecule carries payload.molecule_id and
    correlation_id = the initiating message_id; progress has the wire example's shape."""
    m = mid("wire")
    envelope = {
        "protocol_version": "1.0",
        "message_type": "coordinate",
        "message_id": f"msg_{m}",
        "timestamp": 1640995200000,
        "source_id": "client-raw",
        "payload": initiate(
            m,
            [
                pk("load", "load", {"rows": [{"x": "a"}, {"x": "b"}]}),
                pk(
                    "upper",
                    "transform",
                    {"operation": "uppercase", "parameters": {"fields": ["x"]}},
                    dependencies=["load"],
                ),
            ],
        ),
    }
    frames: list[dict[str, Any]] = []
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(mc.gateway.url, headers=mc.gateway.auth_headers()) as ws,
    ):
        await ws.send_str(json.dumps(envelope))
        while True:
            frame = json.loads((await ws.receive(timeout=10)).data)
            frames.append(frame)
            if frame["payload"].get("coordination_type") in ("complete", "abort"):
                break
    assert all(f["message_type"] == "coordinate" for f in frames)
    assert all(f["correlation_id"] == f"msg_{m}" for f in frames)
    assert all(f["payload"]["molecule_id"] == m for f in frames)
    assert all(f["destination_id"] == "client-raw" for f in frames)
    kinds = [f["payload"]["coordination_type"] for f in frames]
    assert kinds[0] == "initiate" and kinds[-1] == "complete"
    assert "progress" in kinds
    ack = frames[0]["payload"]
    assert [s["packets"] for s in ack["execution_plan"]["stages"]] == [["load"], ["upper"]]
    progress = [f["payload"] for f in frames if f["payload"]["coordination_type"] == "progress"]
    last = progress[-1]
    state = last["execution_state"]
    for key in (
        "current_stage",
        "total_stages",
        "completed_packets",
        "active_packets",
        "pending_packets",
        "failed_packets",
        "stage_results",
    ):
        assert key in state
    assert state["total_stages"] == 2
    for key in ("elapsed_time_ms", "estimated_remaining_ms", "throughput_packets_per_second"):
        assert key in last["performance_metrics"]
    assert "estimated_completion" in last
    final = frames[-1]["payload"]
    assert final["status"] == "success"
    assert final["results"]["upper"]["result"] == [{"x": "A"}, {"x": "B"}]
    entry = final["execution_state"]["stage_results"]["load"]
    assert entry["status"] == "success" and entry["duration_ms"] >= 0


async def test_progress_updates_false_sends_the_ack_and_the_end_only(mc: Molecules) -> None:
    chain = [pk("a", "transform", {"input": "x", "operation": "uppercase"}),
             pk("b", "transform", {"operation": "lowercase"})]  # fmt: skip
    quiet = {**initiate(mid("quiet"), chain, [bond("a", "b")]), "progress_updates": False}
    seen, final = await run_ws(mc.gateway.url, quiet)
    assert [p["coordination_type"] for p in seen] == ["initiate", "complete"]
    assert final["status"] == "success" and final["results"]["b"]["result"] == "x"
    # A wrong type is refused before the molecule starts, naming the field.
    m = mid("quiet-bad")
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(mc.gateway.url, headers=mc.gateway.auth_headers()) as ws,
    ):
        await ws.send_str(json.dumps({
            "protocol_version": "1.0", "message_type": "coordinate", "message_id": f"msg_{m}",
            "timestamp": 1640995200000, "source_id": "client-raw",
            "payload": {**initiate(m, chain, [bond("a", "b")]), "progress_updates": "no"},
        }))  # fmt: skip
        reply = json.loads((await ws.receive(timeout=10)).data)
    assert reply["message_type"] == "error", reply
    assert reply["payload"]["error_code"] == "PF002"
    assert reply["payload"]["error_details"]["field"] == "payload.progress_updates"
    assert http(mc.gateway, "GET", f"/v1/molecules/{m}")[0] == 404


# ---------------------------------------------------------------- bond semantics


async def test_ionic_bond_passes_the_result_into_ctx_inputs(mc: Molecules) -> None:
    m = mid("ionic")
    _, final = await run_ws(
        mc.gateway.url,
        initiate(
            m,
            [
                pk("src", "load", {"rows": [{"n": 1}, {"n": 2}]}),
                pk("dst", "echo_inputs"),
            ],
            [bond("src", "dst")],
        ),
    )
    assert final["status"] == "success"
    inputs = final["results"]["dst"]["inputs"]
    assert inputs == {
        "src": {"result": [{"n": 1}, {"n": 2}], "rows_loaded": 2, "file_size_mb": 0.0}
    }
    assert final["results"]["dst"]["molecule_packet_id"] == "dst"


async def test_ionic_failure_skips_dependents(mc: Molecules) -> None:
    m = mid("skip")
    _, final = await run_ws(
        mc.gateway.url,
        initiate(
            m,
            [
                pk("bad", "transform", BAD_OP),
                pk("after", "echo_inputs"),
                pk("free", "echo_inputs"),
            ],
            [bond("bad", "after")],
            fault_tolerance="isolate_and_continue",
        ),
    )
    state = final["execution_state"]
    assert state["skipped_packets"] == ["after"]
    assert final["status"] == "partial"
    assert not runs_of(mc.data).get(safe_name(f"{m}:{_run_id(final)}:after"))


def _run_id(payload: dict[str, Any]) -> str:
    return str(payload["coordination_metadata"]["run_id"])


async def test_covalent_target_receives_the_error_on_the_same_reactor(mc: Molecules) -> None:
    m = mid("covalent")
    _, final = await run_ws(
        mc.gateway.url,
        initiate(
            m,
            [
                pk("bad", "transform", BAD_OP),
                pk("partner", "echo_inputs"),
            ],
            [bond("bad", "partner", "covalent")],
            fault_tolerance="isolate_and_continue",
        ),
    )
    assert final["status"] == "partial"
    got = final["results"]["partner"]["inputs"]["bad"]
    assert got["error"]["error_code"] == "PF002"
    assert got["error"]["error_details"]["field"] == "payload.packet.data.operation"
    stage = final["execution_state"]["stage_results"]
    assert stage["bad"]["reactor_id"] == final["results"]["partner"]["reactor_id"]


async def test_metallic_target_never_waits(mc: Molecules) -> None:
    m = mid("metallic")
    seen, final = await run_ws(
        mc.gateway.url,
        initiate(
            m,
            [
                pk("slow", "sleep", {"seconds": 1.0}),
                pk("eager", "echo_inputs"),
            ],
            [bond("slow", "eager", "metallic")],
        ),
    )
    assert final["status"] == "success"
    assert final["results"]["eager"]["inputs"] == {}  # the source was not done yet
    assert overtook(seen, "eager", "slow")


async def test_vdw_observer_never_changes_the_status(mc: Molecules) -> None:
    m = mid("vdw")
    seen, final = await run_ws(
        mc.gateway.url,
        initiate(
            m,
            [
                pk("main", "load", {"rows": [1, 2, 3]}),
                pk("broken_observer", "transform", BAD_OP),
                pk("observer", "echo_inputs"),
            ],
            [bond("main", "broken_observer", "vdw"), bond("main", "observer", "vdw")],
        ),
    )
    assert final["status"] == "success"
    assert final["execution_state"]["failed_packets"] == ["broken_observer"]
    assert final["results"]["observer"]["inputs"]["main"]["result"] == [1, 2, 3]
    # Observers start only after their source finished (vdw waits, DESIGN §7).
    for p in seen:
        state = p.get("execution_state") or {}
        if "observer" in state.get("active_packets", []):
            assert "main" in state["completed_packets"]


# ---------------------------------------------------------------- fault tolerance


async def test_fail_fast_stops_the_molecule(mc: Molecules) -> None:
    m = mid("failfast")
    _, final = await run_ws(
        mc.gateway.url,
        initiate(
            m,
            [
                pk("ok", "load", {"rows": [1]}),
                pk("bad", "transform", BAD_OP),
                pk("after", "echo_inputs"),
                pk("long", "sleep", {"seconds": 20}),
            ],
            [bond("ok", "bad"), bond("bad", "after")],
        ),
    )
    assert final["coordination_type"] == "complete"
    assert final["status"] == "failed"
    assert final["error"]["error_code"] == "PF002"
    state = final["execution_state"]
    assert state["failed_packets"] == ["bad"]
    assert set(state["aborted_packets"]) == {"after", "long"}
    assert final["performance_metrics"]["elapsed_time_ms"] < 10_000


async def test_retry_failed_stages_retries_retryable_failures(mc: Molecules) -> None:
    """A PF005 packet is retried by the molecule (timeout_ms 850 keeps the gateway's own
    1 s-backoff retries out of the way); a PF002 one is not retried."""
    m = mid("retry")
    _, final = await run_ws(
        mc.gateway.url,
        initiate(
            m,
            [
                pk("flaky", "flaky", {"fail_times": 2}, timeout_ms=850),
            ],
            fault_tolerance="retry_failed_stages",
            max_retries=3,
        ),
    )
    assert final["status"] == "success"
    assert final["execution_state"]["stage_results"]["flaky"]["attempts"] == 3
    assert len(final["results"]["flaky"]["attempts_by"]) == 3
    assert final["execution_state"]["retry_attempts"] == 2

    m2 = mid("noretry")
    _, final = await run_ws(
        mc.gateway.url,
        initiate(m2, [pk("bad", "transform", BAD_OP)], fault_tolerance="retry_failed_stages"),
    )
    assert final["status"] == "failed"
    assert final["execution_state"]["stage_results"]["bad"]["attempts"] == 1


async def test_isolate_and_continue_keeps_partial_results(mc: Molecules) -> None:
    m = mid("isolate")
    _, final = await run_ws(
        mc.gateway.url,
        initiate(
            m,
            [
                pk("a", "load", {"rows": [1]}),
                pk("bad", "transform", BAD_OP),
                pk("b", "echo_inputs"),
                pk("c", "echo_inputs"),
            ],
            [bond("a", "b"), bond("bad", "c")],
            fault_tolerance="isolate_and_continue",
        ),
    )
    assert final["status"] == "partial"
    assert set(final["results"]) == {"a", "b"}
    assert final["execution_state"]["errors"]["bad"]["error_code"] == "PF002"
    assert final["execution_state"]["skipped_packets"] == ["c"]


async def test_healing_retries_on_another_reactor(mc: Molecules) -> None:
    """§10.4.2 replace_failed_packets: one more attempt, on a different reactor."""
    m = mid("heal")
    _, final = await run_ws(
        mc.gateway.url,
        initiate(
            m,
            [
                # Under the gateway's first retry delay (1 s ± 10 %), so the second
                # attempt is healing's, not the gateway's; as long as that allows, since
                # a loaded CI machine can stall an attempt for a good part of a second.
                pk("flaky", "flaky", {"fail_times": 1}, timeout_ms=850),
            ],
            healing=True,
        ),
    )
    assert final["status"] == "success"
    first, second = final["results"]["flaky"]["attempts_by"]
    assert first != second


async def test_healing_converts_remaining_ionic_bonds(mc: Molecules) -> None:
    """§10.4.2 bond_type_conversion: past 20 % failures, pending ionic bonds become
    metallic, so a target no longer waits for its slow source."""
    m = mid("convert")
    seen, final = await run_ws(
        mc.gateway.url,
        initiate(
            m,
            [
                pk("bad", "transform", BAD_OP),
                pk("slow", "sleep", {"seconds": 1.5}),
                pk("target", "echo_inputs"),
            ],
            [bond("slow", "target")],
            fault_tolerance="isolate_and_continue",
            healing=True,
        ),
    )
    assert final["status"] == "partial"
    assert final["execution_state"]["bonds_converted"] is True
    assert final["results"]["target"]["inputs"] == {}
    assert overtook(seen, "target", "slow")


async def test_molecule_timeout_completes_with_status_timeout(mc: Molecules) -> None:
    m = mid("timeout")
    _, final = await run_ws(
        mc.gateway.url, initiate(m, [pk("slow", "sleep", {"seconds": 20})], timeout_ms=300)
    )
    assert final["coordination_type"] == "complete"
    assert final["status"] == "timeout"
    assert final["error"]["error_code"] == "PF504"


# ---------------------------------------------------------------- abort


async def test_client_abort_cancels_running_packets(mc: Molecules) -> None:
    m = mid("abort")
    url = mc.gateway.url
    payload = initiate(
        m, [pk("slow", "sleep", {"seconds": 20}), pk("next", "echo_inputs")], [bond("slow", "next")]
    )
    async with AsyncClient(url) as watcher, AsyncClient(url) as other:
        stream = watcher.coordinate(payload)
        first = msgspec.to_builtins((await anext(stream)).payload)
        assert first["coordination_type"] == "initiate"
        answer = await ask(other, {"coordination_type": "abort", "molecule_id": m})
        assert answer["coordination_type"] == "abort"
        assert answer["status"] == "aborted"
        async with asyncio.timeout(10):
            body = (await until_finished(stream))[-1]
        assert body["coordination_type"] == "abort"
        assert body["status"] == "aborted"
        assert set(body["execution_state"]["aborted_packets"]) == {"slow", "next"}

        # Aborting a finished or unknown molecule: PF002 naming payload.molecule_id.
        for target, rule in ((m, "molecule_running"), ("no-such-molecule", "known_molecule")):
            with pytest.raises(PacketFlowError) as info:
                await anext(other.coordinate({"coordination_type": "abort", "molecule_id": target}))
            assert info.value.code == "PF002"
            assert info.value.field == "payload.molecule_id"
            assert info.value.validation_rule == rule
            assert target in info.value.message


def test_http_api_runs_queries_and_aborts(mc: Molecules) -> None:
    gw = mc.gateway
    m = mid("http")
    structure = {
        "molecule_id": m,
        "packets": [pk("a", "load", {"rows": [1, 2]}), pk("b", "echo_inputs", dependencies=["a"])],
    }
    status, body = http(gw, "POST", "/v1/molecules?wait=true", structure)
    assert status == 200, body
    assert body["coordination_type"] == "complete" and body["status"] == "success"
    assert body["results"]["b"]["inputs"]["a"]["result"] == [1, 2]
    status, body = http(gw, "GET", f"/v1/molecules/{m}")
    assert status == 200 and body["status"] == "success"
    assert any(row["molecule_id"] == m for row in http(gw, "GET", "/v1/molecules")[1]["molecules"])
    # Finished: DELETE is 409; unknown: 404; both PFAP ERROR envelopes naming the id.
    status, body = http(gw, "DELETE", f"/v1/molecules/{m}")
    assert status == 409 and body["payload"]["error_code"] == "PF002"
    assert body["payload"]["error_details"]["field"] == "molecule_id"
    status, body = http(gw, "DELETE", "/v1/molecules/nope")
    assert status == 404 and body["payload"]["error_details"]["molecule_id"] == "nope"
    assert http(gw, "GET", "/v1/molecules/nope")[0] == 404

    # 202 then abort over HTTP.
    m2 = mid("http-abort")
    status, body = http(
        gw,
        "POST",
        "/v1/molecules",
        {
            "coordination_type": "initiate",
            "molecule_id": m2,
            "molecular_structure": {"packets": [pk("slow", "sleep", {"seconds": 20})]},
        },
    )
    assert status == 202 and body["molecule_id"] == m2 and body["status"] == "accepted"
    # The same id while it runs is refused; after it finished it may run again.
    again = {"molecule_id": m2, "packets": [pk("x", "load", {"rows": []})]}
    status, body = http(gw, "POST", "/v1/molecules", again)
    assert status == 409 and body["payload"]["error_code"] == "PF002", body
    status, body = http(gw, "DELETE", f"/v1/molecules/{m2}")
    assert status == 200 and body["status"] == "aborted"
    status, body = http(gw, "POST", "/v1/molecules", again)
    assert status == 202


# ---------------------------------------------------------------- bad input


BAD_STRUCTURES: list[tuple[str, dict[str, Any], str, str, str]] = [
    # name, structure, code, field, validation rule
    (
        "cycle",
        {
            "packets": [pk("a", "sleep"), pk("b", "sleep"), pk("c", "sleep")],
            "bonds": [bond("a", "b"), bond("b", "c"), bond("c", "a")],
        },
        "PF102",
        "payload.molecular_structure.bonds[2]",
        "acyclic",
    ),
    (
        "dangling",
        {"packets": [pk("a", "sleep")], "bonds": [bond("a", "ghost")]},
        "PF102",
        "payload.molecular_structure.bonds[0].to",
        "known_packet",
    ),
    (
        "duplicate",
        {"packets": [pk("a", "sleep"), pk("a", "sleep")]},
        "PF002",
        "payload.molecular_structure.packets[1].id",
        "unique",
    ),
    (
        "bond_type",
        {"packets": [pk("a", "sleep"), pk("b", "sleep")], "bonds": [bond("a", "b", "hydrogen")]},
        "PF002",
        "payload.molecular_structure.bonds[0].type",
        "enum",
    ),
    (
        "strength",
        {"packets": [pk("a", "sleep"), pk("b", "sleep")], "bonds": [bond("a", "b", strength=1.5)]},
        "PF002",
        "payload.molecular_structure.bonds[0].strength",
        "range",
    ),
    (
        "too_big",
        {"packets": [pk(f"p{i}", "sleep") for i in range(1025)]},
        "PF002",
        "payload.molecular_structure.packets",
        "max_molecule_size",
    ),
    (
        "unsupported",
        {"packets": [pk("a", "sleep"), {"id": "b", "group": "cf", "element": "provision"}]},
        "PF003",
        "payload.molecular_structure.packets[1].element",
        "",
    ),
]


@pytest.mark.parametrize(
    ("name", "structure", "code", "field", "rule"),
    BAD_STRUCTURES,
    ids=[b[0] for b in BAD_STRUCTURES],
)
async def test_bad_molecules_are_refused_before_anything_runs(
    mc: Molecules, name: str, structure: dict[str, Any], code: str, field: str, rule: str
) -> None:
    m = mid(f"bad-{name}")
    before = runs_of(mc.data)
    err = await expect_error(
        mc.gateway.url,
        {"coordination_type": "initiate", "molecule_id": m, "molecular_structure": structure},
    )
    assert err.code == code
    assert err.field == field
    if rule:
        assert err.validation_rule == rule
    if name == "cycle":
        assert err.details["cycle"] == ["a", "b", "c", "a"]
    if name == "unsupported":
        assert err.details["unsupported"] == ["cf:provision"]
    assert runs_of(mc.data) == before
    assert http(mc.gateway, "GET", f"/v1/molecules/{m}")[0] == 404


# ---------------------------------------------------------------- §7.3 phases, §7.4


async def test_validate_runs_the_checks_it_is_asked_for_7_3(mc: Molecules) -> None:
    structure = {
        "packets": [pk("a", "load", {"rows": [1]}), pk("b", "echo_inputs"), pk("c", "echo_inputs")],
        "bonds": [bond("a", "b"), bond("a", "c")],
    }
    m = mid("plan")
    huge = {"memory_mb": 16 * 2**20, "cpu_cores": 1}
    async with AsyncClient(mc.gateway.url) as pf:
        ok = await ask(pf, {"coordination_type": "validate", "molecule_id": m,
                            "molecular_structure": structure})  # fmt: skip
        assert ok["status"] == "valid"
        assert [r["check"] for r in ok["validation_results"]] == [
            "packet_availability", "bond_consistency", "reactor_compatibility",
            "resource_requirements", "circular_dependency_detection",
        ]  # fmt: skip
        assert all(r["passed"] for r in ok["validation_results"])
        stages = ok["execution_plan"]["stages"]
        assert [s["packets"] for s in stages] == [["a"], ["b", "c"]]

        big = {
            **structure,
            "packets": [
                *structure["packets"][:2],
                pk("c", "echo_inputs", resource_requirements=huge),
            ],
        }
        bad = await ask(
            pf,
            {
                "coordination_type": "validate",
                "molecule_id": m,
                "molecular_structure": big,
                "validation_checks": ["resource_requirements", "bond_consistency"],
            },
        )
        assert bad["status"] == "invalid"
        results = {r["check"]: r for r in bad["validation_results"]}
        assert set(results) == {"resource_requirements", "bond_consistency"}
        assert results["bond_consistency"]["passed"] is True
        failed = results["resource_requirements"]
        assert failed["passed"] is False and failed["error_code"] == "PF501"
        assert failed["problems"][0]["packet_id"] == "c"
        assert bad["error"]["error_code"] == "PF501"
        assert bad["error"]["error_details"]["field"] == "packets[2].resource_requirements"

        loose = {
            **structure,
            "bonds": [bond("a", "b", "metallic", conditions={"success_required": True})],
        }
        bonds = await ask(pf, {"coordination_type": "validate", "molecule_id": m,
                               "molecular_structure": loose,
                               "validation_checks": ["bond_consistency"]})  # fmt: skip
        assert bonds["status"] == "invalid" and bonds["error"]["error_code"] == "PF102"

        cyclic = {**structure, "bonds": [bond("a", "b"), bond("b", "a")]}
        cycle = await ask(pf, {"coordination_type": "validate", "molecule_id": m,
                               "molecular_structure": cyclic})  # fmt: skip
        assert cycle["status"] == "invalid"
        first = cycle["validation_results"][0]
        assert first["check"] == "circular_dependency_detection" and first["passed"] is False
        assert cycle["error"]["error_details"]["cycle"] == ["a", "b", "a"]

        for payload, field in [
            ({"validation_checks": ["packet_availability", "vibes"]},
             "payload.validation_checks[1]"),
        ]:  # fmt: skip
            err = await expect_error(mc.gateway.url, {
                "coordination_type": "validate", "molecule_id": m,
                "molecular_structure": structure, **payload})  # fmt: skip
            assert err.code == "PF002" and err.field == field
        err = await expect_error(
            mc.gateway.url,
            {"coordination_type": "initiate", "molecule_id": m, "molecular_structure": big},
        )
        assert err.code == "PF501"
        assert err.field == "payload.molecular_structure.packets[2].resource_requirements"
        err = await expect_error(
            mc.gateway.url,
            {
                "coordination_type": "validate",
                "molecule_id": m,
                "molecular_structure": {
                    **structure,
                    "packets": [pk("a", "load", resource_requirements={"gpus": 1})],
                },
            },
        )
        assert err.code == "PF002"
        assert err.field == "payload.molecular_structure.packets[0].resource_requirements.gpus"
    assert http(mc.gateway, "GET", f"/v1/molecules/{m}")[0] == 404  # nothing ran


def _big_share() -> float:
    """60% of this machine's memory, which every reactor here announces and leases out:
    two such reservations cannot both fit on one reactor."""
    import psutil

    return round(psutil.virtual_memory().total / 2**20 * 0.6, 1)


async def test_reserve_holds_capacity_until_execute_finishes_7_3(mc: Molecules) -> None:
    share = {"memory_mb": _big_share(), "cpu_cores": 1}
    first, second = mid("hold-a"), mid("hold-b")
    held = [{"reactor_id": "reactor-a", "resource_requirements": share}]

    def reserve(m: str, **extra: Any) -> dict[str, Any]:
        return {"coordination_type": "reserve", "molecule_id": m, "resource_reservations": held,
                "molecular_structure": {"packets": [pk("s", "sleep", {"seconds": 0.3})]},
                **extra}  # fmt: skip

    async with AsyncClient(mc.gateway.url) as pf:
        answer = await ask(pf, reserve(first))
        assert answer["status"] == "reserved"
        (lease,) = answer["resource_reservations"]
        assert lease["reactor_id"] == "reactor-a" and lease["held"] is True
        assert lease["allocation_id"]
        err = await expect_error(mc.gateway.url, reserve(second))  # no room left on it
        assert err.code == "PF004" and err.details["reactor_id"] == "reactor-a"

        seen = await until_finished(pf.coordinate({"coordination_type": "execute",
                                                   "molecule_id": first}))  # fmt: skip
        assert seen[0]["coordination_type"] == "execute"
        assert seen[-1]["status"] == "success"
        assert seen[-1]["results"]["s"]["slept"] == 0.3

    async def reserved(m: str) -> dict[str, Any] | None:
        try:
            async with AsyncClient(mc.gateway.url) as pf:
                return await ask(pf, reserve(m, coordination_metadata={"hold_ms": 300}))
        except PacketFlowError as exc:
            assert exc.code == "PF004"
            return None

    answer = await poll(lambda: reserved(second), "the first reservation's release")
    assert answer["status"] == "reserved"
    # `second` is never executed: its hold expires and the capacity comes back.
    answer = await poll(lambda: reserved(mid("hold-c")), "the unexecuted hold to expire")
    assert answer["status"] == "reserved"
    err = await expect_error(mc.gateway.url, {"coordination_type": "execute",
                                              "molecule_id": mid("never-reserved")})  # fmt: skip
    assert err.code == "PF002" and err.field == "payload.molecule_id"
    bad = reserve(mid("bad"))
    bad["resource_reservations"] = [{"reactor_id": "nobody", "resource_requirements": share}]
    err = await expect_error(mc.gateway.url, bad)
    assert err.code == "PF002" and err.field == "payload.resource_reservations[0].reactor_id"


async def poll(probe: Any, what: str, timeout: float = 10.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await probe()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def test_optimize_applies_parallelization_to_a_running_molecule(mc: Molecules) -> None:
    """§7.4.3: a data-free ionic chain (into cf:ping, which reads no inputs) becomes
    metallic when asked, so its pending target starts at once."""
    m = mid("optimize")
    payload = initiate(
        m,
        [
            pk("slow", "sleep", {"seconds": 1.5}),
            {"id": "ping", "group": "cf", "element": "ping", "data": {}},
        ],
        [bond("slow", "ping")],
    )
    async with AsyncClient(mc.gateway.url) as watcher, AsyncClient(mc.gateway.url) as admin:
        stream = watcher.coordinate(payload)
        await anext(stream)
        suggestion = await ask(admin, {"coordination_type": "optimize", "molecule_id": m})
        assert suggestion["status"] == "suggested"
        (group,) = suggestion["parallel_groups"]
        assert group["packets"] == ["slow", "ping"]
        assert group["optimized_bonds"] == ["metallic"]
        assert suggestion["adjustments"][0]["reason"] == "observed_parallel_capability"
        applied = await ask(
            admin,
            {
                "coordination_type": "optimize",
                "molecule_id": m,
                "optimization_type": "parallelization",
                "apply": True,
            },
        )
        assert applied["status"] == "applied"
        async with asyncio.timeout(10):
            seen = await until_finished(stream)
    assert seen[-1]["status"] == "success"
    assert overtook(seen, "ping", "slow")


# ---------------------------------------------------------------- durability


def test_molecule_resumes_after_the_gateway_is_killed(tmp_path: Path) -> None:
    """DESIGN §7: SIGKILL the gateway mid-run, restart it on the same data dir and port;
    the molecule completes and no finished packet runs again (the in-flight one is
    resubmitted under the same id and answered from the reactor's idempotency window)."""
    cluster = Cluster()
    data = tmp_path / "reactor"
    try:
        gw = cluster.gateway("--data-dir", str(tmp_path / "gw"))
        cluster.reactor(gw, "--module", MODULE, "--data-dir", str(data), "--id", "reactor-r")
        m = mid("resume")
        status, body = http(
            gw,
            "POST",
            "/v1/molecules",
            {
                "molecule_id": m,
                "packets": [
                    pk("first", "sleep", {"seconds": 0, "value": 1}),
                    pk("middle", "sleep", {"seconds": 3, "value": 2}, dependencies=["first"]),
                    pk("last", "sleep", {"seconds": 0, "value": 3}, dependencies=["middle"]),
                ],
            },
        )
        assert status == 202, body
        run_id = body["run_id"]

        def ran(pid: str) -> int:
            return runs_of(data).get(safe_name(f"{m}:{run_id}:{pid}"), 0)

        wait_for(lambda: ran("middle") == 1, 10, "the middle packet to start")
        gw.proc.kill()
        gw.proc.wait(5)
        port = gw.url.rsplit(":", 1)[1].split("/")[0]
        gw2 = cluster.gateway("--data-dir", str(tmp_path / "gw"), "--port", port)
        assert gw2.url == gw.url
        final = wait_for(lambda: finished(gw2, m), 40, "the molecule to finish after restart")
        assert final["status"] == "success", final
        assert final["results"]["last"]["result"] == 3
        assert final["results"]["last"]["inputs"]["middle"]["result"] == 2
        assert {pid: ran(pid) for pid in ("first", "middle", "last")} == {
            "first": 1,
            "middle": 1,
            "last": 1,
        }
    finally:
        cluster.stop()


def test_resumed_packet_is_answered_by_the_reactor_that_was_running_it(tmp_path: Path) -> None:
    """Hardening issue 13: SIGKILL the gateway while a molecule packet runs on reactor R;
    restart it on the same data dir while R is held back and the other reactor re-announces
    first. The journal names R, so the resumed packet waits (--resume-grace) for R, which
    answers it from its idempotency window: its handler ran exactly once, on R. Before,
    the packet went to the first reactor back and ran a second time there."""
    cluster = Cluster()
    data = tmp_path / "reactor"
    gw_dir = str(tmp_path / "gw")
    held: Node | None = None
    try:
        gw = cluster.gateway("--data-dir", gw_dir, "--resume-grace", "60")
        reactors = {
            rid: cluster.reactor(gw, "--module", MODULE, "--data-dir", str(data), "--id", rid)
            for rid in ("reactor-r1", "reactor-r2")
        }
        m = mid("pinned")
        status, body = http(gw, "POST", "/v1/molecules", {
            "molecule_id": m,
            "packets": [pk("slow", "sleep", {"seconds": 4, "value": 2}),
                        pk("after", "echo_inputs", dependencies=["slow"])],
        })  # fmt: skip
        assert status == 202, body
        wire = safe_name(f"{m}:{body['run_id']}:slow")
        runs = data / "runs"
        marker = wait_for(lambda: [p for p in runs.glob(f"{wire}.*")] if runs.exists() else [],
                          20, "the slow packet to start")  # fmt: skip
        running_on = marker[0].read_text()

        def dispatch_journaled() -> bool:
            with sqlite3.connect(tmp_path / "gw" / "molecules.sqlite3") as db:
                sql = "SELECT reactor_id FROM events WHERE kind = ? AND packet_id = ?"
                row = db.execute(sql, ("packet_dispatched", "slow")).fetchone()
            return row is not None and row[0] == running_on

        wait_for(dispatch_journaled, 10, "the dispatch to be journaled")
        held = reactors[running_on]
        other = next(n for rid, n in reactors.items() if rid != running_on)
        held.proc.send_signal(signal.SIGSTOP)  # R cannot re-announce until let go
        gw.proc.kill()
        gw.proc.wait(5)
        port = gw.url.rsplit(":", 1)[1].split("/")[0]
        gw2 = cluster.gateway("--data-dir", gw_dir, "--port", port, "--resume-grace", "60")
        cluster.wait_linked(gw2, other)  # the other reactor is back first and could run it
        held.proc.send_signal(signal.SIGCONT)
        held = None
        final = wait_for(lambda: finished(gw2, m), 60, "the molecule to finish after restart")
        assert final["status"] == "success", final
        assert final["results"]["slow"]["reactor_id"] == running_on
        assert final["results"]["after"]["inputs"]["slow"]["result"] == 2
        assert runs_of(data).get(wire) == 1, "the slow packet's handler ran twice"
    finally:
        if held is not None:
            held.proc.send_signal(signal.SIGCONT)
        cluster.stop()


async def test_a_journal_that_cannot_be_written_stops_the_molecule_cleanly(
    tmp_path: Path,
) -> None:
    """Hardening issue 9, for real: another process holds the journal's SQLite write lock
    (as a backup tool or an sqlite3 shell can), so the gateway's commits fail. The running
    molecule stops with PF503 saying why and its next packet never runs; new molecules are
    refused with PF503; once the lock is gone molecules run again and the stopped one is
    on record as failed, so it will not resume after a restart."""
    cluster = Cluster()
    data = tmp_path / "reactor"
    journal = tmp_path / "gw" / "molecules.sqlite3"
    lock: sqlite3.Connection | None = None
    try:
        gw = cluster.gateway("--data-dir", str(tmp_path / "gw"))
        reactor = cluster.reactor(gw, "--module", MODULE, "--data-dir", str(data))
        m = mid("locked")
        payload = initiate(m, [pk("slow", "sleep", {"seconds": 0.5, "value": 1}),
                               pk("after", "echo_inputs", dependencies=["slow"])])  # fmt: skip
        async with AsyncClient(gw.url) as pf, asyncio.timeout(RUN_TIMEOUT_S):
            stream = pf.coordinate(payload)
            ack = msgspec.to_builtins((await anext(stream)).payload)
            assert ack["coordination_type"] == "initiate"
            wire = safe_name(f"{m}:{ack['coordination_metadata']['run_id']}:slow")
            await asyncio.to_thread(wait_for, lambda: runs_of(data).get(wire), 20, "slow")
            # Hold the reactor while the lock is taken, so slow's result surely comes after.
            reactor.proc.send_signal(signal.SIGSTOP)
            try:
                lock = sqlite3.connect(journal, isolation_level=None, timeout=10)
                lock.execute("BEGIN EXCLUSIVE")
            finally:
                reactor.proc.send_signal(signal.SIGCONT)
            seen = await until_finished(stream)
        final = seen[-1]
        assert final["coordination_type"] == "complete" and final["status"] == "failed"
        assert final["error"]["error_code"] == "PF503"
        assert "journal could not be written" in final["error"]["error_message"]
        assert "locked" in final["error"]["error_message"]
        run_id = ack["coordination_metadata"]["run_id"]
        assert safe_name(f"{m}:{run_id}:after") not in runs_of(data), "ran unjournaled"

        status, body = http(gw, "POST", "/v1/molecules", {"packets": [pk("p", "sleep")]})
        assert status == 503 and body["payload"]["error_code"] == "PF503", body
        assert gw.get("/v1/molecules")["journal"]["commit_errors"] >= 2

        lock.rollback()
        lock.close()
        lock = None
        status, body = http(gw, "POST", "/v1/molecules?wait=true",
                            {"packets": [pk("p", "sleep", {"value": 7})]})  # fmt: skip
        assert status == 200 and body["status"] == "success", body

        def stored_status() -> str | None:
            with sqlite3.connect(journal) as db:
                row = db.execute("SELECT status FROM molecules WHERE molecule_id = ?",
                                 (m,)).fetchone()  # fmt: skip
            return row[0] if row else None

        assert wait_for(stored_status, 20, "the stopped molecule's finish") == "failed"
    finally:
        if lock is not None:
            lock.close()
        cluster.stop()


# ---------------------------------------------------------------- CLI and examples


def _cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            [str(Path(__file__).parents[2] / "src"), os.environ.get("PYTHONPATH", "")]
        ),
    }
    return subprocess.run(
        [sys.executable, "-m", "packetflow", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def test_example_data_processing_pipeline(mc: Molecules) -> None:
    shutil.copy(EXAMPLES / "customers.csv", mc.data / "customers.csv")
    out = _cli(
        "molecule",
        "run",
        str(EXAMPLES / "data_processing_pipeline.json"),
        "--url",
        mc.gateway.url,
        "--id",
        mid("pipeline"),
        "--json",
    )
    assert out.returncode == 0, out.stderr + out.stdout
    final = json.loads(out.stdout)
    assert final["status"] == "success"
    validated = final["results"]["validate_data"]
    assert validated["invalid_rows"] >= 1 and validated["valid_rows"] >= 1
    saved = (mc.data / "output" / "customers_clean.csv").read_text().splitlines()
    assert len(saved) == validated["valid_rows"] + 1  # + header
    # Status and abort from the CLI.
    status = _cli("molecule", "status", final["molecule_id"], "--url", mc.gateway.url, "--json")
    assert status.returncode == 0 and json.loads(status.stdout)["status"] == "success"
    abort = _cli("molecule", "abort", final["molecule_id"], "--url", mc.gateway.url)
    assert abort.returncode == 1 and "already finished" in abort.stderr
    assert _cli("molecule", "status", "no-such", "--url", mc.gateway.url).returncode == 1


def test_example_user_onboarding_workflow(mc: Molecules) -> None:
    out = _cli(
        "molecule",
        "run",
        str(EXAMPLES / "user_onboarding_workflow.json"),
        "--url",
        mc.gateway.url,
        "--id",
        mid("onboarding"),
    )
    assert out.returncode == 0, out.stderr + out.stdout
    assert "success" in out.stdout
    welcome = json.loads((mc.data / "outbox" / "welcome.json").read_text())
    assert welcome["username"] == "ada.lovelace@example.com"
    assert (mc.data / "audit" / "onboarding.jsonl").exists()


def test_cli_run_exits_1_when_the_molecule_fails(mc: Molecules, tmp_path: Path) -> None:
    path = tmp_path / "failing.json"
    path.write_text(
        json.dumps({"molecule_id": mid("cli-fail"), "packets": [pk("bad", "transform", BAD_OP)]})
    )
    out = _cli("molecule", "run", str(path), "--url", mc.gateway.url)
    assert out.returncode == 1
    assert "failed" in out.stdout


# ---------------------------------------------------------------- §10.4 bond adjustment, healing


async def test_bypass_bond_routes_around_a_failed_packet_10_4_1(mc: Molecules) -> None:
    payload = initiate(
        mid("bypass"),
        [pk("a", "load", {"rows": [1, 2]}), pk("b", "transform", BAD_OP), pk("c", "echo_inputs")],
        [bond("a", "b"), bond("b", "c")],
        fault_tolerance="isolate_and_continue",
        molecular_error_handling={"bond_adjustment": {"create_bypass_bonds": True}},
    )
    _, final = await run_ws(mc.gateway.url, payload)
    assert final["status"] == "partial"
    assert set(final["results"]) == {"a", "c"}
    assert list(final["results"]["c"]["inputs"]) == ["a"]  # c got a's result, not b's


async def test_healing_under_fail_fast_lets_the_run_go_on_10_4_2(mc: Molecules) -> None:
    payload = initiate(
        mid("heal"),
        [pk("a", "transform", BAD_OP), pk("b", "echo_inputs")],
        [bond("a", "b")],
        healing=True,
    )
    _, final = await run_ws(mc.gateway.url, payload)
    assert final["status"] == "partial"
    assert final["execution_state"]["bonds_converted"] is True
    assert "b" in final["results"]
    err = await expect_error(mc.gateway.url, initiate(
        mid("heal-bad"), [pk("a", "echo_inputs")],
        molecular_healing={"healing_triggers": ["cpu > 3"]}))  # fmt: skip
    assert err.code == "PF002"
    assert (
        err.field == "payload.molecular_structure.properties.molecular_healing.healing_triggers[0]"
    )
