"""The JSON bodies the HTTP API answers with, as msgspec structs: handlers build their
responses through these and GET /openapi.json describes them, so the two cannot drift.

Every struct forbids unknown fields: a producer that grows a key the struct lacks fails
``as_view`` (and the contract test) instead of silently answering outside the schema.
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec
from aiohttp import web

from ..protocol.messages import ErrorPayload

T = TypeVar("T", bound=msgspec.Struct)


class View(msgspec.Struct, forbid_unknown_fields=True):
    """Base of the response bodies: every field present on the wire, None included."""


class ChemicalHealth(View):
    """§9.1.3 chemical system health from the gateway's molecule history
    (protocol/chemical_health.py); a figure with nothing to go on yet is null."""

    affinity_effectiveness: float | None
    molecular_stability: float | None
    min_stability: float | None
    bond_success_rate: float | None
    bonds_observed: int
    optimization_performance: float | None
    optimized_molecules: int
    optimization_count: int
    molecular_participation: int
    molecules_by_status: dict[str, int]


class GatewayStatus(View):
    """GET /health and GET /health/ready (DESIGN §9): the truth, whatever it is."""

    status: str  # HEALTHY, DEGRADED or UNHEALTHY
    ready: bool
    reasons: list[str]
    gateway_id: str
    protocol_version: str
    uptime_seconds: float
    reactors: int
    healthy_reactors: int
    routable_reactors: int
    in_flight: int
    queue_depth: int
    max_queue: int
    stopping: bool
    affinity_matrix_version: str
    chemical_health: ChemicalHealth
    # {"mode": "standalone"} or the NATS cluster's view (gateway/shared.py)
    cluster: dict[str, Any]


class ReactorSummary(View):
    """One row of GET /v1/reactors: a reactor as the gateway knows it."""

    reactor_id: str
    implementation: str
    version: str
    specializations: list[str]
    health: str
    in_flight: int
    max_capacity: int  # as announced (§8.2)
    effective_capacity: int  # what routing uses after §8.3 capacity_adjustments
    capacity_adjustments: dict[str, Any] | None  # the last heartbeat's, as decoded
    load_factor: float
    endpoints: dict[str, str]
    locality: str | None
    source: str
    capabilities: list[str]  # "group:element"
    performance_metrics: Any  # the last heartbeat's, as the reactor sent it
    packet_support: Any  # §8.2 as last announced
    adjustments: dict[str, float]  # §6.3.2 learned affinity per group (non-zero only)


class ReactorList(View):
    reactors: list[ReactorSummary]


class MatrixVersion(View):
    """A replaced affinity matrix, kept for GET /v1/affinity's history and for rollback."""

    version: str
    matrix: dict[str, dict[str, float]]
    applied_at: int  # ms since the epoch
    replaced_at: int  # ms since the epoch
    replaced_by: str  # the version that replaced it
    reason: str  # update, scheduled, automatic_rollback or manual_rollback


class RollbackPolicyView(View):
    """How an update is watched after it applies (§6.4 ``rollback_policy``)."""

    name: str
    mode: str  # none, manual or automatic
    success_rate_threshold: float | None = None
    min_samples: int | None = None
    observation_window_ms: int | None = None


class ScheduledUpdate(View):
    """A §6.4 update waiting for its ``effective_date``."""

    version: str
    matrix_updates: dict[str, dict[str, float]]
    effective_date: int | None
    rollback_policy: RollbackPolicyView
    requested_at: int


class RollbackWatch(View):
    """The observation window of the update in force under an automatic policy."""

    version: str
    rollback_to: str
    until: int
    samples: int
    success_rate: float | None
    name: str
    mode: str
    success_rate_threshold: float
    min_samples: int
    observation_window_ms: int


class AffinityView(View):
    """GET /v1/affinity: the §6.2 matrix in force, the updates scheduled after it, the
    rollback window it is in (if any) and the versions it replaced."""

    version: str
    matrix: dict[str, dict[str, float]]
    applied_at: int
    history: list[MatrixVersion]
    pending: list[ScheduledUpdate]
    watch: RollbackWatch | None
    last_change: dict[str, Any] | None


