"""The co (collective) elements of DESIGN §10: broadcast, gather, scatter, consensus and sync.

broadcast, gather, scatter and consensus fan packets out through the reactor's gateway
connection (``ctx.gateway``) and answer PF503 without one (except broadcast to
``subscribers``, which falls back to this reactor's own bus). co:sync is served by the
gateway itself when a client submits it there; the version here keeps barriers in this
reactor (``protocol.events.BarrierTable``), for a reactor used directly or addressed
explicitly.

What these expect from the gateway (its contract):

- A SUBMIT whose envelope carries ``"destination_id": null`` is a broadcast: the gateway
  runs the packet on every eligible reactor that supports it and answers ONE RESULT whose
  data is ``{"results": {reactor_id: result data}, "errors": {reactor_id: ERROR payload}}``
  (co:broadcast to reactors, co:gather). The SDK's ``submit`` leaves ``destination_id`` out
  when given None, so these build the SUBMIT and set it to None themselves.
- A SUBMIT without ``destination_id`` is routed by affinity (co:scatter, co:consensus), and
  ``ed:publish`` without one is served by the gateway's own bus (co:broadcast to
  subscribers).
- ``discover()`` rows carry ``reactor_id``, ``health``, ``load_factor`` and
  ``capabilities`` (``"group:element"`` strings).

Fan-out packets get ids derived from the parent's (``<id>.scatter.<i>``,
``<id>.replica.<i>``), so a retried parent joins or replays its children through the
idempotency window instead of running them twice (DESIGN §4).
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar
from weakref import WeakKeyDictionary

from ...protocol.chemistry import GROUPS
from ...protocol.errors import (
    GatewayTimeout,
    PacketFlowError,
    ProcessingFailed,
)
from ...protocol.events import BarrierTable, validate_topic
from ...protocol.messages import Result, decode_json
from ...protocol.packets import ELEMENT_NAME, PACKET_ID_MAX_LEN
from ..context import Context
from ..registry import Registry
from .contract import bad, data_path
from .ed import (
    SIGNAL_PREFIX,
    PacketSpec,
    deliver,
    event_state,
    opt_int,
    parse_packet,
    per_runtime,
    require,
    wait_budget_s,
    wait_within,
)

if TYPE_CHECKING:
    from ...client import AsyncClient, PacketResult
    from ..runtime import ReactorRuntime

T = TypeVar("T")

# ---------------------------------------------------------------------------------------------
# Limits (STYLE 5)

# Chunks one co:scatter submits at once; each is a packet in flight at the gateway.
MAX_CHUNKS = 256
# Replicas of one co:consensus packet: beyond this a vote costs more than it tells.
MAX_REPLICAS = 25
# co:sync's own timeout_ms: the packet's Appendix C/§5.2 cap (45 s × 10) bounds it anyway.
MAX_SYNC_TIMEOUT_MS = 450_000
# What a fan-out child may take beyond the time its parent has left: none. Children get the
# parent's remaining time less this margin, so the parent can still answer.
CHILD_MARGIN_S = 0.1
# Keys of a result that differ between replicas of the same computation (who ran it, when,
# how long it took): dropped at the top level before co:consensus compares results.
VOLATILE_KEYS = frozenset(
    {
        "processing_stats",
        "reactor_id",
        "timestamp",
        "response_time_ms",
        "processed_at",
        "duration_ms",
    }
)
SCOPES = ("reactors", "subscribers")
BROADCAST_NAME = "broadcast"
# States in which the gateway routes to a reactor (DESIGN §5: unknown and failed are not).
INELIGIBLE_HEALTH = frozenset({"failed", "unknown"})

# ---------------------------------------------------------------------------------------------
# Gateway helpers


def _child_timeout_ms(ctx: Context) -> int:
    return max(1, int((ctx.remaining_s() - CHILD_MARGIN_S) * 1000))


def child_id(ctx: Context, kind: str, index: int) -> str:
    """``<parent id>.<kind>.<index>``, the parent id cut so the whole fits 128 chars."""
    suffix = f".{kind}.{index}"
    return ctx.packet_id[: PACKET_ID_MAX_LEN - len(suffix)] + suffix


def _result_data(res: PacketResult) -> dict[str, Any]:
    data = res.data
    return data if isinstance(data, dict) else {"result": data}


def _malformed(what: str, reply: Any) -> ProcessingFailed:
    return ProcessingFailed(
        f"The gateway's broadcast reply is malformed: {what}",
        details={
            "reason": "bad_gateway_reply",
            "expected": "{results: {reactor_id: data}, errors: {reactor_id: error}}",
            "received": type(reply).__name__,
        },
    )


async def broadcast_submit(
    gateway: AsyncClient, spec: PacketSpec, ctx: Context
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run ``spec`` on every eligible reactor: one SUBMIT with ``destination_id`` null
    (module doc). Returns (results by reactor id, errors by reactor id). An ERROR reply
    raises; a reply of another shape is PF005 ``bad_gateway_reply``."""
    timeout_ms = spec.timeout_ms or _child_timeout_ms(ctx)
    msg = gateway.build_submit(
        spec.group,
        spec.element,
        spec.data,
        priority=spec.priority,
        timeout_ms=timeout_ms,
        packet_id=spec.packet_id,
    )
    msg.destination_id = None  # explicit null: broadcast (DESIGN §3)
    reply = await gateway.request(msg, max(0.001, ctx.remaining_s()))
    if not isinstance(reply, Result):
        raise _malformed("not a RESULT", reply)
    body = decode_json(reply.payload.data)
    if not isinstance(body, dict):
        raise _malformed("data is not an object", body)
    results = body.get("results", {})
    errors = body.get("errors", {})
    if not isinstance(results, dict) or not isinstance(errors, dict):
        raise _malformed("results and errors must be objects", body)
    return results, errors


