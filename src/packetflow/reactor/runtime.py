"""The reactor's scheduler: admits packets, runs their handlers under a deadline and a
concurrency limit, and answers each with exactly one RESULT or ERROR.

Admission rules (DESIGN §4, §10): a packet id seen again joins or replays (idempotency
window); a draining reactor answers PF503; an element it does not serve answers PF003;
above ``max_concurrent_packets`` packets wait in a queue ordered by priority then age,
and a full queue answers PF004 with ``retry_delay_ms``.

How a packet runs: ``submit`` admits it and starts or queues it; ``_run`` is one task per
packet that calls the handler (async ones on the loop, sync ones on a thread, ``cpu_bound``
ones in a process) and ``_finish`` answers it exactly once, then starts the next queued
packet. Deadlines of running packets are kept by a single timer armed at the earliest
deadline (``_sweep``) instead of one timer per packet: starting a packet costs a
comparison, and a handler that ignores its cancellation is still answered on time.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import math
import multiprocessing
import os
import queue
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import msgspec
from msgspec import Raw

try:
    import resource
except ImportError:  # not on Windows: CPU falls back to thread_time, no peak memory
    resource = None  # type: ignore[assignment]

from ..protocol.capacity import reactor_adjustments
from ..protocol.chemistry import GROUPS
from ..protocol.errors import (
    NoReactorAvailable,
    OutOfMemory,
    Overloaded,
    PacketFlowError,
    ProcessingFailed,
    PropertyCalculationError,
    ServiceUnavailable,
    result_too_large,
)
from ..protocol.idempotency import IdempotencyWindow
from ..protocol.messages import (
    MAX_FRAME_BYTES,
    PROTOCOL_VERSION,
    ChemicalMetrics,
    ChemicalPropertiesWire,
    ErrorPayload,
    HealthStatus,
    HeartbeatPayload,
    LoadMetrics,
    Message,
    PerformanceMetrics,
    ResourceUtilization,
    ResultPayload,
    Submit,
    decode_data,
    encode,
    encode_json,
    error_envelope,
)
from ..protocol.messages import Error as ErrorMsg
from ..protocol.messages import Result as ResultMsg
from ..protocol.queueing import PriorityQueue, QueueEntry
from ..protocol.reaction import (
    OPTIMIZATIONS_KEY,
    PROPERTY_TOLERANCE,
    applied_optimizations,
    chemical_analysis,
    packet_affinity,
    processing_stats,
    property_mismatches,
)
from ..protocol.relay import admission, wire_properties
from ..transport import Peer, new_message_id, new_packet_id, now_ms
from .context import Context
from .registry import ElementSpec, Registry
from .stats import ReactorStats

if TYPE_CHECKING:
    from ..security.crypto import PayloadCipher

# Groups admitted even when memory is exhausted: health probes and the elements that
# free resources or shut the reactor down must still work.
_ALWAYS_ADMITTED = frozenset({"cf", "rm"})
# How a sealed payload (security/crypto.py's envelope) shows in the raw data bytes.
_SEALED = b'"AES-256-GCM"'

if TYPE_CHECKING:
    from ..client import AsyncClient

log = logging.getLogger("packetflow.reactor")

# §4.2.5 example and §12.4.1: what one reactor takes at once before packets queue.
DEFAULT_MAX_CONCURRENT = 128
# Packets waiting for a slot; past this the reactor answers PF004.
DEFAULT_MAX_QUEUE = 4096
# What a PF004 tells the sender to wait (§10.3.1 initial_delay_ms).
OVERLOAD_RETRY_DELAY_MS = 1000
# A result larger than this is answered PF005 "result_too_large" instead of being sent:
# the RESULT must reach its client in one frame of DESIGN §3's limit, which clients
# apply; the rest of the limit is room for the envelope and the gateway's metadata.
MAX_RESULT_BYTES = MAX_FRAME_BYTES - 16 * 1024
# uvloop's timers tick in milliseconds: a deadline this close counts as reached, so the
# deadline timer never re-arms itself for a fraction of a millisecond.
TIMER_SLACK_S = 0.002
# Past the grace period, how long cancelled handlers get to unwind before their packets
# are answered PF503 regardless (a handler may swallow its cancellation).
CANCEL_WAIT_S = 1.0

P = ParamSpec("P")
T = TypeVar("T")


@dataclass(slots=True)
class ReactorConfig:
    reactor_id: str = field(default_factory=lambda: f"reactor-py-{uuid.uuid4().hex[:8]}")
    specializations: tuple[str, ...] = ("general_purpose",)
    implementation: str = "python"
    host: str = "127.0.0.1"
    port: int = 0
    gateway_url: str | None = None
    max_concurrent_packets: int = DEFAULT_MAX_CONCURRENT
    max_queue: int = DEFAULT_MAX_QUEUE
    heartbeat_interval_s: float = 5.0
    # §8.2: the capability advertisement (with measured avg_processing_time_ms) is sent
    # again this often over the control connection; 0 announces only on (re)connect.
    announce_interval_s: float = 60.0
    data_dir: Path = field(default_factory=lambda: Path("data"))
    locality: str | None = None
    grace_s: float = 10.0
    thread_workers: int = 16
    process_workers: int = 2
    debug: bool = False
    # The memory this reactor may use, for §9.4.1 exhaustion (None: the machine's, or its
    # container's).
    memory_limit_mb: float | None = None
    # §11.3 end-to-end payload encryption: the shared secret's file (security/crypto.py).
    payload_key_file: Path | None = None
    # PF104 for a packet whose stated chemical_properties disagree with DESIGN §4's
    # calculator (protocol/reaction.py); off for a cluster whose gateway computes them
    # another way on purpose.
    verify_properties: bool = True


@dataclass(slots=True, eq=False)
class Job:
    msg: Submit
    peer: Peer
    spec: ElementSpec
    packet_id: str
    priority: int
    received: float  # time.monotonic()
    deadline: float
    entry: QueueEntry[Job] | None = None
    expiry: asyncio.TimerHandle | None = None  # while queued
    task: asyncio.Task[None] | None = None
    done: bool = False  # answered: any later outcome is dropped (exactly one reply)
    # §11.3 payload encryption: the (salt, iterations) its data came sealed with; the
    # result is sealed back with the same key.
    sealed: tuple[bytes, int] | None = None


# An outcome kept in the idempotency window: the payload to answer again.
Outcome = ResultPayload | ErrorPayload
Waiter = tuple[Submit, Peer]


class _DaemonThreads(Executor):
    """Runs sync handlers on up to ``workers`` daemon threads.

    ``ThreadPoolExecutor`` joins its threads at interpreter exit, and a thread cannot be
    cancelled: one handler stuck past its timeout would keep a reactor that was told to
    stop alive for ever. Daemon threads end with the process instead.
    """

    def __init__(self, workers: int, prefix: str) -> None:
        self._workers = workers
        self._prefix = prefix
        self._items: queue.SimpleQueue[tuple[Future[Any], Callable[[], Any]] | None] = (
            queue.SimpleQueue()
        )
        self._threads: list[threading.Thread] = []
        self._idle = threading.Semaphore(0)
        self._shutdown = False

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        if self._shutdown:
            raise RuntimeError("cannot schedule new work after shutdown")
        future: Future[T] = Future()
        self._items.put((future, lambda: fn(*args, **kwargs)))
        # A new thread only when none is idle, as ThreadPoolExecutor does.
        if not self._idle.acquire(blocking=False) and len(self._threads) < self._workers:
            thread = threading.Thread(target=self._work, daemon=True,
                                      name=f"{self._prefix}_{len(self._threads)}")  # fmt: skip
            thread.start()
            self._threads.append(thread)
        return future

    def _work(self) -> None:
        while (item := self._items.get()) is not None:
            future, call = item
            if future.set_running_or_notify_cancel():
                try:
                    result = call()
                except BaseException as exc:  # the awaiting task turns it into PF005
                    future.set_exception(exc)
                else:
                    future.set_result(result)
            del item, future, call  # keep no reference to finished work while idle
            self._idle.release()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._shutdown = True
        if cancel_futures:
            while True:
                try:
                    item = self._items.get_nowait()
                except queue.Empty:
                    break
                if item is not None:
                    item[0].cancel()
        for _ in self._threads:
            self._items.put(None)
        if wait:
            for thread in self._threads:
                thread.join()


def _process_context() -> Any:
    # fork copies a process that runs element threads, aiohttp's resolver and zeroconf;
    # a lock held by one of them at that moment stays held in the child for ever. The
    # forkserver forks from a clean single-threaded process instead.
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else None)


class ReactorRuntime:
    def __init__(self, config: ReactorConfig, registry: Registry) -> None:
        self.config = config
        self.registry = registry
        self.stats = ReactorStats(config.memory_limit_mb)
        self.queue: PriorityQueue[Job] = PriorityQueue(config.max_queue)
        self.running: set[Job] = set()
        self.window: IdempotencyWindow[Outcome, Waiter] = IdempotencyWindow()
        self.draining = False
        # §8.3: when draining began (epoch ms), reported as scheduled_maintenance.
        self.draining_since_ms: int | None = None
        # The concurrency last announced (§8.2); a change since is reported as
        # temporary_capacity_boost (protocol/capacity.py).
        self.announced_concurrency = config.max_concurrent_packets
        self.gateway: AsyncClient | None = None
        self.on_shutdown: Callable[[float], None] | None = None
        self.on_restart: Callable[[], None] | None = None
        self._threads = _DaemonThreads(config.thread_workers, "pf-elem")
        self._processes: ProcessPoolExecutor | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self.cipher: PayloadCipher | None = None
        if config.payload_key_file is not None:
            # Imported here: reactors without payload encryption never load cryptography.
            from ..security.crypto import PayloadCipher, read_secret

            self.cipher = PayloadCipher(read_secret(config.payload_key_file))
        self._loop: asyncio.AbstractEventLoop | None = None
        # The deadline timer: armed at the earliest deadline of a running packet.
        self._sweep_at = math.inf
        self._starting = False  # inside _start_next
        self._sweep_timer: asyncio.TimerHandle | None = None
        # Per served group:element (so bounded by the registry): the handler's logger, made
        # once rather than per packet.
        self._loggers: dict[tuple[str, str], logging.Logger] = {}
        self.reactor_info_brief = {
            "reactor_id": config.reactor_id,
            "implementation": config.implementation,
        }
        self._reactor_info = {**self.reactor_info_brief,
                              "specialization": list(config.specializations)}  # fmt: skip
        self.stats.bind(queue_depth=lambda: len(self.queue), in_flight=lambda: len(self.running))

    # ------------------------------------------------------------------ admission

    @property
    def in_flight(self) -> int:
        return len(self.running)

    @property
    def load_factor(self) -> float:
        return min(1.0, len(self.running) / max(1, self.config.max_concurrent_packets))

    def submit(self, msg: Submit, peer: Peer) -> None:
        """Admit one SUBMIT from ``peer``; every path ends in exactly one reply."""
        packet = msg.payload.packet
        packet_id = packet.id or new_packet_id()
        now = time.monotonic()
        seen = self.window.lookup(packet_id, now)
        if seen is not None:
            if seen.outcome is None:  # running: join it, answered when it finishes
                seen.join((msg, peer))
            else:
                self._reply(msg, peer, seen.outcome)
            return
        try:
            job = self._admit(msg, peer, packet_id, now)
        except PacketFlowError as err:
            self.stats.record_error(err.code)
            self._reply(msg, peer, self._error_payload(err, packet_id))
            return
        self.window.begin(packet_id, now)
        if len(self.running) < self.config.max_concurrent_packets:
            self._start(job)
        else:
            job.entry = self.queue.push(job, job.priority)
            loop = self._bind_loop()
            job.expiry = loop.call_at(_loop_time(loop, job.deadline), self._expire_queued, job)

    def _admit(self, msg: Submit, peer: Peer, packet_id: str, now: float) -> Job:
        packet = msg.payload.packet
        if self.draining:
            raise ServiceUnavailable(
                f"Reactor {self.config.reactor_id} is shutting down",
                retry_delay_ms=OVERLOAD_RETRY_DELAY_MS, details={"reason": "draining"},
            )  # fmt: skip
        group, element = packet.group, packet.element
        spec = self.registry.get(group, element)
        if spec is None:
            raise NoReactorAvailable(
                f"Reactor {self.config.reactor_id} does not serve {group}:{element}",
                field="payload.packet.element",
                context={"requested_group": group, "requested_element": element},
            )  # fmt: skip
        if group not in _ALWAYS_ADMITTED and (used := self.stats.memory_exhausted(now)):
            raise OutOfMemory(
                f"Reactor {self.config.reactor_id} is out of memory: {used:g}% of its "
                f"{self.stats.memory_budget / 2**20:.0f} MB budget in use",
                details={"reason": "memory_exhausted", "memory_usage_percent": used,
                         "memory_budget_mb": round(self.stats.memory_budget / 2**20, 1)},
            )  # fmt: skip
        if (
            len(self.running) >= self.config.max_concurrent_packets
            and len(self.queue) >= self.queue.capacity
        ):
            raise Overloaded(
                f"Reactor {self.config.reactor_id} is at capacity "
                f"({self.in_flight} running, {len(self.queue)} queued)",
                retry_delay_ms=OVERLOAD_RETRY_DELAY_MS,
                context={"in_flight": self.in_flight, "queue_depth": len(self.queue)},
            )  # fmt: skip
        priority, timeout_ms = admission(msg)
        stated = packet.chemical_properties
        if stated is not None and self.config.verify_properties:
            _check_properties(group, priority, len(packet.dependencies), stated)
        return Job(msg, peer, spec, packet_id, priority, now, now + timeout_ms / 1000.0)

    def _bind_loop(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        return loop

    def _expire_queued(self, job: Job) -> None:
        if job.entry is not None and self.queue.remove(job.entry):
            err = ProcessingFailed(
                f"Packet {job.packet_id} timed out after waiting in the queue",
                details={"reason": "timeout", "stage": "queued"}, retryable=True,
            )  # fmt: skip
            self.stats.record_error(err.code)
            self._finish(job, self._error_payload(err, job.packet_id), err.code, err.retryable)

    def _start(self, job: Job) -> None:
        if job.expiry is not None:
            job.expiry.cancel()
            job.expiry = None
        self.running.add(job)
        self._idle.clear()
        limit = job.spec.inline_max_bytes
        data = job.msg.payload.packet.data
        # A sealed payload may need a key derivation (~0.3 s): never on the loop.
        if limit and len(data) <= limit and (self.cipher is None or _SEALED not in bytes(data)):
            self._run_inline(job)
            return
        job.task = self._bind_loop().create_task(self._run(job))
        if job.deadline < self._sweep_at:
            self._arm(job.deadline)

    def _start_next(self) -> None:
        # Not re-entered: an inline job finishing inside _start would otherwise start the
        # next one a stack frame deeper, once per queued packet.
        if self._starting:
            return
        self._starting = True
        try:
            while len(self.running) < self.config.max_concurrent_packets:
                job = self.queue.pop()
                if job is None:
                    break
                self._start(job)
        finally:
            self._starting = False

    # ------------------------------------------------------------------ deadlines

    def _arm(self, deadline: float) -> None:
        if self._sweep_timer is not None:
            self._sweep_timer.cancel()
        loop = self._bind_loop()
        self._sweep_at = deadline
        self._sweep_timer = loop.call_at(_loop_time(loop, deadline), self._sweep)

    def _sweep(self) -> None:
        """Answer every running packet past its deadline PF005 "timeout" and cancel its
        handler (DESIGN §10), then re-arm for the next deadline."""
        self._sweep_timer = None
        self._sweep_at = -math.inf  # packets started below must not re-arm mid-sweep
        limit = time.monotonic() + TIMER_SLACK_S
        for job in [j for j in self.running if j.deadline <= limit]:
            self._time_out(job)
        self._sweep_at = math.inf
        if self.running:
            self._arm(min(j.deadline for j in self.running))

    def _time_out(self, job: Job) -> None:
        spec = job.spec
        err = ProcessingFailed(
            f"{spec.key} did not finish within its timeout",
            details={"reason": "timeout",
                     "timeout_ms": round((job.deadline - job.received) * 1000)},
            retryable=True,
        )  # fmt: skip
        self._fail(job, err, (time.monotonic() - job.received) * 1000.0)
        if job.task is not None:
            job.task.cancel()

    # ------------------------------------------------------------------ running

    def _run_inline(self, job: Job) -> None:
        """A quick sync handler on small data, on the loop: no task, no thread."""
        started = time.perf_counter()
        cpu = time.thread_time()
        try:
            result = job.spec.handler(decode_data(job.msg.payload.packet.data),
                                      self._context(job))  # fmt: skip
        except PacketFlowError as err:
            self._fail(job, err, (time.perf_counter() - started) * 1000.0)
        except BaseException as exc:  # a handler bug (even sys.exit) never takes us down
            self._crashed(job, exc, started)
        else:
            # On the loop thread and synchronous: its CPU is this thread's (no getrusage
            # for the peak: these handlers are quick on small data, and it costs 2 µs).
            self._succeed(job, result, started, time.thread_time() - cpu)

    async def _run(self, job: Job) -> None:
        spec = job.spec
        started = time.perf_counter()
        usage: _Usage | float | None = None
        try:
            data = decode_data(job.msg.payload.packet.data)
            if self.cipher is not None and isinstance(data, dict) and "encrypted" in data:
                data = await self._unseal(job, data)
            ctx = self._context(job)
            if spec.is_async:
                # The loop thread's CPU while it was pending: thread_time, not getrusage,
                # which costs a few µs more on the loop for every packet.
                cpu = time.thread_time()
                result = await spec.handler(data, ctx)
                usage = time.thread_time() - cpu
            else:
                result, usage = await self._call_sync(spec, data, ctx)
        except asyncio.CancelledError:
            if job.done:  # timed out: _time_out answered it and cancelled the handler
                return
            cancelled = ServiceUnavailable(
                f"Packet {job.packet_id} was cancelled: reactor shutting down",
                details={"reason": "cancelled"},
            )
            self._fail(job, cancelled, (time.perf_counter() - started) * 1000.0)
            raise
        except PacketFlowError as err:
            self._fail(job, err, (time.perf_counter() - started) * 1000.0)
            return
        except BaseException as exc:  # a handler bug (even sys.exit) never takes us down
            self._crashed(job, exc, started)
            return
        if job.done:  # its deadline passed while a handler that ignored cancellation ran on
            return
        self._succeed(job, result, started, usage)

    async def _unseal(self, job: Job, envelope: dict[str, Any]) -> Any:
        """The packet's data, decrypted (a first key derivation runs off the loop).
        Raises PF002 (DecryptionFailed) for an envelope this reactor cannot open."""
        cipher = self.cipher
        assert cipher is not None
        packet = job.msg.payload.packet
        if cipher.has_key_for(envelope):
            value, salt, iterations = cipher.open(envelope, packet.group, packet.element)
        else:
            value, salt, iterations = await self._bind_loop().run_in_executor(
                None, functools.partial(cipher.open, envelope, packet.group, packet.element)
            )
        job.sealed = (salt, iterations)
        return value

    def _crashed(self, job: Job, exc: BaseException, started: float) -> None:
        spec = job.spec
        log.warning("handler %s raised for packet %s: %r", spec.key, job.packet_id, exc,
                    exc_info=self.config.debug)  # fmt: skip
        # Not retryable: the same data on another reactor would most likely raise again.
        # A handler with a transient failure raises ProcessingFailed(..., retryable=True)
        # itself, and the gateway retries that.
        if isinstance(exc, MemoryError):  # §10.1.3: not a bug in the data, a lack of memory
            self._fail(job, OutOfMemory(
                f"{spec.key} ran out of memory on reactor {self.config.reactor_id}",
                details={"reason": "memory_error", "exception_type": type(exc).__name__},
            ), (time.perf_counter() - started) * 1000.0)  # fmt: skip
            return
        failure = ProcessingFailed(
            f"{spec.key} failed: {type(exc).__name__}: {exc}",
            details={"reason": "handler_exception", "exception_type": type(exc).__name__,
                     "exception_message": str(exc)},
            retryable=False,
        )  # fmt: skip
        self._fail(job, failure, (time.perf_counter() - started) * 1000.0)

    def _succeed(self, job: Job, result: Any, started: float, usage: _Usage | float | None) -> None:
        """Answer the RESULT; ``usage``: what the handler used (a float: CPU seconds on the
        loop thread; a _Usage from a worker thread or process; None: not measured)."""
        spec = job.spec
        wall_s = time.perf_counter() - started
        duration_ms = wall_s * 1000.0
        if not isinstance(result, dict):
            result = {"result": result}
        elif "processing_stats" in result:  # ours replaces a handler's own
            result = {k: v for k, v in result.items() if k != "processing_stats"}
        if job.sealed is not None and self.cipher is not None:
            # The answer travels sealed too; processing_stats stay clear for the gateway.
            packet = job.msg.payload.packet
            salt, iterations = job.sealed
            try:
                result = self.cipher.seal(result, packet.group, packet.element, result=True,
                                          salt=salt, iterations=iterations)  # fmt: skip
            except (TypeError, ValueError) as exc:
                self._fail(job, ProcessingFailed(
                    f"{spec.key} returned a value that is not JSON-serializable: {exc}",
                    details={"reason": "result_not_serializable"}, retryable=False,
                ), duration_ms)  # fmt: skip
                return
        try:
            # processing_stats go last: the gateway's relay cuts them off the end of the
            # bytes. Spliced in rather than added to a copy of the dict, so the result's
            # own size is known for memory_used_mb and the handler's value is untouched.
            encoded = encode_json(result)
            packet = job.msg.payload.packet
            if usage is None or type(usage) is float:
                stats = processing_stats(wall_s, usage, len(packet.data), len(encoded))
            else:
                assert isinstance(usage, _Usage)
                stats = processing_stats(wall_s, usage.cpu_s, len(packet.data), len(encoded),
                                         usage.peak_growth, usage.single_thread)  # fmt: skip
            sep = b'"processing_stats":' if encoded == b"{}" else b',"processing_stats":'
            body = b"".join((encoded[:-1], sep, stats, b"}"))
        except (TypeError, ValueError, OverflowError, RecursionError, msgspec.EncodeError) as exc:
            self._fail(job, ProcessingFailed(
                f"{spec.key} returned a value that is not JSON-serializable: {exc}",
                details={"reason": "result_not_serializable",
                         "exception_type": type(exc).__name__},
                retryable=False,
            ), duration_ms)  # fmt: skip
            return
        if len(body) > MAX_RESULT_BYTES:
            self._fail(job, result_too_large(spec.key, len(body), MAX_RESULT_BYTES), duration_ms)
            return
        baseline = self.stats.elements.get(spec.key)
        analysis = self._analysis(job, duration_ms, baseline.avg_ms if baseline else None)
        self.stats.record(spec.key, spec.group, duration_ms, None)
        self._finish(job, self._result_payload(job, Raw(body), analysis), None, False)

    def _analysis(self, job: Job, duration_ms: float, baseline_ms: float | None) -> dict[str, Any]:
        """§4.2.2 chemical_analysis of a packet that succeeded (protocol/reaction.py)."""
        packet = job.msg.payload.packet
        hints = job.msg.routing_hints
        affinity = hints.get("affinity_score") if hints else None
        if type(affinity) is not float:  # the gateway always sends a float
            affinity = packet_affinity(affinity, packet.group, self.config.specializations)
        meta = packet.metadata
        optimizations: list[str] = []
        if meta and OPTIMIZATIONS_KEY in meta:
            optimizations = applied_optimizations(meta)
            if optimizations:
                self.stats.optimized_packets += 1
        span = job.deadline - job.received
        left = (job.deadline - time.monotonic()) / span if span > 0 else 0.0
        return chemical_analysis(affinity, left, duration_ms, baseline_ms, optimizations)

    async def _call_sync(
        self, spec: ElementSpec, data: Any, ctx: Context
    ) -> tuple[Any, _Usage | float | None]:
        """Run a sync handler off the loop; its result and what it used, measured where
        it ran (its worker thread, or its worker process for ``cpu_bound``)."""
        loop = self._bind_loop()
        if spec.cpu_bound:
            ctx.gateway = ctx.runtime = None  # what crosses into a process must pickle
            return await loop.run_in_executor(self._process_pool(), _measured_in_process,
                                              spec.handler, data, ctx)  # fmt: skip
        result, usage = await loop.run_in_executor(self._threads, _measured_on_thread,
                                                   spec.handler, data, ctx)  # fmt: skip
        if inspect.isawaitable(result):  # a plain callable that returned a coroutine
            cpu = time.thread_time()
            result = await result
            return result, time.thread_time() - cpu
        return result, usage

    def _process_pool(self) -> ProcessPoolExecutor:
        if self._processes is None:
            self._processes = ProcessPoolExecutor(self.config.process_workers,
                                                  mp_context=_process_context())  # fmt: skip
        return self._processes

    def _context(self, job: Job) -> Context:
        packet = job.msg.payload.packet
        key = (packet.group, packet.element)
        logger = self._loggers.get(key)
        if logger is None:
            logger = self._loggers[key] = log.getChild(f"{packet.group}.{packet.element}")
        meta = packet.metadata
        inputs = meta.get("inputs") if meta else None
        # Positional: a dataclass __init__ parses keywords slower, once per packet.
        return Context(
            job.packet_id,
            packet.group,
            packet.element,
            job.priority,
            job.deadline,
            logger,
            self.config.data_dir,
            inputs if isinstance(inputs, dict) else {},
            meta if meta is not None else {},
            self.gateway,
            self,
            job.received,
        )

    def _fail(self, job: Job, err: PacketFlowError, duration_ms: float) -> None:
        if job.done:
            return
        spec = job.spec
        self.stats.record(spec.key, spec.group, duration_ms, err.code, err.retryable)
        self._finish(job, self._error_payload(err, job.packet_id), err.code, err.retryable)

    def _finish(self, job: Job, outcome: Outcome, code: str | None, retryable: bool) -> None:
        if job.done:
            return
        job.done = True
        self.running.discard(job)
        meta = job.msg.payload.packet.metadata
        if meta:
            molecule_id = meta.get("molecule_id")
            if isinstance(molecule_id, str):
                self.stats.record_molecule_packet(
                    molecule_id, len(job.msg.payload.packet.dependencies), code is None
                )
        # Success and non-retryable failures are answered again on a repeat; a retryable
        # failure is forgotten so the packet may run anew (DESIGN §4).
        replayable = code is None or not retryable
        waiters = self.window.finish(job.packet_id, outcome, replayable=replayable,
                                     now=time.monotonic())  # fmt: skip
        self._reply(job.msg, job.peer, outcome)
        for msg, peer in waiters:
            self._reply(msg, peer, outcome)
        if len(self.queue):
            self._start_next()
        if not self.running and not len(self.queue):
            self._idle.set()

    # ------------------------------------------------------------------ replies

    def _result_payload(self, job: Job, body: Raw, analysis: dict[str, Any]) -> ResultPayload:
        return ResultPayload(
            packet_id=job.packet_id,
            status="success",
            data=body,
            reactor_info={
                **self._reactor_info,
                "load_factor": round(self.load_factor, 4),
                "queue_depth": len(self.queue),
            },
            chemical_analysis=analysis,
            processed_at=now_ms(),
        )

    def _error_payload(self, err: PacketFlowError, packet_id: str | None) -> ErrorPayload:
        return msgspec.convert(err.to_payload(packet_id, self.reactor_info_brief), ErrorPayload)

    def _reply(self, msg: Submit, peer: Peer, outcome: Outcome) -> None:
        reply: Message
        if isinstance(outcome, ResultPayload):
            reply = ResultMsg(
                protocol_version=PROTOCOL_VERSION, message_id=new_message_id(),
                timestamp=now_ms(), source_id=self.config.reactor_id,
                destination_id=msg.source_id, sequence_id=peer.next_seq(),
                correlation_id=msg.message_id, payload=outcome,
            )  # fmt: skip
        else:
            reply = ErrorMsg(
                protocol_version=PROTOCOL_VERSION, message_id=new_message_id(),
                timestamp=now_ms(), source_id=self.config.reactor_id,
                destination_id=msg.source_id, sequence_id=peer.next_seq(),
                correlation_id=msg.message_id, payload=outcome,
            )  # fmt: skip
        peer.send(encode(reply))

    def error_to(self, peer: Peer, err: PacketFlowError, correlation_id: str | None,
                 packet_id: str | None = None) -> None:  # fmt: skip
        """Answer a frame that never became a job (bad input) with one ERROR."""
        self.stats.record_error(err.code)
        peer.send(encode(error_envelope(
            err, message_id=new_message_id(), now_ms=now_ms(),
            source_id=self.config.reactor_id, correlation_id=correlation_id,
            packet_id=packet_id, reactor_info=self.reactor_info_brief,
            sequence_id=peer.next_seq(),
        )))  # fmt: skip

    # ------------------------------------------------------------------ lifecycle

    def begin_drain(self) -> None:
        if not self.draining:
            self.draining_since_ms = now_ms()
        self.draining = True

    async def drain(self, grace_s: float) -> bool:
        """Stop admitting (PF503), let running and queued work finish within ``grace_s``.

        Returns True when everything finished. Otherwise what is still queued is answered
        PF503 and what runs is cancelled and answered PF503 "cancelled": every accepted
        packet still gets exactly one reply before this returns.
        """
        self.begin_drain()
        try:
            await asyncio.wait_for(self._idle.wait(), grace_s)
            return True
        except TimeoutError:
            pass
        # The queue first: finishing a cancelled packet would otherwise start a queued one.
        while (queued := self.queue.pop()) is not None:
            if queued.expiry is not None:
                queued.expiry.cancel()
            err = ServiceUnavailable("Reactor shut down before the packet ran",
                                     details={"reason": "shutdown"})  # fmt: skip
            self.stats.record_error(err.code)
            self._finish(queued, self._error_payload(err, queued.packet_id), err.code, True)
        tasks = [job.task for job in self.running if job.task is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=CANCEL_WAIT_S)
        for job in list(self.running):  # handlers that swallowed their cancellation
            self._fail(job, ServiceUnavailable(
                f"Packet {job.packet_id} was cancelled: reactor shutting down",
                details={"reason": "cancelled"},
            ), (time.monotonic() - job.received) * 1000.0)  # fmt: skip
        return False

    def clear_caches(self) -> None:
        self.window = IdempotencyWindow()

    def close(self) -> None:
        if self._sweep_timer is not None:
            self._sweep_timer.cancel()
            self._sweep_timer = None
        self._threads.shutdown(wait=False, cancel_futures=True)
        pool, self._processes = self._processes, None
        if pool is not None:
            # shutdown(wait=False) still leaves interpreter exit waiting for a worker stuck
            # in a handler; end the workers outright (Python 3.14 has terminate_workers()).
            workers = list((getattr(pool, "_processes", None) or {}).values())
            pool.shutdown(wait=False, cancel_futures=True)
            for worker in workers:
                with contextlib.suppress(OSError, ValueError, AttributeError):
                    worker.terminate()

    # ------------------------------------------------------------------ reports

    def capabilities(self) -> list[str]:
        return sorted(spec.key for spec in self.registry)

    def chemical_health(self) -> dict[str, Any]:
        """§9.1.3 chemical metrics from this reactor's own history."""
        st = self.stats
        return {
            "affinity_effectiveness": round(1.0 - st.error_rate(), 4),
            # Over bonds, not packets: bonds ending at molecule packets that ran here.
            "bond_success_rate": round(st.bond_success_rate(), 4),
            "bonds_observed": st.bonds_held + st.bonds_broken,
            "molecular_participation": st.molecules,
            "optimization_count": st.optimized_packets,
            "packets_observed": st.processed,
        }

    def heartbeat_payload(self) -> HeartbeatPayload:
        """The §4.2.4 HEARTBEAT with §8.3 load_metrics, in the struct the gateway's health
        rules read (``protocol.health.reported_in_heartbeat``)."""
        st = self.stats
        res = st.resources()
        avg, p99 = st.latency_summary()
        # §8.3 reports every group, idle ones as 0, so a gateway need not guess.
        depths: dict[str, int] = dict.fromkeys(GROUPS, 0)
        for job in self.queue:
            group = job.msg.payload.packet.group
            depths[group] = depths.get(group, 0) + 1
        chem = self.chemical_health()
        disk_io, network_io = st.io_utilization()
        cpu = st.heartbeat_cpu_percent()
        util = ResourceUtilization(
            cpu_percent=cpu,
            memory_percent=res["memory_usage_percent"],
            disk_usage_percent=res["disk_usage_percent"],
            disk_io_percent=disk_io,
            network_io_percent=network_io,
        )
        return HeartbeatPayload(
            reactor_id=self.config.reactor_id,
            implementation=self.config.implementation,
            specializations=list(self.config.specializations),
            health_status=HealthStatus(
                status="degraded" if self.draining else "healthy",
                load_factor=round(self.load_factor, 4),
                queue_depth=len(self.queue),
                in_flight=self.in_flight,
                memory_usage_mb=res["memory_usage_mb"],
                cpu_usage_percent=cpu,
                network_connections=res["network_connections"],
                uptime_seconds=round(st.uptime_s(), 1),
                last_error=st.last_error,
            ),
            performance_metrics=PerformanceMetrics(
                packets_processed=st.processed,
                avg_processing_time_ms=round(avg, 3),
                p99_processing_time_ms=round(p99, 3),
                error_rate=round(st.error_rate(), 5),
                throughput_pps=round(st.throughput(), 3),
                errors_by_code=dict(st.errors_by_code),
            ),
            chemical_metrics=ChemicalMetrics(**chem),
            capabilities=self.capabilities(),
            load_metrics=LoadMetrics(
                current_load_factor=round(self.load_factor, 4),
                queue_depths=depths,
                processing_rates_pps=dict.fromkeys(GROUPS, 0.0) | st.group_rates(),
                resource_utilization=util,
            ),
            capacity_adjustments=reactor_adjustments(
                current_concurrency=self.config.max_concurrent_packets,
                announced_concurrency=self.announced_concurrency,
                util=util,
                draining_since_ms=self.draining_since_ms if self.draining else None,
            ),
        )

    def announce_payload(self, endpoints: dict[str, str]) -> dict[str, Any]:
        """DISCOVER announce (§4.2.5) with the §8.2 capability advertisement."""
        by_group: dict[str, list[ElementSpec]] = {}
        for spec in self.registry:
            by_group.setdefault(spec.group, []).append(spec)
        cfg = self.config
        self.announced_concurrency = cfg.max_concurrent_packets
        return {
            "discovery_type": "announce",
            "reactor_info": {
                "reactor_id": cfg.reactor_id,
                "implementation": cfg.implementation,
                "version": _version(),
                "specializations": list(cfg.specializations),
                "max_capacity": float(cfg.max_concurrent_packets),
                "current_load": float(self.in_flight),
                "endpoints": endpoints,
                "locality": cfg.locality,
            },
            "supported_packets": [
                {"group": s.group, "element": s.element, "priority_range": [1, 10]}
                for s in self.registry
            ],
            "capabilities": {
                "packet_support": [
                    {
                        "group": group,
                        "elements": sorted(s.element for s in specs),
                        "max_concurrency": cfg.max_concurrent_packets,
                        "avg_processing_time_ms": round(self._avg_ms(specs), 3),
                    }
                    for group, specs in sorted(by_group.items())
                ],
                "molecular_support": {
                    "max_molecule_size": 1000,
                    "supported_bond_types": ["ionic", "covalent", "metallic", "vdw"],
                    "coordination_capabilities": ["workflow", "pipeline", "fanout"],
                },
                "performance_characteristics": {
                    "memory_capacity_mb": round(_total_memory_mb()),
                    "cpu_cores": os.cpu_count() or 1,
                },
            },
            "chemical_characteristics": {
                "affinity_matrix_version": "1.0",
                "optimization_capabilities": ["bond_strength"],
                "fault_tolerance_level": "crash_recovery",
            },
            "operational_constraints": {
                "max_packet_size_mb": 1,
                "max_concurrent_packets": cfg.max_concurrent_packets,
                "supported_bond_types": ["ionic", "covalent", "metallic", "vdw"],
            },
        }

    def _avg_ms(self, specs: list[ElementSpec]) -> float:
        done = [self.stats.elements[s.key] for s in specs if s.key in self.stats.elements]
        count = sum(s.processed for s in done)
        return sum(s.total_ms for s in done) / count if count else 0.0


