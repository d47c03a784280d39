"""§11.3.1 at rest: the molecule journal seals checkpoints, metadata and results
(gateway/journal.py with security/crypto.py's AtRestCipher)."""

from __future__ import annotations

from pathlib import Path

import pytest

from packetflow.gateway.journal import JournalError, JournalEvent, SqliteJournal
from packetflow.security.crypto import AtRestCipher

SECRET = "Ocelot-Marimba-9921"


def file_bytes(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*") if p.is_file())


def write_one(path: Path, cipher: AtRestCipher | None) -> None:
    journal = SqliteJournal(path, cipher=cipher)
    journal.open()
    journal.begin("m", "tok", {"packets": [{"data": {"ssn": SECRET}}]}, {"who": SECRET}, 1.0)
    journal.record("m", JournalEvent("packet_succeeded", "a", 2.0, "r1", None,
                                     f'{{"echo":"{SECRET}"}}'.encode()))  # fmt: skip
    journal.commit()
    journal.close()


def test_sealed_on_disk_and_readable_with_the_key(tmp_path: Path) -> None:
    cipher = AtRestCipher(b"journal key")
    path = tmp_path / "j.sqlite3"
    write_one(path, cipher)
    assert SECRET.encode() not in file_bytes(path)
    reopened = SqliteJournal(path, cipher=cipher)
    (stored,) = reopened.open()
    assert stored.checkpoint["packets"][0]["data"]["ssn"] == SECRET
    assert stored.meta == {"who": SECRET}
    assert stored.events[0].decoded() == {"echo": SECRET}
    reopened.close()
    wrong = SqliteJournal(path, cipher=AtRestCipher(b"other key"))
    with pytest.raises(JournalError, match="cannot be decrypted"):
        wrong.open()
    wrong.close()


def test_without_a_key_the_journal_is_clear(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    write_one(path, None)
    assert SECRET.encode() in file_bytes(path)  # what the key protects against
