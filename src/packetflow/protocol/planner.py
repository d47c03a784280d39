"""The molecule planner: DESIGN §7's bond semantics, §10.4.1 fault tolerance and §10.4.2
healing as a pure state machine. Events go in, instructions come out (STYLE 3); the
gateway's coordinator turns results and timers into events and carries out instructions.

Every rule that changes the state of a molecule run or of a packet in it lives here and
nowhere else. Packet states follow ``PACKET_TRANSITIONS``; an event a state does not
accept raises ``IllegalMoleculeEvent`` naming the packet, its state and the event.

How a run works:

- ``start`` issues ``StartPacket`` for every packet whose blocking bonds are satisfied;
  each later event re-examines only the targets of the packet that changed (dataflow,
  DESIGN §7: a packet starts the moment its bonds allow, never stage by stage).
- A packet is *pending* until its bonds allow it, then *ready* (StartPacket issued, not
  yet on a reactor), *running* once the gateway reports ``packet_dispatched`` (optional),
  and finally *succeeded*, *failed*, *skipped* (an ionic source finally failed) or
  *aborted* (the run stopped first). A retry takes it back to *ready*.
- Bond semantics (target = ``to``): ionic waits for the source to succeed, passes its
  result, and skips the target if the source finally fails or is skipped; covalent and vdw
  wait for the source to finish either way and pass its result or ``{"error": {...}}``
  (a skipped source passes a PF102 error marked ``skipped``); covalent also asks for the
  source's reactor; metallic never waits and passes the result only if already there.
- A packet with an incoming vdw bond and no incoming ionic or covalent bond is an
  *observer*: its outcome never changes the run's status and never triggers fail_fast.
  The run still waits for observers to finish before ``FinishMolecule`` so their results
  are reported and nothing is left running unaccounted.
- fail_fast: a final failure of a non-observer stops the run (CancelPacket for ready and
  running packets, the rest aborted) with status ``failed``. retry_failed_stages: a
  retryable failure is retried up to ``max_retries`` times on a different reactor first.
  isolate_and_continue: the failed packet's ionic dependents are skipped, the rest goes
  on; the status is ``partial`` (``failed`` if no non-observer succeeded).
- Healing (``properties.healing``): one extra attempt on a different reactor for a
  retryable failure in every mode, and once more than 20% of finished packets have
  finally failed, the remaining bonds (target still pending) convert ionic → metallic and
  covalent → vdw; the run follows the new types from then on.
- Only retryable failures are retried (a PF002 fails the same way everywhere). Retries
  here are molecule-level; the router's own retries (DESIGN §6) happen beneath them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final, Literal, TypeAlias, cast

from .errors import BondFormationFailed, InternalError, MolecularInstability
from .molecules import (
    BOND_TYPES,
    Bond,
    BondType,
    Molecule,
    check_structure,
    parse_molecule,
    stages,
    topological_order,
)

PacketState = Literal["pending", "ready", "running", "succeeded", "failed", "skipped", "aborted"]
RunStatus = Literal["success", "partial", "failed", "aborted", "timeout"]

# The packet lifecycle inside a run: state -> {event: next state}. "retry" keeps a failed
# attempt's packet ready for its next attempt; "resubmit" is a restore after a restart.
PACKET_TRANSITIONS: Final[Mapping[PacketState, Mapping[str, PacketState]]] = {
    "pending": {"start": "ready", "skip": "skipped", "abort": "aborted"},
    "ready": {
        "dispatch": "running",
        "succeed": "succeeded",
        "fail": "failed",
        "retry": "ready",
        "resubmit": "ready",
        "abort": "aborted",
    },
    # "dispatch" again: the router failed the packet over to another reactor (DESIGN §6).
    "running": {
        "dispatch": "running",
        "succeed": "succeeded",
        "fail": "failed",
        "retry": "ready",
        "resubmit": "ready",
        "abort": "aborted",
    },
    "succeeded": {},
    "failed": {},
    "skipped": {},
    "aborted": {},
}
FINISHED_STATES: Final[frozenset[PacketState]] = frozenset(
    {"succeeded", "failed", "skipped", "aborted"}
)
ACTIVE_STATES: Final[frozenset[PacketState]] = frozenset({"ready", "running"})
# A source in one of these states will never succeed.
_LOST: Final[frozenset[PacketState]] = frozenset({"failed", "skipped", "aborted"})

# §10.4.2 healing trigger "packet_failure_rate > 0.2" (finally failed / finished packets).
HEALING_FAILURE_RATE: Final = 0.2
# §10.4.2 "bond_type_conversion": ionic_to_metallic, covalent_to_vdw.
HEALING_CONVERSIONS: Final[Mapping[BondType, BondType]] = {
    "ionic": "metallic",
    "covalent": "vdw",
}
SNAPSHOT_FORMAT: Final = 1


class IllegalMoleculeEvent(InternalError):
    """An event the run cannot accept in its current state (a coordinator bug): PF500."""


# ---------------------------------------------------------------- events (past tense)


@dataclass(frozen=True, slots=True)
class MoleculeStarted:
    now: float


@dataclass(frozen=True, slots=True)
class PacketDispatched:
    """The gateway handed the packet to a reactor (optional; refines durations and tells
    the planner which reactor to avoid on a retry)."""

    packet_id: str
    reactor_id: str | None
    now: float


@dataclass(frozen=True, slots=True)
class PacketSucceeded:
    """``result`` is the RESULT payload's ``data``."""

    packet_id: str
    result: Any
    now: float
    reactor_id: str | None = None


@dataclass(frozen=True, slots=True)
class PacketFailed:
    """``error`` is the ERROR payload (DESIGN §6 shape); ``retryable`` its
    ``retry_possible``."""

    packet_id: str
    error: Mapping[str, Any]
    retryable: bool
    now: float
    reactor_id: str | None = None


@dataclass(frozen=True, slots=True)
class AbortRequested:
    now: float
    reason: str = "aborted by client"


@dataclass(frozen=True, slots=True)
class TimerFired:
    now: float


