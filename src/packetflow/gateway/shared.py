"""What a gateway shares with the other gateways of its cluster, as narrow interfaces
(DESIGN §1): the registry view, the event bus, the affinity matrix, the idempotency
window, co:sync barriers, the security state and the molecule journal.

The gateway keeps its own tables (registry, bus, window, matrix, keys) for every decision,
so routing never waits on anything shared. These interfaces only say when a local change
must travel to the other gateways, and let them feed their changes back in. ``Standalone``
is the embedded single-gateway mode: nothing travels, nothing imports NATS. The NATS
JetStream implementation lives in ``gateway/nats_cluster.py`` and is imported only when
``--cluster`` names a NATS server.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .coordinator import MoleculeCoordinator
    from .journal import MoleculeJournal
    from .registry import ReactorRecord
    from .server import Gateway


class SharedRegistry(Protocol):
    """The registry view: reactors one gateway learned of reach every gateway, which dials
    each of them (a reactor keeps one work connection per gateway)."""

    def reactor_announced(self, record: ReactorRecord) -> None:
        """``record`` announced itself to this gateway (or re-announced)."""
        ...

    def reactor_seen(self, record: ReactorRecord, now: float) -> None:
        """A heartbeat of ``record`` arrived (``now``: time.monotonic()); keeps it alive
        in the shared view."""
        ...

    def reactor_withdrew(self, reactor_id: str) -> None:
        """The reactor said it is leaving (DISCOVER withdraw)."""
        ...


class SharedEvents(Protocol):
    """The event bus: an event published through one gateway reaches the subscribers of
    every gateway (each gateway checked the publisher's and subscribers' topic rights)."""

    def event_published(self, topic: str, event: Any) -> None: ...


class SharedMatrix(Protocol):
    """The affinity matrix (§6.4): an update through one gateway routes on all."""

    def matrix_changed(self, matrix: dict[str, dict[str, float]], version: str) -> None: ...


class SharedOutcomes(Protocol):
    """The idempotency window (DESIGN §4): a retry through another gateway gets the stored
    outcome. Outcomes travel to every gateway's own window as they happen (the other
    gateways call ``Gateway.remember_outcome``), and a gateway that starts later is given
    those still within the window's age before it serves, so admitting a packet never
    waits on anything shared."""

    # False: nothing to share (the embedded mode answers from its own window only).
    shares_outcomes: bool

    def outcome_recorded(self, key: str, frame: bytes) -> None:
        """A replayable outcome (success, non-retryable error) for ``key``, the
        principal-scoped packet id."""
        ...


class SharedBarriers(Protocol):
    """co:sync barriers every gateway counts: parties that arrive through different
    gateways are released together. Unlike the other interfaces this one waits on the
    shared state, as a barrier must: its answer depends on the other gateways."""

    async def sync(self, barrier: str, parties: int, timeout_s: float) -> bool:
        """Wait at ``barrier`` until ``parties`` arrivals across the cluster, at most
        ``timeout_s``: True when released, False when timed out (the arrival no longer
        counts). Raises PF002 naming ``payload.packet.data.parties`` when the open round
        was opened for other parties (or the barrier or parties is bad), PF004 when too
        many barriers are open, PF503 when the shared state cannot be reached."""
        ...

    def describe(self) -> dict[str, int]:
        """For GET /health: arrivals waiting here, barriers they wait at."""
        ...


class ClusterState(SharedRegistry, SharedEvents, SharedMatrix, SharedOutcomes, Protocol):
    """Everything shared, started and stopped with the gateway. Security state (API keys,
    revocations) is carried by ``start``'s implementation: it keeps the gateway's key file
    in step with the other gateways'."""

    # None: co:sync barriers are the gateway's own (gateway/local.py, the embedded table).
    barriers: SharedBarriers | None

    async def start(self, gateway: Gateway) -> None: ...

    async def stop(self) -> None: ...

    def molecule_journal(self, coordinator: MoleculeCoordinator) -> MoleculeJournal | None:
        """The molecule journal to use; None: the embedded SQLite file."""
        ...

    def describe(self) -> dict[str, Any]:
        """What GET /health says about the cluster."""
        ...


class Standalone:
    """The embedded mode (the default): one gateway, every table its own."""

    shares_outcomes = False
    barriers: SharedBarriers | None = None

    async def start(self, gateway: Gateway) -> None:
        return None

    async def stop(self) -> None:
        return None

    def reactor_announced(self, record: ReactorRecord) -> None:
        return None

    def reactor_seen(self, record: ReactorRecord, now: float) -> None:
        return None

    def reactor_withdrew(self, reactor_id: str) -> None:
        return None

    def event_published(self, topic: str, event: Any) -> None:
        return None

    def matrix_changed(self, matrix: dict[str, dict[str, float]], version: str) -> None:
        return None

    def outcome_recorded(self, key: str, frame: bytes) -> None:
        return None

    def molecule_journal(self, coordinator: MoleculeCoordinator) -> MoleculeJournal | None:
        return None

    def describe(self) -> dict[str, Any]:
        return {"mode": "standalone"}
