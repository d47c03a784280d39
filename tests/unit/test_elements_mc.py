"""mc:analyze, mc:learn and mc:predict of DESIGN §10: real statistics, a real least-squares
fit, trend extrapolation with an interval, the bounded model store, and PF002 naming the
bad field for bad or degenerate input.
"""

from __future__ import annotations

import json
import logging
import random
import statistics
import time
from pathlib import Path
from typing import Any

import pytest

from packetflow.protocol.errors import PacketFlowError
from packetflow.reactor.context import Context
from packetflow.reactor.elements import mc
from packetflow.reactor.registry import Registry

D = "payload.packet.data"


def make_ctx(tmp_path: Path, inputs: dict[str, Any] | None = None, runtime: Any = None) -> Context:
    return Context(
        packet_id="p",
        group="mc",
        element="x",
        priority=5,
        deadline=time.monotonic() + 30,
        logger=logging.getLogger("t"),
        data_dir=tmp_path,
        inputs=inputs or {},
        runtime=runtime,
    )


@pytest.fixture
def ctx(tmp_path: Path) -> Context:
    return make_ctx(tmp_path)


@pytest.fixture
def store() -> mc.ModelStore:
    return mc.ModelStore()


def fails(call: Any, code: str, field: str | None = None) -> PacketFlowError:
    with pytest.raises(PacketFlowError) as info:
        call()
    err = info.value
    assert err.code == code, (err.code, err.message)
    if field is not None:
        assert err.field == f"{D}.{field}", err.field
    return err


# y = 2·x1 + 3·x2 + 1, exactly
EXACT = [
    {"x": [x1, x2], "y": 2 * x1 + 3 * x2 + 1}
    for x1, x2 in [(0, 0), (1, 0), (0, 1), (2, 3), (5, -1), (-3, 4), (1.5, 2.5)]
]


def test_register_adds_analyze_learn_predict_sharing_one_store(ctx: Context) -> None:
    registry = Registry()
    mc.register(registry)
    assert {s.key for s in registry} == {
        "mc:analyze",
        "mc:learn",
        "mc:predict",
        "mc:adapt",
        "mc:optimize",
        "mc:update_affinity",
    }
    learn = registry.get("mc", "learn")
    predict = registry.get("mc", "predict")
    assert learn is not None and predict is not None
    assert not learn.cpu_bound, "a process pool would not share the model store"
    model = learn.handler({"samples": EXACT, "model_id": "m1"}, ctx)
    out = predict.handler({"model_id": "m1", "x": [10, 10]}, ctx)
    assert model["model_id"] == "m1"
    assert out["predictions"] == [pytest.approx(51.0)]
    other = Registry()
    mc.register(other)
    handler = other.get("mc", "predict")
    assert handler is not None
    fails(lambda: handler.handler({"model_id": "m1", "x": [1, 1]}, ctx), "PF002", "model_id")


# ---------------------------------------------------------------------------------------------
# mc:analyze


def test_analyze_descriptive_statistics(ctx: Context) -> None:
    values = list(range(1, 101))
    out = mc.analyze({"input": values}, ctx)
    assert out == {
        "analysis_type": "statistics",
        "count": 100,
        "mean": 50.5,
        "median": 50.5,
        "stddev": pytest.approx(statistics.stdev(values)),
        "min": 1,
        "max": 100,
        "p95": pytest.approx(95.05),
        "p99": pytest.approx(99.01),
    }
    json.dumps(out)