@dataclass(frozen=True, slots=True)
class _Usage:
    """CPU seconds a handler used and how far it raised the process's peak memory."""

    cpu_s: float
    peak_growth: int = 0  # bytes
    single_thread: bool = True

    def since(self, before: _Usage) -> _Usage:
        """The usage between ``before`` and this reading (readings hold running totals)."""
        return _Usage(self.cpu_s - before.cpu_s, max(0, self.peak_growth - before.peak_growth),
                      self.single_thread)  # fmt: skip


# ru_maxrss is in KiB on Linux (bytes on macOS, where this reads it too large: harmless).
_RSS_UNIT = 1024
_RUSAGE_THREAD: int | None = getattr(resource, "RUSAGE_THREAD", None) if resource else None


def _reading(who: int) -> _Usage:
    """Running totals for ``who`` (a RUSAGE_* constant): CPU seconds and peak RSS bytes."""
    assert resource is not None
    ru = resource.getrusage(who)
    return _Usage(ru.ru_utime + ru.ru_stime, ru.ru_maxrss * _RSS_UNIT)


def _thread_usage() -> _Usage:
    """This thread's CPU and the process's peak RSS (on a worker thread)."""
    if _RUSAGE_THREAD is None:
        return _Usage(time.thread_time())
    return _reading(_RUSAGE_THREAD)


