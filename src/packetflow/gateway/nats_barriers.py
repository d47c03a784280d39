"""co:sync barriers counted by every gateway of a NATS cluster (issue 14): the
``SharedBarriers`` of gateway/shared.py on a JetStream KV bucket.

``pf_barriers`` holds one key per barrier, its current round (protocol/barrier_rounds.py
decides every value written). An arrival joins by compare-and-set (create when absent,
update on the revision read; a conflict reads again); the write that fills the round is
the release. Every gateway watches the bucket and answers the waiters it holds in each
full round it sees; the writer answers its own at once, without waiting for its watch.
A waiter that times out leaves by compare-and-set as well, and learns there whether its
round filled first (then it was released after all, and says so). A gateway that stops
withdraws its waiters' arrivals, best effort.

Bounds: ``HISTORY`` revisions per key (a watch that lags still reads a full round that
was quickly replaced), ``BUCKET_BYTES`` in all (past it an arrival gets PF004), values
under MAX_ROUND_BYTES; a round expires ``TTL_S`` after its last write, longer than any
co:sync may wait, so the round of a gateway that died goes away.

What it cannot do: a gateway that dies (SIGKILL) leaves its arrivals in their rounds
until they expire, so a round may fill with a party nobody answers; a cut to NATS turns
an arrival into PF503 (retryable), a timeout into a timeout whose arrival may still count.
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from ..protocol.barrier_rounds import (
    MAX_ROUND_BYTES,
    Absent,
    HeldArrivals,
    Released,
    Round,
    Token,
    barrier_key,
    decode_round,
    encode_round,
    join,
    leave,
)
from ..protocol.errors import Overloaded, ServiceUnavailable
from ..protocol.events import FULL_RETRY_DELAY_MS
from ..protocol.packets import max_timeout_ms
from .nats_cluster import bucket

if TYPE_CHECKING:
    from .nats_cluster import NatsCluster

log = logging.getLogger("packetflow.gateway.cluster")

BARRIERS_BUCKET: Final = "pf_barriers"
# Longer than the longest co:sync wait (DESIGN §4: 10 × its 45 s default), with a margin
# for a timer that fires late: a round holding a waiting arrival never expires under it.
TTL_S: Final = max_timeout_ms("co", "sync") / 1000.0 + 60.0
# Revisions kept per barrier: a full round stays readable by a lagging watch even when
# the next arrivals replace it at once (the KV maximum is 64).
HISTORY: Final = 16
# The whole bucket, every revision kept included; an arrival past it gets PF004.
BUCKET_BYTES: Final = 256 * 1024 * 1024
# Compare-and-set rounds one arrival or withdrawal tries before giving up (PF503); each
# lost race means another arrival at the same barrier got in, so this is only reached by
# hundreds of parties arriving within milliseconds.
MAX_CAS_ATTEMPTS: Final = 64
CAS_BACKOFF_S: Final = (0.001, 0.01)  # jittered, times the conflicts (at most 8 ×)
# While NATS cannot be reached, an arrival tries again this often until its deadline.
UNREACHABLE_RETRY_S: Final = 0.25
# How long a stopping gateway spends withdrawing its waiters' arrivals.
LEAVE_ON_STOP_S: Final = 1.0
# JetStream's error code for a full bucket ("maximum bytes exceeded").
_STORE_FULL: Final = 10077


@dataclass(slots=True, eq=False)
class _Arrival:
    released: asyncio.Future[None]
    round_id: str | None = None  # the round it joined, once written


class _Conflict(Exception):
    """A compare-and-set lost: read again."""


class NatsBarriers:
    """``SharedBarriers`` over JetStream KV (module doc)."""

    def __init__(self, cluster: NatsCluster) -> None:
        self.cluster = cluster
        # A fresh source per process: a restarted gateway never reuses a token.
        self.held: HeldArrivals[_Arrival] = HeldArrivals(f"{cluster.me}/{uuid.uuid4().hex[:8]}")
        self.kv: Any = None
        self._rng = random.Random()
        self._leaving: set[asyncio.Task[bool]] = set()

    async def open(self) -> None:
        self.kv = await bucket(self.cluster.js, BARRIERS_BUCKET, ttl=TTL_S, history=HISTORY,
                               max_bytes=BUCKET_BYTES, max_value_size=MAX_ROUND_BYTES,
                               replicas=self.cluster.config.cluster_replicas)  # fmt: skip
        self.cluster.watch(self.kv, ">", self._on_round)

    async def close(self) -> None:
        """The gateway stops: let the withdrawals of its drained waiters finish (briefly)."""
        await asyncio.sleep(0)  # cancelled waits run their withdrawal first
        if self._leaving:
            await asyncio.wait(self._leaving, timeout=LEAVE_ON_STOP_S)

    def describe(self) -> dict[str, int]:
        joined = sum(1 for arrival in self.held.waiters() if arrival.round_id is not None)
        return {"waiting": joined, "open": self.held.barriers()}

    async def sync(self, barrier: str, parties: int, timeout_s: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        arrival = _Arrival(loop.create_future())
        key = barrier_key(barrier)
        token = self.held.hold(barrier, arrival)  # PF004 past MAX_BARRIERS
        try:
            joined = await self._join(key, barrier, parties, token, deadline)
            arrival.round_id = joined.round_id
            if joined.full:
                self._release(joined)
            remaining = deadline - loop.time()
            if not arrival.released.done() and remaining > 0:
                await asyncio.wait({arrival.released}, timeout=remaining)
            if arrival.released.done():
                return True
            released = await self._leave(key, joined.round_id, token)
            return released or arrival.released.done()
        except asyncio.CancelledError:  # the gateway drains: its answer is sent already
            if not arrival.released.done():
                task = loop.create_task(self._leave(key, arrival.round_id, token))
                self._leaving.add(task)
                task.add_done_callback(self._leaving.discard)
            raise
        finally:
            self.held.drop(token)

    def _on_round(self, entry: Any) -> None:
        if entry is None or entry.operation in ("DEL", "PURGE"):
            return
        found = decode_round(entry.value)
        if found is not None:
            self._release(found)

    def _release(self, found: Round) -> None:
        for arrival in self.held.released_in(found):
            if not arrival.released.done():
                arrival.released.set_result(None)

    async def _read(self, key: str) -> tuple[Round | None, int]:
        """The barrier's round and the revision to compare-and-set on (0: none stored)."""
        from nats.js.errors import KeyNotFoundError

        try:
            entry = await self.kv.get(key)
        except KeyNotFoundError:
            return None, 0
        return decode_round(entry.value), entry.revision

    async def _write(self, key: str, value: Round, revision: int) -> None:
        """Compare-and-set ``value`` on ``revision`` (0: create). Raises _Conflict when
        another write got in first, PF004 when the bucket is full."""
        from nats.js.errors import APIError, KeyWrongLastSequenceError

        raw = encode_round(value)
        try:
            if revision:
                await self.kv.update(key, raw, last=revision)
            else:
                await self.kv.create(key, raw)
        except KeyWrongLastSequenceError:
            raise _Conflict from None
        except APIError as exc:
            if exc.err_code == _STORE_FULL:
                raise Overloaded(
                    "The cluster's barrier store is full", retry_delay_ms=FULL_RETRY_DELAY_MS,
                    details={"reason": "barriers_full", "limit_bytes": BUCKET_BYTES},
                ) from None  # fmt: skip
            raise

    async def _backoff(self, conflicts: int) -> None:
        """After the first lost race read again at once (the other writer is done);
        after more, spread the retries out."""
        if conflicts > 1:
            low, high = CAS_BACKOFF_S
            await asyncio.sleep(self._rng.uniform(low, high) * min(conflicts, 8))

    async def _join(self, key: str, barrier: str, parties: int, token: Token,
                    deadline: float) -> Round:  # fmt: skip
        """Write ``token`` into the barrier's round; the round written (or read, when an
        earlier write of it had landed). Raises PF002 (parties), PF004, PF503."""
        import nats.errors

        loop = asyncio.get_running_loop()
        conflicts = 0
        while True:
            try:
                current, revision = await self._read(key)
                after = join(current, barrier, parties, token)
                if after is not current:
                    await self._write(key, after, revision)
                return after
            except _Conflict:
                conflicts += 1
                if conflicts >= MAX_CAS_ATTEMPTS:
                    raise ServiceUnavailable(
                        f"Barrier {barrier!r}: too many arrivals at once to record this one",
                        retryable=True, retry_delay_ms=FULL_RETRY_DELAY_MS,
                        details={"reason": "barrier_contention", "attempts": conflicts},
                    ) from None  # fmt: skip
                await self._backoff(conflicts)
            except (nats.errors.Error, OSError) as exc:
                # The write may have landed: the next read tells (join is idempotent).
                left = deadline - loop.time()
                if left <= 0:
                    raise _unreachable(barrier, exc) from None
                log.info("barrier %r: %s; trying again", barrier, exc)
                await asyncio.sleep(min(UNREACHABLE_RETRY_S, left))

    async def _leave(self, key: str, round_id: str | None, token: Token) -> bool:
        """Take ``token`` out of its round; True when the round had filled first (the
        waiter was released). On a NATS failure the arrival stays (logged) and the waiter
        counts as timed out."""
        import nats.errors

        failure: BaseException | None = None
        for attempt in range(MAX_CAS_ATTEMPTS):
            try:
                current, revision = await self._read(key)
                outcome = leave(current, round_id, token)
                if isinstance(outcome, Released):
                    return True
                if isinstance(outcome, Absent):
                    return False
                await self._write(key, outcome.round, revision)
                return False
            except _Conflict:
                await self._backoff(attempt + 1)
            except (nats.errors.Error, OSError, Overloaded) as exc:
                failure = exc
                break
        log.warning("co:sync arrival %s could not be withdrawn (%s): its round may still "
                    "count it", token, failure or "too many concurrent writes")  # fmt: skip
        return False


def _unreachable(barrier: str, exc: BaseException) -> ServiceUnavailable:
    return ServiceUnavailable(
        f"Barrier {barrier!r}: the cluster's barrier store cannot be reached ({exc})",
        retryable=True, retry_delay_ms=FULL_RETRY_DELAY_MS,
        details={"reason": "cluster_unreachable"},
    )  # fmt: skip
