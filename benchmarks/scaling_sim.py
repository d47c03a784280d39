"""A discrete-event model of G gateways keeping their routing views of N reactors current
through one shared JetStream KV (issue 14): when each gateway sees a reactor join, leave
or die, and what each gateway's routing decision costs with its whole view in memory.

How this works
--------------
Simulated time only: no sockets, no asyncio, no clock; a heap of (time, order, action)
and one seeded ``random.Random``, so a seed replays a run event for event. The model,
every figure of it a ``ModelParams`` field:

- Reactors put a small heartbeat (their load) to the ``alive`` bucket every
  ``heartbeat_interval_s``, each at its own phase, and their announce to the ``registry``
  bucket when they join and every ``announce_interval_s``. A graceful leave deletes both
  keys (the DISCOVER withdraw); a silent death (power, partition) just stops.
- The KV (``KvBucket``): a put or delete is committed ``put_delay_s`` after it is made
  (the R3 Raft round trip), takes the bucket's next revision and reaches every watcher
  ``watch_delay_s`` later, in revision order per watcher (an ordered consumer). A bucket's
  TTL (max age) removes an entry not put again within it; the server's age check runs
  when the oldest entry expires but never sooner than ``age_check_floor_s`` after the last
  run (nats-server's memstore holds its age timer to at least 250 ms). Watchers hear of a
  TTL removal only with ``limit_markers`` (the KV LimitMarkerTTL of nats-server ≥ 2.11);
  without it each gateway judges silence itself, by its health tick.
- Gateways (``SimGateway``): one event loop each. Watch deliveries and the health tick
  (every ``gateway_tick_s``, visiting every reactor like ``gateway/monitor.py``) are
  served one at a time in arrival order, each taking the CPU time the real rules take
  (``EventCosts``, measured by ``benchmarks.scaling``). The state they build is real: a
  ``ReactorRegistry`` and its ``RoutingTable`` per gateway, changed by the calls the
  gateway makes, and silence judged by ``protocol.health.heartbeat_expired``. A new
  reactor becomes routable ``dial_probe_s`` after its announce is handled (the gateway
  dials it and its first cf:ping answers: §9.3 unknown → healthy).

Routing never touches the KV: a decision reads the gateway's own table (``decide_at``),
so there is no lock shared between gateways on the per-packet path.
"""

from __future__ import annotations

import heapq
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec

from packetflow.gateway.registry import ReactorRecord, ReactorRegistry
from packetflow.protocol.announce import capabilities_of
from packetflow.protocol.chemistry import SPECIALIZATIONS, STANDARD_MATRIX
from packetflow.protocol.health import heartbeat_expired
from packetflow.protocol.messages import DiscoverPayload, ReactorInfo

REGISTRY: Final = "registry"
ALIVE: Final = "alive"
# Gateway.register's capacity when an announce names none (gateway/server.py).
DEFAULT_CAPACITY: Final = 50
# Bytes of one alive value: {"load": 0.4213, "in_flight": 12, "at": <ms>} as JSON.
ALIVE_VALUE_BYTES: Final = 48
IMPLEMENTATIONS: Final = ("python", "python", "python", "elixir", "javascript", "zig")


@dataclass(frozen=True, slots=True)
class EventCosts:
    """Seconds of one gateway's CPU per event: what the real rules take on this machine
    (``benchmarks.scaling.measure_costs``); the defaults are one such measurement."""

    announce: float = 150e-6  # decode the announce, capabilities, registry upsert, tracker
    heartbeat: float = 40e-6  # decode, health tracker, reported load into the table
    removal: float = 30e-6  # registry and table removal, forget tracker and breaker
    tick_per_reactor: float = 8e-6  # the 1 s health tick's visit of one reactor


