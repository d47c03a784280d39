"""The mc (meta-computational) elements of DESIGN §10: analyze (descriptive statistics, or the
§9.1.3 chemical health from the runtime's history), learn (ordinary least squares), predict
(linear trend or a learned model), adapt (concurrency from observed load), and optimize and
update_affinity (forwarded to the gateway, which owns the affinity matrix).

mc:adapt tunes this reactor's concurrency limit from its observed load (``adapt_decision``,
a pure function, holds the rule). mc:optimize and mc:update_affinity act on the gateway's
affinity matrix: the gateway serves them itself when a client submits them, and a reactor
that receives one forwards it to the gateway over its own connection (PF503 without one).

analyze, learn and predict are synchronous and run in the runtime's thread pool; ``learn``
and ``predict`` share one ``ModelStore`` per registry, so they must not be registered
``cpu_bound`` (a process pool would give each call its own empty store). adapt, optimize and
update_affinity are coroutines on the event loop.

How the regression works: the features are centred (which absorbs the intercept) and the
centred design matrix is factorised by modified Gram-Schmidt, QR without ever forming
XᵀX, so the conditioning is not squared. A column whose remaining norm after
orthogonalisation falls below COLLINEAR_TOLERANCE of its original norm is (nearly) a linear
combination of the columns before it, and the fit is refused with PF002 rather than
returning meaningless coefficients.
"""

from __future__ import annotations

import inspect
import math
import re
import threading
import uuid
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from weakref import WeakKeyDictionary

from ...protocol.errors import InternalError, ServiceUnavailable, invalid_field
from ..context import Context
from ..registry import Registry
from .contract import Deadline, bad, data_path, is_number, missing, show
from .ed import per_runtime, runtime_of
from .rm import MAX_CONCURRENT, MIN_CONCURRENT, set_max_concurrent, system_cpu_percent
from .summary import finite, mean, median, percentile, stddev

if TYPE_CHECKING:
    from ..runtime import ReactorRuntime

# ---------------------------------------------------------------------------------------------
# Limits (STYLE 5)

# Models kept per reactor; the oldest is evicted first. A model is a few floats, so this
# bounds memory to well under a megabyte while covering any realistic working set.
MAX_MODELS = 1000
# Pure-Python QR costs about n·p² multiply-adds: 100 features by 100,000 samples is 1e9,
# over a minute of CPU here (2,000 by 100 takes 1.5 s); these caps keep one packet well
# inside mc:learn's 600 s timeout (§5.2.5).
MAX_FEATURES = 100
MAX_SAMPLES = 100_000
# mc:predict returns one value per step; 10,000 steps is ~200 KB of JSON, within one frame.
MAX_HORIZON = 10_000
# Relative norm below which a centred feature column counts as collinear (see module doc).
COLLINEAR_TOLERANCE = 1e-9
# Two-sided 95 % normal quantile for the prediction interval.
Z_95 = 1.96

ANALYSIS_TYPES = ("statistics", "chemical_health")
_MODEL_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")

# ---------------------------------------------------------------------------------------------
# Models


@dataclass(frozen=True, slots=True)
class Model:
    """A fitted linear model y = intercept + Σ coefficients[j]·x[j]."""

    model_id: str
    coefficients: tuple[float, ...]
    intercept: float
    r2: float
    samples: int
    residual_stddev: float

    def predict(self, x: list[float]) -> float:
        return self.intercept + math.fsum(c * v for c, v in zip(self.coefficients, x, strict=True))

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_id": self.model_id,
            "coefficients": list(self.coefficients),
            "intercept": self.intercept,
            "r2": self.r2,
            "samples": self.samples,
            "features": len(self.coefficients),
            "residual_stddev": self.residual_stddev,
        }


class ModelStore:
    """Learned models by id, at most ``cap`` of them; storing one more evicts the oldest
    (re-storing an id counts as new). Thread-safe: handlers run in a thread pool."""

    def __init__(self, cap: int = MAX_MODELS) -> None:
        self._cap = cap
        self._models: OrderedDict[str, Model] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, model: Model) -> None:
        with self._lock:
            self._models.pop(model.model_id, None)
            self._models[model.model_id] = model
            while len(self._models) > self._cap:
                self._models.popitem(last=False)

    def get(self, model_id: str) -> Model | None:
        with self._lock:
            return self._models.get(model_id)

    def __len__(self) -> int:
        with self._lock:
            return len(self._models)