def test_analyze_small_inputs_records_and_upstream(tmp_path: Path, ctx: Context) -> None:
    one = mc.analyze({"input": [4.5]}, ctx)
    assert one["count"] == 1 and one["stddev"] == 0.0 and one["p99"] == 4.5
    empty = mc.analyze({"input": []}, ctx)
    assert empty["count"] == 0 and empty["mean"] is None and empty["p95"] is None
    recs = [{"ms": 10}, {"ms": None}, {}, {"ms": 30}]
    assert mc.analyze({"input": recs, "field": "ms"}, ctx)["mean"] == 20.0
    up = make_ctx(tmp_path, inputs={"f": {"result": [1, 2, 3, None], "kept": 4}})
    out = mc.analyze({}, up)
    assert out["count"] == 3 and out["median"] == 2.0


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"input": [1, "2"]}, "input[1]"),
        ({"input": [True]}, "input[0]"),
        ({"input": 5}, "input"),
        ({"input": [{"v": "x"}], "field": "v"}, "input[0].v"),
        ({"input": [1, 2], "field": 3}, "field"),
        ({"input": [1], "analysis_type": "fourier"}, "analysis_type"),
        ({}, "input"),
    ],
)
def test_analyze_bad_input_is_pf002(ctx: Context, data: dict[str, Any], field: str) -> None:
    fails(lambda: mc.analyze(data, ctx), "PF002", field)


class FakeRuntime:
    def chemical_health(self) -> dict[str, Any]:
        return {
            "affinity_effectiveness": 0.91,
            "molecular_stability": 0.97,
            "bond_success_rate": 0.995,
            "optimization_performance": 0.5,
        }


def test_analyze_chemical_health_reads_the_runtime(tmp_path: Path) -> None:
    """PFAP §9.1.3."""
    ctx = make_ctx(tmp_path, runtime=FakeRuntime())
    out = mc.analyze({"analysis_type": "chemical_health"}, ctx)
    assert out == {"analysis_type": "chemical_health", "metrics": FakeRuntime().chemical_health()}
    some = mc.analyze({"analysis_type": "chemical_health", "metrics": ["bond_success_rate"]}, ctx)
    assert some["metrics"] == {"bond_success_rate": 0.995}
    assert some["unavailable"] == []
    partial = mc.analyze(
        {"analysis_type": "chemical_health", "metrics": ["bond_success_rate", "vibes"]}, ctx
    )
    assert partial["metrics"] == {"bond_success_rate": 0.995, "vibes": None}
    assert partial["unavailable"] == ["vibes"]
    fails(
        lambda: mc.analyze({"analysis_type": "chemical_health", "metrics": [3]}, ctx),
        "PF002",
        "metrics[0]",
    )
    fails(
        lambda: mc.analyze({"analysis_type": "chemical_health", "metrics": "all"}, ctx),
        "PF002",
        "metrics",
    )


def test_analyze_chemical_health_without_runtime_is_pf503(ctx: Context) -> None:
    err = fails(lambda: mc.analyze({"analysis_type": "chemical_health"}, ctx), "PF503")
    assert err.details["reason"] == "no_runtime"
    assert err.retryable


# ---------------------------------------------------------------------------------------------
# mc:learn


def test_learn_recovers_an_exact_linear_model(ctx: Context, store: mc.ModelStore) -> None:
    out = mc.learn({"samples": EXACT}, ctx, store)
    assert out["coefficients"] == [pytest.approx(2.0), pytest.approx(3.0)]
    assert out["intercept"] == pytest.approx(1.0)
    assert out["r2"] == pytest.approx(1.0)
    assert out["samples"] == len(EXACT)
    assert out["features"] == 2
    assert out["residual_stddev"] == pytest.approx(0.0, abs=1e-9)
    assert out["model_id"].startswith("model_")
    assert store.get(out["model_id"]) is not None
    json.dumps(out)


def test_learn_matches_the_closed_form_simple_regression(
    ctx: Context, store: mc.ModelStore
) -> None:
    rnd = random.Random(7)
    xs = [rnd.uniform(-10, 10) for _ in range(200)]
    ys = [0.5 * x - 4 + rnd.gauss(0, 1) for x in xs]
    out = mc.learn({"samples": [{"x": x, "y": y} for x, y in zip(xs, ys, strict=True)]}, ctx, store)
    slope, intercept = statistics.linear_regression(xs, ys)
    assert out["coefficients"] == [pytest.approx(slope)]
    assert out["intercept"] == pytest.approx(intercept)
    assert out["r2"] == pytest.approx(statistics.correlation(xs, ys) ** 2)
    assert 0.9 < out["residual_stddev"] < 1.1