@dataclass(frozen=True, slots=True)
class ModelParams:
    """The model's every figure (module docstring)."""

    heartbeat_interval_s: float = 5.0  # ReactorConfig.heartbeat_interval_s
    alive_ttl_s: float = 15.0  # three heartbeats missed
    announce_interval_s: float = 60.0  # ReactorConfig.announce_interval_s
    registry_ttl_s: float = 180.0  # three re-announces missed
    age_check_floor_s: float = 0.25  # nats-server memstore's minimum age-check interval
    limit_markers: bool = True  # watchers see TTL removals (nats-server >= 2.11)
    put_delay_s: float = 0.001  # reactor -> committed on an R3 stream, same LAN
    watch_delay_s: float = 0.0005  # committed -> at each gateway
    jitter: float = 0.5  # every delay x uniform(1 - jitter, 1 + jitter)
    dial_probe_s: float = 0.003  # announce handled -> linked and first ping answered
    gateway_tick_s: float = 1.0  # HealthMonitor's tick (min(1 s, ping interval / 4))
    departure_after_s: float = 90.0  # HealthConfig.departure_after_s
    costs: EventCosts = EventCosts()


@dataclass(frozen=True, slots=True)
class Scenario:
    """What happens: a steady fleet at t=0, then joins, leaves and deaths at random times
    in [inject_from_s, inject_until_s]; optionally one gateway restarts."""

    reactors: int = 10_000
    gateways: int = 10
    joins: int = 100
    leaves: int = 100
    deaths: int = 100
    inject_from_s: float = 1.0
    inject_until_s: float = 11.0
    restart_gateway_at_s: float | None = None
    decisions_per_gateway: int = 0
    # Sampled decisions come in bursts at this packet rate per gateway (between two
    # decisions the table catches up with the heartbeats handled since: the gap matters).
    decision_rate_per_s: float = 1_000.0
    decision_burst: int = 20
    seed: int = 0


@dataclass(frozen=True, slots=True)
class KvEntry:
    """One message of a bucket as a watcher receives it."""

    bucket: str
    key: str
    revision: int
    op: str  # "put", "del" (a delete), "expired" (a TTL removal's marker)
    value: Any = None  # registry: the DiscoverPayload; alive: the reported load
    size: int = 0  # bytes of the value on the wire


class Simulation:
    """The clock and the event heap. ``at`` schedules ``action(*args)``; ties run in the
    order they were scheduled."""

    def __init__(self, params: ModelParams, seed: int) -> None:
        self.params = params
        self.now = 0.0
        self.rng = random.Random(seed)
        self._heap: list[tuple[float, int, Callable[..., None], tuple[Any, ...]]] = []
        self._order = 0

    def at(self, when: float, action: Callable[..., None], *args: Any) -> None:
        heapq.heappush(self._heap, (when, self._order, action, args))
        self._order += 1

    def delay(self, base: float) -> float:
        j = self.params.jitter
        return base * self.rng.uniform(1.0 - j, 1.0 + j) if j else base

    def run(self, until: float) -> None:
        heap = self._heap
        while heap and heap[0][0] <= until:
            when, _, action, args = heapq.heappop(heap)
            self.now = when
            action(*args)
        self.now = until


class Watcher:
    """What a bucket delivers to."""

    def deliver(self, entry: KvEntry) -> None:
        raise NotImplementedError


