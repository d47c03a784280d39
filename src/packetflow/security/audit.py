"""The §11.4.1 audit log: JSON lines with ``timestamp, user_id, action, resource, result,
source_ip, user_agent``, written to a size-rotated file by a background thread.

The event loop only appends a dict to a bounded deque (no I/O per packet); a writer thread
wakes every ``FLUSH_INTERVAL_S`` (or when the buffer is half full) and writes the batch.
A buffer that overflows drops its oldest lines and counts them in ``dropped`` (and the next
flush writes an ``audit_lines_dropped`` line), so a flood cannot exhaust memory. Packet
data never reaches this module in clear: callers pass ``digest(data)``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import threading
from collections import deque
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

log = logging.getLogger("packetflow.audit")

# Lines waiting for the writer thread; at ~300 bytes a line, ~15 MiB at most.
MAX_BUFFERED_LINES: Final = 50_000
# How often the writer thread flushes: an audit trail a second behind is fine, an fsync per
# packet is not.
FLUSH_INTERVAL_S: Final = 0.2
# Size-based rotation (logrotate-style): audit.log -> audit.log.1 ... audit.log.N.
DEFAULT_MAX_BYTES: Final = 64 * 1024 * 1024
DEFAULT_BACKUPS: Final = 5
REQUIRED_FIELDS: Final = (
    "timestamp",
    "user_id",
    "action",
    "resource",
    "result",
    "source_ip",
    "user_agent",
)


def digest(data: bytes | str) -> str:
    """``sha256:<hex>`` of packet data: lets an auditor match a line to a payload they
    hold without the log holding the payload (§11.4.1 "hash_or_redact")."""
    raw = data.encode() if isinstance(data, str) else data
    return "sha256:" + hashlib.sha256(raw).hexdigest()


class AuditLog:
    def __init__(
        self,
        path: Path | None,
        *,
        to_stdout: bool = False,
        max_bytes: int = DEFAULT_MAX_BYTES,
        backups: int = DEFAULT_BACKUPS,
        max_buffered: int = MAX_BUFFERED_LINES,
    ) -> None:
        self.path = path
        self.to_stdout = to_stdout
        self.max_bytes = max_bytes
        self.backups = backups
        self.dropped = 0
        self.written = 0
        self._buffer: deque[dict[str, Any]] = deque(maxlen=max_buffered)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = False
        self._thread: threading.Thread | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)

    @property
    def enabled(self) -> bool:
        return self.path is not None or self.to_stdout

    def start(self) -> None:
        if self.enabled and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="packetflow-audit", daemon=True)
            self._thread.start()

    def close(self) -> None:
        """Write what is buffered and stop the writer (blocks briefly: call at shutdown)."""
        self._stop = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None
        self.flush()

    def record(
        self,
        action: str,
        resource: str,
        result: str,
        *,
        user_id: str | None,
        source_ip: str | None = None,
        user_agent: str | None = None,
        **extra: Any,
    ) -> None:
        """Queue one line. Never blocks on I/O; safe from the event loop."""
        if not self.enabled:
            return
        line = {
            "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "user_id": user_id,
            "action": action,
            "resource": resource,
            "result": result,
            "source_ip": source_ip,
            "user_agent": user_agent,
            **extra,
        }
        buffer = self._buffer
        if len(buffer) == buffer.maxlen:
            self.dropped += 1  # deque(maxlen) drops the oldest on append
        buffer.append(line)
        if len(buffer) * 2 >= (buffer.maxlen or 1):
            self._wake.set()

    def _run(self) -> None:
        while not self._stop:
            self._wake.wait(FLUSH_INTERVAL_S)
            self._wake.clear()
            try:
                self.flush()
            except OSError as exc:  # a full disk must not kill the gateway; say it loudly
                log.error("audit log %s: write failed: %s", self.path, exc)

    def flush(self) -> None:
        with self._lock:
            lines: list[dict[str, Any]] = []
            while self._buffer:
                lines.append(self._buffer.popleft())
            if self.dropped:
                lines.append(
                    {
                        "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds"),
                        "user_id": None,
                        "action": "audit_lines_dropped",
                        "resource": "audit",
                        "result": "error",
                        "source_ip": None,
                        "user_agent": None,
                        "count": self.dropped,
                    }
                )
                self.dropped = 0
            if not lines:
                return
            text = "".join(
                json.dumps(line, separators=(",", ":"), default=str) + "\n" for line in lines
            )
            if self.to_stdout:
                sys.stdout.write(text)
                sys.stdout.flush()
            if self.path is not None:
                self._rotate_if_needed(len(text))
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                try:
                    os.write(fd, text.encode())
                finally:
                    os.close(fd)
            self.written += len(lines)

    def _rotate_if_needed(self, incoming: int) -> None:
        assert self.path is not None
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return
        if size + incoming <= self.max_bytes:
            return
        for n in range(self.backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{n}")
            if older.exists():
                older.replace(self.path.with_name(f"{self.path.name}.{n + 1}"))
        if self.backups > 0:
            self.path.replace(self.path.with_name(f"{self.path.name}.1"))
        else:
            self.path.unlink()