def test_learn_takes_samples_from_upstream_and_a_given_model_id(
    tmp_path: Path, store: mc.ModelStore
) -> None:
    ctx = make_ctx(tmp_path, inputs={"load": {"result": EXACT}})
    out = mc.learn({"model_id": "sales.v2"}, ctx, store)
    assert out["model_id"] == "sales.v2"
    assert out["coefficients"] == [pytest.approx(2.0), pytest.approx(3.0)]


@pytest.mark.parametrize(
    ("samples", "field", "words"),
    [
        ([{"x": [1, 2], "y": 1}, {"x": [2, 1], "y": 2}], "samples", "at least 3"),
        ([{"x": [i, 2 * i], "y": i} for i in range(6)], "samples", "collinear"),
        ([{"x": [i, 1, i * i], "y": i} for i in range(6)], "samples", "constant"),
        ([{"x": [1, 2, 3], "y": 1}, {"x": [2, 3, 5], "y": 2}, {"x": [1, 1, 2], "y": 3},
          {"x": [0, 1, 1], "y": 0}], "samples", "collinear"),
    ],
)  # fmt: skip
def test_learn_degenerate_samples_are_pf002_with_a_clear_message(
    ctx: Context, store: mc.ModelStore, samples: list[Any], field: str, words: str
) -> None:
    err = fails(lambda: mc.learn({"samples": samples}, ctx, store), "PF002", field)
    assert words in err.message
    assert err.validation_rule == "degenerate_fit"
    assert len(store) == 0


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({}, "samples"),
        ({"samples": []}, "samples"),
        ({"samples": {"x": [1], "y": 1}}, "samples"),
        ({"samples": [5]}, "samples[0]"),
        ({"samples": [{"y": 1}]}, "samples[0].x"),
        ({"samples": [{"x": [1]}]}, "samples[0].y"),
        ({"samples": [{"x": [1], "y": "1"}]}, "samples[0].y"),
        ({"samples": [{"x": [], "y": 1}]}, "samples[0].x"),
        ({"samples": [{"x": [1, "a"], "y": 1}]}, "samples[0].x[1]"),
        ({"samples": [{"x": [1, 2], "y": 1}, {"x": [1, 2], "y": 1}, {"x": [1], "y": 1}]},
         "samples[2].x"),
        ({"samples": EXACT, "model_id": "../../etc"}, "model_id"),
        ({"samples": EXACT, "model_id": 7}, "model_id"),
    ],
)  # fmt: skip
def test_learn_bad_input_is_pf002(
    ctx: Context, store: mc.ModelStore, data: dict[str, Any], field: str
) -> None:
    fails(lambda: mc.learn(data, ctx, store), "PF002", field)


def test_model_store_is_bounded_and_evicts_the_oldest() -> None:
    store = mc.ModelStore(cap=3)
    for i in range(4):
        store.put(mc.Model(f"m{i}", (1.0,), 0.0, 1.0, 2, 0.0))
    assert len(store) == 3
    assert store.get("m0") is None
    store.put(mc.Model("m1", (2.0,), 0.0, 1.0, 2, 0.0))  # re-stored: now the newest
    store.put(mc.Model("m4", (1.0,), 0.0, 1.0, 2, 0.0))
    assert store.get("m2") is None
    assert store.get("m1") is not None and store.get("m1").coefficients == (2.0,)  # type: ignore[union-attr]
    assert mc.ModelStore()._cap == mc.MAX_MODELS == 1000


# ---------------------------------------------------------------------------------------------
# mc:predict


def test_predict_linear_trend_of_an_exact_line(ctx: Context, store: mc.ModelStore) -> None:
    out = mc.predict({"series": [3, 5, 7, 9], "horizon": 3}, ctx, store)
    assert out["predictions"] == [pytest.approx(v) for v in (11, 13, 15)]
    assert out["slope"] == pytest.approx(2.0)
    assert out["interval"]["level"] == 0.95
    assert out["interval"]["lower"] == pytest.approx(out["predictions"])
    assert out["interval"]["upper"] == pytest.approx(out["predictions"])
    assert out["method"] == "linear_trend"
    json.dumps(out)


