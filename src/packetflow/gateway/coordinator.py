"""The molecule coordinator: runs PFAP §7 molecules inside the gateway (DESIGN §7).

It adapts the pure planner (``protocol/planner.py``: events in, instructions out, STYLE 3)
to the gateway. COORDINATE messages on ``/ws`` and the ``/v1/molecules`` HTTP API become
planner calls; the RESULT/ERROR of every packet it submits becomes ``PacketSucceeded`` /
``PacketFailed``; the molecule deadline becomes ``TimerFired``. In the other direction,
``StartPacket``/``RetryPacket`` become SUBMITs through ``gateway.submit_internal`` (with
``packet.metadata.inputs`` = the upstream results, DESIGN §7 data flow), and the
initiator gets COORDINATE ``progress`` messages and one ``complete`` or ``abort``.

How it works, and the choices DESIGN leaves open:

- Journal before acting (DESIGN §6). Every planner event is written to the journal
  (``journal.py``) together with what it causes; the journal commits once per event-loop
  iteration (a group commit) and only then are the instructions carried out and the
  initiate acknowledged. A crash therefore loses at most work that was never started or
  acknowledged; on restart every unfinished molecule is rebuilt (checkpoint + events
  replayed) and resumed with ``MoleculeRun.restore``.
- Packet ids on the wire are ``{molecule_id}:{run_id}:{packet_id}`` (``run_id`` 8 hex
  chars, new for every run, kept across restarts; a hash stands in when that would pass
  128 chars). A run of the same molecule id later therefore never collides with the
  idempotency windows of gateway and reactors (DESIGN §4), while a resumed run resubmits
  under the same id and gets the stored outcome of a packet that already finished.
- Problems with a request (bad structure, unknown molecule, aborting a finished one) are
  answered with one PFAP ERROR envelope correlated to the request, never with a
  COORDINATE: SDKs already raise on ERROR (``client.coordinate`` does), and DESIGN §3 says
  every ERROR correlates to the message it answers. Nothing runs before validation.
- Correlation: every COORDINATE pushed about a molecule (progress, complete, abort) is
  correlated to the message that initiated it (DESIGN §7); a direct answer to another
  request (status, abort, validate, ...) is correlated to that request, and carries the
  initiating message id in ``coordination_metadata.initiated_by``.
- Progress is pushed to the initiator after every committed state change; changes within
  one event-loop iteration share one message, and a molecule of more than
  ``PROGRESS_FULL_RATE_MAX_PACKETS`` packets gets at most one per
  ``PROGRESS_MIN_INTERVAL_S`` (its message carries every finished packet: a 1000-way
  fan-out would otherwise push ~1000 messages averaging 500 stage results each).
- A client ``abort`` ends with COORDINATE ``abort`` (status ``aborted``); every other end,
  the molecule's own timeout included, with ``complete`` (status success, partial, failed
  or timeout).
- Cancelling a packet forgets it: its late reply is ignored. The gateway has no call that
  withdraws a packet from a reactor yet, so the reactor finishes it.
- ``optimize`` (§7.4) suggestions come from the structure and observed history (see
  ``protocol.optimizer.suggest``); ``apply: true`` applies them to a running molecule's
  packets that have not started yet (bond strengths, ionic → metallic for data-free chains,
  reactor locality).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import itertools
import logging
import os
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol, cast

import msgspec
from aiohttp import web
from msgspec import UNSET, Raw

from ..protocol import routing
from ..protocol.errors import (
    GatewayTimeout,
    InternalError,
    InvalidMessage,
    InvalidPacket,
    NoReactorAvailable,
    Overloaded,
    PacketFlowError,
    ServiceUnavailable,
    invalid_field,
)
from ..protocol.messages import (
    PROTOCOL_VERSION,
    Coordinate,
    CoordinatePayload,
    Error,
    Packet,
    Result,
    RoutingPreferences,
    Submit,
    SubmitPayload,
    decode_json,
    decode_one,
    encode,
    encode_json,
    error_envelope,
)
from ..protocol.molecules import (
    Bond,
    Molecule,
    MoleculePacket,
    blocking_sources,
    execution_plan,
    parse_molecule,
    validate_molecule,
)
from ..protocol.optimizer import Observed, Suggestions, observed_from_snapshot, suggest
from ..protocol.packets import PACKET_ID_MAX_LEN, default_priority, effective_timeout_ms
from ..protocol.planner import (
    ACTIVE_STATES,
    CancelPacket,
    ConvertBond,
    FinishMolecule,
    IllegalMoleculeEvent,
    Instruction,
    MoleculeRun,
    ReportProgress,
    RetryPacket,
    ScheduleTimer,
    StartPacket,
)
from ..transport import new_message_id, now_ms
from .journal import JournalError, JournalEvent, MoleculeJournal, SqliteJournal, StoredMolecule

if TYPE_CHECKING:
    from ..transport import Peer
    from .server import Gateway

log = logging.getLogger("packetflow.gateway.coordinator")

# ---------------------------------------------------------------- limits (STYLE 5)

# DESIGN §7 fixes no size. protocol.molecules.MAX_MOLECULE_PACKETS (1000) bounds the
# planner's per-event cost; the gateway allows 1024 so that the benchmark shape
# (a 1,000-way fan-out plus its source and aggregate packets) fits, same order of size.
MAX_MOLECULE_SIZE: Final = 1024
# Molecules running at once; past it an initiate answers PF004 (each holds its results).
MAX_ACTIVE_MOLECULES: Final = 10_000
# Finished molecules kept in memory for status queries; older ones are answered from the
# journal (which keeps journal.JOURNAL_KEEP_FINISHED of them).
MAX_FINISHED_MOLECULES: Final = 1000
# After a restart, resubmission waits this long for reactors to re-announce the elements
# a molecule needs (their reconnect backoff caps at 2 s, client.py); then it goes ahead
# and the router queues or answers PF003 as for any packet.
RESUME_WAIT_S: Final = 30.0
RESUME_POLL_S: Final = 0.05
# A packet's timeout is capped at the molecule's deadline plus this, so the molecule's own
# timer fires first and the run ends as `timeout`, not as that packet's failure.
DEADLINE_SLACK_MS: Final = 250
# Progress rate limit for large molecules (see the module docstring).
PROGRESS_FULL_RATE_MAX_PACKETS: Final = 100
PROGRESS_MIN_INTERVAL_S: Final = 0.05
# Events between journal checkpoints of one running molecule: bounds replay work and the
# event log of a long molecule (a replayed event costs a few µs).
CHECKPOINT_EVERY_EVENTS: Final = 5000
# Element kinds whose observed durations are kept for estimates (reserve, optimize).
HISTORY_MAX_KINDS: Final = 1024
# §7.3 phase 1's check names, reported by `validate`.
VALIDATION_CHECKS: Final = (
    "packet_availability",
    "bond_consistency",
    "reactor_compatibility",
    "resource_requirements",
    "circular_dependency_detection",
)
OPTIMIZATION_TYPES: Final = ("bond_strength", "locality", "parallelization")

_HTTP_STATUS: Final = {"PF001": 400, "PF002": 400, "PF003": 503, "PF004": 429, "PF102": 400,
                       "PF503": 503, "PF504": 504}  # fmt: skip


# ---------------------------------------------------------------- request errors


class UnknownMolecule(InvalidPacket):
    """PF002: no molecule has this id (HTTP 404)."""

    http_status = 404


class MoleculeFinished(InvalidPacket):
    """PF002: the molecule already finished, so it cannot be aborted (HTTP 409)."""

    http_status = 409


class MoleculeRunning(InvalidPacket):
    """PF002: a molecule of this id is running; ids name one run at a time (HTTP 409)."""

    http_status = 409


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


# ---------------------------------------------------------------- the run


class _Run(MoleculeRun):
    """A MoleculeRun whose per-event ``ReportProgress`` is empty.

    The planner builds a full progress report (O(packets)) on every event; for a 1000-way
    fan-out that is ~0.5 s of the run. The coordinator coalesces pushes and builds the
    report itself when it sends one, with ``report``.
    """

    def progress(self, now: float | None = None) -> dict[str, Any]:
        return {}

    def report(self, now: float | None = None) -> dict[str, Any]:
        return MoleculeRun.progress(self, now)


class _Sink(Protocol):
    def next_seq(self) -> int | None: ...
    def send(self, frame: bytes) -> bool: ...


@dataclass(slots=True, eq=False)
class _Initiator:
    """Who started a molecule over ``/ws``: pushes go here."""

    sink: _Sink
    message_id: str
    source_id: str


@dataclass(slots=True, eq=False)
class _Molecule:
    """The coordinator's record of one molecule run."""

    molecule_id: str
    run: _Run
    run_id: str
    initiated_by: str
    initiator: _Initiator | None
    incoming: dict[str, list[str]]
    inflight: dict[str, int] = field(default_factory=dict)  # packet id -> reply token
    reactor_of: dict[str, str] = field(default_factory=dict)
    locality: dict[str, str] = field(default_factory=dict)  # applied §7.4.2 preferences
    timer: asyncio.TimerHandle | None = None
    push_timer: asyncio.TimerHandle | None = None
    last_push: float = 0.0
    acknowledged: bool = False  # the ack just sent carries the state: skip one progress
    since_checkpoint: int = 0
    rejected: bool = False
    accepted: asyncio.Future[None] | None = None
    waiters: list[asyncio.Future[dict[str, Any]]] = field(default_factory=list)
    final: dict[str, Any] | None = None
    resume_task: asyncio.Task[None] | None = None

    def meta(self) -> dict[str, Any]:
        return {"initiated_by": self.initiated_by, "locality": self.locality}