class KvBucket:
    """A JetStream KV bucket with history 1 and a max age (module docstring)."""

    def __init__(self, sim: Simulation, name: str, ttl_s: float) -> None:
        self.sim = sim
        self.name = name
        self.ttl_s = ttl_s
        # key -> commit time of its latest put, oldest first (a put moves it to the end).
        self.committed: dict[str, float] = {}
        self.latest: dict[str, KvEntry] = {}
        self.revision = 0
        self.watchers: list[Watcher] = []
        self.puts = 0
        self.bytes_in = 0
        self.expired = 0
        self._armed = False

    def put(self, key: str, value: Any, size: int) -> None:
        self.sim.at(self.sim.now + self.sim.delay(self.sim.params.put_delay_s),
                    self._commit, key, "put", value, size)  # fmt: skip

    def delete(self, key: str, *, only_if_present: bool = False) -> None:
        """Delete ``key``; ``only_if_present`` is a delete guarded by the key's last
        revision, so of several gateways cleaning up the same key one writes a marker."""
        op = "del?" if only_if_present else "del"
        self.sim.at(self.sim.now + self.sim.delay(self.sim.params.put_delay_s),
                    self._commit, key, op, None, 0)  # fmt: skip

    def seed(self, key: str, value: Any, size: int, committed: float) -> None:
        """An entry already there when the run starts (call in commit-time order)."""
        self.revision += 1
        self.committed[key] = committed
        self.latest[key] = KvEntry(self.name, key, self.revision, "put", value, size)
        if not self._armed:
            self._arm(committed + self.ttl_s)

    def watch(self, watcher: Watcher, replay: bool) -> None:
        """Start delivering to ``watcher``; with ``replay`` it first gets every live
        entry, oldest first (a KV watch's initial values)."""
        self.watchers.append(watcher)
        if replay:
            for key in self.committed:
                watcher.deliver(self.latest[key])

    def _commit(self, key: str, op: str, value: Any, size: int) -> None:
        if op == "del?":
            if key not in self.committed:
                return  # the guard failed: someone deleted it first
            op = "del"
        self.revision += 1
        entry = KvEntry(self.name, key, self.revision, op, value, size)
        if op == "put":
            self.puts += 1
            self.bytes_in += size
            self.committed.pop(key, None)
            self.committed[key] = self.sim.now
            self.latest[key] = entry
            if not self._armed:
                self._arm(self.sim.now + self.ttl_s)
        else:
            self.committed.pop(key, None)
            self.latest.pop(key, None)
        self._publish(entry)

    def _publish(self, entry: KvEntry) -> None:
        for watcher in self.watchers:
            watcher.deliver(entry)

    def _arm(self, when: float) -> None:
        self._armed = True
        self.sim.at(max(when, self.sim.now + self.sim.params.age_check_floor_s),
                    self._age_check)  # fmt: skip

    def _age_check(self) -> None:
        self._armed = False
        now, committed, ttl = self.sim.now, self.committed, self.ttl_s
        while committed:
            key, at = next(iter(committed.items()))
            if at + ttl > now:
                break
            del committed[key]
            del self.latest[key]
            self.expired += 1
            if self.sim.params.limit_markers:
                self.revision += 1
                self._publish(KvEntry(self.name, key, self.revision, "expired"))
        if committed:
            self._arm(next(iter(committed.values())) + ttl)


@dataclass(frozen=True, slots=True)
class Announce:
    """A registry value: a reactor's announce, decoded once with its capabilities by the
    real rule (``protocol.announce.capabilities_of``); every gateway's record shares them,
    as nothing mutates either. What decoding costs each gateway is in ``EventCosts``."""

    payload: DiscoverPayload
    capabilities: frozenset[tuple[str, str]]
    size: int  # bytes of the JSON value in the bucket

    @classmethod
    def of(cls, payload: DiscoverPayload) -> Announce:
        size = len(msgspec.json.encode(payload))
        return cls(payload, frozenset(capabilities_of(payload)), size)

    @property
    def reactor_id(self) -> str:
        assert self.payload.reactor_info is not None
        return self.payload.reactor_info.reactor_id


def record_of(announce: Announce, now: float) -> ReactorRecord:
    """The ``ReactorRecord`` ``Gateway.register`` makes of an announce (without the copy
    of the announce it keeps for /v1/reactors, which routing never reads)."""
    payload = announce.payload
    info = payload.reactor_info
    assert info is not None
    constraints = payload.operational_constraints or {}
    capacity = int(constraints.get("max_concurrent_packets") or info.max_capacity
                   or DEFAULT_CAPACITY)  # fmt: skip
    return ReactorRecord(
        reactor_id=info.reactor_id, specializations=tuple(info.specializations),
        implementation=info.implementation, capabilities=announce.capabilities,
        capacity=max(1, capacity), endpoints=dict(info.endpoints), locality=info.locality,
        version=info.version, source="nats", last_seen=now,
    )  # fmt: skip


