"""The molecule journal: a durable record of every molecule state change, so that a
gateway restart resumes unfinished molecules (DESIGN §6, §7 durability).

The embedded implementation is one SQLite file (stdlib ``sqlite3``) in WAL mode, behind
the small ``MoleculeJournal`` interface so that a NATS JetStream implementation can take
its place for several gateways (DESIGN §1).

How it is laid out:

- ``molecules``: one row per molecule: its run token, a *checkpoint* (the planner's
  ``MoleculeRun.snapshot()``, which holds the whole structure and every packet's state),
  coordinator metadata, and its final status once finished (NULL while it runs).
- ``events``: what happened after the checkpoint, in order (planner events such as
  ``packet_succeeded`` with the result bytes and ``packet_dispatched`` naming the reactor
  a packet went to, plus ``packet_submitted`` audit rows).
  Resuming = the checkpoint + these events replayed; a new checkpoint (at the finish, on
  an applied optimization, every ``CHECKPOINT_EVERY_EVENTS`` events) folds them in and
  deletes them.

Writes are buffered and written by ``commit()`` in one transaction (a group commit): the
coordinator commits once per event-loop iteration and only then acts (submits packets,
acknowledges an initiate), so nothing is acknowledged or started that the journal does
not hold.

fsync policy: ``PRAGMA synchronous=NORMAL`` in WAL mode by default. A commit is then
durable against the gateway process dying (SIGKILL, OOM, crash: the WAL is in the OS page
cache and SQLite replays it), and the file is never corrupted, but the last commits before
a power loss or kernel crash may be lost (WAL fsyncs only at checkpoints). ``FULL`` fsyncs
the WAL on every commit and survives power loss; set ``PACKETFLOW_JOURNAL_SYNC=FULL`` (or
pass ``synchronous="FULL"``). Measured on the development VM (virtio disk): a one-row
commit costs 22 µs with NORMAL and 190 µs with FULL; a buffered row adds ~2 µs. At those
costs the calls run inline on the event loop: a thread hop (~50-100 µs) would cost more
than the commit it hides. WAL checkpoints are another matter: one copies up to a thousand
pages into the main file and fsyncs both, and run by SQLite's auto-checkpoint it ran
inside whichever commit crossed the threshold, on the event loop. They run on a thread of
their own instead (``_Checkpointer``, every CHECKPOINT_EVERY_COMMITS commits), which
changes nothing of the durability above: a commit is in the WAL either way.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol, runtime_checkable

import msgspec

try:  # POSIX; elsewhere the journal runs without the single-owner lock
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger("packetflow.gateway.journal")

# Finished molecules kept in the journal (their final state answers GET /v1/molecules/{id}
# after a restart). Past this, the oldest finished rows are deleted.
JOURNAL_KEEP_FINISHED: Final = 10_000
# Pruning runs every this many finishes: one DELETE per hundred molecules, not per one.
PRUNE_EVERY_FINISHES: Final = 100
# How long a commit waits for a lock someone else holds on the file (a backup, an sqlite3
# shell) before it fails. The journal runs on the event loop, so this stalls the gateway:
# sqlite3's default of 5 s would freeze routing that long; a commit that cannot get the
# lock this quickly fails, and the molecules it held stop with PF503 (coordinator.py).
BUSY_TIMEOUT_S: Final = 0.5
# Page cache per connection (SQLite defaults to 2 MiB each): the journal is written, read
# back only on start-up and for old molecules, and a smaller cache keeps the gateway's
# memory from creeping up by 4 MiB as the file grows.
CACHE_KIB: Final = 256
# The checkpointer thread is woken after this many commits: a 4-stage molecule commits
# about 5 times and writes ~3 pages each, so about SQLite's own default of 1,000 pages.
CHECKPOINT_EVERY_COMMITS: Final = 256
SYNC_MODES: Final = ("OFF", "NORMAL", "FULL", "EXTRA")
DEFAULT_SYNC: Final = "NORMAL"
SYNC_ENV: Final = "PACKETFLOW_JOURNAL_SYNC"

_encoder: Final = msgspec.json.Encoder()
_decoder: Final = msgspec.json.Decoder()


class BlobCipher(Protocol):
    """Encryption at rest for the journal's blobs (security/crypto.py AtRestCipher)."""

    def encrypt(self, plain: bytes) -> bytes: ...
    def decrypt(self, blob: bytes) -> bytes: ...


