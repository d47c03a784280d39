"""ReactorRuntime in-process (DESIGN §4, §10; PFAP §5.2, Appendix C): admission, the queue,
deadlines, failures, executors, idempotency and draining, with a fake peer recording every
frame the runtime sends."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import os
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn

import msgspec
import pytest
from prometheus_client import generate_latest

from packetflow.protocol.errors import ProcessingFailed, invalid_field
from packetflow.protocol.health import (
    HealthState,
    HealthTracker,
    ProbeSucceeded,
    reported_in_heartbeat,
)
from packetflow.protocol.messages import HeartbeatPayload, Submit, decode_one
from packetflow.reactor.context import Context
from packetflow.reactor.elements import load_standard
from packetflow.reactor.registry import Registry
from packetflow.reactor.runtime import ReactorConfig, ReactorRuntime

from ..prometheus import sample
from .expect import poll

WAIT_S = 10.0


class FakePeer:
    """Stands in for transport.Peer: records every frame sent, decoded."""

    def __init__(self) -> None:
        self.seq = 0
        self.remote_id: str | None = None
        self.frames: list[dict[str, Any]] = []
        self._changed = asyncio.Event()

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def send(self, frame: bytes) -> bool:
        self.frames.append(json.loads(frame))
        self._changed.set()
        return True

    async def wait_until(self, predicate: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + WAIT_S
        while not predicate():
            self._changed.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"timed out waiting for {what}; frames: {self.frames}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(remaining, 0.05))

    async def reply_to(self, message_id: str) -> dict[str, Any]:
        def answered() -> bool:
            return any(f["correlation_id"] == message_id for f in self.frames)

        await self.wait_until(answered, f"a reply to {message_id}")
        (reply,) = [f for f in self.frames if f["correlation_id"] == message_id]
        return reply


_serial = 0


def submit_msg(group: str, element: str, data: dict[str, Any] | None = None, *,
               packet_id: str | None = None, message_id: str | None = None,
               **packet_fields: Any) -> Submit:  # fmt: skip
    """A SUBMIT validated by the real decoder, as the server would hand it over."""
    global _serial
    _serial += 1
    envelope_fields = {k: packet_fields.pop(k) for k in ("ttl",) if k in packet_fields}
    packet: dict[str, Any] = {"group": group, "element": element, "data": data or {},
                              **packet_fields}  # fmt: skip
    if packet_id is not None:
        packet["id"] = packet_id
    envelope = {
        "protocol_version": "1.0", "message_type": "submit",
        "message_id": message_id or f"msg_test_{_serial}", "timestamp": 1640995200000,
        "source_id": "test-client", "payload": {"packet": packet}, **envelope_fields,
    }  # fmt: skip
    msg = decode_one(json.dumps(envelope).encode())
    assert isinstance(msg, Submit)
    return msg


class Calls:
    """How many times a handler registered by ``Harness.counted`` has been called."""

    def __init__(self) -> None:
        self.count = 0


class Harness:
    def __init__(self, **config: Any) -> None:
        self.registry = Registry()
        load_standard(self.registry)
        self.config = ReactorConfig(reactor_id="reactor-test", **config)
        self.peer = FakePeer()
        self.rt: ReactorRuntime | None = None

    def element(self, group: str, element: str, **kw: Any) -> Callable[[Any], Any]:
        return self.registry.element(group, element, **kw)

    def start(self) -> ReactorRuntime:
        self.rt = ReactorRuntime(self.config, self.registry)
        return self.rt

    def gated_hold(self) -> asyncio.Event:
        """Register df:hold, which answers once the returned gate is set."""
        gate = asyncio.Event()

        @self.element("df", "hold")
        async def hold(data: dict[str, Any], ctx: Context) -> dict[str, Any]:
            await gate.wait()
            return {}

        return gate

    def counted(self, element: str, outcome: Callable[[int], Any]) -> Calls:
        """Register df:<element>, which counts its calls; the n-th call answers
        ``outcome(n)`` (awaited if it is awaitable; what it raises, the handler raises)."""
        calls = Calls()

        @self.element("df", element)
        async def handler(data: dict[str, Any], ctx: Context) -> Any:
            calls.count += 1
            result = outcome(calls.count)
            return await result if inspect.isawaitable(result) else result

        return calls

    def send(self, group: str, element: str, data: dict[str, Any] | None = None,
             **kw: Any) -> str:  # fmt: skip
        assert self.rt is not None
        msg = submit_msg(group, element, data, **kw)
        self.rt.submit(msg, self.peer)  # type: ignore[arg-type]
        return msg.message_id

    async def call(self, group: str, element: str, data: dict[str, Any] | None = None,
                   **kw: Any) -> dict[str, Any]:  # fmt: skip
        return await self.peer.reply_to(self.send(group, element, data, **kw))

    async def ping(self) -> None:
        reply = await self.call("cf", "ping", {"echo_data": "still here"})
        assert reply["message_type"] == "result", reply
        assert reply["payload"]["data"]["echo_data"] == "still here"


@pytest.fixture
async def h() -> Any:
    harness = Harness()
    yield harness
    if harness.rt is not None:
        harness.rt.close()


def error_of(reply: dict[str, Any]) -> dict[str, Any]:
    assert reply["message_type"] == "error", reply
    payload: dict[str, Any] = reply["payload"]
    return payload


# ---------------------------------------------------------------- concurrency and the queue


async def test_max_concurrent_packets_is_respected(h: Harness) -> None:
    """DESIGN §4/§5: at most max_concurrent_packets handlers run; the rest queue."""
    h.config.max_concurrent_packets = 2
    gate = asyncio.Event()
    active, peak = 0, 0

    @h.element("df", "hold")
    async def hold(data: dict[str, Any], ctx: Context) -> dict[str, Any]:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await gate.wait()
        active -= 1
        return {"n": data["n"]}

    rt = h.start()
    ids = [h.send("df", "hold", {"n": i}) for i in range(5)]
    await poll(lambda: active == 2, "two handlers running")
    assert rt.in_flight == 2
    assert len(rt.queue) == 3
    gate.set()
    replies = [await h.peer.reply_to(mid) for mid in ids]
    assert [r["payload"]["data"]["n"] for r in replies] == list(range(5))
    assert peak == 2
    assert rt.in_flight == 0 and len(rt.queue) == 0


async def test_queued_packets_run_by_priority_then_age(h: Harness) -> None:
    h.config.max_concurrent_packets = 1
    gate = asyncio.Event()
    order: list[str] = []

    @h.element("df", "hold")
    async def hold(data: dict[str, Any], ctx: Context) -> dict[str, Any]:
        order.append(data["name"])
        if data["name"] == "blocker":
            await gate.wait()
        return {}

    h.start()
    h.send("df", "hold", {"name": "blocker"})
    await poll(lambda: order == ["blocker"], "the blocker to start")
    queued = [("low-a", 3), ("high-a", 8), ("low-b", 3), ("high-b", 8), ("mid", 5)]
    ids = [h.send("df", "hold", {"name": name}, priority=p) for name, p in queued]
    gate.set()
    for mid in ids:
        await h.peer.reply_to(mid)
    assert order == ["blocker", "high-a", "high-b", "mid", "low-a", "low-b"]


async def test_full_queue_answers_pf004_with_retry_delay(h: Harness) -> None:
    h.config.max_concurrent_packets = 1
    h.config.max_queue = 2
    gate = h.gated_hold()
    h.start()
    accepted = [h.send("df", "hold") for _ in range(3)]  # 1 running + 2 queued
    err = error_of(await h.call("df", "hold"))
    assert err["error_code"] == "PF004"
    assert err["error_category"] == "capacity_error"
    assert err["retry_possible"] is True
    assert err["retry_delay_ms"] > 0
    gate.set()
    for mid in accepted:
        assert (await h.peer.reply_to(mid))["message_type"] == "result"


async def test_packet_waiting_past_its_timeout_in_the_queue_answers_pf005(h: Harness) -> None:
    h.config.max_concurrent_packets = 1
    gate = h.gated_hold()
    h.start()
    first = h.send("df", "hold")
    err = error_of(await h.call("df", "hold", timeout_ms=100))
    assert err["error_code"] == "PF005"
    assert err["error_details"] == {"reason": "timeout", "stage": "queued"}
    assert err["retry_possible"] is True
    gate.set()
    await h.peer.reply_to(first)


# ---------------------------------------------------------------- timeouts (Appendix C, §5.2)


async def test_timeout_defaults_and_caps_follow_appendix_c_and_ttl(h: Harness) -> None:
    """DESIGN §4: Appendix C default, capped at its max; elements outside it: 10 × default;
    the envelope's TTL caps the packet's timeout."""

    async def budget(data: dict[str, Any], ctx: Context) -> dict[str, Any]:
        return {"budget_s": ctx.deadline - ctx.received}

    h.element("df", "transform")(budget)  # Appendix C: 30 s, max 300 s
    h.element("df", "reduce")(budget)  # §5.2 only: 120 s, max 10 × 120 s
    h.element("df", "custom")(budget)  # neither: 30 s, max 300 s
    h.start()

    async def budget_of(element: str, **kw: Any) -> float:
        reply = await h.call("df", element, **kw)
        return float(reply["payload"]["data"]["budget_s"])

    assert await budget_of("transform") == pytest.approx(30.0)
    assert await budget_of("transform", timeout_ms=1_000_000) == pytest.approx(300.0)
    assert await budget_of("transform", timeout_ms=1234) == pytest.approx(1.234)
    assert await budget_of("reduce", timeout_ms=10**9) == pytest.approx(1200.0)
    assert await budget_of("custom") == pytest.approx(30.0)
    assert await budget_of("custom", timeout_ms=10**9) == pytest.approx(300.0)
    assert await budget_of("transform", ttl=500) == pytest.approx(0.5)


async def test_handler_past_its_timeout_answers_pf005_timeout_and_reactor_serves_on(
    h: Harness,
) -> None:
    """DESIGN §10: cancelled at timeout_ms, PF005 reason "timeout", retry_possible true."""
    cancelled = asyncio.Event()

    @h.element("df", "slow")
    async def slow(data: dict[str, Any], ctx: Context) -> dict[str, Any]:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return {}

    rt = h.start()
    started = time.monotonic()
    err = error_of(await h.call("df", "slow", timeout_ms=200))
    elapsed = time.monotonic() - started
    assert err["error_code"] == "PF005"
    assert err["error_details"]["reason"] == "timeout"
    assert err["error_details"]["timeout_ms"] == 200
    assert err["retry_possible"] is True
    assert 0.15 <= elapsed < 2.0
    await asyncio.wait_for(cancelled.wait(), WAIT_S)  # the handler itself was cancelled
    assert rt.in_flight == 0
    await h.ping()


async def test_handler_that_swallows_its_cancellation_is_still_answered_once(
    h: Harness,
) -> None:
    release = asyncio.Event()
    returned = asyncio.Event()

    @h.element("df", "stubborn")
    async def stubborn(data: dict[str, Any], ctx: Context) -> dict[str, Any]:
        while not release.is_set():
            # A bad handler: it carries on regardless of its cancellation.
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(0.01)
        returned.set()
        return {"late": True}

    rt = h.start()
    mid = h.send("df", "stubborn", timeout_ms=100)
    err = error_of(await h.peer.reply_to(mid))
    assert err["error_details"]["reason"] == "timeout"
    assert rt.in_flight == 0  # its slot is free although the handler still runs
    await h.ping()
    release.set()
    await asyncio.wait_for(returned.wait(), WAIT_S)
    for _ in range(5):  # let the runtime see the late return: it must not reply again
        await asyncio.sleep(0)
    assert [f["correlation_id"] for f in h.peer.frames].count(mid) == 1


async def test_sync_handler_past_its_timeout_answers_pf005_timeout(h: Harness) -> None:
    release = threading.Event()

    @h.element("df", "stuck")
    def stuck(data: dict[str, Any], ctx: Context) -> dict[str, Any]:
        release.wait(10)
        return {}

    h.start()
    try:
        err = error_of(await h.call("df", "stuck", timeout_ms=150))
        assert err["error_details"]["reason"] == "timeout"
        await h.ping()
    finally:
        release.set()


# ---------------------------------------------------------------- handler failures


async def test_handler_exception_answers_pf005_with_type_and_message_no_traceback(
    h: Harness,
) -> None:
    @h.element("df", "boom")
    async def boom(data: dict[str, Any], ctx: Context) -> dict[str, Any]:
        raise ValueError("the widget is bent")

    h.start()
    reply = await h.call("df", "boom")
    err = error_of(reply)
    assert err["error_code"] == "PF005"
    assert err["error_category"] == "processing_error"
    assert err["error_details"]["reason"] == "handler_exception"
    assert err["error_details"]["exception_type"] == "ValueError"
    assert err["error_details"]["exception_message"] == "the widget is bent"
    assert "ValueError: the widget is bent" in err["error_message"]
    # Same data elsewhere would raise again: not retried unless the handler says so.
    assert err["retry_possible"] is False
    assert "Traceback" not in json.dumps(reply)
    assert 'File "' not in json.dumps(reply)
    await h.ping()


async def test_handler_raising_packetflow_error_answers_that_error(h: Harness) -> None:
    @h.element("df", "picky")
    def picky(data: dict[str, Any], ctx: Context) -> dict[str, Any]:
        raise invalid_field("payload.packet.data.x", "int", "str", "type")

    h.start()
    err = error_of(await h.call("df", "picky"))
    assert err["error_code"] == "PF002"
    assert err["error_details"]["field"] == "payload.packet.data.x"


@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_handler_calling_sys_exit_does_not_stop_the_reactor(h: Harness, kind: str) -> None:
    async def quit_async(data: dict[str, Any], ctx: Context) -> dict[str, Any]:
        raise SystemExit(3)

    def quit_sync(data: dict[str, Any], ctx: Context) -> dict[str, Any]:
        raise SystemExit(3)

    h.element("df", "quitter")(quit_async if kind == "async" else quit_sync)
    h.start()
    err = error_of(await h.call("df", "quitter"))
    assert err["error_code"] == "PF005"
    assert err["error_details"]["exception_type"] == "SystemExit"
    await h.ping()


class _Opaque:
    pass


def _self_referencing() -> dict[str, Any]:
    d: dict[str, Any] = {}
    d["me"] = d
    return d


@pytest.mark.parametrize(
    "garbage",
    [_Opaque(), {"a": _Opaque()}, {(1, 2): "tuple key"}, _self_referencing(), 1 + 2j],
    ids=["object", "nested_object", "tuple_key", "cycle", "complex"],
)
async def test_result_that_is_not_json_answers_pf005_result_not_serializable(
    h: Harness, garbage: Any
) -> None:
    @h.element("df", "garbage")
    async def produce(data: dict[str, Any], ctx: Context) -> Any:
        return garbage

    h.start()
    err = error_of(await h.call("df", "garbage"))
    assert err["error_code"] == "PF005"
    assert err["error_details"]["reason"] == "result_not_serializable"
    assert err["retry_possible"] is False
    await h.ping()


async def test_oversized_result_answers_pf005_result_too_large(h: Harness) -> None:
    from packetflow.reactor.runtime import MAX_RESULT_BYTES

    @h.element("df", "huge")
    async def huge(data: dict[str, Any], ctx: Context) -> Any:
        return "x" * (MAX_RESULT_BYTES + 1)

    h.start()
    err = error_of(await h.call("df", "huge"))
    assert err["error_details"]["reason"] == "result_too_large"
    await h.ping()


async def test_scalar_results_are_wrapped_and_handler_dicts_left_untouched(
    h: Harness,
) -> None:
    shared = {"answer": 42}

    @h.element("df", "scalar")
    async def scalar(data: dict[str, Any], ctx: Context) -> Any:
        return 7

    @h.element("df", "shared")
    async def give_shared(data: dict[str, Any], ctx: Context) -> Any:
        return shared

    @h.element("df", "own_stats")
    async def own_stats(data: dict[str, Any], ctx: Context) -> Any:
        return {"processing_stats": "mine", "after": 1}

    h.start()
    assert (await h.call("df", "scalar"))["payload"]["data"]["result"] == 7
    # The reactor's processing_stats replaces a handler's own and comes last (the relay
    # cuts it off the end of the result bytes).
    own = await h.call("df", "own_stats")
    assert list(own["payload"]["data"]) == ["after", "processing_stats"]
    data = (await h.call("df", "shared"))["payload"]["data"]
    assert data["answer"] == 42
    assert data["processing_stats"]["duration_ms"] >= 0
    assert shared == {"answer": 42}


# ---------------------------------------------------------------- executors


async def test_slow_sync_handler_runs_off_the_event_loop(h: Harness) -> None:
    started, release = threading.Event(), threading.Event()
    threads: list[str] = []

    @h.element("df", "blocking")
    def blocking(data: dict[str, Any], ctx: Context) -> dict[str, Any]:
        threads.append(threading.current_thread().name)
        started.set()
        release.wait(10)
        return {"done": True}

    h.start()
    slow = h.send("df", "blocking")
    try:
        await poll(started.is_set, "the sync handler to start")
        t0 = time.monotonic()
        await h.ping()  # answered while the sync handler still blocks its thread
        assert time.monotonic() - t0 < 1.0
        assert threads and threads[0] != threading.current_thread().name
    finally:
        release.set()
    assert (await h.peer.reply_to(slow))["payload"]["data"]["done"] is True


async def test_inline_handler_runs_on_the_loop_for_small_data_only(h: Harness) -> None:
    """inline_max_bytes: small data is answered within submit() itself, on the loop's
    thread; larger data goes to a worker thread as any sync handler's does."""
    threads: list[str] = []

    @h.element("df", "quick", inline_max_bytes=64)
    def quick(data: dict[str, Any], ctx: Context) -> dict[str, Any]:
        threads.append(threading.current_thread().name)
        if data.get("boom"):
            raise ValueError("boom")
        return {"n": len(data.get("pad", ""))}

    h.start()
    small = h.send("df", "quick", {"pad": "x"})
    assert [f["correlation_id"] for f in h.peer.frames] == [small]  # answered synchronously
    assert threads == [threading.current_thread().name]
    big = await h.call("df", "quick", {"pad": "x" * 100})
    assert big["payload"]["data"]["n"] == 100
    assert threads[1] != threading.current_thread().name
    crash = error_of(await h.call("df", "quick", {"boom": True}))
    assert crash["error_code"] == "PF005" and crash["retry_possible"] is False
    assert h.rt is not None and not h.rt.running


