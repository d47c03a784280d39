"""The SQLite molecule journal (gateway/journal.py): WAL and the stated fsync policy,
buffered writes committed atomically, checkpoints folding events, unfinished molecules on
open, pruning of finished ones (DESIGN §6, §7 durability)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from packetflow.gateway import journal as jmod
from packetflow.gateway.journal import JournalError, JournalEvent, SqliteJournal, sync_mode


def test_open_uses_wal_and_the_configured_synchronous_mode(tmp_path: Path) -> None:
    journal = SqliteJournal(tmp_path / "sub" / "j.sqlite3", synchronous="FULL")
    assert journal.open() == []
    db = journal._require()
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    journal.close()
    default = SqliteJournal(tmp_path / "d.sqlite3")
    default.open()
    assert default._require().execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    default.close()


def test_sync_mode_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(jmod.SYNC_ENV, "full")
    assert sync_mode() == "FULL"
    assert sync_mode("normal") == "NORMAL"
    with pytest.raises(ValueError):
        sync_mode("sometimes")


def test_writes_are_buffered_until_commit_and_survive_reopen(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    journal = SqliteJournal(path)
    journal.open()
    journal.begin("m", "run1", {"format": 1, "x": 1}, {"initiated_by": "msg_1"}, 10.0)
    journal.record("m", JournalEvent("molecule_started", None, 10.0))
    journal.record("m", JournalEvent("packet_succeeded", "a", 11.0, "r1", None, b'{"v":1}'))
    assert journal.pending == 4  # begin = delete old events + insert
    with sqlite3.connect(path) as other:
        assert other.execute("SELECT COUNT(*) FROM molecules").fetchone()[0] == 0
    journal.commit()
    journal.close()

    reopened = SqliteJournal(path)
    (stored,) = reopened.open()
    assert stored.molecule_id == "m" and stored.run_token == "run1" and stored.status is None
    assert stored.checkpoint == {"format": 1, "x": 1}
    assert stored.meta == {"initiated_by": "msg_1"}
    assert [e.kind for e in stored.events] == ["molecule_started", "packet_succeeded"]
    assert stored.events[1].decoded() == {"v": 1} and stored.events[1].reactor_id == "r1"
    reopened.close()


def test_a_failed_commit_writes_nothing_of_its_batch(tmp_path: Path) -> None:
    journal = SqliteJournal(tmp_path / "j.sqlite3")
    journal.open()
    journal.begin("m", "run1", {}, {}, 1.0)
    journal._ops.append(("INSERT INTO no_such_table VALUES (1)", ()))
    with pytest.raises(JournalError):
        journal.commit()
    assert journal.load("m") is None
    assert journal.pending == 0
    journal.close()


def test_a_commit_on_a_broken_connection_is_a_journal_error(tmp_path: Path) -> None:
    """The coordinator handles JournalError only: a connection that fails even to roll
    back (closed underneath) must not leak a raw sqlite3 error into its flush."""
    journal = SqliteJournal(tmp_path / "j.sqlite3")
    journal.open()
    journal.begin("m", "run1", {}, {}, 1.0)
    db = journal._db
    assert db is not None
    db.close()
    with pytest.raises(JournalError, match="closed"):
        journal.commit()
    assert journal.pending == 0


def test_checkpoint_and_finish_fold_the_events(tmp_path: Path) -> None:
    journal = SqliteJournal(tmp_path / "j.sqlite3")
    journal.open()
    journal.begin("m", "run1", {"v": 0}, {}, 1.0)
    journal.record("m", JournalEvent("molecule_started", None, 1.0))
    journal.checkpoint("m", {"v": 1}, 2.0)
    journal.record("m", JournalEvent("timer_fired", None, 3.0))
    journal.commit()
    stored = journal.load("m")
    assert stored is not None and stored.checkpoint == {"v": 1}
    assert [e.kind for e in stored.events] == ["timer_fired"]
    journal.finish("m", "timeout", {"v": 2}, 4.0)
    journal.commit()
    stored = journal.load("m")
    assert stored is not None and stored.status == "timeout" and stored.events == []
    assert stored.finished_at == 4.0
    journal.close()
    assert SqliteJournal(tmp_path / "j.sqlite3").open() == []


def test_finished_molecules_are_pruned_past_the_cap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(jmod, "JOURNAL_KEEP_FINISHED", 2)
    monkeypatch.setattr(jmod, "PRUNE_EVERY_FINISHES", 1)
    journal = SqliteJournal(tmp_path / "j.sqlite3")
    journal.open()
    for i in range(4):
        journal.begin(f"m{i}", "r", {}, {}, float(i))
        journal.finish(f"m{i}", "success", {}, float(i))
        journal.commit()
    journal.begin("running", "r", {}, {}, 9.0)
    journal.commit()
    kept = [
        row[0]
        for row in journal._require().execute(
            "SELECT molecule_id FROM molecules ORDER BY molecule_id"
        )
    ]
    assert kept == ["m2", "m3", "running"]
    journal.close()


def test_a_closed_journal_says_so(tmp_path: Path) -> None:
    journal = SqliteJournal(tmp_path / "j.sqlite3")
    with pytest.raises(JournalError):
        journal.load("m")
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    with pytest.raises(JournalError):
        SqliteJournal(blocked / "j.sqlite3").open()


def test_one_gateway_owns_a_journal_at_a_time(tmp_path: Path) -> None:
    """Two gateways on one journal would both resume the same molecules."""
    first = SqliteJournal(tmp_path / "j.sqlite3")
    first.open()
    with pytest.raises(JournalError, match="in use by another gateway"):
        SqliteJournal(tmp_path / "j.sqlite3").open()
    first.close()
    second = SqliteJournal(tmp_path / "j.sqlite3")
    second.open()
    second.close()


def test_checkpoints_run_on_their_own_thread_not_in_a_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The event loop's connection never checkpoints (that copy and its fsyncs stalled
    commits); every CHECKPOINT_EVERY_COMMITS commits the checkpointer thread does, and the
    pages reach the main file while the journal stays open."""
    monkeypatch.setattr(jmod, "CHECKPOINT_EVERY_COMMITS", 4)
    path = tmp_path / "j.sqlite3"
    journal = SqliteJournal(path)
    journal.open()
    try:
        assert journal._require().execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
        before = path.stat().st_size
        for i in range(3):  # under the threshold: everything stays in the WAL
            journal.begin(f"m{i}", "t", {"blob": "x" * 20_000}, {}, 1.0)
            journal.commit()
        assert path.stat().st_size == before
        journal.begin("m3", "t", {"blob": "x" * 20_000}, {}, 1.0)
        journal.commit()  # the 4th: the thread is woken
        deadline = time.monotonic() + 10
        while path.stat().st_size == before:
            assert time.monotonic() < deadline, "no checkpoint reached the main file"
            time.sleep(0.01)
        assert {m.molecule_id for m in journal._unfinished()} == {"m0", "m1", "m2", "m3"}
    finally:
        journal.close()
    assert not journal._checkpointer  # stopped with the journal