class SimGateway(Watcher):
    """One gateway: its event loop as a single server, its real registry and table.

    ``reachable(reactor_id)`` says whether dialling the reactor would succeed (its process
    runs): a dead reactor's stale announce never makes it routable.
    """

    def __init__(self, sim: Simulation, name: str, kv: dict[str, KvBucket],
                 reachable: Callable[[str], bool]) -> None:  # fmt: skip
        self.sim = sim
        self.name = name
        self.kv = kv
        self.reachable = reachable
        self.registry = ReactorRegistry(STANDARD_MATRIX)
        # reactor id -> when its last heartbeat (or announce) was handled, oldest first.
        self.last_seen: dict[str, float] = {}
        self.busy_until = 0.0
        self.busy_s = 0.0  # CPU spent keeping the view current
        self.deliveries = 0
        self.joined_at: dict[str, float] = {}  # routable from
        self.gone_at: dict[str, float] = {}  # removed at
        self.decision_s: list[float] = []  # real wall time of each sampled decision
        # ... of each burst's first: it catches up with every heartbeat since the last burst.
        self.first_decision_s: list[float] = []
        self._last_arrival: dict[str, float] = {}
        self._decisions = 0
        self._ticking = False

    # ---------------------------------------------------------------- setup

    def seed(self, announce: Announce, last_seen: float) -> None:
        """A reactor already routable when the run starts (call in last_seen order)."""
        record = self.registry.upsert(record_of(announce, last_seen))
        self.registry.set_health(record, "healthy")
        self.last_seen[record.reactor_id] = last_seen

    def start_ticking(self, first: float) -> None:
        if not self._ticking:
            self._ticking = True
            self.sim.at(first, self._tick)

    # ---------------------------------------------------------------- the watch

    def deliver(self, entry: KvEntry) -> None:
        """In order per bucket, ``watch_delay_s`` after the commit (or the replay)."""
        sim = self.sim
        arrival = max(self._last_arrival.get(entry.bucket, 0.0),
                      sim.now + sim.delay(sim.params.watch_delay_s))  # fmt: skip
        self._last_arrival[entry.bucket] = arrival
        sim.at(arrival, self._handle, entry)

    def _serve(self, cost: float) -> float:
        """One event on the loop: starts when the loop is free; returns when it is done."""
        start = max(self.sim.now, self.busy_until)
        self.busy_until = start + cost
        self.busy_s += cost
        return self.busy_until

    def _handle(self, entry: KvEntry) -> None:
        self.deliveries += 1
        costs = self.sim.params.costs
        key = entry.key
        if entry.op != "put":
            self._remove(key)
            if entry.op == "expired":
                # The reactor went silent: its announce must not outlive it (a gateway
                # starting later would dial a dead reactor). One guarded delete wins.
                self.kv[REGISTRY].delete(key, only_if_present=True)
        elif entry.bucket == REGISTRY:
            done = self._serve(costs.announce)
            record = self.registry.upsert(record_of(entry.value, done))
            self._heard(key, done)
            if record.health != "healthy":
                self.sim.at(done + self.sim.delay(self.sim.params.dial_probe_s),
                            self._linked, record)  # fmt: skip
        else:
            done = self._serve(costs.heartbeat)
            self._heard(key, done)
            known = self.registry.get(key)
            if known is not None and entry.value != known.reported_load:
                self.registry.set_reported_load(known, entry.value)

    def _heard(self, key: str, at: float) -> None:
        self.last_seen.pop(key, None)
        self.last_seen[key] = at

    def _linked(self, record: ReactorRecord) -> None:
        """The dial and first probe: routable if the reactor is really there."""
        if (
            self.registry.registered(record)
            and record.health != "healthy"
            and self.reachable(record.reactor_id)
        ):
            self.registry.set_health(record, "healthy")
            self.joined_at.setdefault(record.reactor_id, self.sim.now)

    def _remove(self, key: str) -> None:
        done = self._serve(self.sim.params.costs.removal)
        self.last_seen.pop(key, None)
        if self.registry.remove(key) is not None:
            self.gone_at.setdefault(key, done)

    # ---------------------------------------------------------------- the health tick

    def _tick(self) -> None:
        """Visit every reactor (gateway/monitor.py ``tick``); drop the silent ones."""
        params = self.sim.params
        done = self._serve(len(self.registry) * params.costs.tick_per_reactor)
        seen = self.last_seen
        while seen:
            key, at = next(iter(seen.items()))
            if not heartbeat_expired(at, done, params.departure_after_s):
                break
            self._remove(key)
            self.kv[REGISTRY].delete(key, only_if_present=True)
        self.sim.at(self.sim.now + params.gateway_tick_s, self._tick)

    # ---------------------------------------------------------------- routing

    def decide_at(self, when: float, first: bool = False) -> None:
        self.sim.at(when, self._decide, first)

    def _decide(self, first: bool) -> None:
        """One real routing decision on this gateway's own view, timed on the wall clock
        (the result changes nothing in the model)."""
        self._decisions += 1
        table = self.registry.table
        start = time.perf_counter()
        table.decide("cf", "ping", priority=5, round_robin=self._decisions)
        elapsed = time.perf_counter() - start
        (self.first_decision_s if first else self.decision_s).append(elapsed)