def test_inline_max_bytes_is_refused_for_async_and_cpu_bound_handlers() -> None:
    registry = Registry()

    async def handler(data: dict[str, Any], ctx: Context) -> dict[str, Any]:
        return {}

    with pytest.raises(ValueError, match="inline_max_bytes"):
        registry.element("df", "a", inline_max_bytes=10)(handler)
    with pytest.raises(ValueError, match="inline_max_bytes"):
        registry.element("df", "b", inline_max_bytes=10, cpu_bound=True)(crunch)


async def test_thousands_of_queued_inline_packets_start_without_deep_recursion(
    h: Harness,
) -> None:
    """Queued inline packets finish inside the loop that starts them; each must not start
    the next one a frame deeper (4,000 would overflow the stack)."""
    h.config.max_concurrent_packets = 1
    gate = h.gated_hold()
    h.start()
    held = h.send("df", "hold")
    pings = [h.send("cf", "ping", {"echo_data": i}) for i in range(4000)]
    assert h.rt is not None and len(h.rt.queue) == 4000
    gate.set()
    await h.peer.reply_to(held)
    await h.peer.wait_until(lambda: len(h.peer.frames) == 4001, "every ping answered")
    answered = {f["correlation_id"]: f for f in h.peer.frames}
    assert all(answered[p]["message_type"] == "result" for p in pings)


