"""The molecule model (protocol/molecules.py): both structure spellings of PFAP §7.1 and
§4.2.6, DESIGN §7's bond aliases and dependencies-as-ionic, phase-1 validation (§7.3) with
its error codes and JSON paths, stage numbers and stability.

The spec's examples are copied verbatim from the spec text.
"""

from __future__ import annotations

import ast
import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from packetflow.protocol import errors
from packetflow.protocol.molecules import (
    DEFAULT_MAX_RETRIES,
    Bond,
    Molecule,
    MoleculePacket,
    check_structure,
    parse_molecule,
    stability,
    stages,
    total_stages,
    validate_molecule,
)

# PFAP §7.1, verbatim.
USER_ONBOARDING: dict[str, Any] = {
    "molecule_id": "user_onboarding_workflow",
    "version": "1.0",
    "packets": [
        {
            "id": "validate_user",
            "group": "df",
            "element": "validate",
            "data": {"schema": "user_schema_v1"},
            "position": {"stage": 1, "order": 1},
        },
        {
            "id": "create_account",
            "group": "cf",
            "element": "provision",
            "data": {"template": "standard_account"},
            "position": {"stage": 2, "order": 1},
        },
        {
            "id": "send_welcome",
            "group": "ed",
            "element": "notify",
            "data": {"template": "welcome_email"},
            "position": {"stage": 3, "order": 1},
        },
    ],
    "bonds": [
        {
            "id": "bond_001",
            "from_packet": "validate_user",
            "to_packet": "create_account",
            "bond_type": "ionic",
            "strength": 1.0,
            "conditions": {"success_required": True, "data_flow": "validation_result"},
        },
        {
            "id": "bond_002",
            "from_packet": "create_account",
            "to_packet": "send_welcome",
            "bond_type": "ionic",
            "strength": 0.9,
            "conditions": {"success_required": True, "data_flow": "account_details"},
        },
    ],
    "properties": {
        "stability_threshold": 0.7,
        "optimization_target": "latency",
        "fault_tolerance": "retry_failed_stages",
        "timeout_ms": 300000,
        "max_retries": 3,
    },
}

# "Molecular Workflow Example" step 1, the COORDINATE payload, verbatim.
DATA_PIPELINE_PAYLOAD: dict[str, Any] = {
    "coordination_type": "initiate",
    "molecule_id": "data_processing_pipeline",
    "molecular_structure": {
        "packets": [
            {
                "id": "load_data",
                "group": "df",
                "element": "load",
                "data": {"source": "s3://data-bucket/input.csv"},
                "dependencies": [],
            },
            {
                "id": "validate_data",
                "group": "df",
                "element": "validate",
                "data": {"schema": "customer_schema_v2"},
                "dependencies": ["load_data"],
            },
            {
                "id": "transform_data",
                "group": "df",
                "element": "transform",
                "data": {"operation": "normalize_addresses"},
                "dependencies": ["validate_data"],
            },
            {
                "id": "save_results",
                "group": "df",
                "element": "save",
                "data": {"destination": "s3://data-bucket/output.csv"},
                "dependencies": ["transform_data"],
            },
        ],
        "bonds": [
            {"from": "load_data", "to": "validate_data", "type": "ionic", "strength": 1.0},
            {"from": "validate_data", "to": "transform_data", "type": "ionic", "strength": 1.0},
            {"from": "transform_data", "to": "save_results", "type": "ionic", "strength": 1.0},
        ],
        "properties": {
            "optimization_target": "throughput",
            "fault_tolerance": "retry_failed_stages",
            "max_retries": 2,
            "timeout_ms": 600000,
        },
    },
}

