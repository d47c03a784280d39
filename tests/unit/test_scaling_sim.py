"""The scaling model's logic (benchmarks/scaling_sim.py, issue 14) on small configurations:
KV TTL, age check and watch delivery; each gateway's event loop; when every gateway sees a
join, a leave and a silent death; determinism for a seed."""

from __future__ import annotations

from dataclasses import replace

import pytest
from benchmarks.scaling_sim import (
    ALIVE,
    REGISTRY,
    Announce,
    EventCosts,
    KvBucket,
    KvEntry,
    ModelParams,
    Scenario,
    SimGateway,
    Simulation,
    Watcher,
    fleet_payloads,
    simulate,
    small_template,
)

from packetflow.protocol.routing import Chosen

# No jitter, no CPU cost, no age-check floor: every time is exact.
EXACT = ModelParams(
    heartbeat_interval_s=1.0,
    alive_ttl_s=3.0,
    announce_interval_s=10.0,
    registry_ttl_s=30.0,
    age_check_floor_s=0.0,
    put_delay_s=0.001,
    watch_delay_s=0.0005,
    jitter=0.0,
    dial_probe_s=0.002,
    gateway_tick_s=0.5,
    departure_after_s=30.0,
    costs=EventCosts(announce=0.0, heartbeat=0.0, removal=0.0, tick_per_reactor=0.0),
)
SMALL = Scenario(reactors=8, gateways=3, joins=0, leaves=0, deaths=0,
                 inject_from_s=1.0, inject_until_s=3.0)  # fmt: skip
TEMPLATE = small_template()


class Recorder(Watcher):
    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        self.got: list[tuple[float, KvEntry]] = []

    def deliver(self, entry: KvEntry) -> None:
        self.got.append((self.sim.now, entry))


def _bucket(params: ModelParams, ttl: float) -> tuple[Simulation, KvBucket, Recorder]:
    sim = Simulation(params, seed=1)
    bucket = KvBucket(sim, ALIVE, ttl)
    recorder = Recorder(sim)
    bucket.watch(recorder, replay=False)
    return sim, bucket, recorder


# ---------------------------------------------------------------- the KV


def test_a_put_refreshes_the_ttl_and_expiry_removes_the_entry() -> None:
    sim, bucket, recorder = _bucket(EXACT, ttl=3.0)
    bucket.put("r1", 0.1, 10)
    sim.at(2.0, bucket.put, "r1", 0.2, 10)
    sim.run(4.5)
    assert "r1" in bucket.committed  # put again at 2.001: lives until 5.001
    sim.run(5.5)
    assert "r1" not in bucket.committed
    ops = [(entry.op, round(at, 6)) for at, entry in recorder.got]
    assert ops == [("put", 0.001), ("put", 2.001), ("expired", 5.001)]


def test_without_limit_markers_expiry_is_silent() -> None:
    sim, bucket, recorder = _bucket(replace(EXACT, limit_markers=False), ttl=3.0)
    bucket.put("r1", 0.1, 10)
    sim.run(10.0)
    assert bucket.expired == 1
    assert [entry.op for _, entry in recorder.got] == ["put"]


def test_the_age_check_runs_no_sooner_than_its_floor() -> None:
    sim, bucket, recorder = _bucket(replace(EXACT, age_check_floor_s=0.25), ttl=3.0)
    bucket.put("a", 0.1, 10)
    sim.at(0.1, bucket.put, "b", 0.1, 10)
    sim.run(10.0)
    expired = {entry.key: at for at, entry in recorder.got if entry.op == "expired"}
    assert expired["a"] == pytest.approx(3.001)
    # b was due at 3.101, but the check that ran at 3.001 re-arms 0.25 s later at best.
    assert expired["b"] == pytest.approx(3.251)


def test_a_guarded_delete_writes_one_marker_however_many_gateways_ask() -> None:
    sim, bucket, recorder = _bucket(EXACT, ttl=30.0)
    bucket.put("r1", 0.1, 10)
    sim.run(0.5)
    for _ in range(3):
        bucket.delete("r1", only_if_present=True)
    sim.run(1.0)
    assert [entry.op for _, entry in recorder.got] == ["put", "del"]


def test_each_watcher_receives_a_bucket_in_revision_order_despite_jitter() -> None:
    params = replace(EXACT, jitter=0.9, watch_delay_s=0.05)
    sim = Simulation(params, seed=7)
    kv = {REGISTRY: KvBucket(sim, REGISTRY, 30.0), ALIVE: KvBucket(sim, ALIVE, 30.0)}
    gateway = SimGateway(sim, "g", kv, lambda _: True)
    arrivals: list[KvEntry] = []
    original = gateway._handle

    def spy(entry: KvEntry) -> None:
        arrivals.append(entry)
        original(entry)

    gateway._handle = spy  # type: ignore[method-assign]
    kv[ALIVE].watch(gateway, replay=False)
    for i in range(200):
        sim.at(i * 0.001, kv[ALIVE].put, f"r{i % 7}", 0.1, 10)
    sim.run(2.0)
    revisions = [entry.revision for entry in arrivals]
    assert len(revisions) == 200
    assert revisions == sorted(revisions)


# ---------------------------------------------------------------- a gateway's event loop


