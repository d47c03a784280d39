"""A mixed cluster: our gateway, our Python reactor and the Node.js reactor (PFAP §6.2,
§12.3.2): routing by implementation preference, results intact across the languages, a
molecule spanning both, and failover when the JS reactor is killed."""

from __future__ import annotations

import asyncio
import json
import signal
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import msgspec
import pytest

import packetflow
from packetflow.client import AsyncClient, PacketResult
from tests.integration.cluster import Cluster, Node, wait_for

from .js import js_reactor, needs_node

pytestmark = needs_node

JS_ID = "reactor-js-mixed"
PY_ID = "reactor-py-mixed"


@dataclass
class Mixed:
    cluster: Cluster
    gateway: Node
    py: Node
    js: Node


@pytest.fixture
def mixed(cluster: Cluster) -> Iterator[Mixed]:
    # Both general_purpose: the same §3.3 affinity, so only §6.2 separates them.
    gateway = cluster.gateway("--health-scale", "0.1")
    py = cluster.reactor(gateway, "--id", PY_ID, "--heartbeat-interval", "0.5")
    js = js_reactor(cluster, gateway, "--id", JS_ID, "--heartbeat-interval", "0.5")
    yield Mixed(cluster, gateway, py, js)


def reactor_of(result: PacketResult) -> str:
    assert result.reactor_id is not None
    return result.reactor_id


async def test_df_packets_prefer_javascript_by_implementation_preference(mixed: Mixed) -> None:
    """§6.2: df × javascript is 1.2, python 1.0 (DESIGN §5), so with equal affinity and load
    df packets go to the JS reactor; a `preferred_implementation: python` hint (×1.25)
    sends them to the Python one, so both are eligible and the preference decides."""
    async with packetflow.connect(mixed.gateway.url) as pf:
        plain = [await pf.submit("df", "transform", {"input": f"x{i}", "operation": "uppercase"})
                 for i in range(12)]  # fmt: skip
        hinted = [
            await pf.submit("df", "transform", {"input": f"y{i}", "operation": "uppercase"},
                            routing_preferences={"preferred_implementation": "python"})
            for i in range(6)
        ]  # fmt: skip
    assert Counter(map(reactor_of, plain)) == {JS_ID: 12}
    assert [r.result for r in plain] == [f"X{i}" for i in range(12)]
    assert Counter(map(reactor_of, hinted)) == {PY_ID: 6}
    assert [r.result for r in hinted] == [f"Y{i}" for i in range(6)]


UNICODE = [
    "ascii", "héllo wörld", "Straße", "Ἀθῆναι", "東京都", "😀👍🏽👩‍👩‍👧", "مرحبا بالعالم", "שלום",
    "a\u0301", "\u2028\u2029", "tab\tnew\nline", "quote\"back\\slash", "\u0000nul", "\ufeffbom",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "",
]  # fmt: skip
NESTED = {
    "name": "ünïcødé 😀",
    "numbers": [0, -1, 2**53 - 1, -(2**53) + 1, 0.1, 1.5e300, -2.5e-300, 3.14159],
    "flags": [True, False, None],
    "deep": {"a": {"b": {"c": {"d": {"e": {"f": [[[["bottom"]]]]}}}}}},
    "records": [{"id": i, "tags": [f"t{i}", "ß"], "meta": {"k": None}} for i in range(50)],
    "empty": {"list": [], "object": {}, "string": ""},
}


async def test_results_come_back_intact(mixed: Mixed) -> None:
    """Unicode strings, ~100k-item arrays and nested objects travel client → gateway → JS
    reactor → back and compare exactly."""
    big_ints = list(range(100_000))
    big_strings = [f"ß{i % 97}é" for i in range(100_000)]
    records = [{"name": f"  {s}  ", "nested": NESTED["deep"], "n": i}
               for i, s in enumerate(UNICODE)]  # fmt: skip
    async with packetflow.connect(mixed.gateway.url) as pf:
        echo = await pf.submit("cf", "ping", {"echo_data": {"strings": UNICODE, "doc": NESTED}},
                               destination_id=JS_ID)  # fmt: skip
        upper = await pf.submit("df", "transform", {"input": UNICODE, "operation": "uppercase"})
        reverse = await pf.submit(
            "df",
            "transform",
            {"input": big_ints, "operation": "reverse", "parameters": {"scope": "list"}},
        )
        strings = await pf.submit("df", "transform", {"input": big_strings,
                                                      "operation": "uppercase"})  # fmt: skip
        parsed = await pf.submit(
            "df", "transform", {"input": json.dumps(NESTED), "operation": "json_parse"}
        )
        trimmed = await pf.submit(
            "df",
            "transform",
            {"input": records, "operation": "trim", "parameters": {"fields": ["name"]}},
        )
    assert {reactor_of(r) for r in (echo, upper, reverse, strings, parsed, trimmed)} == {JS_ID}
    assert echo.data["echo_data"] == {"strings": UNICODE, "doc": NESTED}
    assert upper.result == [s.upper() for s in UNICODE]
    assert reverse.result == big_ints[::-1]
    assert reverse.data["items_processed"] == 100_000
    assert strings.result == [s.upper() for s in big_strings]  # ß → SS, é → É
    assert parsed.result == NESTED
    assert trimmed.result == [{**r, "name": r["name"].strip()} for r in records]


