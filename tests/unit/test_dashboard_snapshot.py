"""gateway/dashboard.py's snapshot builder over a real (unstarted) Gateway: its bounds hold
however much the gateway remembers, and it carries what the page draws."""

from __future__ import annotations

from pathlib import Path

import msgspec

from packetflow.gateway.coordinator import _Molecule, _Run
from packetflow.gateway.dashboard import (
    MAX_DAG_PACKETS,
    MAX_MOLECULES,
    MAX_PACKETS,
    PUBLIC_PATHS,
    SNAPSHOT_PATH,
    build_snapshot,
)
from packetflow.gateway.server import MAX_STORIES, Gateway, GatewayConfig
from packetflow.protocol.molecules import parse_molecule


def test_ten_thousand_stories_give_at_most_200_packets_newest_first(tmp_path: Path) -> None:
    gw = Gateway(GatewayConfig(data_dir=tmp_path))
    for i in range(MAX_STORIES + 500):
        gw._new_story(f"p{i}", "cf", "ping", f"p{i}")
    snap = build_snapshot(gw, now=gw.started + 5, wall_ms=0)
    assert snap["packets_total"] == MAX_STORIES
    assert len(snap["packets"]) == MAX_PACKETS
    assert snap["packets"][0]["packet_id"] == f"p{MAX_STORIES + 499}"
    assert snap["packets"][0]["kind"] == "cf:ping"
    # Small enough to poll every second: well under 100 KiB with 200 packets.
    assert len(msgspec.json.encode(snap)) < 100 * 1024


def test_empty_gateway_snapshot_has_every_panel(tmp_path: Path) -> None:
    gw = Gateway(GatewayConfig(data_dir=tmp_path))
    snap = build_snapshot(gw, now=gw.started + 1, wall_ms=123)
    assert snap["gateway"]["gateway_id"] == gw.gateway_id
    assert snap["reactors"] == [] and snap["packets"] == [] and snap["molecules"] == []
    assert snap["molecule"] is None
    assert set(snap["affinity"]["matrix"]) == {"cf", "df", "ed", "co", "mc", "rm"}
    assert snap["events"] == {"topics": [], "subscriptions_total": 0, "patterns": []}


def test_public_paths_are_the_page_and_its_assets_only() -> None:
    assert "/" in PUBLIC_PATHS
    assert all(p == "/" or p.startswith("/dashboard/") for p in PUBLIC_PATHS)
    assert SNAPSHOT_PATH not in PUBLIC_PATHS


def _chain(molecule_id: str, size: int) -> dict[str, object]:
    packets = [{"id": f"p{i}", "group": "df", "element": "transform",
                "data": {"input": "x", "operation": "uppercase"}} for i in range(size)]  # fmt: skip
    bonds = [{"from": f"p{i}", "to": f"p{i + 1}", "type": "ionic", "strength": 1.0}
             for i in range(size - 1)]  # fmt: skip
    return {"molecule_id": molecule_id, "packets": packets, "bonds": bonds}


def _add_running(gw: Gateway, molecule_id: str, size: int) -> _Molecule:
    run = _Run(parse_molecule(_chain(molecule_id, size)), 0.0)
    run.start(0.0)  # p0 becomes ready; the rest wait on their ionic bonds
    state = _Molecule(molecule_id, run, "run00000", "msg", None, {})
    gw.coordinator.active[molecule_id] = state
    return state


def test_molecules_and_the_dag_are_bounded(tmp_path: Path) -> None:
    gw = Gateway(GatewayConfig(data_dir=tmp_path))
    for i in range(MAX_MOLECULES + 10):
        _add_running(gw, f"m{i}", 2)
    big = _add_running(gw, "big", MAX_DAG_PACKETS + 100)
    big.inflight["p0"] = 1  # handed to the router: drawn as running
    _add_running(gw, "idle", 2)
    snap = build_snapshot(gw, now=gw.started, wall_ms=0)
    assert len(snap["molecules"]) == MAX_MOLECULES
    assert snap["molecules_running"] == MAX_MOLECULES + 12
    idle = snap["molecule"]  # the newest running one by default
    assert idle["molecule_id"] == "idle" and idle["nodes"][0]["state"] == "ready"
    dag = build_snapshot(gw, now=gw.started, wall_ms=0, molecule_id="big")["molecule"]
    assert dag["molecule_id"] == "big" and dag["truncated"] is True
    assert dag["packets_total"] == MAX_DAG_PACKETS + 100
    assert len(dag["nodes"]) == MAX_DAG_PACKETS
    assert len(dag["bonds"]) == MAX_DAG_PACKETS - 1  # only bonds between drawn nodes
    assert dag["nodes"][0]["state"] == "running" and dag["nodes"][1]["state"] == "pending"
    assert [n["stage"] for n in dag["nodes"][:3]] == [1, 2, 3]
    chosen = build_snapshot(gw, now=gw.started, wall_ms=0, molecule_id="m3")["molecule"]
    assert chosen["molecule_id"] == "m3" and len(chosen["nodes"]) == 2