def crunch(data: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """Module level so the process pool can import it by name."""
    return {"pid": os.getpid(), "total": sum(range(data["n"])), "packet_id": ctx.packet_id}


async def test_cpu_bound_handler_runs_in_the_process_pool(h: Harness) -> None:
    h.element("mc", "crunch", cpu_bound=True)(crunch)
    h.start()
    reply = await h.call("mc", "crunch", {"n": 1000}, packet_id="packet_crunch")
    data = reply["payload"]["data"]
    assert data["total"] == sum(range(1000))
    assert data["pid"] != os.getpid()
    assert data["packet_id"] == "packet_crunch"


async def test_sync_callable_returning_a_coroutine_is_awaited(h: Harness) -> None:
    async def inner() -> dict[str, Any]:
        return {"awaited": True}

    class Handler:
        def __call__(self, data: dict[str, Any], ctx: Context) -> Awaitable[dict[str, Any]]:
            return inner()

    h.element("df", "indirect")(Handler())
    h.start()
    assert (await h.call("df", "indirect"))["payload"]["data"]["awaited"] is True


# ---------------------------------------------------------------- idempotency (DESIGN §4)


async def test_same_packet_id_while_running_joins_and_each_is_answered_once(
    h: Harness,
) -> None:
    gate = asyncio.Event()

    async def held(n: int) -> dict[str, Any]:
        await gate.wait()
        return {"call": n}

    calls = h.counted("once", held)
    h.start()
    first = h.send("df", "once", packet_id="packet_dup")
    await poll(lambda: calls.count == 1, "the first attempt to start")
    second = h.send("df", "once", packet_id="packet_dup")
    gate.set()
    a, b = await h.peer.reply_to(first), await h.peer.reply_to(second)
    assert calls.count == 1
    assert a["payload"]["data"] == b["payload"]["data"]
    assert a["payload"]["packet_id"] == b["payload"]["packet_id"] == "packet_dup"
    assert a["message_id"] != b["message_id"]
    assert len(h.peer.frames) == 2


async def test_same_packet_id_after_success_replays_with_new_correlation(h: Harness) -> None:
    calls = h.counted("once", lambda n: {"call": n})
    h.start()
    a = await h.call("df", "once", packet_id="packet_done", message_id="msg_first")
    b = await h.call("df", "once", packet_id="packet_done", message_id="msg_again")
    assert calls.count == 1
    assert a["correlation_id"] == "msg_first" and b["correlation_id"] == "msg_again"
    assert b["payload"]["data"] == a["payload"]["data"] == {
        "call": 1, "processing_stats": a["payload"]["data"]["processing_stats"]}  # fmt: skip


async def test_same_packet_id_after_retryable_failure_runs_anew(h: Harness) -> None:
    def flaky(n: int) -> dict[str, Any]:
        if n == 1:  # a transient failure the handler declares retryable
            raise ProcessingFailed("upstream hiccup", retryable=True)
        return {"call": n}

    calls = h.counted("flaky", flaky)
    h.start()
    err = error_of(await h.call("df", "flaky", packet_id="packet_flaky"))
    assert err["retry_possible"] is True
    ok = await h.call("df", "flaky", packet_id="packet_flaky")
    assert ok["payload"]["data"]["call"] == 2
    again = await h.call("df", "flaky", packet_id="packet_flaky")  # now stored: replayed
    assert again["payload"]["data"]["call"] == 2
    assert calls.count == 2


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (ValueError("always"), "PF005"),
        (invalid_field("payload.packet.data.x", "int", "missing", "required_field"), "PF002"),
    ],
    ids=["exception", "packetflow_error"],
)
async def test_same_packet_id_after_non_retryable_failure_replays_the_error(
    h: Harness, error: Exception, code: str
) -> None:
    def fail(n: int) -> NoReturn:
        raise error

    calls = h.counted("broken", fail)
    h.start()
    a = error_of(await h.call("df", "broken", packet_id="packet_broken"))
    b = error_of(await h.call("df", "broken", packet_id="packet_broken"))
    assert a["error_code"] == b["error_code"] == code
    assert calls.count == 1


