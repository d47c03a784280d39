"""Every number PFAP fixes about chemistry: §3.3 matrix, §6.2 preferences, the property
calculator (DESIGN §4, spec "Chemical Property Calculator" pseudocode and wire example) and
the DESIGN §5 routing score.

The expected tables below are typed out from the spec text, not derived from the code.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import asdict

import pytest

from packetflow.protocol import chemistry as chem

# ---------------------------------------------------------------- §3.3 affinity matrix

# PFAP §3.3, row by row: group, specialization, value.
SPEC_MATRIX = [
    ("cf", "cpu_intensive", 0.9),
    ("cf", "memory_bound", 0.4),
    ("cf", "io_intensive", 0.3),
    ("cf", "network_heavy", 0.2),
    ("cf", "general_purpose", 0.6),
    ("df", "cpu_intensive", 0.8),
    ("df", "memory_bound", 0.9),
    ("df", "io_intensive", 0.7),
    ("df", "network_heavy", 0.6),
    ("df", "general_purpose", 0.8),
    ("ed", "cpu_intensive", 0.3),
    ("ed", "memory_bound", 0.2),
    ("ed", "io_intensive", 0.9),
    ("ed", "network_heavy", 0.8),
    ("ed", "general_purpose", 0.6),
    ("co", "cpu_intensive", 0.4),
    ("co", "memory_bound", 0.6),
    ("co", "io_intensive", 0.8),
    ("co", "network_heavy", 0.9),
    ("co", "general_purpose", 0.7),
    ("mc", "cpu_intensive", 0.6),
    ("mc", "memory_bound", 0.7),
    ("mc", "io_intensive", 0.5),
    ("mc", "network_heavy", 0.6),
    ("mc", "general_purpose", 0.8),
    ("rm", "cpu_intensive", 0.5),
    ("rm", "memory_bound", 0.9),
    ("rm", "io_intensive", 0.4),
    ("rm", "network_heavy", 0.3),
    ("rm", "general_purpose", 0.7),
]


def test_spec_matrix_table_is_complete() -> None:
    """PFAP §3.3 has 6 groups × 5 specializations = 30 cells."""
    assert len(SPEC_MATRIX) == 30
    assert len({(g, s) for g, s, _ in SPEC_MATRIX}) == 30


@pytest.mark.parametrize(
    ("group", "specialization", "expected"),
    SPEC_MATRIX,
    ids=[f"{g}-{s}" for g, s, _ in SPEC_MATRIX],
)
def test_standard_matrix_cell_pfap_3_3(group: str, specialization: str, expected: float) -> None:
    """PFAP §3.3: each cell of the standard affinity matrix."""
    assert chem.STANDARD_MATRIX[group][specialization] == pytest.approx(expected, abs=1e-12)


def test_standard_matrix_has_no_extra_cells_pfap_3_3() -> None:
    """PFAP §3.3: exactly the six groups and five specializations, values in 0.0-1.0."""
    assert set(chem.STANDARD_MATRIX) == {"cf", "df", "ed", "co", "mc", "rm"}
    for row in chem.STANDARD_MATRIX.values():
        assert set(row) == {
            "cpu_intensive",
            "memory_bound",
            "io_intensive",
            "network_heavy",
            "general_purpose",
        }
        assert all(0.0 <= v <= 1.0 for v in row.values())
    assert chem.STANDARD_MATRIX_VERSION == "1.0"


def test_groups_and_specializations_pfap_3_1_3_2() -> None:
    """PFAP §3.1 six groups, §3.2 five specializations."""
    assert set(chem.GROUPS) == {"cf", "df", "ed", "co", "mc", "rm"}
    assert len(chem.GROUPS) == 6
    assert set(chem.SPECIALIZATIONS) == {
        "cpu_intensive",
        "memory_bound",
        "io_intensive",
        "network_heavy",
        "general_purpose",
    }
    assert len(chem.SPECIALIZATIONS) == 5


# ---------------------------------------------------------------- §6.2 preferences

# PFAP §6.2: group, implementation, preference.
SPEC_PREFERENCES = [
    ("cf", "elixir", 1.3),
    ("cf", "javascript", 1.0),
    ("cf", "zig", 1.1),
    ("df", "elixir", 1.0),
    ("df", "javascript", 1.2),
    ("df", "zig", 1.0),
    ("ed", "elixir", 1.1),
    ("ed", "javascript", 1.0),
    ("ed", "zig", 1.4),
    ("co", "elixir", 1.4),
    ("co", "javascript", 1.0),
    ("co", "zig", 1.1),
    ("mc", "elixir", 1.0),
    ("mc", "javascript", 1.3),
    ("mc", "zig", 1.0),
    ("rm", "elixir", 1.2),
    ("rm", "javascript", 1.0),
    ("rm", "zig", 1.3),
]


def test_spec_preference_table_is_complete() -> None:
    assert len(SPEC_PREFERENCES) == 18


@pytest.mark.parametrize(
    ("group", "implementation", "expected"),
    SPEC_PREFERENCES,
    ids=[f"{g}-{i}" for g, i, _ in SPEC_PREFERENCES],
)
def test_implementation_preference_pfap_6_2(
    group: str, implementation: str, expected: float
) -> None:
    """PFAP §6.2: default implementation preference per group."""
    assert chem.implementation_preference(group, implementation) == pytest.approx(expected)
    assert chem.IMPLEMENTATION_PREFERENCES[group][implementation] == pytest.approx(expected)


@pytest.mark.parametrize("group", ["cf", "df", "ed", "co", "mc", "rm"])
def test_python_and_unknown_implementations_default_to_1_design_5(group: str) -> None:
    """DESIGN §5: `python` is 1.0 unless configured; unknown implementations too."""
    assert chem.implementation_preference(group, "python") == 1.0
    assert chem.implementation_preference(group, "cobol") == 1.0


def test_implementation_preference_overrides_design_5() -> None:
    """DESIGN §5: "python is 1.0 unless configured" — a configured table wins."""
    overrides = {"df": {"python": 1.35}}
    assert chem.implementation_preference("df", "python", overrides) == pytest.approx(1.35)
    assert chem.implementation_preference("cf", "python", overrides) == 1.0


# ---------------------------------------------------------------- group base properties

# DESIGN §4 (= the spec's calculator pseudocode): reactivity / complexity / radius.
SPEC_GROUP_PROPERTIES = [
    ("cf", 0.6, 1.5, 1.2),
    ("df", 0.8, 1.0, 1.0),
    ("ed", 0.9, 0.8, 2.0),
    ("co", 0.4, 1.8, 3.0),
    ("mc", 0.3, 2.0, 2.5),
    ("rm", 0.5, 1.3, 1.5),
]


@pytest.mark.parametrize(
    ("group", "reactivity", "complexity", "radius"),
    SPEC_GROUP_PROPERTIES,
    ids=[row[0] for row in SPEC_GROUP_PROPERTIES],
)
def test_group_base_properties_design_4(
    group: str, reactivity: float, complexity: float, radius: float
) -> None:
    """DESIGN §4 / PFAP §3.1 and the calculator pseudocode: base properties per group."""
    props = chem.GROUP_PROPERTIES[group]  # type: ignore[index]
    assert props.reactivity == pytest.approx(reactivity)
    assert props.complexity == pytest.approx(complexity)
    assert props.radius == pytest.approx(radius)


def test_group_properties_cover_exactly_six_groups() -> None:
    assert set(chem.GROUP_PROPERTIES) == {"cf", "df", "ed", "co", "mc", "rm"}


# ---------------------------------------------------------------- chemical_properties()

# Message 2 of the spec's "Complete Packet Submission Flow" (df:transform, priority 7).
WIRE_EXAMPLE_CHEMICAL_PROPERTIES = {
    "reactivity": 0.8,
    "ionization_energy": 0.7,
    "atomic_radius": 1.0,
    "electronegativity": 0.56,
}


def test_chemical_properties_wire_example() -> None:
    """Wire example message 2: df, priority 7 → 0.8 / 0.7 / 1.0 / 0.56, exactly as sent."""
    props = chem.chemical_properties("df", 7)
    assert props.reactivity == 0.8
    assert props.ionization_energy == 0.7
    assert props.atomic_radius == 1.0
    assert props.electronegativity == 0.56
    # What goes on the wire is the literal of the example, not 0.5599999999999999.
    assert json.loads(json.dumps(asdict(props))) == WIRE_EXAMPLE_CHEMICAL_PROPERTIES
    assert "0.5599" not in json.dumps(asdict(props))


# group, priority → reactivity, ionization, radius, electronegativity (hand computed:
# ionization = priority/10 × complexity, electronegativity = priority/10 × reactivity).
CALCULATOR_CASES = [
    ("cf", 10, 0.6, 1.5, 1.2, 0.6),
    ("cf", 5, 0.6, 0.75, 1.2, 0.3),
    ("df", 1, 0.8, 0.1, 1.0, 0.08),
    ("ed", 5, 0.9, 0.4, 2.0, 0.45),
    ("ed", 9, 0.9, 0.72, 2.0, 0.81),
    ("co", 1, 0.4, 0.18, 3.0, 0.04),
    ("co", 8, 0.4, 1.44, 3.0, 0.32),
    ("mc", 3, 0.3, 0.6, 2.5, 0.09),
    ("mc", 10, 0.3, 2.0, 2.5, 0.3),
    ("rm", 8, 0.5, 1.04, 1.5, 0.4),
    ("rm", 6, 0.5, 0.78, 1.5, 0.3),
]


@pytest.mark.parametrize(
    ("group", "priority", "reactivity", "ionization", "radius", "electronegativity"),
    CALCULATOR_CASES,
    ids=[f"{c[0]}-p{c[1]}" for c in CALCULATOR_CASES],
)
def test_chemical_properties_calculator_design_4(
    group: str,
    priority: int,
    reactivity: float,
    ionization: float,
    radius: float,
    electronegativity: float,
) -> None:
    """DESIGN §4: reactivity = base; ionization = p/10 × complexity; radius = base radius
    (no dependencies); electronegativity = p/10 × reactivity."""
    props = chem.chemical_properties(group, priority)
    assert props.reactivity == pytest.approx(reactivity, abs=1e-9)
    assert props.ionization_energy == pytest.approx(ionization, abs=1e-9)
    assert props.atomic_radius == pytest.approx(radius, abs=1e-9)
    assert props.electronegativity == pytest.approx(electronegativity, abs=1e-9)


@pytest.mark.parametrize(
    ("group", "dependencies", "radius"),
    [
        ("df", 0, 1.0),
        ("df", 1, 1.1),
        ("df", 3, 1.3),
        ("cf", 2, 1.44),
        ("co", 2, 3.6),
        ("ed", 5, 3.0),
        ("mc", 10, 5.0),
        ("rm", 4, 2.1),
    ],
)
def test_atomic_radius_dependency_rule_design_4(
    group: str, dependencies: int, radius: float
) -> None:
    """DESIGN §4: atomic_radius = base radius × (1 + 0.1 × number of dependencies)."""
    props = chem.chemical_properties(group, 5, dependencies)
    assert props.atomic_radius == pytest.approx(radius, abs=1e-9)
    # Dependencies change only the radius.
    plain = chem.chemical_properties(group, 5)
    assert props.ionization_energy == plain.ionization_energy
    assert props.electronegativity == plain.electronegativity
    assert props.reactivity == plain.reactivity


def test_chemical_properties_unknown_group_raises() -> None:
    """chemical_properties documents KeyError for a group outside §3.1."""
    with pytest.raises(KeyError):
        chem.chemical_properties("zz", 5)


# ---------------------------------------------------------------- routing_score()


def _score(**overrides: object) -> float:
    args: dict[str, object] = {
        "base_affinity": 0.9,
        "load_ratio": 0.25,
        "priority": 8,
        "health": "healthy",
        "implementation_pref": 1.2,
        "hint_factor": 1.25,
    }
    args.update(overrides)
    return chem.routing_score(**args)  # type: ignore[arg-type]


def test_routing_score_multiplicative_form_design_5() -> None:
    """DESIGN §5: affinity × (1 − load) × priority/10 × health × implementation × hints.

    0.9 × 0.75 × 0.8 × 1.1 × 1.2 × 1.25 = 0.891.
    """
    assert _score() == pytest.approx(0.891)


def test_routing_score_default_hint_factor_is_neutral() -> None:
    """DESIGN §5: with no hints the factor is 1 (PFAP §6.1 formula)."""
    score = chem.routing_score(
        base_affinity=0.8, load_ratio=0.5, priority=10, health="healthy", implementation_pref=1.0
    )
    assert score == pytest.approx(0.8 * 0.5 * 1.0 * 1.1)


@pytest.mark.parametrize(
    ("factor", "value"),
    [
        ("base_affinity", 0.45),
        ("priority", 4),
        ("implementation_pref", 0.6),
        ("hint_factor", 0.625),
    ],
)
def test_routing_score_is_linear_in_each_factor_design_5(factor: str, value: float) -> None:
    """DESIGN §5: each factor multiplies the score (halving it halves the score)."""
    assert _score(**{factor: value}) == pytest.approx(_score() / 2)


def test_routing_score_load_factor_design_5() -> None:
    """PFAP §6.1 load_factor = 1 − load_ratio."""
    assert _score(load_ratio=0.0) == pytest.approx(0.9 * 1.0 * 0.8 * 1.1 * 1.2 * 1.25)
    assert _score(load_ratio=0.5) == pytest.approx(0.9 * 0.5 * 0.8 * 1.1 * 1.2 * 1.25)
    assert _score(load_ratio=1.0) == 0.0


@pytest.mark.parametrize(("load", "effective"), [(-0.5, 0.0), (-3.0, 0.0), (1.5, 1.0), (7.0, 1.0)])
def test_routing_score_clamps_load_ratio(load: float, effective: float) -> None:
    """Load ratio is clamped to 0.0-1.0: over-full never scores negative, under-zero never
    scores above an idle reactor."""
    assert _score(load_ratio=load) == pytest.approx(_score(load_ratio=effective))
    assert _score(load_ratio=load) >= 0.0


@pytest.mark.parametrize(
    ("health", "bonus"),
    [("healthy", 1.1), ("degraded", 0.5), ("recovery", 0.5)],
)
def test_routing_score_health_bonus_design_5(health: str, bonus: float) -> None:
    """DESIGN §5 / PFAP §6.1: health bonus 1.1 healthy, 0.5 degraded or recovery."""
    assert chem.HEALTH_BONUS[health] == pytest.approx(bonus)
    expected = 0.9 * 0.75 * 0.8 * bonus * 1.2 * 1.25
    assert _score(health=health) == pytest.approx(expected)


@pytest.mark.parametrize("health", ["unknown", "failed", "", "HEALTHY", "bogus"])
def test_routing_score_unknown_and_failed_not_eligible_design_5(health: str) -> None:
    """DESIGN §5: unknown and failed reactors are not eligible (score 0)."""
    assert _score(health=health) == 0.0


def test_routing_score_priority_weight_pfap_6_1() -> None:
    """PFAP §6.1 priority_weight = priority / 10 (0.1-1.0)."""
    assert _score(priority=10) / _score(priority=1) == pytest.approx(10.0)
    assert _score(priority=7) == pytest.approx(0.9 * 0.75 * 0.7 * 1.1 * 1.2 * 1.25)


# ---------------------------------------------------------------- hint_factor()


def _hint(**overrides: object) -> float:
    args: dict[str, object] = {
        "implementation": "python",
        "locality": "us-west-2",
        "preferred_implementation": None,
        "locality_preference": None,
        "affinity_boost": 0.0,
    }
    args.update(overrides)
    return chem.hint_factor(**args)  # type: ignore[arg-type]


def test_hint_factor_neutral_without_hints_design_5() -> None:
    assert _hint() == 1.0


def test_hint_factor_preferred_implementation_design_5() -> None:
    """DESIGN §5: ×1.25 for a preferred_implementation match, nothing otherwise."""
    assert chem.PREFERRED_IMPLEMENTATION_FACTOR == 1.25
    assert _hint(preferred_implementation="python") == pytest.approx(1.25)
    assert _hint(preferred_implementation="zig") == 1.0


def test_hint_factor_locality_design_5() -> None:
    """DESIGN §5: ×1.1 for a locality_preference match."""
    assert chem.LOCALITY_FACTOR == 1.1
    assert _hint(locality_preference="us-west-2") == pytest.approx(1.1)
    assert _hint(locality_preference="eu-central-1") == 1.0
    assert _hint(locality=None, locality_preference="us-west-2") == 1.0


@pytest.mark.parametrize(("boost", "factor"), [(0.1, 1.1), (0.2, 1.2), (-0.5, 0.5), (1.0, 2.0)])
def test_hint_factor_affinity_boost_design_5(boost: float, factor: float) -> None:
    """DESIGN §5: ×(1 + affinity_boost) for a reactor matching a stated preference
    (PFAP §4.2.1 sends boost 0.1 beside preferred_implementation)."""
    assert _hint(affinity_boost=boost, locality_preference="us-west-2") == pytest.approx(
        factor * 1.1
    )
    assert _hint(affinity_boost=boost, preferred_implementation="python") == pytest.approx(
        factor * 1.25
    )


def test_hint_factor_affinity_boost_skips_unmatched_reactors() -> None:
    """A boost applied to every candidate alike could never change a choice: it goes to
    the reactors that match the client's stated preference only."""
    assert _hint(affinity_boost=0.5) == 1.0
    assert _hint(affinity_boost=0.5, preferred_implementation="zig") == 1.0


