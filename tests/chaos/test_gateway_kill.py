"""Chaos: the gateway SIGKILLed while molecules run, then restarted on the same data dir
and port (DESIGN §7 durability): every molecule reaches a terminal state, no packet the
gateway had recorded as finished runs again, and a packet in flight at the kill is
answered by the reactor that was running it (its idempotency window), not run anew."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

from tests.integration.cluster import Cluster, Node, wait_for
from tests.integration.slow_elements import safe_name

from .chaos_elements import FINISHED, STARTED, runs
from .figures import Figures, pick
from .fleet import http_json, rows, sigkill, start_reactor

pytestmark = pytest.mark.chaos

REACTORS = ("m0", "m1", "m2", "m3")
MOLECULES = int(pick(40, 200))
WORK_MS = 1000
# Few slots, so the run lasts long enough to be killed in the middle of it.
SLOTS = "8"
FAN = 8  # each molecule: one head, FAN packets in parallel, one tail (10 packets)


def _structure(molecule_id: str) -> dict[str, Any]:
    def work(pid: str, deps: list[str]) -> dict[str, Any]:
        return {"id": pid, "group": "df", "element": "work", "dependencies": deps,
                "data": {"ms": WORK_MS, "value": pid}}  # fmt: skip

    middle = [f"p{i}" for i in range(1, FAN + 1)]
    packets = [work("head", []), *(work(p, ["head"]) for p in middle), work("tail", middle)]
    return {"molecule_id": molecule_id, "packets": packets}


def _view(gateway: Node, molecule_id: str) -> dict[str, Any] | None:
    status, body = http_json(gateway, "GET", f"/v1/molecules/{molecule_id}")
    return body if status == 200 else None


def _terminal(gateway: Node, molecule_id: str) -> dict[str, Any] | None:
    body = _view(gateway, molecule_id)
    return body if body and body["coordination_type"] in ("complete", "abort") else None


@pytest.mark.timeout(int(pick(240, 1200)))
def test_gateway_sigkilled_mid_molecules_resumes_them(cluster: Cluster, figures: Figures) -> None:
    gw_dir = cluster.root / "gateway-data"
    data = cluster.root / "reactor-data"
    gateway = cluster.gateway("--data-dir", str(gw_dir))
    for rid in REACTORS:
        start_reactor(cluster, gateway, data, rid, "--max-concurrent", SLOTS)
    tag = uuid.uuid4().hex[:6]
    run_ids: dict[str, str] = {}
    for n in range(MOLECULES):
        molecule_id = f"chaos-{tag}-{n}"
        status, body = http_json(gateway, "POST", "/v1/molecules", _structure(molecule_id))
        assert status == 202, body
        run_ids[molecule_id] = body["run_id"]
    total = MOLECULES * (FAN + 2)

    def wire(molecule_id: str, pid: str) -> str:
        return safe_name(f"{molecule_id}:{run_ids[molecule_id]}:{pid}")

    # Kill with a good share done and packets running on the reactors.
    wait_for(lambda: len(runs(data, FINISHED)) >= total // 4, 120, "a quarter of the packets")
    # What the gateway itself says is finished: those must never run again.
    confirmed = {wire(m, pid) for m in run_ids
                 for pid in (_view(gateway, m) or {}).get("execution_state", {})
                 .get("completed_packets", [])}  # fmt: skip
    sigkill(gateway)
    killed_at = time.monotonic()
    started_at_kill, finished_at_kill = runs(data, STARTED), runs(data, FINISHED)
    in_flight_at_kill = {
        p: ids[0] for p, ids in started_at_kill.items() if p not in finished_at_kill
    }
    port = gateway.url.rsplit(":", 1)[1].split("/")[0]
    gateway = cluster.gateway("--data-dir", str(gw_dir), "--port", port)
    restarted_at = time.monotonic()
    wait_for(lambda: all(rows(gateway).get(r) for r in REACTORS), 60, "the reactors to return")
    finals = {m: wait_for(lambda m=m: _terminal(gateway, m), 180, f"molecule {m} to finish")
              for m in run_ids}  # fmt: skip
    all_done_at = time.monotonic()
    executions = runs(data, STARTED)
    statuses = [f["status"] for f in finals.values()]
    rerun = {p: ids for p, ids in executions.items() if len(ids) > 1}
    rerun_confirmed = {p: ids for p, ids in rerun.items() if p in confirmed}
    rerun_in_flight = {p: ids for p, ids in rerun.items() if p in in_flight_at_kill}
    figures.record(
        molecules=MOLECULES, packets=total, finished_at_kill=len(finished_at_kill),
        confirmed_at_kill=len(confirmed), in_flight_at_kill=len(in_flight_at_kill),
        restart_s=restarted_at - killed_at, all_terminal_after_restart_s=all_done_at - restarted_at,
        not_success=sum(1 for s in statuses if s != "success"), reruns=len(rerun),
        reruns_of_confirmed=len(rerun_confirmed), reruns_of_in_flight=len(rerun_in_flight),
    )  # fmt: skip
    assert in_flight_at_kill, "the kill caught nothing in flight: the suite proved nothing"
    assert statuses == ["success"] * MOLECULES, [(m, f["status"]) for m, f in finals.items()
                                                 if f["status"] != "success"][:5]  # fmt: skip
    assert {wire(m, p) for m in run_ids for p in ("head", "tail")} <= set(executions)
    assert len(executions) == total
    # DESIGN §7: a finished packet keeps its result; the journal says so, nothing re-runs.
    assert rerun_confirmed == {}
    # A packet that ran twice on the same reactor means that reactor's idempotency window
    # failed, whatever the gateway did.
    same_reactor = {p: ids for p, ids in rerun.items() if len(set(ids)) < len(ids)}
    assert same_reactor == {}
    # No reactor died in this test: a packet in flight at the kill waits (--resume-grace)
    # for its reactor to return and is answered from that reactor's idempotency window,
    # so nothing runs again on another reactor.
    assert rerun == {}, sorted(rerun.items())[:5]