async def test_timed_out_packet_may_run_again(h: Harness) -> None:
    async def slow_once(n: int) -> dict[str, Any]:
        if n == 1:
            await asyncio.sleep(30)
        return {"call": n}

    h.counted("slow_once", slow_once)
    h.start()
    err = error_of(await h.call("df", "slow_once", packet_id="packet_t", timeout_ms=100))
    assert err["error_details"]["reason"] == "timeout"
    ok = await h.call("df", "slow_once", packet_id="packet_t")
    assert ok["payload"]["data"]["call"] == 2


# ---------------------------------------------------------------- admission and draining


async def test_unknown_element_answers_pf003(h: Harness) -> None:
    h.start()
    err = error_of(await h.call("df", "no_such_thing"))
    assert err["error_code"] == "PF003"
    assert err["error_details"]["field"] == "payload.packet.element"


async def test_drain_lets_running_and_queued_work_finish_and_refuses_new(h: Harness) -> None:
    h.config.max_concurrent_packets = 1

    @h.element("df", "brief")
    async def brief(data: dict[str, Any], ctx: Context) -> dict[str, Any]:
        await asyncio.sleep(0.1)
        return {"n": data["n"]}

    rt = h.start()
    ids = [h.send("df", "brief", {"n": i}) for i in range(3)]
    drain = asyncio.ensure_future(rt.drain(WAIT_S))
    await asyncio.sleep(0)
    refused = error_of(await h.call("cf", "ping"))
    assert refused["error_code"] == "PF503"
    assert refused["error_details"]["reason"] == "draining"
    assert await drain is True
    assert [(await h.peer.reply_to(m))["payload"]["data"]["n"] for m in ids] == [0, 1, 2]


