"""``protocol/routing_table.py``: the vectorised DESIGN §5 decision equals ``routing.decide``.

The reference ``routing.decide`` is the specification. Every test builds the same state
twice, as a ``RoutingTable`` and as simple ``ReactorView`` dataclasses handed to the
reference in announce order (the order ``ReactorRegistry.candidates`` yields), and
compares the two answers exactly. Each runs with the Python loop and with numpy.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from packetflow.protocol import routing, routing_table
from packetflow.protocol.chemistry import (
    SPECIALIZATIONS,
    STANDARD_MATRIX,
    AffinityMatrix,
    apply_matrix_updates,
)
from packetflow.protocol.messages import RoutingPreferences
from packetflow.protocol.routing import (
    BelowMinimumAffinity,
    Chosen,
    Decision,
    MustWait,
    Unsupported,
)
from packetflow.protocol.routing_table import RoutingTable

IMPLEMENTATIONS = ("python", "elixir", "javascript", "zig")
LOCALITIES = (None, "dc-a", "dc-b")
HEALTHS = ("healthy", "degraded", "recovery", "unknown", "failed")
KEYS = (("cf", "ping"), ("cf", "health"), ("df", "transform"), ("ed", "emit"))
EPS = routing.TIE_EPSILON
# Loads a few ε apart make chains of near-ties whose outcome depends on the order.
NEAR_LOADS = tuple(0.3 + k * 0.45 * EPS for k in range(6))

# Both decision paths of the table: the Python loop (huge threshold) and numpy (0).
PATHS = pytest.mark.parametrize("threshold", [10**9, 0], ids=["loop", "vector"])


@dataclass
class View:
    """A ``routing.ReactorView`` as the reference sees it."""

    reactor_id: str
    specializations: tuple[str, ...]
    implementation: str = "python"
    locality: str | None = None
    capacity: int = 10
    capabilities: frozenset[tuple[str, str]] = frozenset({("cf", "ping")})
    in_flight: int = 0
    reported_load: float = 0.0
    health: str = "healthy"
    adjustments: dict[str, float] = field(default_factory=dict)
    excluded: bool = False

    def adjustment(self, group: str) -> float:
        return self.adjustments.get(group, 0.0)


class Pair:
    """A RoutingTable and the equivalent reference state, kept in step."""

    def __init__(
        self,
        matrix: AffinityMatrix = STANDARD_MATRIX,
        implementation_prefs: Any = None,
        threshold: int = routing_table.VECTOR_THRESHOLD,
    ) -> None:
        self.matrix = matrix
        self.prefs = implementation_prefs
        self.table = RoutingTable(matrix, implementation_prefs, vector_threshold=threshold)
        self.views: dict[str, View] = {}  # announce order, like the registry's index

    def add(self, view: View) -> None:
        old = self.views.pop(view.reactor_id, None)
        if old is not None:  # a refresh keeps the dynamic state, as ReactorRegistry.upsert
            view.in_flight, view.reported_load = old.in_flight, old.reported_load
            view.health, view.adjustments, view.excluded = old.health, old.adjustments, old.excluded
        self.views[view.reactor_id] = view
        t = self.table
        t.add(view.reactor_id, view.specializations, view.implementation, view.locality,
              view.capacity, view.capabilities)  # fmt: skip
        if old is not None:
            return
        # A new reactor starts like a ReactorRecord; only what differs is set, so a reused
        # slot must not leak its previous reactor's state.
        if view.health != "unknown":
            t.set_health(view.reactor_id, view.health)
        if view.in_flight:
            t.set_in_flight(view.reactor_id, view.in_flight)
        if view.reported_load:
            t.set_reported_load(view.reactor_id, view.reported_load)
        if view.excluded:
            t.set_excluded(view.reactor_id, view.excluded)
        for group, value in view.adjustments.items():
            t.set_adjustment(view.reactor_id, group, value)

    def remove(self, reactor_id: str) -> None:
        self.views.pop(reactor_id, None)
        self.table.remove(reactor_id)

    def set(self, reactor_id: str, **changes: Any) -> None:
        view = self.views[reactor_id]
        for name, value in changes.items():
            setattr(view, name, value)
            getattr(self.table, f"set_{name}")(reactor_id, value)

    def set_adjustment(self, reactor_id: str, group: str, value: float) -> None:
        self.views[reactor_id].adjustments[group] = value
        self.table.set_adjustment(reactor_id, group, value)

    def set_matrix(self, matrix: AffinityMatrix) -> None:
        self.matrix = matrix
        self.table.set_matrix(matrix)

    def expected(self, group: str, element: str, **kw: Any) -> Decision:
        candidates = [
            v for v in self.views.values() if (group, element) in v.capabilities and not v.excluded
        ]
        return routing.decide(
            candidates, group=group, matrix=self.matrix, implementation_prefs=self.prefs, **kw
        )

    def check(self, group: str = "cf", element: str = "ping", **kw: Any) -> Decision:
        kw.setdefault("priority", 5)
        want = self.expected(group, element, **kw)
        got = self.table.decide(group, element, **kw)
        assert got == want, (got, want)
        assert self.table.supports(group, element) == any(
            (group, element) in v.capabilities for v in self.views.values()
        )
        return got


def chosen_id(decision: Decision) -> str:
    assert isinstance(decision, Chosen), decision
    return decision.reactor_id


# ---------------------------------------------------------------- the property


@st.composite
def views(draw: st.DrawFn, reactor_id: str) -> View:
    capacity = draw(st.integers(0, 4))
    return View(
        reactor_id=reactor_id,
        specializations=tuple(
            draw(st.lists(st.sampled_from([*SPECIALIZATIONS, "quantum"]), max_size=3))
        ),
        implementation=draw(st.sampled_from(IMPLEMENTATIONS)),
        locality=draw(st.sampled_from(LOCALITIES)),
        capacity=capacity,
        capabilities=frozenset(draw(st.lists(st.sampled_from(KEYS), min_size=1, max_size=3))),
        in_flight=draw(st.integers(0, max(capacity - 1, 0)) | st.integers(0, 5)),
        reported_load=draw(
            st.sampled_from((0.0, 0.25, 0.5, 1.0, 1.5, -0.5, *NEAR_LOADS))
            | st.floats(-0.1, 1.2, allow_nan=False)
        ),
        health=draw(st.sampled_from(HEALTHS) | st.just("healthy")),
        adjustments=draw(
            st.dictionaries(
                st.sampled_from(["cf", "df", "ed"]),
                st.sampled_from((0.0, -0.2, 0.2, 0.1, -0.1 + EPS)) | st.floats(-0.2, 0.2),
                max_size=2,
            )
        ),
        excluded=draw(st.sampled_from((False, False, False, True))),
    )


@st.composite
def preferences(draw: st.DrawFn, ids: list[str]) -> RoutingPreferences | None:
    if draw(st.booleans()):
        return None
    return RoutingPreferences(
        preferred_implementation=draw(st.sampled_from((None, *IMPLEMENTATIONS, "rust"))),
        minimum_affinity=draw(
            st.none() | st.sampled_from((0.0, 0.3, 0.6, 0.8, 0.9, 1.0)) | st.floats(0.0, 1.0)
        ),
        avoid_reactors=draw(st.lists(st.sampled_from([*ids, "ghost"]), max_size=4)),
        affinity_boost=draw(st.sampled_from((0.0, 0.5, -0.5, -1.0, 1.0)) | st.floats(-1, 1)),
        locality_preference=draw(st.sampled_from((*LOCALITIES, "dc-z"))),
    )


@st.composite
def scenarios(draw: st.DrawFn) -> dict[str, Any]:
    size = draw(st.integers(0, 40) | st.integers(10, 40))
    ids = [f"r{i:02d}" for i in draw(st.permutations(range(61)))[:size]]
    # Clones of a few templates make exact ties (and round robin) common.
    templates = draw(st.lists(views("template"), min_size=1, max_size=3))

    def reactor(rid: str) -> View:
        if draw(st.booleans()):
            return draw(views(rid))
        template = draw(st.sampled_from(templates))
        return View(**{**template.__dict__, "reactor_id": rid})

    ops: list[tuple[str, Any]] = [("add", reactor(i)) for i in ids]
    # Churn: removals (freeing slots), re-adds and refreshes (moving to the end), and the
    # state changes the gateway makes between decisions.
    for _ in range(draw(st.integers(0, 12))):
        if not ids:
            break
        rid = draw(st.sampled_from(ids))
        change = draw(
            st.sampled_from(["remove", "add", "in_flight", "health", "load", "excluded", "adjust"])
        )
        if change == "remove":
            ops.append(("remove", rid))
        elif change == "add":
            ops.append(("add", reactor(rid)))
        elif change == "in_flight":
            ops.append(("set", (rid, "in_flight", draw(st.integers(0, 5)))))
        elif change == "health":
            ops.append(("set", (rid, "health", draw(st.sampled_from(HEALTHS)))))
        elif change == "load":
            ops.append(("set", (rid, "reported_load", draw(st.sampled_from(NEAR_LOADS)))))
        elif change == "excluded":
            ops.append(("set", (rid, "excluded", draw(st.booleans()))))
        else:
            value = draw(st.sampled_from((0.0, -0.2, 0.15)))
            ops.append(("adjust", (rid, draw(st.sampled_from(["cf", "df", "ed"])), value)))
    updates = draw(
        st.dictionaries(
            st.sampled_from(["cf", "df", "ed"]),
            st.dictionaries(st.sampled_from(SPECIALIZATIONS), st.sampled_from((0.0, 0.6, 1.0))),
            max_size=2,
        )
    )
    decisions = draw(
        st.lists(
            st.tuples(
                st.sampled_from([*KEYS, *KEYS, *KEYS, ("df", "ping"), ("co", "sync")]),
                st.integers(0, 10),
                preferences(ids),
                st.integers(-3, 50),
            ),
            min_size=1,
            max_size=4,
        )
    )
    return {"ops": ops, "updates": updates, "decisions": decisions}


def _play(pair: Pair, scenario: dict[str, Any]) -> Iterator[None]:
    for op, arg in scenario["ops"]:
        if op == "add":
            pair.add(View(**{**arg.__dict__, "adjustments": dict(arg.adjustments)}))
        elif op == "remove":
            pair.remove(arg)
        elif arg[0] not in pair.views:
            continue  # a change for a removed reactor
        elif op == "set":
            rid, name, value = arg
            pair.set(rid, **{name: value})
        else:
            pair.set_adjustment(*arg)
    yield
    if scenario["updates"]:
        pair.set_matrix(apply_matrix_updates(pair.matrix, scenario["updates"]))
        yield


@pytest.mark.parametrize("implementation_prefs", [None, {"cf": {"zig": 1.5, "python": 1.2}}])
@given(scenario=scenarios())
# Each example plays a whole scenario on both paths: 100 keep this a unit test (seconds).
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_table_decides_exactly_like_the_reference_design_5(
    scenario: dict[str, Any], implementation_prefs: Any
) -> None:
    """DESIGN §5: same reactor, score, reason and PF003/PF101/wait outcome, both paths."""
    for threshold in (10**9, 0):
        pair = Pair(implementation_prefs=implementation_prefs, threshold=threshold)
        for _ in _play(pair, scenario):
            for (group, element), priority, prefs, rr in scenario["decisions"]:
                pair.check(group, element, priority=priority, preferences=prefs, round_robin=rr)


@given(scenario=scenarios())
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_large_ties_use_the_rank_path_design_5(scenario: dict[str, Any]) -> None:
    """The cached id ranks order tied reactors exactly as sorting their ids does."""
    with mock.patch.object(routing_table, "SORT_IN_PYTHON", 0):
        pair = Pair(threshold=0)
        for _ in _play(pair, scenario):
            for (group, element), priority, prefs, rr in scenario["decisions"]:
                pair.check(group, element, priority=priority, preferences=prefs, round_robin=rr)


# ---------------------------------------------------------------- ties and round robin


@PATHS
def test_identical_reactors_round_robin_by_id_design_5(threshold: int) -> None:
    """DESIGN §5 ties: equal scores and in-flight counts rotate over the ids, sorted."""
    pair = Pair(threshold=threshold)
    for rid in ("r-c", "r-a", "r-b"):
        pair.add(View(rid, ("cpu_intensive",)))
    picks = [pair.check(round_robin=rr) for rr in range(6)]
    assert [p.reactor_id for p in picks if isinstance(p, Chosen)] == ["r-a", "r-b", "r-c"] * 2
    assert {p.reason for p in picks if isinstance(p, Chosen)} == {"tie_round_robin"}


@PATHS
def test_tie_goes_to_fewest_in_flight_design_5(threshold: int) -> None:
    """Equal scores (one reactor's reported load equals the other's in-flight share)."""
    pair = Pair(threshold=threshold)
    pair.add(View("busy", ("cpu_intensive",), in_flight=5, capacity=10))
    pair.add(View("idle", ("cpu_intensive",), in_flight=0, capacity=10, reported_load=0.5))
    got = pair.check()
    assert isinstance(got, Chosen)
    assert (got.reactor_id, got.reason) == ("idle", "tie_broken_by_load")


@PATHS
def test_scores_within_epsilon_tie_design_5(threshold: int) -> None:
    pair = Pair(threshold=threshold)
    pair.add(View("a", ("cpu_intensive",), reported_load=0.2))
    pair.add(View("b", ("cpu_intensive",), reported_load=0.2 + 0.5 * EPS))
    pair.add(View("c", ("cpu_intensive",), reported_load=0.2 + 5 * EPS))
    got = pair.check(priority=10, round_robin=1)
    assert isinstance(got, Chosen)
    assert (got.reactor_id, got.reason) == ("b", "tie_round_robin")


@PATHS
def test_near_tie_chain_follows_announce_order_design_5(threshold: int) -> None:
    """Scores 0.9ε apart do not tie transitively: the reference's answer depends on the
    order it sees them in, and the table follows the registry's announce order."""
    step = 0.9 * EPS / (0.9 * 0.5 * 1.1)  # load step giving a 0.9ε score step at priority 5
    outcomes = set()
    for order in ([0, 1, 2], [2, 1, 0], [1, 2, 0], [0, 2, 1]):
        for reuse in (False, True):
            pair = Pair(threshold=threshold)
            if reuse:  # freed slots are reused in another order than the announce order
                for i in range(3):
                    pair.add(View(f"x{i}", ("cpu_intensive",)))
                for i in range(3):
                    pair.remove(f"x{i}")
            for k in order:
                pair.add(View(f"r{k}", ("cpu_intensive",), reported_load=0.3 + k * step))
            outcomes.add(pair.check(round_robin=0))
            pair.check(round_robin=1)
            # A refresh moves the reactor to the end of the announce order.
            pair.add(View(f"r{order[0]}", ("cpu_intensive",)))
            outcomes.add(pair.check(round_robin=0))
    assert len(outcomes) > 1  # the order did matter


