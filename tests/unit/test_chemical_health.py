"""protocol/chemical_health.py: §9.1.3 chemical system health from molecule history, and
the §9.2 Molecular Validation verdict per reactor."""

from __future__ import annotations

from packetflow.protocol.chemical_health import (
    MIN_BONDS_TO_JUDGE,
    BondEnd,
    ChemicalHistory,
    bond_outcomes,
)

# a -> b -> c, a -> d (a on r1, b on r1, c on r2, d skipped)
BONDS = [BondEnd("a", "b"), BondEnd("b", "c"), BondEnd("a", "d")]


def test_9_1_3_bonds_hold_only_when_both_ends_succeeded() -> None:
    states = {"a": "succeeded", "b": "succeeded", "c": "failed", "d": "skipped"}
    where = {"a": "r1", "b": "r1", "c": "r2"}
    held, broken, per_reactor = bond_outcomes(BONDS, states.__getitem__, where,
                                              reactor_fault=lambda pid: True)  # fmt: skip
    assert (held, broken) == (1, 2)
    # The skipped target ran nowhere: no reactor is blamed for a->d.
    assert per_reactor == {"r1": (1, 0), "r2": (0, 1)}


def test_9_2_a_clients_bad_data_breaks_bonds_but_blames_no_reactor() -> None:
    states = {"a": "succeeded", "b": "succeeded", "c": "failed", "d": "skipped"}
    where = {"a": "r1", "b": "r1", "c": "r2"}
    held, broken, per_reactor = bond_outcomes(BONDS, states.__getitem__, where)
    assert (held, broken) == (1, 2)  # the system figure counts every broken bond
    assert per_reactor == {"r1": (1, 0)}


def test_9_1_3_bonds_without_an_outcome_are_not_counted() -> None:
    states = {"a": "succeeded", "b": "aborted", "c": "pending", "d": "running"}
    assert bond_outcomes(BONDS, states.__getitem__, {}) == (0, 0, {})


def test_9_1_3_metrics_are_null_before_any_history() -> None:
    m = ChemicalHistory().metrics()
    assert m["bond_success_rate"] is None
    assert m["molecular_stability"] is None
    assert m["optimization_performance"] is None
    assert m["molecular_participation"] == 0


def test_9_1_3_metrics_from_finished_molecules() -> None:
    history = ChemicalHistory()
    ok = {"a": "succeeded", "b": "succeeded", "c": "succeeded", "d": "succeeded"}
    bad = {"a": "succeeded", "b": "failed", "c": "skipped", "d": "succeeded"}
    history.optimization_applied(0.0)
    history.molecule_finished(status="success", stability=1.0, bonds=BONDS,
                              state_of=ok.__getitem__, reactor_of={}, optimized=True,
                              now=1.0)  # fmt: skip
    history.molecule_finished(status="failed", stability=0.5, bonds=BONDS,
                              state_of=bad.__getitem__, reactor_of={}, optimized=False,
                              now=2.0)  # fmt: skip
    m = history.metrics(affinity_effectiveness=0.9)
    assert m["bond_success_rate"] == round(4 / 6, 4)  # 3 held + (a->d) held; 2 broke
    assert m["bonds_observed"] == 6
    assert m["molecular_stability"] == 0.75
    assert m["min_stability"] == 0.5
    assert m["optimization_performance"] == 1.0
    assert m["optimization_count"] == 1
    assert m["molecules_by_status"] == {"success": 1, "failed": 1}
    assert m["affinity_effectiveness"] == 0.9


def test_9_1_3_history_is_bounded() -> None:
    history = ChemicalHistory(max_molecules=3)
    for i in range(10):
        history.molecule_finished(status="success", stability=1.0, bonds=[],
                                  state_of=str, reactor_of={}, optimized=False,
                                  now=float(i))  # fmt: skip
    assert history.metrics()["molecular_participation"] == 3


def test_9_2_molecular_validation_fails_a_reactor_whose_bonds_break() -> None:
    history = ChemicalHistory()
    chain = [BondEnd(f"p{i}", f"p{i + 1}") for i in range(MIN_BONDS_TO_JUDGE)]
    states = {f"p{i}": "succeeded" for i in range(MIN_BONDS_TO_JUDGE + 1)}
    # p1..p4 ran on r1; p2 and p4 failed there and p3 was skipped. Bonds ending on r1:
    # p0->p1 held, p1->p2 and p3->p4 broke (p2->p3 ends at a skipped packet: nobody's).
    states["p2"] = states["p4"] = "failed"
    states["p3"] = "skipped"
    where = {f"p{i}": "r1" for i in range(1, MIN_BONDS_TO_JUDGE + 1)}
    history.molecule_finished(status="failed", stability=0.2, bonds=chain,
                              state_of=states.__getitem__, reactor_of=where, optimized=False,
                              now=1.0, reactor_fault=lambda pid: True)  # fmt: skip
    # r1 saw 3 bonds (p2->p3 targets a skipped packet): too few to judge.
    assert history.molecular_check("r1") is None
    history.molecule_finished(status="failed", stability=0.2, bonds=chain,
                              state_of=states.__getitem__, reactor_of=where, optimized=False,
                              now=2.0, reactor_fault=lambda pid: True)  # fmt: skip
    reason = history.molecular_check("r1")
    assert reason is not None and "bond success rate" in reason
    # The next period starts empty.
    assert history.molecular_check("r1") is None
    assert history.molecular_check("unknown") is None


def test_9_2_molecular_validation_passes_healthy_bonds() -> None:
    history = ChemicalHistory()
    chain = [BondEnd(f"p{i}", f"p{i + 1}") for i in range(8)]
    states = {f"p{i}": "succeeded" for i in range(9)}
    history.molecule_finished(status="success", stability=1.0, bonds=chain,
                              state_of=states.__getitem__,
                              reactor_of={f"p{i}": "r1" for i in range(9)}, optimized=False,
                              now=1.0)  # fmt: skip
    assert history.molecular_check("r1") is None
