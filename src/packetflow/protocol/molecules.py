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
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
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
    # §7.3 phase 2 ``resource_requirements``: {memory_mb?, cpu_cores?}; None = none stated.
    resources: Mapping[str, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        return _with_set(
            {"id": self.id, "group": self.group, "element": self.element, "data": self.data},
            priority=self.priority,
            timeout_ms=self.timeout_ms,
            dependencies=list(self.dependencies) if self.dependencies else None,
            position=dict(self.position) if self.position is not None else None,
            resource_requirements=dict(self.resources) if self.resources is not None else None,
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
class HealingPolicy:
    """§10.4.2 ``molecular_healing``: when to heal (triggers; None = that trigger is off)
    and how (strategies). The defaults are the spec's example block."""

    failure_rate_above: float | None = 0.2  # "packet_failure_rate > 0.2"
    stability_below: float | None = 0.3  # "molecular_stability < 0.3"
    slower_than: float | None = 2.0  # "execution_time > 2x_expected"
    replace_failed: bool = True  # "replace_failed_packets"
    conversions: Mapping[str, str] = field(
        default_factory=lambda: {"ionic": "metallic", "covalent": "vdw"}
    )  # "bond_type_conversion"
    decompose_below: float | None = 0.1  # "molecular_decomposition", "stability < 0.1"

    def to_dict(self) -> dict[str, Any]:
        triggers = []
        if self.failure_rate_above is not None:
            triggers.append(f"packet_failure_rate > {self.failure_rate_above:g}")
        if self.stability_below is not None:
            triggers.append(f"molecular_stability < {self.stability_below:g}")
        if self.slower_than is not None:
            triggers.append(f"execution_time > {self.slower_than:g}x_expected")
        strategies: list[dict[str, Any]] = []
        if self.replace_failed:
            strategies.append({"strategy": "replace_failed_packets"})
        if self.conversions:
            strategies.append({"strategy": "bond_type_conversion",
                               "conversions": [f"{a}_to_{b}" for a, b in
                                               self.conversions.items()]})  # fmt: skip
        if self.decompose_below is not None:
            strategies.append({"strategy": "molecular_decomposition",
                               "decomposition_threshold":
                               f"stability < {self.decompose_below:g}"})  # fmt: skip
        return {"healing_triggers": triggers, "healing_strategies": strategies}


@dataclass(frozen=True, slots=True)
class BondAdjustment:
    """§10.4.1 ``bond_adjustment``, applied when a packet finally fails and the run goes
    on: weaken its bonds, strengthen bonds out of succeeded packets, and bypass it (its
    succeeded sources bond directly to its ionic targets)."""

    weaken_failed_bonds: bool = False
    strengthen_successful_paths: bool = False
    create_bypass_bonds: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"weaken_failed_bonds": self.weaken_failed_bonds,
                "strengthen_successful_paths": self.strengthen_successful_paths,
                "create_bypass_bonds": self.create_bypass_bonds}  # fmt: skip


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
    healing_policy: HealingPolicy | None = None  # set whenever ``healing`` is
    bond_adjustment: BondAdjustment | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.extra)
        out.update(
            max_retries=self.max_retries,
            fault_tolerance=self.fault_tolerance,
            stability_threshold=self.stability_threshold,
            healing=self.healing,
        )
        if self.healing_policy is not None:
            out["molecular_healing"] = self.healing_policy.to_dict()
        if self.bond_adjustment is not None:
            out["bond_adjustment"] = self.bond_adjustment.to_dict()
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
    resources = parse_requirements(obj.get("resource_requirements"),
                                 _join(path, "resource_requirements"))  # fmt: skip

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
        resources=resources,
    )


# The amounts a packet may state (§7.3 phase 2's example) and the most any one may ask
# for: 16 TiB and 4096 cores are beyond any machine a reactor runs on today.
RESOURCE_LIMITS: Final[Mapping[str, float]] = {"memory_mb": 16 * 2**20, "cpu_cores": 4096}


def parse_requirements(raw: Any, path: str) -> dict[str, float] | None:
    """``resource_requirements`` {memory_mb?, cpu_cores?}: non-negative numbers within
    RESOURCE_LIMITS (``cpu_cores`` an integer). PF002 naming the field otherwise."""
    if raw is None:
        return None
    obj = _require_object(raw, path)
    out: dict[str, float] = {}
    for key, value in obj.items():
        kpath = _join(path, key)
        limit = RESOURCE_LIMITS.get(key)
        if limit is None:
            raise invalid_field(kpath, "one of " + ", ".join(RESOURCE_LIMITS), repr(key),
                                "known_resource")  # fmt: skip
        integer = key == "cpu_cores"
        if not (_is_int(value) if integer else _is_number(value)):
            raise invalid_field(kpath, "integer" if integer else "number", json_type(value),
                                "type")  # fmt: skip
        if not 0 <= value <= limit:
            raise invalid_field(kpath, f"0-{limit:g}", f"number {value}", "range")
        out[key] = value
    return out


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
        "molecular_healing",
        "bond_adjustment",
        "molecular_error_handling",
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

    policy = None
    if obj.get("molecular_healing") is not None:
        policy = parse_healing(obj["molecular_healing"], _join(path, "molecular_healing"))
        healing = True
    elif healing:
        policy = HealingPolicy()
    adjustment = None
    handling = obj.get("molecular_error_handling")
    if handling is not None:
        hpath = _join(path, "molecular_error_handling")
        handling = _require_object(handling, hpath)
        if handling.get("bond_adjustment") is not None:
            adjustment = _parse_adjustment(handling["bond_adjustment"],
                                           _join(hpath, "bond_adjustment"))  # fmt: skip
    if obj.get("bond_adjustment") is not None:
        adjustment = _parse_adjustment(obj["bond_adjustment"], _join(path, "bond_adjustment"))

    return MoleculeProperties(
        max_retries=max_retries,
        timeout_ms=timeout,
        fault_tolerance=cast(FaultTolerance, ft),
        stability_threshold=float(threshold),
        healing=healing,
        optimization_target=target,
        extra=extra,
        healing_policy=policy,
        bond_adjustment=adjustment,
    )