@PATHS
def test_big_tie_among_many_identical_reactors_design_5(threshold: int) -> None:
    """A homogeneous idle fleet: everything ties; the rank path picks the id in turn."""
    pair = Pair(threshold=threshold)
    ids = [f"r{i:04d}" for i in range(300)]
    for rid in reversed(ids):
        pair.add(View(rid, ("cpu_intensive",)))
    for rr in (0, 1, 299, 300, 12345):
        got = pair.check(round_robin=rr)
        assert isinstance(got, Chosen) and got.reactor_id == ids[rr % 300]
    pair.set("r0007", in_flight=1)
    pair.check(round_robin=7)


# ---------------------------------------------------------------- hints (§6.3.1)


@PATHS
def test_preferred_implementation_factor_design_5(threshold: int) -> None:
    """×1.25 for the preferred implementation: zig (1.1 × 1.25) beats elixir (1.3) for cf."""
    pair = Pair(threshold=threshold)
    pair.add(View("elixir", ("cpu_intensive",), implementation="elixir"))
    pair.add(View("zig", ("cpu_intensive",), implementation="zig"))
    assert chosen_id(pair.check()) == "elixir"
    got = pair.check(preferences=RoutingPreferences(preferred_implementation="zig"))
    assert isinstance(got, Chosen) and got.reactor_id == "zig"
    assert got.score == pytest.approx(0.9 * 0.5 * 1.1 * 1.1 * 1.25)