def test_hint_factor_all_hints_multiply_design_5() -> None:
    """1.25 × 1.1 × (1 + 0.1) = 1.5125."""
    factor = _hint(
        preferred_implementation="python", locality_preference="us-west-2", affinity_boost=0.1
    )
    assert factor == pytest.approx(1.5125)


# ---------------------------------------------------------------- best_affinity()


@pytest.mark.parametrize(
    ("group", "specializations", "expected"),
    [
        ("cf", ["memory_bound", "cpu_intensive"], 0.9),
        ("cf", ["network_heavy"], 0.2),
        ("df", ["memory_bound", "general_purpose"], 0.9),
        ("ed", ["cpu_intensive", "memory_bound"], 0.3),
        ("ed", ["general_purpose", "network_heavy", "io_intensive"], 0.9),
        ("co", ["io_intensive", "network_heavy"], 0.9),
        ("co", ["cpu_intensive"], 0.4),
        ("mc", ["io_intensive", "cpu_intensive"], 0.6),
        ("rm", ["general_purpose", "io_intensive"], 0.7),
        ("rm", ["network_heavy", "quantum"], 0.3),
    ],
)
def test_best_affinity_takes_best_specialization_design_5(
    group: str, specializations: list[str], expected: float
) -> None:
    """DESIGN §5: base_affinity is the matrix value at the best of the reactor's
    specializations."""
    assert chem.best_affinity(chem.STANDARD_MATRIX, group, specializations) == pytest.approx(
        expected
    )
    assert chem.best_affinity(chem.STANDARD_MATRIX, group, tuple(specializations)) == pytest.approx(
        expected
    )