# ---------------------------------------------------------------- the coordinator


class MoleculeCoordinator:
    """Runs molecules for one gateway; see the module docstring."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.active: dict[str, _Molecule] = {}
        self.finished: OrderedDict[str, _Molecule] = OrderedDict()
        self.journal: MoleculeJournal | None = None
        self.journal_errors = 0
        self._actions: list[Callable[[bool], None]] = []
        self._flush_handle: asyncio.Handle | None = None
        self._dirty: set[_Molecule] = set()
        self._tokens = itertools.count(1)
        self._history: dict[str, list[float]] = {}  # kind -> [count, mean ms]
        self._stopped = False

    # ------------------------------------------------------------------ lifecycle

    def journal_path(self) -> Path:
        config = self.gateway.config
        return Path(config.journal_path or Path(config.data_dir) / "molecules.sqlite3")

    async def start(self) -> None:
        """Open the journal and resume every unfinished molecule in it."""
        self._stopped = False
        journal = SqliteJournal(self.journal_path(), synchronous=self.gateway.config.journal_sync)
        try:
            stored = journal.open()
        except JournalError as exc:
            # Packets still route; molecules are refused (PF503) rather than run unjournaled.
            log.error("%s; molecules are disabled", exc)
            return
        self.journal = journal
        for item in stored:
            try:
                self._resume(item)
            except (ValueError, KeyError, TypeError, PacketFlowError) as exc:
                # A checkpoint this version cannot read: leave it in the journal, say so.
                log.error("molecule %s cannot be resumed from the journal: %s",
                          item.molecule_id, exc)  # fmt: skip
        if stored:
            log.info("resuming %d unfinished molecule(s)", len(self.active))
        self._schedule_flush()

    async def stop(self) -> None:
        """Stop timers and write what is buffered; unfinished molecules stay in the journal
        and resume at the next start."""
        self._stopped = True
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        for state in list(self.active.values()):
            self._cancel_timers(state)
            if state.resume_task is not None:
                state.resume_task.cancel()
        self._actions.clear()
        if self.journal is not None:
            self.journal.close()
            self.journal = None

    # ------------------------------------------------------------------ WebSocket

    def on_message(self, peer: Peer, msg: Coordinate) -> None:
        """One COORDINATE from a client: every path ends in at least one answer."""
        kind = msg.payload.coordination_type
        handlers: dict[str, Callable[[Peer, Coordinate], None]] = {
            "initiate": self._ws_initiate,
            "validate": self._ws_plan,
            "reserve": self._ws_plan,
            "execute": self._ws_plan,
            "progress": self._ws_status,
            "status": self._ws_status,
            "abort": self._ws_abort,
            "optimize": self._ws_optimize,
        }
        try:
            handler = handlers.get(kind)
            if handler is None:
                raise InvalidPacket(
                    f"coordination_type {kind!r} is sent by the coordinator, not to it",
                    field="payload.coordination_type",
                    expected_type=", ".join(handlers), received_type=repr(kind),
                    validation_rule="accepted_coordination_type",
                )  # fmt: skip
            handler(peer, msg)
        except PacketFlowError as err:
            self._ws_error(peer, msg, err)
        except Exception:  # a coordinator bug must cost one PF500, not the connection
            log.exception("coordinator failed on %s %s", kind, msg.message_id)
            self._ws_error(peer, msg, InternalError("Internal server error"))

    def _ws_error(self, peer: Peer, msg: Coordinate, err: PacketFlowError) -> None:
        if msg.payload.molecule_id is not None:
            err.context.setdefault("molecule_id", msg.payload.molecule_id)
        self.gateway.answer_error(peer, err, msg.message_id, None, msg.source_id)

    def _send(
        self, sink: _Sink, payload: dict[str, Any], correlation_id: str, destination: str | None
    ) -> bool:
        frame = encode(Coordinate(
            protocol_version=PROTOCOL_VERSION, message_id=new_message_id(), timestamp=now_ms(),
            source_id=self.gateway.gateway_id,
            destination_id=destination if destination is not None else UNSET,
            sequence_id=sink.next_seq(), correlation_id=correlation_id,
            payload=CoordinatePayload(**payload),
        ))  # fmt: skip
        return sink.send(frame)

    def _ws_initiate(self, peer: Peer, msg: Coordinate) -> None:
        obj = msgspec.to_builtins(msg.payload)
        initiator = _Initiator(peer, msg.message_id, msg.source_id)
        self.initiate(obj, path="payload", initiator=initiator, initiated_by=msg.message_id)

    def _ws_status(self, peer: Peer, msg: Coordinate) -> None:
        mid = _required_id(msg.payload.molecule_id, "payload.molecule_id")
        payload = self.status(mid, path="payload.molecule_id")
        payload["coordination_type"] = msg.payload.coordination_type
        self._send(peer, payload, msg.message_id, msg.source_id)

    def _ws_abort(self, peer: Peer, msg: Coordinate) -> None:
        mid = _required_id(msg.payload.molecule_id, "payload.molecule_id")
        reason = (msg.payload.coordination_metadata or {}).get("reason")
        reason = str(reason) if reason else f"aborted by {msg.source_id}"
        state = self.abort(mid, path="payload.molecule_id", reason=reason)

        def answer(durable: bool) -> None:
            payload = dict(state.final) if state.final else self.describe(state, "abort")
            self._send(peer, payload, msg.message_id, msg.source_id)

        self._after_commit(answer)

    def _ws_plan(self, peer: Peer, msg: Coordinate) -> None:
        obj = msgspec.to_builtins(msg.payload)
        payload = self.plan(msg.payload.coordination_type, obj, path="payload")
        self._send(peer, payload, msg.message_id, msg.source_id)

    def _ws_optimize(self, peer: Peer, msg: Coordinate) -> None:
        obj = msgspec.to_builtins(msg.payload)
        payload = self.optimize(obj, path="payload")
        self._send(peer, payload, msg.message_id, msg.source_id)

    # ------------------------------------------------------------------ requests

    def _validated(self, obj: Mapping[str, Any], path: str) -> Molecule:
        """§7.3 phase 1 on a structure or an initiate payload. Raises PF002/PF102/PF003."""
        structure_path = path
        if "molecular_structure" in obj:
            structure_path = _join(path, "molecular_structure")
        elif "coordination_type" in obj:
            raise invalid_field(_join(path, "molecular_structure"), "object", "missing",
                                "required_field")  # fmt: skip
        molecule = parse_molecule(
            obj, molecule_id=f"molecule_{uuid.uuid4().hex}", max_size=MAX_MOLECULE_SIZE,
            path=path,
        )  # fmt: skip
        for i, packet in enumerate(molecule.packets):
            if not isinstance(packet.data, dict):
                raise invalid_field(
                    _join(structure_path, f"packets[{i}].data"), "object",
                    type(packet.data).__name__, "type",
                )  # fmt: skip
        try:
            validate_molecule(molecule, supported=self.gateway.registry.supports)
        except NoReactorAvailable as err:
            if err.field:
                err.field = _join(structure_path, err.field)
            raise
        return molecule

    def initiate(
        self,
        obj: Mapping[str, Any],
        *,
        path: str,
        initiator: _Initiator | None,
        initiated_by: str,
    ) -> _Molecule:
        """Validate and start a molecule. The acknowledgement (and every packet) waits for
        the journal commit; ``state.accepted`` resolves then (PF503 if it failed).

        Raises PF002/PF102/PF003 for a bad molecule, MoleculeRunning for an id already
        running, PF004 past MAX_ACTIVE_MOLECULES, PF503 before ``start``.
        """
        molecule = self._validated(obj, path)
        mid = molecule.molecule_id
        if mid in self.active:
            raise MoleculeRunning(
                f"Molecule {mid!r} is already running; abort it or use another molecule_id",
                field=_join(path, "molecule_id"), expected_type="an id not running",
                received_type=repr(mid), validation_rule="unique_running",
                details={"molecule_id": mid},
            )  # fmt: skip
        if len(self.active) >= MAX_ACTIVE_MOLECULES:
            raise Overloaded(f"{len(self.active)} molecules are running; retry later",
                             retry_delay_ms=1000)  # fmt: skip
        journal = self.journal
        if journal is None or self._stopped:
            raise ServiceUnavailable("The molecule coordinator is not running",
                                     retry_delay_ms=1000)  # fmt: skip
        now = time.time()
        run = _Run(molecule, now)
        state = _Molecule(
            molecule_id=mid, run=run, run_id=os.urandom(4).hex(), initiated_by=initiated_by,
            initiator=initiator, incoming=blocking_sources(molecule.packet_ids, molecule.bonds),
            accepted=asyncio.get_running_loop().create_future(),
        )  # fmt: skip
        self.finished.pop(mid, None)
        self.active[mid] = state
        journal.begin(mid, state.run_id, run.snapshot(), state.meta(), now)
        # The acknowledgement goes first, then the packets the start issues.
        self._after_commit(functools.partial(self._acknowledge, state))
        self._event(state, JournalEvent("molecule_started", None, now), run.start(now), now)
        return state

    def _acknowledge(self, state: _Molecule, durable: bool) -> None:
        if not durable:
            state.rejected = True
            if self.active.get(state.molecule_id) is state:
                del self.active[state.molecule_id]
            err = ServiceUnavailable(
                f"Molecule {state.molecule_id!r} was not started: its journal entry could "
                "not be written", retry_delay_ms=1000,
                context={"molecule_id": state.molecule_id},
            )  # fmt: skip
            if state.initiator is not None:
                init = state.initiator
                self.gateway.answer_error(init.sink, err, init.message_id, None, init.source_id)
            if state.accepted is not None and not state.accepted.done():
                state.accepted.set_exception(err)
            return
        if state.accepted is not None and not state.accepted.done():
            state.accepted.set_result(None)
        if state.initiator is not None:
            payload = self.describe(state, "initiate")
            payload["execution_plan"] = execution_plan(state.run.molecule)
            self._push(state, payload)
            state.acknowledged = True

    def status(self, molecule_id: str, *, path: str) -> dict[str, Any]:
        """The molecule's state as a COORDINATE payload (``status``; ``complete``/``abort``
        once finished). Raises UnknownMolecule."""
        state = self.active.get(molecule_id) or self.finished.get(molecule_id)
        if state is not None:
            if state.final is not None:
                return dict(state.final)
            return self.describe(state, "status")
        stored = self._stored(molecule_id)
        if stored is None or stored.status is None:
            raise _unknown(molecule_id, path)
        return self._describe_stored(stored)

    def abort(self, molecule_id: str, *, path: str, reason: str) -> _Molecule:
        """Abort a running molecule (its packets are cancelled). Raises UnknownMolecule or
        MoleculeFinished (PF002 naming ``path``)."""
        state = self.active.get(molecule_id)
        if state is None or state.run.finished:
            done = state or self.finished.get(molecule_id)
            status: str | None = done.run.status if done is not None else None
            if status is None:
                stored = self._stored(molecule_id)
                status = stored.status if stored is not None else None
            if status is None:
                raise _unknown(molecule_id, path)
            raise MoleculeFinished(
                f"Molecule {molecule_id!r} already finished with status {status!r}; there "
                "is nothing to abort",
                field=path, expected_type="the id of a running molecule",
                received_type=repr(molecule_id), validation_rule="molecule_running",
                details={"molecule_id": molecule_id, "status": status},
            )  # fmt: skip
        now = time.time()
        out = state.run.abort(now, reason)
        body = encode_json({"reason": reason})
        self._event(state, JournalEvent("abort_requested", None, now, body=body), out, now)
        return state

    def plan(self, kind: str, obj: Mapping[str, Any], *, path: str) -> dict[str, Any]:
        """``validate`` / ``reserve`` / ``execute`` (§7.3 phases 1-3) for a structure in
        ``obj`` or a known ``molecule_id``: nothing runs and nothing is held."""
        molecule = self._molecule_for(obj, path)
        payload: dict[str, Any] = {"coordination_type": kind,
                                   "molecule_id": molecule.molecule_id}  # fmt: skip
        if kind == "validate":
            payload["status"] = "valid"
            payload["validation_checks"] = list(obj.get("validation_checks") or VALIDATION_CHECKS)
            payload["execution_plan"] = execution_plan(molecule)
        elif kind == "reserve":
            payload["status"] = "estimated"
            payload["resource_reservations"] = self.reservations(molecule)
        else:
            payload["status"] = "planned"
            payload["execution_plan"] = execution_plan(molecule)
        return payload

    def _molecule_for(self, obj: Mapping[str, Any], path: str) -> Molecule:
        if "molecular_structure" in obj or "packets" in obj:
            return self._validated(obj, path)
        mid = _required_id(obj.get("molecule_id"), _join(path, "molecule_id"))
        state = self.active.get(mid) or self.finished.get(mid)
        if state is not None:
            molecule = state.run.molecule
        else:
            stored = self._stored(mid)
            if stored is None:
                raise _unknown(mid, _join(path, "molecule_id"))
            molecule = parse_molecule(stored.checkpoint["molecule"],
                                      max_size=MAX_MOLECULE_SIZE)  # fmt: skip
        validate_molecule(molecule, supported=self.gateway.registry.supports)
        return molecule

    def reservations(self, molecule: Molecule) -> list[dict[str, Any]]:
        """§7.3 phase 2: the reactor each packet would go to now, its expected duration
        from observed history, and its declared resources. Advisory: nothing is held."""
        gateway = self.gateway
        out: list[dict[str, Any]] = []
        for packet in molecule.packets:
            candidates = list(gateway.registry.candidates(packet.group, packet.element))
            priority = packet.priority or default_priority(packet.group, packet.element)
            decision = routing.decide(candidates, group=packet.group, priority=priority,
                                      matrix=gateway.matrix)  # fmt: skip
            resources = packet.data.get("resources") if isinstance(packet.data, dict) else None
            entry: dict[str, Any] = {
                "packet_id": packet.id,
                "group": packet.group,
                "element": packet.element,
                "reactor_id": decision.reactor_id
                if isinstance(decision, routing.Chosen) else None,
                "estimated_duration": self.expected_ms(packet),
                "resource_requirements": resources if isinstance(resources, dict)
                else {"concurrency_slots": 1},
                "candidates": len(candidates),
            }  # fmt: skip
            if not isinstance(decision, routing.Chosen):
                entry["note"] = getattr(decision, "reason", type(decision).__name__)
            out.append(entry)
        return out

    def expected_ms(self, packet: MoleculePacket) -> float | None:
        sample = self._history.get(f"{packet.group}:{packet.element}")
        return round(sample[1], 3) if sample else None

    def _observe(self, kind: str, duration_ms: Any) -> None:
        if not isinstance(duration_ms, int | float):
            return
        sample = self._history.get(kind)
        if sample is None:
            if len(self._history) >= HISTORY_MAX_KINDS:
                return
            sample = self._history[kind] = [0.0, 0.0]
        sample[0] += 1
        sample[1] += (float(duration_ms) - sample[1]) / sample[0]

    # ------------------------------------------------------------------ optimize (§7.4)

    def optimize(self, obj: Mapping[str, Any], *, path: str) -> dict[str, Any]:
        """§7.4 suggestions for a known molecule (with its observed history) or a
        structure; with ``apply: true`` they are applied to a running molecule."""
        kind = obj.get("optimization_type")
        if kind is not None and kind != "all" and kind not in OPTIMIZATION_TYPES:
            raise invalid_field(_join(path, "optimization_type"),
                                "one of " + ", ".join((*OPTIMIZATION_TYPES, "all")),
                                repr(kind), "enum")  # fmt: skip
        state: _Molecule | None = None
        observed: dict[str, Observed] = {}
        if "molecular_structure" in obj or "packets" in obj:
            molecule = self._validated(obj, path)
            bonds = list(molecule.bonds)
        else:
            mid = _required_id(obj.get("molecule_id"), _join(path, "molecule_id"))
            state = self.active.get(mid) or self.finished.get(mid)
            if state is not None:
                snapshot = state.run.snapshot()
            else:
                stored = self._stored(mid)
                if stored is None:
                    raise _unknown(mid, _join(path, "molecule_id"))
                snapshot = stored.checkpoint
            molecule = parse_molecule(snapshot["molecule"], max_size=MAX_MOLECULE_SIZE)
            types = snapshot["bond_types"]
            bonds = [_retyped(b, t) for b, t in zip(molecule.bonds, types, strict=True)]
            observed = observed_from_snapshot(snapshot)
        wanted = set(OPTIMIZATION_TYPES) if kind in (None, "all") else {kind}
        result = suggest(
            molecule, bonds, observed, self.expected_ms, self._reactors_for, wanted=wanted
        )
        applied = False
        if obj.get("apply") is True and state is not None and not state.run.finished:
            self._apply_optimization(state, result)
            applied = True
        return {
            "coordination_type": "optimize",
            "molecule_id": molecule.molecule_id,
            "optimization_type": kind or "all",
            "adjustments": result.adjustments,
            "locality_adjustments": result.locality,
            "parallel_groups": result.parallel,
            "expected_improvement": result.expected_improvement,
            "apply": applied,
            "status": "applied" if applied else "suggested",
            "molecular_structure": result.structure,
        }

    def _reactors_for(self, packet: MoleculePacket) -> set[str]:
        candidates = self.gateway.registry.candidates(packet.group, packet.element)
        return {r.reactor_id for r in candidates}

    def _apply_optimization(self, state: _Molecule, result: Suggestions) -> None:
        """Rebuild the run with the suggested bonds (only targets not yet started change)
        and remember locality preferences for packets not yet started; journaled as a new
        checkpoint."""
        run = state.run
        now = time.time()
        snapshot = run.snapshot()
        bonds = snapshot["molecule"]["bonds"]
        index = {(b["from"], b["to"]): i for i, b in enumerate(bonds)}
        for adj in result.adjustments:
            i = index[(adj["from"], adj["to"])]
            bonds[i]["strength"] = adj["new_strength"]
        for group in result.parallel:
            for pair in group["bonds"]:
                i = index[(pair["from"], pair["to"])]
                if run.state_of(pair["to"]) == "pending":
                    bonds[i]["type"] = "metallic"
                    snapshot["bond_types"][i] = "metallic"
        for loc in result.locality:
            for pid in loc["packet_group"]:
                if run.state_of(pid) == "pending" and loc.get("preferred_reactor"):
                    state.locality[pid] = loc["preferred_reactor"]
        new_run, out = _Run.restore(snapshot, now)
        state.run = cast(_Run, new_run)
        state.incoming = blocking_sources(state.run.molecule.packet_ids, state.run.molecule.bonds)
        # Packets still on a reactor keep their reply tokens; only newly free ones start.
        out = [i for i in out if not (isinstance(i, StartPacket) and i.packet_id in state.inflight)]
        journal = self.journal
        if journal is not None:
            journal.checkpoint(state.molecule_id, state.run.snapshot(), now)
            journal.update_meta(state.molecule_id, state.meta())
        state.since_checkpoint = 0
        self._event(state, None, out, now)

    # ------------------------------------------------------------------ events → journal

    def _event(
        self,
        state: _Molecule,
        event: JournalEvent | None,
        out: list[Instruction],
        now: float,
    ) -> None:
        """Journal ``event`` and what it caused; carry the instructions out after the
        commit. The planner answers an event it ignores with no instructions."""
        if not out:
            return
        journal = self.journal
        mid = state.molecule_id
        finish: FinishMolecule | None = None
        if journal is not None:
            if event is not None:
                journal.record(mid, event)
            for ins in out:
                if isinstance(ins, StartPacket | RetryPacket):
                    journal.record(mid, JournalEvent(
                        "packet_submitted", ins.packet_id, now,
                        body=b'{"attempt":%d}' % ins.attempt,
                    ))  # fmt: skip
                elif isinstance(ins, FinishMolecule):
                    finish = ins
            if finish is not None:
                journal.finish(mid, finish.status, state.run.snapshot(), now)
            else:
                state.since_checkpoint += 1
                if state.since_checkpoint >= CHECKPOINT_EVERY_EVENTS:
                    journal.checkpoint(mid, state.run.snapshot(), now)
                    state.since_checkpoint = 0
        self._dirty.add(state)
        self._after_commit(functools.partial(self._carry_out, state, out))

    def _after_commit(self, action: Callable[[bool], None]) -> None:
        self._actions.append(action)
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        if self._flush_handle is None and not self._stopped:
            self._flush_handle = asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        """Group commit: write the iteration's journal entries once, then act on them."""
        self._flush_handle = None
        dirty, self._dirty = self._dirty, set()
        durable = self._commit()
        actions, self._actions = self._actions, []
        for action in actions:
            try:
                action(durable)
            except Exception:
                log.exception("coordinator action failed")
        for state in dirty:
            if state.acknowledged:
                state.acknowledged = False
            elif state.final is None and not state.rejected:
                self._progress(state)

    def _commit(self) -> bool:
        journal = self.journal
        if journal is None:
            return False
        try:
            journal.commit()
        except JournalError as exc:
            self.journal_errors += 1
            log.error("%s", exc)
            return False
        return True

    # ------------------------------------------------------------------ instructions

    def _carry_out(self, state: _Molecule, out: list[Instruction], durable: bool = True) -> None:
        if state.rejected or self._stopped:
            return
        for ins in out:
            if isinstance(ins, StartPacket):
                self._submit(state, ins.packet_id, ins.inputs, ins.prefer_reactor_of,
                             ins.attempt, ins.deadline, None)  # fmt: skip
            elif isinstance(ins, RetryPacket):
                self._submit(state, ins.packet_id, ins.inputs, ins.prefer_reactor_of,
                             ins.attempt, ins.deadline, ins.avoid_reactor_hint)  # fmt: skip
            elif isinstance(ins, CancelPacket):
                state.inflight.pop(ins.packet_id, None)
            elif isinstance(ins, ScheduleTimer):
                self._schedule_timer(state, ins.at)
            elif isinstance(ins, ConvertBond):
                log.info("molecule %s: healing converted %s -> %s from %s to %s",
                         state.molecule_id, ins.bond.source, ins.bond.target, ins.old_type,
                         ins.new_type)  # fmt: skip
            elif isinstance(ins, FinishMolecule):
                self._finalize(state, ins)
            elif isinstance(ins, ReportProgress):
                pass  # pushes are coalesced per commit (_flush)

    def _wire_id(self, state: _Molecule, packet_id: str) -> str:
        wire = f"{state.molecule_id}:{state.run_id}:{packet_id}"
        if len(wire) <= PACKET_ID_MAX_LEN:
            return wire
        digest = hashlib.sha256(f"{state.molecule_id}\0{packet_id}".encode()).hexdigest()
        return f"molecule:{state.run_id}:{digest[:40]}"

    def _submit(
        self,
        state: _Molecule,
        packet_id: str,
        inputs: Mapping[str, Any],
        prefer_of: str | None,
        attempt: int,
        deadline: float | None,
        avoid: str | None,
    ) -> None:
        run = state.run
        if run.finished or run.state_of(packet_id) not in ACTIVE_STATES:
            return
        packet = run.molecule.packet(packet_id)
        timeout_ms = effective_timeout_ms(packet.group, packet.element, packet.timeout_ms)
        if deadline is not None:
            left = int((deadline - time.time()) * 1000)
            if left <= 0:
                return  # the molecule's timer stops the run at its deadline
            timeout_ms = min(timeout_ms, left + DEADLINE_SLACK_MS)
        registry = self.gateway.registry
        prefs = None
        if avoid is not None and any(
            r.reactor_id != avoid for r in registry.candidates(packet.group, packet.element)
        ):
            prefs = RoutingPreferences(avoid_reactors=[avoid])
        prefer = state.reactor_of.get(prefer_of) if prefer_of is not None else None
        prefer = prefer or state.locality.get(packet_id)
        token = next(self._tokens)
        state.inflight[packet_id] = token
        msg = Submit(
            protocol_version=PROTOCOL_VERSION, message_id=new_message_id(), timestamp=now_ms(),
            source_id=self.gateway.gateway_id, priority=packet.priority,
            payload=SubmitPayload(
                packet=Packet(
                    group=cast(Any, packet.group), element=packet.element,
                    id=self._wire_id(state, packet_id), data=Raw(encode_json(packet.data)),
                    priority=packet.priority, timeout_ms=timeout_ms,
                    dependencies=state.incoming[packet_id],
                    metadata={"inputs": dict(inputs), "molecule_id": state.molecule_id,
                              "molecule_packet_id": packet_id, "attempt": attempt},
                ),
                routing_preferences=prefs,
            ),
        )  # fmt: skip
        on_frame = functools.partial(self._on_reply, state, packet_id, token)
        try:
            self.gateway.submit_internal(msg, on_frame, prefer=prefer)
        except Exception:  # a gateway bug fails this packet (retryable), not the molecule
            log.exception("submitting packet %s of molecule %s failed", packet_id,
                          state.molecule_id)  # fmt: skip
            on_frame(encode(error_envelope(
                InternalError("Internal server error"), message_id=new_message_id(),
                now_ms=now_ms(), source_id=self.gateway.gateway_id,
                correlation_id=msg.message_id, packet_id=msg.payload.packet.id,
            )))  # fmt: skip

    def _on_reply(self, state: _Molecule, packet_id: str, token: int, frame: bytes) -> None:
        """The RESULT/ERROR of one submitted packet (possibly called inside submit)."""
        if state.inflight.get(packet_id) != token:
            return  # cancelled, retried or superseded: a late reply
        del state.inflight[packet_id]
        run = state.run
        if run.finished or state.rejected or self._stopped:
            return
        now = time.time()
        try:
            msg = decode_one(frame)
        except PacketFlowError as err:
            msg = None
            log.error("undecodable reply for packet %s: %s", packet_id, err)
        try:
            if isinstance(msg, Result):
                raw = bytes(msg.payload.data)
                meta = msg.payload.processing_metadata or {}
                reactor = _str_or_none(meta.get("reactor_id"))
                if reactor is not None:
                    state.reactor_of[packet_id] = reactor
                packet = run.molecule.packet(packet_id)
                self._observe(f"{packet.group}:{packet.element}", meta.get("total_duration_ms"))
                out = run.packet_succeeded(packet_id, decode_json(raw), now, reactor_id=reactor)
                event = JournalEvent("packet_succeeded", packet_id, now, reactor, None, raw)
            else:
                if isinstance(msg, Error):
                    error = msgspec.to_builtins(msg.payload)
                    retryable = msg.payload.retry_possible
                    reactor = _str_or_none((msg.payload.reactor_info or {}).get("reactor_id"))
                else:
                    error = InternalError("Internal server error").to_payload()
                    retryable, reactor = True, None
                if reactor is not None:
                    state.reactor_of[packet_id] = reactor
                out = run.packet_failed(packet_id, error, retryable, now, reactor_id=reactor)
                event = JournalEvent("packet_failed", packet_id, now, reactor, retryable,
                                     encode_json(error))  # fmt: skip
        except IllegalMoleculeEvent as exc:
            log.error("molecule %s: %s", state.molecule_id, exc)
            return
        self._event(state, event, out, now)

    def _schedule_timer(self, state: _Molecule, at: float) -> None:
        if state.timer is not None:
            state.timer.cancel()
        delay = max(0.0, at - time.time())
        state.timer = asyncio.get_running_loop().call_later(delay, self._on_timer, state)

    def _on_timer(self, state: _Molecule) -> None:
        state.timer = None
        run = state.run
        if run.finished or self._stopped:
            return
        now = time.time()
        if run.deadline is not None and now < run.deadline:
            self._schedule_timer(state, run.deadline)  # the loop's clock ran a hair early
            return
        self._event(state, JournalEvent("timer_fired", None, now), run.timer_fired(now), now)

    def _cancel_timers(self, state: _Molecule) -> None:
        for handle in (state.timer, state.push_timer):
            if handle is not None:
                handle.cancel()
        state.timer = state.push_timer = None

    # ------------------------------------------------------------------ pushes

    def _push(self, state: _Molecule, payload: dict[str, Any]) -> None:
        init = state.initiator
        if init is None:
            return
        if not self._send(init.sink, payload, init.message_id, init.source_id):
            state.initiator = None  # the initiator left; the molecule goes on

    def _progress(self, state: _Molecule) -> None:
        """Push progress now, or for a large molecule at most every PROGRESS_MIN_INTERVAL_S
        (a trailing push carries the latest state)."""
        if state.initiator is None:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        if len(state.run.molecule.packets) > PROGRESS_FULL_RATE_MAX_PACKETS:
            wait = state.last_push + PROGRESS_MIN_INTERVAL_S - now
            if wait > 0:
                if state.push_timer is None:
                    state.push_timer = loop.call_later(wait, self._trailing_push, state)
                return
        state.last_push = now
        self._push(state, self.describe(state, "progress"))

    def _trailing_push(self, state: _Molecule) -> None:
        state.push_timer = None
        if state.final is None and not self._stopped:
            state.last_push = asyncio.get_running_loop().time()
            self._push(state, self.describe(state, "progress"))

    def _finalize(self, state: _Molecule, finish: FinishMolecule) -> None:
        if state.final is not None:
            return
        self._cancel_timers(state)
        state.inflight.clear()
        kind = "abort" if finish.status == "aborted" else "complete"
        payload = self.describe(state, kind)
        state.final = payload
        mid = state.molecule_id
        if self.active.get(mid) is state:
            del self.active[mid]
        self.finished[mid] = state
        self.finished.move_to_end(mid)
        while len(self.finished) > MAX_FINISHED_MOLECULES:
            self.finished.popitem(last=False)
        self._push(state, payload)
        state.initiator = None
        for fut in state.waiters:
            if not fut.done():
                fut.set_result(payload)
        state.waiters.clear()

    # ------------------------------------------------------------------ descriptions

    def describe(self, state: _Molecule, kind: str) -> dict[str, Any]:
        """The COORDINATE payload describing a molecule now (wire example "Molecular
        Execution Progress Updates"), with results once it finished."""
        return describe_run(state.run, kind, coordinator_id=self.gateway.gateway_id,
                            run_id=state.run_id, initiated_by=state.initiated_by)  # fmt: skip

    def _describe_stored(self, stored: StoredMolecule) -> dict[str, Any]:
        run, _ = _Run.restore(stored.checkpoint, time.time())
        kind = "abort" if stored.status == "aborted" else "complete"
        return describe_run(cast(_Run, run), kind, coordinator_id=self.gateway.gateway_id,
                            run_id=stored.run_token,
                            initiated_by=str(stored.meta.get("initiated_by")))  # fmt: skip

    def _stored(self, molecule_id: str) -> StoredMolecule | None:
        journal = self.journal
        if journal is None:
            return None
        try:
            return journal.load(molecule_id)
        except JournalError as exc:
            log.error("%s", exc)
            return None

    def summaries(self, limit: int) -> list[dict[str, Any]]:
        """Running molecules, then the most recently finished ones (``GET /v1/molecules``)."""
        out: list[dict[str, Any]] = []
        states = itertools.chain(self.active.values(), reversed(self.finished.values()))
        for state in itertools.islice(states, limit):
            run = state.run
            counts: dict[str, int] = {}
            for p in run.molecule.packet_ids:
                s = run.state_of(p)
                counts[s] = counts.get(s, 0) + 1
            out.append({
                "molecule_id": state.molecule_id, "run_id": state.run_id,
                "status": run.status or "running", "packets": len(run.molecule.packets),
                "packet_states": counts, "started_at": _ms(run.started_at),
                "finished_at": _ms(run.finished_at),
            })  # fmt: skip
        return out

    # ------------------------------------------------------------------ resume

    def _resume(self, stored: StoredMolecule) -> None:
        """Rebuild a molecule from its checkpoint and events, then resume it: finished
        packets keep their results; packets that were on a reactor are resubmitted under
        the same packet id once reactors serve their elements again."""
        checkpoint = stored.checkpoint
        base, _ = _Run.restore(checkpoint, float(checkpoint.get("last_now") or time.time()))
        run = cast(_Run, base)
        for event in stored.events:
            _replay(run, event)
        now = time.time()
        restored, out = _Run.restore(run.snapshot(), now)
        run = cast(_Run, restored)
        meta = stored.meta
        state = _Molecule(
            molecule_id=stored.molecule_id, run=run, run_id=stored.run_token,
            initiated_by=str(meta.get("initiated_by") or new_message_id()), initiator=None,
            incoming=blocking_sources(run.molecule.packet_ids, run.molecule.bonds),
            locality=dict(meta.get("locality") or {}),
        )  # fmt: skip
        for pid, track in run.snapshot()["packets"].items():
            if isinstance(track.get("reactor_id"), str):
                state.reactor_of[pid] = track["reactor_id"]
        self.active[state.molecule_id] = state
        journal = self.journal
        if journal is not None:
            journal.checkpoint(state.molecule_id, run.snapshot(), now)
        starts = [i for i in out if isinstance(i, StartPacket)]
        rest: list[Instruction] = [i for i in out if not isinstance(i, StartPacket)]
        self._event(state, None, rest, now)
        if starts and not run.finished:
            log.info("molecule %s: resubmitting %d packet(s) once reactors are back",
                     state.molecule_id, len(starts))  # fmt: skip
            state.resume_task = asyncio.get_running_loop().create_task(
                self._resume_when_ready(state, cast(list[Instruction], starts))
            )

    async def _resume_when_ready(self, state: _Molecule, starts: list[Instruction]) -> None:
        """Wait (up to RESUME_WAIT_S) until some reactor serves every element to resubmit:
        reactors re-announce only after they notice the gateway restarted."""
        molecule = state.run.molecule
        kinds = {
            (p.group, p.element)
            for p in (molecule.packet(i.packet_id) for i in starts if isinstance(i, StartPacket))
        }
        supports = self.gateway.registry.supports
        loop = asyncio.get_running_loop()
        deadline = loop.time() + RESUME_WAIT_S
        # The registry has no "reactor announced" hook to wait on, so this polls.
        while not all(supports(g, e) for g, e in kinds) and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(RESUME_POLL_S)
        state.resume_task = None
        if not state.run.finished and not self._stopped:
            self._after_commit(functools.partial(self._carry_out, state, starts))

    # ------------------------------------------------------------------ HTTP

    def add_routes(self, app: web.Application) -> None:
        """``POST /v1/molecules``, ``GET /v1/molecules[/{id}]``, ``DELETE
        /v1/molecules/{id}`` (DESIGN §2)."""
        app.router.add_post("/v1/molecules", self._http_post)
        app.router.add_get("/v1/molecules", self._http_list)
        app.router.add_get("/v1/molecules/{molecule_id}", self._http_get)
        app.router.add_delete("/v1/molecules/{molecule_id}", self._http_delete)

    def _http_error(self, err: PacketFlowError, correlation_id: str | None = None) -> web.Response:
        status = getattr(err, "http_status", None) or _HTTP_STATUS.get(err.code, 500)
        frame = encode(error_envelope(
            err, message_id=new_message_id(), now_ms=now_ms(),
            source_id=self.gateway.gateway_id, correlation_id=correlation_id,
        ))  # fmt: skip
        self.gateway.metrics.errors.labels(err.code).inc()
        return web.Response(body=frame, status=status, content_type="application/json")

    async def _http_post(self, request: web.Request) -> web.Response:
        """Body: a §7.1 structure, a COORDINATE ``initiate`` payload, or the whole COORDINATE
        envelope. 202 {molecule_id, ...} once journaled; ``?wait=true``: the final state."""
        body = await request.read()
        correlation: str | None = None
        try:
            try:
                value = decode_json(body)
            except msgspec.DecodeError as exc:
                raise InvalidMessage(f"Invalid JSON format: {exc}", field="$",
                                     validation_rule="json") from None  # fmt: skip
            if not isinstance(value, dict):
                raise invalid_field("$", "object (a molecule structure or COORDINATE)",
                                    type(value).__name__, "type")  # fmt: skip
            path = ""
            if "message_type" in value:
                msg = decode_one(body)
                if not isinstance(msg, Coordinate):
                    raise invalid_field("message_type", "coordinate", repr(value["message_type"]),
                                        "enum")  # fmt: skip
                correlation = msg.message_id
                value, path = msgspec.to_builtins(msg.payload), "payload"
            kind = value.get("coordination_type", "initiate")
            if kind != "initiate":
                raise invalid_field(_join(path, "coordination_type"), '"initiate"', repr(kind),
                                    "enum")  # fmt: skip
            state = self.initiate(value, path=path, initiator=None,
                                  initiated_by=correlation or new_message_id())  # fmt: skip
            assert state.accepted is not None
            await asyncio.shield(state.accepted)
        except PacketFlowError as err:
            return self._http_error(err, correlation)
        if request.query.get("wait", "").lower() in ("1", "true", "yes"):
            final = await self._wait_final(state)
            return web.json_response(final)
        plan = execution_plan(state.run.molecule)
        return web.json_response({
            "molecule_id": state.molecule_id, "run_id": state.run_id, "status": "accepted",
            "status_url": f"/v1/molecules/{state.molecule_id}", "execution_plan": plan,
        }, status=202)  # fmt: skip

    async def _wait_final(self, state: _Molecule) -> dict[str, Any]:
        if state.final is not None:
            return state.final
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        state.waiters.append(fut)
        return await asyncio.shield(fut)

    async def _http_list(self, request: web.Request) -> web.Response:
        try:
            limit = max(1, min(int(request.query.get("limit", "100")), MAX_FINISHED_MOLECULES))
        except ValueError:
            return self._http_error(invalid_field("limit", "integer", "string", "type"))
        journal = {"path": str(self.journal_path()), "open": self.journal is not None,
                   "commit_errors": self.journal_errors}  # fmt: skip
        return web.json_response({"running": len(self.active), "journal": journal,
                                  "molecules": self.summaries(limit)})  # fmt: skip

    async def _http_get(self, request: web.Request) -> web.Response:
        try:
            payload = self.status(request.match_info["molecule_id"], path="molecule_id")
        except PacketFlowError as err:
            return self._http_error(err)
        return web.json_response(payload)

    async def _http_delete(self, request: web.Request) -> web.Response:
        mid = request.match_info["molecule_id"]
        try:
            state = self.abort(mid, path="molecule_id", reason="aborted over HTTP")
        except PacketFlowError as err:
            return self._http_error(err)
        return web.json_response(await self._wait_final(state))