# §4.2.6, the COORDINATE payload, verbatim.
COORDINATE_EXAMPLE: dict[str, Any] = {
    "molecule_id": "molecule_workflow_abc123",
    "coordination_type": "initiate",
    "molecular_structure": {
        "packets": [
            {"id": "packet_001", "group": "df", "element": "load_data", "dependencies": []},
            {
                "id": "packet_002",
                "group": "df",
                "element": "transform_data",
                "dependencies": ["packet_001"],
            },
        ],
        "bonds": [{"from": "packet_001", "to": "packet_002", "type": "ionic", "strength": 1.0}],
        "properties": {"stability": 0.85, "total_energy": 2.3, "optimization_target": "throughput"},
    },
}


def structure(
    packets: Sequence[str | dict[str, Any]],
    bonds: list[dict[str, Any]] | None = None,
    **properties: Any,
) -> dict[str, Any]:
    """A §7.1 structure; packets given as ids become df:transform packets."""
    return {
        "molecule_id": "m",
        "packets": [
            {"id": p, "group": "df", "element": "transform"} if isinstance(p, str) else p
            for p in packets
        ],
        "bonds": bonds or [],
        "properties": properties,
    }


def bond(src: str, dst: str, kind: str = "ionic", **extra: Any) -> dict[str, Any]:
    return {"from": src, "to": dst, "type": kind, **extra}


def raises(
    exc: type[errors.PacketFlowError], obj: dict[str, Any], **kwargs: Any
) -> errors.PacketFlowError:
    with pytest.raises(exc) as info:
        parse_molecule(obj, **kwargs)
    return info.value


# ---------------------------------------------------------------- both spellings (§7.1, §4.2.6)


def test_7_1_user_onboarding_long_bond_spelling() -> None:
    m = parse_molecule(USER_ONBOARDING)
    assert m.molecule_id == "user_onboarding_workflow"
    assert m.version == "1.0"
    assert m.packet_ids == ("validate_user", "create_account", "send_welcome")
    assert m.packet("create_account") == MoleculePacket(
        id="create_account",
        group="cf",
        element="provision",
        data={"template": "standard_account"},
        position={"stage": 2, "order": 1},
    )
    assert m.bonds == (
        Bond(
            "validate_user",
            "create_account",
            "ionic",
            1.0,
            id="bond_001",
            conditions={"success_required": True, "data_flow": "validation_result"},
        ),
        Bond(
            "create_account",
            "send_welcome",
            "ionic",
            0.9,
            id="bond_002",
            conditions={"success_required": True, "data_flow": "account_details"},
        ),
    )
    props = m.properties
    assert props.stability_threshold == 0.7
    assert props.optimization_target == "latency"
    assert props.fault_tolerance == "retry_failed_stages"
    assert props.timeout_ms == 300000
    assert props.max_retries == 3
    assert props.healing is False


def test_7_1_user_onboarding_stages_match_positions() -> None:
    m = parse_molecule(USER_ONBOARDING)
    assert stages(m) == {p.id: p.position["stage"] for p in m.packets if p.position}
    assert total_stages(m) == 3


def test_wire_example_data_pipeline_coordinate_payload() -> None:
    m = parse_molecule(DATA_PIPELINE_PAYLOAD)
    assert m.molecule_id == "data_processing_pipeline"
    # Dependencies duplicate the explicit ionic bonds: three bonds, not six.
    assert [(b.source, b.target, b.type, b.strength) for b in m.bonds] == [
        ("load_data", "validate_data", "ionic", 1.0),
        ("validate_data", "transform_data", "ionic", 1.0),
        ("transform_data", "save_results", "ionic", 1.0),
    ]
    assert m.properties.max_retries == 2
    assert m.properties.timeout_ms == 600000
    assert m.properties.fault_tolerance == "retry_failed_stages"
    assert m.properties.optimization_target == "throughput"


def test_wire_example_data_pipeline_has_four_stages() -> None:
    m = parse_molecule(DATA_PIPELINE_PAYLOAD)
    assert stages(m) == {
        "load_data": 1,
        "validate_data": 2,
        "transform_data": 3,
        "save_results": 4,
    }
    assert total_stages(m) == 4


