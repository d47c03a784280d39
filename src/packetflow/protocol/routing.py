"""The DESIGN §5 routing decision: which reactor gets a packet, or why none does.

Pure: the gateway hands in views of the reactors that support the packet's
``group:element`` (its capability index) and carries out the decision.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final, Protocol

from .chemistry import (
    HEALTH_BONUS,
    AffinityMatrix,
    best_affinity,
    hint_factor,
    implementation_preference,
    routing_score,
)
from .messages import RoutingPreferences

# Health states that may receive packets (DESIGN §5: unknown and failed are not eligible).
ROUTABLE = frozenset(HEALTH_BONUS)
# Scores closer than this are a tie (DESIGN §5 tie rule).
TIE_EPSILON = 1e-9


class ReactorView(Protocol):
    """What routing needs to know about one reactor."""

    @property
    def reactor_id(self) -> str: ...
    @property
    def specializations(self) -> tuple[str, ...]: ...
    @property
    def implementation(self) -> str: ...
    @property
    def locality(self) -> str | None: ...
    @property
    def capacity(self) -> int: ...
    @property
    def in_flight(self) -> int: ...
    @property
    def reported_load(self) -> float: ...
    @property
    def health(self) -> str: ...
    def adjustment(self, group: str) -> float: ...


@dataclass(frozen=True, slots=True)
class Chosen:
    reactor_id: str
    score: float
    affinity: float
    load_ratio: float
    reason: str


@dataclass(frozen=True, slots=True)
class Unsupported:
    """PF003: nothing that could ever run it is registered (or all are avoided)."""

    reason: str


@dataclass(frozen=True, slots=True)
class BelowMinimumAffinity:
    """PF101: candidates exist, all below ``minimum_affinity``."""

    best_affinity: float
    minimum: float


@dataclass(frozen=True, slots=True)
class MustWait:
    """Supporting reactors exist but none is healthy with a free slot: queue the packet."""

    reason: str


Decision = Chosen | Unsupported | BelowMinimumAffinity | MustWait


def load_ratio(view: ReactorView) -> float:
    """In-flight / capacity, corrected upward by the load the reactor reports (DESIGN §5)."""
    own = view.in_flight / view.capacity if view.capacity > 0 else 1.0
    return min(1.0, max(own, view.reported_load))


def decide(
    reactors: Iterable[ReactorView],
    *,
    group: str,
    priority: int,
    matrix: AffinityMatrix,
    preferences: RoutingPreferences | None = None,
    implementation_prefs: Mapping[str, Mapping[str, float]] | None = None,
    round_robin: int = 0,
) -> Decision:
    """Pick the best reactor for a packet of ``group`` at ``priority`` (DESIGN §5).

    ``reactors`` are the ones whose capabilities include the packet's group:element.
    Ties go to the fewest in flight, then round robin by ``round_robin``.
    """
    prefs = preferences or NO_PREFERENCES
    avoid = prefs.avoid_reactors
    minimum = prefs.minimum_affinity
    seen = avoided = below = 0
    best_below = 0.0
    best: list[tuple[float, float, float, ReactorView]] = []
    best_score = -1.0
    for view in reactors:
        seen += 1
        if avoid and view.reactor_id in avoid:
            avoided += 1
            continue
        affinity = best_affinity(matrix, group, view.specializations) + view.adjustment(group)
        if minimum is not None and affinity < minimum:
            below += 1
            best_below = max(best_below, affinity)
            continue
        if view.health not in HEALTH_BONUS or view.in_flight >= view.capacity:
            continue
        ratio = load_ratio(view)
        score = routing_score(
            base_affinity=affinity,
            load_ratio=ratio,
            priority=priority,
            health=view.health,
            implementation_pref=implementation_preference(
                group, view.implementation, implementation_prefs
            ),
            hint_factor=hint_factor(
                implementation=view.implementation,
                locality=view.locality,
                preferred_implementation=prefs.preferred_implementation,
                locality_preference=prefs.locality_preference,
                affinity_boost=prefs.affinity_boost,
            ),
        )
        if score > best_score + TIE_EPSILON:
            best_score = score
            best = [(score, affinity, ratio, view)]
        elif score >= best_score - TIE_EPSILON:
            best.append((score, affinity, ratio, view))
    if best:
        if len(best) > 1:
            fewest = min(v.in_flight for _, _, _, v in best)
            best = sorted(
                (b for b in best if b[3].in_flight == fewest), key=lambda b: b[3].reactor_id
            )
            pick = best[round_robin % len(best)]
            reason = "tie_broken_by_load" if len(best) == 1 else "tie_round_robin"
        else:
            pick = best[0]
            reason = "best_chemical_match"
        score, affinity, ratio, view = pick
        return Chosen(view.reactor_id, score, affinity, ratio, reason)
    return no_choice(seen, avoided, below, best_below, minimum)


def no_choice(
    seen: int, avoided: int, below: int, best_below: float, minimum: float | None
) -> Decision:
    """The verdict when no reactor was chosen: of ``seen`` supporting reactors, ``avoided``
    were in avoid_reactors and ``below`` under ``minimum`` (the best of them
    ``best_below``); any others were busy or not healthy."""
    if seen == 0:
        return Unsupported("no registered reactor supports it")
    if avoided == seen:
        return Unsupported("every supporting reactor is in avoid_reactors")
    if minimum is not None and below + avoided == seen:
        return BelowMinimumAffinity(best_below, minimum)
    return MustWait("every supporting reactor is busy or not healthy")


NO_PREFERENCES: Final = RoutingPreferences()  # preferences of a packet that states none