@pytest.mark.parametrize("kind", ["async", "sync", "stubborn"])
async def test_drain_past_grace_answers_pf503_cancelled(h: Harness, kind: str) -> None:
    h.config.max_concurrent_packets = 1
    release = threading.Event()

    async def slow_async(data: dict[str, Any], ctx: Context) -> dict[str, Any]:
        await asyncio.sleep(30)
        return {}

    def slow_sync(data: dict[str, Any], ctx: Context) -> dict[str, Any]:
        release.wait(30)
        return {}

    async def stubborn(data: dict[str, Any], ctx: Context) -> dict[str, Any]:
        while not release.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(0.01)
        return {}

    handler = {"async": slow_async, "sync": slow_sync, "stubborn": stubborn}[kind]
    h.element("df", "slow")(handler)
    rt = h.start()
    running = h.send("df", "slow")
    queued = h.send("df", "slow")
    try:
        t0 = time.monotonic()
        assert await rt.drain(0.2) is False
        assert time.monotonic() - t0 < 0.2 + 2.0
        # Both are answered before drain returns: the server flushes right after.
        ran, waited = h.peer.frames
        assert {ran["correlation_id"], waited["correlation_id"]} == {running, queued}
        for reply in (ran, waited):
            assert error_of(reply)["error_code"] == "PF503"
        cancelled = next(f for f in h.peer.frames if f["correlation_id"] == running)
        assert cancelled["payload"]["error_details"]["reason"] == "cancelled"
        assert rt.in_flight == 0 and len(rt.queue) == 0
    finally:
        release.set()