class SimReactor:
    """One reactor's puts: joins, heartbeats, re-announces; leaves or dies."""

    def __init__(self, sim: Simulation, kv: dict[str, KvBucket], announce: Announce) -> None:
        self.sim = sim
        self.kv = kv
        self.announce = announce
        self.reactor_id = announce.reactor_id
        self.running = False
        self.last_heartbeat = 0.0  # when it last put its heartbeat

    def load(self) -> float:
        return round(self.sim.rng.uniform(0.0, 0.6), 4)

    def resume(self, next_heartbeat: float, next_announce: float) -> None:
        """Already in the fleet at t=0: carry on from the given phases."""
        self.running = True
        self.last_heartbeat = next_heartbeat - self.sim.params.heartbeat_interval_s
        self.sim.at(next_heartbeat, self._heartbeat)
        self.sim.at(next_announce, self._announce)

    def join(self) -> None:
        self.running = True
        self._announce()
        self._heartbeat()

    def leave(self) -> None:
        """Graceful: withdraw (delete both keys) and stop."""
        self.running = False
        self.kv[REGISTRY].delete(self.reactor_id)
        self.kv[ALIVE].delete(self.reactor_id)

    def die(self) -> None:
        """Silent: nothing more is ever put, and dialling it fails."""
        self.running = False

    def _heartbeat(self) -> None:
        if self.running:
            self.last_heartbeat = self.sim.now
            self.kv[ALIVE].put(self.reactor_id, self.load(), ALIVE_VALUE_BYTES)
            self.sim.at(self.sim.now + self.sim.params.heartbeat_interval_s, self._heartbeat)

    def _announce(self) -> None:
        if self.running:
            self.kv[REGISTRY].put(self.reactor_id, self.announce, self.announce.size)
            self.sim.at(self.sim.now + self.sim.params.announce_interval_s, self._announce)


# ---------------------------------------------------------------- the fleet


def fleet_payloads(template: DiscoverPayload, n: int, rng: random.Random) -> list[DiscoverPayload]:
    """``n`` announces like ``template`` (all its capabilities), each with its own id,
    endpoint and a mix of specializations, implementations, capacities and localities."""
    assert template.reactor_info is not None
    out = []
    for i in range(n):
        info = msgspec.structs.replace(
            template.reactor_info,
            reactor_id=f"reactor-{i:05d}",
            specializations=rng.sample(SPECIALIZATIONS, rng.randint(1, 2)),
            implementation=rng.choice(IMPLEMENTATIONS),
            max_capacity=float(rng.choice((16, 50, 100))),
            endpoints={"websocket": f"ws://10.{i // 250 % 256}.{i % 250}.7:9100/ws"},
            locality=rng.choice(("dc-a", "dc-b")),
        )
        out.append(msgspec.structs.replace(template, reactor_info=info))
    return out


def small_template(capabilities: Sequence[str] = ("cf:ping", "cf:health")) -> DiscoverPayload:
    """A minimal announce (tests; the benchmark uses a real reactor's)."""
    return DiscoverPayload(discovery_type="announce",
                           reactor_info=ReactorInfo(reactor_id="template", max_capacity=50.0),
                           capabilities=list(capabilities))  # fmt: skip