def test_4_2_6_coordinate_example_keeps_unknown_properties() -> None:
    m = parse_molecule(COORDINATE_EXAMPLE)
    assert m.molecule_id == "molecule_workflow_abc123"
    assert len(m.bonds) == 1
    assert m.properties.extra == {"stability": 0.85, "total_energy": 2.3}
    assert m.properties.optimization_target == "throughput"
    assert m.properties.fault_tolerance == "fail_fast"  # DESIGN §7 default
    assert m.properties.max_retries == DEFAULT_MAX_RETRIES == 3


def test_design_7_molecule_id_argument_is_the_fallback() -> None:
    obj = structure(["a"])
    del obj["molecule_id"]
    assert parse_molecule(obj, molecule_id="mol_given").molecule_id == "mol_given"
    assert parse_molecule(structure(["a"]), molecule_id="other").molecule_id == "m"
    err = raises(errors.InvalidPacket, obj)
    assert err.code == "PF002"
    assert err.field == "molecule_id"


def test_design_3_path_argument_prefixes_fields() -> None:
    payload = copy.deepcopy(DATA_PIPELINE_PAYLOAD)
    payload["molecular_structure"]["bonds"][2]["type"] = "hydrogen"
    err = raises(errors.InvalidPacket, payload, path="payload")
    assert err.field == "payload.molecular_structure.bonds[2].type"


def test_design_7_round_trip_through_to_dict() -> None:
    for obj in (USER_ONBOARDING, DATA_PIPELINE_PAYLOAD, COORDINATE_EXAMPLE):
        m = parse_molecule(obj)
        assert parse_molecule(m.to_dict()) == m


# ---------------------------------------------------------------- bonds (§7.2, DESIGN §7)


@pytest.mark.parametrize(
    ("spelling", "canonical"),
    [
        ("ionic", "ionic"),
        ("covalent", "covalent"),
        ("metallic", "metallic"),
        ("vdw", "vdw"),
        ("vanderwaal", "vdw"),
        ("van_der_waals", "vdw"),
        ("VDW", "vdw"),
    ],
)
def test_design_7_bond_type_aliases(spelling: str, canonical: str) -> None:
    m = parse_molecule(structure(["a", "b"], [bond("a", "b", spelling)]))
    assert m.bonds[0].type == canonical


@pytest.mark.parametrize(
    ("kind", "strength"), [("ionic", 1.0), ("covalent", 0.8), ("metallic", 0.6), ("vdw", 0.3)]
)
def test_7_2_default_strength_per_bond_type(kind: str, strength: float) -> None:
    m = parse_molecule(structure(["a", "b"], [bond("a", "b", kind)]))
    assert m.bonds[0].strength == strength


def test_7_2_explicit_strength_kept_including_bounds() -> None:
    m = parse_molecule(
        structure(["a", "b", "c"], [bond("a", "b", strength=0), bond("b", "c", strength=1)])
    )
    assert [b.strength for b in m.bonds] == [0.0, 1.0]


def test_design_7_dependencies_are_ionic_bonds() -> None:
    m = parse_molecule(
        structure(
            [
                {"id": "a", "group": "df", "element": "load"},
                {"id": "b", "group": "df", "element": "load"},
                {"id": "c", "group": "df", "element": "save", "dependencies": ["a", "b", "a"]},
            ]
        )
    )
    assert m.packet("c").dependencies == ("a", "b")
    assert [(b.source, b.target, b.type, b.strength) for b in m.bonds] == [
        ("a", "c", "ionic", 1.0),
        ("b", "c", "ionic", 1.0),
    ]


def test_design_7_explicit_bond_wins_over_dependency_between_same_pair() -> None:
    m = parse_molecule(
        structure(
            ["a", {"id": "b", "group": "df", "element": "save", "dependencies": ["a"]}],
            [bond("a", "b", "covalent", strength=0.5)],
        )
    )
    assert [(b.source, b.target, b.type, b.strength) for b in m.bonds] == [
        ("a", "b", "covalent", 0.5)
    ]