Event: TypeAlias = (
    MoleculeStarted
    | PacketDispatched
    | PacketSucceeded
    | PacketFailed
    | AbortRequested
    | TimerFired
)


# ---------------------------------------------------------------- instructions (imperative)


@dataclass(frozen=True, slots=True)
class StartPacket:
    """Submit the molecule's packet ``packet_id`` (same id on every attempt) with
    ``ctx.inputs`` = ``inputs``; prefer the reactor that ran ``prefer_reactor_of`` (a
    covalent source); cap its timeout at ``deadline`` (the molecule's, ``now`` clock).
    ``resume_on``: after a restart, the reactor the packet was running on; it alone can
    answer the packet from its idempotency window without running it again, so it is
    asked first (DESIGN §4, §7 durability)."""

    packet_id: str
    inputs: Mapping[str, Any]
    prefer_reactor_of: str | None = None
    attempt: int = 1
    deadline: float | None = None
    resume_on: str | None = None


@dataclass(frozen=True, slots=True)
class RetryPacket:
    """Submit ``packet_id`` again (attempt ``attempt``, counting from 1), on a reactor
    other than ``avoid_reactor_hint`` where one exists."""

    packet_id: str
    attempt: int
    avoid_reactor_hint: str | None
    inputs: Mapping[str, Any] = field(default_factory=dict)
    prefer_reactor_of: str | None = None
    deadline: float | None = None


@dataclass(frozen=True, slots=True)
class CancelPacket:
    packet_id: str


@dataclass(frozen=True, slots=True)
class ConvertBond:
    """Healing converted ``bond`` (as it was) from ``old_type`` to ``new_type``."""

    bond: Bond
    old_type: BondType
    new_type: BondType


@dataclass(frozen=True, slots=True)
class AdjustBonds:
    """§10.4.1/§10.4.2 changed the run's bonds (``changes``: what and why, for the log)."""

    changes: tuple[Mapping[str, Any], ...]


@dataclass(frozen=True, slots=True)
class ScheduleCheck:
    """Call ``timer_fired`` at ``at``: a running packet passes its §10.4.2
    ``execution_time > Nx_expected`` mark then."""

    at: float


@dataclass(frozen=True, slots=True)
class ScheduleTimer:
    """Call ``timer_fired`` at ``at`` (the molecule's ``timeout_ms`` deadline)."""

    at: float


@dataclass(frozen=True, slots=True)
class ReportProgress:
    """Push a COORDINATE ``progress`` whose ``execution_state`` is ``progress``."""

    progress: Mapping[str, Any]

    @property
    def warnings(self) -> list[dict[str, Any]]:
        return cast(list[dict[str, Any]], self.progress.get("warnings", []))


@dataclass(frozen=True, slots=True)
class FinishMolecule:
    """The run is over: send COORDINATE ``complete`` (``abort`` for aborted/timeout).
    ``results`` holds every succeeded packet's result, ``errors`` every finally failed
    packet's ERROR payload (observers included)."""

    status: RunStatus
    results: Mapping[str, Any]
    errors: Mapping[str, Mapping[str, Any]]
    reason: str | None = None


Instruction: TypeAlias = (
    StartPacket
    | RetryPacket
    | CancelPacket
    | ConvertBond
    | AdjustBonds
    | ScheduleCheck
    | ScheduleTimer
    | ReportProgress
    | FinishMolecule
)


# ---------------------------------------------------------------- the run


@dataclass(slots=True)
class _Track:
    """One packet's mutable record inside a run (never leaves this module)."""

    state: PacketState = "pending"
    attempts: int = 0
    failed_attempts: int = 0
    result: Any = None
    error: dict[str, Any] | None = None
    issued_at: float | None = None  # StartPacket/RetryPacket of the current attempt
    dispatched_at: float | None = None
    finished_at: float | None = None
    reactor_id: str | None = None
    skipped_because: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "attempts": self.attempts,
            "failed_attempts": self.failed_attempts,
            "result": self.result,
            "error": self.error,
            "issued_at": self.issued_at,
            "dispatched_at": self.dispatched_at,
            "finished_at": self.finished_at,
            "reactor_id": self.reactor_id,
            "skipped_because": self.skipped_because,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> _Track:
        state = data["state"]
        if state not in PACKET_TRANSITIONS:
            raise ValueError(f"snapshot: unknown packet state {state!r}")
        return cls(
            state=state,
            attempts=int(data.get("attempts", 0)),
            failed_attempts=int(data.get("failed_attempts", 0)),
            result=data.get("result"),
            error=data.get("error"),
            issued_at=data.get("issued_at"),
            dispatched_at=data.get("dispatched_at"),
            finished_at=data.get("finished_at"),
            reactor_id=data.get("reactor_id"),
            skipped_because=data.get("skipped_because"),
        )

    def duration(self) -> float | None:
        began = self.dispatched_at if self.dispatched_at is not None else self.issued_at
        if began is None or self.finished_at is None:
            return None
        return max(self.finished_at - began, 0.0)


def _skipped_error(packet_id: str, because: str | None) -> dict[str, Any]:
    """What a covalent/vdw target receives from a source that never ran."""
    return BondFormationFailed(
        f"packet {packet_id!r} was skipped: its ionic source {because!r} did not succeed",
        details={"skipped": True, "skipped_because": because},
        packet_id=packet_id,
    ).to_payload()


