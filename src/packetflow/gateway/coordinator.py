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
- A commit that fails (disk full, file locked or read-only) stops every molecule whose
  changes it held: none of them is acted on, the molecule fails with PF503 saying why
  (its initiator gets the ``complete``), and its finish is written again until a commit
  succeeds, so it never resumes after a restart. The coordinator itself goes on; new
  molecules are refused with PF503 until the journal can be written again.
- Which reactor each packet went to is journaled (``packet_dispatched``, reported by the
  gateway at dispatch). On resume a packet that was running on reactor R waits up to
  ``resume_grace_s`` for R to re-announce and is pinned to R, which answers it from its
  idempotency window instead of another reactor running it a second time.
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
from ..protocol.chemical_health import BondEnd, ChemicalHistory
from ..protocol.errors import (
    BondFormationFailed,
    GatewayTimeout,
    InternalError,
    InvalidPacket,
    NoReactorAvailable,
    OptimizationFailed,
    Overloaded,
    PacketFlowError,
    ServiceUnavailable,
    counts_against_reactor,
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
from ..protocol.molecule_checks import (
    ReactorOffer,
    parse_checks,
    reservation_needs,
    run_checks,
    structural_result,
)
from ..protocol.molecules import (
    BOND_ALIASES,
    Bond,
    Molecule,
    MoleculePacket,
    blocking_sources,
    execution_plan,
    parse_molecule,
    parse_requirements,
    validate_molecule,
)
from ..protocol.optimizer import Observed, Suggestions, observed_from_snapshot, suggest
from ..protocol.packets import PACKET_ID_MAX_LEN, default_priority, effective_timeout_ms
from ..protocol.planner import (
    ACTIVE_STATES,
    AdjustBonds,
    CancelPacket,
    ConvertBond,
    FinishMolecule,
    IllegalMoleculeEvent,
    Instruction,
    MoleculeRun,
    ReportProgress,
    RetryPacket,
    ScheduleCheck,
    ScheduleTimer,
    StartPacket,
)
from ..protocol.principals import GATEWAY
from ..protocol.reaction import OPTIMIZATIONS_KEY
from ..security.guard import principal_of, request_principal
from ..transport import new_message_id, now_ms
from .http import read_json_body
from .journal import (
    AsyncJournal,
    JournalError,
    JournalEvent,
    MoleculeJournal,
    SqliteJournal,
    StoredMolecule,
)
from .reservations import DEFAULT_HOLD_MS, MAX_HOLD_MS, Reservations
from .views import MoleculeAccepted, MoleculeList, MoleculeStatus, as_view, view_response

if TYPE_CHECKING:
    from ..transport import Peer
    from .server import Gateway

log = logging.getLogger("packetflow.gateway.coordinator")

# ---------------------------------------------------------------- limits (STYLE 5)

# DESIGN §7 fixes no size. protocol.molecules.MAX_MOLECULE_PACKETS (1000) bounds the
# planner's per-event cost; the gateway allows 1024 so that the issue's benchmark shape
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
# How long the row naming the reactor a packet was dispatched to may wait for a commit.
# A packet that answers sooner has it written with its result (one commit per packet, not
# two); one that runs longer has it on disk this long after dispatch. A crash inside that
# window resumes the packet on any reactor, as one before any dispatch row would: it may
# run twice (at-least-once), never be lost.
DISPATCH_COMMIT_DELAY_S: Final = 0.01
# What a molecule stopped by a journal failure tells its initiator to wait (PF503): about
# one §10.3.1 initial backoff, the time a locked or full disk may take to be cleared.
JOURNAL_RETRY_DELAY_MS: Final = 1000
# COORDINATE kinds about one existing molecule: read (or abort) it, checked against its owner.
_ABOUT_ONE: Final = ("status", "progress", "abort")
# Reads of other gateways' journal entries under way at once (cluster mode, /ws and HTTP);
# past it a request gets PF004, so clients sending thousands cannot pile up NATS reads.
MAX_SHARED_READS: Final = 256
# Progress rate limit for large molecules (see the module docstring).
PROGRESS_FULL_RATE_MAX_PACKETS: Final = 100
PROGRESS_MIN_INTERVAL_S: Final = 0.05
# Events between journal checkpoints of one running molecule: bounds replay work and the
# event log of a long molecule (a replayed event costs a few µs).
CHECKPOINT_EVERY_EVENTS: Final = 5000
# Element kinds whose observed durations are kept for estimates (reserve, optimize).
HISTORY_MAX_KINDS: Final = 1024
OPTIMIZATION_TYPES: Final = ("bond_strength", "locality", "parallelization")

_HTTP_STATUS: Final = {"PF001": 400, "PF002": 400, "PF003": 503, "PF004": 429, "PF102": 400,
                       "PF403": 403, "PF503": 503, "PF504": 504}  # fmt: skip


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
    # False (payload.progress_updates): only the acknowledgement and the final complete
    # or abort are pushed, which saves the gateway and the client a frame per step.
    progress: bool = True

    @classmethod
    def of(cls, peer: Peer, msg: Coordinate) -> _Initiator:
        return cls(peer, msg.message_id, msg.source_id, msg.payload.progress_updates is not False)


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
    # Packet id -> the §7.4 kinds applied to it (sent as packet.metadata.optimizations, so
    # its reactor reports chemical_analysis.optimization_applied: protocol/reaction.py).
    optimized: dict[str, list[str]] = field(default_factory=dict)
    timer: asyncio.TimerHandle | None = None
    check_timer: asyncio.TimerHandle | None = None  # §10.4.2 slowness mark
    push_timer: asyncio.TimerHandle | None = None
    last_push: float = 0.0
    acknowledged: bool = False  # the ack just sent carries the state: skip one progress
    since_checkpoint: int = 0
    rejected: bool = False
    accepted: asyncio.Future[None] | None = None
    waiters: list[asyncio.Future[dict[str, Any]]] = field(default_factory=list)
    final: dict[str, Any] | None = None
    resume_task: asyncio.Task[None] | None = None
    ack_kind: str = "initiate"  # `execute` (§7.3 phase 3) acknowledges as itself
    owner: str | None = None  # the principal that started it (DESIGN §8)
    id_field: str = "molecule_id"  # where the start's request named it, for errors after

    def meta(self) -> dict[str, Any]:
        return {"initiated_by": self.initiated_by, "locality": self.locality,
                "optimized": self.optimized, "owner": self.owner}  # fmt: skip


# ---------------------------------------------------------------- the coordinator


class MoleculeCoordinator:
    """Runs molecules for one gateway; see the module docstring."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.active: dict[str, _Molecule] = {}
        self.finished: OrderedDict[str, _Molecule] = OrderedDict()
        self.journal: MoleculeJournal | None = None
        # The same journal when it is networked (NATS), decided once: an isinstance check
        # against a runtime Protocol costs ~30 µs, too much for every commit.
        self._async_journal: AsyncJournal | None = None
        self.journal_errors = 0
        self.journal_failure: str | None = None  # why the last failed commit failed
        # Molecules stopped by a failed commit whose finish is not written yet: written
        # again with every commit until one succeeds, so a molecule its initiator was told
        # had failed never resumes after a restart. At most one entry per molecule.
        self._unwritten: dict[str, _Molecule] = {}
        self._rewrite_handle: asyncio.TimerHandle | None = None
        self._actions: list[Callable[[bool], None]] = []
        self._flush_handle: asyncio.Handle | None = None
        self._lazy_handle: asyncio.TimerHandle | None = None  # DISPATCH_COMMIT_DELAY_S
        self._dirty: set[_Molecule] = set()
        self._recorded: set[_Molecule] = set()  # journaled this iteration, nothing to push
        self._tokens = itertools.count(1)
        self._history: dict[str, list[float]] = {}  # kind -> [count, mean ms]
        # §9.1.3 chemical system health and §9.2 molecular validation (gateway/monitor.py).
        self.history = ChemicalHistory()
        self._stopped = False
        self.holds = Reservations(gateway)  # §7.3 phase 2 (gateway/reservations.py)
        self._tasks: set[asyncio.Task[None]] = set()
        self._shared_reads = 0  # _load_shared reads under way (MAX_SHARED_READS)
        self._committing = False  # an AsyncJournal commit is under way
        self._flush_again = False  # ... and more was buffered meanwhile

    # ------------------------------------------------------------------ lifecycle

    def journal_path(self) -> Path:
        config = self.gateway.config
        return Path(config.journal_path or Path(config.data_dir) / "molecules.sqlite3")

    async def start(self) -> None:
        """Open the journal and resume every unfinished molecule in it."""
        self._stopped = False
        journal: MoleculeJournal | None = self.gateway.cluster.molecule_journal(self)
        if journal is None:
            journal = SqliteJournal(self.journal_path(),
                                    synchronous=self.gateway.config.journal_sync,
                                    cipher=self._journal_cipher())  # fmt: skip
        try:
            if isinstance(journal, AsyncJournal):
                stored = await journal.open_async()
            else:
                stored = journal.open()
        except JournalError as exc:
            # Packets still route; molecules are refused (PF503) rather than run unjournaled.
            log.error("%s; molecules are disabled", exc)
            return
        self.journal = journal
        self._async_journal = journal if isinstance(journal, AsyncJournal) else None
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

    def _journal_cipher(self) -> Any:
        """AES-256-GCM at rest when ``--journal-key-file`` names a key (security/crypto)."""
        key_file = getattr(self.gateway.config, "journal_key_file", None)
        if key_file is None:
            return None
        from ..security.crypto import AtRestCipher, read_secret

        return AtRestCipher(read_secret(key_file))

    async def stop(self) -> None:
        """Stop timers and write what is buffered; unfinished molecules stay in the journal
        and resume at the next start."""
        self._stopped = True
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        for handle in (self._rewrite_handle, self._lazy_handle):
            if handle is not None:
                handle.cancel()
        self._rewrite_handle = self._lazy_handle = None
        self._rewrite_finishes()  # close() commits them if the journal works again
        self._unwritten.clear()
        for state in list(self.active.values()):
            self._cancel_timers(state)
            if state.resume_task is not None:
                state.resume_task.cancel()
        self._actions.clear()
        self.holds.stop()
        for task in list(self._tasks):
            task.cancel()
        if self.journal is not None:
            self.journal.close()
            self.journal = self._async_journal = None

    # ------------------------------------------------------------------ WebSocket

    def on_message(self, peer: Peer, msg: Coordinate) -> None:
        """One COORDINATE from a client: every path ends in at least one answer."""
        mid = msg.payload.molecule_id
        if (
            msg.payload.coordination_type in _ABOUT_ONE
            and mid
            and self._async_journal is not None
            and not self._runs_here(mid)
        ):
            # Another gateway of the cluster runs (or ran) it: read its journal entry
            # first, for its owner and its state (HTTP does the same).
            task = asyncio.get_running_loop().create_task(self._on_shared(peer, msg, mid))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return
        self._on_message(peer, msg)

    async def _on_shared(self, peer: Peer, msg: Coordinate, molecule_id: str) -> None:
        try:
            stored = await self._entry_for(molecule_id)
        except PacketFlowError as err:  # PF004 past MAX_SHARED_READS
            self._ws_error(peer, msg, err)
            return
        self._on_message(peer, msg, stored)

    def _runs_here(self, molecule_id: str) -> bool:
        return molecule_id in self.active or molecule_id in self.finished

    async def _entry_for(self, molecule_id: str) -> StoredMolecule | None:
        """The journal entry of a molecule this process does not hold (it restarted, or
        another gateway runs or ran it), read once, its owner learned from it; None when
        it is held here or nowhere."""
        if self._runs_here(molecule_id):
            return None
        stored = self._stored(molecule_id) or await self._load_shared(molecule_id)
        self._learn_owner(molecule_id, stored)
        return stored

    async def _load_shared(self, molecule_id: str) -> StoredMolecule | None:
        """A molecule's entry in the shared (NATS) journal, whichever gateway wrote it.
        Raises PF004 when MAX_SHARED_READS are under way already."""
        journal = self._async_journal
        if journal is None:
            return None
        if self._shared_reads >= MAX_SHARED_READS:
            raise Overloaded(
                f"{self._shared_reads} reads of the cluster's molecule journal are under way; "
                "retry later", retry_delay_ms=JOURNAL_RETRY_DELAY_MS,
                details={"limit": MAX_SHARED_READS},
            )  # fmt: skip
        self._shared_reads += 1
        try:
            return await journal.load_async(molecule_id)
        except JournalError as exc:
            log.error("%s", exc)
            return None
        finally:
            self._shared_reads -= 1

    def _on_message(
        self, peer: Peer, msg: Coordinate, stored: StoredMolecule | None = None
    ) -> None:
        kind = msg.payload.coordination_type
        handlers: dict[str, Callable[[Peer, Coordinate], None]] = {
            "initiate": self._ws_initiate,
            "validate": self._ws_validate,
            "reserve": self._ws_reserve,
            "execute": self._ws_execute,
            "progress": functools.partial(self._ws_status, stored=stored),
            "status": functools.partial(self._ws_status, stored=stored),
            "abort": self._ws_abort,
            "optimize": self._ws_optimize,
        }
        try:
            # DESIGN §8: who may start, read or abort which molecule (security/guard.py).
            principal = principal_of(peer)
            if principal is not GATEWAY:
                mid = msg.payload.molecule_id
                if stored is None and kind in _ABOUT_ONE and mid and not self._runs_here(mid):
                    self._learn_owner(mid, self._stored(mid))  # e.g. after a restart
                denied = self.gateway.guard.check_coordinate(
                    principal, peer, kind, msg.payload.molecule_id, time.monotonic()
                )
                if denied is not None:
                    raise denied
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
        initiator = _Initiator.of(peer, msg)
        self.initiate(obj, path="payload", initiator=initiator, initiated_by=msg.message_id,
                      by=peer)  # fmt: skip

    def _ws_status(self, peer: Peer, msg: Coordinate, stored: StoredMolecule | None = None) -> None:
        mid = _required_id(msg.payload.molecule_id, "payload.molecule_id")
        payload = self._status_of(mid, stored, path="payload.molecule_id")
        payload["coordination_type"] = msg.payload.coordination_type
        self._send(peer, payload, msg.message_id, msg.source_id)

    def _ws_abort(self, peer: Peer, msg: Coordinate) -> None:
        mid = _required_id(msg.payload.molecule_id, "payload.molecule_id")
        reason = (msg.payload.coordination_metadata or {}).get("reason")
        reason = str(reason) if reason else f"aborted by {msg.source_id}"
        state = self.abort(mid, path="payload.molecule_id", reason=reason)
        self.gateway.guard.molecule_event(principal_of(peer), peer, "molecule_abort", mid)

        def answer(durable: bool) -> None:
            payload = dict(state.final) if state.final else self.describe(state, "abort")
            self._send(peer, payload, msg.message_id, msg.source_id)

        self._after_commit(answer)

    def _owned(self, molecule_id: str, target: object) -> None:
        """Remember who started ``molecule_id`` (status/abort are theirs) and audit it."""
        principal = principal_of(target)
        self.gateway.guard.own("molecule", molecule_id, principal.id)
        self.gateway.guard.molecule_event(principal, target, "molecule_start", molecule_id)

    def _learn_owner(self, molecule_id: str, stored: StoredMolecule | None) -> None:
        """Before a read or abort of a molecule this gateway did not start in this process
        (it restarted, or another gateway ran it): its owner comes from the journal."""
        owner = None if stored is None else stored.meta.get("owner")
        guard = self.gateway.guard
        if isinstance(owner, str) and guard.owner_of("molecule", molecule_id) is None:
            guard.own("molecule", molecule_id, owner)

    def _http_denied(self, request: web.Request, kind: str,
                     molecule_id: str | None) -> web.Response | None:  # fmt: skip
        principal = request_principal(request)
        if principal is GATEWAY:
            return None
        err = self.gateway.guard.check_coordinate(principal, _HttpWho(request), kind,
                                                  molecule_id, time.monotonic())  # fmt: skip
        return None if err is None else self._http_error(err)

    def _ws_validate(self, peer: Peer, msg: Coordinate) -> None:
        payload = self.validate(msgspec.to_builtins(msg.payload), path="payload")
        self._send(peer, payload, msg.message_id, msg.source_id)

    def _ws_reserve(self, peer: Peer, msg: Coordinate) -> None:
        """§7.3 phase 2: hold capacity on reactors (rm:allocate there), then answer."""
        obj = msgspec.to_builtins(msg.payload)
        molecule, needs, assignment, hold_ms = self._reservation_plan(obj, "payload")

        async def hold() -> None:
            try:
                reservation = await self.holds.reserve(
                    molecule.molecule_id, molecule.to_dict(), needs, assignment,
                    hold_ms=hold_ms, run_ms=molecule.properties.timeout_ms, path="payload",
                )  # fmt: skip
            except PacketFlowError as err:
                self._ws_error(peer, msg, err)
                return
            except Exception:  # a bug costs this request one PF500, not the connection
                log.exception("reserving for molecule %s failed", molecule.molecule_id)
                self._ws_error(peer, msg, InternalError("Internal server error"))
                return
            self._owned(molecule.molecule_id, peer)
            estimated = {p.id: self.expected_ms(p) for p in molecule.packets}
            self._send(peer, {
                "coordination_type": "reserve", "molecule_id": molecule.molecule_id,
                "status": "reserved",
                "resource_reservations": [lease.to_dict(estimated)
                                          for lease in reservation.leases],
                "coordination_metadata": {"expires_at": reservation.expires_at,
                                          "hold_ms": hold_ms, "assignment": assignment},
            }, msg.message_id, msg.source_id)  # fmt: skip

        task = asyncio.get_running_loop().create_task(hold())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _ws_execute(self, peer: Peer, msg: Coordinate) -> None:
        """§7.3 phase 3: run a reserved molecule (by ``molecule_id``) or a structure; the
        answer is the initiate acknowledgement, then progress and complete as for
        ``initiate``."""
        obj = msgspec.to_builtins(msg.payload)
        initiator = _Initiator.of(peer, msg)
        if "molecular_structure" not in obj and "packets" not in obj:
            mid = _required_id(obj.get("molecule_id"), "payload.molecule_id")
            held = self.holds.get(mid)
            if held is None or held.executing:
                raise invalid_field("payload.molecule_id", "the id of a reserved molecule "
                                    "(or a molecular_structure to run)", repr(mid),
                                    "reserved_molecule")  # fmt: skip
            denied = self.gateway.guard.check_owner(principal_of(peer), peer, "molecule", mid,
                                                    "payload.molecule_id", "execute")  # fmt: skip
            if denied is not None:
                raise denied
            obj = {"molecule_id": mid, "molecular_structure": held.structure}
        self.initiate(obj, path="payload", initiator=initiator, initiated_by=msg.message_id,
                      by=peer, ack_kind="execute")  # fmt: skip

    def _ws_optimize(self, peer: Peer, msg: Coordinate) -> None:
        obj = msgspec.to_builtins(msg.payload)
        payload = self.optimize(obj, path="payload")
        if not payload["apply"]:
            self._send(peer, payload, msg.message_id, msg.source_id)
            return
        mid = payload["molecule_id"]

        def answer(durable: bool) -> None:
            # "applied" only once the new checkpoint is journaled (DESIGN §6).
            if durable:
                self._send(peer, payload, msg.message_id, msg.source_id)
                return
            why = self.journal_failure or "the journal is not open"
            self._ws_error(peer, msg, ServiceUnavailable(
                f"The optimization of molecule {mid!r} could not be journaled ({why}); "
                "the molecule was stopped", retry_delay_ms=JOURNAL_RETRY_DELAY_MS,
                details={"reason": "journal_unavailable", "journal_error": why},
            ))  # fmt: skip

        self._after_commit(answer)

    # ------------------------------------------------------------------ requests

    def _validated(self, obj: Mapping[str, Any], path: str, *, support: bool = True) -> Molecule:
        """§7.3 phase 1 on a structure or an initiate payload. Raises PF002/PF102; with
        ``support`` also PF003 (an element no reactor serves) and PF501 (a packet needs
        more than any reactor serving it announced)."""
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
        if not support:
            return molecule
        try:
            validate_molecule(molecule, supported=self.gateway.registry.supports)
            if any(p.resources for p in molecule.packets):
                (resources,) = run_checks(molecule, ["resource_requirements"], self._offers())
                if resources.error is not None:
                    raise resources.error
        except PacketFlowError as err:
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
        by: object,
        ack_kind: str = "initiate",
    ) -> _Molecule:
        """Validate and start a molecule for the principal of ``by`` (a peer or an HTTP
        requester), its owner. The acknowledgement (and every packet) waits for the
        journal commit; ``state.accepted`` resolves then (PF503 if it failed).

        Raises PF002/PF102/PF003 for a bad molecule, MoleculeRunning for an id already
        running, PF004 past MAX_ACTIVE_MOLECULES, PF503 before ``start``.
        """
        molecule = self._validated(obj, path)
        mid = molecule.molecule_id
        shared = self._async_journal
        elsewhere = None if shared is None or mid in self.active else shared.claimed_by(mid)
        if mid in self.active or elsewhere is not None:
            # Across gateways too: a second run of an id running elsewhere would replace
            # that run's journal entry and run its finished packets again.
            raise self._running(mid, _join(path, "molecule_id"), elsewhere)
        if len(self.active) >= MAX_ACTIVE_MOLECULES:
            raise Overloaded(f"{len(self.active)} molecules are running; retry later",
                             retry_delay_ms=1000)  # fmt: skip
        journal = self.journal
        if journal is None or self._stopped:
            raise ServiceUnavailable("The molecule coordinator is not running",
                                     retry_delay_ms=1000)  # fmt: skip
        now = time.time()
        expected = {k: v for p in molecule.packets
                    if (v := self.expected_ms(p)) is not None
                    for k in [f"{p.group}:{p.element}"]}  # fmt: skip
        run = _Run(molecule, now, expected)
        state = _Molecule(
            molecule_id=mid, run=run, run_id=os.urandom(4).hex(), initiated_by=initiated_by,
            initiator=initiator, incoming=blocking_sources(molecule.packet_ids, molecule.bonds),
            accepted=asyncio.get_running_loop().create_future(), ack_kind=ack_kind,
            owner=principal_of(by).id, id_field=_join(path, "molecule_id"),
        )  # fmt: skip
        held = self.holds.executing(mid)
        if held is not None:  # run where the capacity is held (§7.3 phase 2)
            state.locality.update(held.assignment)
        self.finished.pop(mid, None)
        self._unwritten.pop(mid, None)  # the new run's row replaces the old one
        self.active[mid] = state
        journal.begin(mid, state.run_id, run.snapshot(), state.meta(), now)
        self._owned(mid, by)
        # The acknowledgement goes first, then the packets the start issues.
        self._after_commit(functools.partial(self._acknowledge, state))
        self._event(state, JournalEvent("molecule_started", None, now), run.start(now), now)
        return state

    def _running(self, mid: str, field: str, elsewhere: str | None) -> MoleculeRunning:
        """``mid`` names a run under way, here or on gateway ``elsewhere``."""
        where = "" if elsewhere is None else f" on gateway {elsewhere}"
        there = "" if elsewhere is None else " there"
        return MoleculeRunning(
            f"Molecule {mid!r} is already running{where}; abort it{there} or use another "
            "molecule_id",
            field=field, expected_type="an id not running", received_type=repr(mid),
            validation_rule="unique_running",
            details={"molecule_id": mid, "gateway_id": elsewhere or self.gateway.gateway_id},
        )  # fmt: skip

    def refuse_start(self, molecule_id: str, gateway_id: str) -> None:
        """The shared journal found ``molecule_id`` claimed by ``gateway_id`` when this
        gateway's start of it was first committed: that claim had not reached this
        gateway's view when ``initiate`` checked. The start is refused as initiate would
        have refused it (PF002 unique_running, HTTP 409); nothing of it ran."""
        state = self.active.get(molecule_id)
        if state is None or state.accepted is None or state.accepted.done():
            return  # only a start not yet acknowledged can be refused
        log.info("molecule %s: not started, gateway %s runs it", molecule_id, gateway_id)
        self._not_started(state, self._running(molecule_id, state.id_field, gateway_id))

    def _not_started(self, state: _Molecule, err: PacketFlowError) -> None:
        """A start ``initiate`` took is refused at its first commit: nothing of it runs,
        nobody owns it, and its initiator (over /ws) or requester (HTTP) hears ``err``."""
        mid = state.molecule_id
        state.rejected = True
        self._cancel_timers(state)
        self.holds.release(mid, "not started")
        if self.active.get(mid) is state:
            del self.active[mid]
        self.gateway.guard.disown("molecule", mid)
        told = state.initiator
        if told is not None:
            state.initiator = None
            self.gateway.answer_error(told.sink, err, told.message_id, None, told.source_id)
        if state.accepted is not None and not state.accepted.done():
            if told is None:
                state.accepted.set_exception(err)  # the HTTP request awaits it
            else:
                state.accepted.cancel()  # over /ws nobody awaits it

    def _acknowledge(self, state: _Molecule, durable: bool) -> None:
        if not durable:
            why = self.journal_failure or "the journal is not open"
            self._not_started(state, ServiceUnavailable(
                f"Molecule {state.molecule_id!r} was not started: its journal entry could "
                f"not be written ({why})", retry_delay_ms=JOURNAL_RETRY_DELAY_MS,
                details={"reason": "journal_unavailable", "journal_error": why},
                context={"molecule_id": state.molecule_id},
            ))  # fmt: skip
            return
        if state.accepted is not None and not state.accepted.done():
            state.accepted.set_result(None)
        if state.initiator is not None:
            payload = self.describe(state, state.ack_kind)
            payload["execution_plan"] = execution_plan(state.run.molecule)
            self._push(state, payload)
            state.acknowledged = True

    def _status_of(
        self, molecule_id: str, stored: StoredMolecule | None, *, path: str
    ) -> dict[str, Any]:
        """``status``, or the journal entry ``_entry_for`` read already: a finished one, or
        in cluster mode any (another gateway runs it)."""
        if stored is not None and (stored.status is not None or self._async_journal is not None):
            return self._describe_stored(stored)
        return self.status(molecule_id, path=path)

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
            return self.validate(obj, path=path)
        if kind == "reserve":
            payload["status"] = "estimated"
            payload["resource_reservations"] = self.reservations(molecule)
        else:
            payload["status"] = "planned"
            payload["execution_plan"] = execution_plan(molecule)
        return payload

    def validate(self, obj: Mapping[str, Any], *, path: str) -> dict[str, Any]:
        """§7.3 phase 1: run the ``validation_checks`` asked for (all five by default)
        and report each; status ``valid`` when all passed, else ``invalid`` with ``error``
        the first failure's ERROR payload. A malformed request or structure is PF002 (an
        ERROR); a structural PF102 of a check that was asked for is that check's failure."""
        checks = parse_checks(obj.get("validation_checks"), _join(path, "validation_checks"))
        try:
            molecule = self._molecule_for(obj, path, support=False)
        except BondFormationFailed as err:
            failed = structural_result(err)
            if failed is None or failed.check not in checks:
                raise
            mid = obj.get("molecule_id")
            return {"coordination_type": "validate",
                    "molecule_id": mid if isinstance(mid, str) else None, "status": "invalid",
                    "validation_checks": list(checks),
                    "validation_results": [failed.to_dict()] + [
                        {"check": c, "passed": None, "problems": [],
                         "skipped": "the structure could not be built"}
                        for c in checks if c != failed.check],
                    "error": err.to_payload()}  # fmt: skip
        results = run_checks(molecule, checks, self._offers())
        failures = [r for r in results if not r.passed]
        payload: dict[str, Any] = {
            "coordination_type": "validate", "molecule_id": molecule.molecule_id,
            "status": "invalid" if failures else "valid", "validation_checks": list(checks),
            "validation_results": [r.to_dict() for r in results],
            "execution_plan": execution_plan(molecule),
        }  # fmt: skip
        if failures and failures[0].error is not None:
            payload["error"] = failures[0].error.to_payload()
        return payload

    def _offers(self) -> list[ReactorOffer]:
        """What every registered reactor offers (§8.2 announce, health now)."""
        out = []
        for record in self.gateway.registry:
            caps = record.announce.get("capabilities")
            perf = caps.get("performance_characteristics") if isinstance(caps, dict) else None
            perf = perf if isinstance(perf, dict) else {}
            mol = caps.get("molecular_support") if isinstance(caps, dict) else None
            bonds = mol.get("supported_bond_types") if isinstance(mol, dict) else None
            memory, cores = perf.get("memory_capacity_mb"), perf.get("cpu_cores")
            out.append(ReactorOffer(
                record.reactor_id, frozenset(record.capabilities),
                record.health in routing.ROUTABLE and record.link is not None,
                float(memory) if isinstance(memory, int | float) else None,
                int(cores) if isinstance(cores, int | float) else None,
                _bond_types(bonds),
            ))  # fmt: skip
        return out

    def _reservation_plan(
        self, obj: Mapping[str, Any], path: str
    ) -> tuple[Molecule, dict[str, dict[str, float]], dict[str, str], int]:
        """What a ``reserve`` holds: the molecule, per reactor its needs, each packet's
        reactor, and the hold time. Explicit ``resource_reservations`` (§7.3 phase 2
        shape: reactor_id, resource_requirements) replace the computed needs."""
        molecule = self._molecule_for(obj, path)
        meta = obj.get("coordination_metadata") or {}
        hold = meta.get("hold_ms", DEFAULT_HOLD_MS) if isinstance(meta, dict) else DEFAULT_HOLD_MS
        if not isinstance(hold, int) or isinstance(hold, bool) or not 1 <= hold <= MAX_HOLD_MS:
            raise invalid_field(_join(path, "coordination_metadata.hold_ms"),
                                f"int 1-{MAX_HOLD_MS}", repr(hold), "range")  # fmt: skip
        assignment: dict[str, str] = {}
        for entry in self.reservations(molecule):
            if entry["reactor_id"] is None:
                raise NoReactorAvailable(
                    f"No reactor can take packet {entry['packet_id']!r} now, so nothing can "
                    "be reserved for it", details={"packet_id": entry["packet_id"],
                                                   "reason": entry.get("note")},
                )  # fmt: skip
            assignment[entry["packet_id"]] = entry["reactor_id"]
        explicit = obj.get("resource_reservations")
        if explicit is None:
            return molecule, reservation_needs(molecule, assignment), assignment, hold
        needs = self._explicit_needs(explicit, _join(path, "resource_reservations"))
        return molecule, needs, assignment, hold

    def _explicit_needs(self, explicit: Any, path: str) -> dict[str, dict[str, float]]:
        if not isinstance(explicit, list) or not explicit:
            raise invalid_field(path, "non-empty array", type(explicit).__name__, "type")
        needs: dict[str, dict[str, float]] = {}
        for i, entry in enumerate(explicit):
            ipath = f"{path}[{i}]"
            if not isinstance(entry, dict):
                raise invalid_field(ipath, "object", type(entry).__name__, "type")
            rid = entry.get("reactor_id")
            if not isinstance(rid, str) or self.gateway.registry.get(rid) is None:
                raise invalid_field(f"{ipath}.reactor_id", "the id of a registered reactor",
                                    repr(rid), "known_reactor")  # fmt: skip
            wanted = parse_requirements(entry.get("resource_requirements") or {},
                                        f"{ipath}.resource_requirements")  # fmt: skip
            total = needs.setdefault(rid, {"memory_mb": 0.0, "cpu_cores": 0.0})
            for key, value in (wanted or {}).items():
                total[key] += value
        return needs

    def _molecule_for(self, obj: Mapping[str, Any], path: str, *,
                      support: bool = True) -> Molecule:  # fmt: skip
        if "molecular_structure" in obj or "packets" in obj:
            return self._validated(obj, path, support=support)
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
        if support:
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
        if obj.get("apply") is True:
            self._apply_or_raise(molecule.molecule_id, state, result)
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

    def _apply_or_raise(
        self, molecule_id: str, state: _Molecule | None, result: Suggestions
    ) -> None:
        """Apply ``result`` to a running molecule, or raise PF105 (§10.1.2 "Optimization
        failed", recovery "Fallback"): the molecule goes on as it was."""
        if state is None or state.run.finished:
            status = state.run.status if state is not None else None
            raise OptimizationFailed(
                f"Molecule {molecule_id!r} is not running: there is nothing to apply the "
                "optimization to", retryable=False,
                details={"reason": "molecule_not_running", "status": status,
                         "fallback": "unchanged"},
                context={"molecule_id": molecule_id},
            )  # fmt: skip
        try:
            self._apply_optimization(state, result)
        except (ValueError, KeyError, TypeError, PacketFlowError) as exc:
            log.warning("molecule %s: applying an optimization failed: %r", molecule_id, exc)
            raise OptimizationFailed(
                f"The optimization of molecule {molecule_id!r} could not be applied; it goes "
                "on unoptimized", retryable=True,
                details={"reason": "apply_failed", "exception_type": type(exc).__name__,
                         "fallback": "unoptimized"},
                context={"molecule_id": molecule_id},
            ) from exc  # fmt: skip

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
        # Changes go to copies first: nothing changes unless the rebuilt run is valid.
        locality = dict(state.locality)
        optimized: dict[str, list[str]] = {k: list(v) for k, v in state.optimized.items()}

        def mark(packet_id: str, kind: str) -> None:
            kinds = optimized.setdefault(packet_id, [])
            if kind not in kinds:
                kinds.append(kind)

        for adj in result.adjustments:
            i = index[(adj["from"], adj["to"])]
            bonds[i]["strength"] = adj["new_strength"]
            if run.state_of(adj["to"]) == "pending":
                mark(adj["to"], "bond_strength")
        for group in result.parallel:
            for pair in group["bonds"]:
                i = index[(pair["from"], pair["to"])]
                if run.state_of(pair["to"]) == "pending":
                    bonds[i]["type"] = "metallic"
                    snapshot["bond_types"][i] = "metallic"
                    mark(pair["to"], "parallelization")
        for loc in result.locality:
            for pid in loc["packet_group"]:
                if run.state_of(pid) == "pending" and loc.get("preferred_reactor"):
                    locality[pid] = loc["preferred_reactor"]
                    mark(pid, "locality")
        new_run, out = _Run.restore(snapshot, now)
        state.locality, state.optimized = locality, optimized
        self.history.optimization_applied(now)
        state.run = cast(_Run, new_run)
        state.incoming = blocking_sources(state.run.molecule.packet_ids, state.run.molecule.bonds)
        # Packets still on a reactor keep their reply tokens; only newly free ones start.
        out = [i for i in out if not (isinstance(i, StartPacket) and i.packet_id in state.inflight)]
        journal = self.journal
        if journal is not None:
            journal.checkpoint(state.molecule_id, state.run.snapshot(), now)
            journal.update_meta(state.molecule_id, state.meta())
        state.since_checkpoint = 0
        self._dirty.add(state)  # the checkpoint is a change even when nothing starts
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
        if self._lazy_handle is not None:  # this commit takes the waiting rows along
            self._lazy_handle.cancel()
            self._lazy_handle = None
        if self._committing:  # one commit at a time: this batch follows the one under way
            self._flush_again = True
            return
        dirty, self._dirty = self._dirty, set()
        recorded, self._recorded = self._recorded, set()
        self._rewrite_finishes()
        journal = self._async_journal
        if journal is not None:
            # A networked journal (NATS): commit off the loop's turn, act when it answers.
            actions, self._actions = self._actions, []
            self._committing = True
            journal.stage()
            asyncio.get_running_loop().create_task(
                self._commit_async(journal, dirty, recorded, actions)
            )
            return
        durable = self._commit()
        actions, self._actions = self._actions, []
        self._after_flush(durable, dirty, recorded, actions)

    async def _commit_async(
        self,
        journal: AsyncJournal,
        dirty: set[_Molecule],
        recorded: set[_Molecule],
        actions: list[Callable[[bool], None]],
    ) -> None:
        try:
            await journal.commit_async()
            durable = True
        except JournalError as exc:
            self.journal_errors += 1
            self.journal_failure = str(exc)
            log.error("%s; the molecules it held stop with PF503", exc)
            durable = False
        finally:
            self._committing = False
        if self._stopped:
            return
        self._after_flush(durable, dirty, recorded, actions)
        if self._flush_again or self._actions:
            self._flush_again = False
            self._schedule_flush()

    def _after_flush(
        self,
        durable: bool,
        dirty: set[_Molecule],
        recorded: set[_Molecule],
        actions: list[Callable[[bool], None]],
    ) -> None:
        """Carry out what the commit held (or stop what it lost), then push progress."""
        if durable:
            self._unwritten.clear()
        for action in actions:
            try:
                action(durable)
            except Exception:
                log.exception("coordinator action failed")
        if not durable:
            # Also the molecules whose lost changes asked for no action (a checkpoint).
            for state in dirty | recorded:
                self._journal_lost(state)
        for state in dirty:
            if state.acknowledged:
                state.acknowledged = False
            elif state.final is None and not state.rejected:
                self._progress(state)

    def _rewrite_finishes(self) -> None:
        journal = self.journal
        if journal is None or not self._unwritten:
            return
        now = time.time()
        for state in self._unwritten.values():
            status = state.run.status
            if status is not None:
                journal.finish(state.molecule_id, status, state.run.snapshot(), now)

    def _retry_unwritten(self) -> None:
        """While finishes are unwritten, try again now and then even if nothing happens."""
        self._rewrite_handle = None
        if not self._unwritten or self._stopped:
            return
        self._schedule_flush()
        self._rewrite_handle = asyncio.get_running_loop().call_later(
            JOURNAL_RETRY_DELAY_MS / 1000, self._retry_unwritten
        )

    def _commit(self) -> bool:
        journal = self.journal
        if journal is None:
            return False
        try:
            journal.commit()
        except JournalError as exc:
            self.journal_errors += 1
            self.journal_failure = str(exc)
            log.error("%s; the molecules it held stop with PF503", exc)
            return False
        return True

    # ------------------------------------------------------------------ instructions

    def _carry_out(self, state: _Molecule, out: list[Instruction], durable: bool = True) -> None:
        """Act on what the planner said, once the journal holds it. When the commit
        failed, nothing of it is acted on: a molecule never runs a step its journal does
        not hold (DESIGN §6), so it stops instead (``_journal_lost``)."""
        if state.rejected or self._stopped:
            return
        if not durable:
            self._journal_lost(state)
            return
        for ins in out:
            if isinstance(ins, StartPacket):
                self._submit(state, ins.packet_id, ins.inputs, ins.prefer_reactor_of,
                             ins.attempt, ins.deadline, None, ins.resume_on)  # fmt: skip
            elif isinstance(ins, RetryPacket):
                self._submit(state, ins.packet_id, ins.inputs, ins.prefer_reactor_of,
                             ins.attempt, ins.deadline, ins.avoid_reactor_hint)  # fmt: skip
            elif isinstance(ins, CancelPacket):
                state.inflight.pop(ins.packet_id, None)
            elif isinstance(ins, ScheduleTimer):
                self._schedule_timer(state, ins.at)
            elif isinstance(ins, ScheduleCheck):
                self._schedule_check(state, ins.at)
            elif isinstance(ins, AdjustBonds):
                log.info("molecule %s: bonds adjusted: %s", state.molecule_id,
                         list(ins.changes))  # fmt: skip
                state.incoming = blocking_sources(state.run.molecule.packet_ids,
                                                  state.run.bonds)  # fmt: skip
            elif isinstance(ins, ConvertBond):
                log.info("molecule %s: healing converted %s -> %s from %s to %s",
                         state.molecule_id, ins.bond.source, ins.bond.target, ins.old_type,
                         ins.new_type)  # fmt: skip
            elif isinstance(ins, FinishMolecule):
                self._finalize(state, ins)
            elif isinstance(ins, ReportProgress):
                pass  # pushes are coalesced per commit (_flush)

    def _journal_lost(self, state: _Molecule) -> None:
        """A commit holding this molecule's changes failed: its journal no longer matches
        its run, so the run cannot go on durably. It fails with PF503 (the spec's "service
        unavailable, failover": the gateway cannot keep molecules durable right now, and
        another attempt, later or on another gateway, may succeed; PF500 is for bugs), its
        packets are cancelled and its initiator answered. A run that had already finished
        keeps its outcome: only writing it was lost. Either way the finish is written again
        as a self-contained checkpoint (``_unwritten``) until a commit succeeds, so that once
        the journal recovers the molecule is not resumed after a restart."""
        if state.rejected or state.final is not None or self._stopped:
            return
        now = time.time()
        run = state.run
        out: list[Instruction]
        if run.finished:
            finish = run.finish_instruction()
            out = [finish] if finish is not None else []
        else:
            why = self.journal_failure or "the journal is not open"
            err = ServiceUnavailable(
                f"Molecule {state.molecule_id!r} was stopped: its journal could not be "
                f"written ({why}), and no step runs unjournaled",
                retry_delay_ms=JOURNAL_RETRY_DELAY_MS,
                details={"reason": "journal_unavailable", "journal_error": why},
                context={"molecule_id": state.molecule_id},
            )  # fmt: skip
            out = run.fail(now, err.to_payload())
        self._unwritten[state.molecule_id] = state
        if self._rewrite_handle is None:
            self._retry_unwritten()
        for ins in out:
            if isinstance(ins, CancelPacket):
                state.inflight.pop(ins.packet_id, None)
            elif isinstance(ins, FinishMolecule):
                self._finalize(state, ins)
        log.error("molecule %s stopped with status %s: its journal could not be written",
                  state.molecule_id, run.status)  # fmt: skip

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
        pin: str | None = None,
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
            destination_id=pin if pin is not None else UNSET,
            payload=SubmitPayload(
                packet=Packet(
                    group=cast(Any, packet.group), element=packet.element,
                    id=self._wire_id(state, packet_id), data=Raw(encode_json(packet.data)),
                    priority=packet.priority, timeout_ms=timeout_ms,
                    dependencies=tuple(state.incoming[packet_id]),
                    metadata=self._metadata(state, packet_id, inputs, attempt),
                ),
                routing_preferences=prefs,
            ),
        )  # fmt: skip
        on_frame = functools.partial(self._on_reply, state, packet_id, token)
        on_dispatch = functools.partial(self._on_dispatch, state, packet_id, token)
        try:
            self.gateway.submit_internal(msg, on_frame, prefer=prefer, on_dispatch=on_dispatch)
        except Exception:  # a gateway bug fails this packet (retryable), not the molecule
            log.exception("submitting packet %s of molecule %s failed", packet_id,
                          state.molecule_id)  # fmt: skip
            on_frame(encode(error_envelope(
                InternalError("Internal server error"), message_id=new_message_id(),
                now_ms=now_ms(), source_id=self.gateway.gateway_id,
                correlation_id=msg.message_id, packet_id=msg.payload.packet.id,
            )))  # fmt: skip

    @staticmethod
    def _metadata(
        state: _Molecule, packet_id: str, inputs: Mapping[str, Any], attempt: int
    ) -> dict[str, Any]:
        meta = {"inputs": dict(inputs), "molecule_id": state.molecule_id,
                "molecule_packet_id": packet_id, "attempt": attempt}  # fmt: skip
        kinds = state.optimized.get(packet_id)
        if kinds:
            meta[OPTIMIZATIONS_KEY] = list(kinds)
        return meta

    def _on_dispatch(self, state: _Molecule, packet_id: str, token: int, reactor_id: str) -> None:
        """The gateway sent the packet to ``reactor_id`` (again on a failover). Journaled so
        that after a crash the packet is asked of that reactor first (``_resume``): it
        alone can answer it from its idempotency window without running it twice. The
        row is committed with the next commit, at the latest DISPATCH_COMMIT_DELAY_S
        after this (see there for what a crash before that means)."""
        run = state.run
        if state.inflight.get(packet_id) != token or run.finished or state.rejected:
            return
        if self._stopped:
            return
        now = time.time()
        try:
            run.packet_dispatched(packet_id, reactor_id, now)
        except IllegalMoleculeEvent as exc:
            log.error("molecule %s: %s", state.molecule_id, exc)
            return
        journal = self.journal
        if journal is not None:
            event = JournalEvent("packet_dispatched", packet_id, now, reactor_id)
            journal.record(state.molecule_id, event)
            state.since_checkpoint += 1
        # Journaled, but nothing to push: the packet was already reported active.
        self._recorded.add(state)
        if self._flush_handle is None and self._lazy_handle is None:
            self._lazy_handle = asyncio.get_running_loop().call_later(
                DISPATCH_COMMIT_DELAY_S, self._lazy_flush
            )

    def _lazy_flush(self) -> None:
        self._lazy_handle = None
        if self._flush_handle is None and not self._stopped:
            self._flush()

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

    def _schedule_check(self, state: _Molecule, at: float) -> None:
        """§10.4.2: wake the run when a running packet passes its slowness mark."""
        if state.check_timer is not None:
            state.check_timer.cancel()

        def fire() -> None:
            state.check_timer = None
            run = state.run
            if run.finished or self._stopped:
                return
            now = time.time()
            out = run.timer_fired(now)
            if out:
                self._event(state, JournalEvent("timer_fired", None, now), out, now)

        delay = max(0.0, at - time.time())
        state.check_timer = asyncio.get_running_loop().call_later(delay, fire)

    def _cancel_timers(self, state: _Molecule) -> None:
        for handle in (state.timer, state.push_timer, state.check_timer):
            if handle is not None:
                handle.cancel()
        state.timer = state.push_timer = state.check_timer = None

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
        if state.initiator is None or not state.initiator.progress:
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
        held = self.holds.get(state.molecule_id)
        if held is not None and held.executing:
            self.holds.release(state.molecule_id, finish.status)
        state.inflight.clear()
        kind = "abort" if finish.status == "aborted" else "complete"
        payload = self.describe(state, kind)
        state.final = payload
        run = state.run
        self.history.molecule_finished(
            status=finish.status, stability=run.stability(),
            bonds=[BondEnd(b.source, b.target) for b in run.bonds], state_of=run.state_of,
            reactor_of=state.reactor_of, optimized=bool(state.optimized), now=time.time(),
            reactor_fault=functools.partial(_reactor_fault, run.errors),
        )  # fmt: skip
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
        for event in stored.events:  # none once finished; a running one's since checkpoint
            _replay(run, event)
        kind = "status" if stored.status is None else (
            "abort" if stored.status == "aborted" else "complete")  # fmt: skip
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

    def summaries(
        self, limit: int, visible: Callable[[str], bool] = lambda _: True
    ) -> list[dict[str, Any]]:
        """Running molecules, then the most recently finished ones (``GET /v1/molecules``),
        of those ``visible`` admits (a principal lists only its own; DESIGN §8)."""
        out: list[dict[str, Any]] = []
        states = (
            s
            for s in itertools.chain(self.active.values(), reversed(self.finished.values()))
            if visible(s.molecule_id)
        )
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
            optimized=_optimized(meta.get("optimized")),
            owner=meta.get("owner") if isinstance(meta.get("owner"), str) else None,
        )  # fmt: skip
        if state.owner is not None:  # this run's owner, whoever ran the id before
            self.gateway.guard.own("molecule", state.molecule_id, state.owner)
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
        """Resubmit the packets that were on reactors when the gateway went down.

        A packet that was running on reactor R waits up to ``resume_grace_s`` for R to
        re-announce and is then pinned to R (destination_id), which answers it from its
        idempotency window: joined if still running, its stored outcome if finished
        (DESIGN §4). Only if R does not come back in time does it go to any reactor, and
        run again there. The others wait (up to RESUME_WAIT_S) until some reactor serves
        their element. Reactors re-announce only after they notice the restart, and the
        registry has no "reactor announced" hook to wait on, so this polls.
        """
        molecule = state.run.molecule
        loop = asyncio.get_running_loop()
        began = loop.time()
        grace = float(self.gateway.config.resume_grace_s)
        pending = [i for i in starts if isinstance(i, StartPacket)]
        while pending and not state.run.finished and not self._stopped:
            waited = loop.time() - began
            ready: list[Instruction] = []
            for ins in list(pending):
                packet = molecule.packet(ins.packet_id)
                if ins.resume_on is not None:
                    if self._reactor_back(ins.resume_on, packet.group, packet.element):
                        ready.append(ins)
                    elif waited >= grace:
                        log.warning("molecule %s: reactor %s did not return within %.1f s; "
                                    "packet %s goes to another reactor and runs again",
                                    state.molecule_id, ins.resume_on, grace,
                                    ins.packet_id)  # fmt: skip
                        ready.append(replace(ins, resume_on=None))
                    else:
                        continue
                elif self.gateway.registry.supports(packet.group, packet.element) or (
                    waited >= RESUME_WAIT_S
                ):
                    ready.append(ins)
                else:
                    continue
                pending.remove(ins)
            if ready:
                self._after_commit(functools.partial(self._carry_out, state, ready))
            if pending:
                await asyncio.sleep(RESUME_POLL_S)
        state.resume_task = None

    def adopt(self, stored: StoredMolecule) -> None:
        """Resume a molecule another gateway owned until its lease lapsed (the cluster's
        journal took the ownership over first). Raises what ``_resume`` raises."""
        if stored.molecule_id in self.active or self._stopped:
            return
        log.warning("taking over molecule %s from another gateway", stored.molecule_id)
        self._resume(stored)

    def abandon(self, molecule_id: str, reason: str) -> None:
        """Another gateway owns ``molecule_id`` now (this one's lease lapsed): stop running
        it here without finishing it; its initiator is told where it went."""
        state = self.active.pop(molecule_id, None)
        if state is None:
            return
        log.warning("molecule %s: %s; no longer run here", molecule_id, reason)
        state.rejected = True
        self._cancel_timers(state)
        state.inflight.clear()
        if state.resume_task is not None:
            state.resume_task.cancel()
        init = state.initiator
        if init is not None:
            state.initiator = None
            self.gateway.answer_error(init.sink, ServiceUnavailable(
                f"Molecule {molecule_id!r} is now run by another gateway ({reason}); ask any "
                "gateway for its status", retry_delay_ms=JOURNAL_RETRY_DELAY_MS,
                details={"reason": "ownership_lost"}, context={"molecule_id": molecule_id},
            ), init.message_id, None, init.source_id)  # fmt: skip

    def _reactor_back(self, reactor_id: str, group: str, element: str) -> bool:
        """Whether ``reactor_id`` re-announced and can take a pinned packet now."""
        record = self.gateway.registry.get(reactor_id)
        return (
            record is not None
            and record.link is not None
            and record.health in routing.ROUTABLE
            and (group, element) in record.capabilities
        )

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
        if (denied := self._http_denied(request, "initiate", None)) is not None:
            return denied
        correlation: str | None = None
        try:
            body, value = await read_json_body(request)
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
                                  initiated_by=correlation or new_message_id(),
                                  by=_HttpWho(request))  # fmt: skip
            assert state.accepted is not None
            await asyncio.shield(state.accepted)
        except PacketFlowError as err:
            return self._http_error(err, correlation)
        if request.query.get("wait", "").lower() in ("1", "true", "yes"):
            final = await self._wait_final(state)
            return view_response(as_view(final, MoleculeStatus))
        plan = execution_plan(state.run.molecule)
        return view_response(as_view({
            "molecule_id": state.molecule_id, "run_id": state.run_id, "status": "accepted",
            "status_url": f"/v1/molecules/{state.molecule_id}", "execution_plan": plan,
        }, MoleculeAccepted), status=202)  # fmt: skip

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
        principal = request_principal(request)
        guard = self.gateway.guard
        body = {"running": len(self.active), "journal": journal,
                "molecules": self.summaries(
                    limit, lambda mid: guard.sees(principal, "molecule", mid))}  # fmt: skip
        return view_response(as_view(body, MoleculeList))

    async def _http_get(self, request: web.Request) -> web.Response:
        mid = request.match_info["molecule_id"]
        try:
            stored = await self._entry_for(mid)
            if (denied := self._http_denied(request, "status", mid)) is not None:
                return denied
            payload = self._status_of(mid, stored, path="molecule_id")
        except PacketFlowError as err:
            return self._http_error(err)
        return view_response(as_view(payload, MoleculeStatus))

    async def _http_delete(self, request: web.Request) -> web.Response:
        mid = request.match_info["molecule_id"]
        try:
            await self._entry_for(mid)  # its owner, when this process does not hold it
            if (denied := self._http_denied(request, "abort", mid)) is not None:
                return denied
            state = self.abort(mid, path="molecule_id", reason="aborted over HTTP")
        except PacketFlowError as err:
            return self._http_error(err)
        self.gateway.guard.molecule_event(request_principal(request), _HttpWho(request),
                                          "molecule_abort", mid)  # fmt: skip
        return view_response(as_view(await self._wait_final(state), MoleculeStatus))