class AffinityUpdate(msgspec.Struct):
    """PUT /v1/affinity's body (§6.4): rows of {specialization: 0.0-1.0} per group;
    ``effective_date`` (epoch ms) schedules it; ``rollback_policy`` a name (none, manual,
    automatic, gradual_rollout) or {type, success_rate_threshold, min_samples,
    observation_window_ms}."""

    matrix_updates: dict[str, dict[str, float]]
    version: str | None = None
    effective_date: int | None = None
    rollback_policy: str | dict[str, Any] | None = None


class AffinityRollback(msgspec.Struct):
    """POST /v1/affinity/rollback's body: the version to restore (default: the one the
    current version replaced)."""

    version: str | None = None


class AffinityUpdated(View):
    """PUT /v1/affinity's and POST /v1/affinity/rollback's answer."""

    version: str
    previous_version: str
    applied: bool  # false: scheduled for effective_at
    scheduled: bool
    matrix: dict[str, dict[str, float]]  # in force now, or once the scheduled one applies
    effective_at: int
    rollback_policy: RollbackPolicyView | None = None
    reason: str | None = None


class AffinityCancelled(View):
    """DELETE /v1/affinity/pending/{version}'s answer: the withdrawn update."""

    cancelled: ScheduledUpdate
    version: str


class PacketAccepted(View):
    """POST /v1/packets?wait=false (202): where to ask for the reply."""

    packet_id: str
    status_url: str


class PacketView(View):
    """GET /v1/packets/{packet_id}: the packet's §5.3 lifecycle state, and its reply
    (a RESULT or ERROR envelope) once it has one."""

    packet_id: str
    group: str
    element: str
    state: str
    reactor_id: str | None
    attempts: int
    error_code: str | None
    accepted_at: int
    updated_at: int
    reply: dict[str, Any] | msgspec.UnsetType = msgspec.UNSET


class ExecutionStage(View):
    stage_id: int
    packets: list[str]
    parallel_execution: bool
    dependencies: list[int]


class ExecutionPlan(View):
    """§7.3 phase 3: the molecule's stages, for reporting (execution is dataflow)."""

    total_stages: int
    stages: list[ExecutionStage]


class MoleculeAccepted(View):
    """POST /v1/molecules (202): the molecule is journaled and running."""

    molecule_id: str
    run_id: str
    status: str
    status_url: str
    execution_plan: ExecutionPlan


class MoleculeSummary(View):
    """One row of GET /v1/molecules."""

    molecule_id: str
    run_id: str
    status: str
    packets: int
    packet_states: dict[str, int]
    started_at: int | None
    finished_at: int | None


class JournalView(View):
    path: str
    open: bool
    commit_errors: int


class MoleculeList(View):
    """GET /v1/molecules: running molecules, then the most recently finished ones."""

    running: int
    journal: JournalView
    molecules: list[MoleculeSummary]


class ErrorBody(msgspec.Struct):
    """The ``{"error": {...}}`` body of an HTTP refusal made before any envelope exists
    (401/403 from the gatekeeper, 404 for an unknown packet, 503 while draining)."""

    error: ErrorPayload


def as_view(value: Any, view: type[T]) -> T:
    """``value`` (a producer's dict) checked against ``view``; raises msgspec.ValidationError
    when the producer and the documented schema disagree (a bug, answered PF500)."""
    return msgspec.convert(value, view)


def view_response(value: msgspec.Struct, status: int = 200) -> web.Response:
    return web.Response(body=msgspec.json.encode(value), status=status,
                        content_type="application/json")  # fmt: skip


class MoleculeStatus(View):
    """GET/DELETE /v1/molecules/{molecule_id} and POST ?wait=true: the molecule as a
    COORDINATE payload (``status`` while running, ``complete``/``abort`` once finished)."""

    coordination_type: str
    molecule_id: str
    status: str
    execution_state: dict[str, Any]
    estimated_completion: int | None
    performance_metrics: dict[str, Any]
    coordination_metadata: dict[str, Any]
    results: dict[str, Any] | msgspec.UnsetType = msgspec.UNSET  # once finished
    error: dict[str, Any] | msgspec.UnsetType = msgspec.UNSET  # why it did not succeed