class MoleculeRun:
    """One execution of a molecule. Each event method returns the instructions it causes,
    in order: packet instructions, then one ``ReportProgress`` (on every state change),
    then at most one ``FinishMolecule`` over the run's life. Events after the finish are
    ignored (late results of cancelled packets); other illegal events raise
    ``IllegalMoleculeEvent``.

    ``now`` is float seconds on a clock that survives restarts if snapshots are restored
    (wall clock); only differences are used.
    """

    def __init__(
        self, molecule: Molecule, now: float, expected_ms: Mapping[str, float] | None = None
    ) -> None:
        check_structure(molecule)
        # Mean duration per group:element before this run (the gateway's history): what
        # §10.4.2's "execution_time > Nx_expected" compares with.
        self.expected_ms: dict[str, float] = dict(expected_ms or {})
        self.decomposed = False
        self.replaced: set[str] = set()  # packets replaced for slowness (once each)
        self._next_check: float | None = None
        self.molecule = molecule
        self.created_at = now
        self.started_at: float | None = None
        self.deadline: float | None = None
        self.finished_at: float | None = None
        self.status: RunStatus | None = None
        self.reason: str | None = None
        # The ERROR payload that stopped the run when no packet did (``fail``).
        self.error: dict[str, Any] | None = None
        self.converted = False
        self.retry_attempts = 0
        self._last_now = now
        self._order = molecule.packet_ids
        self._index_bonds(list(molecule.bonds))
        # Healing only loosens bonds and bypasses only link a packet's ancestors to its
        # descendants, so one topological order serves the whole run.
        self._topo = topological_order(self._order, self._bonds)
        # Stage numbers are fixed at the start: reporting only (DESIGN §7).
        self._stages = stages(molecule)
        self.total_stages = max(self._stages.values(), default=0)
        self._kind = {p.id: f"{p.group}:{p.element}" for p in molecule.packets}
        self._tracks: dict[str, _Track] = {p: _Track() for p in self._order}
        self._recount()

    def _index_bonds(self, bonds: list[Bond]) -> None:
        """Adopt ``bonds`` as the run's bonds: indexes and strength sums (then _recount)."""
        self._bonds = bonds
        self._incoming: dict[str, list[int]] = {p: [] for p in self._order}
        self._outgoing: dict[str, list[int]] = {p: [] for p in self._order}
        self._out_strength = dict.fromkeys(self._order, 0.0)
        for i, bond in enumerate(bonds):
            self._incoming[bond.target].append(i)
            self._outgoing[bond.source].append(i)
            self._out_strength[bond.source] += bond.strength
        self._total_strength = sum(b.strength for b in bonds)

    def _rebond(self, bonds: list[Bond]) -> None:
        """Replace the bonds mid-run (§10.4.1 adjustment, §10.4.2 decomposition): the
        molecule carries them from now on, so snapshots and restores see them."""
        self.molecule = replace(self.molecule, bonds=tuple(bonds))
        self._index_bonds(bonds)
        self._recount()

    def _recount(self) -> None:
        """Rebuild the running tallies progress() reads from the packet records, so that
        a progress report costs O(packets), not O(packets × stages) (after restore too)."""
        self._won = 0.0  # Σ strength of bonds whose source succeeded
        self._lost = 0.0  # Σ strength of bonds whose source will never succeed
        self._unfinished_in_stage = dict.fromkeys(range(1, self.total_stages + 1), 0)
        for stage in self._stages.values():
            self._unfinished_in_stage[stage] += 1
        self._samples: dict[str, list[float]] = {}  # kind -> [Σ duration, count]
        self._unfinished = len(self._tracks)
        for pid, track in self._tracks.items():
            self._tally(pid, "pending", track.state)
            if track.state in ("succeeded", "failed"):
                self._sample(pid)
        # Per packet, how many of its incoming bonds still hold it back and how many are
        # ionic from a source that will never succeed: _verdict reads these in O(1), and
        # a source's finish updates its targets' counts in O(out-degree).
        self._waiting: dict[str, int] = {}
        self._doomed: dict[str, int] = {}
        for pid in self._order:
            self._count_blockers(pid)
        self._blocking_sources = {
            p: [self._bonds[i].source for i in self._incoming[p] if self._bonds[i].blocking]
            for p in self._order
        }
        self._stage_entries: dict[str, dict[str, Any]] = {}

    # ------------------------------------------------------------ queries

    @property
    def finished(self) -> bool:
        return self.status is not None

    @property
    def bonds(self) -> tuple[Bond, ...]:
        """The bonds with their current types (after any healing conversion)."""
        return tuple(self._bonds)

    def state_of(self, packet_id: str) -> PacketState:
        return self._track(packet_id).state

    def stage_of(self, packet_id: str) -> int:
        return self._stages[packet_id]

    def is_observer(self, packet_id: str) -> bool:
        """A vdw target with no incoming ionic/covalent bond (current types)."""
        types = {self._bonds[i].type for i in self._incoming[packet_id]}
        return "vdw" in types and not types & {"ionic", "covalent"}

    @property
    def results(self) -> dict[str, Any]:
        return {p: t.result for p, t in self._tracks.items() if t.state == "succeeded"}

    @property
    def errors(self) -> dict[str, dict[str, Any]]:
        return {p: t.error or {} for p, t in self._tracks.items() if t.state == "failed"}

    def finish_instruction(self) -> FinishMolecule | None:
        """The run's FinishMolecule, rebuilt (e.g. to answer again after a restart)."""
        if self.status is None:
            return None
        return FinishMolecule(self.status, self.results, self.errors, self.reason)

    # ------------------------------------------------------------ events

    def handle(self, event: Event) -> list[Instruction]:
        """Apply any event (for journals that store events and replay them)."""
        match event:
            case MoleculeStarted(now=now):
                return self.start(now)
            case PacketDispatched(packet_id=pid, reactor_id=rid, now=now):
                return self.packet_dispatched(pid, rid, now)
            case PacketSucceeded(packet_id=pid, result=result, now=now, reactor_id=rid):
                return self.packet_succeeded(pid, result, now, reactor_id=rid)
            case PacketFailed(
                packet_id=pid, error=error, retryable=retryable, now=now, reactor_id=rid
            ):
                return self.packet_failed(pid, error, retryable, now, reactor_id=rid)
            case AbortRequested(now=now, reason=reason):
                return self.abort(now, reason)
            case TimerFired(now=now):
                return self.timer_fired(now)
        raise TypeError(f"not a molecule event: {event!r}")  # pragma: no cover

    def start(self, now: float) -> list[Instruction]:
        """Begin the run: StartPacket for every packet nothing blocks, and ScheduleTimer
        for the molecule's ``timeout_ms``. Raises IllegalMoleculeEvent if already started."""
        if self.status is not None:
            return []
        if self.started_at is not None:
            raise IllegalMoleculeEvent(
                f"molecule {self.molecule.molecule_id!r} was already started"
            )
        self.started_at = now
        out: list[Instruction] = []
        timeout_ms = self.molecule.properties.timeout_ms
        if timeout_ms is not None:
            self.deadline = now + timeout_ms / 1000.0
            out.append(ScheduleTimer(self.deadline))
        self._settle(self._order, now, out)
        return self._wrap(out, now)

    def packet_dispatched(
        self, packet_id: str, reactor_id: str | None, now: float
    ) -> list[Instruction]:
        """The packet reached a reactor: ready → running (again on a router failover)."""
        if self.status is not None:
            return []
        track = self._move(packet_id, "dispatch")
        track.dispatched_at = now
        track.reactor_id = reactor_id
        return self._wrap([], now)

    def packet_succeeded(
        self, packet_id: str, result: Any, now: float, *, reactor_id: str | None = None
    ) -> list[Instruction]:
        """The packet's RESULT arrived: record it and start what it unblocks."""
        if self.status is not None:
            return []
        track = self._move(packet_id, "succeed")
        track.result = result
        track.finished_at = now
        if reactor_id is not None:
            track.reactor_id = reactor_id
        self._sample(packet_id)
        out: list[Instruction] = []
        self._settle(self._targets(packet_id), now, out)
        return self._wrap(out, now)

    def packet_failed(
        self,
        packet_id: str,
        error: Mapping[str, Any],
        retryable: bool,
        now: float,
        *,
        reactor_id: str | None = None,
    ) -> list[Instruction]:
        """The packet's attempt failed with ``error`` (the ERROR payload): retry it, or
        count it as finally failed and apply the fault-tolerance mode."""
        if self.status is not None:
            return []
        track = self._track(packet_id)
        self._check(packet_id, track, "fail")
        track.failed_attempts += 1
        track.error = dict(error)
        failed_on = reactor_id or track.reactor_id or _reactor_of(error)
        out: list[Instruction] = []

        if retryable and track.attempts < self._max_attempts():
            self._move(packet_id, "retry")
            track.attempts += 1
            track.issued_at = now
            track.dispatched_at = None
            track.reactor_id = None
            self.retry_attempts += 1
            out.append(
                RetryPacket(
                    packet_id,
                    track.attempts,
                    failed_on,
                    self._inputs(packet_id),
                    self._preferred(packet_id),
                    self.deadline,
                )
            )
            return self._wrap(out, now)

        self._move(packet_id, "fail")
        track.finished_at = now
        track.reactor_id = failed_on
        self._sample(packet_id)
        isolate = self.molecule.properties.fault_tolerance == "isolate_and_continue"
        # fail_fast (and retry_failed_stages once out of retries) stops the run, unless
        # §10.4.2 healing is on and one of its strategies lets the run go on.
        if not isolate and not self.is_observer(packet_id) and not self._maybe_heal(now, out):
            self._stop(now, "failed", f"packet {packet_id!r} failed", out)
            return self._wrap(out, now)
        self._adjust_bonds(packet_id, out)
        self._settle(self._targets(packet_id), now, out)
        self._maybe_heal(now, out)
        return self._wrap(out, now)

    def abort(self, now: float, reason: str = "aborted by client") -> list[Instruction]:
        """Stop the run (DESIGN §7 client abort): status ``aborted``."""
        if self.status is not None:
            return []
        out: list[Instruction] = []
        self._stop(now, "aborted", reason, out)
        return self._wrap(out, now)

    def fail(self, now: float, error: Mapping[str, Any]) -> list[Instruction]:
        """Stop the run with status ``failed`` for a reason outside its packets (the
        coordinator cannot journal it, DESIGN §6): ``error`` is the ERROR payload the
        initiator gets. Packets handed out are cancelled, the rest aborted."""
        if self.status is not None:
            return []
        out: list[Instruction] = []
        self.error = dict(error)
        self._stop(now, "failed", str(error.get("error_message") or "failed"), out)
        return self._wrap(out, now)

    def timer_fired(self, now: float) -> list[Instruction]:
        """The molecule deadline timer: at or past ``deadline`` the run stops with status
        ``timeout``; an early or stale timer does nothing."""
        if self.status is not None:
            return []
        if self.deadline is None or now < self.deadline:
            slow: list[Instruction] = []
            self._replace_slow(now, slow)
            return self._wrap(slow, now) if slow else []
        out: list[Instruction] = []
        timeout_ms = self.molecule.properties.timeout_ms
        self._stop(now, "timeout", f"molecule timeout_ms {timeout_ms} exceeded", out)
        return self._wrap(out, now)

    # ------------------------------------------------------------ progress

    def stability(self) -> float:
        """DESIGN §7: Σ strength of bonds whose source succeeded / Σ all (1.0 before the
        start and for a molecule without bonds)."""
        if self.started_at is None or self._total_strength <= 0.0:
            return 1.0
        return _ratio(self._won, self._total_strength)

    def attainable_stability(self) -> float:
        """The stability the run would end with if every unfinished packet succeeded."""
        if self._total_strength <= 0.0:
            return 1.0
        return _ratio(self._total_strength - self._lost, self._total_strength)

    def warnings(self) -> list[dict[str, Any]]:
        """PF103 when stability can no longer reach ``stability_threshold``.

        The threshold is compared with the *attainable* stability, not the current one:
        the current one starts at 0 and climbs as sources succeed, so comparing it would
        warn about every healthy molecule until it is nearly done. At the finish the two
        are equal. A warning, never an abort.
        """
        threshold = self.molecule.properties.stability_threshold
        if self.started_at is None or threshold <= 0.0:
            return []
        attainable = self.attainable_stability()
        if attainable >= threshold:
            return []
        return [
            MolecularInstability(
                f"Molecule {self.molecule.molecule_id!r} stability cannot reach "
                f"{threshold}: at most {attainable:.3f}",
                details={
                    "stability": round(self.stability(), 6),
                    "attainable_stability": round(attainable, 6),
                    "stability_threshold": threshold,
                },
                context={"molecule_id": self.molecule.molecule_id},
            ).to_payload()
        ]

    def progress(self, now: float | None = None) -> dict[str, Any]:
        """The COORDINATE ``progress`` ``execution_state`` (wire example and §7.3 phase
        4), plus ``elapsed_ms`` and ``estimated_remaining_ms`` (None until a duration has
        been observed). ``now`` defaults to the time of the last event.

        ``current_stage`` is the last stage such that it and every stage before it have
        finished (the wire example: stages 1-2 done, 3 running → 2); ``stage_results``
        holds every finished packet. PF103 warnings, if any, are in ``warnings``."""
        if now is None:
            now = self._last_now
        by_state: dict[PacketState, list[str]] = {s: [] for s in PACKET_TRANSITIONS}
        for pid in self._order:
            by_state[self._tracks[pid].state].append(pid)

        done_stages: list[int] = []
        current = 0
        prefix = True
        for stage in range(1, self.total_stages + 1):
            if self._unfinished_in_stage[stage] == 0:
                done_stages.append(stage)
                if prefix:
                    current = stage
            else:
                prefix = False
        active = by_state["ready"] + by_state["running"]

        stage_results: dict[str, dict[str, Any]] = {}
        for pid in self._order:
            entry = self._stage_entries.get(pid)
            if entry is None and self._tracks[pid].state in FINISHED_STATES:
                # Finished packets never change again: build their entry once.
                entry = self._stage_entries[pid] = self._stage_result(pid)
            if entry is not None:
                stage_results[pid] = entry

        if self.status is not None:
            phase = "aborted" if self.status in ("aborted", "timeout") else "complete"
        else:
            phase = "processing" if self.started_at is not None else "pending"
        return {
            "molecule_id": self.molecule.molecule_id,
            "current_phase": phase,
            "status": self.status,
            "current_stage": current,
            "total_stages": self.total_stages,
            "completed_packets": by_state["succeeded"],
            "active_packets": active,
            "pending_packets": by_state["pending"],
            "failed_packets": by_state["failed"],
            "skipped_packets": by_state["skipped"],
            "aborted_packets": by_state["aborted"],
            "stage_results": stage_results,
            "completed_stages": done_stages,
            "active_stages": sorted({self._stages[p] for p in active}),
            "retry_attempts": self.retry_attempts,
            "stability": round(self.stability(), 6),
            "attainable_stability": round(self.attainable_stability(), 6),
            "bonds_converted": self.converted,
            "decomposed": self.decomposed,
            "replaced_slow_packets": sorted(self.replaced),
            "elapsed_ms": self._elapsed_ms(now),
            "estimated_remaining_ms": self._estimate_remaining_ms(now),
            "warnings": self.warnings(),
        }

    # ------------------------------------------------------------ journal

    def snapshot(self) -> dict[str, Any]:
        """The whole run as a JSON-able dict (DESIGN §7 durability)."""
        return {
            "format": SNAPSHOT_FORMAT,
            "molecule": self.molecule.to_dict(),
            "bond_types": [b.type for b in self._bonds],
            "created_at": self.created_at,
            "started_at": self.started_at,
            "deadline": self.deadline,
            "finished_at": self.finished_at,
            "status": self.status,
            "reason": self.reason,
            "error": self.error,
            "converted": self.converted,
            "retry_attempts": self.retry_attempts,
            "last_now": self._last_now,
            "expected_ms": self.expected_ms,
            "decomposed": self.decomposed,
            "replaced": sorted(self.replaced),
            "packets": {p: t.to_dict() for p, t in self._tracks.items()},
        }

    @classmethod
    def restore(cls, data: Mapping[str, Any], now: float) -> tuple[MoleculeRun, list[Instruction]]:
        """Rebuild a run from ``snapshot()`` after a restart, and the instructions that
        resume it: finished packets keep their results and are not re-run; packets that
        were ready or running are started again with the same packet id and attempt
        number (StartPacket); the deadline timer is scheduled again (or, if it already
        passed, the run times out now). A run not yet started or already finished
        resumes with no instructions.

        Raises ValueError for a snapshot of another format or not matching its molecule.
        """
        if data.get("format") != SNAPSHOT_FORMAT:
            raise ValueError(f"snapshot format {data.get('format')!r} is not {SNAPSHOT_FORMAT}")
        raw = data["molecule"]
        molecule = parse_molecule(raw, max_size=max(len(raw.get("packets", [])), 1))
        run = cls(molecule, float(data["created_at"]), data.get("expected_ms"))
        run.decomposed = bool(data.get("decomposed", False))
        run.replaced = set(data.get("replaced") or [])
        types = list(data["bond_types"])
        if len(types) != len(run._bonds) or any(t not in BOND_TYPES for t in types):
            raise ValueError("snapshot bond_types do not match the molecule's bonds")
        run._bonds = [
            b if b.type == t else replace(b, type=cast(BondType, t))
            for b, t in zip(run._bonds, types, strict=True)
        ]
        packets = data["packets"]
        if set(packets) != set(run._order):
            raise ValueError("snapshot packets do not match the molecule's packets")
        run._tracks = {p: _Track.from_dict(packets[p]) for p in run._order}
        run.started_at = data.get("started_at")
        run.deadline = data.get("deadline")
        run.finished_at = data.get("finished_at")
        run.status = data.get("status")
        run.reason = data.get("reason")
        error = data.get("error")
        run.error = dict(error) if isinstance(error, Mapping) else None
        run.converted = bool(data.get("converted", False))
        run.retry_attempts = int(data.get("retry_attempts", 0))
        run._last_now = float(data.get("last_now", now))
        run._recount()

        if run.status is not None or run.started_at is None:
            return run, []
        if run.deadline is not None and now >= run.deadline:
            return run, run.timer_fired(now)
        out: list[Instruction] = []
        if run.deadline is not None:
            out.append(ScheduleTimer(run.deadline))
        for pid in run._order:
            track = run._tracks[pid]
            if track.state in ACTIVE_STATES:
                # The reactor it was last sent to: set while running, and kept through a
                # resubmit so a second restart before it is dispatched again still knows
                # (a retry clears it: the retried attempt belongs to no reactor yet).
                running_on = track.reactor_id
                run._move(pid, "resubmit")
                track.issued_at = now
                track.dispatched_at = None
                out.append(
                    StartPacket(
                        pid,
                        run._inputs(pid),
                        run._preferred(pid),
                        max(track.attempts, 1),
                        run.deadline,
                        resume_on=running_on,
                    )
                )
        # Packets whose bonds were satisfied just before the snapshot was taken.
        run._settle(run._order, now, out)
        return run, run._wrap(out, now)

    # ------------------------------------------------------------ internals

    def _track(self, packet_id: str) -> _Track:
        try:
            return self._tracks[packet_id]
        except KeyError:
            raise IllegalMoleculeEvent(
                f"molecule {self.molecule.molecule_id!r} has no packet {packet_id!r}",
                packet_id=packet_id,
            ) from None

    def _state(self, packet_id: str) -> PacketState:
        return self._tracks[packet_id].state

    def _check(self, packet_id: str, track: _Track, event: str) -> PacketState:
        nxt = PACKET_TRANSITIONS[track.state].get(event)
        if nxt is None:
            raise IllegalMoleculeEvent(
                f"packet {packet_id!r} of molecule {self.molecule.molecule_id!r} is "
                f"{track.state}; it cannot take event {event!r}",
                packet_id=packet_id,
                details={"state": track.state, "event": event},
            )
        return nxt

    def _move(self, packet_id: str, event: str) -> _Track:
        """Apply ``event`` to the packet per PACKET_TRANSITIONS (the only state writer)."""
        track = self._track(packet_id)
        before = track.state
        after = track.state = self._check(packet_id, track, event)
        if before not in FINISHED_STATES and after in FINISHED_STATES:
            self._tally(packet_id, before, after)
            self._release_targets(packet_id, after)
        return track

    def _tally(self, packet_id: str, before: PacketState, after: PacketState) -> None:
        """Keep the tallies in step with a state change (finished states are terminal)."""
        if before in FINISHED_STATES or after not in FINISHED_STATES:
            return
        self._unfinished -= 1
        self._unfinished_in_stage[self._stages[packet_id]] -= 1
        if after == "succeeded":
            self._won += self._out_strength[packet_id]
        else:
            self._lost += self._out_strength[packet_id]

    def _sample(self, packet_id: str) -> None:
        """Record a finished attempt's duration for estimated_remaining_ms."""
        duration = self._tracks[packet_id].duration()
        if duration is not None:
            sample = self._samples.setdefault(self._kind[packet_id], [0.0, 0.0])
            sample[0] += duration
            sample[1] += 1

    def _targets(self, packet_id: str) -> list[str]:
        return [self._bonds[i].target for i in self._outgoing[packet_id]]

    def _max_attempts(self) -> int:
        props = self.molecule.properties
        attempts = 1
        if props.fault_tolerance == "retry_failed_stages":
            attempts += props.max_retries
        if props.healing_policy is not None and props.healing_policy.replace_failed:
            attempts += 1  # §10.4.2 replace_failed_packets: once, on a different reactor
        return attempts

    def _blocks(self, bond: Bond, state: PacketState) -> tuple[bool, bool]:
        """Whether ``bond`` (source in ``state``) holds its target back, and whether it
        dooms it (ionic from a source that will never succeed)."""
        if bond.type == "ionic":
            return state != "succeeded", state in _LOST
        if bond.type in ("covalent", "vdw"):
            return state not in FINISHED_STATES, False
        return False, False

    def _count_blockers(self, packet_id: str) -> None:
        """Recount ``_waiting``/``_doomed`` for one packet from its incoming bonds (at
        construction, restore and after a healing conversion retypes its bonds)."""
        waiting = doomed = 0
        for i in self._incoming[packet_id]:
            bond = self._bonds[i]
            holds, dooms = self._blocks(bond, self._tracks[bond.source].state)
            waiting += holds
            doomed += dooms
        self._waiting[packet_id] = waiting
        self._doomed[packet_id] = doomed

    def _release_targets(self, packet_id: str, after: PacketState) -> None:
        """A source just finished in state ``after``: update its targets' counts."""
        waiting = self._waiting
        doomed = self._doomed
        bonds = self._bonds
        for i in self._outgoing[packet_id]:
            bond = bonds[i]
            kind = bond.type
            if kind == "ionic":
                if after == "succeeded":
                    waiting[bond.target] -= 1
                else:
                    doomed[bond.target] += 1
            elif kind == "covalent" or kind == "vdw":
                waiting[bond.target] -= 1

    def _verdict(self, packet_id: str) -> tuple[Literal["start", "skip", "wait"], str | None]:
        """Whether a pending packet can start, must be skipped, or waits (DESIGN §7)."""
        if not self._doomed[packet_id]:
            return ("wait", None) if self._waiting[packet_id] else ("start", None)
        # Rare: some ionic source is lost; name the first one in bond order.
        waiting = False
        for i in self._incoming[packet_id]:
            bond = self._bonds[i]
            state = self._state(bond.source)
            if bond.type == "ionic":
                if state in _LOST:
                    return "skip", bond.source
                if state != "succeeded":
                    waiting = True
            elif bond.type in ("covalent", "vdw") and state not in FINISHED_STATES:
                waiting = True
        return ("wait", None) if waiting else ("start", None)

    def _inputs(self, packet_id: str) -> dict[str, Any]:
        """``ctx.inputs`` for a packet starting now: {source id: result or {"error": …}}."""
        inputs: dict[str, Any] = {}
        for i in self._incoming[packet_id]:
            bond = self._bonds[i]
            src = self._tracks[bond.source]
            if src.state == "succeeded":
                inputs[bond.source] = src.result
            elif bond.type in ("covalent", "vdw"):
                if src.state == "failed":
                    inputs[bond.source] = {"error": src.error or {}}
                elif src.state == "skipped":
                    inputs[bond.source] = {
                        "error": _skipped_error(bond.source, src.skipped_because)
                    }
        return inputs

    def _preferred(self, packet_id: str) -> str | None:
        """The first covalent source that ran: the pair prefers the same reactor (DESIGN
        §7). A skipped source ran nowhere, so it expresses no preference."""
        for i in self._incoming[packet_id]:
            bond = self._bonds[i]
            if bond.type == "covalent" and self._state(bond.source) in ("succeeded", "failed"):
                return bond.source
        return None

    def _settle(self, candidates: Iterable[str], now: float, out: list[Instruction]) -> None:
        """Start or skip every pending candidate its bonds now allow; skips cascade."""
        queue = deque(candidates)
        while queue:
            pid = queue.popleft()
            track = self._tracks[pid]
            if track.state != "pending":
                continue
            verdict, because = self._verdict(pid)
            if verdict == "skip":
                self._move(pid, "skip")
                track.finished_at = now
                track.skipped_because = because
                queue.extend(self._targets(pid))
            elif verdict == "start":
                self._move(pid, "start")
                track.attempts = 1
                track.issued_at = now
                out.append(
                    StartPacket(pid, self._inputs(pid), self._preferred(pid), 1, self.deadline)
                )

    def _healing_due(self) -> bool:
        """Whether a §10.4.2 trigger on failures or stability has fired."""
        policy = self.molecule.properties.healing_policy
        if policy is None:
            return False
        failed = sum(1 for t in self._tracks.values() if t.state == "failed")
        succeeded = sum(1 for t in self._tracks.values() if t.state == "succeeded")
        if failed == 0:
            return False
        rate = failed / (failed + succeeded)
        if policy.failure_rate_above is not None and rate > policy.failure_rate_above:
            return True
        return (policy.stability_below is not None
                and self.attainable_stability() < policy.stability_below)  # fmt: skip

    def _maybe_heal(self, now: float, out: list[Instruction]) -> bool:
        """§10.4.2 when a trigger fired: bond_type_conversion (once), then, if the
        attainable stability is below the decomposition threshold, molecular_decomposition
        (once). True when a strategy changed the run (so it can go on)."""
        policy = self.molecule.properties.healing_policy
        if policy is None or not self._healing_due():
            return False
        healed = False
        if policy.conversions and not self.converted:
            self.converted = True
            touched: list[str] = []
            for i, bond in enumerate(self._bonds):
                new_type = cast(BondType | None, policy.conversions.get(bond.type))
                if new_type is None or self._state(bond.target) != "pending":
                    continue
                self._bonds[i] = replace(bond, type=new_type)
                out.append(ConvertBond(bond, bond.type, new_type))
                touched.append(bond.target)
                if not self._bonds[i].blocking:
                    self._blocking_sources[bond.target].remove(bond.source)
            for pid in dict.fromkeys(touched):
                self._count_blockers(pid)
            self._settle(touched, now, out)
            healed = bool(touched)
        if (policy.decompose_below is not None and not self.decomposed
                and self.attainable_stability() < policy.decompose_below):  # fmt: skip
            healed = self._decompose(now, out) or healed
        return healed

    def _decompose(self, now: float, out: list[Instruction]) -> bool:
        """§10.4.2 molecular_decomposition: cut every bond from a packet that will never
        succeed to one that has not started, so what is left runs as independent pieces."""
        self.decomposed = True
        keep: list[Bond] = []
        cut: list[dict[str, Any]] = []
        for bond in self._bonds:
            if self._state(bond.source) in _LOST and self._state(bond.target) == "pending":
                cut.append({"action": "decomposed", "from": bond.source, "to": bond.target,
                            "type": bond.type})  # fmt: skip
            else:
                keep.append(bond)
        if not cut:
            return False
        self._rebond(keep)
        out.append(AdjustBonds(tuple(cut)))
        self._settle([c["to"] for c in cut], now, out)
        return True

    def _adjust_bonds(self, failed: str, out: list[Instruction]) -> None:
        """§10.4.1 bond_adjustment after ``failed`` finally failed (the run goes on)."""
        adjust = self.molecule.properties.bond_adjustment
        if adjust is None:
            return
        bonds = list(self._bonds)
        changes: list[dict[str, Any]] = []
        existing = {(b.source, b.target) for b in bonds}
        if adjust.create_bypass_bonds:
            sources = [self._bonds[i] for i in self._incoming[failed]
                       if self._state(self._bonds[i].source) == "succeeded"]  # fmt: skip
            for i in list(self._outgoing[failed]):
                bond = bonds[i]
                if bond.type != "ionic" or self._state(bond.target) != "pending" or not sources:
                    continue
                for src in sources:
                    if (src.source, bond.target) in existing:
                        continue
                    existing.add((src.source, bond.target))
                    bonds.append(Bond(src.source, bond.target, "ionic", bond.strength,
                                      origin=f"bypass of {failed}"))  # fmt: skip
                    changes.append({"action": "bypass", "from": src.source,
                                    "to": bond.target, "bypassed": failed})  # fmt: skip
                bonds[i] = replace(bond, type="metallic")  # no longer dooms its target
        for i, bond in enumerate(bonds):
            state = self._state(bond.source)
            if adjust.weaken_failed_bonds and bond.source == failed:
                bonds[i] = replace(bond, strength=round(bond.strength * 0.5, 6))
                changes.append({"action": "weakened", "from": bond.source, "to": bond.target,
                                "strength": bonds[i].strength})  # fmt: skip
            elif (adjust.strengthen_successful_paths and state == "succeeded"
                  and self._state(bond.target) not in FINISHED_STATES
                  and bond.strength < 1.0):  # fmt: skip
                bonds[i] = replace(bond, strength=round(min(1.0, bond.strength + 0.1), 6))
                changes.append({"action": "strengthened", "from": bond.source,
                                "to": bond.target, "strength": bonds[i].strength})  # fmt: skip
        if changes:
            self._rebond(bonds)
            out.append(AdjustBonds(tuple(changes)))

    def _replace_slow(self, now: float, out: list[Instruction]) -> None:
        """§10.4.2 ``execution_time > Nx_expected``: a packet running longer than N times
        its element's expected duration is replaced on a different reactor, once."""
        policy = self.molecule.properties.healing_policy
        if policy is None or policy.slower_than is None or not policy.replace_failed:
            return
        for pid in self._order:
            track = self._tracks[pid]
            due = self._slow_at(pid, policy.slower_than)
            if due is None or now < due or track.state not in ACTIVE_STATES:
                continue
            self.replaced.add(pid)
            avoid = track.reactor_id
            self._move(pid, "retry")
            track.attempts += 1
            track.issued_at = now
            track.dispatched_at = None
            track.reactor_id = None
            self.retry_attempts += 1
            out.append(RetryPacket(pid, track.attempts, avoid, self._inputs(pid),
                                   self._preferred(pid), self.deadline))  # fmt: skip

    def _slow_at(self, pid: str, factor: float) -> float | None:
        track = self._tracks[pid]
        expected = self.expected_ms.get(self._kind[pid])
        began = track.dispatched_at if track.dispatched_at is not None else track.issued_at
        if (expected is None or expected <= 0 or began is None or pid in self.replaced
                or track.state not in ACTIVE_STATES):  # fmt: skip
            return None
        return began + factor * expected / 1000.0

    def _schedule_check(self, out: list[Instruction]) -> None:
        """Ask for a timer at the next slowness mark, when it moved."""
        policy = self.molecule.properties.healing_policy
        if policy is None or policy.slower_than is None or not self.expected_ms:
            return
        marks = [m for p in self._order if (m := self._slow_at(p, policy.slower_than))]
        at = min(marks) if marks else None
        if at is not None and at != self._next_check:
            out.append(ScheduleCheck(at))
        self._next_check = at

    def _stop(self, now: float, status: RunStatus, reason: str, out: list[Instruction]) -> None:
        """End the run early: cancel what was handed out, abort what was not."""
        for pid in self._order:
            track = self._tracks[pid]
            if track.state in ACTIVE_STATES:
                out.append(CancelPacket(pid))
            if track.state in ACTIVE_STATES or track.state == "pending":
                self._move(pid, "abort")
                track.finished_at = now
        self.status = status
        self.reason = reason
        self.finished_at = now

    def _final_status(self) -> RunStatus:
        relevant = [p for p in self._order if not self.is_observer(p)]
        succeeded = [p for p in relevant if self._state(p) == "succeeded"]
        if len(succeeded) == len(relevant):
            return "success"
        return "partial" if succeeded else "failed"

    def _wrap(self, out: list[Instruction], now: float) -> list[Instruction]:
        """Append the progress report and, when the run has just ended, the finish."""
        self._last_now = now
        if self.status is None:
            self._schedule_check(out)
        just_finished = self.status is not None
        if self.status is None and self._unfinished == 0:
            self.status = self._final_status()
            self.finished_at = now
            just_finished = True
        out.append(ReportProgress(self.progress(now)))
        if just_finished:
            finish = self.finish_instruction()
            assert finish is not None
            out.append(finish)
        return out

    def _stage_result(self, packet_id: str) -> dict[str, Any]:
        """A finished packet's ``stage_results`` entry (wire example shape)."""
        track = self._tracks[packet_id]
        duration = track.duration()
        entry: dict[str, Any]
        if track.state == "succeeded":
            entry = {"status": "success", "data": track.result}
        elif track.state == "failed":
            entry = {"status": "error", "error": track.error}
        elif track.state == "skipped":
            return {"status": "skipped", "skipped_because": track.skipped_because}
        else:
            return {"status": "aborted"}
        entry["duration_ms"] = round(duration * 1000) if duration is not None else None
        entry["attempts"] = track.attempts
        if track.reactor_id is not None:
            entry["reactor_id"] = track.reactor_id
        return entry

    def _elapsed_ms(self, now: float) -> int:
        if self.started_at is None:
            return 0
        end = self.finished_at if self.finished_at is not None else now
        return max(round((end - self.started_at) * 1000), 0)

    def _estimate_remaining_ms(self, now: float) -> int | None:
        """Critical path over the unfinished packets, each taking the mean observed
        duration of its group:element (else of all packets); None before any."""
        if self.status is not None:
            return 0
        if self.started_at is None or not self._samples:
            return None
        total = sum(s[0] for s in self._samples.values())
        count = sum(s[1] for s in self._samples.values())
        overall = total / count
        means = {kind: s[0] / s[1] for kind, s in self._samples.items()}
        finish: dict[str, float] = {}
        longest = 0.0
        for pid in self._topo:
            track = self._tracks[pid]
            if track.state in FINISHED_STATES:
                continue
            expected = means.get(self._kind[pid], overall)
            if track.state in ACTIVE_STATES:
                began = track.dispatched_at if track.dispatched_at is not None else track.issued_at
                if began is not None:
                    expected = max(expected - (now - began), 0.0)
            after = 0.0
            for src in self._blocking_sources[pid]:
                after = max(after, finish.get(src, 0.0))
            finish[pid] = after + expected
            longest = max(longest, finish[pid])
        return round(longest * 1000)


def _ratio(part: float, whole: float) -> float:
    """part/whole within 0-1, rounded so that float noise cannot hide a 1.0."""
    return min(max(round(part / whole, 12), 0.0), 1.0)


def _reactor_of(error: Mapping[str, Any]) -> str | None:
    """The reactor an ERROR payload came from (DESIGN §6 ``reactor_info.reactor_id``)."""
    info = error.get("reactor_info")
    if isinstance(info, Mapping):
        rid = info.get("reactor_id")
        if isinstance(rid, str):
            return rid
    return None
