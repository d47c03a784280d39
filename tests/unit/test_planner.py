"""The molecule planner (protocol/planner.py): DESIGN §7 bond semantics, dataflow
execution, §10.4.1 fault tolerance, §10.4.2 healing, abort and timeout, stability and
PF103, progress in the wire example's shape, and snapshot/restore (DESIGN §7 durability).
Driven purely by events; no sockets, no clock.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from packetflow.protocol import errors
from packetflow.protocol.molecules import Molecule, parse_molecule
from packetflow.protocol.planner import (
    AbortRequested,
    AdjustBonds,
    CancelPacket,
    ConvertBond,
    FinishMolecule,
    IllegalMoleculeEvent,
    Instruction,
    MoleculeRun,
    MoleculeStarted,
    PacketDispatched,
    PacketFailed,
    PacketSucceeded,
    ReportProgress,
    RetryPacket,
    ScheduleCheck,
    ScheduleTimer,
    StartPacket,
    TimerFired,
)

from .test_molecules import DATA_PIPELINE_PAYLOAD, USER_ONBOARDING

ERR = {"error_code": "PF005", "error_message": "boom"}


def err_from(reactor: str) -> dict[str, Any]:
    return {**ERR, "reactor_info": {"reactor_id": reactor}}


def mol(
    packets: list[str], bonds: list[tuple[str, str, str]] | None = None, **props: Any
) -> Molecule:
    return parse_molecule(
        {
            "molecule_id": "m",
            "packets": [{"id": p, "group": "df", "element": "transform"} for p in packets],
            "bonds": [{"from": a, "to": b, "type": t} for a, b, t in bonds or []],
            "properties": props,
        }
    )


def started(out: list[Instruction]) -> list[str]:
    return [i.packet_id for i in out if isinstance(i, StartPacket)]


def start_of(out: list[Instruction], pid: str) -> StartPacket:
    (found,) = [i for i in out if isinstance(i, StartPacket) and i.packet_id == pid]
    return found


def finish(out: list[Instruction]) -> FinishMolecule | None:
    found = [i for i in out if isinstance(i, FinishMolecule)]
    assert len(found) <= 1
    return found[0] if found else None


def progress(out: list[Instruction]) -> dict[str, Any]:
    reports = [i for i in out if isinstance(i, ReportProgress)]
    assert len(reports) == 1
    return dict(reports[0].progress)


def ok(pid: str) -> dict[str, Any]:
    return {"result": pid.upper()}


# ---------------------------------------------------------------- bond semantics (DESIGN §7)


def test_design_7_ionic_target_waits_for_success_and_receives_result() -> None:
    run = MoleculeRun(mol(["a", "b"], [("a", "b", "ionic")]), 0.0)
    out = run.start(1.0)
    assert started(out) == ["a"]
    assert start_of(out, "a").inputs == {}
    assert run.state_of("b") == "pending"
    out = run.packet_succeeded("a", ok("a"), 2.0)
    b = start_of(out, "b")
    assert b.inputs == {"a": {"result": "A"}}
    assert b.prefer_reactor_of is None
    out = run.packet_succeeded("b", ok("b"), 3.0)
    done = finish(out)
    assert done is not None
    assert done.status == "success"
    assert done.results == {"a": {"result": "A"}, "b": {"result": "B"}}
    assert done.errors == {}
    # Progress comes before the finish, and nothing follows the finish.
    assert isinstance(out[-2], ReportProgress)
    assert isinstance(out[-1], FinishMolecule)


def test_design_7_ionic_failure_skips_everything_ionically_downstream() -> None:
    run = MoleculeRun(
        mol(
            ["a", "b", "c", "d", "e"],
            [("a", "b", "ionic"), ("b", "c", "ionic"), ("b", "d", "covalent")],
            fault_tolerance="isolate_and_continue",
        ),
        0.0,
    )
    assert started(run.start(0.0)) == ["a", "e"]
    out = run.packet_failed("a", ERR, False, 1.0)
    assert run.state_of("b") == "skipped"
    assert run.state_of("c") == "skipped"
    # d is covalent to the skipped b: it runs, and gets b's (skipped) error.
    d = start_of(out, "d")
    assert d.inputs["b"]["error"]["error_code"] == "PF102"
    assert d.inputs["b"]["error"]["error_details"]["skipped"] is True
    assert d.prefer_reactor_of is None  # b ran nowhere
    p = progress(out)
    assert p["skipped_packets"] == ["b", "c"]
    assert p["failed_packets"] == ["a"]
    assert p["stage_results"]["b"] == {"status": "skipped", "skipped_because": "a"}
    run.packet_succeeded("e", ok("e"), 2.0)
    done = finish(run.packet_succeeded("d", ok("d"), 3.0))
    assert done is not None
    assert done.status == "partial"
    assert set(done.results) == {"d", "e"}
    assert done.errors == {"a": ERR}


@pytest.mark.parametrize("outcome", ["success", "failure"])
def test_design_7_covalent_waits_for_finish_either_way_and_prefers_same_reactor(
    outcome: str,
) -> None:
    run = MoleculeRun(
        mol(["a", "b"], [("a", "b", "covalent")], fault_tolerance="isolate_and_continue"), 0.0
    )
    assert started(run.start(0.0)) == ["a"]
    run.packet_dispatched("a", "reactor-1", 0.1)
    if outcome == "success":
        out = run.packet_succeeded("a", ok("a"), 1.0)
        expected: Any = {"result": "A"}
    else:
        out = run.packet_failed("a", ERR, False, 1.0)
        expected = {"error": ERR}
    b = start_of(out, "b")
    assert b.inputs == {"a": expected}
    assert b.prefer_reactor_of == "a"


def test_design_7_metallic_never_waits() -> None:
    run = MoleculeRun(mol(["a", "b"], [("a", "b", "metallic")]), 0.0)
    out = run.start(0.0)
    assert started(out) == ["a", "b"]
    assert start_of(out, "b").inputs == {}


def test_design_7_metallic_passes_result_if_already_there() -> None:
    run = MoleculeRun(mol(["a", "c", "b"], [("a", "b", "metallic"), ("c", "b", "ionic")]), 0.0)
    assert started(run.start(0.0)) == ["a", "c"]
    assert started(run.packet_succeeded("a", ok("a"), 1.0)) == []
    b = start_of(run.packet_succeeded("c", ok("c"), 2.0), "b")
    assert b.inputs == {"a": {"result": "A"}, "c": {"result": "C"}}


def test_design_7_metallic_source_unfinished_or_failed_gives_no_input() -> None:
    run = MoleculeRun(
        mol(
            ["a", "c", "b"],
            [("a", "b", "metallic"), ("c", "b", "ionic")],
            fault_tolerance="isolate_and_continue",
        ),
        0.0,
    )
    run.start(0.0)
    run.packet_failed("a", ERR, False, 1.0)
    b = start_of(run.packet_succeeded("c", ok("c"), 2.0), "b")
    assert b.inputs == {"c": {"result": "C"}}


def test_design_7_vdw_observer_starts_after_source_and_never_changes_status() -> None:
    run = MoleculeRun(mol(["a", "b", "log"], [("a", "b", "ionic"), ("a", "log", "vdw")]), 0.0)
    assert started(run.start(0.0)) == ["a"]
    assert run.is_observer("log") and not run.is_observer("b")
    out = run.packet_succeeded("a", ok("a"), 1.0)
    assert started(out) == ["b", "log"]
    assert start_of(out, "log").inputs == {"a": {"result": "A"}}
    # The observer's failure, under fail_fast, neither aborts nor fails the molecule...
    out = run.packet_failed("log", ERR, False, 2.0)
    assert not any(isinstance(i, CancelPacket) for i in out)
    assert finish(out) is None
    done = finish(run.packet_succeeded("b", ok("b"), 3.0))
    assert done is not None
    assert done.status == "success"
    assert done.errors == {"log": ERR}  # ...but it is still reported.


def test_design_7_vdw_observer_of_failed_source_gets_its_error_and_is_awaited() -> None:
    run = MoleculeRun(
        mol(["a", "log"], [("a", "log", "vdw")], fault_tolerance="isolate_and_continue"), 0.0
    )
    run.start(0.0)
    out = run.packet_failed("a", ERR, False, 1.0)
    assert start_of(out, "log").inputs == {"a": {"error": ERR}}
    assert finish(out) is None  # the run waits for its observer
    done = finish(run.packet_succeeded("log", {"logged": True}, 2.0))
    assert done is not None
    assert done.status == "failed"  # no non-observer succeeded
    assert done.results == {"log": {"logged": True}}


def test_design_7_dataflow_starts_packets_as_soon_as_bonds_allow() -> None:
    # Stage-by-stage execution would hold c back until b (stage 1) also finished.
    run = MoleculeRun(mol(["a", "b", "c", "d"], [("a", "c", "ionic"), ("b", "d", "ionic")]), 0.0)
    assert started(run.start(0.0)) == ["a", "b"]
    out = run.packet_succeeded("a", ok("a"), 1.0)
    assert started(out) == ["c"]
    assert run.state_of("b") == "ready"


def test_design_7_join_waits_for_every_blocking_source() -> None:
    run = MoleculeRun(mol(["a", "b", "c"], [("a", "c", "ionic"), ("b", "c", "covalent")]), 0.0)
    run.start(0.0)
    assert started(run.packet_succeeded("b", ok("b"), 1.0)) == []
    c = start_of(run.packet_succeeded("a", ok("a"), 2.0), "c")
    assert c.inputs == {"a": {"result": "A"}, "b": {"result": "B"}}
    assert c.prefer_reactor_of == "b"


# ---------------------------------------------- fault tolerance (DESIGN §7, §10.4.1)


def test_design_7_fail_fast_aborts_the_rest() -> None:
    run = MoleculeRun(mol(["a", "b", "c", "d"], [("a", "d", "ionic")]), 0.0)
    run.start(0.0)
    run.packet_dispatched("a", "r1", 0.5)
    out = run.packet_failed("b", err_from("r2"), True, 1.0)  # retryable, but fail_fast
    assert not any(isinstance(i, RetryPacket) for i in out)
    assert [i.packet_id for i in out if isinstance(i, CancelPacket)] == ["a", "c"]
    assert {p: run.state_of(p) for p in "abcd"} == {
        "a": "aborted",
        "b": "failed",
        "c": "aborted",
        "d": "aborted",
    }
    done = finish(out)
    assert done is not None
    assert done.status == "failed"
    assert done.errors == {"b": err_from("r2")}
    assert done.reason == "packet 'b' failed"
    assert progress(out)["aborted_packets"] == ["a", "c", "d"]
    # Late results of cancelled packets are ignored.
    assert run.packet_succeeded("a", ok("a"), 2.0) == []
    assert run.packet_failed("c", ERR, True, 2.0) == []


def test_design_7_retry_failed_stages_retries_on_another_reactor_then_fails() -> None:
    run = MoleculeRun(mol(["a", "b"], fault_tolerance="retry_failed_stages", max_retries=2), 0.0)
    run.start(0.0)
    run.packet_dispatched("a", "r1", 0.1)
    out = run.packet_failed("a", ERR, True, 1.0)
    retry = [i for i in out if isinstance(i, RetryPacket)]
    assert retry == [RetryPacket("a", 2, "r1", {}, None, None)]
    assert run.state_of("a") == "ready"
    out = run.packet_failed("a", err_from("r2"), True, 2.0)
    assert [i for i in out if isinstance(i, RetryPacket)] == [RetryPacket("a", 3, "r2", {})]
    assert progress(out)["retry_attempts"] == 2
    out = run.packet_failed("a", err_from("r3"), True, 3.0)  # 1 + max_retries attempts used
    assert [i.packet_id for i in out if isinstance(i, CancelPacket)] == ["b"]
    done = finish(out)
    assert done is not None and done.status == "failed"


def test_design_7_retry_failed_stages_success_after_retry() -> None:
    run = MoleculeRun(mol(["a"], fault_tolerance="retry_failed_stages"), 0.0)
    run.start(0.0)
    run.packet_failed("a", ERR, True, 1.0)
    out = run.packet_succeeded("a", ok("a"), 2.0, reactor_id="r9")
    done = finish(out)
    assert done is not None and done.status == "success"
    entry = progress(out)["stage_results"]["a"]
    assert entry["attempts"] == 2
    assert entry["reactor_id"] == "r9"
    assert entry["duration_ms"] == 1000  # the successful attempt only


def test_design_7_non_retryable_failure_is_final_at_once() -> None:
    run = MoleculeRun(mol(["a"], fault_tolerance="retry_failed_stages", healing=True), 0.0)
    run.start(0.0)
    out = run.packet_failed("a", {"error_code": "PF002"}, False, 1.0)
    assert not any(isinstance(i, RetryPacket) for i in out)
    assert finish(out) is not None


def test_10_4_1_isolate_and_continue_keeps_partial_results() -> None:
    run = MoleculeRun(
        mol(
            ["a", "b", "c", "d"],
            [("a", "b", "ionic"), ("c", "d", "ionic")],
            fault_tolerance="isolate_and_continue",
        ),
        0.0,
    )
    run.start(0.0)
    out = run.packet_failed("a", ERR, True, 1.0)  # retryable, but this mode does not retry
    assert not any(isinstance(i, (RetryPacket, CancelPacket)) for i in out)
    assert run.state_of("b") == "skipped"
    run.packet_succeeded("c", ok("c"), 2.0)
    done = finish(run.packet_succeeded("d", ok("d"), 3.0))
    assert done is not None
    assert done.status == "partial"
    assert done.results == {"c": {"result": "C"}, "d": {"result": "D"}}
    assert done.errors == {"a": ERR}


def test_10_4_1_isolate_and_continue_with_nothing_left_is_failed() -> None:
    run = MoleculeRun(mol(["a", "b"], fault_tolerance="isolate_and_continue"), 0.0)
    run.start(0.0)
    run.packet_failed("a", ERR, False, 1.0)
    done = finish(run.packet_failed("b", ERR, False, 2.0))
    assert done is not None and done.status == "failed"


# ---------------------------------------------------------------- healing (§10.4.2)


def test_10_4_2_healing_replaces_failed_packet_once_even_under_fail_fast() -> None:
    run = MoleculeRun(mol(["a", "b"], [("a", "b", "ionic")], healing=True), 0.0)
    run.start(0.0)
    out = run.packet_failed("a", err_from("r1"), True, 1.0)
    assert [i for i in out if isinstance(i, RetryPacket)] == [RetryPacket("a", 2, "r1", {})]
    assert finish(out) is None
    # Finally failed: under fail_fast healing converts a -> b to metallic and b runs.
    out = run.packet_failed("a", err_from("r2"), True, 2.0)
    assert finish(out) is None
    assert [(c.old_type, c.new_type) for c in out if isinstance(c, ConvertBond)] == [
        ("ionic", "metallic")
    ]
    assert started(out) == ["b"]
    done = finish(run.packet_succeeded("b", ok("b"), 3.0))
    assert done is not None and done.status == "partial"


def test_10_4_2_fail_fast_without_healing_still_stops() -> None:
    run = MoleculeRun(mol(["a", "b"], [("a", "b", "ionic")]), 0.0)
    run.start(0.0)
    done = finish(run.packet_failed("a", ERR, False, 1.0))
    assert done is not None and done.status == "failed"


def test_10_4_2_stability_trigger_and_decomposition() -> None:
    healing = {
        "healing_triggers": ["molecular_stability < 0.5"],
        "healing_strategies": [
            {"strategy": "molecular_decomposition", "decomposition_threshold": "stability < 0.5"}
        ],
    }
    run = MoleculeRun(
        mol(["a", "b", "c"], [("a", "b", "ionic"), ("a", "c", "ionic")],
            molecular_healing=healing),
        0.0,
    )  # fmt: skip
    run.start(0.0)
    out = run.packet_failed("a", ERR, False, 1.0)  # attainable stability 0 < 0.5
    assert finish(out) is None
    adjust = [i for i in out if isinstance(i, AdjustBonds)]
    assert [c["action"] for c in adjust[0].changes] == ["decomposed", "decomposed"]
    assert started(out) == ["b", "c"]
    assert progress(out)["decomposed"] is True
    assert run.bonds == ()
    run.packet_succeeded("b", ok("b"), 2.0)
    done = finish(run.packet_succeeded("c", ok("c"), 3.0))
    assert done is not None and done.status == "partial"
    restored, _ = MoleculeRun.restore(run.snapshot(), 4.0)  # adjusted bonds survive
    assert restored.bonds == () and restored.decomposed


def test_10_4_2_a_packet_slower_than_2x_expected_is_replaced_once() -> None:
    run = MoleculeRun(mol(["a"], healing=True), 0.0, expected_ms={"df:transform": 100.0})
    out = run.start(0.0)
    (check,) = [i for i in out if isinstance(i, ScheduleCheck)]
    assert check.at == pytest.approx(0.2)
    run.packet_dispatched("a", "r1", 0.0)
    assert run.timer_fired(0.1) == []
    out = run.timer_fired(0.25)
    assert [i for i in out if isinstance(i, RetryPacket)] == [RetryPacket("a", 2, "r1", {})]
    assert run.timer_fired(5.0) == []  # once
    assert progress(out)["replaced_slow_packets"] == ["a"]
    done = finish(run.packet_succeeded("a", ok("a"), 5.5))
    assert done is not None and done.status == "success"


def test_10_4_1_bypass_bonds_route_around_a_failed_packet() -> None:
    adjust = {
        "create_bypass_bonds": True,
        "weaken_failed_bonds": True,
        "strengthen_successful_paths": True,
    }
    run = MoleculeRun(
        mol(["a", "b", "c"], [("a", "b", "ionic"), ("b", "c", "ionic")],
            fault_tolerance="isolate_and_continue", bond_adjustment=adjust),
        0.0,
    )  # fmt: skip
    run.start(0.0)
    run.packet_succeeded("a", ok("a"), 1.0)
    out = run.packet_failed("b", ERR, False, 2.0)
    (adjusted,) = [i for i in out if isinstance(i, AdjustBonds)]
    actions = [(c["action"], c["from"], c["to"]) for c in adjusted.changes]
    assert ("bypass", "a", "c") in actions and ("weakened", "b", "c") in actions
    (start,) = [i for i in out if isinstance(i, StartPacket)]
    assert start.packet_id == "c" and start.inputs == {"a": ok("a")}
    types = {(b.source, b.target): b.type for b in run.bonds}
    assert types == {("a", "b"): "ionic", ("b", "c"): "metallic", ("a", "c"): "ionic"}
    done = finish(run.packet_succeeded("c", ok("c"), 3.0))
    assert done is not None and done.status == "partial"
    assert done.results == {"a": ok("a"), "c": ok("c")}


def test_10_4_1_without_bypass_the_target_is_skipped() -> None:
    run = MoleculeRun(
        mol(["a", "b", "c"], [("a", "b", "ionic"), ("b", "c", "ionic")],
            fault_tolerance="isolate_and_continue"),
        0.0,
    )  # fmt: skip
    run.start(0.0)
    run.packet_succeeded("a", ok("a"), 1.0)
    run.packet_failed("b", ERR, False, 2.0)
    assert run.state_of("c") == "skipped"


def test_10_4_2_healing_converts_remaining_bonds_when_failure_rate_passes_0_2() -> None:
    run = MoleculeRun(
        mol(
            ["x", "a", "b", "c", "d", "f"],
            [("a", "b", "ionic"), ("c", "d", "covalent"), ("b", "f", "ionic")],
            fault_tolerance="isolate_and_continue",
            healing=True,
        ),
        0.0,
    )
    assert started(run.start(0.0)) == ["x", "a", "c"]
    out = run.packet_failed("x", ERR, False, 1.0)  # 1 failed / 1 finished > 0.2
    converts = [i for i in out if isinstance(i, ConvertBond)]
    assert [(c.bond.source, c.bond.target, c.old_type, c.new_type) for c in converts] == [
        ("a", "b", "ionic", "metallic"),
        ("c", "d", "covalent", "vdw"),
        ("b", "f", "ionic", "metallic"),
    ]
    # The run follows the new types: metallic targets start now, the vdw one still waits.
    assert started(out) == ["b", "f"]
    assert run.state_of("d") == "pending"
    assert [b.type for b in run.bonds] == ["metallic", "vdw", "metallic"]
    assert progress(out)["bonds_converted"] is True
    assert run.is_observer("d")
    # Conversion happens once.
    assert not any(isinstance(i, ConvertBond) for i in run.packet_failed("a", ERR, False, 2.0))


def test_10_4_2_healing_threshold_is_strictly_greater_than_0_2() -> None:
    run = MoleculeRun(
        mol(
            ["p1", "p2", "p3", "p4", "p5", "p6", "q"],
            [("p6", "q", "ionic")],
            fault_tolerance="isolate_and_continue",
            healing=True,
        ),
        0.0,
    )
    run.start(0.0)
    for i, pid in enumerate(["p1", "p2", "p3", "p4"]):
        run.packet_succeeded(pid, ok(pid), float(i))
    out = run.packet_failed("p5", ERR, False, 5.0)  # 1/5 = 0.2: not past it
    assert not any(isinstance(i, ConvertBond) for i in out)
    out = run.packet_failed("p6", ERR, False, 6.0)  # 2/6 > 0.2, but q already skipped
    assert run.converted
    assert not any(isinstance(i, ConvertBond) for i in out)
    assert run.state_of("q") == "skipped"


def test_10_4_2_no_conversion_without_healing() -> None:
    run = MoleculeRun(
        mol(["x", "a", "b"], [("a", "b", "ionic")], fault_tolerance="isolate_and_continue"), 0.0
    )
    run.start(0.0)
    out = run.packet_failed("x", ERR, False, 1.0)
    assert not any(isinstance(i, ConvertBond) for i in out)
    assert not run.converted


# ---------------------------------------------------------------- abort and timeout


def test_design_7_client_abort_cancels_running_packets() -> None:
    run = MoleculeRun(mol(["a", "b", "c"], [("a", "b", "ionic")]), 0.0)
    run.start(0.0)
    run.packet_succeeded("c", ok("c"), 0.5)
    out = run.abort(1.0, "user pressed stop")
    assert [i.packet_id for i in out if isinstance(i, CancelPacket)] == ["a"]
    done = finish(out)
    assert done is not None
    assert done.status == "aborted"
    assert done.reason == "user pressed stop"
    assert done.results == {"c": {"result": "C"}}
    assert progress(out)["current_phase"] == "aborted"
    assert run.abort(2.0) == []
    assert run.timer_fired(99.0) == []


def test_design_6_fail_stops_the_run_with_its_error_and_survives_restore() -> None:
    """The coordinator stops a run it cannot journal (DESIGN §6): status failed, the
    error it gives, handed-out packets cancelled, kept across snapshot/restore."""
    run = MoleculeRun(mol(["a", "b", "c"], [("a", "b", "ionic")]), 0.0)
    run.start(0.0)
    run.packet_succeeded("c", ok("c"), 0.5)
    journal_error = {"error_code": "PF503", "error_message": "journal could not be written"}
    out = run.fail(1.0, journal_error)
    assert [i.packet_id for i in out if isinstance(i, CancelPacket)] == ["a"]
    assert started(out) == []
    done = finish(out)
    assert done is not None and done.status == "failed"
    assert done.reason == "journal could not be written"
    assert done.results == {"c": {"result": "C"}}
    assert run.error == journal_error
    assert run.fail(2.0, journal_error) == [] and run.packet_succeeded("a", ok("a"), 3.0) == []
    again, resumed = MoleculeRun.restore(json.loads(json.dumps(run.snapshot())), 9.0)
    assert resumed == [] and again.status == "failed" and again.error == journal_error


def test_design_7_abort_before_start() -> None:
    run = MoleculeRun(mol(["a"]), 0.0)
    done = finish(run.abort(0.0))
    assert done is not None and done.status == "aborted"
    assert run.start(1.0) == []


def test_design_7_molecule_timeout() -> None:
    run = MoleculeRun(mol(["a", "b"], [("a", "b", "ionic")], timeout_ms=1500), 0.0)
    out = run.start(10.0)
    assert out[0] == ScheduleTimer(11.5)
    assert start_of(out, "a").deadline == 11.5
    assert run.timer_fired(11.0) == []  # early timer: nothing
    out = run.timer_fired(11.5)
    assert [i.packet_id for i in out if isinstance(i, CancelPacket)] == ["a"]
    done = finish(out)
    assert done is not None
    assert done.status == "timeout"
    assert done.reason == "molecule timeout_ms 1500 exceeded"
    assert run.state_of("b") == "aborted"


def test_design_7_no_timer_without_timeout_ms() -> None:
    run = MoleculeRun(mol(["a"]), 0.0)
    assert not any(isinstance(i, ScheduleTimer) for i in run.start(0.0))
    assert run.timer_fired(1e9) == []


# ---------------------------------------------------------------- stability (DESIGN §7)


def test_design_7_stability_values_user_onboarding() -> None:
    run = MoleculeRun(parse_molecule(USER_ONBOARDING), 0.0)
    assert run.stability() == 1.0  # before start
    out = run.start(0.0)
    p = progress(out)
    assert p["stability"] == 0.0  # no source has succeeded yet...
    assert p["warnings"] == []  # ...but 1.0 is still attainable: no PF103
    out = run.packet_succeeded("validate_user", ok("v"), 1.0)
    assert progress(out)["stability"] == pytest.approx(1.0 / 1.9, abs=1e-6)
    out = run.packet_succeeded("create_account", ok("c"), 2.0)
    assert progress(out)["stability"] == 1.0
    out = run.packet_succeeded("send_welcome", ok("s"), 3.0)
    assert progress(out)["stability"] == 1.0


def test_design_7_stability_is_one_without_bonds() -> None:
    run = MoleculeRun(mol(["a", "b"]), 0.0)
    run.start(0.0)
    assert run.stability() == 1.0
    assert progress(run.packet_failed("a", ERR, False, 1.0))["stability"] == 1.0


def test_design_7_instability_below_threshold_is_pf103_warning_not_abort() -> None:
    run = MoleculeRun(
        mol(
            ["a", "b", "c", "d"],
            [("a", "b", "ionic"), ("c", "d", "vdw")],
            fault_tolerance="isolate_and_continue",
            stability_threshold=0.7,
        ),
        0.0,
    )
    run.start(0.0)
    out = run.packet_failed("a", ERR, False, 1.0)
    p = progress(out)
    (warning,) = p["warnings"]
    assert warning["error_code"] == "PF103"
    assert warning["error_category"] == "molecular_error"
    assert warning["error_details"]["stability_threshold"] == 0.7
    assert warning["error_details"]["attainable_stability"] == pytest.approx(0.3 / 1.3, abs=1e-6)
    assert (out[-1].warnings if isinstance(out[-1], ReportProgress) else None) == [warning]
    assert finish(out) is None  # not an abort
    assert started(run.packet_succeeded("c", ok("c"), 2.0)) == ["d"]


# ---------------------------------------------------------------- progress (wire example)


def test_wire_example_progress_shape_data_pipeline() -> None:
    run = MoleculeRun(parse_molecule(DATA_PIPELINE_PAYLOAD), 0.0)
    run.start(0.0)
    run.packet_dispatched("load_data", "reactor-1", 0.0)
    loaded = {"rows_loaded": 15420, "file_size_mb": 23.7}
    run.packet_succeeded("load_data", loaded, 8.5)
    run.packet_dispatched("validate_data", "reactor-1", 8.5)
    validated = {"valid_rows": 15381, "invalid_rows": 39}
    run.packet_succeeded("validate_data", validated, 11.7)
    run.packet_dispatched("transform_data", "reactor-2", 11.7)
    p = run.progress(11.7)
    assert p["current_stage"] == 2
    assert p["total_stages"] == 4
    assert p["completed_packets"] == ["load_data", "validate_data"]
    assert p["active_packets"] == ["transform_data"]
    assert p["pending_packets"] == ["save_results"]
    assert p["failed_packets"] == []
    assert p["skipped_packets"] == []
    assert p["stage_results"]["load_data"]["status"] == "success"
    assert p["stage_results"]["load_data"]["data"] == loaded
    assert p["stage_results"]["load_data"]["duration_ms"] == 8500
    assert p["stage_results"]["validate_data"]["duration_ms"] == 3200
    assert set(p["stage_results"]) == {"load_data", "validate_data"}
    assert p["elapsed_ms"] == 11700
    # transform and save have no samples of their own: mean of all (5.85 s) each.
    assert p["estimated_remaining_ms"] == 11700
    assert p["completed_stages"] == [1, 2]
    assert p["active_stages"] == [3]
    assert p["current_phase"] == "processing"
    json.dumps(p)  # JSON-able


def test_design_7_progress_before_start_and_at_finish() -> None:
    run = MoleculeRun(mol(["a"]), 0.0)
    p = run.progress()
    assert p["current_phase"] == "pending"
    assert p["pending_packets"] == ["a"]
    assert p["elapsed_ms"] == 0
    assert p["estimated_remaining_ms"] is None
    run.start(1.0)
    p = progress(run.packet_succeeded("a", ok("a"), 3.0))
    assert p["current_phase"] == "complete"
    assert p["status"] == "success"
    assert p["elapsed_ms"] == 2000
    assert p["estimated_remaining_ms"] == 0


# ---------------------------------------------------------------- durability (DESIGN §7)


def json_round_trip(data: dict[str, Any]) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(json.dumps(data))
    return loaded


def test_design_7_snapshot_restore_mid_run_resubmits_in_flight_only() -> None:
    molecule = parse_molecule(DATA_PIPELINE_PAYLOAD)
    run = MoleculeRun(molecule, 0.0)
    run.start(100.0)
    run.packet_succeeded("load_data", {"rows": 3}, 101.0)
    run.packet_dispatched("validate_data", "reactor-1", 101.5)
    before = run.progress(102.0)

    restored, out = MoleculeRun.restore(json_round_trip(run.snapshot()), 200.0)
    assert out[0] == ScheduleTimer(100.0 + 600.0)
    assert started(out) == ["validate_data"]
    v = start_of(out, "validate_data")
    assert v.inputs == {"load_data": {"rows": 3}}
    assert v.attempt == 1
    assert isinstance(out[-1], ReportProgress)
    assert restored.results == {"load_data": {"rows": 3}}
    assert restored.state_of("load_data") == "succeeded"
    after = restored.progress(200.0)
    for key in ("completed_packets", "pending_packets", "current_stage", "stability"):
        assert after[key] == before[key]
    # It runs on to the end; load_data is never started again.
    seen = ["validate_data"]
    for pid in ("validate_data", "transform_data", "save_results"):
        out = restored.packet_succeeded(pid, ok(pid), 300.0)
        seen += started(out)
    assert seen == ["validate_data", "transform_data", "save_results"]
    done = finish(out)
    assert done is not None and done.status == "success"
    assert set(done.results) == set(molecule.packet_ids)


def test_design_7_restore_names_the_reactor_a_packet_was_running_on() -> None:
    """Hardening issue 13: a resumed packet is asked of the reactor it was dispatched to
    (its idempotency window answers it); kept through a second restart before it is
    dispatched again; a packet waiting for a retry belongs to no reactor."""
    run = MoleculeRun(mol(["a", "b", "c"], fault_tolerance="retry_failed_stages"), 0.0)
    run.start(0.0)
    run.packet_dispatched("a", "r1", 0.1)
    run.packet_dispatched("a", "r2", 0.2)  # failed over
    run.packet_dispatched("b", "r1", 0.1)
    run.packet_failed("b", err_from("r1"), True, 0.3)  # b awaits its retry
    # c was never dispatched
    again, out = MoleculeRun.restore(json.loads(json.dumps(run.snapshot())), 5.0)
    resume = {i.packet_id: i.resume_on for i in out if isinstance(i, StartPacket)}
    assert resume == {"a": "r2", "b": None, "c": None}
    _, out2 = MoleculeRun.restore(json.loads(json.dumps(again.snapshot())), 9.0)
    assert {i.packet_id: i.resume_on for i in out2 if isinstance(i, StartPacket)} == resume


def test_design_7_restore_keeps_attempts_conversions_and_retry_count() -> None:
    run = MoleculeRun(
        mol(
            ["x", "a", "b"],
            [("a", "b", "ionic")],
            fault_tolerance="isolate_and_continue",
            healing=True,
        ),
        0.0,
    )
    run.start(0.0)
    run.packet_failed("a", ERR, True, 0.5)  # healing replacement: attempt 2
    run.packet_failed("x", ERR, False, 1.0)  # 1/1 > 0.2: a -> b becomes metallic
    assert run.converted
    restored, out = MoleculeRun.restore(json_round_trip(run.snapshot()), 5.0)
    assert start_of(out, "a").attempt == 2
    assert start_of(out, "b").attempt == 1
    assert [b.type for b in restored.bonds] == ["metallic"]
    assert restored.converted
    assert restored.retry_attempts == 1
    assert restored.snapshot()["packets"]["x"] == run.snapshot()["packets"]["x"]


def test_design_7_restore_not_started_finished_and_expired_runs() -> None:
    fresh = MoleculeRun(mol(["a"]), 0.0)
    restored, out = MoleculeRun.restore(json_round_trip(fresh.snapshot()), 1.0)
    assert out == [] and restored.started_at is None
    assert started(restored.start(2.0)) == ["a"]

    done_run = MoleculeRun(mol(["a"]), 0.0)
    done_run.start(0.0)
    done_run.packet_succeeded("a", ok("a"), 1.0)
    restored, out = MoleculeRun.restore(json_round_trip(done_run.snapshot()), 2.0)
    assert out == []
    assert restored.finish_instruction() == done_run.finish_instruction()

    timed = MoleculeRun(mol(["a"], timeout_ms=1000), 0.0)
    timed.start(0.0)
    restored, out = MoleculeRun.restore(json_round_trip(timed.snapshot()), 5.0)
    assert [i.packet_id for i in out if isinstance(i, CancelPacket)] == ["a"]
    end = finish(out)
    assert end is not None and end.status == "timeout"


def test_design_7_restore_rejects_foreign_snapshot() -> None:
    run = MoleculeRun(mol(["a"]), 0.0)
    snap = run.snapshot()
    with pytest.raises(ValueError):
        MoleculeRun.restore({**snap, "format": 99}, 0.0)
    with pytest.raises(ValueError):
        MoleculeRun.restore({**snap, "bond_types": ["ionic"]}, 0.0)


# ---------------------------------------------------------------- events and illegal moves


def test_style_2_illegal_events_raise_naming_packet_state_and_event() -> None:
    run = MoleculeRun(mol(["a", "b"], [("a", "b", "ionic")]), 0.0)
    run.start(0.0)
    with pytest.raises(IllegalMoleculeEvent) as info:
        run.packet_succeeded("b", ok("b"), 1.0)
    assert info.value.code == "PF500"
    assert "'b'" in str(info.value) and "pending" in str(info.value)
    assert info.value.details == {"state": "pending", "event": "succeed"}
    with pytest.raises(IllegalMoleculeEvent):
        run.packet_failed("ghost", ERR, True, 1.0)
    with pytest.raises(IllegalMoleculeEvent):
        run.start(1.0)
    run.packet_dispatched("a", "r1", 0.5)
    run.packet_dispatched("a", "r2", 0.6)  # router failover: dispatched again
    run.packet_succeeded("a", ok("a"), 1.0)
    assert run.progress()["stage_results"]["a"]["reactor_id"] == "r2"
    with pytest.raises(IllegalMoleculeEvent):
        run.packet_dispatched("a", "r1", 2.0)
    assert isinstance(info.value, errors.InternalError)


def test_style_3_handle_events_matches_methods() -> None:
    def drive(use_events: bool) -> list[Instruction]:
        run = MoleculeRun(
            mol(["a", "b", "c"], [("a", "b", "covalent")], timeout_ms=10_000, healing=True), 0.0
        )
        steps: list[Any] = [
            MoleculeStarted(0.0),
            PacketDispatched("a", "r1", 0.1),
            PacketFailed("a", ERR, True, 1.0),
            PacketSucceeded("a", ok("a"), 2.0, reactor_id="r2"),
            TimerFired(3.0),
            AbortRequested(4.0, "enough"),
        ]
        out: list[Instruction] = []
        for step in steps:
            if use_events:
                out += run.handle(step)
            else:
                match step:
                    case MoleculeStarted():
                        out += run.start(step.now)
                    case PacketDispatched():
                        out += run.packet_dispatched(step.packet_id, step.reactor_id, step.now)
                    case PacketFailed():
                        out += run.packet_failed(
                            step.packet_id, step.error, step.retryable, step.now
                        )
                    case PacketSucceeded():
                        out += run.packet_succeeded(
                            step.packet_id, step.result, step.now, reactor_id=step.reactor_id
                        )
                    case TimerFired():
                        out += run.timer_fired(step.now)
                    case AbortRequested():
                        out += run.abort(step.now, step.reason)
        return out

    assert drive(True) == drive(False)


# ---------------------------------------------------------------- property: random DAGs


BOND_KINDS = ["ionic", "covalent", "metallic", "vdw"]
MODES = ["fail_fast", "retry_failed_stages", "isolate_and_continue"]


@st.composite
def molecules(draw: st.DrawFn) -> Molecule:
    n = draw(st.integers(1, 8))
    ids = [f"p{i}" for i in range(n)]
    bonds = []
    for j in range(n):
        for i in range(j):
            if draw(st.booleans()):
                bonds.append((ids[i], ids[j], draw(st.sampled_from(BOND_KINDS))))
    return mol(
        ids,
        bonds,
        fault_tolerance=draw(st.sampled_from(MODES)),
        healing=draw(st.booleans()),
        max_retries=draw(st.integers(0, 2)),
    )


class Driver:
    """Plays the gateway: carries out instructions and checks the run's invariants."""

    def __init__(self, run: MoleculeRun) -> None:
        self.run = run
        self.outstanding: dict[str, int] = {}
        self.started: set[str] = set()
        self.finishes: list[FinishMolecule] = []

    def apply(self, out: list[Instruction]) -> None:
        if self.finishes:
            assert out == []  # nothing after the finish
        for k, ins in enumerate(out):
            match ins:
                case StartPacket(packet_id=pid):
                    if ins.attempt == 1:
                        assert pid not in self.started, f"{pid} started twice"
                    self.started.add(pid)
                    assert pid not in self.outstanding
                    self.outstanding[pid] = ins.attempt
                case RetryPacket(packet_id=pid, attempt=attempt):
                    assert pid in self.started and pid not in self.outstanding
                    self.outstanding[pid] = attempt
                case CancelPacket(packet_id=pid):
                    assert self.outstanding.pop(pid, None) is not None
                case FinishMolecule():
                    assert k == len(out) - 1
                    assert self.outstanding == {}, "finished with packets in flight"
                    self.finishes.append(ins)
                case ReportProgress() | ConvertBond() | ScheduleTimer():
                    pass
        if not self.run.finished:
            self.check_dataflow()

    def check_dataflow(self) -> None:
        """Dataflow (DESIGN §7): after every event, a packet left pending is one its
        blocking bonds (current types) still hold back; none is startable or doomed."""
        bonds = self.run.bonds
        for pid in self.run.molecule.packet_ids:
            if self.run.state_of(pid) != "pending":
                continue
            held = False
            for b in bonds:
                if b.target != pid:
                    continue
                state = self.run.state_of(b.source)
                if b.type == "ionic":
                    assert state not in {"failed", "skipped", "aborted"}, f"{pid} not skipped"
                    held = held or state != "succeeded"
                elif b.type in ("covalent", "vdw"):
                    held = held or state not in {"succeeded", "failed", "skipped", "aborted"}
            assert held, f"{pid} is pending although its bonds allow it to start"