# ---------------------------------------------------------------------------------------------
# Least squares (pure functions)


class DegenerateFit(ValueError):
    """The samples do not determine a unique least-squares fit."""


@dataclass(frozen=True, slots=True)
class Fit:
    coefficients: tuple[float, ...]
    intercept: float
    r2: float
    residual_stddev: float


def least_squares(xs: list[list[float]], ys: list[float]) -> Fit:
    """Ordinary least squares with an intercept (module doc: centring + modified
    Gram-Schmidt). Raises DegenerateFit when there are fewer samples than features + 1,
    a feature is constant, or a feature is collinear with earlier ones."""
    n, p = len(xs), len(xs[0])
    if n < p + 1:
        raise DegenerateFit(
            f"{n} samples cannot determine {p} coefficients and an intercept; need at least {p + 1}"
        )
    x_means = [math.fsum(row[j] for row in xs) / n for j in range(p)]
    y_mean = math.fsum(ys) / n
    cols = [[row[j] - x_means[j] for row in xs] for j in range(p)]
    resid = [y - y_mean for y in ys]
    original = [math.sqrt(math.fsum(v * v for v in col)) for col in cols]
    r = [[0.0] * p for _ in range(p)]
    z = [0.0] * p
    for k in range(p):
        if original[k] == 0.0:
            raise DegenerateFit(
                f"feature x[{k}] is constant, so it cannot be told apart from the intercept"
            )
        # cols[k] now holds only what x[k] adds beyond x[0..k-1].
        norm = math.sqrt(math.fsum(v * v for v in cols[k]))
        if norm <= COLLINEAR_TOLERANCE * original[k]:
            raise DegenerateFit(
                f"feature x[{k}] is a linear combination of the features before it (collinear)"
            )
        q = [v / norm for v in cols[k]]
        r[k][k] = norm
        for j in range(k + 1, p):
            r[k][j] = math.fsum(a * b for a, b in zip(q, cols[j], strict=True))
            cols[j] = [b - r[k][j] * a for a, b in zip(q, cols[j], strict=True)]
        z[k] = math.fsum(a * b for a, b in zip(q, resid, strict=True))
        resid = [b - z[k] * a for a, b in zip(q, resid, strict=True)]
    beta = [0.0] * p
    for k in range(p - 1, -1, -1):
        beta[k] = (z[k] - math.fsum(r[k][j] * beta[j] for j in range(k + 1, p))) / r[k][k]
    intercept = y_mean - math.fsum(b * m for b, m in zip(beta, x_means, strict=True))
    residuals = [
        y - intercept - math.fsum(b * v for b, v in zip(beta, row, strict=True))
        for row, y in zip(xs, ys, strict=True)
    ]
    sse = math.fsum(e * e for e in residuals)
    sst = math.fsum((y - y_mean) ** 2 for y in ys)
    r2 = 1.0 - sse / sst if sst > 0 else 1.0
    dof = n - p - 1
    sigma = math.sqrt(sse / dof) if dof > 0 else 0.0
    for value in (*beta, intercept, r2, sigma):
        finite(value, "least squares fit")
    return Fit(tuple(beta), intercept, r2, sigma)


def linear_trend(series: list[float]) -> Fit:
    """Least-squares line through (i, series[i]); needs at least two points."""
    return least_squares([[float(i)] for i in range(len(series))], series)


# ---------------------------------------------------------------------------------------------
# mc:analyze


def _all_numbers(values: list[Any], path: str) -> None:
    """PF002 naming ``<path>[i]`` for the first item of ``values`` that is not a number."""
    for i, v in enumerate(values):
        if not is_number(v):
            raise bad(f"{path}[{i}]", "number", v, "type")


def _numbers(value: Any, path: str, field: str | None) -> list[float]:
    """Numbers from a list (or from each record's ``field``); nulls and missing are skipped."""
    if not isinstance(value, list):
        raise bad(path, "array of numbers", value, "type")
    out: list[float] = []
    for i, item in enumerate(value):
        where = f"{path}[{i}]"
        if field is not None:
            if not isinstance(item, dict):
                raise bad(where, "object", item, "type")
            item = item.get(field)
            where = f"{where}.{field}"
        if item is None:
            continue
        if not is_number(item):
            raise bad(where, "number", item, "type")
        out.append(item)
    return out


