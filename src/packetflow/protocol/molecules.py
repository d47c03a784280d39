"""The molecule model of PFAP §7: parsing both structure spellings, phase-1 validation
(§7.3, DESIGN §7), stage numbers and stability.

Everything here is pure: a molecule is parsed and validated once, at the edge, into frozen
dataclasses; the planner (``planner.py``) runs it. Nothing executes before validation.

How validation reports problems (DESIGN §3, §7):

- a malformed field (wrong type, unknown bond type, strength outside 0-1, duplicate packet
  id, too many packets, bad group/element) is PF002 with ``error_details.field`` = the JSON
  path of the field, e.g. ``molecular_structure.bonds[2].type``;
- a bond or dependency naming an unknown packet, a duplicate bond between the same pair,
  or a cycle is PF102 (``error_details.cycle`` = the cycle's path, first id repeated last);
- an element no reactor supports is PF003 (``error_details.unsupported``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, cast

from .chemistry import GROUPS
from .errors import BondFormationFailed, InvalidPacket, NoReactorAvailable, invalid_field, json_type
from .packets import (
    ELEMENT_NAME,
    PACKET_ID_MAX_LEN,
    PRIORITY_MAX,
    PRIORITY_MIN,
    unknown_group,
)

BondType = Literal["ionic", "covalent", "metallic", "vdw"]
FaultTolerance = Literal["fail_fast", "retry_failed_stages", "isolate_and_continue"]

BOND_TYPES: Final[tuple[BondType, ...]] = ("ionic", "covalent", "metallic", "vdw")
# DESIGN §7: `vdw` = `vanderwaal` (§7.4.3's spelling) = `van_der_waals`.
BOND_ALIASES: Final[Mapping[str, BondType]] = {
    "ionic": "ionic",
    "covalent": "covalent",
    "metallic": "metallic",
    "vdw": "vdw",
    "vanderwaal": "vdw",
    "van_der_waals": "vdw",
}
# §7.2.1-§7.2.4: the strength of each bond type, used when a bond gives none.
DEFAULT_STRENGTH: Final[Mapping[BondType, float]] = {
    "ionic": 1.0,
    "covalent": 0.8,
    "metallic": 0.6,
    "vdw": 0.3,
}
# DESIGN §7: bond types whose target waits for the source to finish (ionic: to succeed).
# Metallic is an ordering hint only and never blocks.
BLOCKING_BOND_TYPES: Final[frozenset[BondType]] = frozenset({"ionic", "covalent", "vdw"})

FAULT_TOLERANCES: Final[tuple[FaultTolerance, ...]] = (
    "fail_fast",
    "retry_failed_stages",
    "isolate_and_continue",
)

# Limits (STYLE 5). The spec fixes none of them.
# A molecule of more than this many packets is refused (PF002 "max_molecule_size"); the
# planner's per-event work is linear in the molecule, so this bounds one event's cost.
MAX_MOLECULE_PACKETS: Final = 1000
# Bonds per packet on average (a dense 1000-packet DAG would otherwise hold ~500k bonds).
MAX_BONDS_PER_PACKET: Final = 10
# §7.1 and the wire example both give max_retries; 3 is §7.1's value and the
# "retry_with_delay" option of §10.2.
DEFAULT_MAX_RETRIES: Final = 3
# Retries are per packet; more than this is a runaway molecule, not resilience.
MAX_MAX_RETRIES: Final = 10


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and not (isinstance(value, float) and math.isnan(value))
    )


# ---------------------------------------------------------------- the model


def _with_set(out: dict[str, Any], **optional: Any) -> dict[str, Any]:
    """``out`` plus each optional field that is set (None: left off the wire form)."""
    out.update((name, value) for name, value in optional.items() if value is not None)
    return out


@dataclass(frozen=True, slots=True)
class MoleculePacket:
    """One packet of a molecule (§7.1). ``priority``/``timeout_ms`` None = the element's
    defaults (DESIGN §4), applied when the packet is submitted."""

    id: str
    group: str
    element: str
    data: Any = field(default_factory=dict)
    priority: int | None = None
    timeout_ms: int | None = None
    dependencies: tuple[str, ...] = ()
    position: Mapping[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return _with_set(
            {"id": self.id, "group": self.group, "element": self.element, "data": self.data},
            priority=self.priority,
            timeout_ms=self.timeout_ms,
            dependencies=list(self.dependencies) if self.dependencies else None,
            position=dict(self.position) if self.position is not None else None,
        )


@dataclass(frozen=True, slots=True)
class Bond:
    """A bond from ``source`` (wire ``from``/``from_packet``) to ``target`` (``to``/
    ``to_packet``) with a canonical type (§7.2, DESIGN §7).

    ``origin`` is the JSON path where the bond was declared (a ``bonds[i]`` entry or a
    ``packets[i].dependencies[j]`` entry); it only serves error details.
    """

    source: str
    target: str
    type: BondType
    strength: float
    id: str | None = None
    conditions: Mapping[str, Any] | None = None
    origin: str = field(default="", compare=False)

    @property
    def blocking(self) -> bool:
        """Whether the target waits for the source to finish (DESIGN §7)."""
        return self.type in BLOCKING_BOND_TYPES

    def to_dict(self) -> dict[str, Any]:
        return _with_set(
            {"from": self.source, "to": self.target, "type": self.type,
             "strength": self.strength},
            id=self.id,
            conditions=dict(self.conditions) if self.conditions is not None else None,
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class MoleculeProperties:
    """§7.1 ``properties`` as DESIGN §7 reads them.

    ``max_retries`` is per packet; ``timeout_ms`` bounds the whole molecule (None: no
    molecule deadline, each packet still has its own timeout); ``stability_threshold`` 0.0
    never warns; ``extra`` keeps properties this version does not interpret (§4.2.6's
    ``stability``, ``total_energy``).
    """

    max_retries: int = DEFAULT_MAX_RETRIES
    timeout_ms: int | None = None
    fault_tolerance: FaultTolerance = "fail_fast"
    stability_threshold: float = 0.0
    healing: bool = False
    optimization_target: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.extra)
        out.update(
            max_retries=self.max_retries,
            fault_tolerance=self.fault_tolerance,
            stability_threshold=self.stability_threshold,
            healing=self.healing,
        )
        return _with_set(out, timeout_ms=self.timeout_ms,
                         optimization_target=self.optimization_target)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Molecule:
    """A parsed, structurally valid molecule. Bonds include those implied by packets'
    ``dependencies`` (ionic, DESIGN §7); packets keep their declaration order."""

    molecule_id: str
    packets: tuple[MoleculePacket, ...]
    bonds: tuple[Bond, ...] = ()
    properties: MoleculeProperties = field(default_factory=MoleculeProperties)
    version: str | None = None
    _index: Mapping[str, MoleculePacket] = field(
        init=False, repr=False, compare=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {p.id: p for p in self.packets})

    def packet(self, packet_id: str) -> MoleculePacket:
        """The packet with this id; KeyError if there is none."""
        return self._index[packet_id]

    def __contains__(self, packet_id: object) -> bool:
        return packet_id in self._index

    @property
    def packet_ids(self) -> tuple[str, ...]:
        return tuple(p.id for p in self.packets)

    def to_dict(self) -> dict[str, Any]:
        """The canonical §7.1 form (every bond spelled ``{from, to, type, strength}``);
        ``parse_molecule`` of it gives back an equal molecule."""
        return _with_set(
            {
                "molecule_id": self.molecule_id,
                "packets": [p.to_dict() for p in self.packets],
                "bonds": [b.to_dict() for b in self.bonds],
                "properties": self.properties.to_dict(),
            },
            version=self.version,
        )


# ---------------------------------------------------------------- parsing


def _require_object(value: Any, path: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise invalid_field(path or "$", "object", json_type(value), "type")
    return cast(Mapping[str, Any], value)


def _require_string_id(value: Any, path: str) -> str:
    if value is None:
        raise invalid_field(path, "string", "missing", "required")
    if not isinstance(value, str):
        raise invalid_field(path, "string", json_type(value), "type")
    if not 1 <= len(value) <= PACKET_ID_MAX_LEN:
        raise invalid_field(
            path, f"string of 1-{PACKET_ID_MAX_LEN} chars", f"string of {len(value)} chars",
            "length",
        )  # fmt: skip
    return value


def _parse_packet(raw: Any, path: str) -> MoleculePacket:
    obj = _require_object(raw, path)
    pid = _require_string_id(obj.get("id"), _join(path, "id"))

    group = obj.get("group")
    if group is None:
        raise invalid_field(_join(path, "group"), "one of cf, df, ed, co, mc, rm", "missing",
                            "required")  # fmt: skip
    if not isinstance(group, str):
        raise invalid_field(_join(path, "group"), "one of cf, df, ed, co, mc, rm",
                            json_type(group), "type")  # fmt: skip
    if group not in GROUPS:
        raise unknown_group(group, _join(path, "group"))

    element = obj.get("element")
    epath = _join(path, "element")
    if element is None:
        raise invalid_field(epath, "string matching [a-z][a-z0-9_]*", "missing", "required")
    if not isinstance(element, str):
        raise invalid_field(epath, "string", json_type(element), "type")
    if not ELEMENT_NAME.match(element):
        raise invalid_field(epath, "string matching [a-z][a-z0-9_]*", repr(element), "pattern")

    priority = obj.get("priority")
    if priority is not None:
        ppath = _join(path, "priority")
        if not _is_int(priority):
            raise invalid_field(ppath, "integer", json_type(priority), "type")
        if not PRIORITY_MIN <= priority <= PRIORITY_MAX:
            raise invalid_field(
                ppath, f"int {PRIORITY_MIN}-{PRIORITY_MAX}", f"int {priority}", "range"
            )

    timeout = obj.get("timeout_ms")
    if timeout is not None:
        tpath = _join(path, "timeout_ms")
        if not _is_int(timeout):
            raise invalid_field(tpath, "integer", json_type(timeout), "type")
        if timeout <= 0:
            raise invalid_field(tpath, "positive int", f"int {timeout}", "range")

    deps_raw = obj.get("dependencies")
    deps: list[str] = []
    if deps_raw is not None:
        dpath = _join(path, "dependencies")
        if not isinstance(deps_raw, list):
            raise invalid_field(dpath, "array of packet ids", json_type(deps_raw), "type")
        for j, dep in enumerate(deps_raw):
            dep_id = _require_string_id(dep, f"{dpath}[{j}]")
            if dep_id not in deps:
                deps.append(dep_id)

    position = obj.get("position")
    if position is not None:
        position = dict(_require_object(position, _join(path, "position")))

    data = obj.get("data", {})
    return MoleculePacket(
        id=pid,
        group=group,
        element=element,
        data=data if data is not None else {},
        priority=priority,
        timeout_ms=timeout,
        dependencies=tuple(deps),
        position=position,
    )


def _either(obj: Mapping[str, Any], path: str, short: str, long: str) -> tuple[Any, str]:
    """The value of ``short`` or ``long`` (DESIGN §7's two bond spellings) and its path."""
    if short in obj and long in obj and obj[short] != obj[long]:
        raise invalid_field(
            _join(path, long), f"the same value as {short!r}", repr(obj[long]), "consistent",
            f"Bond spells both {short!r} and {long!r} with different values",
        )  # fmt: skip
    if short in obj:
        return obj[short], _join(path, short)
    return obj.get(long), _join(path, long)


def _parse_bond(raw: Any, path: str) -> tuple[Bond, str, str]:
    """A bond and the JSON paths of its source and target fields."""
    obj = _require_object(raw, path)
    source, spath = _either(obj, path, "from", "from_packet")
    target, tpath = _either(obj, path, "to", "to_packet")
    source = _require_string_id(source, spath)
    target = _require_string_id(target, tpath)

    type_raw, ypath = _either(obj, path, "type", "bond_type")
    expected = "one of ionic, covalent, metallic, vdw (vanderwaal, van_der_waals)"
    if type_raw is None:
        raise invalid_field(ypath, expected, "missing", "required")
    if not isinstance(type_raw, str):
        raise invalid_field(ypath, expected, json_type(type_raw), "enum")
    bond_type = BOND_ALIASES.get(type_raw.lower())
    if bond_type is None:
        raise invalid_field(ypath, expected, repr(type_raw), "enum",
                            f"Unknown bond type {type_raw!r} at '{ypath}'")  # fmt: skip

    strength = obj.get("strength")
    gpath = _join(path, "strength")
    if strength is None:
        strength = DEFAULT_STRENGTH[bond_type]
    elif not _is_number(strength):
        raise invalid_field(gpath, "number 0-1", json_type(strength), "type")
    elif not 0.0 <= strength <= 1.0:
        raise invalid_field(gpath, "number 0-1", f"number {strength}", "range",
                            f"Bond strength {strength} at '{gpath}' is outside 0-1")  # fmt: skip

    bond_id = obj.get("id")
    if bond_id is not None:
        bond_id = _require_string_id(bond_id, _join(path, "id"))
    conditions = obj.get("conditions")
    if conditions is not None:
        conditions = dict(_require_object(conditions, _join(path, "conditions")))

    bond = Bond(
        source=source,
        target=target,
        type=bond_type,
        strength=float(strength),
        id=bond_id,
        conditions=conditions,
        origin=path,
    )
    return bond, spath, tpath


def _parse_properties(raw: Any, path: str) -> MoleculeProperties:
    obj = _require_object(raw, path)
    known = {
        "max_retries",
        "timeout_ms",
        "fault_tolerance",
        "stability_threshold",
        "healing",
        "optimization_target",
    }
    extra = {k: v for k, v in obj.items() if k not in known}

    max_retries = obj.get("max_retries", DEFAULT_MAX_RETRIES)
    rpath = _join(path, "max_retries")
    if not _is_int(max_retries):
        raise invalid_field(rpath, "integer", json_type(max_retries), "type")
    if not 0 <= max_retries <= MAX_MAX_RETRIES:
        raise invalid_field(rpath, f"int 0-{MAX_MAX_RETRIES}", f"int {max_retries}", "range")

    timeout = obj.get("timeout_ms")
    if timeout is not None:
        tpath = _join(path, "timeout_ms")
        if not _is_int(timeout):
            raise invalid_field(tpath, "integer", json_type(timeout), "type")
        if timeout <= 0:
            raise invalid_field(tpath, "positive int", f"int {timeout}", "range")

    ft = obj.get("fault_tolerance", "fail_fast")
    if ft not in FAULT_TOLERANCES:
        raise invalid_field(
            _join(path, "fault_tolerance"), "one of " + ", ".join(FAULT_TOLERANCES),
            repr(ft) if isinstance(ft, str) else json_type(ft), "enum",
        )  # fmt: skip

    threshold = obj.get("stability_threshold", 0.0)
    spath = _join(path, "stability_threshold")
    if not _is_number(threshold):
        raise invalid_field(spath, "number 0-1", json_type(threshold), "type")
    if not 0.0 <= threshold <= 1.0:
        raise invalid_field(spath, "number 0-1", f"number {threshold}", "range")

    healing = obj.get("healing", False)
    if not isinstance(healing, bool):
        raise invalid_field(_join(path, "healing"), "boolean", json_type(healing), "type")

    target = obj.get("optimization_target")
    if target is not None and not isinstance(target, str):
        raise invalid_field(_join(path, "optimization_target"), "string", json_type(target), "type")

    return MoleculeProperties(
        max_retries=max_retries,
        timeout_ms=timeout,
        fault_tolerance=cast(FaultTolerance, ft),
        stability_threshold=float(threshold),
        healing=healing,
        optimization_target=target,
        extra=extra,
    )


def parse_molecule(
    obj: Mapping[str, Any],
    *,
    molecule_id: str | None = None,
    max_size: int = MAX_MOLECULE_PACKETS,
    path: str = "",
) -> Molecule:
    """Parse and structurally validate a molecule (§7.1, §4.2.6, DESIGN §7).

    ``obj`` is either the §7.1 structure ``{molecule_id?, version?, packets, bonds?,
    properties?}`` or a COORDINATE payload carrying it as ``molecular_structure`` (whose
    ``molecule_id`` sits beside it). ``molecule_id`` is used when the structure names none.
    ``path`` is the JSON path of ``obj`` itself (e.g. ``"payload"``), prefixed to every
    ``error_details.field``.

    Raises InvalidPacket (PF002) for a malformed field, a duplicate packet id or more than
    ``max_size`` packets; BondFormationFailed (PF102) for a bond or dependency naming an
    unknown packet, two bonds between the same pair, or a cycle. Unknown keys are ignored
    (DESIGN §3). Reactor support (PF003) is ``validate_molecule``'s job.
    """
    root = _require_object(obj, path)
    structure_path = path
    structure = root
    mid: Any = None
    mid_path = _join(path, "molecule_id")
    if "molecular_structure" in root:
        structure_path = _join(path, "molecular_structure")
        structure = _require_object(root["molecular_structure"], structure_path)
        mid = root.get("molecule_id")
    if mid is None:
        mid = structure.get("molecule_id")
        mid_path = _join(structure_path, "molecule_id")
    if mid is None:
        mid = molecule_id
    mid = _require_string_id(mid, mid_path)

    version = structure.get("version")
    if version is not None and not isinstance(version, str):
        raise invalid_field(_join(structure_path, "version"), "string", json_type(version),
                            "type")  # fmt: skip

    ppath = _join(structure_path, "packets")
    packets_raw = structure.get("packets")
    if packets_raw is None:
        raise invalid_field(ppath, "array of packets", "missing", "required")
    if not isinstance(packets_raw, list):
        raise invalid_field(ppath, "array of packets", json_type(packets_raw), "type")
    if not packets_raw:
        raise invalid_field(ppath, "array of at least 1 packet", "empty array", "min_items")
    if len(packets_raw) > max_size:
        raise invalid_field(
            ppath, f"at most {max_size} packets", f"{len(packets_raw)} packets",
            "max_molecule_size",
        )  # fmt: skip

    packets: list[MoleculePacket] = []
    seen: dict[str, int] = {}
    for i, raw in enumerate(packets_raw):
        ipath = f"{ppath}[{i}]"
        packet = _parse_packet(raw, ipath)
        if packet.id in seen:
            raise InvalidPacket(
                f"Duplicate packet id {packet.id!r} at '{ipath}.id' "
                f"(first at '{ppath}[{seen[packet.id]}].id')",
                field=f"{ipath}.id",
                expected_type="unique packet id",
                received_type=repr(packet.id),
                validation_rule="unique",
                details={"packet_id": packet.id},
            )
        seen[packet.id] = i
        packets.append(packet)

    bpath = _join(structure_path, "bonds")
    bonds_raw = structure.get("bonds", [])
    if bonds_raw is None:
        bonds_raw = []
    if not isinstance(bonds_raw, list):
        raise invalid_field(bpath, "array of bonds", json_type(bonds_raw), "type")
    max_bonds = MAX_BONDS_PER_PACKET * max_size
    if len(bonds_raw) > max_bonds:
        raise invalid_field(
            bpath, f"at most {max_bonds} bonds", f"{len(bonds_raw)} bonds", "max_molecule_bonds"
        )

    bonds: list[Bond] = []
    pairs: dict[tuple[str, str], str] = {}
    bond_ids: set[str] = set()
    for i, raw in enumerate(bonds_raw):
        ipath = f"{bpath}[{i}]"
        bond, spath, tpath = _parse_bond(raw, ipath)
        for end, end_path in ((bond.source, spath), (bond.target, tpath)):
            if end not in seen:
                raise _dangling(end, end_path)
        pair = (bond.source, bond.target)
        if pair in pairs:
            raise BondFormationFailed(
                f"Two bonds from {bond.source!r} to {bond.target!r}: '{pairs[pair]}' and '{ipath}'",
                field=ipath,
                validation_rule="unique_bond",
                details={"from": bond.source, "to": bond.target, "first": pairs[pair]},
            )
        if bond.id is not None:
            if bond.id in bond_ids:
                raise invalid_field(_join(ipath, "id"), "unique bond id", repr(bond.id),
                                    "unique")  # fmt: skip
            bond_ids.add(bond.id)
        pairs[pair] = ipath
        bonds.append(bond)

    # A packet's `dependencies` are ionic bonds from each listed packet (DESIGN §7). An
    # explicit bond between the same pair says more (its type and strength), so it wins.
    for i, packet in enumerate(packets):
        for j, dep in enumerate(packet.dependencies):
            dpath = f"{ppath}[{i}].dependencies[{j}]"
            if dep not in seen:
                raise _dangling(dep, dpath)
            if (dep, packet.id) in pairs:
                continue
            pairs[(dep, packet.id)] = dpath
            bonds.append(Bond(dep, packet.id, "ionic", DEFAULT_STRENGTH["ionic"], origin=dpath))

    properties = _parse_properties(
        structure.get("properties") or {}, _join(structure_path, "properties")
    )
    molecule = Molecule(
        molecule_id=mid,
        packets=tuple(packets),
        bonds=tuple(bonds),
        properties=properties,
        version=version,
    )
    check_structure(molecule)
    return molecule


def _dangling(packet_id: str, path: str) -> BondFormationFailed:
    return BondFormationFailed(
        f"'{path}' names packet {packet_id!r}, which is not in the molecule",
        field=path,
        validation_rule="known_packet",
        details={"unknown_packet": packet_id},
    )


# ---------------------------------------------------------------- validation


def find_cycle(molecule: Molecule) -> tuple[list[str], Bond] | None:
    """The first cycle over all bonds, as a path with its first id repeated last, and the
    bond that closes it; None for a DAG. Deterministic: packets and bonds in order.

    Iterative depth-first search with the usual white/grey/black colouring; a bond to a
    grey packet closes a cycle whose path is the grey stack from that packet on.
    """
    outgoing: dict[str, list[Bond]] = {p.id: [] for p in molecule.packets}
    for bond in molecule.bonds:
        outgoing[bond.source].append(bond)
    white, grey, black = 0, 1, 2
    colour = dict.fromkeys(outgoing, white)
    for root in outgoing:
        if colour[root] != white:
            continue
        colour[root] = grey
        stack: list[tuple[str, int]] = [(root, 0)]
        while stack:
            node, k = stack[-1]
            edges = outgoing[node]
            if k == len(edges):
                colour[node] = black
                stack.pop()
                continue
            stack[-1] = (node, k + 1)
            bond = edges[k]
            nxt = bond.target
            if colour[nxt] == grey:
                ids = [n for n, _ in stack]
                return [*ids[ids.index(nxt) :], nxt], bond
            if colour[nxt] == white:
                colour[nxt] = grey
                stack.append((nxt, 0))
    return None


def check_structure(molecule: Molecule) -> None:
    """The graph checks of DESIGN §7 on a built molecule: unique ids (PF002), known bond
    ends (PF102) and no cycle (PF102, ``error_details.cycle``).

    Every bond counts for cycles, metallic ones too: a cycle of ordering hints contradicts
    itself, and a healing conversion (ionic → metallic) must not be needed to run it.
    """
    ids: set[str] = set()
    for i, packet in enumerate(molecule.packets):
        if packet.id in ids:
            raise InvalidPacket(
                f"Duplicate packet id {packet.id!r}",
                field=f"packets[{i}].id",
                validation_rule="unique",
                details={"packet_id": packet.id},
            )
        ids.add(packet.id)
    for bond in molecule.bonds:
        for end in (bond.source, bond.target):
            if end not in ids:
                raise _dangling(end, bond.origin)
    found = find_cycle(molecule)
    if found is not None:
        cycle, bond = found
        raise BondFormationFailed(
            "Bonds form a cycle: " + " -> ".join(cycle),
            field=bond.origin or None,
            validation_rule="acyclic",
            details={"cycle": cycle},
        )


def validate_molecule(
    molecule: Molecule, supported: Callable[[str, str], bool] | None = None
) -> None:
    """§7.3 phase 1 on a parsed molecule: the structure checks of ``check_structure`` and,
    when ``supported(group, element)`` is given, that some reactor serves every element.

    Raises NoReactorAvailable (PF003) listing every unsupported ``group:element`` in
    ``error_details.unsupported`` (and their packets in ``unsupported_packets``).
    """
    check_structure(molecule)
    if supported is None:
        return
    missing: list[str] = []
    missing_packets: list[str] = []
    first_path: str | None = None
    for i, packet in enumerate(molecule.packets):
        if supported(packet.group, packet.element):
            continue
        name = f"{packet.group}:{packet.element}"
        if name not in missing:
            missing.append(name)
        missing_packets.append(packet.id)
        if first_path is None:
            first_path = f"packets[{i}].element"
    if missing:
        raise NoReactorAvailable(
            "No reactor supports " + ", ".join(missing),
            field=first_path,
            details={"unsupported": missing, "unsupported_packets": missing_packets},
            context={"molecule_id": molecule.molecule_id},
        )


# ---------------------------------------------------------------- stages and stability


def topological_order(packet_ids: Sequence[str], bonds: Sequence[Bond]) -> list[str]:
    """Packet ids in an order where every bond's source precedes its target (Kahn's
    algorithm, ties by declaration order). Assumes no cycle (``check_structure``)."""
    indegree = dict.fromkeys(packet_ids, 0)
    outgoing: dict[str, list[str]] = {p: [] for p in packet_ids}
    for bond in bonds:
        indegree[bond.target] += 1
        outgoing[bond.source].append(bond.target)
    ready = [p for p in packet_ids if indegree[p] == 0]
    order: list[str] = []
    while ready:
        node = ready.pop(0)
        order.append(node)
        for nxt in outgoing[node]:
            indegree[nxt] -= 1
            if indegree[nxt] == 0:
                ready.append(nxt)
    return order


def blocking_sources(packet_ids: Sequence[str], bonds: Iterable[Bond]) -> dict[str, list[str]]:
    """For each packet, the sources of the blocking bonds into it: what it waits for."""
    incoming: dict[str, list[str]] = {p: [] for p in packet_ids}
    for bond in bonds:
        if bond.blocking:
            incoming[bond.target].append(bond.source)
    return incoming


def stage_depths(packet_ids: Sequence[str], bonds: Sequence[Bond]) -> dict[str, int]:
    """Longest-path depth (1-based) of each packet over the blocking bonds."""
    blocking = [b for b in bonds if b.blocking]
    depth = dict.fromkeys(packet_ids, 1)
    incoming = blocking_sources(packet_ids, blocking)
    for node in topological_order(packet_ids, blocking):
        for src in incoming[node]:
            depth[node] = max(depth[node], depth[src] + 1)
    return depth


def stages(molecule: Molecule) -> dict[str, int]:
    """Each packet's stage number: 1 + the longest chain of blocking bonds (ionic,
    covalent, vdw) leading to it. Reporting only (DESIGN §7: execution is dataflow).

    vdw bonds count: a vdw observer starts after its source finishes, so its stage is when
    it can run. Metallic bonds never delay their target and do not count.
    """
    return stage_depths(molecule.packet_ids, molecule.bonds)


def execution_plan(molecule: Molecule) -> dict[str, Any]:
    """§7.3 phase 3: the stages (longest-path depth over blocking bonds, reporting only:
    execution is dataflow, DESIGN §7) with the stages each depends on."""
    depth = stages(molecule)
    by_stage: dict[int, list[str]] = {}
    for pid in molecule.packet_ids:
        by_stage.setdefault(depth[pid], []).append(pid)
    needs: dict[int, set[int]] = {s: set() for s in by_stage}
    for bond in molecule.bonds:
        if bond.blocking:
            needs[depth[bond.target]].add(depth[bond.source])
    return {
        "total_stages": len(by_stage),
        "stages": [
            {"stage_id": s, "packets": by_stage[s], "parallel_execution": len(by_stage[s]) > 1,
             "dependencies": sorted(needs[s])}
            for s in sorted(by_stage)
        ],
    }  # fmt: skip


def total_stages(molecule: Molecule) -> int:
    """The number of stages (the deepest stage number)."""
    return max(stages(molecule).values(), default=0)


def stability(bonds: Sequence[Bond], succeeded: Callable[[str], bool]) -> float:
    """DESIGN §7: Σ strength of bonds whose source succeeded / Σ all strengths.

    1.0 for a molecule without bonds (or whose strengths sum to 0). "1.0 before start" is
    the caller's rule (the planner reports 1.0 until the run starts).
    """
    total = sum(b.strength for b in bonds)
    if total <= 0.0:
        return 1.0
    return sum(b.strength for b in bonds if succeeded(b.source)) / total
