"""The co elements of DESIGN §10 on a reactor: broadcast, gather, scatter and consensus against
a fake gateway client, and co:sync barriers on a real ReactorRuntime; PF002 naming the bad
field for bad input.

``FakeGateway`` (also used by the ed, rm, mc and cf tests) is an AsyncClient whose network
calls are replaced: ``build_submit`` and ``envelope_fields`` are the real ones, so the
messages it records are what the gateway would receive.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest

from packetflow.client import AsyncClient, PacketResult
from packetflow.protocol.errors import PacketFlowError, ProcessingFailed
from packetflow.protocol.messages import (
    PROTOCOL_VERSION,
    Coordinate,
    Message,
    Result,
    ResultPayload,
    Submit,
    decode_json,
    encode,
    encode_json,
)
from packetflow.reactor.context import Context
from packetflow.reactor.elements import co, ed
from packetflow.reactor.registry import Registry
from packetflow.reactor.runtime import ReactorConfig, ReactorRuntime

D = "payload.packet.data"

# (group, element, data, options) -> (result data, reactor id); may raise PacketFlowError.
SubmitFn = Callable[[str, str, dict[str, Any], dict[str, Any]], Awaitable[tuple[Any, str]]]


class FakeGateway(AsyncClient):
    """The reactor's gateway connection, answered in-process."""

    def __init__(
        self,
        *,
        rows: list[dict[str, Any]] | None = None,
        on_submit: SubmitFn | None = None,
        broadcast_reply: Any = None,
        coordinate_script: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__("ws://fake.invalid/ws", source_id="reactor-under-test")
        self.rows = rows or []
        self.on_submit = on_submit
        self.broadcast_reply = broadcast_reply
        self.coordinate_script = coordinate_script or []
        self.sent: list[Message] = []
        self.requests: list[Message] = []
        self.submits: list[tuple[str, str, dict[str, Any], dict[str, Any]]] = []
        self.coordinated: list[dict[str, Any]] = []
        self.discover_error: PacketFlowError | None = None

    async def send(self, msg: Message | bytes) -> None:
        assert not isinstance(msg, bytes)
        encode(msg)  # it must be a valid wire message
        self.sent.append(msg)

    async def request(self, msg: Message, timeout: float | None = 60.0) -> Message:
        self.requests.append(msg)
        assert isinstance(msg, Submit)
        reply = self.broadcast_reply
        if callable(reply):
            reply = reply(msg)
        if isinstance(reply, PacketFlowError):
            raise reply
        return Result(
            protocol_version=PROTOCOL_VERSION,
            message_id="msg_r",
            timestamp=0,
            source_id="gateway",
            correlation_id=msg.message_id,
            payload=ResultPayload(
                packet_id=msg.payload.packet.id,
                status="success",
                data=msgspec.Raw(encode_json(reply)),
            ),
        )

    async def submit(
        self,
        group: str,
        element: str,
        data: dict[str, Any] | None = None,
        *,
        wait: float | None = None,
        **options: Any,
    ) -> PacketResult:
        data = data or {}
        self.submits.append((group, element, data, options))
        assert self.on_submit is not None, f"unexpected submit {group}:{element}"
        body, reactor_id = await self.on_submit(group, element, data, options)
        return PacketResult(
            packet_id=options.get("packet_id"),
            status="success",
            data=body,
            processing_metadata={"reactor_id": reactor_id},
            reactor_info=None,
            message=None,  # type: ignore[arg-type]
        )

    async def discover(self, query: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        if self.discover_error is not None:
            raise self.discover_error
        return self.rows

    async def coordinate(self, payload: dict[str, Any]) -> AsyncIterator[Coordinate]:
        self.coordinated.append(payload)
        for step in self.coordinate_script:
            if "sleep" in step:
                await asyncio.sleep(step["sleep"])
                continue
            if "raise" in step:
                raise step["raise"]
            yield msgspec.convert(
                {
                    "protocol_version": "1.0",
                    "message_type": "coordinate",
                    "message_id": "m",
                    "timestamp": 0,
                    "source_id": "gateway",
                    "correlation_id": "msg_init",
                    "payload": step,
                },
                Coordinate,
            )


def row(rid: str, load: float = 0.0, caps: tuple[str, ...] = ("df:transform",), **kw: Any) -> dict:
    return {
        "reactor_id": rid,
        "health": "healthy",
        "load_factor": load,
        "in_flight": 0,
        "max_capacity": 128,
        "capabilities": list(caps),
        **kw,
    }


def make_ctx(
    runtime: ReactorRuntime | None,
    gateway: AsyncClient | None = None,
    *,
    group: str = "co",
    element: str = "x",
    ttl: float = 10.0,
    packet_id: str = "packet_parent",
    tmp: Path = Path("."),
    metadata: dict[str, Any] | None = None,
) -> Context:
    now = time.monotonic()
    return Context(
        packet_id=packet_id,
        group=group,
        element=element,
        priority=6,
        deadline=now + ttl,
        logger=logging.getLogger("test"),
        data_dir=tmp,
        gateway=gateway,
        runtime=runtime,
        received=now,
        metadata=metadata or {},
    )


async def fails(coro: Awaitable[Any], code: str, field: str | None = None) -> PacketFlowError:
    with pytest.raises(PacketFlowError) as info:
        await coro
    err = info.value
    assert err.code == code, (err.code, err.message)
    if field is not None:
        assert err.field == f"{D}.{field}", err.field
    return err


# ---------------------------------------------------------------------------------------------
# co:broadcast


async def test_broadcast_to_reactors_sends_one_submit_with_null_destination(
    runtime: ReactorRuntime,
) -> None:
    """DESIGN §3: destination_id null = broadcast; the gateway answers one RESULT
    {results, errors} by reactor id."""
    gw = FakeGateway(
        broadcast_reply={
            "results": {
                "r2": {"accepted": True, "delivered": 2},
                "r1": {"accepted": True, "delivered": 1},
            },
            "errors": {"r3": {"error_code": "PF503", "error_message": "draining"}},
        }
    )
    out = await co.broadcast({"message": {"x": 1}, "scope": "reactors"}, make_ctx(runtime, gw))
    assert out == {
        "delivered": 2,
        "reactor_ids": ["r1", "r2"],
        "failed": {"r3": "PF503"},
        "listeners": 3,
        "scope": "reactors",
        "topic": "signal.broadcast",
    }
    (msg,) = gw.requests
    assert isinstance(msg, Submit)
    assert msg.destination_id is None
    assert b'"destination_id":null' in encode(msg)
    packet = msg.payload.packet
    assert (packet.group, packet.element) == ("ed", "signal")
    assert decode_json(packet.data) == {"name": "broadcast", "value": {"x": 1}}


async def test_broadcast_default_scope_is_reactors_and_channel_names_the_signal(
    runtime: ReactorRuntime,
) -> None:
    gw = FakeGateway(broadcast_reply={"results": {}, "errors": {}})
    out = await co.broadcast({"message": "hi", "channel": "ops"}, make_ctx(runtime, gw))
    assert out["scope"] == "reactors" and out["topic"] == "signal.broadcast.ops"
    assert decode_json(gw.requests[0].payload.packet.data)["name"] == "broadcast.ops"


async def test_broadcast_to_subscribers_publishes_through_the_gateway(
    runtime: ReactorRuntime,
) -> None:
    async def on_submit(g: str, e: str, data: dict, opts: dict) -> tuple[Any, str]:
        assert (g, e) == ("ed", "publish")
        assert "destination_id" not in opts, "gateway-local: no destination"
        return {"delivered": 4, "topic": data["topic"], "sequence": 9}, "gateway"

    gw = FakeGateway(on_submit=on_submit)
    out = await co.broadcast(
        {"message": "m", "scope": "subscribers", "channel": "a.b"}, make_ctx(runtime, gw)
    )
    assert out == {
        "delivered": 4,
        "scope": "subscribers",
        "topic": "broadcast.a.b",
        "reactor_ids": [],
        "via": "gateway",
    }
    assert gw.submits[0][2] == {"topic": "broadcast.a.b", "event": "m"}


async def test_broadcast_to_subscribers_without_gateway_uses_this_reactors_bus(
    runtime: ReactorRuntime,
) -> None:
    listener = asyncio.ensure_future(ed.listen({"topic": "broadcast"}, make_ctx(runtime)))
    await asyncio.sleep(0)
    out = await co.broadcast({"message": [1, 2], "scope": "subscribers"}, make_ctx(runtime))
    assert out["delivered"] == 1 and out["via"] == "reactor"
    assert (await listener)["event"] == [1, 2]


async def test_broadcast_to_reactors_needs_the_gateway_pf503(runtime: ReactorRuntime) -> None:
    await fails(co.broadcast({"message": 1}, make_ctx(runtime)), "PF503")


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({}, "message"),
        ({"message": 1, "scope": "everyone"}, "scope"),
        ({"message": 1, "channel": "a b"}, "channel"),
        ({"message": 1, "channel": "a.*"}, "channel"),
        ({"message": 1, "channel": 5}, "channel"),
    ],
)
async def test_broadcast_bad_input_pf002(runtime: ReactorRuntime, data: dict, field: str) -> None:
    gw = FakeGateway(broadcast_reply={"results": {}, "errors": {}})
    await fails(co.broadcast(data, make_ctx(runtime, gw)), "PF002", field)
    assert gw.requests == []


