"""Several gateways as one cluster over NATS JetStream (issue 14): the ``ClusterState`` of
gateway/shared.py on a NATS server (or a NATS cluster).

What travels where (every bucket is made on first use by whichever gateway comes first):

- ``pf_reactors`` (KV, TTL ``REACTOR_TTL_S``): one entry per reactor, written by the
  gateway it announced to and refreshed by every gateway that holds a work link to it (at
  most every ``REACTOR_REFRESH_S``); the entry carries the announce and its dial token,
  so every gateway can dial it (a reactor keeps one work connection per gateway). A
  watch keeps each gateway's *local* registry current: routing never asks NATS.
- ``pf.events`` (subject): each ed:publish/ed:signal, delivered by every other gateway to
  its own subscribers (topic rights were checked where it was published and where each
  subscription was made).
- ``pf_state`` (KV): ``matrix`` (the §6.4 affinity matrix and its version) and
  ``keys`` (the API key list: digests only), each applied by a watch within
  milliseconds; key lists merge by protocol/keysync.py so no revocation is lost.
- ``pf.outcomes.<gateway>`` (subject): the reply of every packet that finished for good,
  batched per event-loop turn; every other gateway puts it in its own idempotency window,
  so a retry through it is answered, not run, and admitting a packet never waits on
  NATS. The stream ``PF_OUTCOMES`` keeps these batches for the window's age (DESIGN §4:
  10 min), bounded in messages and bytes: a gateway that starts (or restarts) later
  replays it into its window before it serves. A packet still running on one gateway is
  not known to the others (a retry there runs it).
- ``pf_barriers`` (KV): co:sync barriers counted by every gateway, one round per barrier
  (gateway/nats_barriers.py).
- ``pf_molecules`` and ``pf_gateways``: the molecule journal and its leases
  (gateway/nats_journal.py).

Trust: whoever may write these buckets may make every gateway dial a reactor; the NATS
connection is therefore authenticated (``--cluster-creds``) and encrypted (TLS options)
whenever it leaves the machine, like the gateway's own endpoints.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import re
import time
from typing import TYPE_CHECKING, Any, Final

import msgspec

from ..protocol.errors import ServiceUnavailable
from ..protocol.idempotency import DEFAULT_MAX_ENTRIES, DEFAULT_TTL_S
from ..protocol.keysync import merge_keys, same_keys
from ..protocol.messages import DiscoverPayload
from ..transport import now_ms

if TYPE_CHECKING:
    from .coordinator import MoleculeCoordinator
    from .journal import MoleculeJournal
    from .nats_barriers import NatsBarriers
    from .nats_journal import NatsJournal
    from .registry import ReactorRecord
    from .server import Gateway, GatewayConfig
    from .shared import SharedBarriers

log = logging.getLogger("packetflow.gateway.cluster")

REACTORS_BUCKET: Final = "pf_reactors"
STATE_BUCKET: Final = "pf_state"
OUTCOMES_SUBJECT: Final = "pf.outcomes"
OUTCOMES_STREAM: Final = "PF_OUTCOMES"
# What the stream keeps: as old as the window keeps outcomes; as many batches as a window
# holds outcomes (a batch holds one at least), so a replay fills a whole window; and a
# byte cap so a burst of large replies cannot fill the NATS server's disk (a replay
# reads at most this much).
OUTCOMES_MAX_AGE_S: Final = DEFAULT_TTL_S
OUTCOMES_MAX_MSGS: Final = DEFAULT_MAX_ENTRIES
OUTCOMES_MAX_BYTES: Final = 64 * 1024 * 1024
# A starting gateway waits this long at most for its replay; then it serves anyway (what
# it did not replay it learns from nobody: a retry of such a packet runs again).
REPLAY_MAX_S: Final = 10.0
EVENTS_SUBJECT: Final = "pf.events"
# A reactor nobody refreshes for this long leaves the shared view (three refreshes lost).
REACTOR_TTL_S: Final = 30.0
REACTOR_REFRESH_S: Final = REACTOR_TTL_S / 3
# Replies larger than this are not shared (a retry through another gateway runs again);
# NATS' default max_payload is 1 MiB and a KV entry carries headers too.
MAX_SHARED_OUTCOME_BYTES: Final = 900 * 1024
# Outcomes waiting to be published; past it the oldest are dropped (and counted).
MAX_OUTBOX: Final = 100_000
# How often the local key file is compared with what was last shared.
KEY_SYNC_S: Final = 0.5
CONNECT_TIMEOUT_S: Final = 5.0
FIRST_CONNECT_S: Final = 15.0
# Outcomes are gathered this long before they leave: one task and one message per interval
# at any packet rate, instead of one each per packet (each message wakes nats-server and
# every other gateway); far below any client's retry delay. Events leave at once.
OUTCOME_FLUSH_S: Final = 0.02
# How often a watch looks whether the connection was re-made under it.
WATCH_CHECK_S: Final = 0.5

_SAFE_KEY = re.compile(r"[-_=a-zA-Z0-9]{1,200}")


def kv_key(name: str) -> str:
    """``name`` as a KV key token: itself when it is safe, else a digest."""
    if _SAFE_KEY.fullmatch(name):
        return name
    return "h" + hashlib.sha256(name.encode()).hexdigest()[:40]


async def stream(js: Any, name: str, **config: Any) -> None:
    """Make the stream ``name`` with ``config`` if it does not exist yet (an existing
    stream keeps the config it was made with)."""
    from nats.js.errors import NotFoundError

    try:
        await js.stream_info(name)
        return
    except NotFoundError:
        pass
    try:
        await js.add_stream(name=name, **config)
    except Exception:  # another gateway made it first
        await js.stream_info(name)


async def bucket(js: Any, name: str, **config: Any) -> Any:
    """The KV bucket ``name``, made with ``config`` if it does not exist yet (an existing
    bucket keeps the config it was made with)."""
    from nats.js.errors import BucketNotFoundError

    try:
        return await js.key_value(name)
    except BucketNotFoundError:
        pass
    try:
        return await js.create_key_value(bucket=name, **config)
    except Exception:  # another gateway made it first, with the same config
        return await js.key_value(name)


class NatsCluster:
    """``ClusterState`` over NATS JetStream (module doc)."""

    shares_outcomes = True

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.me = config.gateway_id
        self.nc: Any = None
        self.js: Any = None
        self.reactors: Any = None
        self.state: Any = None
        self.gateway: Gateway | None = None
        self.journal: NatsJournal | None = None
        from .nats_barriers import NatsBarriers  # here: it imports this module

        self._barriers: NatsBarriers = NatsBarriers(self)
        self.barriers: SharedBarriers | None = self._barriers
        self._tasks: set[asyncio.Task[Any]] = set()
        self._refreshed: dict[str, float] = {}  # reactor id -> last refresh (monotonic)
        self._reactor_keys: dict[str, str] = {}  # KV key -> reactor id
        self._outbox: list[tuple[str, bytes]] = []  # events
        self._outcomes: list[tuple[str, bytes]] = []
        self._outcome_subject = f"{OUTCOMES_SUBJECT}.{kv_key(self.me)}"
        self._flushing = False  # a flush task runs
        self._flush_at: float | None = None  # when the next one is due (loop time)
        self._flush_handle: asyncio.TimerHandle | None = None
        self._dropped = 0
        self._remote_matrix: str | None = None  # version being applied from the watch
        self._keys_shared: list[dict[str, Any]] = []
        self._keys_stamp: tuple[int, int] | None = None
        self.connected = False
        self.stopping = False
        self.reconnects = 0

    # ------------------------------------------------------------------ lifecycle

    async def start(self, gateway: Gateway) -> None:
        """Connect, make or open the buckets, bring the shared keys and matrix, start the
        watches. Raises ServiceUnavailable when NATS cannot be reached."""
        import nats
        import nats.errors

        self.gateway = gateway
        config = self.config
        options: dict[str, Any] = {
            "servers": [u.strip() for u in str(config.cluster_url).split(",") if u.strip()],
            "name": self.me,
            "connect_timeout": CONNECT_TIMEOUT_S,
            "max_reconnect_attempts": -1,  # NATS restarts: keep trying for good
            "reconnect_time_wait": 0.5,
            "allow_reconnect": True,
            "disconnected_cb": self._disconnected,
            "reconnected_cb": self._reconnected,
            "error_cb": self._error,
        }
        if config.cluster_creds is not None:
            options["user_credentials"] = str(config.cluster_creds)
        if config.cluster_ca is not None or config.cluster_cert is not None:
            import ssl

            context = ssl.create_default_context(
                cafile=str(config.cluster_ca) if config.cluster_ca else None
            )
            if config.cluster_cert is not None:
                context.load_cert_chain(str(config.cluster_cert),
                                        str(config.cluster_key) if config.cluster_key
                                        else None)  # fmt: skip
            options["tls"] = context
        try:
            # The client retries for good once connected; the first connection gets a
            # deadline, so a wrong URL fails the start with a reason instead of a hang.
            self.nc = await asyncio.wait_for(nats.connect(**options), FIRST_CONNECT_S)
        except (TimeoutError, OSError, nats.errors.Error) as exc:
            raise ServiceUnavailable(
                f"cannot reach the cluster's NATS server(s) at {config.cluster_url} "
                f"within {FIRST_CONNECT_S:g} s ({type(exc).__name__}: {exc})",
                field="cluster",
                validation_rule="nats_reachable",
            ) from None
        self.connected = True
        self.js = self.nc.jetstream(timeout=2.0)
        replicas = config.cluster_replicas
        self.reactors = await bucket(self.js, REACTORS_BUCKET, ttl=REACTOR_TTL_S,
                                     replicas=replicas)  # fmt: skip
        self.state = await bucket(self.js, STATE_BUCKET, replicas=replicas)
        await self._barriers.open()
        await self._sync_keys_now()
        matrix = await self._get(self.state, "matrix")
        if matrix is not None:
            self._apply_matrix(matrix)
        await self.nc.subscribe(EVENTS_SUBJECT, cb=self._on_event)
        # Live outcomes first, then the stored ones: none falls between the two (one
        # seen twice is harmless, remember_outcome keeps the first).
        await self.nc.subscribe(f"{OUTCOMES_SUBJECT}.>", cb=self._on_outcomes_async)
        await stream(self.js, OUTCOMES_STREAM, subjects=[f"{OUTCOMES_SUBJECT}.>"],
                     max_age=OUTCOMES_MAX_AGE_S, max_msgs=OUTCOMES_MAX_MSGS,
                     max_bytes=OUTCOMES_MAX_BYTES, num_replicas=replicas)  # fmt: skip
        await self._replay_outcomes()
        self.watch(self.reactors, ">", self._on_reactor)
        self.watch(self.state, ">", self._on_state)
        self._spawn(self._key_file_loop())
        log.info("gateway %s joined the cluster at %s", self.me, config.cluster_url)

    async def stop(self) -> None:
        if self.nc is not None and self.nc.is_connected:
            await self._barriers.close()  # withdraw the drained co:sync arrivals
        self.stopping = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            # Bounded: nats-py waits with asyncio.wait_for, which on Python 3.11 swallows a
            # cancel that lands as its result arrives; a watch sees ``stopping`` instead
            # within WATCH_CHECK_S.
            await asyncio.wait(tasks, timeout=WATCH_CHECK_S * 4)
        # After the lease loop stopped (it could renew again): the others take over now.
        if self.journal is not None and self.nc is not None and self.nc.is_connected:
            await self.journal.release()
        if (self._outbox or self._outcomes) and self.nc is not None and self.nc.is_connected:
            await self._flush_outbox()
        if self.nc is not None:
            try:
                await asyncio.wait_for(self.nc.drain(), 2.0)
            except Exception as exc:  # a dead server: nothing left to drain
                log.debug("NATS drain: %s", exc)
            self.nc = None

    def molecule_journal(self, coordinator: MoleculeCoordinator) -> MoleculeJournal | None:
        from .nats_journal import NatsJournal

        self.journal = NatsJournal(self, coordinator, self.config.cluster_lease_s,
                                   cipher=coordinator._journal_cipher())  # fmt: skip
        return self.journal

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "mode": "nats", "url": self.config.cluster_url, "connected": self.connected,
            "reconnects": self.reconnects, "outcomes_dropped": self._dropped,
            "barriers": self._barriers.describe(),
        }  # fmt: skip
        if self.journal is not None:
            out["gateways"] = self.journal.live_gateways()
            out["lease_s"] = self.config.cluster_lease_s
        return out

    def spawn(self, coro: Any) -> None:
        self._spawn(coro)

    def watch(self, kv: Any, keys: str, handle: Any) -> None:
        """Apply every change of ``keys`` in ``kv`` with ``handle``, for as long as this
        gateway runs (``_watch``)."""
        self._spawn(self._watch(kv, keys, handle))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _disconnected(self) -> None:
        self.connected = False
        log.warning("gateway %s lost its NATS connection; routing goes on from the local "
                    "view", self.me)  # fmt: skip

    async def _reconnected(self) -> None:
        self.connected = True
        self.reconnects += 1
        log.warning("gateway %s reconnected to NATS", self.me)

    async def _error(self, exc: Exception) -> None:
        log.debug("NATS: %s", exc)

    async def _watch(self, kv: Any, keys: str, handle: Any) -> None:
        """Apply every change of ``keys`` in ``kv``. After a reconnect (a NATS restart may
        have lost its consumer without a word) the watch is made again, replaying the
        current values, within WATCH_CHECK_S."""
        while True:
            watcher = None
            try:
                generation = self.reconnects
                watcher = await kv.watch(keys)
                while generation == self.reconnects and not self.stopping:
                    try:
                        entry = await watcher.updates(timeout=WATCH_CHECK_S)
                    except TimeoutError:
                        continue
                    try:
                        handle(entry)
                    except Exception:
                        log.exception("applying cluster entry %s failed", entry.key)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.info("cluster watch of %s ended (%s); watching again", keys, exc)
            else:
                if self.stopping:
                    return
                log.info("NATS reconnected: watching %s again from its current values", keys)
            finally:
                if watcher is not None:
                    with contextlib.suppress(Exception):  # the subscription is gone already
                        await watcher.stop()
            await asyncio.sleep(0.5)

    @staticmethod
    async def _get(kv: Any, key: str) -> Any:
        from nats.js.errors import KeyNotFoundError

        try:
            entry = await kv.get(key)
        except KeyNotFoundError:
            return None
        return None if entry.value is None else json.loads(entry.value)

    # ------------------------------------------------------------------ registry

    def reactor_announced(self, record: ReactorRecord) -> None:
        self._put_reactor(record)

    def reactor_seen(self, record: ReactorRecord, now: float) -> None:
        if now - self._refreshed.get(record.reactor_id, -1e9) >= REACTOR_REFRESH_S:
            self._put_reactor(record)

    def reactor_withdrew(self, reactor_id: str) -> None:
        self._refreshed.pop(reactor_id, None)
        self._spawn(self._delete(self.reactors, kv_key(reactor_id)))

    def _put_reactor(self, record: ReactorRecord) -> None:
        if self.reactors is None:
            return
        self._refreshed[record.reactor_id] = time.monotonic()
        body = json.dumps({
            "announce": record.announce, "dial_token": record.dial_token,
            "gateway": self.me, "reactor_id": record.reactor_id,
        }).encode()  # fmt: skip
        self._spawn(self._put(self.reactors, kv_key(record.reactor_id), body))

    async def _put(self, kv: Any, key: str, value: bytes) -> None:
        try:
            await kv.put(key, value)
        except Exception as exc:
            log.info("cluster write of %s failed: %s", key, exc)

    async def _delete(self, kv: Any, key: str) -> None:
        try:
            await kv.delete(key)
        except Exception as exc:
            log.info("cluster delete of %s failed: %s", key, exc)

    def _on_reactor(self, entry: Any) -> None:
        gateway = self.gateway
        assert gateway is not None
        if entry is None:  # the watch caught up with the current values
            return
        if entry.operation in ("DEL", "PURGE"):
            reactor_id = self._reactor_keys.pop(entry.key, None)
            record = gateway.registry.get(reactor_id) if reactor_id else None
            # Its own link is this gateway's best evidence: only a reactor it cannot
            # reach leaves with the shared entry.
            if record is not None and (record.link is None or not record.link.up):
                gateway.depart(record)
            return
        body = json.loads(entry.value)
        reactor_id = str(body["reactor_id"])
        self._reactor_keys[entry.key] = reactor_id
        if body.get("gateway") == self.me:
            return
        record = gateway.registry.get(reactor_id)
        announce = body.get("announce") or {}
        url = (announce.get("reactor_info") or {}).get("endpoints", {}).get("websocket")
        if (
            record is not None
            and record.link is not None
            and record.link.up
            and record.endpoints.get("websocket") == url
        ):
            # Linked already: its heartbeats on that link keep it current. Its newest dial
            # token is kept, so this gateway's refreshes never put back an older one.
            if body.get("dial_token"):
                record.dial_token = body["dial_token"]
            return
        payload = msgspec.convert(announce, DiscoverPayload)
        source = record.source if record is not None else "cluster"
        gateway.register(payload, source=source, dial_token=body.get("dial_token"))

    # ------------------------------------------------------------------ events

    def event_published(self, topic: str, event: Any) -> None:
        if self.nc is None:
            return
        try:
            body = json.dumps({"gateway": self.me, "topic": topic, "event": event}).encode()
        except (TypeError, ValueError):
            return  # the local publish already refused it
        self._outbox.append((EVENTS_SUBJECT, body))
        self._kick(0.0)

    async def _on_event(self, msg: Any) -> None:
        body = json.loads(msg.data)
        if body.get("gateway") == self.me or self.gateway is None:
            return
        self.gateway.local.publish(str(body["topic"]), body.get("event"))

    # ------------------------------------------------------------------ matrix

    def matrix_changed(self, matrix: dict[str, dict[str, float]], version: str) -> None:
        if self.state is None or version == self._remote_matrix:
            return
        body = json.dumps({"matrix": matrix, "version": version, "gateway": self.me}).encode()
        self._spawn(self._put(self.state, "matrix", body))

    def _apply_matrix(self, body: dict[str, Any]) -> None:
        gateway = self.gateway
        assert gateway is not None
        version = str(body["version"])
        if version == gateway.matrix_version:
            return
        self._remote_matrix = version
        try:
            change = gateway.local.versions.adopt(body["matrix"], version, now_ms())
            gateway.set_matrix(change.matrix, change.version)
        finally:
            self._remote_matrix = None
        log.info("affinity matrix %s from gateway %s", version, body.get("gateway"))

    def _on_state(self, entry: Any) -> None:
        if entry is None:
            return
        if entry.operation in ("DEL", "PURGE") or entry.value is None:
            return
        body = json.loads(entry.value)
        if entry.key == "matrix":
            if body.get("gateway") != self.me:
                self._apply_matrix(body)
        elif entry.key == "keys":
            self._merge_keys(list(body.get("keys") or []))

    # ------------------------------------------------------------------ outcomes

    def outcome_recorded(self, key: str, frame: bytes) -> None:
        if self.nc is None or len(frame) > MAX_SHARED_OUTCOME_BYTES:
            return
        if len(self._outcomes) >= MAX_OUTBOX:
            self._outcomes.pop(0)
            self._dropped += 1
        self._outcomes.append((key, frame))
        self._kick(OUTCOME_FLUSH_S)

    async def _on_outcomes_async(self, msg: Any) -> None:
        self._on_outcomes(msg)

    def _on_outcomes(self, msg: Any) -> None:
        if msg.subject == self._outcome_subject or self.gateway is None:
            return
        remember = self.gateway.remember_outcome
        for key, frame in _outcome_batch.decode(msg.data):
            remember(key, frame)

    async def _replay_outcomes(self) -> int:
        """Put the outcomes ``PF_OUTCOMES`` keeps into this gateway's window (its own from
        before a restart included), each as old as when it was stored; how many. Runs
        before the gateway serves, at most REPLAY_MAX_S."""
        import nats.errors
        from nats.js.api import DeliverPolicy

        assert self.gateway is not None
        info = await self.js.stream_info(OUTCOMES_STREAM)
        if not info.state.messages:
            return 0
        last = info.state.last_seq
        remember = self.gateway.remember_outcome
        loop = asyncio.get_running_loop()
        deadline = loop.time() + REPLAY_MAX_S
        replayed = 0
        sub = await self.js.subscribe(f"{OUTCOMES_SUBJECT}.>", stream=OUTCOMES_STREAM,
                                      ordered_consumer=True,
                                      deliver_policy=DeliverPolicy.ALL)  # fmt: skip
        try:
            while True:
                msg = await sub.next_msg(timeout=max(0.01, deadline - loop.time()))
                meta = msg.metadata
                age = max(0.0, time.time() - meta.timestamp.timestamp())
                try:
                    batch = _outcome_batch.decode(msg.data)
                except msgspec.DecodeError:
                    log.info("outcome batch %d in %s is not one; skipped",
                             meta.sequence.stream, OUTCOMES_STREAM)  # fmt: skip
                    batch = []
                for key, frame in batch:
                    remember(key, frame, age)
                replayed += len(batch)
                if meta.sequence.stream >= last or not meta.num_pending:
                    break
        except (TimeoutError, nats.errors.Error) as exc:
            log.warning("gateway %s replayed %d stored outcomes, not all (%s): a retry of "
                        "the others runs again", self.me, replayed, exc)  # fmt: skip
        finally:
            with contextlib.suppress(Exception):  # the consumer goes away with it anyway
                await sub.unsubscribe()
        log.info("gateway %s replayed %d outcomes stored by the cluster", self.me, replayed)
        return replayed

    def _kick(self, delay: float) -> None:
        """Flush within ``delay`` seconds (sooner if a flush is already due sooner)."""
        loop = asyncio.get_running_loop()
        due = loop.time() + delay
        if self._flush_at is not None and self._flush_at <= due:
            return
        if self._flush_handle is not None:
            self._flush_handle.cancel()
        self._flush_at = due
        self._flush_handle = loop.call_at(due, self._start_flush)

    def _start_flush(self) -> None:
        self._flush_handle = self._flush_at = None
        if not self._flushing:  # else the running flush takes what is waiting
            self._flushing = True
            self._spawn(self._flush_outbox())

    async def _flush_outbox(self) -> None:
        """Everything waiting to be published: events one message
        each, outcomes batched (one message carries many, so another gateway pays one
        NATS delivery per batch, not per packet)."""
        try:
            while self._outbox or self._outcomes:
                events, self._outbox = self._outbox, []
                outcomes, self._outcomes = self._outcomes, []
                if self.nc is None:
                    return
                for subject, data in events:
                    await self.nc.publish(subject, data)
                for batch in _batches(outcomes, MAX_SHARED_OUTCOME_BYTES):
                    await self.nc.publish(self._outcome_subject, _outcome_encoder.encode(batch))
        except Exception as exc:  # disconnected past the client's buffer: lost, counted
            self._dropped += 1
            log.info("cluster publish failed: %s", exc)
            self._outbox.clear()  # no tight retry loop while NATS is away
            self._outcomes.clear()
        finally:
            self._flushing = False
            if (self._outbox or self._outcomes) and self.nc is not None:
                self._kick(0.0)  # queued while the last publish was under way

    # ------------------------------------------------------------------ security

    def _local_keys(self) -> list[dict[str, Any]]:
        assert self.gateway is not None
        path = self.gateway.gatekeeper.keys.path
        try:
            return list(json.loads(path.read_text()).get("keys") or [])
        except (OSError, ValueError):
            return []

    def _key_stamp(self) -> tuple[int, int] | None:
        assert self.gateway is not None
        try:
            st = self.gateway.gatekeeper.keys.path.stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size)

    async def _sync_keys_now(self) -> None:
        remote = await self._get(self.state, "keys")
        self._merge_keys(list((remote or {}).get("keys") or []), push_always=remote is None)

    def _merge_keys(self, remote: list[dict[str, Any]], *, push_always: bool = False) -> None:
        """Bring the local key file and the shared list to their merge (keysync.py)."""
        from ..security.files import write_secret

        assert self.gateway is not None
        store = self.gateway.gatekeeper.keys
        local = self._local_keys()
        merged = merge_keys(local, remote)
        if merged and not same_keys(merged, local):
            write_secret(store.path, json.dumps({"keys": merged}, indent=2) + "\n")
            store.reload()
        self._keys_stamp = self._key_stamp()
        if merged and (push_always or not same_keys(merged, remote)):
            self._keys_shared = merged
            body = json.dumps({"keys": merged, "gateway": self.me}).encode()
            self._spawn(self._put(self.state, "keys", body))

    async def _key_file_loop(self) -> None:
        """``packetflow keys create/revoke`` on this host change the file: share it."""
        while True:
            await asyncio.sleep(KEY_SYNC_S)
            if self._key_stamp() != self._keys_stamp:
                try:
                    await self._sync_keys_now()
                except Exception as exc:
                    log.info("sharing the key file failed: %s", exc)


_outcome_encoder: Final = msgspec.msgpack.Encoder()
_outcome_batch: Final = msgspec.msgpack.Decoder(list[tuple[str, bytes]])


def _batches(items: list[tuple[str, bytes]], max_bytes: int) -> list[list[tuple[str, bytes]]]:
    """``items`` cut into runs of at most ``max_bytes`` of frames each."""
    out: list[list[tuple[str, bytes]]] = []
    size = max_bytes
    for item in items:
        if size + len(item[1]) > max_bytes:
            out.append([])
            size = 0
        out[-1].append(item)
        size += len(item[1])
    return out
