"""The DESIGN §5 routing decision over numpy columns, so it costs microseconds at 10,000 reactors.

``RoutingTable.decide`` returns exactly what ``routing.decide`` returns for the same state
(same reactor, same score bit for bit, same reason, same PF003/PF101/wait outcome); the
reference stays the specification and the property tests compare the two.

How this works
--------------
Every reactor owns one slot (freed slots are reused; columns grow by doubling). Per slot
the table keeps ``1 − load``, the health bonus, a penalty that is 0 when the reactor is
healthy enough, not excluded and has a free slot and −∞ otherwise, in-flight counts,
announce order, and small integer codes for implementation and locality. Per packet group
it keeps the exact affinity (best matrix value of the reactor's specializations plus its
dynamic adjustment, §6.3.2) and the §6.2 implementation preference; per ``group:element``
the announced capability as a 0/−∞ penalty column and an ordered bucket of slots.

A decision multiplies the columns in the reference's order, ``affinity × (1 − load) ×
priority/10 × health × implementation × hints``, so every score equals the reference's bit
for bit; adding the two penalty columns (and −∞ for ``avoid_reactors`` and reactors below
``minimum_affinity``) leaves only candidates. The reference's tie rule depends on the order
it sees candidates when scores sit a few ``TIE_EPSILON`` apart, so the table finds the
"chain" of scores at the top (each within 2·ε of the next, plus the reference's −1.0
starting score): every score outside it is provably irrelevant. When the chain is narrower
than ε/2 (always, unless scores differ by about 1e-9) all of it ties whatever the order;
otherwise the reference loop runs over the chain alone, in announce order. The order is the
one ``ReactorRegistry.candidates`` yields: by the last ``add`` (a refresh moves a reactor
to the end, as the registry's re-index does).

Buckets of at most ``VECTOR_THRESHOLD`` reactors skip numpy (its call overhead exceeds a
short Python loop) and run the reference loop over the cached per-reactor facts.

Values must be finite: matrix entries and adjustments (``set_adjustment`` raises
ValueError otherwise). A NaN ``reported_load`` behaves as in ``routing.load_ratio``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, TypeVar

import numpy as np
from numpy.typing import NDArray

from .chemistry import (
    HEALTH_BONUS,
    AffinityMatrix,
    best_affinity,
    hint_factor,
    implementation_preference,
)
from .messages import RoutingPreferences
from .routing import (
    NO_PREFERENCES,
    TIE_EPSILON,
    Chosen,
    Decision,
    load_ratio,
    no_choice,
)

# Buckets up to this size are decided by a Python loop: measured on the routing benchmark's
# fleets, numpy's fixed cost (~6 µs a decision) exceeds the loop's ~1.8 µs + 0.24 µs per
# reactor below about 18 reactors.
VECTOR_THRESHOLD: Final = 16
# Tied reactors up to this many are ordered by sorting their ids; more use a cached rank.
SORT_IN_PYTHON: Final = 64
# Implementation preferences cached per group; cleared when full.
MAX_CACHED_PREFERENCES: Final = 64
# Columns start this long and double when full.
INITIAL_SLOTS: Final = 64
# Hint columns cached per (implementation code, locality code, boost); cleared when full.
MAX_CACHED_HINTS: Final = 16
# The reference starts from this score: a score below it by more than ε is never chosen.
_START_SCORE: Final = -1.0
# Scores closer than this are linked in the tie chain (2·ε leaves a margin for rounding).
_CHAIN_GAP: Final = 2 * TIE_EPSILON
_NEG_INF: Final = float("-inf")
# hint_factor for a reactor matching no stated hint (the boost does not apply).
_NO_HINT: Final = hint_factor(
    implementation="",
    locality=None,
    preferred_implementation=None,
    locality_preference=None,
    affinity_boost=0.0,
)

Key = tuple[str, str]
Floats = NDArray[np.float64]
Slots = NDArray[np.intp]
_T = TypeVar("_T", bound=np.generic)


@dataclass(slots=True, eq=False)
class _Reactor:
    """One reactor's facts; satisfies ``routing.ReactorView`` (used by ``load_ratio``)."""

    reactor_id: str
    slot: int
    specializations: tuple[str, ...]
    implementation: str
    locality: str | None
    capacity: int
    capabilities: frozenset[Key]
    best: dict[str, float]  # best matrix affinity per group
    in_flight: int = 0
    reported_load: float = 0.0
    health: str = "unknown"
    excluded: bool = False
    adjustments: dict[str, float] = field(default_factory=dict)
    ratio: float = 0.0  # routing.load_ratio(self)
    free: float = 1.0  # 1 − ratio clamped to 0-1, the score's load factor
    bonus: float = 0.0  # HEALTH_BONUS, 0 when not routable

    def adjustment(self, group: str) -> float:
        return self.adjustments.get(group, 0.0)

    def affinity(self, group: str) -> float:
        """The reference's ``best_affinity(...) + view.adjustment(group)``."""
        return self.best.get(group, 0.0) + self.adjustments.get(group, 0.0)

    @property
    def ready(self) -> bool:
        """Eligible for a packet if it supports it: healthy enough, not excluded, a free slot."""
        return not self.excluded and self.health in HEALTH_BONUS and self.in_flight < self.capacity