@pytest.mark.parametrize("reply", [[1, 2], {"results": [], "errors": {}}, "nope"])
async def test_malformed_broadcast_reply_is_pf005(runtime: ReactorRuntime, reply: Any) -> None:
    gw = FakeGateway(broadcast_reply=reply)
    err = await fails(co.broadcast({"message": 1}, make_ctx(runtime, gw)), "PF005")
    assert err.details["reason"] == "bad_gateway_reply"


async def test_broadcast_error_reply_raises_its_error(runtime: ReactorRuntime) -> None:
    gw = FakeGateway(broadcast_reply=PacketFlowError("none", code="PF003"))
    await fails(co.broadcast({"message": 1}, make_ctx(runtime, gw)), "PF003")


# ---------------------------------------------------------------------------------------------
# co:gather


async def test_gather_returns_results_and_errors_by_reactor(runtime: ReactorRuntime) -> None:
    reply = {
        "results": {"r1": {"pong": True}, "r2": {"pong": True}},
        "errors": {"r3": {"error_code": "PF005"}},
    }
    gw = FakeGateway(broadcast_reply=reply)
    out = await co.gather(
        {"packet": {"group": "cf", "element": "ping", "data": {"echo_data": 1}, "priority": 9}},
        make_ctx(runtime, gw),
    )
    assert out == {**reply, "reactors": 3}
    (msg,) = gw.requests
    assert msg.destination_id is None
    assert msg.payload.packet.priority == 9
    assert decode_json(msg.payload.packet.data) == {"echo_data": 1}
    assert msg.payload.packet.timeout_ms is not None
    assert msg.payload.packet.timeout_ms <= 10_000, "children never outlive the parent"


