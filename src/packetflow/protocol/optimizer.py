"""§7.4 molecule optimization: suggestions from a molecule's structure and what its runs
observed (bond strengths, reactor locality, parallelization), with the critical path before
and after. Pure: the coordinator gathers the observations and applies what it chooses."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Final

from .messages import encode_json
from .molecules import (
    DEFAULT_STRENGTH,
    Bond,
    Molecule,
    MoleculePacket,
    blocking_sources,
    topological_order,
)

# §7.4.2: a bond carrying at least this much data counts as "frequent_data_exchange".
LOCALITY_MIN_BYTES: Final = 64 * 1024
# §7.4.2's example affinity_boost for a locality group.
LOCALITY_AFFINITY_BOOST: Final = 0.2
# A weakened bond keeps at least this strength (0 would drop it from stability).
MIN_SUGGESTED_STRENGTH: Final = 0.1
# Elements known to read no upstream inputs (DESIGN §10): chains into them carry no data.
_INPUT_FREE_ELEMENTS: Final = frozenset({("cf", "ping"), ("cf", "health"), ("cf", "introspect")})


class _UnionFind:
    """Packets joined into groups; calling it gives a packet's group representative."""

    def __init__(self, items: Iterable[str]) -> None:
        self._parent = {x: x for x in items}

    def __call__(self, x: str) -> str:
        parent = self._parent
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def join(self, a: str, b: str) -> None:
        self._parent[self(a)] = self(b)


@dataclass(frozen=True, slots=True)
class Observed:
    """What a run saw of one packet (from ``MoleculeRun.snapshot()``)."""

    state: str
    attempts: int
    failed_attempts: int
    duration_ms: float | None
    reactor_id: str | None
    result_bytes: int


def observed_from_snapshot(snapshot: Mapping[str, Any]) -> dict[str, Observed]:
    out: dict[str, Observed] = {}
    for pid, t in snapshot.get("packets", {}).items():
        began = t.get("dispatched_at") if t.get("dispatched_at") is not None else t.get(
            "issued_at")  # fmt: skip
        end = t.get("finished_at")
        duration = (end - began) * 1000 if began is not None and end is not None else None
        result = t.get("result")
        size = len(encode_json(result)) if result is not None else 0
        out[pid] = Observed(t.get("state", "pending"), int(t.get("attempts", 0)),
                            int(t.get("failed_attempts", 0)), duration, t.get("reactor_id"),
                            size)  # fmt: skip
    return out


@dataclass(slots=True)
class Suggestions:
    adjustments: list[dict[str, Any]]
    locality: list[dict[str, Any]]
    parallel: list[dict[str, Any]]
    expected_improvement: dict[str, Any]
    structure: dict[str, Any]


def _carries_data(bond: Bond, target: MoleculePacket) -> bool:
    """Whether ``bond`` may carry data into ``target`` (DESIGN §10 input rule): a bond
    that names a data_flow does; a target with an explicit ``data.input`` (df/mc), inline
    ``rows`` or a ``source`` (df:load), or a control element that reads no inputs does
    not. Anything else (user elements) is assumed to read ``ctx.inputs``."""
    conditions = bond.conditions or {}
    if conditions.get("data_flow"):
        return True
    data = target.data if isinstance(target.data, dict) else {}
    if target.group in ("df", "mc") and any(k in data for k in ("input", "rows", "source")):
        return False
    return (target.group, target.element) not in _INPUT_FREE_ELEMENTS


def _critical_path_ms(
    molecule: Molecule, bonds: Iterable[Bond], duration: Callable[[str], float]
) -> float:
    blocking = [b for b in bonds if b.blocking]
    finish: dict[str, float] = {}
    incoming = blocking_sources(molecule.packet_ids, blocking)
    for pid in topological_order(molecule.packet_ids, blocking):
        start = max((finish[s] for s in incoming[pid]), default=0.0)
        finish[pid] = start + duration(pid)
    return max(finish.values(), default=0.0)