def test_design_7_blocking_bonds() -> None:
    m = parse_molecule(
        structure(
            ["a", "b", "c", "d", "e"],
            [
                bond("a", "b", "ionic"),
                bond("a", "c", "covalent"),
                bond("a", "d", "metallic"),
                bond("a", "e", "vdw"),
            ],
        )
    )
    assert [b.blocking for b in m.bonds] == [True, True, False, True]


# ---------------------------------------------------------------- validation (§7.3 phase 1)


def test_design_7_duplicate_packet_ids_pf002() -> None:
    err = raises(errors.InvalidPacket, structure(["a", "b", "a"]))
    assert err.code == "PF002"
    assert err.field == "packets[2].id"
    assert err.validation_rule == "unique"
    assert err.error_details()["packet_id"] == "a"


def test_design_7_duplicate_ids_in_coordinate_payload_name_full_path() -> None:
    payload = copy.deepcopy(COORDINATE_EXAMPLE)
    payload["molecular_structure"]["packets"][1]["id"] = "packet_001"
    err = raises(errors.InvalidPacket, payload)
    assert err.field == "molecular_structure.packets[1].id"


@pytest.mark.parametrize(
    ("bad_bond", "field"),
    [
        (bond("a", "ghost"), "bonds[0].to"),
        (bond("ghost", "a"), "bonds[0].from"),
        ({"from_packet": "a", "to_packet": "ghost", "bond_type": "ionic"}, "bonds[0].to_packet"),
    ],
)
def test_design_7_bond_to_unknown_packet_pf102(bad_bond: dict[str, Any], field: str) -> None:
    err = raises(errors.BondFormationFailed, structure(["a"], [bad_bond]))
    assert err.code == "PF102"
    assert err.field == field
    assert err.error_details()["unknown_packet"] == "ghost"


def test_design_7_dependency_on_unknown_packet_pf102() -> None:
    payload = copy.deepcopy(COORDINATE_EXAMPLE)
    payload["molecular_structure"]["packets"][1]["dependencies"] = ["packet_001", "nope"]
    err = raises(errors.BondFormationFailed, payload)
    assert err.code == "PF102"
    assert err.field == "molecular_structure.packets[1].dependencies[1]"
    assert err.error_details()["unknown_packet"] == "nope"


def test_design_7_cycle_pf102_reports_path() -> None:
    obj = structure(
        ["s", "a", "b", "c"],
        [bond("s", "a"), bond("a", "b"), bond("b", "c", "covalent"), bond("c", "a", "vdw")],
    )
    err = raises(errors.BondFormationFailed, obj)
    assert err.code == "PF102"
    details = err.to_payload()["error_details"]
    assert details["cycle"] == ["a", "b", "c", "a"]
    assert details["field"] == "bonds[3]"
    assert details["validation_rule"] == "acyclic"


def test_design_7_cycle_through_dependencies() -> None:
    obj = structure(
        [
            {"id": "a", "group": "df", "element": "load", "dependencies": ["c"]},
            {"id": "b", "group": "df", "element": "load", "dependencies": ["a"]},
            {"id": "c", "group": "df", "element": "load", "dependencies": ["b"]},
        ]
    )
    err = raises(errors.BondFormationFailed, obj)
    assert err.details["cycle"] == ["a", "b", "c", "a"]
    assert err.field == "packets[0].dependencies[0]"  # c -> a, declared by a


def test_design_7_self_bond_is_a_cycle() -> None:
    err = raises(errors.BondFormationFailed, structure(["a"], [bond("a", "a")]))
    assert err.details["cycle"] == ["a", "a"]


def test_design_7_metallic_cycle_also_refused() -> None:
    err = raises(
        errors.BondFormationFailed,
        structure(["a", "b"], [bond("a", "b", "metallic"), bond("b", "a", "metallic")]),
    )
    assert err.details["cycle"] == ["a", "b", "a"]


