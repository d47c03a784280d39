"""cf:coordinate (DESIGN §10, PFAP §4.2.6/§7): a molecule run through the gateway's coordinator
over COORDINATE messages, against a fake gateway client that plays the coordinator's side."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from packetflow.protocol.errors import PacketFlowError
from packetflow.protocol.messages import Coordinate
from packetflow.reactor.elements import cf
from packetflow.reactor.registry import Registry

from .expect import poll
from .test_elements_co import FakeGateway, fails, make_ctx

MOLECULE = {
    "molecule_id": "mol_1",
    "packets": [
        {"id": "a", "group": "df", "element": "load", "data": {"rows": [{"x": 1}]}},
        {"id": "b", "group": "df", "element": "transform", "data": {"operation": "length"}},
    ],
    "bonds": [{"from": "a", "to": "b", "type": "ionic", "strength": 1.0}],
    "properties": {"fault_tolerance": "fail_fast"},
}


def ctx_for(gateway: Any, ttl: float = 10.0) -> Any:
    return make_ctx(None, gateway, group="cf", element="coordinate", ttl=ttl)


def progress(n: int) -> dict[str, Any]:
    return {
        "coordination_type": "progress",
        "molecule_id": "mol_1",
        "execution_state": {"completed_packets": ["a"][:n]},
    }


async def test_coordinate_initiates_and_returns_the_final_state() -> None:
    complete = {
        "coordination_type": "complete",
        "molecule_id": "mol_1",
        "status": "completed",
        "results": {"a": {"result": [{"x": 1}]}, "b": {"result": 1}},
        "execution_state": {"completed_packets": ["a", "b"]},
        "performance_metrics": {"duration_ms": 12},
    }
    gw = FakeGateway(coordinate_script=[progress(0), progress(1), complete])
    out = await cf.coordinate({"molecular_structure": MOLECULE}, ctx_for(gw))
    assert out == {
        "molecule_id": "mol_1",
        "status": "completed",
        "coordination_type": "complete",
        "results": complete["results"],
        "progress_messages": 2,
        "execution_state": complete["execution_state"],
        "performance_metrics": {"duration_ms": 12},
    }
    (sent,) = gw.coordinated
    assert sent == {
        "coordination_type": "initiate",
        "molecular_structure": MOLECULE,
        "molecule_id": "mol_1",
    }


async def test_coordinate_accepts_the_molecule_fields_directly() -> None:
    gw = FakeGateway(
        coordinate_script=[{"coordination_type": "complete", "molecule_id": "generated"}]
    )
    data = {k: v for k, v in MOLECULE.items() if k != "molecule_id"}
    out = await cf.coordinate(data, ctx_for(gw))
    assert out["molecule_id"] == "generated" and out["status"] == "success"
    assert out["results"] == {}
    assert gw.coordinated[0] == {"coordination_type": "initiate", "molecular_structure": data}


async def test_coordinate_abort_is_returned_with_its_status() -> None:
    abort = {
        "coordination_type": "abort",
        "molecule_id": "mol_1",
        "status": "failed",
        "results": {"a": {"result": 1}},
        "error": {"error_code": "PF005"},
    }
    gw = FakeGateway(coordinate_script=[progress(0), abort])
    out = await cf.coordinate({"molecular_structure": MOLECULE}, ctx_for(gw))
    assert out["status"] == "failed" and out["coordination_type"] == "abort"
    assert out["error"] == {"error_code": "PF005"} and out["results"] == {"a": {"result": 1}}


async def test_coordinate_error_message_raises_its_error() -> None:
    error = {
        "coordination_type": "error",
        "molecule_id": "mol_1",
        "error": {
            "error_code": "PF102",
            "error_message": "cycle a -> b -> a",
            "error_details": {"cycle": ["a", "b", "a"]},
        },
    }
    gw = FakeGateway(coordinate_script=[error])
    err = await fails(cf.coordinate({"molecular_structure": MOLECULE}, ctx_for(gw)), "PF102")
    assert err.details["cycle"] == ["a", "b", "a"]
    gw = FakeGateway(coordinate_script=[{"coordination_type": "error", "error": {"x": 1}}])
    await fails(cf.coordinate({"molecular_structure": MOLECULE}, ctx_for(gw)), "PF005")


async def test_coordinate_error_reply_propagates() -> None:
    gw = FakeGateway(coordinate_script=[{"raise": PacketFlowError("no reactor", code="PF003")}])
    await fails(cf.coordinate({"molecular_structure": MOLECULE}, ctx_for(gw)), "PF003")


async def test_cancelled_coordinate_aborts_the_molecule() -> None:
    gw = FakeGateway(coordinate_script=[progress(0), {"sleep": 10}])
    task = asyncio.ensure_future(cf.coordinate({"molecular_structure": MOLECULE}, ctx_for(gw)))
    # The fake records the initiate, yields the progress and starts sleeping in one step.
    await poll(lambda: gw.coordinated, "the initiate to be sent")
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await poll(lambda: gw.sent, "the abort to be sent")
    (abort,) = gw.sent
    assert isinstance(abort, Coordinate)
    assert abort.payload.coordination_type == "abort"
    assert abort.payload.molecule_id == "mol_1"
    assert abort.correlation_id == "msg_init", "correlated to the initiating message (§7)"


async def test_coordinate_needs_the_gateway_pf503() -> None:
    await fails(cf.coordinate({"molecular_structure": MOLECULE}, ctx_for(None)), "PF503")


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({}, "packets"),
        ({"molecular_structure": []}, "molecular_structure"),
        ({"molecular_structure": {}}, "molecular_structure.packets"),
        ({"molecular_structure": {"packets": []}}, "molecular_structure.packets"),
        ({"molecular_structure": {"packets": [1]}}, "molecular_structure.packets[0]"),
        ({"packets": [{"id": "a"}], "bonds": {}}, "bonds"),
        ({"packets": [{"id": "a"}], "molecule_id": 5}, "molecule_id"),
    ],
)
async def test_coordinate_bad_structure_pf002(data: dict, field: str) -> None:
    gw = FakeGateway()
    await fails(cf.coordinate(data, ctx_for(gw)), "PF002", field)
    assert gw.coordinated == []


def test_register_adds_coordinate_beside_the_others() -> None:
    registry = Registry()
    cf.register(registry)
    assert {s.key for s in registry} == {
        "cf:ping",
        "cf:health",
        "cf:introspect",
        "cf:shutdown",
        "cf:restart",
        "cf:coordinate",
    }