class JournalError(Exception):
    """The journal could not be read or written (the SQLite error is chained)."""


@dataclass(frozen=True, slots=True)
class JournalEvent:
    """One row of the event log. ``body`` is the JSON bytes the coordinator stored (a
    result, an ERROR payload, ...) or None."""

    kind: str
    packet_id: str | None
    at: float
    reactor_id: str | None = None
    retryable: bool | None = None
    body: bytes | None = None

    def decoded(self) -> Any:
        return None if self.body is None else _decoder.decode(self.body)


@dataclass(frozen=True, slots=True)
class StoredMolecule:
    """A molecule as the journal holds it: the checkpoint and the events after it."""

    molecule_id: str
    run_token: str
    checkpoint: dict[str, Any]
    meta: dict[str, Any]
    status: str | None
    created_at: float
    finished_at: float | None
    events: list[JournalEvent] = field(default_factory=list)


class MoleculeJournal(Protocol):
    """What the coordinator needs from a journal. Writes are buffered until ``commit``."""

    def open(self) -> list[StoredMolecule]:
        """Open (creating if needed) and return the unfinished molecules, oldest first."""
        ...

    def begin(
        self,
        molecule_id: str,
        run_token: str,
        checkpoint: dict[str, Any],
        meta: dict[str, Any],
        now: float,
    ) -> None:
        """A new molecule run (replacing a finished one of the same id)."""
        ...

    def record(self, molecule_id: str, event: JournalEvent) -> None: ...

    def checkpoint(self, molecule_id: str, snapshot: dict[str, Any], now: float) -> None:
        """Fold the events so far into ``snapshot`` (the planner's state now)."""
        ...

    def update_meta(self, molecule_id: str, meta: dict[str, Any]) -> None: ...

    def finish(
        self, molecule_id: str, status: str, snapshot: dict[str, Any], now: float
    ) -> None: ...

    def commit(self) -> None:
        """Write everything buffered in one transaction. Raises JournalError."""
        ...

    def load(self, molecule_id: str) -> StoredMolecule | None: ...

    def close(self) -> None: ...


@runtime_checkable
class AsyncJournal(MoleculeJournal, Protocol):
    """A journal across the network (NATS JetStream): opened, committed and read with
    awaits. The coordinator ``stage``s a commit (everything buffered so far belongs to
    it), then awaits ``commit_async`` while later writes buffer for the next one."""

    async def open_async(self) -> list[StoredMolecule]: ...

    def stage(self) -> None: ...

    async def commit_async(self) -> None:
        """Write what ``stage`` took. Raises JournalError."""
        ...

    async def load_async(self, molecule_id: str) -> StoredMolecule | None: ...

    def claimed_by(self, molecule_id: str) -> str | None:
        """The gateway whose unfinished run of ``molecule_id`` this journal knows of, if
        any (it may be this one, between a lapsed lease and the take-over)."""
        ...


def sync_mode(value: str | None = None) -> str:
    """The ``synchronous`` pragma to use: ``value``, else $PACKETFLOW_JOURNAL_SYNC, else
    NORMAL. Raises ValueError for anything but OFF, NORMAL, FULL or EXTRA."""
    mode = (value or os.environ.get(SYNC_ENV) or DEFAULT_SYNC).upper()
    if mode not in SYNC_MODES:
        raise ValueError(f"journal synchronous mode {mode!r} is not one of {SYNC_MODES}")
    return mode


_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS molecules (
    molecule_id TEXT PRIMARY KEY,
    run_token   TEXT NOT NULL,
    status      TEXT,
    checkpoint  BLOB NOT NULL,
    meta        BLOB NOT NULL,
    created_at  REAL NOT NULL,
    updated_at  REAL NOT NULL,
    finished_at REAL
);
CREATE INDEX IF NOT EXISTS molecules_finished ON molecules(finished_at)
    WHERE status IS NOT NULL;