@pytest.mark.parametrize(
    ("packet", "field"),
    [
        (None, "packet"),
        ("cf:ping", "packet"),
        ({"element": "ping"}, "packet.group"),
        ({"group": "zz", "element": "ping"}, "packet.group"),
        ({"group": "cf"}, "packet.element"),
        ({"group": "cf", "element": "Ping"}, "packet.element"),
        ({"group": "cf", "element": "ping", "data": [1]}, "packet.data"),
        ({"group": "cf", "element": "ping", "priority": 11}, "packet.priority"),
        ({"group": "cf", "element": "ping", "timeout_ms": 0}, "packet.timeout_ms"),
        ({"group": "cf", "element": "ping", "id": ""}, "packet.id"),
    ],
)
async def test_gather_bad_packet_pf002(runtime: ReactorRuntime, packet: Any, field: str) -> None:
    gw = FakeGateway(broadcast_reply={"results": {}, "errors": {}})
    data = {} if packet is None else {"packet": packet}
    await fails(co.gather(data, make_ctx(runtime, gw)), "PF002", field)


async def test_gather_needs_the_gateway_pf503(runtime: ReactorRuntime) -> None:
    await fails(
        co.gather({"packet": {"group": "cf", "element": "ping"}}, make_ctx(runtime)), "PF503"
    )


# ---------------------------------------------------------------------------------------------
# co:scatter