def test_best_affinity_unknowns_score_zero() -> None:
    assert chem.best_affinity(chem.STANDARD_MATRIX, "df", []) == 0.0
    assert chem.best_affinity(chem.STANDARD_MATRIX, "df", ["quantum"]) == 0.0
    assert chem.best_affinity(chem.STANDARD_MATRIX, "zz", ["cpu_intensive"]) == 0.0


def test_best_affinity_uses_the_given_matrix_pfap_6_4() -> None:
    """PFAP §6.4: routing uses the matrix as currently updated."""
    updated = chem.apply_matrix_updates(chem.STANDARD_MATRIX, {"cf": {"cpu_intensive": 0.95}})
    assert chem.best_affinity(updated, "cf", ["cpu_intensive"]) == pytest.approx(0.95)
    assert chem.best_affinity(chem.STANDARD_MATRIX, "cf", ["cpu_intensive"]) == pytest.approx(0.9)


# ---------------------------------------------------------------- apply_matrix_updates()


def test_apply_matrix_updates_spec_example_pfap_6_4() -> None:
    """PFAP §6.4 example: cf.cpu_intensive 0.95, df.memory_bound 0.85; the rest unchanged."""
    before = copy.deepcopy({g: dict(r) for g, r in chem.STANDARD_MATRIX.items()})
    updates = {"cf": {"cpu_intensive": 0.95}, "df": {"memory_bound": 0.85}}
    updates_before = copy.deepcopy(updates)
    new = chem.apply_matrix_updates(chem.STANDARD_MATRIX, updates)
    assert new["cf"]["cpu_intensive"] == pytest.approx(0.95)
    assert new["df"]["memory_bound"] == pytest.approx(0.85)
    changed = {(g, s) for g in new for s in new[g] if new[g][s] != before[g][s]}
    assert changed == {("cf", "cpu_intensive"), ("df", "memory_bound")}
    # Inputs untouched.
    assert {g: dict(r) for g, r in chem.STANDARD_MATRIX.items()} == before
    assert updates == updates_before
    assert chem.STANDARD_MATRIX["cf"]["cpu_intensive"] == pytest.approx(0.9)