def test_design_7_two_bonds_between_same_pair_pf102() -> None:
    err = raises(
        errors.BondFormationFailed,
        structure(["a", "b"], [bond("a", "b"), bond("a", "b", "vdw")]),
    )
    assert err.field == "bonds[1]"
    assert err.validation_rule == "unique_bond"


@pytest.mark.parametrize("bad", ["hydrogen", "", 3, None])
def test_design_7_unknown_bond_type_pf002(bad: Any) -> None:
    payload = copy.deepcopy(DATA_PIPELINE_PAYLOAD)
    payload["molecular_structure"]["bonds"][2]["type"] = bad
    err = raises(errors.InvalidPacket, payload)
    assert err.code == "PF002"
    assert err.field == "molecular_structure.bonds[2].type"


def test_design_7_unknown_bond_type_long_spelling_path() -> None:
    obj = copy.deepcopy(USER_ONBOARDING)
    obj["bonds"][1]["bond_type"] = "hydrogen"
    err = raises(errors.InvalidPacket, obj)
    assert err.field == "bonds[1].bond_type"
    assert err.validation_rule == "enum"


@pytest.mark.parametrize("bad", [1.5, -0.1, "strong", True, float("nan")])
def test_7_2_strength_outside_0_1_pf002(bad: Any) -> None:
    err = raises(errors.InvalidPacket, structure(["a", "b"], [bond("a", "b", strength=bad)]))
    assert err.code == "PF002"
    assert err.field == "bonds[0].strength"


def test_design_7_max_molecule_size_pf002() -> None:
    obj = structure([f"p{i}" for i in range(4)])
    err = raises(errors.InvalidPacket, obj, max_size=3)
    assert err.code == "PF002"
    assert err.field == "packets"
    assert err.validation_rule == "max_molecule_size"
    assert len(parse_molecule(obj, max_size=4).packets) == 4


@pytest.mark.parametrize(
    ("packet", "field", "rule"),
    [
        ({"id": "x", "element": "load"}, "packets[0].group", "required"),
        ({"id": "x", "group": "zz", "element": "load"}, "packets[0].group", "enum"),
        ({"id": "x", "group": 7, "element": "load"}, "packets[0].group", "type"),
        ({"id": "x", "group": "df"}, "packets[0].element", "required"),
        ({"id": "x", "group": "df", "element": "Bad-Name"}, "packets[0].element", "pattern"),
        ({"id": "x", "group": "df", "element": 5}, "packets[0].element", "type"),
        ({"group": "df", "element": "load"}, "packets[0].id", "required"),
        ({"id": "", "group": "df", "element": "load"}, "packets[0].id", "length"),
        ({"id": "x", "group": "df", "element": "load", "priority": 11}, "packets[0].priority",
         "range"),
        ({"id": "x", "group": "df", "element": "load", "timeout_ms": 0}, "packets[0].timeout_ms",
         "range"),
        ({"id": "x", "group": "df", "element": "load", "dependencies": "a"},
         "packets[0].dependencies", "type"),
        ("not a packet", "packets[0]", "type"),
    ],
)  # fmt: skip
def test_design_4_bad_packet_fields_pf002(packet: Any, field: str, rule: str) -> None:
    err = raises(errors.InvalidPacket, {"molecule_id": "m", "packets": [packet]})
    assert err.code == "PF002"
    assert err.field == field
    assert err.validation_rule == rule


@pytest.mark.parametrize(
    ("properties", "field"),
    [
        ({"fault_tolerance": "yolo"}, "properties.fault_tolerance"),
        ({"max_retries": -1}, "properties.max_retries"),
        ({"max_retries": 2.5}, "properties.max_retries"),
        ({"timeout_ms": 0}, "properties.timeout_ms"),
        ({"stability_threshold": 2}, "properties.stability_threshold"),
        ({"healing": "yes"}, "properties.healing"),
        ({"optimization_target": 1}, "properties.optimization_target"),
    ],
)
def test_design_7_bad_properties_pf002(properties: dict[str, Any], field: str) -> None:
    err = raises(errors.InvalidPacket, structure(["a"], **properties))
    assert err.field == field