def upper_on(reactors: list[str], *, delays: dict[int, float] | None = None) -> SubmitFn:
    """df:transform uppercase, each chunk on the next reactor; chunk i sleeps delays[i]."""
    count = 0

    async def on_submit(g: str, e: str, data: dict, opts: dict) -> tuple[Any, str]:
        nonlocal count
        index = int(opts["packet_id"].rsplit(".", 1)[1])
        await asyncio.sleep((delays or {}).get(index, 0))
        rid = reactors[count % len(reactors)]
        count += 1
        return {
            "result": [s.upper() for s in data["input"]],
            "operation_applied": "uppercase",
            "processing_stats": {"duration_ms": 1},
        }, rid

    return on_submit


async def test_scatter_splits_by_eligible_reactors_and_keeps_input_order(
    runtime: ReactorRuntime,
) -> None:
    rows = [
        row("r1"),
        row("r2"),
        row("r3"),
        row("r4", caps=("cf:ping",)),
        row("r5", health="failed"),
    ]
    # later chunks finish first: the result is still in input order
    gw = FakeGateway(
        rows=rows, on_submit=upper_on(["ra", "rb", "rc"], delays={0: 0.03, 1: 0.02, 2: 0.0})
    )
    items = list("abcdefghij")
    out = await co.scatter(
        {"input": items, "element": "df:transform", "data": {"operation": "uppercase"}},
        make_ctx(runtime, gw),
    )
    assert out["result"] == [c.upper() for c in items]
    assert out["chunks"] == 3 and out["chunk_sizes"] == [4, 3, 3]
    assert len(out["reactor_ids"]) == 3
    sent = {opts["packet_id"]: data for _, _, data, opts in gw.submits}
    assert sent == {
        "packet_parent.scatter.0": {"operation": "uppercase", "input": list("abcd")},
        "packet_parent.scatter.1": {"operation": "uppercase", "input": list("efg")},
        "packet_parent.scatter.2": {"operation": "uppercase", "input": list("hij")},
    }
    assert all(g == "df" and e == "transform" for g, e, _, _ in gw.submits)
    # one chunk per eligible reactor: each avoids the reactors meant for the others
    avoids = {o["packet_id"]: o["routing_preferences"]["avoid_reactors"] for *_, o in gw.submits}
    assert avoids == {
        "packet_parent.scatter.0": ["r2", "r3"],
        "packet_parent.scatter.1": ["r1", "r3"],
        "packet_parent.scatter.2": ["r1", "r2"],
    }


async def test_scatter_retries_a_pinned_chunk_once_without_preferences(
    runtime: ReactorRuntime,
) -> None:
    """If a chunk's reactor goes away, the chunk is not lost to the avoid lists."""
    seen: list[tuple[str, Any]] = []

    async def on_submit(g: str, e: str, data: dict, opts: dict) -> tuple[Any, str]:
        seen.append((opts["packet_id"], opts.get("routing_preferences")))
        if opts["packet_id"].endswith(".0") and opts.get("routing_preferences"):
            raise PacketFlowError("reactor r1 lost", code="PF503")
        return {"result": data["input"]}, "r2"

    gw = FakeGateway(rows=[row("r1"), row("r2")], on_submit=on_submit)
    out = await co.scatter({"input": [1, 2], "element": "df:transform"}, make_ctx(runtime, gw))
    assert out["result"] == [1, 2]
    assert [s for s in seen if s[0].endswith(".0")] == [
        ("packet_parent.scatter.0", {"avoid_reactors": ["r2"]}),
        ("packet_parent.scatter.0", None),
    ]
    # a non-retryable failure is not retried
    gw2 = FakeGateway(rows=[row("r1"), row("r2")], on_submit=_refuse)
    await fails(
        co.scatter({"input": [1, 2], "element": "df:transform"}, make_ctx(runtime, gw2)), "PF005"
    )
    assert len(gw2.submits) == 2


async def _refuse(g: str, e: str, data: dict, opts: dict) -> tuple[Any, str]:
    raise PacketFlowError("bad", code="PF002", field=f"{D}.operation")


async def test_scatter_explicit_chunks_are_clamped_to_the_items(runtime: ReactorRuntime) -> None:
    gw = FakeGateway(rows=[row("r1")], on_submit=upper_on(["r1"]))
    out = await co.scatter(
        {"input": ["a", "b"], "element": "df:transform", "chunks": 50}, make_ctx(runtime, gw)
    )
    assert out["chunks"] == 2 and out["result"] == ["A", "B"]