async def eligible_reactors(gateway: AsyncClient, key: str) -> list[dict[str, Any]]:
    """Registry rows of reactors the gateway would route ``group:element`` to, least loaded
    first; [] when the registry cannot be read."""
    try:
        rows = await gateway.discover()
    except PacketFlowError:
        return []
    out = [
        r
        for r in rows
        if isinstance(r, dict)
        and isinstance(r.get("reactor_id"), str)
        and key in (r.get("capabilities") or ())
        and r.get("health") not in INELIGIBLE_HEALTH
    ]
    out.sort(key=lambda r: (float(r.get("load_factor") or 0.0), r["reactor_id"]))
    return out


def _error_reactor(err: PacketFlowError) -> str | None:
    """The reactor an ERROR came from, when its payload says (``reactor_info``)."""
    envelope = getattr(err, "envelope", None)
    info = getattr(getattr(envelope, "payload", None), "reactor_info", None)
    rid = info.get("reactor_id") if isinstance(info, dict) else None
    return rid if isinstance(rid, str) else None


def _error_summary(err: PacketFlowError) -> dict[str, Any]:
    return {
        "error_code": err.code,
        "error_message": err.message,
        "error_details": err.error_details(),
        "retry_possible": err.retryable,
    }


# ---------------------------------------------------------------------------------------------
# co:broadcast