# ---------------------------------------------------------------- one run


@dataclass(slots=True)
class Visibility:
    """One injected event: when it happened and when each gateway saw it (None: never)."""

    kind: str  # join, leave, death
    reactor_id: str
    at: float
    seen: list[float | None] = field(default_factory=list)
    last_heartbeat: float | None = None  # a death: when its last heartbeat was put

    @property
    def all_seen(self) -> float | None:
        """Seconds until the last gateway saw it."""
        if not self.seen or any(s is None for s in self.seen):
            return None
        return max(s for s in self.seen if s is not None) - self.at

    @property
    def all_seen_since_heartbeat(self) -> float | None:
        """A death: seconds from its last heartbeat until the last gateway dropped it."""
        if self.last_heartbeat is None or self.all_seen is None:
            return None
        return self.all_seen + self.at - self.last_heartbeat

    @property
    def first_seen(self) -> float | None:
        times = [s for s in self.seen if s is not None]
        return min(times) - self.at if times else None


@dataclass(slots=True)
class SimResult:
    scenario: Scenario
    params: ModelParams
    duration_s: float
    events: list[Visibility]
    gateways: list[SimGateway]
    kv: dict[str, KvBucket]
    restart_full_view_s: float | None = None

    def of(self, kind: str) -> list[Visibility]:
        return [e for e in self.events if e.kind == kind]

    def busy_fraction(self) -> list[float]:
        """Per gateway: the share of one core spent keeping its view current."""
        return [g.busy_s / self.duration_s for g in self.gateways]

    def deliveries_per_s(self) -> list[float]:
        return [g.deliveries / self.duration_s for g in self.gateways]

    def kv_puts_per_s(self) -> float:
        return sum(b.puts for b in self.kv.values()) / self.duration_s

    def kv_bytes_per_s(self) -> float:
        return sum(b.bytes_in for b in self.kv.values()) / self.duration_s


def settle_time(params: ModelParams) -> float:
    """How long after the last injected event every gateway must have seen it."""
    silence = (
        params.alive_ttl_s + params.age_check_floor_s
        if params.limit_markers
        else (params.departure_after_s + params.gateway_tick_s)
    )
    return silence + params.heartbeat_interval_s + 2.0


def simulate(scenario: Scenario, params: ModelParams, template: DiscoverPayload) -> SimResult:
    """Run ``scenario`` under ``params``; deterministic for ``scenario.seed`` (apart from
    the wall-clock decision times, which the model never reads)."""
    sim = Simulation(params, scenario.seed)
    rng = sim.rng
    kv = {REGISTRY: KvBucket(sim, REGISTRY, params.registry_ttl_s),
          ALIVE: KvBucket(sim, ALIVE, params.alive_ttl_s)}  # fmt: skip
    payloads = fleet_payloads(template, scenario.reactors + scenario.joins, rng)
    reactors = [SimReactor(sim, kv, Announce.of(p)) for p in payloads]
    by_id = {r.reactor_id: r for r in reactors}
    initial, joining = reactors[: scenario.reactors], reactors[scenario.reactors :]

    def reachable(reactor_id: str) -> bool:
        return by_id[reactor_id].running

    gateways = [SimGateway(sim, f"gateway-{g}", kv, reachable) for g in range(scenario.gateways)]
    _steady_state(sim, kv, initial, gateways)

    events: list[Visibility] = []

    def inject(kind: str, reactor: SimReactor, action: Callable[[], None]) -> None:
        when = rng.uniform(scenario.inject_from_s, scenario.inject_until_s)
        events.append(Visibility(kind, reactor.reactor_id, when))
        sim.at(when, action)

    for reactor in joining:
        inject("join", reactor, reactor.join)
    chosen = rng.sample(initial, scenario.leaves + scenario.deaths)
    for reactor in chosen[: scenario.leaves]:
        inject("leave", reactor, reactor.leave)
    for reactor in chosen[scenario.leaves :]:
        inject("death", reactor, reactor.die)

    end = scenario.inject_until_s + settle_time(params)
    restarted: SimGateway | None = None
    replayed: list[str] = []
    if scenario.restart_gateway_at_s is not None:
        restarted = SimGateway(sim, "gateway-restarted", kv, reachable)
        sim.at(scenario.restart_gateway_at_s, _restart, sim, kv, restarted, replayed)
        end = max(end, scenario.restart_gateway_at_s + settle_time(params))
    for gateway in gateways:
        for when, first in _decision_times(scenario, end):
            gateway.decide_at(when, first)
    sim.run(end)

    for event in events:
        if event.kind == "death":
            event.last_heartbeat = by_id[event.reactor_id].last_heartbeat
        seen = [g.joined_at if event.kind == "join" else g.gone_at for g in gateways]
        event.seen = [s.get(event.reactor_id) for s in seen]
    result = SimResult(scenario, params, end, events, gateways, kv)
    if restarted is not None and scenario.restart_gateway_at_s is not None:
        # Every reactor alive through the replay, routable at the restarted gateway.
        survivors = [k for k in replayed if by_id[k].running]
        times = [restarted.joined_at.get(k) for k in survivors]
        if survivors and all(t is not None for t in times):
            last = max(t for t in times if t is not None)
            result.restart_full_view_s = last - scenario.restart_gateway_at_s
    return result