async def test_scatter_with_no_eligible_reactor_sends_one_chunk(runtime: ReactorRuntime) -> None:
    gw = FakeGateway(rows=[], on_submit=upper_on(["r1"]))
    out = await co.scatter(
        {"input": ["a", "b", "c"], "element": "df:transform"}, make_ctx(runtime, gw)
    )
    assert out["chunks"] == 1 and out["result"] == ["A", "B", "C"]


async def test_scatter_non_list_results_are_listed_per_chunk(runtime: ReactorRuntime) -> None:
    async def total(g: str, e: str, data: dict, opts: dict) -> tuple[Any, str]:
        return {"result": sum(data["input"])}, "r1"

    gw = FakeGateway(on_submit=total)
    out = await co.scatter(
        {"input": [1, 2, 3, 4, 5], "element": "df:reduce", "chunks": 2, "data": {"op": "sum"}},
        make_ctx(runtime, gw),
    )
    assert out["result"] == [6, 9]


async def test_scatter_empty_input_submits_nothing(runtime: ReactorRuntime) -> None:
    gw = FakeGateway()
    out = await co.scatter({"input": [], "element": "df:transform"}, make_ctx(runtime, gw))
    assert out == {"result": [], "chunks": 0, "reactor_ids": []}
    assert gw.submits == []


async def test_scatter_failed_chunk_is_pf005_naming_it_and_abandons_the_rest(
    runtime: ReactorRuntime,
) -> None:
    started: list[int] = []
    cancelled: list[int] = []

    async def on_submit(g: str, e: str, data: dict, opts: dict) -> tuple[Any, str]:
        index = int(opts["packet_id"].rsplit(".", 1)[1])
        started.append(index)
        if index == 1:
            raise PacketFlowError("bad op", code="PF002", field=f"{D}.operation")
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            cancelled.append(index)
            raise
        return {"result": []}, "r"

    gw = FakeGateway(on_submit=on_submit)
    err = await fails(
        co.scatter(
            {"input": [1, 2, 3], "element": "df:transform", "chunks": 3}, make_ctx(runtime, gw)
        ),
        "PF005",
    )
    assert err.details["reason"] == "chunk_failed"
    assert err.details["chunk"] == 1
    assert err.details["error"]["error_code"] == "PF002"
    assert err.details["error"]["error_details"]["field"] == f"{D}.operation"
    assert err.retryable is False, "a PF002 chunk will fail again"
    await asyncio.sleep(0)
    assert sorted(cancelled) == [0, 2]


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"element": "df:transform"}, "input"),
        ({"input": "abc", "element": "df:transform"}, "input"),
        ({"input": [1]}, "element"),
        ({"input": [1], "element": "transform"}, "element"),
        ({"input": [1], "element": "zz:transform"}, "element"),
        ({"input": [1], "element": "df:Transform"}, "element"),
        ({"input": [1], "element": "df:transform", "data": [1]}, "data"),
        ({"input": [1], "element": "df:transform", "data": {"input": [2]}}, "data.input"),
        ({"input": [1], "element": "df:transform", "chunks": 0}, "chunks"),
        ({"input": [1], "element": "df:transform", "chunks": "2"}, "chunks"),
        ({"input": [1], "element": "df:transform", "chunks": 100_000}, "chunks"),
    ],
)
async def test_scatter_bad_input_pf002(runtime: ReactorRuntime, data: dict, field: str) -> None:
    gw = FakeGateway()
    await fails(co.scatter(data, make_ctx(runtime, gw)), "PF002", field)
    assert gw.submits == []


def test_split_sizes_differ_by_at_most_one_and_keep_order() -> None:
    items = list(range(11))
    for k in range(1, 12):
        parts = co.split(items, k)
        assert len(parts) == k
        assert [x for p in parts for x in p] == items
        sizes = [len(p) for p in parts]
        assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)


# ---------------------------------------------------------------------------------------------
# co:consensus


def route_avoiding(rows: list[dict], answer: Callable[[str, dict], Any]) -> SubmitFn:
    """Send each replica to the least-loaded reactor it does not avoid, like the gateway."""

    async def on_submit(g: str, e: str, data: dict, opts: dict) -> tuple[Any, str]:
        avoid = set((opts.get("routing_preferences") or {}).get("avoid_reactors", []))
        rid = next(r["reactor_id"] for r in rows if r["reactor_id"] not in avoid)
        return answer(rid, data), rid

    return on_submit