def test_predict_trend_interval_is_1_96_residual_stddevs(
    ctx: Context, store: mc.ModelStore
) -> None:
    series = [1.0, 3.0, 2.0, 4.0, 3.0, 5.0]
    out = mc.predict({"series": series}, ctx, store)
    slope, intercept = statistics.linear_regression(range(6), series)
    resid = [y - (intercept + slope * i) for i, y in enumerate(series)]
    sigma = (sum(e * e for e in resid) / 4) ** 0.5
    assert out["predictions"] == [pytest.approx(intercept + slope * 6)]
    assert out["residual_stddev"] == pytest.approx(sigma)
    assert out["interval"]["upper"][0] - out["predictions"][0] == pytest.approx(1.96 * sigma)
    assert out["predictions"][0] - out["interval"]["lower"][0] == pytest.approx(1.96 * sigma)


def test_predict_trend_from_input_or_upstream(tmp_path: Path, store: mc.ModelStore) -> None:
    ctx = make_ctx(tmp_path)
    assert mc.predict({"input": [1, 2], "horizon": 2}, ctx, store)["predictions"] == [
        pytest.approx(3.0),
        pytest.approx(4.0),
    ]
    up = make_ctx(tmp_path, inputs={"a": {"result": [10, 20, 30]}})
    assert mc.predict({}, up, store)["predictions"] == [pytest.approx(40.0)]


def test_predict_with_a_learned_model_single_and_batch(ctx: Context, store: mc.ModelStore) -> None:
    mid = mc.learn({"samples": EXACT}, ctx, store)["model_id"]
    one = mc.predict({"model_id": mid, "x": [1, 1]}, ctx, store)
    assert one["predictions"] == [pytest.approx(6.0)]
    assert one["model_id"] == mid
    batch = mc.predict({"model_id": mid, "x": [[0, 0], [2, 1]]}, ctx, store)
    assert batch["predictions"] == [pytest.approx(1.0), pytest.approx(8.0)]
    assert batch["interval"]["lower"] == pytest.approx(batch["predictions"], abs=1e-6)


def test_predict_with_an_inline_or_upstream_model(tmp_path: Path, store: mc.ModelStore) -> None:
    """Models live on the reactor that learned them; passing learn's result works anywhere."""
    ctx = make_ctx(tmp_path)
    learned = mc.learn({"samples": EXACT}, ctx, mc.ModelStore())
    out = mc.predict({"model": learned, "x": [1, 1]}, ctx, store)
    assert out["predictions"] == [pytest.approx(6.0)]
    up = make_ctx(tmp_path, inputs={"learn": learned})
    assert mc.predict({"x": [[0, 1]]}, up, store)["predictions"] == [pytest.approx(4.0)]
    single = mc.predict({"model": {"coefficients": [2], "intercept": 1}, "x": 3}, ctx, store)
    assert single["predictions"] == [7.0]


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"model_id": "nope", "x": [1, 2]}, "model_id"),
        ({"model_id": 5, "x": [1, 2]}, "model_id"),
        ({"x": [1, 2]}, "model_id"),
        ({"model_id": "m"}, "x"),
        ({"model_id": "m", "x": [1]}, "x"),
        ({"model_id": "m", "x": [[1, 2], [1]]}, "x[1]"),
        ({"model_id": "m", "x": [1, "2"]}, "x[1]"),
        ({"model_id": "m", "x": "1,2"}, "x"),
        ({"model": {"coefficients": [], "intercept": 0}, "x": []}, "model.coefficients"),
        ({"model": {"coefficients": [1], "intercept": "0"}, "x": [1]}, "model.intercept"),
        ({"model": [1, 2], "x": [1]}, "model"),
        ({"series": [1]}, "series"),
        ({"series": []}, "series"),
        ({"series": "1,2,3"}, "series"),
        ({"series": [1, None, 3]}, "series[1]"),
        ({"series": [1, 2], "horizon": 0}, "horizon"),
        ({"series": [1, 2], "horizon": mc.MAX_HORIZON + 1}, "horizon"),
        ({"series": [1, 2], "horizon": 2.5}, "horizon"),
        ({}, "series"),
    ],
)
def test_predict_bad_input_is_pf002(
    ctx: Context, store: mc.ModelStore, data: dict[str, Any], field: str
) -> None:
    store.put(mc.Model("m", (1.0, 1.0), 0.0, 1.0, 3, 0.0))
    err = fails(lambda: mc.predict(data, ctx, store), "PF002", field)
    if field == "model_id" and data.get("model_id") == "nope":
        assert "pass mc:learn's result as data.model" in err.message