# ---------------------------------------------------------------- pure helpers


def _required_id(value: Any, path: str) -> str:
    if value is None:
        raise invalid_field(path, "string", "missing", "required_field")
    if not isinstance(value, str) or not value:
        raise invalid_field(path, "non-empty string", type(value).__name__, "type")
    return value


def _unknown(molecule_id: str, path: str) -> UnknownMolecule:
    return UnknownMolecule(
        f"No molecule {molecule_id!r} is known to this gateway",
        field=path, expected_type="the id of a molecule", received_type=repr(molecule_id),
        validation_rule="known_molecule", details={"molecule_id": molecule_id},
    )  # fmt: skip


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _ms(seconds: float | None) -> int | None:
    return None if seconds is None else int(seconds * 1000)


def _retyped(bond: Bond, new_type: str) -> Bond:
    return bond if bond.type == new_type else replace(bond, type=cast(Any, new_type))


def _replay(run: MoleculeRun, event: JournalEvent) -> None:
    """Apply one journaled event to a rebuilt run (its instructions were carried out
    before the crash, or are re-derived by the final restore)."""
    at = event.at
    pid = event.packet_id or ""
    if event.kind == "molecule_started":
        run.start(at)
    elif event.kind == "packet_succeeded":
        run.packet_succeeded(pid, event.decoded(), at, reactor_id=event.reactor_id)
    elif event.kind == "packet_failed":
        run.packet_failed(pid, event.decoded() or {}, bool(event.retryable), at,
                          reactor_id=event.reactor_id)  # fmt: skip
    elif event.kind == "abort_requested":
        body = event.decoded() or {}
        run.abort(at, str(body.get("reason") or "aborted"))
    elif event.kind == "timer_fired":
        run.timer_fired(at)
    # "packet_submitted" rows are an audit trail only.