def suggest(
    molecule: Molecule,
    bonds: list[Bond],
    observed: Mapping[str, Observed],
    expected_ms: Callable[[MoleculePacket], float | None],
    reactors_for: Callable[[MoleculePacket], set[str]],
    *,
    wanted: set[str],
) -> Suggestions:
    """§7.4's three optimizations, from the structure and what was observed.

    - bond_strength (§7.4.1, §10.4.1): a bond whose source failed attempts is weakened in
      proportion ("observed_source_failures"); a data-free ionic bond drops to metallic's
      strength ("observed_parallel_capability"); a bond below its type's nominal strength
      (§7.2) whose source succeeded first time is strengthened ("successful_path").
    - locality (§7.4.2): covalent pairs, and pairs exchanging ≥ LOCALITY_MIN_BYTES, grouped
      on the reactor that ran most of them (else any reactor serving all their elements).
    - parallelization (§7.4.3): chains of ionic bonds that carry no data and do not
      require success become metallic (DESIGN §7: never waits; vdw would still wait and
      would make the target an observer).
    ``expected_improvement`` compares the critical path (observed or historical durations)
    before and after. ``structure`` is the molecule with every suggestion applied.
    """
    packets = {p.id: p for p in molecule.packets}

    def duration(pid: str) -> float:
        seen = observed.get(pid)
        if seen is not None and seen.duration_ms is not None:
            return seen.duration_ms
        return expected_ms(packets[pid]) or 0.0

    free = [
        b for b in bonds
        if b.type == "ionic" and not _carries_data(b, packets[b.target])
        and not (b.conditions or {}).get("success_required")
    ]  # fmt: skip
    free_pairs = {(b.source, b.target) for b in free}

    adjustments: list[dict[str, Any]] = []
    if "bond_strength" in wanted:
        for bond in bonds:
            seen = observed.get(bond.source)
            nominal = DEFAULT_STRENGTH[bond.type]
            new: float | None = None
            reason = ""
            if seen is not None and seen.attempts > 0 and seen.failed_attempts > 0:
                ratio = min(seen.failed_attempts / seen.attempts, 1.0)
                candidate = round(max(MIN_SUGGESTED_STRENGTH, bond.strength * (1 - ratio)), 2)
                if candidate < bond.strength:
                    new, reason = candidate, "observed_source_failures"
            elif (bond.source, bond.target) in free_pairs and bond.strength > DEFAULT_STRENGTH[
                "metallic"
            ]:
                new, reason = DEFAULT_STRENGTH["metallic"], "observed_parallel_capability"
            elif (
                seen is not None and seen.state == "succeeded" and seen.failed_attempts == 0
                and bond.strength < nominal - 0.05
            ):  # fmt: skip
                new, reason = nominal, "successful_path"
            if new is not None:
                adjustments.append({
                    "bond_id": bond.id or f"{bond.source}->{bond.target}",
                    "from": bond.source, "to": bond.target, "bond_type": bond.type,
                    "old_strength": bond.strength, "new_strength": new, "reason": reason,
                })  # fmt: skip

    locality: list[dict[str, Any]] = []
    if "locality" in wanted:
        root = _UnionFind(packets)
        reasons: dict[tuple[str, str], str] = {}
        for bond in bonds:
            seen = observed.get(bond.source)
            if bond.type == "covalent":
                reasons[(bond.source, bond.target)] = "covalent_bond"
            elif (bond.type == "ionic" and seen is not None
                  and seen.result_bytes >= LOCALITY_MIN_BYTES):  # fmt: skip
                reasons[(bond.source, bond.target)] = "frequent_data_exchange"
            else:
                continue
            root.join(bond.source, bond.target)
        groups: dict[str, list[str]] = {}
        for pid in molecule.packet_ids:
            if any(pid in pair for pair in reasons):
                groups.setdefault(root(pid), []).append(pid)
        for members in groups.values():
            if len(members) < 2:
                continue
            common: set[str] | None = None
            for pid in members:
                serving = reactors_for(packets[pid])
                common = serving if common is None else common & serving
            ran = [observed[p].reactor_id for p in members
                   if p in observed and observed[p].reactor_id]  # fmt: skip
            preferred = None
            for rid in sorted(set(ran), key=lambda r: (-ran.count(r), r)):
                if common is None or rid in common or not common:
                    preferred = rid
                    break
            if preferred is None and common:
                preferred = sorted(common)[0]
            why = {reasons[p] for p in reasons if p[0] in members}
            locality.append({
                "packet_group": members, "preferred_reactor": preferred,
                "reason": "frequent_data_exchange" if "frequent_data_exchange" in why
                else "covalent_bond",
                "affinity_boost": LOCALITY_AFFINITY_BOOST,
                "observed_reactors": {p: observed[p].reactor_id for p in members
                                      if p in observed and observed[p].reactor_id},
            })  # fmt: skip

    parallel: list[dict[str, Any]] = []
    if "parallelization" in wanted and free:
        chains = _UnionFind(packets)
        for bond in free:
            chains.join(bond.source, bond.target)
        comps: dict[str, list[Bond]] = {}
        for bond in free:
            comps.setdefault(chains(bond.source), []).append(bond)
        for comp in comps.values():
            members = [p for p in molecule.packet_ids
                       if any(p in (b.source, b.target) for b in comp)]  # fmt: skip
            parallel.append({
                "packets": members,
                "bonds": [{"from": b.source, "to": b.target} for b in comp],
                "original_bonds": [b.type for b in comp],
                "optimized_bonds": ["metallic"] * len(comp),
                "safety_analysis": "no_data_flow_detected",
            })  # fmt: skip

    converted = {(pair["from"], pair["to"]) for g in parallel for pair in g["bonds"]}
    new_strength = {(a["from"], a["to"]): a["new_strength"] for a in adjustments}
    after = [
        replace(
            b,
            type="metallic" if (b.source, b.target) in converted else b.type,
            strength=new_strength.get((b.source, b.target), b.strength),
        )
        for b in bonds
    ]
    before_ms = _critical_path_ms(molecule, bonds, duration)
    after_ms = _critical_path_ms(molecule, after, duration)
    reduction = max(before_ms - after_ms, 0.0)
    improvement = {
        "latency_reduction_ms": round(reduction, 3),
        "throughput_increase_percent": round((before_ms / after_ms - 1) * 100, 1)
        if after_ms > 0 else 0.0,
        "critical_path_ms_before": round(before_ms, 3),
        "critical_path_ms_after": round(after_ms, 3),
    }  # fmt: skip
    structure = molecule.to_dict()
    structure["bonds"] = [b.to_dict() for b in after]
    return Suggestions(adjustments, locality, parallel, improvement, structure)