async def test_consensus_spreads_replicas_and_agrees(runtime: ReactorRuntime) -> None:
    rows = [row("r1", 0.1), row("r2", 0.2), row("r3", 0.3)]

    def answer(rid: str, data: dict) -> Any:
        # volatile keys differ between reactors and do not count
        return {
            "result": ["A"],
            "reactor_id": rid,
            "timestamp": time.time(),
            "processing_stats": {"duration_ms": 1.5},
        }

    gw = FakeGateway(rows=rows, on_submit=route_avoiding(rows, answer))
    packet = {"group": "df", "element": "transform", "data": {"input": ["a"]}}
    out = await co.consensus({"packet": packet}, make_ctx(runtime, gw))
    assert out["decision"] == {"result": ["A"]}
    assert out["agreement"] == 1.0 and out["quorum"] == 2 and out["replicas"] == 3
    assert [v["reactor_id"] for v in out["votes"]] == ["r1", "r2", "r3"]
    assert all(v["agrees"] for v in out["votes"])
    ids = [opts["packet_id"] for *_, opts in gw.submits]
    assert ids == [f"packet_parent.replica.{i}" for i in range(3)]


async def test_consensus_majority_wins_and_dissent_is_recorded(runtime: ReactorRuntime) -> None:
    rows = [row("r1"), row("r2"), row("r3")]
    gw = FakeGateway(
        rows=rows,
        on_submit=route_avoiding(rows, lambda rid, d: {"result": 2.0 if rid != "r2" else 3}),
    )
    out = await co.consensus(
        {"packet": {"group": "df", "element": "transform"}}, make_ctx(runtime, gw)
    )
    assert out["decision"] == {"result": 2.0}
    assert out["agreement"] == pytest.approx(0.6667)
    assert [(v["reactor_id"], v["agrees"]) for v in out["votes"]] == [
        ("r1", True),
        ("r2", False),
        ("r3", True),
    ]


async def test_consensus_below_quorum_is_pf005_with_votes(runtime: ReactorRuntime) -> None:
    rows = [row("r1"), row("r2"), row("r3")]
    gw = FakeGateway(rows=rows, on_submit=route_avoiding(rows, lambda rid, d: {"who": rid}))
    err = await fails(
        co.consensus({"packet": {"group": "df", "element": "transform"}}, make_ctx(runtime, gw)),
        "PF005",
    )
    assert err.details["reason"] == "no_quorum"
    assert len(err.details["votes"]) == 3
    assert err.details["quorum"] == 2 and err.details["distinct_results"] == 3
    assert err.retryable is False, "a deterministic disagreement does not go away"


async def test_consensus_failed_replicas_vote_against_and_make_it_retryable(
    runtime: ReactorRuntime,
) -> None:
    async def on_submit(g: str, e: str, data: dict, opts: dict) -> tuple[Any, str]:
        if opts["packet_id"].endswith(("1", "2")):
            raise ProcessingFailed("boom")
        return {"result": 1}, "r1"

    gw = FakeGateway(on_submit=on_submit)
    err = await fails(
        co.consensus({"packet": {"group": "df", "element": "transform"}}, make_ctx(runtime, gw)),
        "PF005",
    )
    votes = err.details["votes"]
    assert [v.get("error_code") for v in votes] == [None, "PF005", "PF005"]
    assert err.retryable is True
    # with quorum 1 the single good answer is the decision
    gw2 = FakeGateway(on_submit=on_submit)
    out = await co.consensus(
        {"packet": {"group": "df", "element": "transform"}, "quorum": 1}, make_ctx(runtime, gw2)
    )
    assert out["decision"] == {"result": 1}
    assert out["agreement"] == pytest.approx(0.3333)


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({}, "packet"),
        ({"packet": {"group": "df"}}, "packet.element"),
        ({"packet": {"group": "df", "element": "x"}, "replicas": 0}, "replicas"),
        ({"packet": {"group": "df", "element": "x"}, "replicas": 99}, "replicas"),
        ({"packet": {"group": "df", "element": "x"}, "replicas": 3, "quorum": 4}, "quorum"),
        ({"packet": {"group": "df", "element": "x"}, "quorum": 0}, "quorum"),
    ],
)
async def test_consensus_bad_input_pf002(runtime: ReactorRuntime, data: dict, field: str) -> None:
    await fails(co.consensus(data, make_ctx(runtime, FakeGateway())), "PF002", field)