@PATHS
def test_locality_preference_factor_design_5(threshold: int) -> None:
    """×1.1 for the preferred locality; a reactor without one never matches."""
    pair = Pair(threshold=threshold)
    pair.add(View("far", ("cpu_intensive",), locality="dc-a"))
    pair.add(View("near", ("cpu_intensive",), locality="dc-b"))
    pair.add(View("none", ("cpu_intensive",), locality=None))
    got = pair.check(preferences=RoutingPreferences(locality_preference="dc-b"))
    assert isinstance(got, Chosen) and (got.reactor_id, got.reason) == (
        "near",
        "best_chemical_match",
    )
    pair.check(preferences=RoutingPreferences(locality_preference="dc-z"), round_robin=2)


@PATHS
def test_affinity_boost_only_for_matching_reactors_design_5(threshold: int) -> None:
    """chemistry.hint_factor: the boost multiplies reactors matching a stated preference only."""
    pair = Pair(threshold=threshold)
    pair.add(View("gp-zig", ("general_purpose",), implementation="zig"))
    pair.add(View("cpu-py", ("cpu_intensive",)))
    # 0.6 × 1.1 × 1.25 = 0.825 < 0.9; with the boost 0.825 × 1.5 > 0.9.
    zig = RoutingPreferences(preferred_implementation="zig")
    assert chosen_id(pair.check(preferences=zig)) == "cpu-py"
    boosted = RoutingPreferences(preferred_implementation="zig", affinity_boost=0.5)
    assert chosen_id(pair.check(preferences=boosted)) == "gp-zig"
    # A boost with no stated preference changes nothing.
    assert chosen_id(pair.check(preferences=RoutingPreferences(affinity_boost=1.0))) == "cpu-py"
    # A negative boost turns the preference into a penalty (a reference subtlety).
    damped = RoutingPreferences(preferred_implementation="python", affinity_boost=-1.0)
    assert chosen_id(pair.check(preferences=damped)) == "gp-zig"


