"""What a reactor says about one packet it processed: the §4.2.2 RESULT's
``data.processing_stats`` and ``chemical_analysis``, from figures the reactor measured.

Pure: the reactor measures (wall time, CPU time, bytes, peak-memory growth) and hands the
figures in; every formula turning them into the wire values lives here.

How the figures are defined (the spec shows the fields, not how to compute them):

- ``duration_ms``: wall time of the handler.
- ``cpu_usage_percent``: CPU time the handler used / its wall time, in percent. A handler
  on one thread (the event loop, a worker thread) is measured on that thread, so it is
  exact and at most 100; a ``cpu_bound`` handler is measured in its worker process. An
  async handler is measured on the event-loop thread while it was pending, so it is an
  upper bound when other packets ran on the loop meanwhile.
- ``memory_used_mb``: what the packet's data and its encoded result occupy, plus, for a
  handler on a worker thread or process, the growth of the process's peak resident memory
  while it ran (a handler that allocates beyond what the process ever held shows it). A
  lower bound: memory used and freed below an earlier peak is not seen, and handlers on
  the event loop (async ones, quick inline ones) are not read for it, since getrusage
  would cost the loop a few µs per packet; tracing allocations would cost more than a
  small packet's whole processing.
- ``affinity_score``: the routing hint the gateway sent (§4.2.2 wire example 3), else the
  §3.3 matrix value of the packet's group at the reactor's best specialization.
- ``bond_strength``: the packet-reactor bond: its affinity scaled by the share of the
  packet's timeout still left when it finished. A packet that finished at once on a
  well-matched reactor bonded at full affinity; one that nearly timed out bonded weakly.
- ``processing_efficiency``: how the packet's duration compares with the element's own
  average on this reactor before it: ``min(1, average / duration)``; 1.0 for the first
  packet of an element (nothing to compare with).
- ``optimization_applied``: true when the gateway applied an optimization to how the
  packet runs (a §7.4 bond-strength, locality or parallelization change of its molecule,
  named in ``packet.metadata.optimizations``); ``optimizations`` lists which.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from .chemistry import STANDARD_MATRIX, best_affinity, chemical_properties
from .messages import ChemicalPropertiesWire

MIB: Final = float(2**20)
# How far stated chemical_properties may be from DESIGN §4's calculator (the conformance
# kit's tolerance): rounding, not a different formula.
PROPERTY_TOLERANCE: Final = 0.001
PROPERTY_NAMES: Final = ("reactivity", "ionization_energy", "atomic_radius", "electronegativity")
# Where a molecule packet's applied optimizations travel (gateway/coordinator.py sets it).
OPTIMIZATIONS_KEY: Final = "optimizations"
# The §7.4 optimization kinds a packet may carry in ``metadata.optimizations``.
OPTIMIZATION_KINDS: Final = frozenset({"bond_strength", "locality", "parallelization"})


def processing_stats(
    wall_s: float,
    cpu_s: float | None,
    data_bytes: int,
    result_bytes: int,
    peak_growth_bytes: int = 0,
    single_thread: bool = True,
) -> bytes:
    """§4.2.2 ``processing_stats`` as the JSON object sent: numbers only (the gateway's
    relay relies on a flat object), formatted at once because this runs for every packet.
    ``cpu_s`` None: not measured (reported 0)."""
    cpu = 0.0
    if cpu_s is not None and wall_s > 0:
        cpu = 100.0 * cpu_s / wall_s if cpu_s > 0 else 0.0
        if single_thread and cpu > 100.0:
            cpu = 100.0
    memory = (data_bytes + result_bytes + (peak_growth_bytes if peak_growth_bytes > 0 else 0)) / MIB
    return _STATS % (wall_s * 1000.0, memory, cpu)


_STATS: Final = b'{"duration_ms":%.3f,"memory_used_mb":%.4f,"cpu_usage_percent":%.1f}'


def packet_affinity(hinted: Any, group: str, specializations: Sequence[str]) -> float:
    """The gateway's ``routing_hints.affinity_score`` when it is a number in 0-1 (or a
    little above with §6.3.2 adjustments), else the §3.3 matrix value."""
    if isinstance(hinted, int | float) and not isinstance(hinted, bool) and hinted >= 0:
        return float(hinted)
    return best_affinity(STANDARD_MATRIX, group, tuple(specializations))


def applied_optimizations(metadata: Mapping[str, Any] | None) -> list[str]:
    """The known §7.4 kinds listed in ``metadata.optimizations`` (others are ignored)."""
    if not metadata:
        return []
    named = metadata.get(OPTIMIZATIONS_KEY)
    if not isinstance(named, list):
        return []
    return sorted({k for k in named if isinstance(k, str) and k in OPTIMIZATION_KINDS})


def chemical_analysis(
    affinity: float,
    remaining_fraction: float,
    duration_ms: float,
    baseline_ms: float | None,
    optimizations: Sequence[str] = (),
) -> dict[str, Any]:
    """§4.2.2 ``chemical_analysis`` for one packet (see the module docstring).

    Runs for every packet, so the usual one (finished well within its timeout, no slower
    than usual, not optimized) gets a shared dict per affinity; callers never modify it."""
    bond = 1.0 if affinity > 1.0 else (affinity if affinity > 0.0 else 0.0)
    if remaining_fraction < 1.0:
        bond *= remaining_fraction if remaining_fraction > 0.0 else 0.0
    bond = round(bond, 4)
    slower = baseline_ms is not None and 0 < baseline_ms < duration_ms
    if not slower and not optimizations and bond == round(affinity, 4):
        usual = _USUAL.get(affinity)
        if usual is None:
            if len(_USUAL) >= _MAX_USUAL:
                _USUAL.clear()
            usual = _USUAL[affinity] = {
                "affinity_score": round(affinity, 4), "bond_strength": bond,
                "processing_efficiency": 1.0, "optimization_applied": False,
            }  # fmt: skip
        return usual
    out: dict[str, Any] = {
        "affinity_score": round(affinity, 4),
        "bond_strength": bond,
        "processing_efficiency": round(baseline_ms / duration_ms, 4) if slower else 1.0,  # type: ignore[operator]
        "optimization_applied": bool(optimizations),
    }
    if optimizations:
        out["optimizations"] = list(optimizations)
    return out


# The usual analyses by affinity (a few distinct values: the matrix's, adjusted); cleared
# when full.
_USUAL: dict[float, dict[str, Any]] = {}
_MAX_USUAL: Final = 256


def property_mismatches(
    group: str, priority: int, dependency_count: int, stated: ChemicalPropertiesWire
) -> dict[str, dict[str, float]]:
    """The stated ``chemical_properties`` that differ from DESIGN §4's calculator by more
    than PROPERTY_TOLERANCE: {name: {expected, received}}; empty when they agree.

    A packetflow reactor refuses such a packet with PF104 (§10.1.2 "Property calculation
    error", recovery "Recalibrate"): whoever forwarded it computes properties another way
    (the spec shows three formulas for electronegativity; DESIGN §4 fixes one), and
    every §4.2.2 analysis built on them would be wrong."""
    want = chemical_properties(group, priority, dependency_count)
    out: dict[str, dict[str, float]] = {}
    for name in PROPERTY_NAMES:
        expected, received = getattr(want, name), getattr(stated, name)
        if not abs(expected - received) <= PROPERTY_TOLERANCE:  # NaN never agrees
            out[name] = {"expected": expected, "received": received}
    return out