def test_spread_gives_each_replica_its_own_reactor_when_there_are_enough() -> None:
    assert co.spread(["a", "b", "c"], 3) == [["b", "c"], ["a", "c"], ["a", "b"]]
    # more reactors than replicas: each replica avoids every reactor but its own, so two
    # replicas can never meet on a spare one
    assert co.spread(["a", "b", "c", "d"], 2) == [["b", "c", "d"], ["a", "c", "d"]]
    # fewer: round robin
    assert co.spread(["a", "b"], 3) == [["b"], ["a"], ["b"]]
    assert co.spread([], 2) == [[], []]


async def test_consensus_replicas_never_share_a_reactor_when_enough_exist(
    runtime: ReactorRuntime,
) -> None:
    """The hardening issue: 2 of 3 replicas ran on one reactor with 5 available, because
    the router preferred a reactor meant for no replica. Here the router prefers r5."""
    rows = [row(f"r{i}", i / 10) for i in range(1, 6)]
    by_router_preference = list(reversed(rows))
    gw = FakeGateway(
        rows=rows, on_submit=route_avoiding(by_router_preference, lambda rid, d: {"result": 1})
    )
    out = await co.consensus(
        {"packet": {"group": "df", "element": "transform"}}, make_ctx(runtime, gw)
    )
    reactors = [v["reactor_id"] for v in out["votes"]]
    assert len(set(reactors)) == 3, reactors
    assert out["distinct_reactors"] == 3
    assert out["agreement"] == 1.0


async def test_consensus_distinct_reactors_counts_reactors_not_replicas(
    runtime: ReactorRuntime,
) -> None:
    rows = [row("r1"), row("r2")]
    gw = FakeGateway(rows=rows, on_submit=route_avoiding(rows, lambda rid, d: {"result": 1}))
    out = await co.consensus(
        {"packet": {"group": "df", "element": "transform"}, "replicas": 3},
        make_ctx(runtime, gw),
    )
    assert [v["reactor_id"] for v in out["votes"]] == ["r1", "r2", "r1"]
    assert out["distinct_reactors"] == 2


async def test_consensus_reruns_a_failed_replica_on_a_spare_reactor(
    runtime: ReactorRuntime,
) -> None:
    rows = [row(f"r{i}", i / 10) for i in range(1, 6)]
    route = route_avoiding(rows, lambda rid, d: {"result": 1})

    async def on_submit(g: str, e: str, data: dict, opts: dict) -> tuple[Any, str]:
        avoid = (opts.get("routing_preferences") or {}).get("avoid_reactors", [])
        if "r2" not in avoid:  # r2 lost its connection while running the replica
            raise ProcessingFailed("reactor died", retryable=True)
        return await route(g, e, data, opts)

    gw = FakeGateway(rows=rows, on_submit=on_submit)
    out = await co.consensus(
        {"packet": {"group": "df", "element": "transform"}}, make_ctx(runtime, gw)
    )
    assert [v["reactor_id"] for v in out["votes"]] == ["r1", "r4", "r3"]
    assert out["distinct_reactors"] == 3 and out["agreement"] == 1.0
    assert [opts["packet_id"] for *_, opts in gw.submits].count("packet_parent.replica.1") == 2


async def test_consensus_without_spares_keeps_the_failed_vote(runtime: ReactorRuntime) -> None:
    rows = [row("r1"), row("r2"), row("r3")]
    route = route_avoiding(rows, lambda rid, d: {"result": 1})

    async def on_submit(g: str, e: str, data: dict, opts: dict) -> tuple[Any, str]:
        if "r2" not in (opts.get("routing_preferences") or {}).get("avoid_reactors", []):
            raise ProcessingFailed("reactor died", retryable=True)
        return await route(g, e, data, opts)

    gw = FakeGateway(rows=rows, on_submit=on_submit)
    out = await co.consensus(
        {"packet": {"group": "df", "element": "transform"}}, make_ctx(runtime, gw)
    )
    assert [v.get("error_code") for v in out["votes"]] == [None, "PF005", None]
    assert out["distinct_reactors"] == 2 and len(gw.submits) == 3