@PATHS
def test_avoid_reactors_are_not_candidates_design_5(threshold: int) -> None:
    pair = Pair(threshold=threshold)
    pair.add(View("best", ("cpu_intensive",)))
    pair.add(View("next", ("general_purpose",)))
    avoid = RoutingPreferences(avoid_reactors=["best", "ghost"])
    assert chosen_id(pair.check(preferences=avoid)) == "next"
    all_avoided = RoutingPreferences(avoid_reactors=["best", "next"])
    assert pair.check(preferences=all_avoided) == Unsupported(
        "every supporting reactor is in avoid_reactors"
    )


# ---------------------------------------------------------------- outcomes


@PATHS
def test_minimum_affinity_pf101_design_5(threshold: int) -> None:
    """PF101: all candidates below minimum_affinity (best affinity + adjustment)."""
    pair = Pair(threshold=threshold)
    pair.add(View("io", ("io_intensive",), adjustments={"cf": 0.1}))  # 0.3 + 0.1
    pair.add(View("mem", ("memory_bound",), health="failed"))  # counted although failed
    got = pair.check(preferences=RoutingPreferences(minimum_affinity=0.6))
    assert got == BelowMinimumAffinity(0.4, 0.6)
    # Exactly at the minimum is not below it.
    got = pair.check(preferences=RoutingPreferences(minimum_affinity=0.3 + 0.1))
    assert isinstance(got, Chosen) and got.reactor_id == "io"