class _HttpWho:
    """An HTTP request as the guard sees a requester (address, user agent, principal)."""

    __slots__ = ("principal", "source_ip", "user_agent")

    def __init__(self, request: web.Request) -> None:
        self.principal = request_principal(request)
        self.source_ip = request.remote
        self.user_agent = request.headers.get("User-Agent")


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


def _reactor_fault(errors: Mapping[str, Mapping[str, Any]], packet_id: str) -> bool:
    """Whether the packet's final error was its reactor's fault (never a client's)."""
    error = errors.get(packet_id)
    if error is None:
        return False
    code = error.get("error_code")
    return counts_against_reactor(code if isinstance(code, str) else None,
                                  bool(error.get("retry_possible")))  # fmt: skip


def _optimized(value: Any) -> dict[str, list[str]]:
    """A journaled ``_Molecule.optimized``, as far as it has the right shape."""
    if not isinstance(value, dict):
        return {}
    return {str(k): [str(x) for x in v] for k, v in value.items() if isinstance(v, list)}


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _ms(seconds: float | None) -> int | None:
    return None if seconds is None else int(seconds * 1000)


def _bond_types(value: Any) -> frozenset[str] | None:
    """§8.2 ``supported_bond_types`` in canonical names; None when not announced."""
    if not isinstance(value, list):
        return None
    return frozenset(BOND_ALIASES[v.lower()] for v in value
                     if isinstance(v, str) and v.lower() in BOND_ALIASES)  # fmt: skip


def _retyped(bond: Bond, new_type: str) -> Bond:
    return bond if bond.type == new_type else replace(bond, type=cast(Any, new_type))


def _replay(run: MoleculeRun, event: JournalEvent) -> None:
    """Apply one journaled event to a rebuilt run (its instructions were carried out
    before the crash, or are re-derived by the final restore)."""
    at = event.at
    pid = event.packet_id or ""
    if event.kind == "molecule_started":
        run.start(at)
    elif event.kind == "packet_dispatched":
        run.packet_dispatched(pid, event.reactor_id, at)
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
        elif run.error is not None:
            payload["error"] = run.error
        elif run.status in ("failed", "partial"):
            relevant = [p for p in errors if not run.is_observer(p)]
            if relevant:
                payload["error"] = errors[relevant[0]]
    return payload