async def test_a_molecule_spans_both_implementations(mixed: Mixed) -> None:
    """§12.3.2 mixed_implementation_molecules: df:reduce (only Python serves it) → df:wordcount
    (only the JS reactor) → df:validate (Python) over ionic bonds; each stage works on the
    previous one's result, so the data crossed the languages twice."""
    molecule = {
        "coordination_type": "initiate",
        "molecule_id": "mixed-molecule",
        "molecular_structure": {
            "packets": [
                {"id": "text", "group": "df", "element": "reduce",
                 "data": {"input": ["Grüße ", "aus ", "Köln, ", "grüße 😀"], "op": "concat"}},
                {"id": "count", "group": "df", "element": "wordcount", "data": {}},
                {"id": "check", "group": "df", "element": "validate", "data": {"schema": {
                    "type": "object",
                    "required": ["words", "top"],
                    "properties": {
                        "words": {"const": 4},
                        "top": {"const": [{"word": "grüße", "count": 2},
                                          {"word": "aus", "count": 1},
                                          {"word": "köln", "count": 1}]},
                    },
                }}},
            ],
            "bonds": [
                {"from": "text", "to": "count", "type": "ionic", "strength": 1.0},
                {"from": "count", "to": "check", "type": "ionic", "strength": 1.0},
            ],
        },
    }  # fmt: skip
    final: dict[str, Any] = {}
    async with AsyncClient(mixed.gateway.url) as pf, asyncio.timeout(60):
        async for msg in pf.coordinate(molecule):
            final = msgspec.to_builtins(msg.payload)
            if final["coordination_type"] in ("complete", "abort"):
                break
    assert final["coordination_type"] == "complete", final
    state = final["execution_state"]
    assert sorted(state["completed_packets"]) == ["check", "count", "text"], final
    assert not state["failed_packets"]
    # Which implementation ran what: only one side serves each element.
    caps = {r["reactor_id"]: r for r in mixed.gateway.get("/v1/reactors")["reactors"]}
    assert caps[JS_ID]["implementation"] == "javascript"
    assert caps[PY_ID]["implementation"] == "python"
    async with packetflow.connect(mixed.gateway.url) as pf:
        with pytest.raises(packetflow.PacketFlowError) as err:
            await pf.submit("df", "wordcount", {"input": "x"}, destination_id=PY_ID)
        assert err.value.code == "PF003"
        with pytest.raises(packetflow.PacketFlowError) as err:
            await pf.submit("df", "reduce", {"input": [1], "op": "sum"}, destination_id=JS_ID)
        assert err.value.code == "PF003"


async def test_sigkill_fails_over_to_python_without_losing_a_packet(mixed: Mixed) -> None:
    """DESIGN §6: killing the JS reactor (SIGKILL) mid-stream fails its in-flight packets
    over to the Python reactor; every packet submitted completes with the right result."""
    total, in_flight = 600, 64
    done: dict[int, str] = {}
    failures: list[BaseException] = []
    killed = asyncio.Event()

    async with packetflow.connect(mixed.gateway.url) as pf:
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(total):
            queue.put_nowait(i)

        async def worker() -> None:
            while True:
                try:
                    i = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                # A list large enough that packets are in flight when the kill lands.
                data = {"input": [f"p{i}-{k}" for k in range(2000)], "operation": "uppercase"}
                try:
                    res = await pf.submit("df", "transform", data, wait=60)
                except (packetflow.PacketFlowError, TimeoutError) as exc:
                    failures.append(exc)
                    continue
                assert res.result == [f"P{i}-{k}" for k in range(2000)]
                done[i] = reactor_of(res)
                if not killed.is_set() and sum(r == JS_ID for r in done.values()) >= 100:
                    killed.set()
                    mixed.js.proc.send_signal(signal.SIGKILL)

        async with asyncio.timeout(180):
            await asyncio.gather(*(worker() for _ in range(in_flight)))

    assert killed.is_set()
    assert failures == []
    assert sorted(done) == list(range(total))
    by_reactor = Counter(done.values())
    assert by_reactor[JS_ID] >= 100 and by_reactor[PY_ID] > 0, by_reactor
    assert mixed.js.proc.wait(10) == -signal.SIGKILL
    wait_for(lambda: mixed.cluster.health_of(mixed.gateway, JS_ID) in (None, "failed"), 30,
             "the gateway to mark the killed JS reactor failed")  # fmt: skip