def _parse_adjustment(raw: Any, path: str) -> BondAdjustment:
    obj = _require_object(raw, path)
    flags: dict[str, bool] = {}
    for key in ("weaken_failed_bonds", "strengthen_successful_paths", "create_bypass_bonds"):
        value = obj.get(key, False)
        if not isinstance(value, bool):
            raise invalid_field(_join(path, key), "boolean", json_type(value), "type")
        flags[key] = value
    return BondAdjustment(**flags)


# §10.4.2's trigger strings: "<metric> <op> <number>" ("2x_expected" for the time one).
_TRIGGER = re.compile(r"^\s*(packet_failure_rate|molecular_stability|execution_time)\s*"
                      r"([<>])\s*([0-9]*\.?[0-9]+)(x_expected)?\s*$")  # fmt: skip
_TRIGGER_FORMS: Final = ("packet_failure_rate > R", "molecular_stability < S",
                         "execution_time > Nx_expected")  # fmt: skip
_THRESHOLD = re.compile(r"^\s*stability\s*<\s*([0-9]*\.?[0-9]+)\s*$")


def parse_healing(raw: Any, path: str) -> HealingPolicy:
    """§10.4.2 ``molecular_healing`` {healing_triggers: [strings], healing_strategies:
    [{strategy, ...}]}: each trigger and strategy named is on, the rest off (either list
    absent: the spec's defaults for it). PF002 naming the bad entry."""
    obj = _require_object(raw, path)
    defaults = HealingPolicy()
    fields: dict[str, Any] = {}
    tpath = _join(path, "healing_triggers")
    triggers = obj.get("healing_triggers")
    if triggers is not None:
        if not isinstance(triggers, list):
            raise invalid_field(tpath, "array of trigger strings", json_type(triggers), "type")
        fields.update(failure_rate_above=None, stability_below=None, slower_than=None)
        for i, text in enumerate(triggers):
            m = _TRIGGER.match(text) if isinstance(text, str) else None
            valid = m is not None and (
                (m[1] == "packet_failure_rate" and m[2] == ">" and not m[4])
                or (m[1] == "molecular_stability" and m[2] == "<" and not m[4])
                or (m[1] == "execution_time" and m[2] == ">" and bool(m[4]))
            )  # fmt: skip
            if m is None or not valid:
                raise invalid_field(f"{tpath}[{i}]", "one of " + ", ".join(_TRIGGER_FORMS),
                                    repr(text) if isinstance(text, str) else json_type(text),
                                    "healing_trigger")  # fmt: skip
            key = {"packet_failure_rate": "failure_rate_above",
                   "molecular_stability": "stability_below",
                   "execution_time": "slower_than"}[m[1]]  # fmt: skip
            fields[key] = float(m[3])
    spath = _join(path, "healing_strategies")
    strategies = obj.get("healing_strategies")
    if strategies is not None:
        if not isinstance(strategies, list):
            raise invalid_field(spath, "array of strategies", json_type(strategies), "type")
        fields.update(replace_failed=False, conversions={}, decompose_below=None)
        for i, entry in enumerate(strategies):
            ipath = f"{spath}[{i}]"
            entry = {"strategy": entry} if isinstance(entry, str) else entry
            entry = _require_object(entry, ipath)
            name = entry.get("strategy")
            if name == "replace_failed_packets":
                fields["replace_failed"] = True
            elif name == "bond_type_conversion":
                fields["conversions"] = _parse_conversions(entry.get("conversions"),
                                                           _join(ipath, "conversions"))  # fmt: skip
            elif name == "molecular_decomposition":
                raw_t = entry.get("decomposition_threshold", "stability < 0.1")
                m = _THRESHOLD.match(raw_t) if isinstance(raw_t, str) else None
                if m is None:
                    raise invalid_field(_join(ipath, "decomposition_threshold"),
                                        '"stability < S"', repr(raw_t), "pattern")  # fmt: skip
                fields["decompose_below"] = float(m[1])
            else:
                raise invalid_field(
                    _join(ipath, "strategy"), "one of replace_failed_packets, "
                    "bond_type_conversion, molecular_decomposition",
                    repr(name) if isinstance(name, str) else json_type(name), "enum",
                )  # fmt: skip
    return replace(defaults, **fields)


def _parse_conversions(raw: Any, path: str) -> dict[str, str]:
    if raw is None:
        return dict(HealingPolicy().conversions)
    if not isinstance(raw, list):
        raise invalid_field(path, 'array of "<type>_to_<type>"', json_type(raw), "type")
    out: dict[str, str] = {}
    for j, text in enumerate(raw):
        old, _, new = text.partition("_to_") if isinstance(text, str) else ("", "", "")
        a, b = BOND_ALIASES.get(old), BOND_ALIASES.get(new)
        if a is None or b is None or a == b:
            raise invalid_field(f"{path}[{j}]", '"<bond type>_to_<another bond type>"',
                                repr(text) if isinstance(text, str) else json_type(text),
                                "conversion")  # fmt: skip
        out[a] = b
    return out


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