@settings(max_examples=300, deadline=None)
@given(molecule=molecules(), data=st.data())
def test_design_7_random_dags_finish_exactly_once(molecule: Molecule, data: st.DataObject) -> None:
    run = MoleculeRun(molecule, 0.0)
    driver = Driver(run)
    driver.apply(run.start(0.0))
    now = 0.0
    while driver.outstanding:
        now += 1.0
        pid = data.draw(st.sampled_from(sorted(driver.outstanding)))
        del driver.outstanding[pid]
        if data.draw(st.booleans()):
            driver.apply(run.packet_succeeded(pid, {"v": pid}, now))
        else:
            driver.apply(run.packet_failed(pid, ERR, data.draw(st.booleans()), now))
        if data.draw(st.integers(0, 29)) == 0:  # now and then the client aborts
            driver.apply(run.abort(now))
            assert driver.outstanding == {}
        if data.draw(st.integers(0, 9)) == 0:  # now and then the gateway restarts
            run, out = MoleculeRun.restore(json_round_trip(run.snapshot()), now)
            driver.run = run
            restarted = {i.packet_id for i in out if isinstance(i, StartPacket)}
            assert restarted == set(driver.outstanding)
            driver.outstanding.clear()
            driver.started -= restarted
            driver.apply(out)
    assert len(driver.finishes) == 1
    done = driver.finishes[0]
    assert run.status == done.status
    states = {p: run.state_of(p) for p in molecule.packet_ids}
    assert all(s in {"succeeded", "failed", "skipped", "aborted"} for s in states.values())
    assert set(done.results) == {p for p, s in states.items() if s == "succeeded"}
    assert set(done.errors) == {p for p, s in states.items() if s == "failed"}
    if all(s == "succeeded" for s in states.values()):
        assert done.status == "success"
    assert 0.0 <= run.stability() <= 1.0
    # Skips only ever follow an ionic source that did not succeed.
    for pid, state in states.items():
        if state == "skipped":
            because = run.progress()["stage_results"][pid]["skipped_because"]
            assert states[because] in {"failed", "skipped", "aborted"}


@settings(max_examples=100, deadline=None)
@given(molecule=molecules())
def test_design_7_all_success_runs_every_packet_once_in_bond_order(molecule: Molecule) -> None:
    run = MoleculeRun(molecule, 0.0)
    driver = Driver(run)
    driver.apply(run.start(0.0))
    order: list[str] = []
    now = 0.0
    while driver.outstanding:
        now += 1.0
        pid = min(driver.outstanding)
        del driver.outstanding[pid]
        order.append(pid)
        driver.apply(run.packet_succeeded(pid, {"v": pid}, now))
    assert sorted(order) == sorted(molecule.packet_ids)
    assert driver.finishes[0].status == "success"
    assert run.stability() == 1.0
    position = {p: i for i, p in enumerate(order)}
    for b in molecule.bonds:
        if b.blocking:
            assert position[b.source] < position[b.target]