# ---------------------------------------------------------------- reports


async def test_heartbeat_payload_carries_4_2_4_and_8_3_load_metrics(h: Harness) -> None:
    h.config.max_concurrent_packets = 1
    gate = h.gated_hold()

    @h.element("df", "flaky")
    async def flaky(data: dict[str, Any], ctx: Context) -> dict[str, Any]:
        raise ProcessingFailed("transient", retryable=True)

    @h.element("df", "picky")
    async def picky(data: dict[str, Any], ctx: Context) -> dict[str, Any]:
        raise invalid_field("payload.packet.data.x", "integer", "string", "type")

    rt = h.start()
    # The first beat has no CPU figure: it is measured between two beats.
    first = rt.heartbeat_payload().load_metrics
    assert first is not None and first.resource_utilization is not None
    assert first.resource_utilization.cpu_percent is None
    await h.ping()
    await h.call("df", "flaky")
    await h.call("df", "picky")
    held = h.send("df", "hold")
    waiting = [h.send("cf", "ping"), h.send("df", "hold")]
    beat = rt.heartbeat_payload()
    gate.set()
    for mid in [held, *waiting]:
        await h.peer.reply_to(mid)

    # The struct the gateway decodes and reads, with the spec's wire names.
    wire = msgspec.json.encode(beat)
    assert msgspec.json.decode(wire, type=HeartbeatPayload) == beat
    hb = json.loads(wire)
    assert hb["reactor_id"] == "reactor-test"
    status = hb["health_status"]
    assert status["status"] == "healthy"
    assert status["queue_depth"] == 2 and status["in_flight"] == 1
    assert status["load_factor"] == 1.0
    assert status["memory_usage_mb"] > 0
    assert status["uptime_seconds"] >= 0
    perf = hb["performance_metrics"]
    assert perf["packets_processed"] == 3
    assert perf["errors_by_code"] == {"PF005": 1, "PF002": 1}
    # Only the reactor's own failure counts; the client's PF002 does not (issue 5).
    assert perf["error_rate"] == pytest.approx(1 / 3, abs=1e-4)
    load = hb["load_metrics"]
    assert load["queue_depths"] == {"cf": 1, "df": 1, "ed": 0, "co": 0, "mc": 0, "rm": 0}
    assert set(load["processing_rates_pps"]) == {"cf", "df", "ed", "co", "mc", "rm"}
    assert load["processing_rates_pps"]["cf"] > 0
    assert load["processing_rates_pps"]["rm"] == 0
    assert set(load["resource_utilization"]) >= {"cpu_percent", "memory_percent"}
    assert "cf:ping" in hb["capabilities"] and "df:hold" in hb["capabilities"]


