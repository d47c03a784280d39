"""Control-flow elements: ping, health, introspect, shutdown, restart (§5.2.1, §9.1) and
coordinate (a molecule run through the gateway's coordinator, §4.2.6, §7)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any

import msgspec

from ...protocol.errors import (
    PacketFlowError,
    ProcessingFailed,
    ServiceUnavailable,
    invalid_field,
)
from ...protocol.messages import (
    MAX_FRAME_BYTES,
    Coordinate,
    CoordinatePayload,
    ErrorPayload,
    error_from_payload,
)
from ...transport import now_ms
from ..context import Context
from ..registry import Registry
from .contract import bad, missing

if TYPE_CHECKING:
    from ...client import AsyncClient
    from ..runtime import ReactorRuntime

# §9.1.2 alert thresholds (its example warns at 70% memory).
MEMORY_WARNING_PERCENT = 70.0
CPU_WARNING_PERCENT = 90.0
ERROR_RATE_WARNING = 0.1  # §9.4.1 error_rate_spike


def _runtime(ctx: Context) -> ReactorRuntime:
    if ctx.runtime is None:
        raise ServiceUnavailable(f"{ctx.group}:{ctx.element} needs a running reactor")
    return ctx.runtime


def ping(data: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """§9.1.1: pong, the echo, and how long the reactor held the packet (served inline:
    a ping measures the reactor, not a thread hop)."""
    rt = _runtime(ctx)
    return {
        "pong": True,
        "echo_data": data.get("echo_data"),
        "reactor_id": rt.config.reactor_id,
        "response_time_ms": round((time.monotonic() - ctx.received) * 1000.0, 3),
        "implementation": rt.config.implementation,
        "timestamp": now_ms(),
    }


def _status(score: float) -> str:
    return "healthy" if score >= 0.8 else "degraded" if score >= 0.5 else "failed"


async def health(data: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """§9.1.2 from real measurements: latency, error rate, throughput, resources."""
    detail = data.get("detail_level", "full")
    if detail not in ("basic", "full"):
        raise invalid_field("payload.packet.data.detail_level", "basic or full", repr(detail),
                            "enum")  # fmt: skip
    rt = _runtime(ctx)
    st = rt.stats
    res = st.resources()
    avg, p99 = st.latency_summary()
    error_rate = st.error_rate()
    processor = max(0.0, 1.0 - error_rate * 5)
    handler = max(0.0, 1.0 - rt.load_factor * 0.5)
    resources = max(0.0, 1.0 - max(res["system_memory_percent"], res["cpu_usage_percent"]) / 200)
    network = 1.0 if not rt.draining else 0.5
    score = round((processor + handler + resources + network) / 4, 4)
    alerts: list[dict[str, Any]] = []
    if res["system_memory_percent"] >= MEMORY_WARNING_PERCENT:
        alerts.append({"severity": "warning", "condition": "memory_usage_high",
                       "threshold": MEMORY_WARNING_PERCENT,
                       "current_value": res["system_memory_percent"],
                       "suggested_action": "consider_scaling_up"})  # fmt: skip
    if res["cpu_usage_percent"] >= CPU_WARNING_PERCENT:
        alerts.append({"severity": "warning", "condition": "cpu_usage_high",
                       "threshold": CPU_WARNING_PERCENT,
                       "current_value": res["cpu_usage_percent"],
                       "suggested_action": "add_reactors"})  # fmt: skip
    if error_rate >= ERROR_RATE_WARNING:
        alerts.append({"severity": "warning", "condition": "error_rate_high",
                       "threshold": ERROR_RATE_WARNING, "current_value": round(error_rate, 4),
                       "suggested_action": "inspect_errors"})  # fmt: skip
    out: dict[str, Any] = {
        "status": "degraded" if rt.draining else _status(score),
        "overall_health_score": score,
        "reactor_id": rt.config.reactor_id,
    }
    if detail == "basic":
        return out
    out["subsystem_health"] = {
        "packet_processor": {"status": _status(processor), "score": round(processor, 4)},
        "message_handler": {"status": _status(handler), "score": round(handler, 4)},
        "resource_manager": {"status": _status(resources), "score": round(resources, 4)},
        "network_interface": {"status": _status(network), "score": network},
    }
    if data.get("include_metrics", True):
        out["performance_indicators"] = {
            "avg_response_time_ms": round(avg, 3),
            "p99_response_time_ms": round(p99, 3),
            "error_rate_5min": round(error_rate, 5),
            "throughput_pps": round(st.throughput(), 3),
        }
        out["resource_status"] = {
            "memory_usage_percent": res["system_memory_percent"],
            "process_memory_mb": res["memory_usage_mb"],
            "cpu_usage_percent": res["cpu_usage_percent"],
            "disk_usage_percent": res["disk_usage_percent"],
            "open_file_descriptors": res["open_file_descriptors"],
            "network_connections": res["network_connections"],
        }
    if data.get("include_capabilities"):
        out["capabilities"] = rt.capabilities()
    out["alert_conditions"] = alerts
    return out


async def introspect(data: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """Specializations, capacity and every supported packet with its data contract."""
    rt = _runtime(ctx)
    cfg = rt.config
    return {
        "reactor_id": cfg.reactor_id,
        "implementation": cfg.implementation,
        "specializations": list(cfg.specializations),
        "capacity": {
            "max_concurrent_packets": cfg.max_concurrent_packets,
            "max_queue": cfg.max_queue,
            "in_flight": rt.in_flight,
            "queued": len(rt.queue),
        },
        "supported_packets": [
            {
                "group": s.group,
                "element": s.element,
                "cpu_bound": s.cpu_bound,
                "contract": s.contract,
                "avg_processing_time_ms": round(
                    rt.stats.elements[s.key].avg_ms if s.key in rt.stats.elements else 0.0, 3
                ),
            }
            for s in sorted(rt.registry, key=lambda s: s.key)
        ],
    }


async def shutdown(data: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """Drain: new packets get PF503, in-flight ones finish, then the process exits."""
    grace_ms = data.get("grace_ms", 10_000)
    if not isinstance(grace_ms, int) or isinstance(grace_ms, bool) or grace_ms < 0:
        raise invalid_field("payload.packet.data.grace_ms", "non-negative int",
                            type(grace_ms).__name__, "type")  # fmt: skip
    rt = _runtime(ctx)
    rt.begin_drain()
    if rt.on_shutdown is not None:
        rt.on_shutdown(grace_ms / 1000.0)
    return {"shutting_down": True, "grace_ms": grace_ms, "in_flight": rt.in_flight - 1}


async def restart(data: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """Drain, clear queues and caches, re-announce."""
    rt = _runtime(ctx)
    if rt.on_restart is not None:
        rt.on_restart()
    return {"restarting": True, "reactor_id": rt.config.reactor_id}


# §7.1 top-level fields of a molecule, accepted directly in cf:coordinate's data.
MOLECULE_FIELDS = ("molecule_id", "version", "packets", "bonds", "properties")
# COORDINATE types that end a molecule (§4.2.6); "error" ends it too, as a failure.
FINAL_TYPES = ("complete", "abort")
# Abort messages sent for handlers cancelled mid-molecule; kept so they are not collected.
_ABORTS: set[asyncio.Task[None]] = set()


def _structure(data: dict[str, Any]) -> tuple[dict[str, Any], str | None, str]:
    """(molecular structure, molecule id or None, data path of the structure)."""
    if "molecular_structure" in data:
        structure = data["molecular_structure"]
        if not isinstance(structure, dict):
            raise bad("molecular_structure", "object (§7.1 molecule)", structure, "type")
        path = "molecular_structure."
        molecule_id = data.get("molecule_id", structure.get("molecule_id"))
    else:
        structure = {k: data[k] for k in MOLECULE_FIELDS if k in data}
        path = ""
        molecule_id = data.get("molecule_id")
    packets = structure.get("packets")
    if packets is None:
        raise missing(f"{path}packets")
    if not isinstance(packets, list) or not packets:
        raise bad(f"{path}packets", "non-empty array of packets", packets, "type")
    for i, packet in enumerate(packets):
        if not isinstance(packet, dict):
            raise bad(f"{path}packets[{i}]", "object {id, group, element, data}", packet, "type")
    bonds = structure.get("bonds", [])
    if not isinstance(bonds, list):
        raise bad(f"{path}bonds", "array of bonds", bonds, "type")
    if molecule_id is not None and (not isinstance(molecule_id, str) or not molecule_id):
        raise bad("molecule_id", "non-empty string", molecule_id, "type")
    return structure, molecule_id, path


def _final(payload: CoordinatePayload, molecule_id: str | None, progress: int) -> dict[str, Any]:
    kind = payload.coordination_type
    out: dict[str, Any] = {
        "molecule_id": payload.molecule_id or molecule_id,
        "status": payload.status or ("success" if kind == "complete" else "aborted"),
        "coordination_type": kind,
        "results": payload.results or {},
        "progress_messages": progress,
    }
    for name in ("execution_state", "performance_metrics", "error", "coordination_metadata"):
        value = getattr(payload, name)
        if value is not None:
            out[name] = value
    return out


def _coordinator_error(payload: CoordinatePayload) -> PacketFlowError:
    """A COORDINATE "error" as the exception its ``error`` object describes."""
    try:
        return error_from_payload(msgspec.convert(payload.error or {}, ErrorPayload))
    except msgspec.ValidationError:
        return ProcessingFailed(
            f"The coordinator reported an error for molecule {payload.molecule_id}",
            details={"reason": "molecule_error", "error": payload.error},
        )


async def _send_abort(gateway: AsyncClient, molecule_id: str, correlation_id: str | None) -> None:
    msg = Coordinate(
        **gateway.envelope_fields(),
        payload=CoordinatePayload(coordination_type="abort", molecule_id=molecule_id),
    )
    msg.correlation_id = correlation_id
    with contextlib.suppress(PacketFlowError, OSError):
        await gateway.send(msg)


async def coordinate(data: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """cf:coordinate {molecular_structure, molecule_id?} or the §7.1 fields themselves
    (packets, bonds, properties, molecule_id, version): sends COORDINATE ``initiate`` to
    the gateway's coordinator and follows its COORDINATE messages until ``complete`` or
    ``abort`` → {molecule_id, status, results, progress_messages, execution_state?, ...}.

    A COORDINATE ``error`` or an ERROR reply (PF102 for bad bonds, ...) raises it. When this
    packet is cancelled (its timeout) the molecule is aborted at the gateway. PF503 without
    a gateway; PF002 naming a structure that has no packets.
    """
    structure, molecule_id, _ = _structure(data)
    gateway = ctx.require_gateway()
    payload: dict[str, Any] = {"coordination_type": "initiate", "molecular_structure": structure}
    if molecule_id is not None:
        payload["molecule_id"] = molecule_id
    progress = 0
    initiated_by: str | None = None
    try:
        async for msg in gateway.coordinate(payload):
            p = msg.payload
            molecule_id = p.molecule_id or molecule_id
            initiated_by = msg.correlation_id or initiated_by
            if p.coordination_type in FINAL_TYPES:
                return _final(p, molecule_id, progress)
            if p.coordination_type == "error":
                raise _coordinator_error(p)
            progress += 1
    except asyncio.CancelledError:
        if molecule_id is not None:
            task = asyncio.get_running_loop().create_task(
                _send_abort(gateway, molecule_id, initiated_by)
            )
            _ABORTS.add(task)
            task.add_done_callback(_ABORTS.discard)
        raise
    raise ProcessingFailed(
        f"The coordinator's messages for molecule {molecule_id} ended without complete or abort",
        details={"reason": "coordination_ended", "molecule_id": molecule_id},
    )


def register(registry: Registry) -> None:
    el = registry.element
    el(
        "cf",
        "ping",
        inline_max_bytes=MAX_FRAME_BYTES,
        data={"echo_data": "any (optional)"},
        result="pong, echo_data, reactor_id, response_time_ms, implementation",
    )(ping)
    el(
        "cf",
        "health",
        data={
            "include_metrics": "bool",
            "include_capabilities": "bool",
            "detail_level": "basic|full",
        },
        result="§9.1.2 status, subsystem_health, performance_indicators, resource_status",
    )(health)
    el(
        "cf",
        "introspect",
        data={},
        result="specializations, capacity, supported_packets with contracts",
    )(introspect)
    el("cf", "shutdown", data={"grace_ms": "int (optional)"}, result="shutting_down, grace_ms")(
        shutdown
    )
    el("cf", "restart", data={}, result="restarting")(restart)
    el(
        "cf",
        "coordinate",
        data={
            "molecular_structure": "§7.1 molecule {packets, bonds, properties} "
            "(or those fields directly in data)",
            "molecule_id": "string (optional)",
        },
        result="molecule_id, status, results, progress_messages (the molecule's final state)",
    )(coordinate)