def describe(values: list[float]) -> dict[str, Any]:
    """count, mean, median, stddev (sample, n - 1), min, max, p95, p99 (type-7 percentiles);
    everything but count is null for no values."""
    if not values:
        return dict.fromkeys(("mean", "median", "stddev", "min", "max", "p95", "p99"), None) | {
            "count": 0
        }
    ordered = sorted(values)
    return {
        "count": len(values),
        "mean": mean(values),
        "median": median(values),
        "stddev": stddev(values),
        "min": ordered[0],
        "max": ordered[-1],
        "p95": percentile(ordered, 95),
        "p99": percentile(ordered, 99),
    }


def _chemical_health(data: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """§9.1.3 from the runtime's real history (``ctx.runtime.chemical_health()``, a sync
    method returning a dict of metric -> value). PF503 when no runtime is attached."""
    source = getattr(ctx.runtime, "chemical_health", None) if ctx.runtime is not None else None
    if source is None:
        raise ServiceUnavailable(
            "mc:analyze chemical_health needs the reactor runtime's history, "
            "and this reactor has none",
            details={"reason": "no_runtime"},
        )
    metrics = source()
    if inspect.isawaitable(metrics) or not isinstance(metrics, dict):
        if inspect.iscoroutine(metrics):
            metrics.close()
        raise InternalError("runtime.chemical_health() must return a dict synchronously")
    requested = data.get("metrics")
    if requested is None:
        return {"analysis_type": "chemical_health", "metrics": metrics}
    if not isinstance(requested, list):
        raise bad("metrics", "array of metric names", requested, "type")
    for i, name in enumerate(requested):
        if not isinstance(name, str) or not name:
            raise bad(f"metrics[{i}]", "metric name (string)", name, "type")
    # A name the runtime does not measure (yet) answers null and is listed, rather than
    # failing the whole analysis: §9.1.3's own example asks for four names.
    unavailable = [k for k in requested if k not in metrics]
    return {
        "analysis_type": "chemical_health",
        "metrics": {k: metrics.get(k) for k in requested},
        "unavailable": unavailable,
    }


def analyze(data: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """mc:analyze: descriptive statistics of ``input`` (numbers, or records with ``field``),
    or with ``analysis_type`` "chemical_health" the §9.1.3 metrics (optionally only the
    ``metrics`` named). Raises PF002 for non-numbers, PF503 without a runtime."""
    kind = data.get("analysis_type", "statistics")
    if kind not in ANALYSIS_TYPES:
        raise bad("analysis_type", " or ".join(ANALYSIS_TYPES), kind, "enum")
    if kind == "chemical_health":
        return _chemical_health(data, ctx)
    field = data.get("field")
    if field is not None and (not isinstance(field, str) or not field):
        raise bad("field", "non-empty string", field, "type")
    return {
        "analysis_type": "statistics",
        **describe(_numbers(ctx.input_value(data), "input", field)),
    }


# ---------------------------------------------------------------------------------------------
# mc:learn


def _named_or_input(data: dict[str, Any], ctx: Context, name: str) -> tuple[Any, str]:
    """``data[name]``, else DESIGN §10's input rule; (value, its data path for errors)."""
    if name in data:
        return data[name], name
    if "input" in data or len(ctx.inputs) == 1:
        return ctx.input_value(data), "input"
    raise missing(name)


def _samples(value: Any, path: str, deadline: Deadline) -> tuple[list[list[float]], list[float]]:
    if not isinstance(value, list) or not value:
        raise bad(path, "non-empty array of {x: [numbers], y: number}", value, "type")
    if len(value) > MAX_SAMPLES:
        raise bad(
            path,
            f"at most {MAX_SAMPLES} samples",
            value,
            "max_items",
            f"'{data_path(path)}' has {len(value)} samples; the limit is {MAX_SAMPLES}",
        )
    xs: list[list[float]] = []
    ys: list[float] = []
    width: int | None = None
    for i, sample in enumerate(value):
        deadline.tick()
        where = f"{path}[{i}]"
        if not isinstance(sample, dict):
            raise bad(where, "object {x, y}", sample, "type")
        if "x" not in sample:
            raise missing(f"{where}.x")
        if "y" not in sample:
            raise missing(f"{where}.y")
        x, y = sample["x"], sample["y"]
        if is_number(x):
            x = [x]
        if not isinstance(x, list) or not x:
            raise bad(f"{where}.x", "non-empty array of numbers", x, "type")
        for j, v in enumerate(x):  # inline (not _all_numbers): this runs once per sample
            if not is_number(v):
                raise bad(f"{where}.x[{j}]", "number", v, "type")
        if not is_number(y):
            raise bad(f"{where}.y", "number", y, "type")
        if width is None:
            width = len(x)
            if width > MAX_FEATURES:
                raise bad(f"{where}.x", f"at most {MAX_FEATURES} features", x, "max_items")
        elif len(x) != width:
            raise bad(
                f"{where}.x",
                f"array of {width} numbers",
                x,
                "feature_count",
                f"sample {i} has {len(x)} features; sample 0 has {width}",
            )
        xs.append([float(v) for v in x])
        ys.append(float(y))
    return xs, ys


def learn(data: dict[str, Any], ctx: Context, store: ModelStore) -> dict[str, Any]:
    """mc:learn: fit y = intercept + Σ cᵢ·xᵢ to ``samples`` [{x, y}] by ordinary least
    squares and keep the model in ``store`` under ``model_id`` (given, or generated).
    Raises PF002 naming ``samples`` for degenerate data (too few samples, a constant or
    collinear feature)."""
    value, path = _named_or_input(data, ctx, "samples")
    model_id = data.get("model_id")
    if model_id is not None and (
        not isinstance(model_id, str) or not _MODEL_ID.fullmatch(model_id)
    ):
        raise bad(
            "model_id", "string of 1-128 letters, digits, '_', '.', ':' or '-'", model_id, "pattern"
        )
    xs, ys = _samples(value, path, Deadline(ctx))
    try:
        fit = least_squares(xs, ys)
    except DegenerateFit as exc:
        raise invalid_field(
            data_path(path),
            "samples that determine a unique fit",
            "degenerate samples",
            "degenerate_fit",
            f"Cannot fit a model: {exc}",
        ) from None
    model = Model(
        model_id or f"model_{uuid.uuid4().hex[:16]}",
        fit.coefficients,
        fit.intercept,
        fit.r2,
        len(xs),
        fit.residual_stddev,
    )
    store.put(model)
    return model.to_dict()


# ---------------------------------------------------------------------------------------------
# mc:predict


def _interval(predictions: list[float], sigma: float) -> dict[str, Any]:
    return {
        "level": 0.95,
        "lower": [v - Z_95 * sigma for v in predictions],
        "upper": [v + Z_95 * sigma for v in predictions],
    }


def _inline_model(value: Any, path: str) -> Model:
    """A model given as data (typically mc:learn's result, passed on by a molecule bond)."""
    if not isinstance(value, dict):
        raise bad(path, "object {coefficients, intercept}", value, "type")
    coefs = value.get("coefficients")
    if not isinstance(coefs, list) or not coefs:
        raise bad(f"{path}.coefficients", "non-empty array of numbers", coefs, "type")
    _all_numbers(coefs, f"{path}.coefficients")
    intercept = value.get("intercept", 0.0)
    if not is_number(intercept):
        raise bad(f"{path}.intercept", "number", intercept, "type")
    sigma = value.get("residual_stddev", 0.0)
    if not is_number(sigma) or sigma < 0:
        raise bad(f"{path}.residual_stddev", "number >= 0", sigma, "type")
    model_id = value.get("model_id")
    return Model(
        model_id if isinstance(model_id, str) else "inline",
        tuple(float(c) for c in coefs),
        float(intercept),
        float(value.get("r2", 0.0)) if is_number(value.get("r2")) else 0.0,
        0,
        float(sigma),
    )


def _model_for(data: dict[str, Any], ctx: Context, store: ModelStore) -> Model:
    if "model_id" in data:
        model_id = data["model_id"]
        if not isinstance(model_id, str):
            raise bad("model_id", "string", model_id, "type")
        model = store.get(model_id)
        if model is None:
            raise invalid_field(
                data_path("model_id"),
                "id of a model learned on this reactor",
                "unknown model_id",
                "unknown_model",
                f"No model {show(model_id)} on this reactor (models stay on the reactor "
                f"that learned them, at most {MAX_MODELS}); pass mc:learn's result as "
                "data.model instead",
            )
        return model
    if "model" in data:
        return _inline_model(data["model"], "model")
    if len(ctx.inputs) == 1:
        (upstream,) = ctx.inputs.values()
        if isinstance(upstream, dict) and "coefficients" in upstream:
            return _inline_model(upstream, "model")
    raise missing("model_id")


def _model_inputs(x: Any, width: int) -> list[list[float]]:
    """``x``: one sample (array of numbers, or a number for a one-feature model) or a batch
    (array of arrays)."""
    if is_number(x):
        x = [x]
    if not isinstance(x, list) or not x:
        raise bad("x", "array of numbers or array of arrays", x, "type")
    batch = x if all(isinstance(row, list) for row in x) else [x]
    rows: list[list[float]] = []
    for i, row in enumerate(batch):
        where = f"x[{i}]" if batch is x else "x"
        if len(row) != width:
            raise bad(
                where,
                f"array of {width} numbers",
                row,
                "feature_count",
                f"the model has {width} features; '{data_path(where)}' has {len(row)}",
            )
        _all_numbers(row, where)
        rows.append([float(v) for v in row])
    return rows


def predict(data: dict[str, Any], ctx: Context, store: ModelStore) -> dict[str, Any]:
    """mc:predict. With ``model_id`` (learned here), ``model`` (inline, e.g. mc:learn's
    result) or an upstream mc:learn result, and ``x``: the model's predictions. Otherwise
    ``series`` (or ``input``) and ``horizon`` (default 1): a least-squares linear trend over
    the index, extrapolated. Both give a 95 % interval of ±1.96 residual standard deviations.
    Raises PF002 naming ``model_id`` for an unknown model, ``series`` for fewer than 2 points.
    """
    if "model_id" in data or "model" in data or "x" in data:
        model = _model_for(data, ctx, store)
        if "x" not in data:
            raise missing("x")
        rows = _model_inputs(data["x"], len(model.coefficients))
        predictions = [finite(model.predict(row), "prediction") for row in rows]
        return {
            "predictions": predictions,
            "interval": _interval(predictions, model.residual_stddev),
            "model_id": model.model_id,
        }
    value, path = _named_or_input(data, ctx, "series")
    if not isinstance(value, list):
        raise bad(path, "array of numbers", value, "type")
    _all_numbers(value, path)
    if len(value) < 2:
        raise bad(
            path,
            "array of at least 2 numbers",
            value,
            "min_items",
            "a trend needs at least 2 points",
        )
    horizon = data.get("horizon", 1)
    if not isinstance(horizon, int) or isinstance(horizon, bool) or not 1 <= horizon <= MAX_HORIZON:
        raise bad("horizon", f"integer between 1 and {MAX_HORIZON}", horizon, "range")
    fit = linear_trend([float(v) for v in value])
    slope, n = fit.coefficients[0], len(value)
    predictions = [finite(fit.intercept + slope * (n + h), "prediction") for h in range(horizon)]
    return {
        "predictions": predictions,
        "interval": _interval(predictions, fit.residual_stddev),
        "method": "linear_trend",
        "slope": slope,
        "intercept": fit.intercept,
        "r2": fit.r2,
        "residual_stddev": fit.residual_stddev,
    }


# ---------------------------------------------------------------------------------------------
# mc:adapt

# mc:adapt's rule (``adapt_decision``): raise the limit by ADAPT_STEP when packets queue and the
# machine has CPU to spare; lower it by ADAPT_STEP when the CPU is saturated or the p99 latency
# grew past LATENCY_GROWTH × its recent average.
ADAPT_STEP = 0.25
CPU_SPARE_PERCENT = 80.0
CPU_SATURATED_PERCENT = 95.0
LATENCY_GROWTH = 2.0
# Fewer latency samples than this say nothing about a p99.
MIN_LATENCY_SAMPLES = 20
# The "recent average" p99 is the mean of the p99s seen by the last this-many adapt calls.
P99_HISTORY = 10


@dataclass(frozen=True, slots=True)
class AdaptDecision:
    new: int
    reason: str


def adapt_decision(
    old: int,
    *,
    queue_depth: int,
    cpu_percent: float,
    p99_ms: float,
    baseline_p99_ms: float | None,
    latency_samples: int,
    lo: int = 1,
    hi: int = 10_000,
) -> AdaptDecision:
    """mc:adapt's rule, first match wins:

    1. cpu above CPU_SATURATED_PERCENT → lower by ADAPT_STEP ("cpu_saturated");
    2. p99 above LATENCY_GROWTH × baseline (with MIN_LATENCY_SAMPLES samples) → lower
       ("latency_degraded");
    3. packets queued and cpu below CPU_SPARE_PERCENT → raise by ADAPT_STEP ("queue_backlog");
    4. otherwise unchanged ("steady").

    A change moves at least one step and stays within ``lo``..``hi``."""
    lower = max(lo, min(old - 1, math.floor(old * (1 - ADAPT_STEP))))
    if cpu_percent > CPU_SATURATED_PERCENT:
        return AdaptDecision(lower, "cpu_saturated")
    if (
        baseline_p99_ms is not None
        and baseline_p99_ms > 0
        and latency_samples >= MIN_LATENCY_SAMPLES
        and p99_ms > LATENCY_GROWTH * baseline_p99_ms
    ):
        return AdaptDecision(lower, "latency_degraded")
    if queue_depth > 0 and cpu_percent < CPU_SPARE_PERCENT:
        return AdaptDecision(
            min(hi, max(old + 1, math.ceil(old * (1 + ADAPT_STEP)))), "queue_backlog"
        )
    return AdaptDecision(max(lo, min(hi, old)), "steady")


_P99_HISTORY: WeakKeyDictionary[ReactorRuntime, deque[float]] = WeakKeyDictionary()


def _new_p99_history() -> deque[float]:
    return deque(maxlen=P99_HISTORY)


async def adapt(data: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """mc:adapt {} → {old, new, reason, observed: {queue_depth, in_flight, cpu_percent,
    p99_ms, avg_ms, baseline_p99_ms, latency_samples}}: applies ``adapt_decision`` to this
    reactor's max_concurrent_packets (queued packets start at once when it rises)."""
    rt = runtime_of(ctx)
    cpu = await system_cpu_percent()
    avg_ms, p99_ms = rt.stats.latency_summary()
    samples = sum(len(s.recent) for s in rt.stats.elements.values())
    history = per_runtime(_P99_HISTORY, ctx, _new_p99_history)
    baseline = math.fsum(history) / len(history) if history else None
    old = rt.config.max_concurrent_packets
    decision = adapt_decision(
        old, queue_depth=len(rt.queue), cpu_percent=cpu, p99_ms=p99_ms,
        baseline_p99_ms=baseline, latency_samples=samples, lo=MIN_CONCURRENT,
        hi=MAX_CONCURRENT,
    )  # fmt: skip
    if samples >= MIN_LATENCY_SAMPLES:
        history.append(p99_ms)
    set_max_concurrent(rt, decision.new)
    return {
        "old": old,
        "new": decision.new,
        "reason": decision.reason,
        "observed": {
            "queue_depth": len(rt.queue),
            "in_flight": rt.in_flight,
            "cpu_percent": cpu,
            "p99_ms": round(p99_ms, 3),
            "avg_ms": round(avg_ms, 3),
            "baseline_p99_ms": round(baseline, 3) if baseline is not None else None,
            "latency_samples": samples,
        },
    }


# ---------------------------------------------------------------------------------------------
# mc:optimize, mc:update_affinity (the gateway's)

# Set on a packet this reactor forwards to the gateway: a reactor that receives one back
# refuses it instead of forwarding it round in a loop.
FORWARDED_KEY = "forwarded_by"
# Time kept back from the forwarded packet's timeout so this one can still answer.
FORWARD_MARGIN_S = 0.1


async def forward_to_gateway(element: str, data: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """Submit ``mc:<element>`` with the same data to the gateway, which serves it itself (no
    destination_id), and answer its result data. PF503 without a gateway, or when the
    packet already came from a reactor's forward (the gateway did not serve it)."""
    if FORWARDED_KEY in ctx.metadata:
        raise ServiceUnavailable(
            f"mc:{element} is served by the gateway; it reached reactor "
            f"{ctx.runtime.config.reactor_id if ctx.runtime else '?'} after being forwarded "
            f"by {ctx.metadata[FORWARDED_KEY]!r}",
            details={"reason": "forward_loop"},
        )
    gateway = ctx.require_gateway()
    me = ctx.runtime.config.reactor_id if ctx.runtime is not None else "reactor"
    timeout_ms = max(1, int((ctx.remaining_s() - FORWARD_MARGIN_S) * 1000))
    res = await gateway.submit(
        "mc", element, data, timeout_ms=timeout_ms, priority=ctx.priority,
        metadata={FORWARDED_KEY: me},
    )  # fmt: skip
    body = res.data if isinstance(res.data, dict) else {"result": res.data}
    return {k: v for k, v in body.items() if k != "processing_stats"}


async def optimize(data: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """mc:optimize {window?, apply?} → the gateway's proposed matrix_updates (DESIGN §10)."""
    return await forward_to_gateway("optimize", data, ctx)


async def update_affinity(data: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """mc:update_affinity (PFAP §6.4 data) → the gateway's new matrix version."""
    if "rollback_to" in data and "matrix_updates" not in data:
        return await forward_to_gateway("update_affinity", data, ctx)  # §6.4 manual rollback
    if "matrix_updates" not in data:
        raise missing("matrix_updates")
    if not isinstance(data["matrix_updates"], dict):
        raise bad("matrix_updates", "object {group: {specialization: affinity}}",
                  data["matrix_updates"], "type")  # fmt: skip
    return await forward_to_gateway("update_affinity", data, ctx)


# ---------------------------------------------------------------------------------------------


def register(registry: Registry) -> None:
    """Register the mc elements; learn and predict share one ModelStore."""
    store = ModelStore()

    def mc_learn(data: dict[str, Any], ctx: Context) -> dict[str, Any]:
        return learn(data, ctx, store)

    def mc_predict(data: dict[str, Any], ctx: Context) -> dict[str, Any]:
        return predict(data, ctx, store)

    el = registry.element
    el(
        "mc",
        "analyze",
        data={
            "input": "array of numbers (or records with field)",
            "field": "field name (optional)",
            "analysis_type": "statistics (default) | chemical_health",
            "metrics": "chemical_health metric names (optional)",
        },
        result="{analysis_type, count, mean, median, stddev, min, max, p95, p99} "
        "| {analysis_type, metrics}",
    )(analyze)
    el(
        "mc",
        "learn",
        data={
            "samples": "[{x: [numbers], y: number}]",
            "model_id": "string (optional)",
        },
        result="{model_id, coefficients, intercept, r2, samples, features, residual_stddev}",
    )(mc_learn)
    el(
        "mc",
        "predict",
        data={
            "series": "array of numbers (trend mode)",
            "horizon": "integer (default 1)",
            "model_id": "learned model id (model mode)",
            "model": "inline model (model mode)",
            "x": "array of numbers | array of arrays",
        },
        result="{predictions, interval: {level, lower, upper}, ...}",
    )(mc_predict)
    el(
        "mc",
        "adapt",
        data={},
        result="{old, new, reason, observed: {queue_depth, cpu_percent, p99_ms, ...}}",
    )(adapt)
    el(
        "mc",
        "optimize",
        data={"window": "optional", "apply": "bool (admin)"},
        result="the gateway's proposed matrix_updates (served by the gateway)",
    )(optimize)
    el(
        "mc",
        "update_affinity",
        data={
            "matrix_updates": "{group: {specialization: affinity}}",
            "version": "string",
            "effective_date": "epoch ms (optional)",
            "rollback_policy": "none | manual | automatic | gradual_rollout | "
            "{type, success_rate_threshold, min_samples, observation_window_ms} (optional)",
            "rollback_to": "version to restore instead of an update (admin; optional)",
        },
        result="the new matrix version (served by the gateway)",
    )(update_affinity)


__all__ = [
    "AdaptDecision",
    "Model",
    "ModelStore",
    "adapt",
    "adapt_decision",
    "analyze",
    "describe",
    "forward_to_gateway",
    "learn",
    "least_squares",
    "linear_trend",
    "optimize",
    "predict",
    "register",
    "update_affinity",
]
