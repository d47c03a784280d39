"""The molecule journal in NATS JetStream, owned by lease (issue 14): a molecule started
through one gateway survives that gateway's death and finishes on another.

Layout, in the KV bucket ``pf_molecules``:

- ``doc.<id>``: the molecule's document: run token, checkpoint, metadata, the events
  since the checkpoint, status once finished (the SQLite journal's row and event rows in
  one value). Every write is a compare-and-set on the revision this gateway last wrote or
  read, so a gateway that lost the molecule (its lease lapsed and another took it over)
  can no longer write it: it is told (``coordinator.abandon``) and stops running it.
- ``open.<id>``: ``{molecule_id, owner}`` while the molecule is unfinished. Every gateway
  watches these small entries, so it knows which molecules exist and who owns them. A
  new run creates its claim (compare-and-set) before its first document: a start of an
  id another gateway runs, which this gateway's view of the claims had not caught up
  with, is refused there (``coordinator.refuse_start``) and overwrites nothing.

and in ``pf_gateways``: ``<gateway id>``, rewritten by each gateway every
``lease.renew_every(lease_s)``. protocol/lease.py decides, from when this gateway last saw
an owner renew, when that owner's molecules may be taken over; the take-over is a
compare-and-set on ``open.<id>``, so exactly one survivor wins, which then reads the
document and resumes the molecule as after a restart (coordinator ``_resume``): finished
packets keep their results, packets that were running are asked again under the same
wire id, first of the shared idempotency window, then pinned to the reactor they ran on,
whose own window answers them, so no finished packet runs again.

Commits are group commits, as the SQLite journal's: the coordinator stages what one
event-loop iteration wrote and acts only once ``commit_async`` returns (DESIGN §6:
nothing is acknowledged or started that the journal does not hold).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Final

from ..protocol.lease import Decision, LeaseBook, renew_every
from .journal import JOURNAL_KEEP_FINISHED, BlobCipher, JournalError, JournalEvent, StoredMolecule
from .nats_cluster import bucket, kv_key

if TYPE_CHECKING:
    from .coordinator import MoleculeCoordinator
    from .nats_cluster import NatsCluster

log = logging.getLogger("packetflow.gateway.cluster")

MOLECULES_BUCKET: Final = "pf_molecules"
GATEWAYS_BUCKET: Final = "pf_gateways"
# Molecules one gateway takes over per lease tick, so a survivor inheriting thousands
# does not stall its event loop in one go.
MAX_TAKEOVERS_PER_TICK: Final = 200


class NatsJournal:
    """``AsyncJournal`` on JetStream KV (module doc)."""

    def __init__(
        self,
        cluster: NatsCluster,
        coordinator: MoleculeCoordinator,
        lease_s: float,
        cipher: BlobCipher | None = None,
    ) -> None:
        self.cluster = cluster
        self.coordinator = coordinator
        self.me = cluster.me
        self.lease_s = lease_s
        self.book = LeaseBook(self.me, lease_s, time.monotonic())
        self._cipher = cipher
        self.kv: Any = None
        self.leases: Any = None
        self.docs: dict[str, dict[str, Any]] = {}  # molecules this gateway runs
        self.revs: dict[str, int] = {}  # doc revision last written or read
        self.owners: dict[str, tuple[str | None, int]] = {}  # open molecule -> owner, rev
        self._dirty: set[str] = set()
        # Staged documents, and whether each is a finished one: decided when staged, since
        # the molecule may finish while the commit of its running state is still under way.
        self._staged: dict[str, tuple[bytes, bool]] = {}
        self._kept: deque[str] = deque()  # finished molecules written here, oldest first
        self._lost: set[str] = set()
        self._open_ready = asyncio.Event()

    # ------------------------------------------------------------------ lifecycle

    def open(self) -> list[StoredMolecule]:
        raise JournalError("the NATS journal opens with open_async")

    async def open_async(self) -> list[StoredMolecule]:
        """Watch the open molecules and the leases; return the ones this gateway owns
        (it restarted under the same id), to resume now."""
        try:
            replicas = self.cluster.config.cluster_replicas
            self.kv = await bucket(self.cluster.js, MOLECULES_BUCKET, replicas=replicas)
            self.leases = await bucket(self.cluster.js, GATEWAYS_BUCKET, replicas=replicas)
            await self._renew()
        except Exception as exc:
            raise JournalError(f"cannot open the NATS molecule journal: {exc}") from exc
        self.cluster.watch(self.kv, "open.>", self._on_open)
        self.cluster.watch(self.leases, ">", self._on_lease)
        self.cluster.spawn(self._lease_loop())
        try:
            await asyncio.wait_for(self._open_ready.wait(), 5.0)
        except TimeoutError:
            log.warning("the open molecules were not listed within 5 s; going on")
        mine = [mid for mid, (owner, _) in self.owners.items() if owner == self.me]
        stored = []
        for mid in mine:
            item = await self.load_async(mid, keep=True)
            if item is not None and item.status is None:
                stored.append(item)
        return stored

    def close(self) -> None:
        """Nothing buffered survives: an unfinished molecule stays owned by this gateway
        until it restarts or its lease lapses and another takes it over."""

    async def release(self) -> None:
        """This gateway stops: drop its lease so the others take over at once."""
        if self.leases is not None:
            try:
                await self.leases.delete(kv_key(self.me))
            except Exception as exc:
                log.info("releasing the lease failed: %s", exc)

    def claimed_by(self, molecule_id: str) -> str | None:
        # From the watch of the claims, with no round trip: a claim still on its way here
        # is caught by the new run's first commit instead (_claim).
        claim = self.owners.get(molecule_id)
        return None if claim is None else (claim[0] or "an unknown gateway")

    def live_gateways(self) -> list[str]:
        return self.book.live(time.monotonic())

    # ------------------------------------------------------------------ writes

    def begin(self, molecule_id: str, run_token: str, checkpoint: dict[str, Any],
              meta: dict[str, Any], now: float) -> None:  # fmt: skip
        self.docs[molecule_id] = {
            "molecule_id": molecule_id, "run_token": run_token, "checkpoint": checkpoint,
            "meta": meta, "status": None, "created_at": now, "finished_at": None,
            "events": [], "owner": self.me,
        }  # fmt: skip
        self._lost.discard(molecule_id)
        self._dirty.add(molecule_id)

    def record(self, molecule_id: str, event: JournalEvent) -> None:
        doc = self.docs.get(molecule_id)
        if doc is None:
            return
        body = None if event.body is None else base64.b64encode(event.body).decode()
        doc["events"].append([event.kind, event.packet_id, event.at, event.reactor_id,
                              event.retryable, body])  # fmt: skip
        self._dirty.add(molecule_id)

    def checkpoint(self, molecule_id: str, snapshot: dict[str, Any], now: float) -> None:
        doc = self.docs.get(molecule_id)
        if doc is None:
            return
        doc["checkpoint"], doc["events"] = snapshot, []
        self._dirty.add(molecule_id)

    def update_meta(self, molecule_id: str, meta: dict[str, Any]) -> None:
        doc = self.docs.get(molecule_id)
        if doc is not None:
            doc["meta"] = meta
            self._dirty.add(molecule_id)

    def finish(self, molecule_id: str, status: str, snapshot: dict[str, Any], now: float) -> None:
        doc = self.docs.get(molecule_id)
        if doc is None:
            return
        doc.update(status=status, checkpoint=snapshot, finished_at=now, events=[])
        self._dirty.add(molecule_id)

    def commit(self) -> None:
        raise JournalError("the NATS journal commits with commit_async")

    def stage(self) -> None:
        dirty, self._dirty = self._dirty, set()
        for mid in dirty:
            doc = self.docs.get(mid)
            if doc is not None and mid not in self._lost:
                self._staged[mid] = (self._seal(doc), doc["status"] is not None)

    async def commit_async(self) -> None:
        staged, self._staged = self._staged, {}
        if not staged:
            return
        writes = (self._write(mid, value, finished) for mid, (value, finished) in staged.items())
        results = await asyncio.gather(*writes, return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            raise JournalError(f"molecule journal commit to NATS failed: {failures[0]}")

    async def _write(self, mid: str, value: bytes, finished: bool) -> None:
        from nats.js.errors import KeyWrongLastSequenceError

        key = f"doc.{kv_key(mid)}"
        rev = self.revs.get(mid)
        if rev is None and not finished and not await self._claim(mid):
            return
        try:
            if rev is None:
                self.revs[mid] = await self.kv.put(key, value)
            else:
                self.revs[mid] = await self.kv.update(key, value, last=rev)
        except KeyWrongLastSequenceError:
            self._ownership_lost(mid)
            return
        if finished:
            await self.kv.delete(f"open.{kv_key(mid)}")
            self.owners.pop(mid, None)  # at once: its initiator may start it again next
            self._forget(mid)

    async def _claim(self, mid: str) -> bool:
        """Claim a new run of ``mid`` before its first document is written; False (and the
        start refused) when another gateway's unfinished run holds the claim. A gateway
        that dies between the two writes leaves a claim with no document, which whoever
        takes it over drops (``_take_over_lapsed``)."""
        from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError

        claim = f"open.{kv_key(mid)}"
        body = json.dumps({"molecule_id": mid, "owner": self.me}).encode()
        for _ in range(2):  # a claim that goes away between the two calls: try again
            try:
                await self.kv.create(claim, body)
                return True
            except KeyWrongLastSequenceError:
                pass
            try:
                entry = await self.kv.get(claim)
            except KeyNotFoundError:
                continue
            holder = json.loads(entry.value).get("owner")
            if holder == self.me:  # its own claim, from before a restart
                await self.kv.update(claim, body, last=entry.revision)
                return True
            self._let_go(mid)
            self.coordinator.refuse_start(mid, str(holder or "an unknown gateway"))
            return False
        raise JournalError(f"molecule {mid}: its claim in NATS keeps changing")

    def _forget(self, mid: str) -> None:
        """A finished molecule leaves memory; the oldest finished documents leave NATS."""
        self.docs.pop(mid, None)
        self.revs.pop(mid, None)
        self._kept.append(mid)
        while len(self._kept) > JOURNAL_KEEP_FINISHED:
            old = self._kept.popleft()
            self.cluster.spawn(self._delete_doc(old))

    async def _delete_doc(self, mid: str) -> None:
        try:
            await self.kv.delete(f"doc.{kv_key(mid)}")
        except Exception as exc:
            log.info("pruning molecule %s failed: %s", mid, exc)

    def _ownership_lost(self, mid: str) -> None:
        self._let_go(mid)
        self.coordinator.abandon(mid, "another gateway took it over")

    def _let_go(self, mid: str) -> None:
        """Another gateway holds ``mid``: nothing more of it is written from here."""
        self._lost.add(mid)
        self.docs.pop(mid, None)
        self.revs.pop(mid, None)

    # ------------------------------------------------------------------ reads

    def load(self, molecule_id: str) -> StoredMolecule | None:
        doc = self.docs.get(molecule_id)
        return None if doc is None else self._stored(doc)

    async def load_async(self, molecule_id: str, *, keep: bool = False) -> StoredMolecule | None:
        from nats.js.errors import KeyNotFoundError

        try:
            entry = await self.kv.get(f"doc.{kv_key(molecule_id)}")
        except KeyNotFoundError:
            return None
        except Exception as exc:
            raise JournalError(f"molecule journal read from NATS failed: {exc}") from exc
        doc = self._unseal(entry.value)
        if keep:
            self.docs[molecule_id] = doc
            self.revs[molecule_id] = entry.revision
            self._lost.discard(molecule_id)
        return self._stored(doc)

    def _stored(self, doc: dict[str, Any]) -> StoredMolecule:
        events = [
            JournalEvent(kind, pid, at, rid, retry,
                         None if body is None else base64.b64decode(body))
            for kind, pid, at, rid, retry, body in doc.get("events") or []
        ]  # fmt: skip
        return StoredMolecule(
            molecule_id=doc["molecule_id"], run_token=doc["run_token"],
            checkpoint=doc["checkpoint"], meta=doc.get("meta") or {}, status=doc.get("status"),
            created_at=float(doc.get("created_at") or 0.0), finished_at=doc.get("finished_at"),
            events=events,
        )  # fmt: skip

    def _seal(self, doc: dict[str, Any]) -> bytes:
        raw = json.dumps(doc, separators=(",", ":")).encode()
        return raw if self._cipher is None else self._cipher.encrypt(raw)

    def _unseal(self, raw: bytes) -> dict[str, Any]:
        try:
            plain = raw if self._cipher is None else self._cipher.decrypt(bytes(raw))
            value = json.loads(plain)
        except ValueError as exc:
            raise JournalError(f"molecule journal document unreadable: {exc}") from exc
        if not isinstance(value, dict):
            raise JournalError("molecule journal document is not an object")
        return value

    # ------------------------------------------------------------------ leases

    def _on_open(self, entry: Any) -> None:
        if entry is None:  # the watch caught up: every open molecule is listed
            self._open_ready.set()
            return
        if entry.operation in ("DEL", "PURGE"):
            for mid in list(self.owners):
                if f"open.{kv_key(mid)}" == entry.key:
                    del self.owners[mid]
            return
        body = json.loads(entry.value)
        mid = str(body["molecule_id"])
        owner = body.get("owner")
        before = self.owners.get(mid)
        self.owners[mid] = (owner, entry.revision)
        if before is not None and before[0] == self.me and owner != self.me:
            self._ownership_lost(mid)

    def _on_lease(self, entry: Any) -> None:
        if entry is None:
            return
        now = time.monotonic()
        gateway_id = entry.key
        if entry.operation in ("DEL", "PURGE"):
            self.book.released(gateway_id, now)
        else:
            self.book.renewed(gateway_id, now)

    async def _renew(self) -> None:
        body = json.dumps({"gateway": self.me, "at": time.time()}).encode()
        await self.leases.put(kv_key(self.me), body)

    async def _lease_loop(self) -> None:
        every = renew_every(self.lease_s)
        while not self.cluster.stopping:  # not only cancel: see NatsCluster.stop
            await asyncio.sleep(every)
            try:
                await self._renew()
            except Exception as exc:
                log.info("lease renewal failed: %s", exc)
                continue
            try:
                await self._take_over_lapsed()
            except Exception:
                log.exception("taking over molecules failed")

    async def _take_over_lapsed(self) -> None:
        from nats.js.errors import KeyWrongLastSequenceError

        now = time.monotonic()
        taken = 0
        for mid, (owner, rev) in list(self.owners.items()):
            if taken >= MAX_TAKEOVERS_PER_TICK:
                return
            if mid in self.coordinator.active:
                continue
            if self.book.decide(owner, now) is not Decision.TAKE_OVER:
                continue
            body = json.dumps({"molecule_id": mid, "owner": self.me}).encode()
            try:
                new_rev = await self.kv.update(f"open.{kv_key(mid)}", body, last=rev)
            except KeyWrongLastSequenceError:
                continue  # another gateway won it, or it finished meanwhile
            self.owners[mid] = (self.me, new_rev)
            stored = await self.load_async(mid, keep=True)
            taken += 1
            if stored is None or stored.status is not None:
                await self.kv.delete(f"open.{kv_key(mid)}")
                self.docs.pop(mid, None)
                continue
            log.warning("gateway %s takes over molecule %s from %s (lease lapsed)",
                        self.me, mid, owner)  # fmt: skip
            try:
                self.coordinator.adopt(stored)
            except Exception:
                log.exception("molecule %s cannot be resumed from the journal", mid)
