"""Issue 14's scaling figures from the in-process model (``benchmarks.scaling_sim``):
10,000 reactors, 10 gateways, one shared JetStream KV, no sockets.

First the real gateway code is timed on this machine (``measure_costs``: an announce, a
heartbeat, a removal, the health tick's visit of one reactor, each with 10,000 reactors
registered) and the memory one reactor entry takes at a gateway (``entry_memory``); the
model then runs on those costs and reports, per injected event, when the last of the
gateways saw it, and the real wall time of routing decisions on each gateway's own view.
``python -m benchmarks.scaling [--smoke] [--reactors N] [--gateways G] [--no-markers] ...``
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
import tracemalloc
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any, cast

import msgspec

from packetflow.gateway.monitor import HealthMonitor
from packetflow.gateway.registry import ReactorRecord, ReactorRegistry
from packetflow.protocol.chemistry import STANDARD_MATRIX
from packetflow.protocol.health import DEFAULT_HEALTH_CONFIG
from packetflow.protocol.messages import (
    PROTOCOL_VERSION,
    Discover,
    DiscoverPayload,
    Heartbeat,
    HeartbeatPayload,
    decode_one,
    encode,
)

from .harness import stats
from .scaling_sim import (
    ALIVE_VALUE_BYTES,
    Announce,
    EventCosts,
    ModelParams,
    Scenario,
    SimResult,
    fleet_payloads,
    record_of,
    simulate,
)

FULL = Scenario(reactors=10_000, gateways=10, joins=100, leaves=100, deaths=100,
                restart_gateway_at_s=12.0, decisions_per_gateway=400)  # fmt: skip
SMOKE = Scenario(reactors=200, gateways=3, joins=10, leaves=10, deaths=10,
                 restart_gateway_at_s=12.0, decisions_per_gateway=20)  # fmt: skip


# ---------------------------------------------------------------- real inputs


def real_reactor() -> tuple[DiscoverPayload, HeartbeatPayload]:
    """A real reactor's announce and heartbeat (every standard element), built by the
    reactor runtime without a socket."""
    from packetflow.reactor.elements import load_standard
    from packetflow.reactor.registry import Registry
    from packetflow.reactor.runtime import ReactorConfig, ReactorRuntime

    registry = Registry()
    load_standard(registry)
    runtime = ReactorRuntime(ReactorConfig(reactor_id="template"), registry)
    announce = msgspec.convert(runtime.announce_payload({"websocket": "ws://10.0.0.1:9100/ws"}),
                               DiscoverPayload)  # fmt: skip
    return announce, runtime.heartbeat_payload()


def _envelope(kind: type[Discover] | type[Heartbeat], payload: Any, source: str) -> bytes:
    return encode(kind(protocol_version=PROTOCOL_VERSION, message_id=f"msg_{source}",
                       timestamp=1_700_000_000_000, source_id=source, payload=payload))  # fmt: skip


class _GatewayStub:
    """What ``HealthMonitor`` calls on its gateway, minus the sockets."""

    def __init__(self, registry: ReactorRegistry) -> None:
        self.registry = registry

    def decay_adjustments(self, now: float) -> None: ...
    def depart(self, record: ReactorRecord) -> None: ...
    def slot_freed(self, record: ReactorRecord) -> None: ...


class _GatewayState:
    """One gateway's per-reactor state, changed by the real calls ``Gateway.register``,
    ``on_heartbeat`` and ``depart`` make: registry and table, health tracker, breaker."""

    def __init__(self) -> None:
        self.registry = ReactorRegistry(STANDARD_MATRIX)
        self.monitor = HealthMonitor(cast(Any, _GatewayStub(self.registry)),
                                     DEFAULT_HEALTH_CONFIG)  # fmt: skip

    def announce(self, frame: bytes) -> ReactorRecord:
        msg = decode_one(frame)
        assert isinstance(msg, Discover)
        payload = msg.payload
        record = record_of(Announce.of(payload), time.monotonic())
        # Gateway.register keeps a copy of the announce for /v1/reactors.
        record.announce = msgspec.to_builtins(msgspec.structs.replace(payload, dial_token=None))
        record = self.registry.upsert(record)
        self.monitor.tracker(record)
        return record

    def heartbeat(self, record: ReactorRecord, frame: bytes) -> None:
        msg = decode_one(frame)
        assert isinstance(msg, Heartbeat)
        self.monitor.heartbeat(record, msg)
        record.last_heartbeat = msgspec.to_builtins(msg.payload)
        status = msg.payload.health_status
        if status is not None and status.load_factor != record.reported_load:
            self.registry.set_reported_load(record, status.load_factor)

    def remove(self, reactor_id: str) -> None:
        self.registry.remove(reactor_id)
        self.monitor.forget(reactor_id)


def _frames(n: int, seed: int) -> tuple[list[bytes], list[bytes]]:
    announce, heartbeat = real_reactor()
    payloads = fleet_payloads(announce, n, random.Random(seed))
    ids = [p.reactor_info.reactor_id for p in payloads if p.reactor_info is not None]
    announces = [_envelope(Discover, p, rid) for p, rid in zip(payloads, ids, strict=True)]
    beats = [_envelope(Heartbeat, msgspec.structs.replace(heartbeat, reactor_id=rid), rid)
             for rid in ids]  # fmt: skip
    return announces, beats


def _timed(call: Callable[[Any], object], args: Iterable[Any]) -> float:
    """Median wall time of ``call(arg)`` over ``args``, in seconds."""
    samples = []
    for arg in args:
        start = time.perf_counter()
        call(arg)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def measure_costs(fleet: int, samples: int) -> EventCosts:
    """Median CPU time of each event the model charges, with ``fleet`` reactors already
    registered (the table's columns and the monitor's schedules at their real size)."""
    announces, beats = _frames(fleet + samples, seed=1)
    state = _GatewayState()
    records = [state.announce(frame) for frame in announces[:fleet]]
    for record, beat in zip(records, beats, strict=False):
        state.heartbeat(record, beat)
    state.monitor.tick()  # schedules every reactor's probes, as a running gateway has
    extra = range(fleet, fleet + samples)
    announce = _timed(state.announce, (announces[i] for i in extra))
    heartbeat = _timed(lambda i: state.heartbeat(records[i % fleet], beats[i % fleet]),
                       range(samples))  # fmt: skip
    start = time.perf_counter()
    state.monitor.tick()
    tick_per_reactor = (time.perf_counter() - start) / len(state.registry)
    removal = _timed(state.remove, (f"reactor-{i:05d}" for i in extra))
    return EventCosts(announce, heartbeat, removal, tick_per_reactor)


def entry_memory(fleet: int) -> dict[str, float]:
    """Bytes one reactor takes at a gateway (Python heap, tracemalloc), by part, and in
    the KV."""
    announces, beats = _frames(fleet, seed=2)
    state = _GatewayState()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        records = []
        for frame in announces:
            msg = decode_one(frame)
            assert isinstance(msg, Discover)
            records.append(state.registry.upsert(record_of(Announce.of(msg.payload), 0.0)))
        routing = tracemalloc.get_traced_memory()[0]
        for record, frame in zip(records, announces, strict=True):
            msg = decode_one(frame)
            assert isinstance(msg, Discover)
            record.announce = msgspec.to_builtins(msg.payload)
        copy = tracemalloc.get_traced_memory()[0]
        for record in records:
            state.monitor.tracker(record)
        health = tracemalloc.get_traced_memory()[0]
        for record, beat in zip(records, beats, strict=True):
            state.heartbeat(record, beat)
        state.monitor.tick()
        total = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    return {
        "registry and routing table": (routing - base) / fleet,
        "announce copy (/v1/reactors)": (copy - routing) / fleet,
        "health tracker and breaker": (health - copy) / fleet,
        "last heartbeat and probe schedule": (total - health) / fleet,
        "total": (total - base) / fleet,
        "kv": statistics.mean(len(f) for f in announces) + ALIVE_VALUE_BYTES,
    }


# ---------------------------------------------------------------- rows


def _one(value: float) -> dict[str, float]:
    """A single figure (a model output or one measurement), shown without a spread."""
    return stats([value]) | {"single": 1}


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _spread(values: list[float], scale: float = 1.0) -> dict[str, float]:
    """Median, min, max (and p99) over events, not runs: the model is deterministic."""
    scaled = [v * scale for v in values]
    out = stats(scaled)
    out["p99"] = _quantile(scaled, 0.99)
    return out


def _times(result: SimResult, kind: str, attr: str) -> list[float]:
    values = [getattr(e, attr) for e in result.of(kind)]
    missed = sum(v is None for v in values)
    if missed:
        raise RuntimeError(f"{missed} {kind} events never reached every gateway")
    return [v for v in values if v is not None]


def _row(figure: str, value: dict[str, float], unit: str, note: str = "") -> dict[str, Any]:
    row: dict[str, Any] = {"figure": figure, "value": value, "unit": unit}
    if note:
        row["note"] = note
    return row


def visibility_rows(result: SimResult, label: str) -> list[dict[str, Any]]:
    g = result.scenario.gateways
    rows = [
        _row(f"all {g} gateways see a join, {label} (ms)",
             _spread(_times(result, "join", "all_seen"), 1e3), "ms",
             "announce committed, watched, handled, dialled and probed at every gateway"),
        _row(f"all {g} gateways see a graceful leave, {label} (ms)",
             _spread(_times(result, "leave", "all_seen"), 1e3), "ms"),
        _row(f"all {g} gateways drop a silent death, {label}: since it died (s)",
             _spread(_times(result, "death", "all_seen")), "s"),
        _row(f"all {g} gateways drop a silent death, {label}: since its last heartbeat (s)",
             _spread(_times(result, "death", "all_seen_since_heartbeat")), "s"),
    ]  # fmt: skip
    return rows


def scaling_rows(runs: int, smoke: bool) -> list[dict[str, Any]]:
    """The figures of docs/scaling.md (``runs`` is unused: one seeded run of the model
    gives a distribution over its events)."""
    del runs
    scenario = SMOKE if smoke else FULL
    n = scenario.reactors
    costs = measure_costs(n, 30 if smoke else 300)
    params = ModelParams(costs=costs)
    template, _ = real_reactor()
    with_markers = simulate(scenario, params, template)
    # Without TTL markers a gateway's own silence timer, set to the TTL, drops the dead.
    no_markers = simulate(
        replace(scenario, restart_gateway_at_s=None, decisions_per_gateway=0),
        replace(params, limit_markers=False, departure_after_s=params.alive_ttl_s),
        template,
    )
    memory = entry_memory(n)
    g = scenario.gateways
    gws = with_markers.gateways
    per_gateway = [statistics.median(gw.decision_s) * 1e6 for gw in gws]
    every = [s * 1e6 for gw in gws for s in gw.decision_s]
    decision = stats(per_gateway) | {"p99": _quantile(every, 0.99)}
    gap = with_markers.duration_s / max(1, len(gws[0].first_decision_s))
    first = _spread([s for gw in gws for s in gw.first_decision_s], 1e6)
    rows = [
        _row(f"routing decision on each of {g} gateways' own view, {n:,} reactors (µs)",
             decision, "µs", f"median per gateway at {scenario.decision_rate_per_s:,.0f} "
             "decisions/s; no lock or KV read on this path"),
        _row(f"first decision after {gap:.1f} s without one (µs)", first, "µs",
             "it writes every load the heartbeats changed since into the table's columns"),
        *visibility_rows(with_markers, "KV TTL markers"),
        *visibility_rows(no_markers, "no markers, silence timer = TTL")[2:3],
        _row(f"restarted gateway routes to all {n:,} reactors (s)",
             _one(with_markers.restart_full_view_s or float("nan")), "s",
             "replays both buckets from the KV watch"),
        _row("gateway CPU keeping its view current (% of one core)",
             stats([f * 100 for f in with_markers.busy_fraction()]), "%"),
        _row("watch deliveries per gateway (per s)",
             stats(with_markers.deliveries_per_s()), "/s"),
        _row("KV puts (per s, all reactors)", _one(with_markers.kv_puts_per_s()), "/s"),
        _row("KV bytes in (KiB per s)", _one(with_markers.kv_bytes_per_s() / 1024), "KiB/s"),
        _row("gateway memory per reactor entry (bytes)", _one(memory["total"]), "bytes",
             ", ".join(f"{k} {v:,.0f}" for k, v in memory.items() if k not in ("total", "kv"))),
        _row("KV bytes per reactor (announce + alive value)", _one(memory["kv"]), "bytes"),
        _row("measured cost: announce handled (µs)", _one(costs.announce * 1e6), "µs"),
        _row("measured cost: heartbeat handled (µs)", _one(costs.heartbeat * 1e6), "µs"),
        _row("measured cost: reactor removed (µs)", _one(costs.removal * 1e6), "µs"),
        _row("measured cost: health tick, per reactor (µs)",
             _one(costs.tick_per_reactor * 1e6), "µs"),
    ]  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scaling")
    parser.add_argument("--smoke", action="store_true", help="small configuration")
    parser.add_argument("--reactors", type=int)
    parser.add_argument("--gateways", type=int)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--heartbeat", type=float, help="heartbeat interval (s)")
    parser.add_argument("--ttl", type=float, help="alive bucket TTL (s)")
    parser.add_argument("--watch-delay", type=float, help="commit to gateway (s)")
    parser.add_argument("--no-markers", action="store_true", help="no KV TTL markers")
    parser.add_argument("--tick-us", type=float, help="health tick cost per reactor (µs)")
    args = parser.parse_args()
    scenario = SMOKE if args.smoke else FULL
    scenario = replace(scenario, seed=args.seed, reactors=args.reactors or scenario.reactors,
                       gateways=args.gateways or scenario.gateways)  # fmt: skip
    params = ModelParams(costs=measure_costs(scenario.reactors, 30 if args.smoke else 300))
    changes: dict[str, Any] = {}
    if args.heartbeat:
        changes["heartbeat_interval_s"] = args.heartbeat
    if args.ttl:
        changes["alive_ttl_s"] = args.ttl
    if args.watch_delay is not None:
        changes["watch_delay_s"] = args.watch_delay
    if args.tick_us is not None:
        changes["costs"] = replace(params.costs, tick_per_reactor=args.tick_us / 1e6)
    if args.no_markers:
        changes |= {"limit_markers": False, "departure_after_s": changes.get(
            "alive_ttl_s", params.alive_ttl_s)}  # fmt: skip
    params = replace(params, **changes)
    print(params)
    result = simulate(scenario, params, real_reactor()[0])
    from .__main__ import render

    for row in visibility_rows(result, "this model"):
        print(render(row))
    print(f"restarted gateway full view: {result.restart_full_view_s} s")
    busy = ", ".join(f"{f:.1%}" for f in result.busy_fraction())
    print(f"gateway CPU keeping the view current: {busy}")


if __name__ == "__main__":
    main()
