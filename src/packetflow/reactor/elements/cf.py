"""Control-flow elements: ping, health, introspect, shutdown, restart (§5.2.1, §9.1)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from ...protocol.errors import ServiceUnavailable, invalid_field
from ...transport import now_ms
from ..context import Context
from ..registry import Registry

if TYPE_CHECKING:
    from ..runtime import ReactorRuntime

# §9.1.2 alert thresholds (its example warns at 70% memory).
MEMORY_WARNING_PERCENT = 70.0
CPU_WARNING_PERCENT = 90.0
ERROR_RATE_WARNING = 0.1  # §9.4.1 error_rate_spike


def _runtime(ctx: Context) -> ReactorRuntime:
    if ctx.runtime is None:
        raise ServiceUnavailable(f"{ctx.group}:{ctx.element} needs a running reactor")
    return ctx.runtime


async def ping(data: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """§9.1.1: pong, the echo, and how long the reactor held the packet."""
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


def register(registry: Registry) -> None:
    el = registry.element
    el(
        "cf",
        "ping",
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