async def broadcast(data: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """co:broadcast {message, scope: "reactors" (default) | "subscribers", channel?}.

    reactors: ed:signal ``broadcast[.<channel>]`` with ``value`` = message on every reactor
    (one broadcast SUBMIT) → {delivered: reactors reached, reactor_ids, failed, listeners,
    scope, topic}. subscribers: ed:publish on ``broadcast[.<channel>]`` through the gateway's
    bus (or this reactor's, without a gateway) → {delivered, scope, topic, reactor_ids: []}.
    """
    message = require(data, "message")
    scope = data.get("scope", "reactors")
    if scope not in SCOPES:
        raise bad("scope", " | ".join(SCOPES), scope, "enum")
    channel = data.get("channel")
    name = BROADCAST_NAME
    if channel is not None:
        validate_topic(channel, data_path("channel"))
        name = f"{BROADCAST_NAME}.{channel}"
        validate_topic(SIGNAL_PREFIX + name, data_path("channel"))
    if scope == "subscribers":
        if ctx.gateway is None:
            delivered, _ = deliver(event_state(ctx), name, message)
            via = "reactor"
        else:
            res = await ctx.gateway.submit(
                "ed",
                "publish",
                {"topic": name, "event": message},
                timeout_ms=_child_timeout_ms(ctx),
            )
            delivered = int(_result_data(res).get("delivered") or 0)
            via = "gateway"
        return {
            "delivered": delivered,
            "scope": scope,
            "topic": name,
            "reactor_ids": [],
            "via": via,
        }
    gateway = ctx.require_gateway()
    spec = PacketSpec("ed", "signal", {"name": name, "value": message})
    results, errors = await broadcast_submit(gateway, spec, ctx)
    listeners = sum(int(r.get("delivered") or 0) for r in results.values() if isinstance(r, dict))
    return {
        "delivered": len(results),
        "reactor_ids": sorted(results),
        "failed": {
            rid: (e.get("error_code") if isinstance(e, dict) else None)
            for rid, e in sorted(errors.items())
        },
        "listeners": listeners,
        "scope": scope,
        "topic": SIGNAL_PREFIX + name,
    }


# ---------------------------------------------------------------------------------------------
# co:gather


async def gather(data: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """co:gather {packet: {group, element, data}} → the packet on every eligible reactor
    (one broadcast SUBMIT) → {results: {reactor_id: data}, errors: {reactor_id: error},
    reactors: how many answered}."""
    spec = parse_packet(require(data, "packet"))
    gateway = ctx.require_gateway()
    results, errors = await broadcast_submit(gateway, spec, ctx)
    return {"results": results, "errors": errors, "reactors": len(results) + len(errors)}


# ---------------------------------------------------------------------------------------------
# co:scatter


def split(items: list[Any], chunks: int) -> list[list[Any]]:
    """``items`` in ``chunks`` contiguous runs whose sizes differ by at most one (the first
    ones are longer), in order. ``chunks`` must be 1..len(items)."""
    base, extra = divmod(len(items), chunks)
    out: list[list[Any]] = []
    start = 0
    for i in range(chunks):
        end = start + base + (1 if i < extra else 0)
        out.append(items[start:end])
        start = end
    return out


def _parse_element(value: Any) -> tuple[str, str]:
    if not isinstance(value, str):
        raise bad("element", '"group:element"', value, "type")
    group, sep, element = value.partition(":")
    if not sep or group not in GROUPS or not ELEMENT_NAME.match(element):
        raise bad(
            "element",
            '"group:element", e.g. "df:transform"',
            value,
            "pattern",
            f"'{data_path('element')}' must be \"group:element\" with group one of "
            f"{', '.join(GROUPS)}; got {value!r}",
        )
    return group, element


async def _first_failure(tasks: dict[asyncio.Task[T], int]) -> list[T]:
    """Wait for every task; on the first failure cancel the rest and raise it as
    (index, exception) via ChunkFailed. Results in index order."""
    try:
        pending: set[asyncio.Task[T]] = set(tasks)
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_EXCEPTION)
            failed = [t for t in done if not t.cancelled() and t.exception() is not None]
            if failed:
                first = min(failed, key=lambda t: tasks[t])
                exc = first.exception()
                assert exc is not None
                raise _ChunkFailed(tasks[first], exc)
        return [t.result() for t in sorted(tasks, key=lambda t: tasks[t])]
    finally:
        for t in tasks:
            t.cancel()


class _ChunkFailed(Exception):
    def __init__(self, index: int, error: BaseException) -> None:
        super().__init__(index, error)
        self.index = index
        self.error = error


async def scatter(data: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """co:scatter {input: list, element: "group:element", data?: {...}, chunks?} → the
    element on each chunk through the gateway, concurrently → {result, chunks,
    reactor_ids}.

    ``result`` concatenates the chunk results when every one is a list, else lists them in
    input order. The default chunk count is the number of eligible reactors supporting the
    element (at least 1), never more than the items; chunks are spread one per reactor
    (``spread``). A failed chunk is PF005 naming it: ``error_details`` {reason:
    "chunk_failed", chunk, error}; the others are abandoned.
    """
    items = require(data, "input")
    if not isinstance(items, list):
        raise bad("input", "array", items, "type")
    group, element = _parse_element(require(data, "element"))
    extra = data.get("data", {})
    if not isinstance(extra, dict):
        raise bad("data", "object (the rest of each chunk packet's data)", extra, "type")
    if "input" in extra:
        raise bad(
            "data.input",
            "absent (each chunk's input is set by co:scatter)",
            extra["input"],
            "reserved",
        )
    chunks = opt_int(data, "chunks", 1, MAX_CHUNKS)
    gateway = ctx.require_gateway()
    if not items:
        return {"result": [], "chunks": 0, "reactor_ids": []}
    eligible = [r["reactor_id"] for r in await eligible_reactors(gateway, f"{group}:{element}")]
    if chunks is None:
        chunks = max(1, len(eligible))
    parts = split(items, min(chunks, len(items)))
    avoid = spread(eligible, len(parts)) if len(eligible) > 1 else [[] for _ in parts]
    timeout_ms = _child_timeout_ms(ctx)

    async def run(i: int, part: list[Any]) -> PacketResult:
        # Affinity alone would send every chunk to the one best-suited reactor; the avoid
        # lists spread them one per reactor. If that pinned attempt fails retryably (its
        # reactor went away), the chunk is sent once more with no preference: the same
        # packet id, which the idempotency window lets run anew after a retryable error.
        packet_data = {**extra, "input": part}
        packet_id = child_id(ctx, "scatter", i)
        prefs = {"avoid_reactors": avoid[i]} if avoid[i] else None
        try:
            return await gateway.submit(
                group,
                element,
                packet_data,
                timeout_ms=timeout_ms,
                packet_id=packet_id,
                priority=ctx.priority,
                routing_preferences=prefs,
            )
        except PacketFlowError as err:
            if prefs is None or not err.retryable or ctx.remaining_s() <= CHILD_MARGIN_S:
                raise
            return await gateway.submit(
                group,
                element,
                packet_data,
                timeout_ms=_child_timeout_ms(ctx),
                packet_id=packet_id,
                priority=ctx.priority,
            )

    tasks = {asyncio.ensure_future(run(i, part)): i for i, part in enumerate(parts)}
    try:
        results = await _first_failure(tasks)
    except _ChunkFailed as failed:
        err = failed.error
        if not isinstance(err, PacketFlowError):
            raise err from None
        raise ProcessingFailed(
            f"co:scatter chunk {failed.index} of {len(parts)} failed: {err.code} {err.message}",
            details={
                "reason": "chunk_failed",
                "chunk": failed.index,
                "chunks": len(parts),
                "element": f"{group}:{element}",
                "error": _error_summary(err),
            },
            retryable=err.retryable,
        ) from None
    values = []
    for res in results:
        body = _result_data(res)
        values.append(body["result"] if "result" in body else _strip(body))
    combined: Any = (
        [item for v in values for item in v] if all(isinstance(v, list) for v in values) else values
    )
    return {
        "result": combined,
        "chunks": len(parts),
        "chunk_sizes": [len(p) for p in parts],
        "reactor_ids": [res.reactor_id for res in results],
    }


# ---------------------------------------------------------------------------------------------
# co:consensus


def _strip(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k not in VOLATILE_KEYS}


def _normalize(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer() and math.isfinite(value):
        return int(value)
    if isinstance(value, list):
        return [_normalize(v) for v in value]
    if isinstance(value, dict):
        return {k: _normalize(v) for k, v in value.items()}
    return value


def canonical(data: Any) -> str:
    """The form co:consensus compares: VOLATILE_KEYS dropped at the top level, integral
    floats as integers (1.0 == 1), then JSON with sorted keys and no spaces."""
    body = _strip(data) if isinstance(data, dict) else data
    return json.dumps(
        _normalize(body), sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=repr
    )


def spread(eligible: list[str], replicas: int) -> list[list[str]]:
    """For each replica, the reactors it must avoid so replicas land on distinct reactors:
    replica i is meant for ``eligible[i % n]`` and avoids every other eligible reactor.
    Leaving a reactor meant for no replica open to all of them let the router send two
    replicas to the same spare reactor (2 of 3 on one reactor with 5 available); a replica
    whose reactor fails is resubmitted on a spare one by ``consensus`` instead."""
    if not eligible:
        return [[] for _ in range(replicas)]
    return [[r for r in eligible if r != eligible[i % len(eligible)]] for i in range(replicas)]


@dataclass(slots=True)
class _Vote:
    replica: int
    packet_id: str
    reactor_id: str | None
    key: str | None = None  # canonical result; None when the replica failed
    body: Any = None
    error: PacketFlowError | None = None
    agrees: bool = False

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "replica": self.replica,
            "packet_id": self.packet_id,
            "reactor_id": self.reactor_id,
            "agrees": self.agrees,
        }
        if self.error is not None:
            out["error_code"] = self.error.code
            out["error_message"] = self.error.message
        return out


async def consensus(data: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """co:consensus {packet, replicas=3, quorum=replicas//2+1} → the packet run ``replicas``
    times through the gateway, on different reactors where there are enough, results
    compared by ``canonical`` → {decision, votes: [{replica, packet_id, reactor_id,
    agrees}], agreement, quorum, replicas, distinct_reactors (reactors whose result
    voted)}. Fewer than ``quorum`` agreeing is PF005
    ``no_quorum`` with the votes in ``error_details`` (retryable only if a replica failed)."""
    spec = parse_packet(require(data, "packet"))
    replicas = opt_int(data, "replicas", 1, MAX_REPLICAS) or 3
    quorum = opt_int(data, "quorum", 1, MAX_REPLICAS)
    if quorum is None:
        quorum = replicas // 2 + 1
    elif quorum > replicas:
        raise bad("quorum", f"integer between 1 and replicas ({replicas})", quorum, "range")
    gateway = ctx.require_gateway()
    eligible = [r["reactor_id"] for r in await eligible_reactors(gateway, spec.key)]
    avoid = spread(eligible, replicas)
    spares = eligible[replicas:]  # meant for no replica; least loaded first
    timeout_ms = spec.timeout_ms or _child_timeout_ms(ctx)
    ids = [child_id(ctx, "replica", i) for i in range(replicas)]

    async def run(i: int, avoid_ids: list[str]) -> PacketResult:
        prefs = {"avoid_reactors": avoid_ids} if avoid_ids else None
        return await gateway.submit(
            spec.group,
            spec.element,
            spec.data,
            packet_id=ids[i],
            priority=spec.priority or ctx.priority,
            timeout_ms=timeout_ms,
            routing_preferences=prefs,
        )

    outcomes: list[PacketResult | BaseException] = await asyncio.gather(
        *(run(i, avoid[i]) for i in range(replicas)), return_exceptions=True
    )
    # A replica its reactor failed retryably (that reactor died, say) gets one more try on a
    # spare reactor, so a lost reactor costs no vote while distinct reactors remain. The
    # same packet id is fine: the gateway forgets retryable failures (DESIGN §4).
    again = [
        (i, spare)
        for i, spare in zip(
            (i for i, o in enumerate(outcomes) if isinstance(o, PacketFlowError) and o.retryable),
            spares,
            strict=False,
        )
    ]
    if again:
        retried = await asyncio.gather(
            *(run(i, [r for r in eligible if r != spare]) for i, spare in again),
            return_exceptions=True,
        )
        for (i, _), outcome in zip(again, retried, strict=True):
            outcomes[i] = outcome
    votes: list[_Vote] = []
    for i, outcome in enumerate(outcomes):
        if isinstance(outcome, PacketFlowError):
            votes.append(_Vote(i, ids[i], _error_reactor(outcome), error=outcome))
        elif isinstance(outcome, BaseException):
            raise outcome
        else:
            body = _result_data(outcome)
            votes.append(_Vote(i, ids[i], outcome.reactor_id, canonical(body), _strip(body)))
    tally: dict[str, int] = {}
    for v in votes:
        if v.key is not None:
            tally[v.key] = tally.get(v.key, 0) + 1
    # The most common result; a tie goes to the one the lowest replica returned.
    winner = max(
        tally, key=lambda k: (tally[k], -next(v.replica for v in votes if v.key == k)), default=None
    )
    for v in votes:
        v.agrees = winner is not None and v.key == winner
    agreeing = tally.get(winner, 0) if winner is not None else 0
    agreement = round(agreeing / replicas, 4)
    vote_dicts = [v.to_dict() for v in votes]
    # Replicas on one reactor are one opinion, not several: say how many reactors voted.
    distinct = len({v.reactor_id for v in votes if v.key is not None and v.reactor_id})
    if agreeing < quorum:
        raise ProcessingFailed(
            f"co:consensus reached no quorum: {agreeing} of {replicas} replicas agree, "
            f"{quorum} needed",
            details={
                "reason": "no_quorum",
                "votes": vote_dicts,
                "agreement": agreement,
                "quorum": quorum,
                "replicas": replicas,
                "distinct_results": len(tally),
                "distinct_reactors": distinct,
            },
            retryable=any(v.error is not None for v in votes),
        )
    decision = next(v.body for v in votes if v.key == winner)
    return {
        "decision": decision,
        "votes": vote_dicts,
        "agreement": agreement,
        "quorum": quorum,
        "replicas": replicas,
        "distinct_reactors": distinct,
        "reactor_ids": sorted({v.reactor_id for v in votes if v.reactor_id}),
    }


# ---------------------------------------------------------------------------------------------
# co:sync

Arrival = asyncio.Future[float]  # resolves to the monotonic time the barrier was released


@dataclass(slots=True)
class SyncState:
    barriers: BarrierTable[Arrival] = field(default_factory=BarrierTable)


_SYNC: WeakKeyDictionary[ReactorRuntime, SyncState] = WeakKeyDictionary()


def sync_state(ctx: Context) -> SyncState:
    return per_runtime(_SYNC, ctx, SyncState)


async def sync(data: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """co:sync {barrier, parties, timeout_ms?} on this reactor → released when ``parties``
    packets reached ``barrier`` → {released: true, barrier, parties, waited_ms}. PF504 at
    ``timeout_ms`` or just before the packet's deadline; PF002 naming ``parties`` when it
    differs from the count the barrier was opened with."""
    barrier = require(data, "barrier")
    parties = require(data, "parties")
    timeout_ms = opt_int(data, "timeout_ms", 1, MAX_SYNC_TIMEOUT_MS)
    table = sync_state(ctx).barriers
    waiter: Arrival = asyncio.get_running_loop().create_future()
    arrived = time.monotonic()
    released = table.arrive(barrier, parties, waiter, arrived)
    if released is not None:
        for w in released:
            if w is not waiter and not w.done():
                w.set_result(arrived)
        return _released(barrier, parties, 0.0)
    budget = wait_budget_s(ctx, timeout_ms)
    try:
        at = await wait_within(waiter, budget)
        if at is not None:
            return _released(barrier, parties, (at - arrived) * 1000.0)
        present = table.waiting(barrier)  # counted before this waiter leaves the barrier
    finally:
        table.expire(barrier, waiter)
    raise GatewayTimeout(
        f"Barrier {barrier!r}: {present} of {parties} parties arrived within "
        f"{round(budget * 1000)} ms",
        details={
            "reason": "barrier_timeout",
            "barrier": barrier,
            "parties": parties,
            "arrived": present,
            "waited_ms": round(budget * 1000),
        },
    )


def _released(barrier: str, parties: int, waited_ms: float) -> dict[str, Any]:
    return {
        "released": True,
        "barrier": barrier,
        "parties": parties,
        "waited_ms": round(max(0.0, waited_ms), 3),
    }


# ---------------------------------------------------------------------------------------------


def register(registry: Registry) -> None:
    el = registry.element
    el(
        "co",
        "broadcast",
        data={
            "message": "any JSON",
            "scope": "reactors (default) | subscribers",
            "channel": "topic segment(s) (optional)",
        },
        result="delivered, reactor_ids, scope, topic",
    )(broadcast)
    el(
        "co",
        "gather",
        data={"packet": "{group, element, data}"},
        result="results {reactor_id: data}, errors {reactor_id: error}, reactors",
    )(gather)
    el(
        "co",
        "scatter",
        data={
            "input": "array",
            "element": "group:element",
            "data": "object: the rest of each chunk's data",
            "chunks": "int (optional)",
        },
        result="result (in input order), chunks, reactor_ids",
    )(scatter)
    el(
        "co",
        "consensus",
        data={
            "packet": "{group, element, data}",
            "replicas": "int (default 3)",
            "quorum": "int (default majority)",
        },
        result="decision, votes [{reactor_id, agrees}], agreement",
    )(consensus)
    el(
        "co",
        "sync",
        data={"barrier": "name", "parties": "int", "timeout_ms": "int (optional)"},
        result="released, barrier, parties, waited_ms",
    )(sync)


__all__ = [
    "VOLATILE_KEYS",
    "broadcast",
    "broadcast_submit",
    "canonical",
    "consensus",
    "eligible_reactors",
    "gather",
    "register",
    "scatter",
    "split",
    "spread",
    "sync",
]
