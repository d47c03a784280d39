"""The molecule coordinator (gateway/coordinator.py) driven through a fake gateway: journal
before acting (DESIGN §6), dataflow into SUBMITs (DESIGN §7), correlation, coalesced
progress, resume after a crash with the same packet ids, request errors, and the pure
§7.4 suggestions. No sockets: the fake gateway records SUBMITs and the test answers them.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import msgspec
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from packetflow.gateway import coordinator as coord
from packetflow.gateway.coordinator import MoleculeCoordinator
from packetflow.gateway.journal import JournalError
from packetflow.gateway.shared import Standalone
from packetflow.protocol import optimizer
from packetflow.protocol.chemistry import STANDARD_MATRIX
from packetflow.protocol.errors import PacketFlowError
from packetflow.protocol.messages import (
    PROTOCOL_VERSION,
    Coordinate,
    CoordinatePayload,
    Error,
    ErrorPayload,
    Result,
    ResultPayload,
    Submit,
    decode_json,
    encode,
    encode_json,
    error_envelope,
)
from packetflow.protocol.molecules import parse_molecule
from packetflow.protocol.optimizer import Observed, suggest
from packetflow.protocol.principals import PACKET_USER, Principal
from packetflow.security.gatekeeper import PRINCIPAL_KEY
from packetflow.security.guard import Guard

from .expect import poll

# ---------------------------------------------------------------- the fake gateway


@dataclass
class FakeRecord:
    reactor_id: str
    specializations: tuple[str, ...] = ("general_purpose",)
    implementation: str = "python"
    locality: str | None = None
    capacity: int = 10
    in_flight: int = 0
    reported_load: float = 0.0
    health: str = "healthy"

    def adjustment(self, group: str) -> float:
        return 0.0


@dataclass
class FakeRegistry:
    kinds: set[tuple[str, str]] = field(
        default_factory=lambda: {
            ("df", "transform"),
            ("df", "load"),
            ("df", "sleep"),
            ("cf", "ping"),
        }
    )
    records: list[FakeRecord] = field(default_factory=lambda: [FakeRecord("r1"), FakeRecord("r2")])
    online: bool = True

    def supports(self, group: str, element: str) -> bool:
        return self.online and (group, element) in self.kinds

    def candidates(self, group: str, element: str) -> list[FakeRecord]:
        return list(self.records) if self.supports(group, element) else []

    def get(self, reactor_id: str) -> Any:
        for r in self.records:
            if r.reactor_id == reactor_id and self.online:
                return SimpleNamespace(
                    reactor_id=r.reactor_id, link=object(), health=r.health,
                    capabilities=frozenset(self.kinds),
                )  # fmt: skip
        return None


class FakeCounter:
    def labels(self, *args: str) -> FakeCounter:
        return self

    def inc(self) -> None:
        pass


class FakePeer:
    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []
        self.seq = 0

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def send(self, frame: bytes) -> bool:
        self.frames.append(json.loads(frame))
        return True

    def payloads(self, kind: str | None = None) -> list[dict[str, Any]]:
        return [
            f["payload"]
            for f in self.frames
            if f["message_type"] == "coordinate"
            and (kind is None or f["payload"]["coordination_type"] == kind)
        ]


@dataclass
class Sent:
    msg: Submit
    on_frame: Callable[[bytes], None]
    prefer: str | None
    on_dispatch: Callable[[str], None] | None = None

    @property
    def pinned(self) -> str | None:
        dest = self.msg.destination_id
        return dest if isinstance(dest, str) else None

    @property
    def packet(self) -> Any:
        return self.msg.payload.packet

    @property
    def data(self) -> Any:
        return decode_json(self.packet.data)


class FakeGateway:
    def __init__(self, data_dir: Path) -> None:
        self.config = SimpleNamespace(
            data_dir=data_dir, journal_path=None, journal_sync=None, resume_grace_s=5.0
        )
        self.dispatch_to: str | None = None  # the reactor the router "chooses", if any
        self.gateway_id = "gateway-test"
        self.registry = FakeRegistry()
        self.matrix = {g: dict(r) for g, r in STANDARD_MATRIX.items()}
        self.metrics = SimpleNamespace(errors=FakeCounter())
        self.sent: list[Sent] = []
        self.guard = Guard()  # the real authorization edge, with no audit file
        self.cluster = Standalone()  # the embedded mode: the SQLite journal

    def submit_internal(
        self,
        msg: Submit,
        on_frame: Callable[[bytes], None],
        *,
        prefer: str | None = None,
        on_dispatch: Callable[[str], None] | None = None,
    ) -> None:
        sent = Sent(msg, on_frame, prefer, on_dispatch)
        self.sent.append(sent)
        if self.dispatch_to is not None and sent.on_dispatch is not None:
            # Like Gateway._send: the chosen reactor is reported before the frame leaves.
            sent.on_dispatch(sent.pinned or self.dispatch_to)

    def answer_error(
        self,
        target: Any,
        err: PacketFlowError,
        correlation_id: str | None,
        packet_id: str | None,
        destination_id: str | None = None,
    ) -> bytes:
        frame = encode(
            error_envelope(
                err,
                message_id="msg_err",
                now_ms=0,
                source_id=self.gateway_id,
                correlation_id=correlation_id,
                packet_id=packet_id,
            )
        )
        target.send(frame)
        return frame

    def sent_ids(self) -> list[str]:
        return [s.packet.metadata["molecule_packet_id"] for s in self.sent]

    def find(self, pid: str) -> Sent:
        (found,) = [s for s in self.sent if s.packet.metadata["molecule_packet_id"] == pid]
        return found


def succeed(sent: Sent, data: dict[str, Any], reactor: str = "r1") -> None:
    sent.on_frame(
        encode(
            Result(
                protocol_version=PROTOCOL_VERSION,
                message_id="msg_r",
                timestamp=0,
                source_id="gw",
                correlation_id=sent.msg.message_id,
                payload=ResultPayload(
                    packet_id=sent.packet.id,
                    status="success",
                    data=msgspec.Raw(encode_json(data)),
                    processing_metadata={"reactor_id": reactor, "total_duration_ms": 2.0},
                ),
            )
        )
    )


def fail(sent: Sent, code: str = "PF005", retryable: bool = True, reactor: str = "r1") -> None:
    sent.on_frame(
        encode(
            Error(
                protocol_version=PROTOCOL_VERSION,
                message_id="msg_e",
                timestamp=0,
                source_id="gw",
                correlation_id=sent.msg.message_id,
                payload=ErrorPayload(
                    error_code=code,
                    packet_id=sent.packet.id,
                    error_message="boom",
                    retry_possible=retryable,
                    reactor_info={"reactor_id": reactor},
                ),
            )
        )
    )


def coordinate(payload: dict[str, Any], message_id: str = "msg_init") -> Coordinate:
    return Coordinate(
        protocol_version=PROTOCOL_VERSION,
        message_id=message_id,
        timestamp=0,
        source_id="client-1",
        payload=msgspec.convert(payload, CoordinatePayload),
    )


def initiate(
    mid: str, packets: list[dict[str, Any]], bonds: list[dict[str, Any]] | None = None, **props: Any
) -> Coordinate:
    return coordinate(
        {
            "coordination_type": "initiate",
            "molecule_id": mid,
            "molecular_structure": {"packets": packets, "bonds": bonds or [], "properties": props},
        }
    )


def pk(pid: str, element: str = "transform", group: str = "df", **extra: Any) -> dict[str, Any]:
    return {"id": pid, "group": group, "element": element, "data": {"n": pid}, **extra}


def bond(src: str, dst: str, kind: str = "ionic") -> dict[str, Any]:
    return {"from": src, "to": dst, "type": kind}


def send(coordinator: MoleculeCoordinator, message: Coordinate) -> FakePeer:
    """Hand ``message`` to the coordinator from a new client connection, returned."""
    peer = FakePeer()
    coordinator.on_message(cast(Any, peer), message)
    return peer


async def settle() -> None:
    """Let the coordinator's call_soon flushes run (no timing involved)."""
    for _ in range(5):
        await asyncio.sleep(0)


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[tuple[MoleculeCoordinator, FakeGateway]]:
    gateway = FakeGateway(tmp_path)
    coordinator = MoleculeCoordinator(cast(Any, gateway))
    await coordinator.start()
    yield coordinator, gateway
    await coordinator.stop()