async def test_client_errors_stay_out_of_the_reported_error_rate(h: Harness) -> None:
    """Hardening issue 5: a client's bad input (PF002, a handler's non-retryable PF005 such
    as df:load of a missing file) never raises the error rate a HEARTBEAT reports."""
    rt = h.start()
    for _ in range(12):
        assert (
            error_of(await h.call("df", "transform", {"input": 1, "operation": "nope"}))[
                "error_code"
            ]
            == "PF002"
        )
        err = error_of(await h.call("df", "load", {"source": "file://missing.csv"}))
        assert err["error_code"] == "PF005" and err["retry_possible"] is False
    beat = rt.heartbeat_payload()
    assert beat.performance_metrics is not None
    assert beat.performance_metrics.packets_processed == 24
    assert beat.performance_metrics.error_rate == 0.0
    assert reported_in_heartbeat(0.0, beat).error_rate == 0.0


async def test_memory_exhaustion_is_read_from_a_real_heartbeat_pfap_9_4_1() -> None:
    """Hardening issue 6: the figure the reactor's own builder sends is the one the
    gateway's reader judges: a reactor past its memory budget is marked failed."""
    rt = ReactorRuntime(ReactorConfig(reactor_id="r-mem", memory_limit_mb=1), Registry())
    beat = rt.heartbeat_payload()
    wire = msgspec.json.decode(msgspec.json.encode(beat), type=HeartbeatPayload)
    reported = reported_in_heartbeat(1.0, wire)
    assert reported.memory is not None and reported.memory >= 0.95  # a test process > 1 MiB
    tracker = HealthTracker("r-mem", 0.0)
    assert tracker.observe(ProbeSucceeded(0.5, 1.0)) is not None  # unknown -> healthy
    moved = tracker.observe(reported)
    assert moved is not None and moved.new is HealthState.FAILED
    assert "resource exhaustion" in moved.reason
    # A reactor within its budget reports a figure below the threshold.
    roomy = ReactorRuntime(ReactorConfig(reactor_id="r-ok"), Registry()).heartbeat_payload()
    assert (reported_in_heartbeat(1.0, roomy).memory or 0.0) < 0.95