def test_a_gateway_serves_events_one_at_a_time() -> None:
    params = replace(EXACT, costs=replace(EXACT.costs, announce=0.01))
    sim = Simulation(params, seed=1)
    kv = {REGISTRY: KvBucket(sim, REGISTRY, 30.0), ALIVE: KvBucket(sim, ALIVE, 30.0)}
    gateway = SimGateway(sim, "g", kv, lambda _: True)
    kv[REGISTRY].watch(gateway, replay=False)
    payloads = fleet_payloads(TEMPLATE, 5, sim.rng)
    for payload in payloads:
        announce = Announce.of(payload)
        kv[REGISTRY].put(announce.reactor_id, announce, announce.size)
    sim.run(1.0)
    joined = sorted(gateway.joined_at.values())
    first = 0.001 + 0.0005 + 0.002  # committed, delivered, dialled and probed
    assert joined == pytest.approx([first + 0.01 * (k + 1) for k in range(5)])
    assert len(gateway.registry) == 5
    assert all(r.health == "healthy" for r in gateway.registry)


def test_an_unreachable_reactor_is_registered_but_never_routable() -> None:
    sim = Simulation(EXACT, seed=1)
    kv = {REGISTRY: KvBucket(sim, REGISTRY, 30.0), ALIVE: KvBucket(sim, ALIVE, 30.0)}
    gateway = SimGateway(sim, "g", kv, lambda _: False)
    kv[REGISTRY].watch(gateway, replay=False)
    announce = Announce.of(fleet_payloads(TEMPLATE, 1, sim.rng)[0])
    kv[REGISTRY].put(announce.reactor_id, announce, announce.size)
    sim.run(1.0)
    assert announce.reactor_id in gateway.registry.table
    assert gateway.joined_at == {}
    assert gateway.registry.table.decide("cf", "ping", priority=5).__class__ is not Chosen


# ---------------------------------------------------------------- whole runs


def test_a_silent_death_leaves_every_gateway_at_ttl_plus_watch_delay() -> None:
    result = simulate(replace(SMALL, deaths=2), EXACT, TEMPLATE)
    deaths = result.of("death")
    assert len(deaths) == 2
    for death in deaths:
        assert death.last_heartbeat is not None
        committed = death.last_heartbeat + EXACT.put_delay_s
        want = committed + EXACT.alive_ttl_s + EXACT.watch_delay_s
        assert death.seen == pytest.approx([want] * SMALL.gateways)
        # Between TTL - heartbeat and TTL after the death itself.
        assert death.all_seen is not None
        assert EXACT.alive_ttl_s - EXACT.heartbeat_interval_s < death.all_seen
        assert death.all_seen < EXACT.alive_ttl_s + 0.01
    for gateway in result.gateways:
        for death in deaths:
            assert death.reactor_id not in gateway.registry.table
    # Its announce does not outlive it: one gateway's guarded delete removed it.
    for death in deaths:
        assert death.reactor_id not in result.kv[REGISTRY].committed


def test_without_markers_each_gateway_drops_the_dead_at_its_own_silence_timer() -> None:
    params = replace(EXACT, limit_markers=False, departure_after_s=3.0)
    result = simulate(replace(SMALL, deaths=1), params, TEMPLATE)
    (death,) = result.of("death")
    assert death.last_heartbeat is not None
    heard = death.last_heartbeat + params.put_delay_s + params.watch_delay_s
    for seen in death.seen:
        assert seen is not None
        assert heard + params.departure_after_s < seen
        assert seen <= heard + params.departure_after_s + params.gateway_tick_s + 1e-9


def test_a_join_reaches_every_gateway_after_commit_watch_handling_and_probe() -> None:
    params = replace(EXACT, costs=replace(EXACT.costs, announce=0.004))
    result = simulate(replace(SMALL, joins=3), params, TEMPLATE)
    want = params.put_delay_s + params.watch_delay_s + 0.004 + params.dial_probe_s
    for join in result.of("join"):
        assert join.all_seen == pytest.approx(want)
        assert join.first_seen == pytest.approx(want)
    for gateway in result.gateways:
        assert len(gateway.registry) == SMALL.reactors + 3


def test_a_graceful_leave_reaches_every_gateway_after_commit_and_watch() -> None:
    result = simulate(replace(SMALL, leaves=2), EXACT, TEMPLATE)
    for leave in result.of("leave"):
        assert leave.all_seen == pytest.approx(EXACT.put_delay_s + EXACT.watch_delay_s)
    for gateway in result.gateways:
        assert len(gateway.registry) == SMALL.reactors - 2


def test_a_restarted_gateway_replays_the_live_fleet_and_skips_the_dead() -> None:
    scenario = replace(SMALL, deaths=1, inject_from_s=1.0, inject_until_s=1.0,
                       restart_gateway_at_s=2.0)  # fmt: skip
    result = simulate(scenario, EXACT, TEMPLATE)
    # Restarted before the dead reactor's TTL ran out: it replays that announce too, but
    # the dial fails, and the rest are all routable.
    assert result.restart_full_view_s is not None
    assert 0.0 < result.restart_full_view_s < 0.01


def test_the_same_seed_gives_the_same_run_and_another_seed_another() -> None:
    scenario = replace(SMALL, joins=2, leaves=2, deaths=2)
    params = ModelParams(heartbeat_interval_s=1.0, alive_ttl_s=3.0)

    def seen(seed: int) -> list[tuple[str, str, float, list[float | None]]]:
        result = simulate(replace(scenario, seed=seed), params, TEMPLATE)
        return [(e.kind, e.reactor_id, e.at, e.seen) for e in result.events]

    assert seen(3) == seen(3)
    assert seen(3) != seen(4)


def test_every_gateway_routes_from_its_own_table() -> None:
    result = simulate(replace(SMALL, decisions_per_gateway=5), EXACT, TEMPLATE)
    tables = {id(g.registry.table) for g in result.gateways}
    assert len(tables) == SMALL.gateways
    for gateway in result.gateways:
        assert len(gateway.first_decision_s) + len(gateway.decision_s) == 5
        assert isinstance(gateway.registry.table.decide("cf", "ping", priority=5), Chosen)
