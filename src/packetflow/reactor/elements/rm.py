"""The rm (resource management) elements of DESIGN §10: allocate, deallocate, monitor, scale
and balance, from real measurements (psutil) of this reactor.

rm:allocate and rm:deallocate keep a lease ledger per reactor (``protocol.resources``). The
capacity leased out is bookkeeping for cooperating clients, not an OS limit: by default the
machine's total memory (psutil) and ``os.cpu_count() × CPU_SLOTS_PER_CORE`` CPU slots; set
``MEMORY_CAPACITY_MB`` / ``CPU_SLOTS`` in this module before the first allocation to lease
something else (a reactor sharing its host, a test).

rm:scale changes ``max_concurrent_packets`` of the running reactor and starts queued packets
at once when it rises. rm:balance reports loads and recommends; it never moves anything: a
packet already dispatched to a reactor stays there, and the gateway already routes new
packets away from loaded reactors (DESIGN §5).
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from weakref import WeakKeyDictionary

import psutil

from ...protocol import resources
from ...protocol.errors import PacketFlowError
from ...protocol.resources import DEFAULT_LEASE_MS, Capacity, ResourceLedger
from ...transport import now_ms
from ..context import Context
from ..registry import Registry
from .contract import bad
from .ed import per_runtime, require, runtime_of

if TYPE_CHECKING:
    from ..runtime import ReactorRuntime

# ---------------------------------------------------------------------------------------------
# Limits and settings (STYLE 5)

# Capacity rm:allocate leases out; None = measure this machine (module doc).
MEMORY_CAPACITY_MB: float | None = None
CPU_SLOTS: int | None = None
# CPU slots per core when CPU_SLOTS is None (protocol.resources explains the figure).
CPU_SLOTS_PER_CORE = resources.CPU_SLOTS_PER_CORE
# rm:scale / mc:adapt bounds for max_concurrent_packets: above 10,000 tasks the event loop's
# scheduling overhead dominates on one core.
MIN_CONCURRENT = 1
MAX_CONCURRENT = 10_000
# rm:balance recommends for a reactor this far above the mean load factor.
BALANCE_MARGIN = 0.25
# psutil's system CPU figure is the busy share since the previous reading; readings closer
# together than this are noise, so the previous figure is answered instead.
CPU_SAMPLE_MIN_S = 0.1


# ---------------------------------------------------------------------------------------------
# Measurements shared with mc:adapt


@dataclass(slots=True)
class _CpuSampler:
    value: float = 0.0
    at: float | None = None  # time.monotonic() of the last reading


_CPU = _CpuSampler()


async def system_cpu_percent() -> float:
    """Whole-machine CPU busy percent since the previous reading (psutil). The first call
    primes psutil and waits CPU_SAMPLE_MIN_S (on the loop, without blocking it). Always
    called from the event-loop thread: psutil keeps the previous reading per thread."""
    now = time.monotonic()
    if _CPU.at is None:
        psutil.cpu_percent(None)
        await asyncio.sleep(CPU_SAMPLE_MIN_S)
        now = time.monotonic()
    elif now - _CPU.at < CPU_SAMPLE_MIN_S:
        return _CPU.value
    _CPU.value = float(psutil.cpu_percent(None))
    _CPU.at = now
    return _CPU.value


def queue_figures(rt: ReactorRuntime) -> dict[str, Any]:
    """Queue depth and in-flight packets of the runtime, in total and per group."""
    return {
        "depth": len(rt.queue),
        "by_group": dict(Counter(job.msg.payload.packet.group for job in rt.queue)),
        "capacity": rt.config.max_queue,
        "in_flight": rt.in_flight,
        "in_flight_by_group": dict(Counter(job.msg.payload.packet.group for job in rt.running)),
        "max_concurrent_packets": rt.config.max_concurrent_packets,
        "load_factor": round(rt.load_factor, 4),
    }


def set_max_concurrent(rt: ReactorRuntime, new: int) -> int:
    """Set the runtime's concurrency limit; queued packets start at once when it rises.
    Returns the old limit."""
    old = rt.config.max_concurrent_packets
    rt.config.max_concurrent_packets = new
    if new > old:
        rt._start_next()
    return old


# ---------------------------------------------------------------------------------------------
# rm:allocate / rm:deallocate


_LEDGERS: WeakKeyDictionary[ReactorRuntime, ResourceLedger] = WeakKeyDictionary()


def machine_capacity() -> Capacity:
    """The capacity rm:allocate leases out (module doc)."""
    memory = MEMORY_CAPACITY_MB
    if memory is None:
        memory = round(psutil.virtual_memory().total / 2**20, 1)
    slots = CPU_SLOTS
    if slots is None:
        slots = (os.cpu_count() or 1) * CPU_SLOTS_PER_CORE
    return Capacity(float(memory), int(slots))


def _new_ledger() -> ResourceLedger:
    return ResourceLedger(machine_capacity(), id_prefix=f"alloc_{uuid.uuid4().hex[:8]}_")


def ledger_of(ctx: Context) -> ResourceLedger:
    return per_runtime(_LEDGERS, ctx, _new_ledger)


async def allocate(data: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """rm:allocate {resources: {memory_mb?, cpu_slots?}, lease_ms?} → {allocation_id,
    resources, expires_at (epoch ms), lease_ms, available}. PF004 (retryable, with
    ``retry_delay_ms``) when it does not fit; PF002 naming a bad amount or lease."""
    ledger = ledger_of(ctx)
    now = now_ms()
    lease = ledger.allocate(require(data, "resources"), data.get("lease_ms", DEFAULT_LEASE_MS), now)
    usage = ledger.usage(now)
    return {
        "allocation_id": lease.allocation_id,
        "resources": lease.resources,
        "expires_at": lease.expires_at,
        "lease_ms": lease.expires_at - lease.created_at,
        "available": usage["available"],
        "reactor_id": runtime_of(ctx).config.reactor_id,
    }


async def deallocate(data: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """rm:deallocate {allocation_id} → {released: true, allocation_id, resources}. PF002
    naming ``allocation_id`` when no live lease has it (never granted, released, expired)."""
    ledger = ledger_of(ctx)
    lease = ledger.release(require(data, "allocation_id"), now_ms())
    return {"released": True, "allocation_id": lease.allocation_id, "resources": lease.resources}


# ---------------------------------------------------------------------------------------------
# rm:monitor


async def monitor(data: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """rm:monitor → real figures: cpu (this process and the machine), memory, open file
    descriptors, connections, queue depths (the monitor packet itself counts as in flight)
    and the allocations in use."""
    rt = runtime_of(ctx)
    system_cpu = await system_cpu_percent()
    res = rt.stats.resources()
    vm = psutil.virtual_memory()
    try:
        load_average: list[float] | None = [round(v, 3) for v in os.getloadavg()]
    except OSError:
        load_average = None
    return {
        "reactor_id": rt.config.reactor_id,
        "cpu": {
            "process_percent": res["cpu_usage_percent"],
            "system_percent": system_cpu,
            "cores": os.cpu_count() or 1,
            "load_average": load_average,
        },
        "memory": {
            "process_rss_mb": res["memory_usage_mb"],
            "process_percent": res["memory_usage_percent"],
            "system_total_mb": round(vm.total / 2**20, 1),
            "system_available_mb": round(vm.available / 2**20, 1),
            "system_percent": vm.percent,
        },
        "disk_usage_percent": res["disk_usage_percent"],
        "open_file_descriptors": res["open_file_descriptors"],
        "network_connections": res["network_connections"],
        "queue": queue_figures(rt),
        "allocations": ledger_of(ctx).usage(now_ms()),
        "uptime_seconds": round(rt.stats.uptime_s(), 1),
    }


# ---------------------------------------------------------------------------------------------
# rm:scale


async def scale(data: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """rm:scale {max_concurrent: 1..10000} → {old, new, in_flight, queued}. Raising the limit
    starts queued packets at once; lowering it lets running ones finish."""
    value = require(data, "max_concurrent")
    if (
        not isinstance(value, int)
        or isinstance(value, bool)
        or not MIN_CONCURRENT <= value <= MAX_CONCURRENT
    ):
        raise bad(
            "max_concurrent",
            f"integer between {MIN_CONCURRENT} and {MAX_CONCURRENT}",
            value,
            "range",
        )
    rt = runtime_of(ctx)
    old = set_max_concurrent(rt, value)
    return {"old": old, "new": value, "in_flight": rt.in_flight, "queued": len(rt.queue)}


# ---------------------------------------------------------------------------------------------
# rm:balance


def _own_row(rt: ReactorRuntime) -> dict[str, Any]:
    return {
        "reactor_id": rt.config.reactor_id,
        "load_factor": round(rt.load_factor, 4),
        "in_flight": rt.in_flight,
        "max_capacity": rt.config.max_concurrent_packets,
        "queue_depth": len(rt.queue),
        "health": "degraded" if rt.draining else "healthy",
        "specializations": list(rt.config.specializations),
    }


def recommend(rows: list[dict[str, Any]], margin: float = BALANCE_MARGIN) -> list[dict[str, Any]]:
    """A recommendation per reactor whose load factor exceeds the mean by more than
    ``margin``: raise its limit (rm:scale) or start more reactors like it."""
    if not rows:
        return []
    mean = sum(r["load_factor"] for r in rows) / len(rows)
    out = []
    for r in rows:
        if r["load_factor"] > mean + margin:
            specs = ", ".join(r.get("specializations") or []) or "the same specialization"
            out.append(
                {
                    "reactor_id": r["reactor_id"],
                    "load_factor": r["load_factor"],
                    "mean_load": round(mean, 4),
                    "actions": ["rm:scale", "add_reactors"],
                    "suggestion": f"raise {r['reactor_id']}'s max_concurrent_packets with rm:scale "
                    f"(now {r.get('max_capacity')}), or start more reactors with "
                    f"{specs}",
                }
            )
    return out


async def balance(data: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """rm:balance → {reactors: per-reactor loads, mean_load, moved: [], recommendations,
    source}. Loads come from the gateway's registry (DISCOVER), or this reactor alone
    without a gateway. Nothing is moved (module doc)."""
    rt = runtime_of(ctx)
    rows: list[dict[str, Any]]
    source = "reactor"
    if ctx.gateway is not None:
        try:
            found = await ctx.gateway.discover()
        except PacketFlowError as err:
            ctx.logger.warning("rm:balance: gateway registry unavailable: %s", err)
            found = None
        if found is not None:
            source = "gateway"
            rows = [
                {
                    "reactor_id": r.get("reactor_id"),
                    "load_factor": float(r.get("load_factor") or 0.0),
                    "in_flight": int(r.get("in_flight") or 0),
                    "max_capacity": r.get("max_capacity"),
                    "health": r.get("health"),
                    "specializations": list(r.get("specializations") or []),
                }
                for r in found
                if isinstance(r, dict) and isinstance(r.get("reactor_id"), str)
            ]
    if source == "reactor":
        rows = [_own_row(rt)]
    mean = sum(r["load_factor"] for r in rows) / len(rows) if rows else 0.0
    return {
        "reactors": rows,
        "mean_load": round(mean, 4),
        "moved": [],
        "recommendations": recommend(rows),
        "source": source,
        "note": "dispatched packets stay on their reactor; the gateway routes new packets by load",
    }


def register(registry: Registry) -> None:
    el = registry.element
    el(
        "rm",
        "allocate",
        data={
            "resources": "{memory_mb?, cpu_slots?}",
            "lease_ms": f"int (optional, default {DEFAULT_LEASE_MS})",
        },
        result="allocation_id, resources, expires_at, lease_ms",
    )(allocate)
    el("rm", "deallocate", data={"allocation_id": "string"}, result="released, allocation_id")(
        deallocate
    )
    el(
        "rm",
        "monitor",
        data={},
        result="cpu, memory, open_file_descriptors, network_connections, queue, allocations",
    )(monitor)
    el(
        "rm",
        "scale",
        data={"max_concurrent": f"int {MIN_CONCURRENT}..{MAX_CONCURRENT}"},
        result="old, new",
    )(scale)
    el("rm", "balance", data={}, result="reactors (loads), mean_load, moved, recommendations")(
        balance
    )


__all__ = [
    "CPU_SLOTS",
    "CPU_SLOTS_PER_CORE",
    "MEMORY_CAPACITY_MB",
    "allocate",
    "balance",
    "deallocate",
    "machine_capacity",
    "monitor",
    "queue_figures",
    "recommend",
    "register",
    "scale",
    "set_max_concurrent",
    "system_cpu_percent",
]