CREATE TABLE IF NOT EXISTS events (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    molecule_id TEXT NOT NULL,
    kind        TEXT NOT NULL,
    packet_id   TEXT,
    at          REAL NOT NULL,
    reactor_id  TEXT,
    retryable   INTEGER,
    body        BLOB
);
CREATE INDEX IF NOT EXISTS events_by_molecule ON events(molecule_id, seq);
"""

_INSERT_EVENT: Final = (
    "INSERT INTO events (molecule_id, kind, packet_id, at, reactor_id, retryable, body) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)


class _Checkpointer:
    """``PRAGMA wal_checkpoint(PASSIVE)`` on a connection and thread of its own, whenever
    asked: the copy and its fsyncs happen while the event loop goes on (sqlite3 releases
    the GIL), and a PASSIVE checkpoint never blocks the writer."""

    def __init__(self, path: Path, synchronous: str) -> None:
        self._wake = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, args=(path, synchronous),
                                        name="journal-checkpoint", daemon=True)  # fmt: skip
        self._thread.start()

    def request(self) -> None:
        self._wake.set()

    def _run(self, path: Path, synchronous: str) -> None:
        try:
            db = sqlite3.connect(path, isolation_level=None, timeout=BUSY_TIMEOUT_S)
        except sqlite3.Error as exc:
            log.error("molecule journal: no checkpoint connection (%s); the WAL grows", exc)
            return
        try:
            db.execute(f"PRAGMA synchronous={synchronous}")
            db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
            while True:
                self._wake.wait()
                self._wake.clear()
                if self._stopping:
                    return
                try:
                    db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error as exc:  # busy or I/O: the next request tries again
                    log.warning("molecule journal: checkpoint failed: %s", exc)
        finally:
            db.close()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        self._thread.join(BUSY_TIMEOUT_S + 5.0)


class SqliteJournal:
    """``MoleculeJournal`` on one SQLite file (see the module docstring for the policy).

    Not thread-safe by design: the gateway calls it from its event loop thread only.
    """

    def __init__(
        self, path: Path, *, synchronous: str | None = None, cipher: BlobCipher | None = None
    ) -> None:
        self.path = Path(path)
        # §11.3.1 at rest: checkpoints (the molecule with its packets' data), metadata and
        # event bodies (results) are sealed; ids, kinds and times stay clear for queries.
        self._cipher = cipher
        self.synchronous = sync_mode(synchronous)
        self._db: sqlite3.Connection | None = None
        self._lock: int | None = None
        self._ops: list[tuple[str, tuple[Any, ...]]] = []
        self._finishes = 0
        self._commits = 0
        self._checkpointer: _Checkpointer | None = None

    # ------------------------------------------------------------------ lifecycle

    def open(self) -> list[StoredMolecule]:
        """Open the file (creating it) and return the unfinished molecules.

        Raises JournalError if it cannot be opened or another gateway holds it: two
        gateways sharing one journal would both resume the same molecules. The lock is an
        flock on ``<path>.lock``, which the kernel releases when the process dies.
        """
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._take_lock()
            # isolation_level=None: transactions are explicit (BEGIN ... COMMIT in commit()).
            db = sqlite3.connect(self.path, isolation_level=None, timeout=BUSY_TIMEOUT_S)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={self.synchronous}")
            db.execute("PRAGMA wal_autocheckpoint=0")  # _Checkpointer's job
            db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
            db.executescript(_SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            self._release_lock()
            raise JournalError(f"cannot open molecule journal {self.path}: {exc}") from exc
        self._db = db
        self._checkpointer = _Checkpointer(self.path, self.synchronous)
        return self._unfinished()

    def close(self) -> None:
        if self._db is None:
            return
        try:
            if self._ops:
                self.commit()
        except JournalError as exc:
            log.error("molecule journal: last commit failed on close: %s", exc)
        finally:
            if self._checkpointer is not None:
                self._checkpointer.stop()
                self._checkpointer = None
            self._db.close()  # the last connection to close checkpoints what is left
            self._db = None
            self._release_lock()

    def _take_lock(self) -> None:
        if fcntl is None:
            return
        fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise JournalError(
                f"molecule journal {self.path} is in use by another gateway (pid {owner}); "
                "give each gateway its own --data-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._lock = fd

    def _release_lock(self) -> None:
        if self._lock is not None:
            os.close(self._lock)  # closing the descriptor drops the flock
            self._lock = None

    @property
    def is_open(self) -> bool:
        return self._db is not None

    # ------------------------------------------------------------------ buffered writes

    def begin(
        self,
        molecule_id: str,
        run_token: str,
        checkpoint: dict[str, Any],
        meta: dict[str, Any],
        now: float,
    ) -> None:
        # A finished molecule of the same id is replaced: its events went at its finish.
        self._ops.append(("DELETE FROM events WHERE molecule_id = ?", (molecule_id,)))
        self._ops.append((
            "INSERT OR REPLACE INTO molecules (molecule_id, run_token, status, checkpoint, "
            "meta, created_at, updated_at, finished_at) VALUES (?, ?, NULL, ?, ?, ?, ?, NULL)",
            (molecule_id, run_token, self._seal(checkpoint), self._seal(meta), now, now),
        ))  # fmt: skip

    def record(self, molecule_id: str, event: JournalEvent) -> None:
        retryable = None if event.retryable is None else int(event.retryable)
        self._ops.append((
            _INSERT_EVENT,
            (molecule_id, event.kind, event.packet_id, event.at, event.reactor_id, retryable,
             self._seal_bytes(event.body)),
        ))  # fmt: skip

    def checkpoint(self, molecule_id: str, snapshot: dict[str, Any], now: float) -> None:
        self._ops.append((
            "UPDATE molecules SET checkpoint = ?, updated_at = ? WHERE molecule_id = ?",
            (self._seal(snapshot), now, molecule_id),
        ))  # fmt: skip
        self._ops.append(("DELETE FROM events WHERE molecule_id = ?", (molecule_id,)))

    def update_meta(self, molecule_id: str, meta: dict[str, Any]) -> None:
        self._ops.append((
            "UPDATE molecules SET meta = ? WHERE molecule_id = ?",
            (self._seal(meta), molecule_id),
        ))  # fmt: skip

    def finish(self, molecule_id: str, status: str, snapshot: dict[str, Any], now: float) -> None:
        self._ops.append((
            "UPDATE molecules SET status = ?, checkpoint = ?, updated_at = ?, finished_at = ? "
            "WHERE molecule_id = ?",
            (status, self._seal(snapshot), now, now, molecule_id),
        ))  # fmt: skip
        self._ops.append(("DELETE FROM events WHERE molecule_id = ?", (molecule_id,)))
        self._finishes += 1
        if self._finishes % PRUNE_EVERY_FINISHES == 0:
            self._ops.append((
                "DELETE FROM molecules WHERE molecule_id IN (SELECT molecule_id FROM "
                "molecules WHERE status IS NOT NULL ORDER BY finished_at DESC "
                "LIMIT -1 OFFSET ?)",
                (JOURNAL_KEEP_FINISHED,),
            ))  # fmt: skip

    @property
    def pending(self) -> int:
        """Writes buffered since the last commit."""
        return len(self._ops)

    def commit(self) -> None:
        """Write the buffered operations in one transaction; on failure nothing of them is
        written, the buffer is dropped, and JournalError says why."""
        if not self._ops:
            return
        db = self._require()
        ops, self._ops = self._ops, []
        try:
            db.execute("BEGIN")
            for sql, args in _runs(ops):
                if isinstance(args, list):
                    db.executemany(sql, args)
                else:
                    db.execute(sql, args)
            db.execute("COMMIT")
            self._commits += 1
            if self._commits % CHECKPOINT_EVERY_COMMITS == 0 and self._checkpointer is not None:
                self._checkpointer.request()
        except sqlite3.Error as exc:
            # The rollback can fail too (a closed or vanished database): the caller must
            # still get the JournalError it handles, never a raw sqlite3 error.
            try:
                if db.in_transaction:
                    db.execute("ROLLBACK")
            except sqlite3.Error as rollback:
                log.error("molecule journal: rollback failed too: %s", rollback)
            raise JournalError(f"molecule journal commit failed: {exc}") from exc

    # ------------------------------------------------------------------ reads

    def load(self, molecule_id: str) -> StoredMolecule | None:
        """One molecule with its events (any status); None if the journal has none."""
        db = self._require()
        try:
            row = db.execute(
                "SELECT molecule_id, run_token, status, checkpoint, meta, created_at, "
                "finished_at FROM molecules WHERE molecule_id = ?",
                (molecule_id,),
            ).fetchone()
            if row is None:
                return None
            return self._stored(row, self._events(molecule_id))
        except sqlite3.Error as exc:
            raise JournalError(f"molecule journal read failed: {exc}") from exc

    def _unfinished(self) -> list[StoredMolecule]:
        db = self._require()
        try:
            rows = db.execute(
                "SELECT molecule_id, run_token, status, checkpoint, meta, created_at, "
                "finished_at FROM molecules WHERE status IS NULL ORDER BY created_at"
            ).fetchall()
            return [self._stored(row, self._events(row[0])) for row in rows]
        except sqlite3.Error as exc:
            raise JournalError(f"molecule journal read failed: {exc}") from exc

    def _events(self, molecule_id: str) -> list[JournalEvent]:
        db = self._require()
        rows = db.execute(
            "SELECT kind, packet_id, at, reactor_id, retryable, body FROM events "
            "WHERE molecule_id = ? ORDER BY seq",
            (molecule_id,),
        ).fetchall()
        return [
            JournalEvent(kind, pid, at, rid, None if retry is None else bool(retry),
                         None if body is None else self._open(bytes(body)))
            for kind, pid, at, rid, retry, body in rows
        ]  # fmt: skip

    def _seal(self, value: Any) -> bytes:
        raw = _encoder.encode(value)
        return raw if self._cipher is None else self._cipher.encrypt(raw)

    def _seal_bytes(self, raw: bytes | None) -> bytes | None:
        return raw if raw is None or self._cipher is None else self._cipher.encrypt(raw)

    def _open(self, blob: bytes | str) -> bytes:
        raw = blob.encode() if isinstance(blob, str) else bytes(blob)
        if self._cipher is None:
            return raw
        try:
            return self._cipher.decrypt(raw)
        except ValueError as exc:
            raise JournalError(f"molecule journal {self.path}: {exc}") from exc

    def _stored(self, row: tuple[Any, ...], events: list[JournalEvent]) -> StoredMolecule:
        mid, token, status, checkpoint, meta, created, finished = row
        return StoredMolecule(
            molecule_id=mid, run_token=token, checkpoint=_decoder.decode(self._open(checkpoint)),
            meta=_decoder.decode(self._open(meta)), status=status, created_at=created,
            finished_at=finished, events=events,
        )  # fmt: skip

    def _require(self) -> sqlite3.Connection:
        if self._db is None:
            raise JournalError("the molecule journal is not open")
        return self._db


def _runs(
    ops: Iterable[tuple[str, tuple[Any, ...]]],
) -> list[tuple[str, tuple[Any, ...] | list[tuple[Any, ...]]]]:
    """Consecutive event inserts become one executemany (most of a batch is those)."""
    out: list[tuple[str, tuple[Any, ...] | list[tuple[Any, ...]]]] = []
    for sql, args in ops:
        if sql is _INSERT_EVENT and out and out[-1][0] is _INSERT_EVENT:
            last = out[-1][1]
            assert isinstance(last, list)
            last.append(args)
        elif sql is _INSERT_EVENT:
            out.append((sql, [args]))
        else:
            out.append((sql, args))
    return out
