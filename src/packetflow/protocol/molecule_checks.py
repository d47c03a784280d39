"""The §7.3 phase 1 checks a COORDINATE ``validate`` asks for, each run and reported, and
the §7.3 phase 2 plan of what a ``reserve`` holds on which reactor.

Pure: the reactors arrive as ``ReactorOffer`` values (what each announced, §8.2, and
whether it can take work now); nothing here reads the registry or sends anything.

The checks (DESIGN §7 names their codes):

- ``packet_availability``: every packet's ``group:element`` is served by a reactor that
  can take work now (healthy, degraded or recovering); PF003 naming the packets.
- ``bond_consistency``: every bond's ``conditions`` agree with its type: only an ionic
  bond requires its source's success (``success_required: true`` on another type is a
  contradiction); PF102.
- ``reactor_compatibility``: some registered reactor announces each ``group:element``
  (whatever its health) and the bond types the molecule uses (§8.2
  ``molecular_support.supported_bond_types``); PF003.
- ``resource_requirements``: for each packet that states ``resource_requirements``, some
  reactor serving it announced at least that ``memory_capacity_mb`` and ``cpu_cores``
  (§8.2 ``performance_characteristics``); PF501 ("scale up": no reactor is big enough).
- ``circular_dependency_detection``: the bonds form no cycle; PF102 with the cycle.

Structural problems that stop a molecule from being parsed at all (a dangling bond, a
cycle, a duplicate bond) are raised by ``molecules.parse_molecule``; ``structural_result``
turns such an error into the failed check it belongs to.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from .errors import (
    BondFormationFailed,
    NoReactorAvailable,
    OutOfMemory,
    PacketFlowError,
    invalid_field,
    json_type,
)
from .molecules import Molecule, find_cycle, stages

VALIDATION_CHECKS: Final = (
    "packet_availability",
    "bond_consistency",
    "reactor_compatibility",
    "resource_requirements",
    "circular_dependency_detection",
)
# parse_molecule's PF102 rules and the check each belongs to.
_RULE_CHECK: Final[Mapping[str, str]] = {
    "known_packet": "packet_availability",
    "unique_bond": "bond_consistency",
    "acyclic": "circular_dependency_detection",
}
# Packets named in one failed check's problems: the rest is counted, not listed.
MAX_PROBLEMS: Final = 50


@dataclass(frozen=True, slots=True)
class ReactorOffer:
    """What one reactor offers a molecule, from its announce (§8.2) and its health."""

    reactor_id: str
    capabilities: frozenset[tuple[str, str]]
    routable: bool
    memory_mb: float | None = None  # performance_characteristics.memory_capacity_mb
    cpu_cores: int | None = None
    bond_types: frozenset[str] | None = None  # None: not announced (assume all)


@dataclass(frozen=True, slots=True)
class CheckResult:
    check: str
    passed: bool
    problems: tuple[dict[str, Any], ...] = ()
    error: PacketFlowError | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "check": self.check,
            "passed": self.passed,
            "problems": list(self.problems),
        }
        if self.error is not None:
            out["error_code"] = self.error.code
        return out


def parse_checks(value: Any, path: str) -> tuple[str, ...]:
    """``validation_checks``: absent or null = all five; else a list of their names (no
    duplicates kept). PF002 naming the bad entry."""
    if value is None:
        return VALIDATION_CHECKS
    if not isinstance(value, list):
        raise invalid_field(path, "array of check names", json_type(value), "type")
    out: list[str] = []
    for i, name in enumerate(value):
        if name not in VALIDATION_CHECKS:
            raise invalid_field(
                f"{path}[{i}]",
                "one of " + ", ".join(VALIDATION_CHECKS),
                repr(name) if isinstance(name, str) else json_type(name),
                "enum",
            )
        if name not in out:
            out.append(name)
    return tuple(out)


def structural_result(err: BondFormationFailed) -> CheckResult | None:
    """The failed check a parse-time PF102 belongs to, or None if it belongs to none."""
    check = _RULE_CHECK.get(err.validation_rule or "")
    if check is None:
        return None
    problem = {"field": err.field, "message": err.message, **err.details}
    return CheckResult(check, False, (problem,), err)


def _capped(problems: list[dict[str, Any]]) -> tuple[dict[str, Any], ...]:
    if len(problems) <= MAX_PROBLEMS:
        return tuple(problems)
    more = len(problems) - MAX_PROBLEMS
    return (*problems[:MAX_PROBLEMS], {"more": more})


def _serving(offers: Sequence[ReactorOffer], group: str, element: str) -> list[ReactorOffer]:
    return [o for o in offers if (group, element) in o.capabilities]


def check_availability(molecule: Molecule, offers: Sequence[ReactorOffer]) -> CheckResult:
    problems = [
        {
            "packet_id": p.id,
            "element": f"{p.group}:{p.element}",
            "registered": len(_serving(offers, p.group, p.element)),
        }
        for p in molecule.packets
        if not any(o.routable for o in _serving(offers, p.group, p.element))
    ]
    if not problems:
        return CheckResult("packet_availability", True)
    err = NoReactorAvailable(
        f"No reactor can take {len(problems)} packet(s) of molecule {molecule.molecule_id!r} now",
        validation_rule="packet_availability",
        details={"unavailable_packets": [p["packet_id"] for p in problems][:MAX_PROBLEMS]},
    )
    return CheckResult("packet_availability", False, _capped(problems), err)


def check_bonds(molecule: Molecule) -> CheckResult:
    problems = []
    for bond in molecule.bonds:
        conditions = bond.conditions or {}
        if conditions.get("success_required") is True and bond.type != "ionic":
            problems.append(
                {
                    "field": bond.origin or None,
                    "from": bond.source,
                    "to": bond.target,
                    "type": bond.type,
                    "message": f"a {bond.type} bond never requires its "
                    "source's success; success_required: true needs an ionic bond",
                }
            )
    if not problems:
        return CheckResult("bond_consistency", True)
    err = BondFormationFailed(
        f"{len(problems)} bond(s) of molecule {molecule.molecule_id!r} contradict their type",
        field=problems[0]["field"],
        validation_rule="bond_consistency",
        details={"bonds": [{"from": p["from"], "to": p["to"]} for p in problems][:MAX_PROBLEMS]},
    )
    return CheckResult("bond_consistency", False, _capped(problems), err)


def check_compatibility(molecule: Molecule, offers: Sequence[ReactorOffer]) -> CheckResult:
    problems: list[dict[str, Any]] = []
    used = {b.type for b in molecule.bonds}
    for p in molecule.packets:
        serving = _serving(offers, p.group, p.element)
        if not serving:
            problems.append(
                {
                    "packet_id": p.id,
                    "element": f"{p.group}:{p.element}",
                    "message": "no reactor announces this element",
                }
            )
            continue
        # The bond types this packet takes part in, against what its reactors announce.
        mine = {b.type for b in molecule.bonds if p.id in (b.source, b.target)} & used
        if mine and not any(o.bond_types is None or mine <= o.bond_types for o in serving):
            problems.append(
                {
                    "packet_id": p.id,
                    "element": f"{p.group}:{p.element}",
                    "bond_types": sorted(mine),
                    "message": "no reactor serving it supports these bond types",
                }
            )
    if not problems:
        return CheckResult("reactor_compatibility", True)
    unsupported = sorted({p["element"] for p in problems if "bond_types" not in p})
    err = NoReactorAvailable(
        f"No reactor is compatible with {len(problems)} packet(s) of molecule "
        f"{molecule.molecule_id!r}",
        validation_rule="reactor_compatibility",
        details={
            "unsupported": unsupported,
            "incompatible_packets": [p["packet_id"] for p in problems][:MAX_PROBLEMS],
        },
    )
    return CheckResult("reactor_compatibility", False, _capped(problems), err)


def _fits(offer: ReactorOffer, needs: Mapping[str, float]) -> bool:
    memory = needs.get("memory_mb")
    cores = needs.get("cpu_cores")
    if memory is not None and offer.memory_mb is not None and memory > offer.memory_mb:
        return False
    return not (cores is not None and offer.cpu_cores is not None and cores > offer.cpu_cores)


def check_resources(molecule: Molecule, offers: Sequence[ReactorOffer]) -> CheckResult:
    """A reactor that announced no figure is not held against a requirement it cannot
    be compared with (the spec makes performance_characteristics optional)."""
    problems: list[dict[str, Any]] = []
    for i, p in enumerate(molecule.packets):
        if not p.resources:
            continue
        serving = _serving(offers, p.group, p.element)
        if serving and not any(_fits(o, p.resources) for o in serving):
            best = max(serving, key=lambda o: (o.memory_mb or 0.0, o.cpu_cores or 0))
            problems.append(
                {
                    "packet_id": p.id,
                    "field": f"packets[{i}].resource_requirements",
                    "required": dict(p.resources),
                    "largest_offer": {
                        "reactor_id": best.reactor_id,
                        "memory_mb": best.memory_mb,
                        "cpu_cores": best.cpu_cores,
                    },
                }
            )
    if not problems:
        return CheckResult("resource_requirements", True)
    err = OutOfMemory(
        f"No reactor announces the resources {len(problems)} packet(s) of molecule "
        f"{molecule.molecule_id!r} require",
        field=problems[0]["field"],
        validation_rule="resource_requirements",
        details={
            "packets": [p["packet_id"] for p in problems][:MAX_PROBLEMS],
            "required": problems[0]["required"],
            "largest_offer": problems[0]["largest_offer"],
        },
    )
    return CheckResult("resource_requirements", False, _capped(problems), err)


def check_cycles(molecule: Molecule) -> CheckResult:
    found = find_cycle(molecule)
    if found is None:
        return CheckResult("circular_dependency_detection", True)
    cycle, bond = found
    err = BondFormationFailed(
        "Bonds form a cycle: " + " -> ".join(cycle),
        field=bond.origin or None,
        validation_rule="acyclic",
        details={"cycle": cycle},
    )
    return CheckResult("circular_dependency_detection", False, ({"cycle": cycle},), err)


def run_checks(
    molecule: Molecule, checks: Iterable[str], offers: Sequence[ReactorOffer]
) -> list[CheckResult]:
    """Each named check on a parsed molecule, in the order asked."""
    table = {
        "packet_availability": lambda: check_availability(molecule, offers),
        "bond_consistency": lambda: check_bonds(molecule),
        "reactor_compatibility": lambda: check_compatibility(molecule, offers),
        "resource_requirements": lambda: check_resources(molecule, offers),
        "circular_dependency_detection": lambda: check_cycles(molecule),
    }
    return [table[name]() for name in checks]


# ---------------------------------------------------------------- §7.3 phase 2


def reservation_needs(
    molecule: Molecule, assignment: Mapping[str, str]
) -> dict[str, dict[str, float]]:
    """What to hold on each reactor for a molecule whose packet ``p`` goes to reactor
    ``assignment[p]``: per reactor, the largest sum over one stage of its packets'
    requirements (packets of one stage may run at once; stages run one after another).
    A packet without ``resource_requirements`` holds nothing: it still takes one of its
    reactor's concurrency slots while it runs, as any packet does.
    """
    depth = stages(molecule)
    per_stage: dict[str, dict[int, list[float]]] = {}
    for p in molecule.packets:
        reactor = assignment.get(p.id)
        if reactor is None:
            continue
        needs = p.resources or {}
        totals = per_stage.setdefault(reactor, {}).setdefault(depth[p.id], [0.0, 0.0])
        totals[0] += float(needs.get("memory_mb", 0.0))
        totals[1] += float(needs.get("cpu_cores", 0))
    return {
        reactor: {
            "memory_mb": max(t[0] for t in by_stage.values()),
            "cpu_cores": max(t[1] for t in by_stage.values()),
        }
        for reactor, by_stage in per_stage.items()
    }