@pytest.mark.parametrize(
    ("obj", "field", "rule"),
    [
        ({"molecule_id": "m"}, "packets", "required"),
        ({"molecule_id": "m", "packets": []}, "packets", "min_items"),
        ({"molecule_id": "m", "packets": {}}, "packets", "type"),
        ({"molecule_id": "m", "packets": [{"id": "a", "group": "df", "element": "x"}],
          "bonds": {}}, "bonds", "type"),
        ({"molecular_structure": []}, "molecular_structure", "type"),
    ],
)  # fmt: skip
def test_design_7_bad_structure_pf002(obj: dict[str, Any], field: str, rule: str) -> None:
    err = raises(errors.InvalidPacket, obj)
    assert err.field == field
    assert err.validation_rule == rule


def test_design_7_unsupported_elements_pf003() -> None:
    m = parse_molecule(USER_ONBOARDING)

    def supported(group: str, element: str) -> bool:
        return group == "df"

    with pytest.raises(errors.NoReactorAvailable) as info:
        validate_molecule(m, supported)
    err = info.value
    assert err.code == "PF003"
    assert err.error_details()["unsupported"] == ["cf:provision", "ed:notify"]
    assert err.error_details()["unsupported_packets"] == ["create_account", "send_welcome"]
    validate_molecule(m, lambda g, e: True)
    validate_molecule(m, None)


def test_design_7_validate_molecule_checks_hand_built_structure() -> None:
    a, b = MoleculePacket("a", "df", "load"), MoleculePacket("b", "df", "load")
    cyclic = Molecule("m", (a, b), (Bond("a", "b", "ionic", 1.0), Bond("b", "a", "vdw", 0.3)))
    with pytest.raises(errors.BondFormationFailed) as info:
        validate_molecule(cyclic, lambda g, e: True)
    assert info.value.details["cycle"] == ["a", "b", "a"]
    dangling = Molecule("m", (a,), (Bond("a", "zz", "ionic", 1.0, origin="bonds[0]"),))
    with pytest.raises(errors.BondFormationFailed):
        check_structure(dangling)
    duplicate = Molecule("m", (a, a))
    with pytest.raises(errors.InvalidPacket):
        check_structure(duplicate)


# ---------------------------------------------------------------- stages and stability


def test_design_7_stages_longest_path_vdw_counts_metallic_does_not() -> None:
    m = parse_molecule(
        structure(
            ["a", "b", "c", "d", "log", "hint"],
            [
                bond("a", "b"),
                bond("b", "d", "covalent"),
                bond("a", "c"),
                bond("c", "d"),
                bond("b", "c"),
                bond("d", "log", "vdw"),
                bond("d", "hint", "metallic"),
            ],
        )
    )
    assert stages(m) == {"a": 1, "b": 2, "c": 3, "d": 4, "log": 5, "hint": 1}
    assert total_stages(m) == 5


def test_design_7_stability_formula() -> None:
    bonds = [Bond("a", "b", "ionic", 1.0), Bond("b", "c", "vdw", 0.3)]
    assert stability(bonds, lambda p: False) == 0.0
    assert stability(bonds, lambda p: p == "a") == pytest.approx(1.0 / 1.3)
    assert stability(bonds, lambda p: True) == 1.0
    assert stability([], lambda p: False) == 1.0
    assert stability([Bond("a", "b", "ionic", 0.0)], lambda p: False) == 1.0


# ---------------------------------------------------------------- STYLE 1


@pytest.mark.parametrize("module", ["molecules.py", "planner.py"])
def test_style_1_no_io_imports(module: str) -> None:
    import packetflow.protocol.molecules as mod

    path = Path(mod.__file__).with_name(module)
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    assert not names & {"asyncio", "socket", "ssl", "time", "random"}