def test_least_squares_is_a_pure_function() -> None:
    fit = mc.least_squares([[1.0], [2.0], [3.0]], [2.0, 4.0, 6.5])
    assert fit.coefficients == (pytest.approx(2.25),)
    assert fit.intercept == pytest.approx(-1 / 3)
    with pytest.raises(mc.DegenerateFit):
        mc.least_squares([[1.0], [1.0], [1.0]], [1.0, 2.0, 3.0])


# ---------------------------------------------------------------------------------------------
# mc:adapt (DESIGN §10: adjusts the reactor's concurrency from observed load)


def decide(old: int = 100, **kw: Any) -> mc.AdaptDecision:
    args: dict[str, Any] = {"queue_depth": 0, "cpu_percent": 50.0, "p99_ms": 10.0,
                            "baseline_p99_ms": 10.0, "latency_samples": 100}  # fmt: skip
    args.update(kw)
    return mc.adapt_decision(old, **args)


def test_adapt_raises_by_a_quarter_when_packets_queue_and_cpu_is_spare() -> None:
    assert decide(queue_depth=5, cpu_percent=40.0) == mc.AdaptDecision(125, "queue_backlog")
    assert decide(1, queue_depth=1, cpu_percent=10.0).new == 2, "at least one step"
    assert decide(9000, queue_depth=1, cpu_percent=10.0).new == 10_000, "bounded"
    # queued but the CPU is busy (80..95 %): hold
    assert decide(queue_depth=5, cpu_percent=85.0) == mc.AdaptDecision(100, "steady")


def test_adapt_lowers_by_a_quarter_when_cpu_saturates_or_latency_doubles() -> None:
    assert decide(cpu_percent=96.0, queue_depth=9) == mc.AdaptDecision(75, "cpu_saturated")
    assert decide(p99_ms=25.0) == mc.AdaptDecision(75, "latency_degraded")
    assert decide(p99_ms=19.0).reason == "steady"
    assert decide(2, cpu_percent=99.0).new == 1 and decide(1, cpu_percent=99.0).new == 1


def test_adapt_ignores_latency_without_a_baseline_or_enough_samples() -> None:
    assert decide(p99_ms=500.0, baseline_p99_ms=None).reason == "steady"
    assert decide(p99_ms=500.0, latency_samples=mc.MIN_LATENCY_SAMPLES - 1).reason == "steady"