def describe_run(
    run: _Run, kind: str, *, coordinator_id: str, run_id: str, initiated_by: str
) -> dict[str, Any]:
    """A COORDINATE payload for ``run``: ``execution_state`` is the planner's progress
    (wire example shape), with ``estimated_completion``, ``performance_metrics`` and
    ``coordination_metadata``; once finished also ``results`` (every succeeded packet's
    result data), ``execution_state.errors`` and ``error`` (why it did not succeed)."""
    now = time.time()
    report = run.report(now)
    elapsed = report.get("elapsed_ms") or 0
    remaining = report.get("estimated_remaining_ms")
    done_keys = ("completed_packets", "failed_packets", "skipped_packets", "aborted_packets")
    finished = sum(len(report.get(k, [])) for k in done_keys)
    if run.finished:
        eta = _ms(run.finished_at)
    elif remaining is not None:
        eta = int(now * 1000) + int(remaining)
    else:
        eta = None
    payload: dict[str, Any] = {
        "coordination_type": kind,
        "molecule_id": run.molecule.molecule_id,
        "status": run.status or ("running" if run.started_at is not None else "pending"),
        "execution_state": report,
        "estimated_completion": eta,
        "performance_metrics": {
            "elapsed_time_ms": elapsed,
            "estimated_remaining_ms": remaining,
            "throughput_packets_per_second": round(finished * 1000 / elapsed, 3)
            if elapsed > 0 else None,
        },
        "coordination_metadata": {
            "coordinator_id": coordinator_id, "run_id": run_id, "initiated_by": initiated_by,
            "started_at": _ms(run.started_at), "finished_at": _ms(run.finished_at),
            "estimated_completion": eta, "retry_count": report.get("retry_attempts", 0),
        },
    }  # fmt: skip
    if run.finished:
        errors = run.errors
        report["errors"] = errors
        report["reason"] = run.reason
        payload["results"] = run.results
        if run.status == "timeout":
            payload["error"] = GatewayTimeout(
                f"Molecule {run.molecule.molecule_id!r} did not finish within its timeout_ms",
                details={"reason": "timeout", "timeout_ms": run.molecule.properties.timeout_ms},
                context={"molecule_id": run.molecule.molecule_id},
            ).to_payload()  # fmt: skip
        elif run.status in ("failed", "partial"):
            relevant = [p for p in errors if not run.is_observer(p)]
            if relevant:
                payload["error"] = errors[relevant[0]]
    return payload
