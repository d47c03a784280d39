"""The chemical model: groups, specializations, the §3.3 affinity matrix, §6.2 preferences,
the DESIGN §4 property calculator and the DESIGN §5 routing score.

Every number the spec fixes about chemistry lives here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal

Group = Literal["cf", "df", "ed", "co", "mc", "rm"]
Specialization = Literal[
    "cpu_intensive", "memory_bound", "io_intensive", "network_heavy", "general_purpose"
]

GROUPS: Final[tuple[Group, ...]] = ("cf", "df", "ed", "co", "mc", "rm")
SPECIALIZATIONS: Final[tuple[Specialization, ...]] = (
    "cpu_intensive",
    "memory_bound",
    "io_intensive",
    "network_heavy",
    "general_purpose",
)


@dataclass(frozen=True, slots=True)
class GroupProperties:
    """Base properties of a packet group (§3.1 and the property-calculator pseudocode)."""

    reactivity: float
    complexity: float
    radius: float


# §3.1 reactivity/radius; complexity from the "Chemical Property Calculator" pseudocode.
GROUP_PROPERTIES: Final[Mapping[Group, GroupProperties]] = {
    "cf": GroupProperties(0.6, 1.5, 1.2),
    "df": GroupProperties(0.8, 1.0, 1.0),
    "ed": GroupProperties(0.9, 0.8, 2.0),
    "co": GroupProperties(0.4, 1.8, 3.0),
    "mc": GroupProperties(0.3, 2.0, 2.5),
    "rm": GroupProperties(0.5, 1.3, 1.5),
}

AffinityMatrix = Mapping[str, Mapping[str, float]]

# §3.3, the standard v1.0 matrix.
STANDARD_MATRIX: Final[AffinityMatrix] = {
    "cf": {"cpu_intensive": 0.9, "memory_bound": 0.4, "io_intensive": 0.3,
           "network_heavy": 0.2, "general_purpose": 0.6},
    "df": {"cpu_intensive": 0.8, "memory_bound": 0.9, "io_intensive": 0.7,
           "network_heavy": 0.6, "general_purpose": 0.8},
    "ed": {"cpu_intensive": 0.3, "memory_bound": 0.2, "io_intensive": 0.9,
           "network_heavy": 0.8, "general_purpose": 0.6},
    "co": {"cpu_intensive": 0.4, "memory_bound": 0.6, "io_intensive": 0.8,
           "network_heavy": 0.9, "general_purpose": 0.7},
    "mc": {"cpu_intensive": 0.6, "memory_bound": 0.7, "io_intensive": 0.5,
           "network_heavy": 0.6, "general_purpose": 0.8},
    "rm": {"cpu_intensive": 0.5, "memory_bound": 0.9, "io_intensive": 0.4,
           "network_heavy": 0.3, "general_purpose": 0.7},
}  # fmt: skip
STANDARD_MATRIX_VERSION: Final = "1.0"

# §6.2 implementation preferences; "python" (ours) is 1.0 unless configured (DESIGN §5).
IMPLEMENTATION_PREFERENCES: Final[Mapping[str, Mapping[str, float]]] = {
    "cf": {"elixir": 1.3, "javascript": 1.0, "zig": 1.1},
    "df": {"elixir": 1.0, "javascript": 1.2, "zig": 1.0},
    "ed": {"elixir": 1.1, "javascript": 1.0, "zig": 1.4},
    "co": {"elixir": 1.4, "javascript": 1.0, "zig": 1.1},
    "mc": {"elixir": 1.0, "javascript": 1.3, "zig": 1.0},
    "rm": {"elixir": 1.2, "javascript": 1.0, "zig": 1.3},
}
DEFAULT_IMPLEMENTATION_PREFERENCE: Final = 1.0

# DESIGN §5 health bonus: healthy 1.1, degraded/recovery 0.5; unknown and failed not eligible.
HEALTH_BONUS: Final[Mapping[str, float]] = {"healthy": 1.1, "degraded": 0.5, "recovery": 0.5}

# DESIGN §5 hint factors (§6.3.1).
PREFERRED_IMPLEMENTATION_FACTOR: Final = 1.25
LOCALITY_FACTOR: Final = 1.1
# DESIGN §5: the learned per-reactor adjustment of §6.3.2 is bounded to ±0.2.
MAX_DYNAMIC_ADJUSTMENT: Final = 0.2


def best_affinity(
    matrix: AffinityMatrix, group: str, specializations: tuple[str, ...] | list[str]
) -> float:
    """The matrix value at the reactor's best specialization for ``group`` (DESIGN §5).

    Unknown specializations count as 0; a reactor with none known scores 0.
    """
    row = matrix.get(group)
    if not row:
        return 0.0
    return max((row.get(s, 0.0) for s in specializations), default=0.0)


def implementation_preference(
    group: str,
    implementation: str,
    overrides: Mapping[str, Mapping[str, float]] | None = None,
) -> float:
    """§6.2 preference for ``implementation`` running ``group`` (1.0 for unknown ones)."""
    table = overrides if overrides is not None else IMPLEMENTATION_PREFERENCES
    return table.get(group, {}).get(implementation, DEFAULT_IMPLEMENTATION_PREFERENCE)


@dataclass(frozen=True, slots=True)
class ChemicalProperties:
    reactivity: float
    ionization_energy: float
    atomic_radius: float
    electronegativity: float


def chemical_properties(group: str, priority: int, dependency_count: int = 0) -> ChemicalProperties:
    """DESIGN §4's calculator; matches the wire example (df, priority 7 → 0.7, 0.56).

    Raises KeyError for an unknown group (callers validate groups first).
    """
    base = GROUP_PROPERTIES[group]  # type: ignore[index]
    weight = priority / 10.0
    return ChemicalProperties(
        reactivity=base.reactivity,
        ionization_energy=round(weight * base.complexity, 6),
        atomic_radius=round(base.radius * (1.0 + 0.1 * dependency_count), 6),
        electronegativity=round(weight * base.reactivity, 6),
    )


def routing_score(
    *,
    base_affinity: float,
    load_ratio: float,
    priority: int,
    health: str,
    implementation_pref: float,
    hint_factor: float = 1.0,
) -> float:
    """DESIGN §5: affinity × (1 − load) × priority/10 × health × implementation × hints.

    ``base_affinity`` already includes the dynamic adjustment. A reactor whose health is
    not in HEALTH_BONUS (unknown, failed) scores 0 and must not be chosen.
    """
    bonus = HEALTH_BONUS.get(health, 0.0)
    load = min(max(load_ratio, 0.0), 1.0)
    return (
        base_affinity * (1.0 - load) * (priority / 10.0) * bonus * implementation_pref * hint_factor
    )


def hint_factor(
    *,
    implementation: str,
    locality: str | None,
    preferred_implementation: str | None,
    locality_preference: str | None,
    affinity_boost: float,
) -> float:
    """The §6.3.1 client-hint multiplier of DESIGN §5.

    ×1.25 for a ``preferred_implementation`` match, ×1.1 for a ``locality_preference``
    match, and ×(1 + ``affinity_boost``) for a reactor that matches a stated preference.
    The boost goes to matching reactors only: applied to every candidate alike it would
    never change a choice, and §4.2.1 sends it beside ``preferred_implementation``.
    """
    factor = 1.0
    matched = False
    if preferred_implementation is not None and preferred_implementation == implementation:
        factor *= PREFERRED_IMPLEMENTATION_FACTOR
        matched = True
    if locality_preference is not None and locality is not None and locality == locality_preference:
        factor *= LOCALITY_FACTOR
        matched = True
    return factor * (1.0 + affinity_boost) if matched else factor


def apply_matrix_updates(
    matrix: AffinityMatrix, updates: Mapping[str, Mapping[str, float]]
) -> dict[str, dict[str, float]]:
    """A new matrix with §6.4 ``matrix_updates`` applied; the input is not changed.

    Raises ValueError naming the bad entry for an unknown group/specialization or a value
    outside 0.0-1.0.
    """
    out = {g: dict(row) for g, row in matrix.items()}
    for group, row in updates.items():
        if group not in GROUP_PROPERTIES:
            raise ValueError(f"matrix_updates.{group}: unknown packet group")
        for spec, value in row.items():
            if spec not in SPECIALIZATIONS:
                raise ValueError(f"matrix_updates.{group}.{spec}: unknown specialization")
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise ValueError(f"matrix_updates.{group}.{spec}: must be a number")
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"matrix_updates.{group}.{spec}: must be within 0.0-1.0")
            out[group][spec] = float(value)
    return out