def test_canonical_ignores_volatile_keys_key_order_and_integral_floats() -> None:
    a = {"b": [1.0, {"y": 2, "x": 1}], "a": 1, "reactor_id": "r1", "timestamp": 5}
    b = {"a": 1.0, "b": [1, {"x": 1, "y": 2.0}], "reactor_id": "r2", "response_time_ms": 3}
    assert co.canonical(a) == co.canonical(b)
    assert co.canonical({"a": 1}) != co.canonical({"a": 1.5})
    assert co.canonical({"a": True}) != co.canonical({"a": 1})


# ---------------------------------------------------------------------------------------------
# co:sync


async def test_sync_releases_when_all_parties_arrive(runtime: ReactorRuntime) -> None:
    first = asyncio.ensure_future(co.sync({"barrier": "b1", "parties": 2}, make_ctx(runtime)))
    await asyncio.sleep(0.02)  # time passes: the first party's waited_ms counts it
    assert not first.done()
    second = await co.sync({"barrier": "b1", "parties": 2}, make_ctx(runtime))
    one = await first
    assert second == {"released": True, "barrier": "b1", "parties": 2, "waited_ms": 0.0}
    assert one["released"] and one["waited_ms"] >= 15


async def test_sync_times_out_pf504_and_leaves_the_barrier(runtime: ReactorRuntime) -> None:
    err = await fails(
        co.sync({"barrier": "b2", "parties": 3, "timeout_ms": 30}, make_ctx(runtime)), "PF504"
    )
    assert err.details["reason"] == "barrier_timeout"
    assert co.sync_state(make_ctx(runtime)).barriers.waiting("b2") == 0
    # the packet's own deadline bounds the wait too (answered before the runtime cancels)
    start = time.monotonic()
    await fails(co.sync({"barrier": "b3", "parties": 2}, make_ctx(runtime, ttl=0.2)), "PF504")
    assert time.monotonic() - start < 0.2


async def test_sync_with_mismatched_parties_pf002(runtime: ReactorRuntime) -> None:
    waiting = asyncio.ensure_future(co.sync({"barrier": "b4", "parties": 3}, make_ctx(runtime)))
    await asyncio.sleep(0)
    await fails(co.sync({"barrier": "b4", "parties": 2}, make_ctx(runtime)), "PF002", "parties")
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)
    assert co.sync_state(make_ctx(runtime)).barriers.waiting("b4") == 0, "cancel leaves"


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"parties": 2}, "barrier"),
        ({"barrier": "b"}, "parties"),
        ({"barrier": "", "parties": 2}, "barrier"),
        ({"barrier": "b", "parties": 0}, "parties"),
        ({"barrier": "b", "parties": 2, "timeout_ms": 0}, "timeout_ms"),
    ],
)
async def test_sync_bad_input_pf002(runtime: ReactorRuntime, data: dict, field: str) -> None:
    await fails(co.sync(data, make_ctx(runtime)), "PF002", field)


async def test_barriers_are_per_reactor(runtime: ReactorRuntime) -> None:
    other = ReactorRuntime(ReactorConfig(reactor_id="other"), Registry())
    try:
        waiting = asyncio.ensure_future(co.sync({"barrier": "b", "parties": 2}, make_ctx(runtime)))
        await fails(
            co.sync({"barrier": "b", "parties": 2, "timeout_ms": 20}, make_ctx(other)), "PF504"
        )
        assert not waiting.done()
        await co.sync({"barrier": "b", "parties": 2}, make_ctx(runtime))
        assert (await waiting)["released"]
    finally:
        other.close()


async def test_co_needs_a_runtime_for_sync_pf503() -> None:
    await fails(co.sync({"barrier": "b", "parties": 1}, make_ctx(None)), "PF503")


def test_register_adds_the_five_co_elements() -> None:
    registry = Registry()
    co.register(registry)
    assert {s.key for s in registry} == {
        "co:broadcast",
        "co:gather",
        "co:scatter",
        "co:consensus",
        "co:sync",
    }
    assert all(s.is_async for s in registry)