@dataclass(slots=True, eq=False)
class _Capability:
    """The reactors announcing one ``group:element``, in announce order."""

    bucket: dict[int, None]  # slot → None, insertion-ordered like the registry's index
    support: NDArray[np.bool_]
    penalty: Floats  # 0.0 where supported, −∞ elsewhere


@dataclass(slots=True, eq=False)
class _GroupColumns:
    affinity: Floats  # best matrix affinity + adjustment, exactly as the reference adds them
    preference: Floats  # §6.2 implementation preference
    keys: int = 0  # capabilities of this group; the columns go when it reaches 0
    preference_of: dict[str, float] = field(default_factory=dict)  # implementation → §6.2


class _Codes:
    """Small integer codes for strings (implementations, localities), reference counted."""

    def __init__(self) -> None:
        self._codes: dict[str, int] = {}
        self._refs: dict[int, int] = {}
        self._free: list[int] = []

    def get(self, name: str | None) -> int | None:
        return None if name is None else self._codes.get(name)

    def acquire(self, name: str | None) -> int:
        if name is None:
            return -1
        code = self._codes.get(name)
        if code is None:
            code = self._free.pop() if self._free else len(self._codes)
            self._codes[name] = code
            self._refs[code] = 0
        self._refs[code] += 1
        return code

    def release(self, name: str | None) -> None:
        if name is None:
            return
        code = self._codes[name]
        self._refs[code] -= 1
        if self._refs[code] == 0:
            del self._codes[name], self._refs[code]
            self._free.append(code)


def _grown(array: NDArray[_T], size: int, fill: float) -> NDArray[_T]:
    """``array`` extended to ``size`` with ``fill``."""
    out = np.full(size, fill, dtype=array.dtype)
    out[: len(array)] = array
    return out


