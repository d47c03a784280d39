"""§11.4.1 audit log (security/audit.py): fields, hashing, rotation, bounded buffer."""

from __future__ import annotations

import json
from pathlib import Path

from packetflow.security.audit import REQUIRED_FIELDS, AuditLog, digest


def lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_lines_carry_the_required_fields_pfap_11_4_1(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "security" / "audit.log")
    log.record("deny", "cf:shutdown", "denied", user_id="key:u", source_ip="10.0.0.1",
               user_agent="pytest", required_permission="cf:shutdown")  # fmt: skip
    log.flush()
    (line,) = lines(tmp_path / "security" / "audit.log")
    assert set(REQUIRED_FIELDS) <= set(line)
    assert line["user_id"] == "key:u" and line["result"] == "denied"
    assert (tmp_path / "security" / "audit.log").stat().st_mode & 0o777 == 0o600


def test_packet_data_is_hashed_never_clear() -> None:
    assert digest(b'{"ssn":"123"}').startswith("sha256:")
    assert "123" not in digest(b'{"ssn":"123"}')
    assert digest("x") == digest(b"x")


def test_writer_thread_flushes_and_close_drains(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.log")
    log.start()
    for n in range(100):
        log.record("submit", "cf:ping", "accepted", user_id=f"key:{n}")
    log.close()
    assert len(lines(tmp_path / "audit.log")) == 100


def test_size_rotation_keeps_backups(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    log = AuditLog(path, max_bytes=2000, backups=2)
    for n in range(60):
        log.record("submit", "cf:ping", "accepted", user_id=f"key:{n}")
        log.flush()
    assert path.exists() and (tmp_path / "audit.log.1").exists()
    assert (tmp_path / "audit.log.2").exists() and not (tmp_path / "audit.log.3").exists()
    assert path.stat().st_size <= 2000


def test_full_buffer_drops_oldest_and_says_so(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.log", max_buffered=10)
    for n in range(25):
        log.record("submit", "cf:ping", "accepted", user_id=f"key:{n}")
    log.flush()
    got = lines(tmp_path / "audit.log")
    assert [g["user_id"] for g in got[:10]] == [f"key:{n}" for n in range(15, 25)]
    assert got[-1]["action"] == "audit_lines_dropped" and got[-1]["count"] == 15


def test_disabled_log_records_nothing() -> None:
    log = AuditLog(None)
    log.record("deny", "x", "denied", user_id="u")
    log.flush()
    assert log.written == 0