def test_apply_matrix_updates_does_not_share_rows() -> None:
    """The returned matrix is a new object; mutating it leaves the input alone."""
    source = {g: dict(r) for g, r in chem.STANDARD_MATRIX.items()}
    new = chem.apply_matrix_updates(source, {})
    assert new == source
    new["cf"]["cpu_intensive"] = 0.1
    assert source["cf"]["cpu_intensive"] == pytest.approx(0.9)


@pytest.mark.parametrize("value", [0, 1, 0.0, 1.0, 0.5])
def test_apply_matrix_updates_bounds_inclusive(value: float) -> None:
    new = chem.apply_matrix_updates(chem.STANDARD_MATRIX, {"rm": {"io_intensive": value}})
    assert new["rm"]["io_intensive"] == pytest.approx(float(value))
    assert isinstance(new["rm"]["io_intensive"], float)


@pytest.mark.parametrize(
    ("updates", "names"),
    [
        ({"zz": {"cpu_intensive": 0.5}}, "zz"),
        ({"cf": {"gpu": 0.5}}, "cf.gpu"),
        ({"cf": {"cpu_intensive": 1.5}}, "cf.cpu_intensive"),
        ({"cf": {"cpu_intensive": -0.1}}, "cf.cpu_intensive"),
        ({"cf": {"cpu_intensive": math.nan}}, "cf.cpu_intensive"),
        ({"cf": {"cpu_intensive": "0.5"}}, "cf.cpu_intensive"),
        ({"cf": {"cpu_intensive": True}}, "cf.cpu_intensive"),
        ({"cf": {"cpu_intensive": None}}, "cf.cpu_intensive"),
    ],
)
def test_apply_matrix_updates_rejects_bad_entries_pfap_6_4(
    updates: dict[str, dict[str, object]], names: str
) -> None:
    """PFAP §6.4: unknown group/specialization or a value outside 0.0-1.0 raises ValueError
    naming the entry; the input matrix is unchanged."""
    source = {g: dict(r) for g, r in chem.STANDARD_MATRIX.items()}
    snapshot = copy.deepcopy(source)
    with pytest.raises(ValueError, match=names.replace(".", r"\.")):
        chem.apply_matrix_updates(source, updates)  # type: ignore[arg-type]
    assert source == snapshot


def test_apply_matrix_updates_partial_failure_leaves_input_untouched() -> None:
    """A good entry before a bad one is not applied to the input."""
    source = {g: dict(r) for g, r in chem.STANDARD_MATRIX.items()}
    snapshot = copy.deepcopy(source)
    with pytest.raises(ValueError):
        chem.apply_matrix_updates(source, {"cf": {"cpu_intensive": 0.1, "memory_bound": 2.0}})
    assert source == snapshot


def test_dynamic_adjustment_bound_design_5() -> None:
    """DESIGN §5: the learned adjustment is bounded to ±0.2."""
    assert pytest.approx(0.2) == chem.MAX_DYNAMIC_ADJUSTMENT