@PATHS
def test_below_minimum_with_negative_affinity_reports_zero_design_5(threshold: int) -> None:
    """Reference subtlety: best_below starts at 0.0, so negative affinities report 0.0."""
    pair = Pair(threshold=threshold)
    pair.add(View("odd", ("quantum",), adjustments={"cf": -0.2}))
    assert pair.check(preferences=RoutingPreferences(minimum_affinity=0.1)) == (
        BelowMinimumAffinity(0.0, 0.1)
    )


@PATHS
def test_pf003_when_nothing_supports_it_design_5(threshold: int) -> None:
    pair = Pair(threshold=threshold)
    assert pair.check() == Unsupported("no registered reactor supports it")
    pair.add(View("r", ("cpu_intensive",), excluded=True))
    # An open breaker removes it from the candidates: as if unregistered (but supports()).
    assert pair.check() == Unsupported("no registered reactor supports it")
    assert pair.table.supports("cf", "ping")
    pair.set("r", excluded=False)
    assert isinstance(pair.check(), Chosen)


@PATHS
def test_must_wait_when_busy_or_unhealthy_design_5(threshold: int) -> None:
    pair = Pair(threshold=threshold)
    pair.add(View("full", ("cpu_intensive",), capacity=2, in_flight=2))
    pair.add(View("sick", ("cpu_intensive",), health="failed"))
    pair.add(View("new", ("cpu_intensive",), health="unknown"))
    pair.add(View("none", ("cpu_intensive",), capacity=0))
    assert pair.check() == MustWait("every supporting reactor is busy or not healthy")
    pair.set("full", in_flight=1)
    got = pair.check()
    assert isinstance(got, Chosen) and got.reactor_id == "full" and got.load_ratio == 0.5