TRANSFORM_CASES: list[dict[str, Any]] = [
    {"input": UNICODE, "operation": op}
    for op in ("uppercase", "lowercase", "trim", "title", "reverse", "length", "split")
] + [
    {"input": UNICODE, "operation": "sort"},
    {"input": UNICODE + UNICODE[::-1], "operation": "unique"},
    {"input": UNICODE, "operation": "join", "parameters": {"separator": " · "}},
    {"input": UNICODE, "operation": "join"},
    {"input": "a,b,,c,d", "operation": "split", "parameters": {"separator": ",", "maxsplit": 2}},
    {"input": ["aXbXc", "X"], "operation": "replace", "parameters": {"old": "X", "new": "ö",
                                                                     "count": 1}},
    {"input": [2.675, 2.5, -2.5, 0.125, 1234.5678, 7, -0.5], "operation": "round",
     "parameters": {"digits": 2}},
    {"input": [2.5, -2.5, 1234.5678, 0.5], "operation": "round"},
    {"input": [1234.5678, -55.5], "operation": "round", "parameters": {"digits": -2}},
    {"input": [" 42 ", "3.5e2", "-7", "+1.5", "1_000"], "operation": "to_number"},
    {"input": ['{"a": [1, 2.5, "ß"]}', "null", "[]"], "operation": "json_parse"},
    {"input": [NESTED["deep"], [1, "é"], "s"], "operation": "json_stringify"},
    {"input": [{"b": 1, "a": [1, {"d": 2, "c": 3}]}], "operation": "json_stringify",
     "parameters": {"sort_keys": True, "indent": 2}},
    {"input": [3, 1, 2], "operation": "reverse", "parameters": {"scope": "list"}},
    {"input": [{"n": "b", "v": 2}, {"n": "a"}, {"n": "c", "v": 1}, {"n": "d", "v": None}],
     "operation": "sort", "parameters": {"by": "v", "reverse": True}},
    {"input": [{"name": "ann lee", "x": 1}, {"name": None}, {"y": 2}], "operation": "title",
     "parameters": {"fields": ["name"]}},
    {"input": "xxhixx", "operation": "trim", "parameters": {"chars": "x"}},
    {"input": [{"a": 1, "b": [2]}, [1, 2], "abc"], "operation": "length"},
    {"input": [{"a": " x "}], "operation": "trim"},
    {"input": ["b", 1], "operation": "sort"},
    {"input": "x", "operation": "round"},
    {"input": ["1", "nan"], "operation": "to_number"},
    {"input": "{bad", "operation": "json_parse"},
    {"input": "x", "operation": "explode"},
    {"input": ["a", 1], "operation": "join"},
    {"input": ["a", 1.5, -7, "é"], "operation": "join", "parameters": {"separator": "|"}},
    {"input": ["a", 1.5, True, None], "operation": "join", "parameters": {"separator": "|"}},
    {"input": [{"a": 1}, [2]], "operation": "join"},
]  # fmt: skip


async def test_df_transform_answers_the_same_on_both_implementations(mixed: Mixed) -> None:
    """A packet may land on either implementation (§6.2 only weighs them), so each
    df:transform case must give the same RESULT data, or the same PF002 field, on both."""
    mismatches = []
    async with packetflow.connect(mixed.gateway.url) as pf:
        for i, data in enumerate(TRANSFORM_CASES):
            answers = []
            for reactor in (PY_ID, JS_ID):
                try:
                    res = await pf.submit("df", "transform", data, destination_id=reactor)
                except packetflow.PacketFlowError as err:
                    answers.append(("error", err.code, err.field))
                    continue
                assert reactor_of(res) == reactor
                answers.append(("result", res.result, res.data["items_processed"]))
            if answers[0] != answers[1]:
                mismatches.append((i, data["operation"], *answers))
    assert mismatches == [], "\n".join(map(repr, mismatches))