async def test_adapt_handler_applies_the_decision(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from packetflow.reactor.runtime import ReactorConfig, ReactorRuntime

    async def cpu() -> float:
        return 12.5

    monkeypatch.setattr(mc, "system_cpu_percent", cpu)
    rt = ReactorRuntime(ReactorConfig(max_concurrent_packets=8), Registry())
    try:
        ctx = make_ctx(tmp_path, runtime=rt)
        out = await mc.adapt({}, ctx)
        assert out["old"] == 8 and out["new"] == 8 and out["reason"] == "steady"
        assert out["observed"]["cpu_percent"] == 12.5
        assert out["observed"]["queue_depth"] == 0
        assert set(out["observed"]) >= {"p99_ms", "avg_ms", "baseline_p99_ms", "in_flight"}
        monkeypatch.setattr(mc, "system_cpu_percent", _const(99.0))
        out = await mc.adapt({}, ctx)
        assert (out["old"], out["new"], out["reason"]) == (8, 6, "cpu_saturated")
        assert rt.config.max_concurrent_packets == 6
    finally:
        rt.close()


def _const(value: float) -> Any:
    async def cpu() -> float:
        return value

    return cpu


async def test_adapt_measures_real_cpu(tmp_path: Path) -> None:
    from packetflow.reactor.runtime import ReactorConfig, ReactorRuntime

    rt = ReactorRuntime(ReactorConfig(), Registry())
    try:
        out = await mc.adapt({}, make_ctx(tmp_path, runtime=rt))
        assert 0.0 <= out["observed"]["cpu_percent"] <= 100.0
        assert 1 <= out["new"] <= 10_000
    finally:
        rt.close()


async def test_adapt_needs_a_runtime_pf503(ctx: Context) -> None:
    with pytest.raises(PacketFlowError) as info:
        await mc.adapt({}, ctx)
    assert info.value.code == "PF503"


# ---------------------------------------------------------------------------------------------
# mc:optimize and mc:update_affinity: forwarded to the gateway, which serves them itself


def _forwarding_ctx(tmp_path: Path, gateway: Any, **meta: Any) -> Context:
    c = make_ctx(tmp_path)
    c.gateway = gateway
    c.metadata = meta
    return c


async def test_update_affinity_is_forwarded_to_the_gateway(tmp_path: Path) -> None:
    from .test_elements_co import FakeGateway

    async def serve(g: str, e: str, data: dict, opts: dict) -> tuple[Any, str]:
        assert (g, e) == ("mc", "update_affinity")
        assert "destination_id" not in opts, "gateway-local: no destination"
        assert opts["metadata"] == {"forwarded_by": "reactor"}
        return {"matrix_version": data["version"], "applied": True,
                "processing_stats": {"duration_ms": 1}}, "gateway"  # fmt: skip

    gw = FakeGateway(on_submit=serve)
    data = {"matrix_updates": {"cf": {"cpu_intensive": 0.95}}, "version": "1.1"}
    out = await mc.update_affinity(data, _forwarding_ctx(tmp_path, gw))
    assert out == {"matrix_version": "1.1", "applied": True}
    assert gw.submits[0][2] == data


async def test_optimize_is_forwarded_and_errors_come_back(tmp_path: Path) -> None:
    from .test_elements_co import FakeGateway

    async def refuse(g: str, e: str, data: dict, opts: dict) -> tuple[Any, str]:
        raise PacketFlowError("admin only", code="PF002", field=f"{D}.apply")

    out_gw = FakeGateway(on_submit=refuse)
    with pytest.raises(PacketFlowError) as info:
        await mc.optimize({"apply": True}, _forwarding_ctx(tmp_path, out_gw))
    assert info.value.code == "PF002" and info.value.field == f"{D}.apply"


async def test_forwarding_needs_a_gateway_and_never_loops(tmp_path: Path) -> None:
    from .test_elements_co import FakeGateway

    for call in (mc.optimize({}, make_ctx(tmp_path)),
                 mc.optimize({}, _forwarding_ctx(tmp_path, FakeGateway(),
                                                 forwarded_by="reactor-a"))):  # fmt: skip
        with pytest.raises(PacketFlowError) as info:
            await call
        assert info.value.code == "PF503"


@pytest.mark.parametrize("data", [{}, {"matrix_updates": [1]}])
async def test_update_affinity_bad_input_pf002(tmp_path: Path, data: dict) -> None:
    from .test_elements_co import FakeGateway

    with pytest.raises(PacketFlowError) as info:
        await mc.update_affinity(data, _forwarding_ctx(tmp_path, FakeGateway()))
    assert info.value.code == "PF002" and info.value.field == f"{D}.matrix_updates"
