"""§9.1.3 chemical system health: the cluster's molecular figures, computed by the gateway
from the history of the molecules it ran, and the §9.2 "Molecular Validation" verdict per
reactor.

Pure bookkeeping: the coordinator hands in each finished molecule (its bonds, the final
state of each packet and the reactor each ran on) and ``now``; nothing here reads a clock.
Every table is bounded: the last ``MAX_MOLECULES`` outcomes, per-reactor bond tallies for
the reactors seen in them (at most ``MAX_REACTORS``).

How the metrics are defined (the spec names them, not their formulas):

- ``bond_success_rate``: over bonds, not packets. A bond *held* when its source and its
  target both succeeded; it *broke* when either finally failed or the target was skipped
  because of it. Bonds of packets that never ran to an outcome (an aborted or timed-out
  molecule) say nothing and are not counted.
- ``molecular_stability``: the mean final stability (DESIGN §7: Σ strength of bonds whose
  source succeeded / Σ all strengths) of the recent molecules; ``min_stability`` beside it.
- ``optimization_performance``: of the recent molecules that had a §7.4 optimization
  applied, the share that finished ``success`` (None before any was optimized).
- ``affinity_effectiveness``: the share of routed packets that did not fail by the
  reactor's fault (the gateway's per reactor × group learner); handed in by the gateway.
- ``molecular_participation``: molecules in the history; ``optimization_count``:
  optimizations applied since the gateway started.

§9.2 Molecular Validation for one reactor: the bonds ending at molecule packets that ran on
it since the previous check (held, or broken by the reactor's own failure: a client's bad
data never counts against a reactor, DESIGN §6). With at least ``MIN_BONDS_TO_JUDGE`` of
them, a held share below ``MIN_BOND_SUCCESS`` is a failed check (the monitor counts it
against the §9.2 row's "2 consecutive"); fewer bonds say nothing.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

# Finished molecules remembered for the metrics (DESIGN §6: every table is bounded).
MAX_MOLECULES: Final = 1000
# Reactors whose bond tallies are kept; the least recently seen is dropped past this.
MAX_REACTORS: Final = 10_000
# §9.2 Molecular Validation: a reactor is judged on at least this many bonds...
MIN_BONDS_TO_JUDGE: Final = 4
# ...and fails the check when fewer than this share of them held.
MIN_BOND_SUCCESS: Final = 0.5

_SUCCEEDED: Final = "succeeded"
_BROKEN: Final = frozenset({"failed", "skipped"})


@dataclass(frozen=True, slots=True)
class BondEnd:
    """One bond of a finished molecule: its ends and the reactor its target ran on."""

    source: str
    target: str


@dataclass(frozen=True, slots=True)
class MoleculeOutcome:
    status: str
    stability: float
    bonds_held: int
    bonds_broken: int
    optimized: bool
    finished_at: float


@dataclass(slots=True)
class _Tally:
    held: int = 0
    broken: int = 0


def _nobody(packet_id: str) -> bool:
    return False


def bond_outcomes(
    bonds: Iterable[BondEnd],
    state_of: Callable[[str], str],
    reactor_of: Mapping[str, str],
    reactor_fault: Callable[[str], bool] = _nobody,
) -> tuple[int, int, dict[str, tuple[int, int]]]:
    """Held and broken bonds of one molecule, and per reactor the (held, broken) bonds
    whose target ran there. A broken bond counts against the target's reactor only when
    ``reactor_fault(target)`` says its failure was the reactor's (``errors.
    counts_against_reactor``): a client's bad data, or a source that failed elsewhere,
    never does. A skipped target ran nowhere and counts for no reactor."""
    held = broken = 0
    per_reactor: dict[str, tuple[int, int]] = {}
    for bond in bonds:
        source, target = state_of(bond.source), state_of(bond.target)
        if source == _SUCCEEDED and target == _SUCCEEDED:
            ok = True
        elif source in _BROKEN or target in _BROKEN:
            ok = False
        else:
            continue  # aborted or never finished: no outcome
        if ok:
            held += 1
        else:
            broken += 1
        reactor = reactor_of.get(bond.target)
        if reactor is None or target == "skipped":
            continue
        if ok or (target in _BROKEN and reactor_fault(bond.target)):
            h, b = per_reactor.get(reactor, (0, 0))
            per_reactor[reactor] = (h + ok, b + (not ok))
    return held, broken, per_reactor


@dataclass(slots=True)
class ChemicalHistory:
    """The recent molecules' outcomes and per-reactor bond tallies."""

    max_molecules: int = MAX_MOLECULES
    outcomes: deque[MoleculeOutcome] = field(init=False)
    optimizations: int = 0
    # Since the last Molecular Validation check of each reactor.
    _since_check: dict[str, _Tally] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.outcomes = deque(maxlen=self.max_molecules)

    def optimization_applied(self, now: float) -> None:
        self.optimizations += 1

    def molecule_finished(
        self,
        *,
        status: str,
        stability: float,
        bonds: Iterable[BondEnd],
        state_of: Callable[[str], str],
        reactor_of: Mapping[str, str],
        optimized: bool,
        now: float,
        reactor_fault: Callable[[str], bool] = _nobody,
    ) -> MoleculeOutcome:
        held, broken, per_reactor = bond_outcomes(bonds, state_of, reactor_of, reactor_fault)
        outcome = MoleculeOutcome(status, stability, held, broken, optimized, now)
        self.outcomes.append(outcome)
        for reactor, (h, b) in per_reactor.items():
            tally = self._since_check.pop(reactor, None) or _Tally()
            tally.held += h
            tally.broken += b
            self._since_check[reactor] = tally  # most recently seen last
            if len(self._since_check) > MAX_REACTORS:
                del self._since_check[next(iter(self._since_check))]
        return outcome

    def forget_reactor(self, reactor_id: str) -> None:
        self._since_check.pop(reactor_id, None)

    def molecular_check(self, reactor_id: str) -> str | None:
        """§9.2 Molecular Validation of one reactor: None when it passes (or there is too
        little to judge), else why it failed. Starts the next period."""
        tally = self._since_check.pop(reactor_id, None)
        if tally is None:
            return None
        total = tally.held + tally.broken
        if total < MIN_BONDS_TO_JUDGE:
            self._since_check[reactor_id] = tally  # keep collecting
            return None
        rate = tally.held / total
        if rate < MIN_BOND_SUCCESS:
            return (f"bond success rate {rate:.2f} over {total} bonds of its molecule packets "
                    f"< {MIN_BOND_SUCCESS:g}")  # fmt: skip
        return None

    def metrics(self, affinity_effectiveness: float | None = None) -> dict[str, Any]:
        """The §9.1.3 metrics (see the module docstring); figures with nothing to go on
        are None, never a made-up 1.0."""
        outcomes = list(self.outcomes)
        held = sum(o.bonds_held for o in outcomes)
        broken = sum(o.bonds_broken for o in outcomes)
        optimized = [o for o in outcomes if o.optimized]
        stabilities = [o.stability for o in outcomes]
        by_status: dict[str, int] = {}
        for o in outcomes:
            by_status[o.status] = by_status.get(o.status, 0) + 1
        return {
            "affinity_effectiveness": _rounded(affinity_effectiveness),
            "molecular_stability": _rounded(_mean(stabilities)),
            "min_stability": _rounded(min(stabilities) if stabilities else None),
            "bond_success_rate": _rounded(held / (held + broken) if held + broken else None),
            "bonds_observed": held + broken,
            "optimization_performance": _rounded(
                sum(o.status == "success" for o in optimized) / len(optimized)
                if optimized
                else None
            ),
            "optimized_molecules": len(optimized),
            "optimization_count": self.optimizations,
            "molecular_participation": len(outcomes),
            "molecules_by_status": by_status,
        }


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _rounded(value: float | None) -> float | None:
    return round(value, 4) if value is not None else None