def _decision_times(scenario: Scenario, end: float) -> list[tuple[float, bool]]:
    """``decisions_per_gateway`` times: bursts of ``decision_burst`` at
    ``decision_rate_per_s``, the bursts spread evenly over the run."""
    n, burst = scenario.decisions_per_gateway, max(1, scenario.decision_burst)
    bursts = -(-n // burst)
    gap = 1.0 / scenario.decision_rate_per_s
    return [(end * (b + 0.5) / bursts + k * gap, k == 0)
            for b in range(bursts) for k in range(min(burst, n - b * burst))]  # fmt: skip


def _steady_state(sim: Simulation, kv: dict[str, KvBucket], initial: list[SimReactor],
                  gateways: list[SimGateway]) -> None:  # fmt: skip
    """t=0 mid-run: each reactor's last heartbeat and announce at its own phase, in the
    buckets and in every gateway's view; their next puts scheduled."""
    hb, ann = sim.params.heartbeat_interval_s, sim.params.announce_interval_s
    last_hb = {r.reactor_id: -sim.rng.uniform(0.0, hb) for r in initial}
    last_ann = {r.reactor_id: -sim.rng.uniform(0.0, ann) for r in initial}
    for r in sorted(initial, key=lambda r: last_ann[r.reactor_id]):
        kv[REGISTRY].seed(r.reactor_id, r.announce, r.announce.size, last_ann[r.reactor_id])
    for r in sorted(initial, key=lambda r: last_hb[r.reactor_id]):
        kv[ALIVE].seed(r.reactor_id, r.load(), ALIVE_VALUE_BYTES, last_hb[r.reactor_id])
    ordered = sorted(initial, key=lambda r: last_hb[r.reactor_id])
    for gateway in gateways:
        for r in ordered:
            gateway.seed(r.announce, last_hb[r.reactor_id])
        for bucket in kv.values():
            bucket.watch(gateway, replay=False)
        gateway.start_ticking(sim.rng.uniform(0.0, sim.params.gateway_tick_s))
    for r in initial:
        r.resume(hb + last_hb[r.reactor_id], ann + last_ann[r.reactor_id])


def _restart(sim: Simulation, kv: dict[str, KvBucket], gateway: SimGateway,
             replayed: list[str]) -> None:  # fmt: skip
    """A gateway (re)starts empty and watches both buckets from their current values."""
    replayed.extend(k for k in kv[REGISTRY].committed if k in kv[ALIVE].committed)
    for bucket in (kv[REGISTRY], kv[ALIVE]):
        bucket.watch(gateway, replay=True)
    gateway.start_ticking(sim.now + sim.params.gateway_tick_s)
