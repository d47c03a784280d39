"""PFAP §7.3 phase 1 checks and the phase 2 reservation plan (protocol/molecule_checks.py)."""

from __future__ import annotations

from typing import Any

import pytest

from packetflow.protocol.errors import BondFormationFailed, InvalidPacket
from packetflow.protocol.molecule_checks import (
    VALIDATION_CHECKS,
    ReactorOffer,
    parse_checks,
    reservation_needs,
    run_checks,
    structural_result,
)
from packetflow.protocol.molecules import parse_molecule


def molecule(packets: list[dict[str, Any]], bonds: list[dict[str, Any]] | None = None) -> Any:
    return parse_molecule({"molecule_id": "m", "packets": packets, "bonds": bonds or []})


def pk(pid: str, element: str = "transform", **extra: Any) -> dict[str, Any]:
    return {"id": pid, "group": "df", "element": element, **extra}


OFFERS = [
    ReactorOffer("small", frozenset({("df", "transform")}), True, 1024.0, 2),
    ReactorOffer("big", frozenset({("df", "transform"), ("df", "load")}), False, 8192.0, 16,
                 frozenset({"ionic"})),
]  # fmt: skip


def results(mol: Any, checks: tuple[str, ...] = VALIDATION_CHECKS) -> dict[str, Any]:
    return {r.check: r for r in run_checks(mol, checks, OFFERS)}


def test_all_checks_pass_on_a_servable_molecule() -> None:
    out = results(molecule([pk("a"), pk("b")], [{"from": "a", "to": "b", "type": "ionic"}]))
    assert list(out) == list(VALIDATION_CHECKS)
    assert all(r.passed for r in out.values())


def test_availability_needs_a_routable_reactor_compatibility_any_registered_one() -> None:
    out = results(molecule([pk("a", "load"), pk("b", "save")]))
    availability = out["packet_availability"]
    assert not availability.passed and availability.error is not None
    assert availability.error.code == "PF003"
    assert [p["packet_id"] for p in availability.problems] == ["a", "b"]  # big is down
    compat = out["reactor_compatibility"]
    assert not compat.passed and [p["packet_id"] for p in compat.problems] == ["b"]
    assert compat.error is not None and compat.error.details["unsupported"] == ["df:save"]


def test_compatibility_checks_announced_bond_types() -> None:
    mol = molecule([pk("a", "load"), pk("b", "load")],
                   [{"from": "a", "to": "b", "type": "covalent"}])  # fmt: skip
    compat = results(mol)["reactor_compatibility"]
    assert not compat.passed and compat.problems[0]["bond_types"] == ["covalent"]


def test_resource_requirements_against_announced_capacity() -> None:
    fits = molecule([pk("a", resource_requirements={"memory_mb": 4096, "cpu_cores": 8})])
    assert results(fits, ("resource_requirements",))["resource_requirements"].passed
    too_big = molecule([pk("a"), pk("b", resource_requirements={"memory_mb": 9000})])
    check = results(too_big, ("resource_requirements",))["resource_requirements"]
    assert not check.passed and check.error is not None and check.error.code == "PF501"
    assert check.error.field == "packets[1].resource_requirements"
    assert check.problems[0]["largest_offer"]["reactor_id"] == "big"


def test_bond_consistency_refuses_success_required_on_a_loose_bond() -> None:
    mol = molecule([pk("a"), pk("b")], [{"from": "a", "to": "b", "type": "vdw",
                                         "conditions": {"success_required": True}}])  # fmt: skip
    check = results(mol, ("bond_consistency",))["bond_consistency"]
    assert not check.passed and check.error is not None and check.error.code == "PF102"


def test_structural_errors_map_to_their_check() -> None:
    with pytest.raises(BondFormationFailed) as info:
        molecule([pk("a"), pk("b")], [{"from": "a", "to": "b", "type": "ionic"},
                                      {"from": "b", "to": "a", "type": "ionic"}])  # fmt: skip
    result = structural_result(info.value)
    assert result is not None and result.check == "circular_dependency_detection"
    assert result.problems[0]["cycle"] == ["a", "b", "a"]


@pytest.mark.parametrize(("value", "field"), [("all", "checks"), (["nope"], "checks[0]"),
                                              ([1], "checks[0]")])  # fmt: skip
def test_parse_checks_names_the_bad_entry(value: Any, field: str) -> None:
    with pytest.raises(InvalidPacket) as info:
        parse_checks(value, "checks")
    assert info.value.field == field


def test_parse_checks_defaults_to_all_and_drops_duplicates() -> None:
    assert parse_checks(None, "c") == VALIDATION_CHECKS
    assert parse_checks(["bond_consistency", "bond_consistency"], "c") == ("bond_consistency",)


@pytest.mark.parametrize(("req", "field"), [({"gpus": 1}, "p.gpus"), ({"cpu_cores": 1.5},
                         "p.cpu_cores"), ({"memory_mb": -1}, "p.memory_mb"), (3, "p")])  # fmt: skip
def test_bad_resource_requirements_are_pf002(req: Any, field: str) -> None:
    with pytest.raises(InvalidPacket) as info:
        parse_molecule({"molecule_id": "m", "packets": [pk("a", resource_requirements=req)]})
    assert info.value.field == f"packets[0].resource_requirements{field[1:]}"


def test_reservation_needs_sum_a_stage_and_take_the_largest_stage() -> None:
    mol = molecule(
        [pk("a", resource_requirements={"memory_mb": 100}),
         pk("b", resource_requirements={"memory_mb": 300, "cpu_cores": 2}),
         pk("c", resource_requirements={"memory_mb": 250}), pk("d")],
        [{"from": "a", "to": "b", "type": "ionic"}, {"from": "a", "to": "c", "type": "ionic"}],
    )  # fmt: skip
    needs = reservation_needs(mol, {"a": "r1", "b": "r1", "c": "r1", "d": "r2"})
    assert needs["r1"] == {"memory_mb": 550.0, "cpu_cores": 2.0}  # b + c run together
    assert needs["r2"] == {"memory_mb": 0.0, "cpu_cores": 0.0}