def journal_rows(path: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as db:
        return db.execute(sql).fetchall()


# ---------------------------------------------------------------- tests


async def test_initiate_is_journaled_before_any_packet_or_acknowledgement(
    env: tuple[MoleculeCoordinator, FakeGateway], tmp_path: Path
) -> None:
    """DESIGN §6: nothing is acknowledged (or started) before it is journaled."""
    coordinator, gateway = env
    peer = send(coordinator, initiate("m1", [pk("a"), pk("b")], [bond("a", "b")]))
    db = tmp_path / "molecules.sqlite3"
    assert peer.frames == [] and gateway.sent == []
    assert journal_rows(db, "SELECT * FROM molecules") == []
    await settle()
    assert journal_rows(db, "SELECT molecule_id, status FROM molecules") == [("m1", None)]
    kinds = [r[0] for r in journal_rows(db, "SELECT kind FROM events ORDER BY seq")]
    assert kinds == ["molecule_started", "packet_submitted"]
    assert gateway.sent_ids() == ["a"]
    (ack,) = peer.payloads()  # the acknowledgement carries the first progress
    assert ack["coordination_type"] == "initiate" and ack["status"] == "running"
    assert ack["execution_plan"]["total_stages"] == 2
    assert ack["execution_state"]["active_packets"] == ["a"]
    assert all(f["correlation_id"] == "msg_init" for f in peer.frames)


async def test_dataflow_fills_metadata_inputs_and_completes(
    env: tuple[MoleculeCoordinator, FakeGateway],
) -> None:
    coordinator, gateway = env
    peer = send(
        coordinator,
        initiate("m2", [pk("a"), pk("b"), pk("c")], [bond("a", "b"), bond("a", "c", "covalent")]),
    )
    await settle()
    a = gateway.find("a")
    run_id = peer.payloads()[0]["coordination_metadata"]["run_id"]
    assert a.packet.id == f"m2:{run_id}:a"
    assert a.packet.metadata["inputs"] == {} and a.data == {"n": "a"}
    assert a.msg.source_id == "gateway-test"
    succeed(a, {"result": [1, 2]}, reactor="r2")
    await settle()
    b, c = gateway.find("b"), gateway.find("c")
    assert b.packet.metadata["inputs"] == {"a": {"result": [1, 2]}}
    assert b.packet.dependencies == ("a",)
    assert c.prefer == "r2"  # covalent pairs prefer the source's reactor (DESIGN §7)
    assert b.prefer is None
    succeed(b, {"result": "B"})
    fail(c, "PF002", retryable=False)
    await settle()
    final = peer.payloads()[-1]
    assert final["coordination_type"] == "complete"
    assert final["status"] == "failed"
    assert final["results"] == {"a": {"result": [1, 2]}, "b": {"result": "B"}}
    assert final["error"]["error_code"] == "PF002"
    assert final["execution_state"]["errors"]["c"]["error_code"] == "PF002"
    assert all(p["molecule_id"] == "m2" for p in peer.payloads())
    assert coordinator.status("m2", path="x")["status"] == "failed"


async def test_progress_coalesces_changes_within_one_iteration(
    env: tuple[MoleculeCoordinator, FakeGateway],
) -> None:
    coordinator, gateway = env
    peer = send(coordinator, initiate("m3", [pk(p) for p in "abcd"]))
    await settle()
    before = len(peer.frames)
    for pid in "abc":
        succeed(gateway.find(pid), {"result": pid})
    await settle()
    (progress,) = peer.payloads()[before:]
    state = progress["execution_state"]
    assert state["completed_packets"] == ["a", "b", "c"]
    assert state["active_packets"] == ["d"]
    assert set(state["stage_results"]) == {"a", "b", "c"}
    assert progress["performance_metrics"]["elapsed_time_ms"] >= 0


async def test_progress_updates_false_pushes_only_the_ack_and_the_end(
    env: tuple[MoleculeCoordinator, FakeGateway],
) -> None:
    coordinator, gateway = env
    quiet = initiate("m3q", [pk(p) for p in "abc"], [bond("a", "b"), bond("b", "c")])
    quiet.payload.progress_updates = False
    chatty = send(coordinator, initiate("m3c", [pk(p) for p in "abc"],
                                        [bond("a", "b"), bond("b", "c")]))  # fmt: skip
    peer = send(coordinator, quiet)
    for step in range(3):
        await settle()
        for sent in [s for s in gateway.sent if s.packet.id.endswith(f":{'abc'[step]}")]:
            succeed(sent, {"result": step})
    await settle()
    kinds = [p["coordination_type"] for p in peer.payloads()]
    assert kinds == ["initiate", "complete"]
    assert peer.payloads()[-1]["status"] == "success"
    # The default still reports every step (DESIGN §7).
    assert [p["coordination_type"] for p in chatty.payloads()] == [
        "initiate",
        "progress",
        "progress",
        "complete",
    ]


async def test_retry_avoids_the_reactor_that_failed(
    env: tuple[MoleculeCoordinator, FakeGateway],
) -> None:
    coordinator, gateway = env
    peer = send(
        coordinator, initiate("m4", [pk("a")], fault_tolerance="retry_failed_stages", max_retries=2)
    )
    await settle()
    first = gateway.sent[0]
    fail(first, "PF005", retryable=True, reactor="r1")
    await settle()
    second = gateway.sent[1]
    assert second.packet.id == first.packet.id  # the same id on every attempt
    assert second.packet.metadata["attempt"] == 2
    assert second.msg.payload.routing_preferences.avoid_reactors == ["r1"]
    fail(first, "PF005")  # a late reply for a superseded attempt is ignored
    succeed(second, {"result": "ok"}, reactor="r2")
    await settle()
    assert peer.payloads()[-1]["status"] == "success"


async def test_resume_after_a_crash_reruns_nothing_finished(tmp_path: Path) -> None:
    """DESIGN §7 durability: a new coordinator on the same journal resumes the molecule;
    the finished packet keeps its result, the in-flight one is resubmitted under the same
    packet id once reactors serve its element again."""
    gateway1 = FakeGateway(tmp_path)
    first = MoleculeCoordinator(cast(Any, gateway1))
    await first.start()
    send(first, initiate("m5", [pk("a"), pk("b"), pk("c")], [bond("a", "b"), bond("b", "c")]))
    await settle()
    succeed(gateway1.find("a"), {"result": "A"})
    await settle()
    b_before = gateway1.find("b")
    journal = first.journal
    assert journal is not None and journal.pending == 0  # everything so far is committed
    first.journal = None  # "crash": the process dies without stopping anything...
    first._stopped = True
    journal.close()  # ...and the kernel drops its journal lock

    gateway2 = FakeGateway(tmp_path)
    gateway2.registry.online = False  # reactors have not re-announced yet
    second = MoleculeCoordinator(cast(Any, gateway2))
    await second.start()
    try:
        await settle()
        assert gateway2.sent == []
        gateway2.registry.online = True
        await poll(lambda: gateway2.sent, "the resumed packet to be resubmitted")
        (b_again,) = gateway2.sent
        assert b_again.packet.id == b_before.packet.id
        assert b_again.packet.metadata["inputs"] == {"a": {"result": "A"}}
        succeed(b_again, {"result": "B"})
        await settle()
        succeed(gateway2.find("c"), {"result": "C"})
        await settle()
        status = second.status("m5", path="molecule_id")
        assert status["coordination_type"] == "complete" and status["status"] == "success"
        assert status["results"] == {
            "a": {"result": "A"},
            "b": {"result": "B"},
            "c": {"result": "C"},
        }
        assert gateway2.sent_ids() == ["b", "c"]
    finally:
        await second.stop()


async def crash_while_b_runs_on_r2(tmp_path: Path) -> str:
    """Run a -> b with a on r1 and b dispatched to r2, then "crash" (as in the test
    above). Returns b's wire packet id."""
    gateway1 = FakeGateway(tmp_path)
    gateway1.dispatch_to = "r1"
    first = MoleculeCoordinator(cast(Any, gateway1))
    await first.start()
    send(first, initiate("mr", [pk("a"), pk("b")], [bond("a", "b")]))
    await settle()
    gateway1.dispatch_to = "r2"
    succeed(gateway1.find("a"), {"result": "A"})
    await settle()

    def b_dispatch_on_disk() -> bool:
        rows = journal_rows(tmp_path / "molecules.sqlite3",
                            "SELECT kind, packet_id, reactor_id FROM events")  # fmt: skip
        return ("packet_dispatched", "b", "r2") in rows

    await poll(b_dispatch_on_disk, "b's dispatch row to be committed")
    journal = first.journal
    assert journal is not None and journal.pending == 0
    first.journal = None
    first._stopped = True
    journal.close()
    return str(gateway1.find("b").packet.id)


async def test_resume_asks_the_reactor_the_packet_was_running_on_first(tmp_path: Path) -> None:
    """Hardening issue 13: after a restart the in-flight packet goes back to the reactor
    that was running it (it answers from its idempotency window), not to whichever reactor
    re-announced first, where it would run a second time."""
    b_id = await crash_while_b_runs_on_r2(tmp_path)
    gateway2 = FakeGateway(tmp_path)
    gateway2.registry.records = [FakeRecord("r1")]  # r1 is back, r2 not yet
    second = MoleculeCoordinator(cast(Any, gateway2))
    await second.start()
    try:
        await asyncio.sleep(coord.RESUME_POLL_S * 4)  # a few polls: b must keep waiting
        assert gateway2.sent == [], "b went to r1 while r2, which runs it, was coming back"
        gateway2.registry.records.append(FakeRecord("r2"))  # r2 re-announces
        await poll(lambda: gateway2.sent, "b to be resubmitted")
        (b_again,) = gateway2.sent
        assert b_again.pinned == "r2" and b_again.packet.id == b_id
        succeed(b_again, {"result": "B"}, reactor="r2")
        await settle()
        assert second.status("mr", path="x")["status"] == "success"
    finally:
        await second.stop()


async def test_resume_goes_elsewhere_when_the_reactor_stays_away(tmp_path: Path) -> None:
    b_id = await crash_while_b_runs_on_r2(tmp_path)
    gateway2 = FakeGateway(tmp_path)
    gateway2.config.resume_grace_s = 0.1
    gateway2.registry.records = [FakeRecord("r1")]  # r2 never returns
    second = MoleculeCoordinator(cast(Any, gateway2))
    await second.start()
    try:
        await poll(lambda: gateway2.sent, "b to be resubmitted after the grace")
        (b_again,) = gateway2.sent
        assert b_again.pinned is None and b_again.packet.id == b_id
    finally:
        await second.stop()


async def test_finished_molecules_are_answered_from_the_journal(
    env: tuple[MoleculeCoordinator, FakeGateway],
) -> None:
    coordinator, gateway = env
    send(coordinator, initiate("m6", [pk("a")]))
    await settle()
    succeed(gateway.find("a"), {"result": 1})
    await settle()
    coordinator.finished.clear()  # evicted from memory
    status = coordinator.status("m6", path="molecule_id")
    assert status["status"] == "success" and status["results"] == {"a": {"result": 1}}
    with pytest.raises(coord.MoleculeFinished):
        coordinator.abort("m6", path="payload.molecule_id", reason="x")


@pytest.mark.parametrize(
    ("structure", "code", "field"),
    [
        (
            {
                "packets": [pk("a"), pk("b")],
                "bonds": [bond("a", "b"), bond("b", "a")],
            },
            "PF102",
            "payload.molecular_structure.bonds[1]",
        ),
        ({"packets": [pk("a"), pk("a")]}, "PF002", "payload.molecular_structure.packets[1].id"),
        (
            {"packets": [pk("a", data=[1, 2])]},
            "PF002",
            "payload.molecular_structure.packets[0].data",
        ),
        (
            {"packets": [pk("a", element="provision", group="cf")]},
            "PF003",
            "payload.molecular_structure.packets[0].element",
        ),
    ],
)
async def test_bad_molecules_get_one_error_and_nothing_runs(
    env: tuple[MoleculeCoordinator, FakeGateway],
    tmp_path: Path,
    structure: dict[str, Any],
    code: str,
    field: str,
) -> None:
    coordinator, gateway = env
    peer = send(
        coordinator,
        coordinate(
            {
                "coordination_type": "initiate",
                "molecule_id": "bad",
                "molecular_structure": structure,
            },
            message_id="msg_bad",
        ),
    )
    await settle()
    (frame,) = peer.frames
    assert frame["message_type"] == "error" and frame["correlation_id"] == "msg_bad"
    assert frame["payload"]["error_code"] == code
    assert frame["payload"]["error_details"]["field"] == field
    assert gateway.sent == []
    assert journal_rows(tmp_path / "molecules.sqlite3", "SELECT * FROM molecules") == []


async def test_requests_for_unknown_molecules_name_the_field(
    env: tuple[MoleculeCoordinator, FakeGateway],
) -> None:
    coordinator, _ = env
    for kind in ("abort", "status", "optimize"):
        peer = send(coordinator, coordinate({"coordination_type": kind, "molecule_id": "ghost"}))
        (frame,) = peer.frames
        details = frame["payload"]["error_details"]
        assert frame["payload"]["error_code"] == "PF002"
        assert details["field"] == "payload.molecule_id"
        assert details["validation_rule"] == "known_molecule"
        assert details["molecule_id"] == "ghost"
    peer = send(coordinator, coordinate({"coordination_type": "complete"}))
    assert peer.frames[0]["payload"]["error_details"]["field"] == "payload.coordination_type"


async def test_a_running_id_cannot_be_initiated_twice(
    env: tuple[MoleculeCoordinator, FakeGateway],
) -> None:
    coordinator, _ = env
    send(coordinator, initiate("dup", [pk("a")]))
    peer = send(coordinator, initiate("dup", [pk("a")]))
    assert peer.frames[0]["payload"]["error_details"]["validation_rule"] == "unique_running"


async def test_a_journal_failure_refuses_the_initiate(
    env: tuple[MoleculeCoordinator, FakeGateway], monkeypatch: pytest.MonkeyPatch
) -> None:
    coordinator, gateway = env
    journal = coordinator.journal
    assert journal is not None

    def broken() -> None:
        raise JournalError("disk full")

    monkeypatch.setattr(journal, "commit", broken)
    peer = send(coordinator, initiate("m7", [pk("a")]))
    await settle()
    assert gateway.sent == []
    (frame,) = peer.frames
    assert frame["payload"]["error_code"] == "PF503"
    assert "m7" not in coordinator.active
    assert coordinator.journal_errors == 1


def read_only(coordinator: MoleculeCoordinator) -> sqlite3.Connection:
    """Swap the journal's SQLite connection for one opened read-only (SQLite's own
    ``mode=ro``, which stops root too, unlike a chmod): every write really fails. Returns
    the writable connection, to put back."""
    journal = cast(Any, coordinator.journal)
    writable: sqlite3.Connection = journal._db
    journal._db = sqlite3.connect(f"file:{journal.path}?mode=ro", uri=True, isolation_level=None)
    return writable


def writable_again(coordinator: MoleculeCoordinator, db: sqlite3.Connection) -> None:
    journal = cast(Any, coordinator.journal)
    journal._db.close()
    journal._db = db


async def test_a_failed_journal_commit_stops_the_molecule_before_its_next_step(
    env: tuple[MoleculeCoordinator, FakeGateway], tmp_path: Path
) -> None:
    """Hardening issue 9: a packet's result whose journal entry cannot be written must not
    start the next packet (nothing runs unjournaled, DESIGN §6); the molecule fails with
    PF503 saying why, its initiator is answered, later molecules are refused cleanly, and
    once the journal works again the failed molecule is on record and never resumes."""
    coordinator, gateway = env
    peer = send(coordinator, initiate("mj", [pk("a"), pk("b"), pk("c")],
                                      [bond("a", "b"), bond("b", "c")]))  # fmt: skip
    await settle()
    assert gateway.sent_ids() == ["a"]
    db = read_only(coordinator)
    succeed(gateway.find("a"), {"result": "A"})
    await settle()
    assert gateway.sent_ids() == ["a"], "b ran although a's result was never journaled"
    (final,) = peer.payloads("complete")
    assert final["status"] == "failed"
    assert final["error"]["error_code"] == "PF503"
    assert final["error"]["retry_possible"] is True
    assert "journal could not be written" in final["error"]["error_message"]
    assert "readonly" in final["error"]["error_message"]
    assert final["error"]["error_details"]["reason"] == "journal_unavailable"
    assert "mj" not in coordinator.active
    assert coordinator.status("mj", path="x")["status"] == "failed"

    # Later molecules fail cleanly, each with one PF503, and the coordinator lives on.
    for name in ("later-1", "later-2"):
        later = send(coordinator, initiate(name, [pk("a")]))
        await settle()
        (refusal,) = later.frames
        assert refusal["payload"]["error_code"] == "PF503", refusal
        assert "readonly" in refusal["payload"]["error_message"]
    assert gateway.sent_ids() == ["a"]

    writable_again(coordinator, db)
    ok = send(coordinator, initiate("after", [pk("x")]))
    await settle()
    assert gateway.sent_ids() == ["a", "x"]
    succeed(gateway.find("x"), {"result": 1})
    await settle()
    assert ok.payloads("complete")[0]["status"] == "success"
    rows = dict(journal_rows(tmp_path / "molecules.sqlite3",
                             "SELECT molecule_id, status FROM molecules"))  # fmt: skip
    assert rows == {"mj": "failed", "after": "success"}, "mj would resume after a restart"


async def test_a_lost_dispatch_record_stops_the_molecule_too(
    env: tuple[MoleculeCoordinator, FakeGateway],
) -> None:
    """The row naming the reactor a packet went to is a state change like any other: if
    it cannot be written, a restart could not ask that reactor first, so the run stops."""
    coordinator, gateway = env
    gateway.dispatch_to = "r1"
    peer = send(coordinator, initiate("md", [pk("a"), pk("b")], [bond("a", "b")]))
    await asyncio.sleep(0)  # the initiate's commit; a is dispatched and its row buffered
    assert gateway.sent_ids() == ["a"] and peer.payloads("initiate")
    read_only(coordinator)
    await poll(lambda: peer.payloads("complete"), "the molecule to stop")
    (final,) = peer.payloads("complete")
    assert final["status"] == "failed" and final["error"]["error_code"] == "PF503"
    succeed(gateway.find("a"), {"result": "A"})  # the cancelled packet's late reply
    await settle()
    assert gateway.sent_ids() == ["a"]


async def test_a_failed_commit_of_the_last_step_keeps_the_outcome(
    env: tuple[MoleculeCoordinator, FakeGateway], tmp_path: Path
) -> None:
    """The run had already finished in memory: only writing its finish failed. The
    initiator gets the true outcome; the finish is written once the journal works."""
    coordinator, gateway = env
    peer = send(coordinator, initiate("ml", [pk("a")]))
    await settle()
    db = read_only(coordinator)
    succeed(gateway.find("a"), {"result": 1})
    await settle()
    assert peer.payloads("complete")[0]["status"] == "success"
    db_path = tmp_path / "molecules.sqlite3"
    assert journal_rows(db_path, "SELECT status FROM molecules") == [(None,)]
    writable_again(coordinator, db)
    await poll(lambda: journal_rows(db_path, "SELECT status FROM molecules") == [("success",)],
               "the finish to be written once the journal works")  # fmt: skip


async def test_optimize_apply_is_answered_only_once_journaled(
    env: tuple[MoleculeCoordinator, FakeGateway],
) -> None:
    coordinator, gateway = env
    peer = send(coordinator, initiate("mo", [pk("slow", "sleep"), pk("ping", "ping", group="cf")],
                                      [bond("slow", "ping")]))  # fmt: skip
    await settle()
    read_only(coordinator)
    admin = send(
        coordinator,
        coordinate({"coordination_type": "optimize", "molecule_id": "mo", "apply": True}),
    )
    assert admin.frames == []  # not before the commit
    await settle()
    (answer,) = admin.frames
    assert answer["message_type"] == "error"
    assert answer["payload"]["error_code"] == "PF503"
    assert gateway.sent_ids() == ["slow"], "the freed target started unjournaled"
    assert peer.payloads("complete")[0]["error"]["error_code"] == "PF503"


async def test_abort_cancels_and_answers_both_streams(
    env: tuple[MoleculeCoordinator, FakeGateway],
) -> None:
    coordinator, gateway = env
    watcher = send(coordinator, initiate("m8", [pk("a"), pk("b")], [bond("a", "b")]))
    await settle()
    admin = send(
        coordinator,
        coordinate({"coordination_type": "abort", "molecule_id": "m8"}, message_id="msg_abort"),
    )
    await settle()
    assert watcher.payloads()[-1]["coordination_type"] == "abort"
    assert watcher.frames[-1]["correlation_id"] == "msg_init"
    (answer,) = admin.frames
    assert answer["correlation_id"] == "msg_abort"
    assert answer["payload"]["status"] == "aborted"
    succeed(gateway.find("a"), {"result": 1})  # the cancelled packet's late reply
    await settle()
    assert coordinator.status("m8", path="x")["status"] == "aborted"


async def test_molecule_timeout(env: tuple[MoleculeCoordinator, FakeGateway]) -> None:
    coordinator, _ = env
    peer = send(coordinator, initiate("m9", [pk("a")], timeout_ms=30))
    await poll(lambda: peer.payloads("complete"), "the molecule to time out")
    final = peer.payloads("complete")[0]
    assert final["status"] == "timeout" and final["error"]["error_code"] == "PF504"


async def test_optimize_apply_starts_a_freed_target(
    env: tuple[MoleculeCoordinator, FakeGateway],
) -> None:
    coordinator, gateway = env
    peer = send(
        coordinator,
        initiate(
            "m10", [pk("slow", "sleep"), pk("ping", "ping", group="cf")], [bond("slow", "ping")]
        ),
    )
    await settle()
    admin = send(
        coordinator,
        coordinate({"coordination_type": "optimize", "molecule_id": "m10", "apply": True}),
    )
    await settle()
    assert admin.frames[0]["payload"]["status"] == "applied"
    assert gateway.sent_ids() == ["slow", "ping"]
    succeed(gateway.find("ping"), {"pong": True})
    succeed(gateway.find("slow"), {"result": 1})
    await settle()
    assert peer.payloads()[-1]["status"] == "success"


async def test_plan_answers_validate_reserve_execute(
    env: tuple[MoleculeCoordinator, FakeGateway],
) -> None:
    coordinator, gateway = env
    structure = {
        "packets": [pk("a"), pk("b"), pk("c")],
        "bonds": [bond("a", "b"), bond("a", "c")],
    }
    plan = coordinator.plan("execute", {"molecular_structure": structure}, path="payload")
    assert [s["packets"] for s in plan["execution_plan"]["stages"]] == [["a"], ["b", "c"]]
    reserve = coordinator.plan("reserve", {"molecular_structure": structure}, path="payload")
    assert {r["reactor_id"] for r in reserve["resource_reservations"]} <= {"r1", "r2"}
    assert gateway.sent == []


def test_wire_ids_stay_within_128_chars() -> None:
    state = SimpleNamespace(molecule_id="m" * 100, run_id="abcd1234")
    wire = MoleculeCoordinator._wire_id(cast(Any, None), cast(Any, state), "p" * 100)
    assert len(wire) <= 128 and wire.startswith("molecule:abcd1234:")
    short = SimpleNamespace(molecule_id="m", run_id="abcd1234")
    assert MoleculeCoordinator._wire_id(cast(Any, None), cast(Any, short), "p") == "m:abcd1234:p"


# ---------------------------------------------------------------- §7.4 suggestions (pure)


def _observed(
    state: str = "succeeded",
    attempts: int = 1,
    failed: int = 0,
    ms: float | None = 100.0,
    reactor: str | None = "r1",
    size: int = 10,
) -> Observed:
    return Observed(state, attempts, failed, ms, reactor, size)


def test_suggest_parallelizes_data_free_chains_and_weakens_failing_bonds() -> None:
    molecule = parse_molecule(
        {
            "molecule_id": "m",
            "packets": [
                {"id": "a", "group": "cf", "element": "ping"},
                {"id": "b", "group": "cf", "element": "ping", "dependencies": ["a"]},
                {"id": "c", "group": "df", "element": "transform", "dependencies": ["b"]},
            ],
        }
    )
    observed = {"a": _observed(attempts=2, failed=1), "b": _observed(), "c": _observed()}
    result = suggest(
        molecule,
        list(molecule.bonds),
        observed,
        lambda p: None,
        lambda p: set(),
        wanted={"bond_strength", "locality", "parallelization"},
    )
    (group,) = result.parallel
    assert group["packets"] == ["a", "b"]  # c reads b's result: not parallel
    assert group["optimized_bonds"] == ["metallic"]
    by_bond = {a["bond_id"]: a for a in result.adjustments}
    assert by_bond["a->b"]["reason"] == "observed_source_failures"
    assert by_bond["a->b"]["new_strength"] == 0.5
    assert "b->c" not in by_bond
    assert result.expected_improvement["critical_path_ms_before"] == 300.0
    assert result.expected_improvement["critical_path_ms_after"] == 200.0
    assert result.expected_improvement["latency_reduction_ms"] == 100.0
    assert result.structure["bonds"][0]["type"] == "metallic"


def test_suggest_groups_covalent_pairs_on_the_reactor_that_ran_them() -> None:
    molecule = parse_molecule(
        {
            "molecule_id": "m",
            "packets": [
                {"id": "a", "group": "df", "element": "load"},
                {"id": "b", "group": "df", "element": "transform"},
                {"id": "c", "group": "df", "element": "transform"},
            ],
            "bonds": [bond("a", "b", "covalent"), bond("b", "c")],
        }
    )
    observed = {
        "a": _observed(reactor="r2"),
        "b": _observed(reactor="r2"),
        "c": _observed(reactor="r1", size=optimizer.LOCALITY_MIN_BYTES),
    }
    observed["b"] = _observed(reactor="r2", size=optimizer.LOCALITY_MIN_BYTES)
    result = suggest(
        molecule,
        list(molecule.bonds),
        observed,
        lambda p: None,
        lambda p: {"r1", "r2"},
        wanted={"locality"},
    )
    (group,) = result.locality
    assert group["packet_group"] == ["a", "b", "c"]
    assert group["preferred_reactor"] == "r2"
    assert group["reason"] == "frequent_data_exchange"
    assert group["affinity_boost"] == optimizer.LOCALITY_AFFINITY_BOOST


async def test_10_1_2_pf105_applying_to_a_molecule_that_is_not_running(
    env: tuple[MoleculeCoordinator, FakeGateway],
) -> None:
    coordinator, gateway = env
    send(coordinator, initiate("m105", [pk("a")]))
    await settle()
    succeed(gateway.find("a"), {"result": 1})
    await settle()
    admin = send(
        coordinator,
        coordinate({"coordination_type": "optimize", "molecule_id": "m105", "apply": True}),
    )
    await settle()
    (answer,) = admin.frames
    assert answer["message_type"] == "error"
    assert answer["payload"]["error_code"] == "PF105"
    assert answer["payload"]["error_category"] == "optimization_error"
    assert answer["payload"]["retry_possible"] is False
    assert answer["payload"]["error_details"]["reason"] == "molecule_not_running"
    # Asking for suggestions only is still fine.
    admin = send(coordinator, coordinate({"coordination_type": "optimize", "molecule_id": "m105"}))
    await settle()
    assert admin.frames[0]["payload"]["status"] == "suggested"


async def test_10_1_2_pf105_a_failed_apply_leaves_the_molecule_unoptimized(
    env: tuple[MoleculeCoordinator, FakeGateway], monkeypatch: pytest.MonkeyPatch
) -> None:
    coordinator, gateway = env
    peer = send(coordinator, initiate("m106", [pk("slow", "sleep"), pk("ping", "ping", group="cf")],
                                      [bond("slow", "ping")]))  # fmt: skip
    await settle()

    def broken_restore(*args: Any, **kwargs: Any) -> Any:
        raise ValueError("rebuilt structure is invalid")

    monkeypatch.setattr(coord._Run, "restore", broken_restore)
    admin = send(
        coordinator,
        coordinate({"coordination_type": "optimize", "molecule_id": "m106", "apply": True}),
    )
    await settle()
    (answer,) = admin.frames
    assert answer["payload"]["error_code"] == "PF105"
    assert answer["payload"]["retry_possible"] is True
    assert answer["payload"]["error_details"]["fallback"] == "unoptimized"
    state = coordinator.active["m106"]
    assert state.optimized == {} and state.locality == {}
    assert coordinator.history.optimizations == 0
    monkeypatch.undo()
    # The molecule goes on as it was: ping still waits for slow (the ionic bond held).
    assert gateway.sent_ids() == ["slow"]
    succeed(gateway.find("slow"), {"result": 1})
    await settle()
    succeed(gateway.find("ping"), {"pong": True})
    await settle()
    assert peer.payloads()[-1]["status"] == "success"
    health = coordinator.history.metrics()
    assert health["bond_success_rate"] == 1.0 and health["molecular_participation"] == 1


async def test_4_2_2_packets_changed_by_an_applied_optimization_say_so(
    env: tuple[MoleculeCoordinator, FakeGateway],
) -> None:
    """The freed target goes out with metadata.optimizations, which its reactor reports as
    chemical_analysis.optimization_applied (protocol/reaction.py); the untouched one not."""
    coordinator, gateway = env
    send(coordinator, initiate("m107", [pk("slow", "sleep"), pk("ping", "ping", group="cf")],
                               [bond("slow", "ping")]))  # fmt: skip
    await settle()
    apply = {"coordination_type": "optimize", "molecule_id": "m107", "apply": True}
    send(coordinator, coordinate(apply))
    await settle()
    assert "parallelization" in gateway.find("ping").packet.metadata["optimizations"]
    assert "optimizations" not in gateway.find("slow").packet.metadata
    assert coordinator.history.optimizations == 1
    assert coordinator.active["m107"].meta()["optimized"]["ping"]


class BlockedSharedJournal:
    """Another gateway's journal entries (cluster mode), read only once ``open`` is set."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.reads = 0

    async def load_async(self, molecule_id: str) -> None:
        self.reads += 1
        await self.open.wait()
        return None


async def test_reads_of_the_shared_journal_are_capped_then_answered(
    env: tuple[MoleculeCoordinator, FakeGateway],
) -> None:
    """Cluster mode: a status for a molecule held elsewhere reads its shared journal entry
    first; past MAX_SHARED_READS at once a request gets PF004 instead of one more read.
    Every other request is answered once the reads return."""
    coordinator, _ = env
    shared = BlockedSharedJournal()
    coordinator._async_journal = cast(Any, shared)
    cap = coord.MAX_SHARED_READS
    peers = [
        send(coordinator, coordinate({"coordination_type": "status", "molecule_id": f"m{i}"}))
        for i in range(cap + 1)
    ]
    await settle()
    assert shared.reads == cap
    assert [p.frames for p in peers[:cap]] == [[]] * cap  # waiting on their reads
    (refused,) = peers[cap].frames
    assert refused["payload"]["error_code"] == "PF004"
    assert refused["payload"]["error_details"]["limit"] == cap
    shared.open.set()
    await poll(lambda: all(p.frames for p in peers[:cap]), "every read to be answered")
    assert {p.frames[0]["payload"]["error_code"] for p in peers[:cap]} == {"PF002"}
    assert coordinator._shared_reads == 0


async def test_http_reads_of_the_shared_journal_share_the_cap(
    env: tuple[MoleculeCoordinator, FakeGateway], monkeypatch: pytest.MonkeyPatch
) -> None:
    """GET and DELETE /v1/molecules/{id} of a molecule held elsewhere read the shared
    journal too, under the same MAX_SHARED_READS as /ws: one past it is answered 429
    PF004 without a read, and the reads under way are answered once they return."""
    coordinator, _ = env
    shared = BlockedSharedJournal()
    coordinator._async_journal = cast(Any, shared)
    monkeypatch.setattr(coord, "MAX_SHARED_READS", 3)
    user = Principal("key:alice", frozenset({PACKET_USER}), "api_key")

    @web.middleware
    async def authenticated(request: web.Request, handler: Any) -> web.StreamResponse:
        request[PRINCIPAL_KEY] = user
        return cast(web.StreamResponse, await handler(request))

    app = web.Application(middlewares=[authenticated])
    coordinator.add_routes(app)
    async with TestClient(TestServer(app)) as client:
        reads = [
            asyncio.create_task(client.request(method, f"/v1/molecules/m{i}"))
            for i, method in enumerate(("GET", "GET", "DELETE"))
        ]
        await poll(lambda: shared.reads == 3, "three reads under way")
        over = await asyncio.wait_for(client.get("/v1/molecules/m9"), 5)
        assert over.status == 429
        assert (await over.json())["payload"]["error_code"] == "PF004"
        assert shared.reads == 3
        shared.open.set()
        answered = await asyncio.gather(*reads)
        # Each answered as usual once its read returned: unknown, so owned by nobody known.
        assert [r.status for r in answered] == [403, 403, 403]
    assert coordinator._shared_reads == 0


async def test_a_start_the_shared_journal_finds_claimed_elsewhere_is_refused_unrun(
    env: tuple[MoleculeCoordinator, FakeGateway],
) -> None:
    """Cluster mode: another gateway's claim of the id reached the shared journal before
    this gateway's view of the claims, so initiate let the start through; the journal's
    first commit of it refuses it (NatsJournal._claim). Its initiator gets the PF002
    unique_running initiate would have given, naming that gateway; nothing of the molecule
    runs or is acknowledged, and its owner is not recorded."""
    coordinator, gateway = env
    peer = send(coordinator, initiate("m-twice", [pk("a"), pk("b")]))
    coordinator.refuse_start("m-twice", "gateway-x")  # during the commit, as _claim does
    await settle()
    assert gateway.sent == []
    (frame,) = peer.frames
    details = frame["payload"]["error_details"]
    assert frame["payload"]["error_code"] == "PF002"
    assert details["validation_rule"] == "unique_running"
    assert details["field"] == "payload.molecule_id"
    assert details["gateway_id"] == "gateway-x"
    assert "running on gateway gateway-x" in frame["payload"]["error_message"]
    assert "m-twice" not in coordinator.active
    assert gateway.guard.owner_of("molecule", "m-twice") is None
    coordinator.refuse_start("m-twice", "gateway-x")  # nothing left to refuse
    peer = send(coordinator, initiate("m-twice", [pk("a")]))  # the id is free here again
    await settle()
    assert peer.frames[0]["payload"]["coordination_type"] == "initiate", peer.frames[0]