class RoutingTable:
    """The reactors as columns; ``decide`` is ``routing.decide`` in a few vector operations.

    The gateway mirrors its registry here: ``add`` on announce (and refresh), ``remove``,
    the ``set_*`` methods as state changes. Setters raise KeyError for an unknown reactor.
    """

    def __init__(
        self,
        matrix: AffinityMatrix,
        implementation_prefs: Mapping[str, Mapping[str, float]] | None = None,
        *,
        vector_threshold: int = VECTOR_THRESHOLD,
    ) -> None:
        self._matrix = matrix
        self._implementation_prefs = implementation_prefs
        self._vector_threshold = vector_threshold
        self._reactors: dict[str, _Reactor] = {}
        self._slots: list[_Reactor | None] = []
        self._free_slots: list[int] = []
        self._high = 0  # slots in use are below this
        self._size = INITIAL_SLOTS
        self._next_order = 0
        self._implementations = _Codes()
        self._localities = _Codes()
        self._groups: dict[str, _GroupColumns] = {}
        self._capabilities: dict[Key, _Capability] = {}
        self._hints: dict[tuple[int | None, int | None, float], Floats] = {}
        self._ranks: tuple[NDArray[np.int64], list[int]] | None = None
        size = self._size
        self._free: Floats = np.ones(size)
        self._bonus: Floats = np.zeros(size)
        self._ready: Floats = np.full(size, _NEG_INF)  # 0.0 if ready else −∞
        self._present: NDArray[np.bool_] = np.zeros(size, dtype=np.bool_)  # in use, not excluded
        self._in_flight: NDArray[np.int64] = np.zeros(size, dtype=np.int64)
        self._order: NDArray[np.int64] = np.zeros(size, dtype=np.int64)
        self._implementation: NDArray[np.int32] = np.full(size, -1, dtype=np.int32)
        self._locality: NDArray[np.int32] = np.full(size, -1, dtype=np.int32)
        self._scores: Floats = np.empty(size)
        # Reactors whose in-flight count moved since the vector path last read the load
        # columns: two numpy scalar writes per packet cost more than the loop path's
        # whole decision, so the columns catch up only when a vector decision needs them.
        self._stale: dict[int, _Reactor] = {}

    # ------------------------------------------------------------------ membership

    def __len__(self) -> int:
        return len(self._reactors)

    def __contains__(self, reactor_id: object) -> bool:
        return reactor_id in self._reactors

    def supports(self, group: str, element: str) -> bool:
        """Whether any registered reactor (excluded or not) announces ``group:element``."""
        return (group, element) in self._capabilities

    def add(
        self,
        reactor_id: str,
        specializations: tuple[str, ...],
        implementation: str,
        locality: str | None,
        capacity: int,
        capabilities: frozenset[tuple[str, str]],
    ) -> None:
        """Register a reactor, or refresh a known one's announced facts (its state stays).

        Either way it moves to the end of the announce order, like the registry's re-index.
        """
        reactor = self._reactors.get(reactor_id)
        if reactor is None:
            slot = self._take_slot()
            reactor = _Reactor(
                reactor_id, slot, specializations, implementation, locality, capacity,
                frozenset(), {},
            )  # fmt: skip
            self._reactors[reactor_id] = reactor
            self._slots[slot] = reactor
            self._ranks = None
        else:
            slot = reactor.slot
            self._unindex(reactor)
            self._implementations.release(reactor.implementation)
            self._localities.release(reactor.locality)
            reactor.specializations = specializations
            reactor.implementation = implementation
            reactor.locality = locality
            reactor.capacity = capacity
        self._hints.clear()
        reactor.best = self._best(specializations)
        reactor.capabilities = frozenset(capabilities)
        self._implementation[slot] = self._implementations.acquire(implementation)
        self._locality[slot] = self._localities.acquire(locality)
        self._order[slot] = self._next_order
        self._next_order += 1
        self._in_flight[slot] = reactor.in_flight
        self._bonus[slot] = reactor.bonus
        self._present[slot] = not reactor.excluded
        for group, element in reactor.capabilities:
            self._index(slot, group, element)
        for group, columns in self._groups.items():
            self._write_group(columns, group, reactor)
        self._refresh_load(reactor)
        self._refresh_ready(reactor)

    def remove(self, reactor_id: str) -> None:
        """Forget a reactor (no-op if unknown); its slot is reused by a later ``add``."""
        reactor = self._reactors.pop(reactor_id, None)
        if reactor is None:
            return
        slot = reactor.slot
        self._unindex(reactor)
        self._implementations.release(reactor.implementation)
        self._localities.release(reactor.locality)
        self._slots[slot] = None
        self._stale.pop(slot, None)
        self._present[slot] = False
        self._ready[slot] = _NEG_INF
        self._implementation[slot] = -1
        self._locality[slot] = -1
        self._free_slots.append(slot)
        self._hints.clear()
        self._ranks = None

    # ------------------------------------------------------------------ state changes

    def set_matrix(self, matrix: AffinityMatrix) -> None:
        """A §6.4 matrix update: recompute every reactor's best affinity."""
        self._matrix = matrix
        for reactor in self._reactors.values():
            reactor.best = self._best(reactor.specializations)
        for group, columns in self._groups.items():
            for reactor in self._reactors.values():
                columns.affinity[reactor.slot] = reactor.affinity(group)

    def set_health(self, reactor_id: str, health: str) -> None:
        reactor = self._reactors[reactor_id]
        reactor.health = health
        reactor.bonus = HEALTH_BONUS.get(health, 0.0)
        self._bonus[reactor.slot] = reactor.bonus
        self._refresh_ready(reactor)

    def set_in_flight(self, reactor_id: str, n: int) -> None:
        """O(1): called on every dispatch and completion."""
        reactor = self._reactors[reactor_id]
        reactor.in_flight = n
        self._refresh_load(reactor)

    def set_capacity(self, reactor_id: str, capacity: int) -> None:
        """The capacity routing uses (§8.3 ``protocol.capacity.effective_capacity``); 0
        takes the reactor out of routing without forgetting it (maintenance)."""
        reactor = self._reactors[reactor_id]
        reactor.capacity = max(0, capacity)
        self._refresh_load(reactor)
        self._refresh_ready(reactor)

    def set_reported_load(self, reactor_id: str, load: float) -> None:
        reactor = self._reactors[reactor_id]
        reactor.reported_load = load
        self._refresh_load(reactor)

    def set_adjustment(self, reactor_id: str, group: str, value: float) -> None:
        """The §6.3.2 dynamic adjustment of a reactor for ``group``.

        Raises ValueError for a value that is not finite.
        """
        if not math.isfinite(value):
            raise ValueError(f"adjustment of {reactor_id} for {group} must be finite: {value}")
        reactor = self._reactors[reactor_id]
        reactor.adjustments[group] = value
        columns = self._groups.get(group)
        if columns is not None:
            columns.affinity[reactor.slot] = reactor.affinity(group)

    def set_excluded(self, reactor_id: str, excluded: bool) -> None:
        """An open circuit breaker: not a candidate at all, as if absent from the registry."""
        reactor = self._reactors[reactor_id]
        reactor.excluded = excluded
        self._present[reactor.slot] = not excluded
        self._refresh_ready(reactor)

    # ------------------------------------------------------------------ the decision

    def decide(
        self,
        group: str,
        element: str,
        *,
        priority: int,
        preferences: RoutingPreferences | None = None,
        round_robin: int = 0,
    ) -> Decision:
        """``routing.decide`` over the reactors supporting ``group:element`` (DESIGN §5).

        Ties go to the fewest in flight, then round robin by ``round_robin`` over the
        tied reactors sorted by id.
        """
        capability = self._capabilities.get((group, element))
        if capability is None:
            return no_choice(seen=0, avoided=0, below=0, best_below=0.0, minimum=None)
        prefs = preferences or NO_PREFERENCES
        if len(capability.bucket) <= self._vector_threshold:
            return self._decide_loop(capability, group, priority, prefs, round_robin)
        return self._decide_vector(capability, group, priority, prefs, round_robin)

    def _decide_loop(
        self,
        capability: _Capability,
        group: str,
        priority: int,
        prefs: RoutingPreferences,
        round_robin: int,
    ) -> Decision:
        """The reference loop over the bucket, with cached affinities and load factors."""
        avoid = set(prefs.avoid_reactors)
        minimum = prefs.minimum_affinity
        weight = priority / 10.0
        wanted = prefs.preferred_implementation
        place = prefs.locality_preference
        hints = self._hint_factors(prefs) if wanted is not None or place is not None else None
        preference_of = self._groups[group].preference_of
        seen = avoided = below = 0
        best_below = 0.0
        best: list[tuple[float, _Reactor]] = []
        best_score = _START_SCORE
        slots = self._slots
        for slot in capability.bucket:
            reactor = slots[slot]
            assert reactor is not None
            if reactor.excluded:
                continue
            seen += 1
            if avoid and reactor.reactor_id in avoid:
                avoided += 1
                continue
            affinity = reactor.best.get(group, 0.0) + reactor.adjustments.get(group, 0.0)
            if minimum is not None and affinity < minimum:
                below += 1
                best_below = max(best_below, affinity)
                continue
            if reactor.health not in HEALTH_BONUS or reactor.in_flight >= reactor.capacity:
                continue
            implementation = reactor.implementation
            preference = preference_of.get(implementation)
            if preference is None:
                preference = self._preference(group, implementation)
            hint = (
                hints[
                    (implementation == wanted)
                    + 2 * (place is not None and reactor.locality == place)
                ]
                if hints is not None
                else _NO_HINT
            )
            score = affinity * reactor.free * weight * reactor.bonus * preference * hint
            if score > best_score + TIE_EPSILON:
                best_score = score
                best = [(score, reactor)]
            elif score >= best_score - TIE_EPSILON:
                best.append((score, reactor))
        if best:
            if len(best) == 1:
                score, reactor = best[0]
                return self._chosen(reactor, score, group, "best_chemical_match")
            fewest = min(r.in_flight for _, r in best)
            best = sorted((b for b in best if b[1].in_flight == fewest), key=_by_id)
            score, reactor = best[round_robin % len(best)]
            reason = "tie_broken_by_load" if len(best) == 1 else "tie_round_robin"
            return self._chosen(reactor, score, group, reason)
        return no_choice(seen, avoided, below, best_below, minimum)

    def _decide_vector(
        self,
        capability: _Capability,
        group: str,
        priority: int,
        prefs: RoutingPreferences,
        round_robin: int,
    ) -> Decision:
        """The same decision as a handful of numpy operations over every slot."""
        self._catch_up()
        high = self._high
        columns = self._groups[group]
        affinity = columns.affinity[:high]
        # The reference's product, factor by factor in its order: equal bit for bit.
        scores = np.multiply(affinity, self._free[:high], out=self._scores[:high])
        scores *= priority / 10.0
        scores *= self._bonus[:high]
        scores *= columns.preference[:high]
        hints = self._hint_column(prefs)
        if hints is not None:
            scores *= hints[:high]
        scores += self._ready[:high]
        scores += capability.penalty[:high]
        avoid = self._avoided_slots(prefs)
        if avoid:
            scores[avoid] = _NEG_INF
        minimum = prefs.minimum_affinity
        if minimum is not None:
            np.putmask(scores, affinity < minimum, _NEG_INF)
        best = int(scores.argmax())
        top = float(scores[best])
        if top > _NEG_INF:
            if (
                top - _CHAIN_GAP > _START_SCORE
                and np.count_nonzero(scores >= top - _CHAIN_GAP) == 1
            ):
                # The usual case: one clear winner, alone in its chain.
                reactor = self._slots[best]
                assert reactor is not None
                return self._chosen(reactor, top, group, "best_chemical_match")
            tied = self._tied(scores, top)
            if len(tied):
                return self._pick(tied, scores, group, round_robin)
        # Nobody chosen: count like the reference to tell PF003, PF101 and waiting apart.
        candidates = capability.support[:high] & self._present[:high]
        seen = int(np.count_nonzero(candidates))
        avoided_here = [slot for slot in avoid if candidates[slot]]
        below, best_below = 0, 0.0
        if minimum is not None and seen:
            candidates[avoided_here] = False
            low = affinity[candidates & (affinity < minimum)]
            below = len(low)
            if below:
                best_below = max(best_below, float(low.max()))
        return no_choice(seen, len(avoided_here), below, best_below, minimum)

    def _tied(self, scores: Floats, top: float) -> Slots | list[int]:
        """The reactors the reference loop ends with in its ``best`` list (maybe none).

        Finds the chain of scores linked by gaps of at most 2·ε from the top (the −1.0 the
        reference starts from counts as a score); everything below it never enters nor
        resets ``best``.
        """
        low = max(top, _START_SCORE)
        while True:
            members = (scores >= low - _CHAIN_GAP).nonzero()[0]
            lowest = float(scores[members].min()) if len(members) else low
            if low - _CHAIN_GAP <= _START_SCORE:
                lowest = min(lowest, _START_SCORE)
            if lowest >= low:
                break
            low = lowest
        if not len(members) or (low > _START_SCORE and top - low <= TIE_EPSILON / 2):
            # Narrower than ε/2 and clear of the start: all of it ties in any order.
            return members
        # Rare: scores about ε apart (or near −1.0). Run the reference loop on the chain
        # in announce order, the order ReactorRegistry.candidates yields.
        members = members[np.argsort(self._order[members], kind="stable")]
        best: list[int] = []
        best_score = _START_SCORE
        for slot, score in zip(members.tolist(), scores[members].tolist(), strict=True):
            if score > best_score + TIE_EPSILON:
                best_score = score
                best = [slot]
            elif score >= best_score - TIE_EPSILON:
                best.append(slot)
        return best

    def _pick(
        self, tied: Slots | list[int], scores: Floats, group: str, round_robin: int
    ) -> Chosen:
        slots = np.asarray(tied, dtype=np.intp)
        if len(slots) == 1:
            slot, reason = int(slots[0]), "best_chemical_match"
        else:
            in_flight = self._in_flight[slots]
            slots = slots[in_flight == in_flight.min()]
            if len(slots) == 1:
                slot, reason = int(slots[0]), "tie_broken_by_load"
            else:
                slot = self._kth_by_id(slots, round_robin % len(slots))
                reason = "tie_round_robin"
        reactor = self._slots[slot]
        assert reactor is not None
        return self._chosen(reactor, float(scores[slot]), group, reason)

    def _kth_by_id(self, slots: Slots, k: int) -> int:
        """The slot whose reactor id is k-th smallest among ``slots``."""
        if len(slots) <= SORT_IN_PYTHON:
            few: list[int] = sorted(slots.tolist(), key=self._id_at)
            return few[k]
        if self._ranks is None:
            ordered = sorted(self._reactors.values(), key=lambda r: r.reactor_id)
            rank = np.zeros(self._size, dtype=np.int64)
            for i, reactor in enumerate(ordered):
                rank[reactor.slot] = i
            self._ranks = rank, [r.slot for r in ordered]
        rank, slot_of_rank = self._ranks
        return slot_of_rank[int(np.partition(rank[slots], k)[k])]

    def _id_at(self, slot: int) -> str:
        reactor = self._slots[slot]
        assert reactor is not None
        return reactor.reactor_id

    def _chosen(self, reactor: _Reactor, score: float, group: str, reason: str) -> Chosen:
        return Chosen(reactor.reactor_id, score, reactor.affinity(group), reactor.ratio, reason)

    # ------------------------------------------------------------------ hints

    def _hint_factors(self, prefs: RoutingPreferences) -> tuple[float, float, float, float]:
        """``hint_factor`` for: no match, implementation, locality, both."""
        boost = prefs.affinity_boost

        def factor(implementation: bool, locality: bool) -> float:
            return hint_factor(
                implementation="i",
                locality="l",
                preferred_implementation="i" if implementation else None,
                locality_preference="l" if locality else None,
                affinity_boost=boost,
            )

        return factor(False, False), factor(True, False), factor(False, True), factor(True, True)

    def _hint_column(self, prefs: RoutingPreferences) -> Floats | None:
        """Each slot's hint factor, or None when no reactor matches a hint (all 1.0)."""
        wanted = self._implementations.get(prefs.preferred_implementation)
        place = self._localities.get(prefs.locality_preference)
        if wanted is None and place is None:
            return None
        key = (wanted, place, prefs.affinity_boost)
        column = self._hints.get(key)
        if column is None:
            if len(self._hints) >= MAX_CACHED_HINTS:
                self._hints.clear()
            index = np.zeros(self._size, dtype=np.intp)
            if wanted is not None:
                index += self._implementation == wanted
            if place is not None:
                index += 2 * (self._locality == place)
            column = np.asarray(self._hint_factors(prefs), dtype=np.float64)[index]
            self._hints[key] = column
        return column

    def _avoided_slots(self, prefs: RoutingPreferences) -> list[int]:
        if not prefs.avoid_reactors:
            return []
        found = (self._reactors.get(r) for r in set(prefs.avoid_reactors))
        return [r.slot for r in found if r is not None]

    # ------------------------------------------------------------------ upkeep

    def _best(self, specializations: tuple[str, ...]) -> dict[str, float]:
        return {g: best_affinity(self._matrix, g, specializations) for g in self._matrix}

    def _refresh_load(self, reactor: _Reactor) -> None:
        reactor.ratio = load_ratio(reactor)
        reactor.free = 1.0 - min(max(reactor.ratio, 0.0), 1.0)
        self._stale[reactor.slot] = reactor

    def _catch_up(self) -> None:
        """Write the load columns of every reactor whose load moved since the last time."""
        for slot, reactor in self._stale.items():
            self._in_flight[slot] = reactor.in_flight
            self._free[slot] = reactor.free
            self._ready[slot] = 0.0 if reactor.ready else _NEG_INF
        self._stale.clear()

    def _refresh_ready(self, reactor: _Reactor) -> None:
        self._ready[reactor.slot] = 0.0 if reactor.ready else _NEG_INF

    def _write_group(self, columns: _GroupColumns, group: str, reactor: _Reactor) -> None:
        columns.affinity[reactor.slot] = reactor.affinity(group)
        columns.preference[reactor.slot] = self._preference(group, reactor.implementation)

    def _preference(self, group: str, implementation: str) -> float:
        """§6.2 ``implementation_preference``, cached per group (a few implementations)."""
        cache = self._groups[group].preference_of
        if len(cache) >= MAX_CACHED_PREFERENCES:
            cache.clear()
        value = cache[implementation] = implementation_preference(
            group, implementation, self._implementation_prefs
        )
        return value

    def _index(self, slot: int, group: str, element: str) -> None:
        capability = self._capabilities.get((group, element))
        if capability is None:
            support = np.zeros(self._size, dtype=np.bool_)
            capability = _Capability({}, support, np.full(self._size, _NEG_INF))
            self._capabilities[group, element] = capability
            columns = self._groups.get(group)
            if columns is None:
                columns = _GroupColumns(np.zeros(self._size), np.ones(self._size))
                self._groups[group] = columns
                for reactor in self._reactors.values():
                    self._write_group(columns, group, reactor)
            columns.keys += 1
        capability.bucket[slot] = None
        capability.support[slot] = True
        capability.penalty[slot] = 0.0

    def _unindex(self, reactor: _Reactor) -> None:
        for group, element in reactor.capabilities:
            capability = self._capabilities[group, element]
            del capability.bucket[reactor.slot]
            capability.support[reactor.slot] = False
            capability.penalty[reactor.slot] = _NEG_INF
            if not capability.bucket:
                del self._capabilities[group, element]
                columns = self._groups[group]
                columns.keys -= 1
                if not columns.keys:
                    del self._groups[group]
        reactor.capabilities = frozenset()

    def _take_slot(self) -> int:
        if self._free_slots:
            return self._free_slots.pop()
        if self._high == self._size:
            self._grow(2 * self._size)
        self._slots.append(None)
        self._high += 1
        return self._high - 1

    def _grow(self, size: int) -> None:
        self._free = _grown(self._free, size, 1.0)
        self._bonus = _grown(self._bonus, size, 0.0)
        self._ready = _grown(self._ready, size, _NEG_INF)
        self._present = _grown(self._present, size, False)
        self._in_flight = _grown(self._in_flight, size, 0)
        self._order = _grown(self._order, size, 0)
        self._implementation = _grown(self._implementation, size, -1)
        self._locality = _grown(self._locality, size, -1)
        self._scores = np.empty(size)
        for columns in self._groups.values():
            columns.affinity = _grown(columns.affinity, size, 0.0)
            columns.preference = _grown(columns.preference, size, 1.0)
        for capability in self._capabilities.values():
            capability.support = _grown(capability.support, size, False)
            capability.penalty = _grown(capability.penalty, size, _NEG_INF)
        self._hints.clear()
        self._ranks = None
        self._size = size


def _by_id(entry: tuple[float, _Reactor]) -> str:
    return entry[1].reactor_id