def _measured_on_thread(handler: Callable[..., Any], data: Any, ctx: Context) -> tuple[Any, _Usage]:
    """Runs on a worker thread: the handler's result and the usage of that thread."""
    before = _thread_usage()
    result = handler(data, ctx)
    return result, _thread_usage().since(before)


def _measured_in_process(
    handler: Callable[..., Any], data: Any, ctx: Context
) -> tuple[Any, _Usage | None]:
    """Runs in a worker process (``cpu_bound``): the result and that process's usage."""
    if resource is None:
        return handler(data, ctx), None
    before = _reading(resource.RUSAGE_SELF)
    result = handler(data, ctx)
    used = _reading(resource.RUSAGE_SELF).since(before)
    return result, _Usage(used.cpu_s, used.peak_growth, single_thread=False)


def _check_properties(
    group: str, priority: int, dependencies: int, stated: ChemicalPropertiesWire
) -> None:
    """Raise PF104 when ``stated`` disagrees with DESIGN §4's calculator (a comparison of
    four floats when it agrees exactly, as a packetflow gateway's always do)."""
    if stated == wire_properties(group, priority, dependencies):
        return
    wrong = property_mismatches(group, priority, dependencies, stated)
    if wrong:
        first = next(iter(wrong))
        raise PropertyCalculationError(
            f"chemical_properties disagree with the calculator for {group} at priority "
            f"{priority} with {dependencies} dependencies: {', '.join(wrong)}",
            field=f"payload.packet.chemical_properties.{first}",
            expected_type=f"number within {PROPERTY_TOLERANCE} of {wrong[first]['expected']}",
            received_type=repr(wrong[first]["received"]), validation_rule="property_calculation",
            details={"mismatches": wrong, "tolerance": PROPERTY_TOLERANCE,
                     "formula": "DESIGN §4 (PFAP property-calculator pseudocode)"},
        )  # fmt: skip


def _loop_time(loop: asyncio.AbstractEventLoop, monotonic_deadline: float) -> float:
    """Translate a time.monotonic() deadline into the loop's clock."""
    return loop.time() + (monotonic_deadline - time.monotonic())


def _total_memory_mb() -> float:
    import psutil

    return float(psutil.virtual_memory().total) / 2**20


def _version() -> str:
    from .. import __version__

    return __version__