async def test_prometheus_metrics_count_packets_errors_latency_and_load(h: Harness) -> None:
    @h.element("df", "boom")
    async def boom(data: dict[str, Any], ctx: Context) -> dict[str, Any]:
        raise RuntimeError("x")

    rt = h.start()
    before = generate_latest(rt.stats.registry).decode()
    assert sample(before, "packetflow_in_flight") == 0
    assert sample(before, "packetflow_queue_depth") == 0
    for _ in range(3):
        await h.ping()
    await h.call("df", "boom")
    await h.call("df", "unknown")
    text = generate_latest(rt.stats.registry).decode()
    processed = "packetflow_packets_processed_total"
    assert sample(text, processed, group="cf", element="ping", status="success") == 3
    assert sample(text, processed, group="df", element="boom", status="error") == 1
    assert sample(text, "packetflow_errors_total", code="PF005") == 1
    assert sample(text, "packetflow_errors_total", code="PF003") == 1
    latency = "packetflow_packet_latency_seconds"
    assert sample(text, f"{latency}_count", element="cf:ping") == 3
    assert sample(text, f"{latency}_bucket", element="cf:ping", le="+Inf") == 3
    assert sample(text, f"{latency}_sum", element="cf:ping") is not None
    assert "# TYPE packetflow_packet_latency_seconds histogram" in text
    assert sample(text, "packetflow_in_flight") == 0