@PATHS
def test_scores_below_the_reference_start_are_never_chosen_design_5(threshold: int) -> None:
    """Reference subtlety: ``best_score`` starts at −1.0, so a score below −1 − ε never
    wins (MustWait) and one within ε of −1.0 does. Reachable only with negative
    adjustments and implementation preferences above ~1.65."""
    prefs = {"cf": {"zig": 4.0}}
    pair = Pair(implementation_prefs=prefs, threshold=threshold)
    # −0.5 × 1 × 1.0 × 0.5 (degraded) × 4.0 = −1.0 exactly.
    pair.add(View("neg", ("quantum",), implementation="zig", health="degraded",
                  adjustments={"cf": -0.5}))  # fmt: skip
    got = pair.check(priority=10)
    assert isinstance(got, Chosen) and got.score == -1.0
    pair.set_adjustment("neg", "cf", -0.6)
    assert pair.check(priority=10) == MustWait("every supporting reactor is busy or not healthy")


# ---------------------------------------------------------------- upkeep


@PATHS
def test_remove_and_re_add_reuse_slots_design_5(threshold: int) -> None:
    pair = Pair(threshold=threshold)
    for i in range(100):  # grows the columns past their initial 64 slots
        pair.add(View(f"r{i:03d}", ("cpu_intensive",), in_flight=i % 7, reported_load=i / 200))
    for i in range(0, 100, 3):
        pair.remove(f"r{i:03d}")
    pair.check(round_robin=3)
    # New reactors take the freed slots and must not inherit their state.
    for i in range(20):
        pair.add(View(f"n{i:03d}", ("general_purpose",), health="unknown"))
    pair.check(round_robin=5)
    pair.add(View("r001", ("network_heavy",), capabilities=frozenset({("df", "transform")})))
    pair.check("df", "transform")
    pair.check(round_robin=1)
    for rid in list(pair.views):
        pair.remove(rid)
    assert pair.check() == Unsupported("no registered reactor supports it")
    assert not pair.table.supports("df", "transform") and len(pair.table) == 0


@PATHS
def test_reused_slot_starts_with_nothing_in_flight_design_5(threshold: int) -> None:
    """Equal scores (reported load dominates): the new reactors win the tie on in-flight."""
    pair = Pair(threshold=threshold)
    for i in range(4):
        pair.add(View(f"old{i}", ("cpu_intensive",), in_flight=1, reported_load=0.5))
    pair.remove("old0")
    pair.remove("old1")
    for i in range(2):
        pair.add(View(f"new{i}", ("cpu_intensive",), reported_load=0.5))
    got = pair.check(round_robin=2)
    assert isinstance(got, Chosen) and (got.reactor_id, got.reason) == ("new0", "tie_round_robin")


@PATHS
def test_refresh_moves_to_the_end_and_keeps_state_design_5(threshold: int) -> None:
    pair = Pair(threshold=threshold)
    pair.add(View("a", ("cpu_intensive",), in_flight=3, health="degraded"))
    pair.add(View("b", ("memory_bound",)))
    pair.add(View("a", ("memory_bound",), capacity=4))  # refresh: state stays
    got = pair.check(round_robin=1)
    assert pair.views["a"].in_flight == 3
    assert isinstance(got, Chosen) and got.reactor_id == "b"


@PATHS
def test_matrix_update_recomputes_weights_design_5(threshold: int) -> None:
    """§6.4: after an update the table routes by the new matrix."""
    pair = Pair(threshold=threshold)
    pair.add(View("cpu", ("cpu_intensive",)))
    pair.add(View("io", ("io_intensive",), adjustments={"cf": 0.05}))
    assert chosen_id(pair.check()) == "cpu"
    pair.set_matrix(apply_matrix_updates(STANDARD_MATRIX, {"cf": {"cpu_intensive": 0.2}}))
    got = pair.check()
    assert isinstance(got, Chosen) and got.reactor_id == "io" and got.affinity == 0.3 + 0.05


def test_adjustment_must_be_finite() -> None:
    table = RoutingTable(STANDARD_MATRIX)
    table.add("r", ("cpu_intensive",), "python", None, 4, frozenset({("cf", "ping")}))
    with pytest.raises(ValueError, match="r for cf"):
        table.set_adjustment("r", "cf", float("nan"))
    with pytest.raises(KeyError):
        table.set_in_flight("ghost", 1)


def test_vector_threshold_default_picks_both_paths() -> None:
    """Small buckets run the loop, big ones numpy: the same answers either way."""
    for n in (routing_table.VECTOR_THRESHOLD, routing_table.VECTOR_THRESHOLD + 1):
        pair = Pair()
        for i in range(n):
            pair.add(View(f"r{i}", ("cpu_intensive",), in_flight=i % 3, capacity=3))
        pair.check(round_robin=4)
