"""The logger aiohttp's servers report failed requests to: a client's malformed request (a
header over 8 KiB, a garbled request line) is one WARNING line, at most one a second,
instead of an ERROR with a traceback that any anonymous client could repeat to flood the
log. Failures of our own handlers (a bug) keep their traceback."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from aiohttp.http_exceptions import HttpProcessingError

LOGGER_NAME = "packetflow.http"
# Like the gateway's "refusing clients" line: one line a second says it all under a flood.
INTERVAL_S = 1.0


class ClientFaults(logging.Filter):
    """Turns a record about a client's malformed request into one WARNING line and drops
    the rest of them within ``interval_s``; the next line counts what was dropped."""

    def __init__(
        self, interval_s: float = INTERVAL_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self.interval_s = interval_s
        self.clock = clock
        self._last: float | None = None
        self.suppressed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, HttpProcessingError):
            return True  # not the client's fault: keep the record as it is
        now = self.clock()
        if self._last is not None and now - self._last < self.interval_s:
            self.suppressed += 1
            return False
        self._last = now
        remote = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
        more = f" ({self.suppressed} more since the last line)" if self.suppressed else ""
        self.suppressed = 0
        # aiohttp logs some of these at DEBUG (non-HTTP bytes on a fresh connection): never
        # raise a record's level, only lower an ERROR to a WARNING.
        record.levelno = min(record.levelno, logging.WARNING)
        record.levelname = logging.getLevelName(record.levelno)
        record.msg = "refused a malformed HTTP request from %s (%d): %s%s"
        record.args = (remote, exc.code, exc.message.partition("\n")[0][:200], more)
        record.exc_info = record.exc_text = None
        return True


def server_logger() -> logging.Logger:
    """The logger to give ``web.AppRunner(logger=...)``; its filter is installed once."""
    logger = logging.getLogger(LOGGER_NAME)
    if not any(isinstance(f, ClientFaults) for f in logger.filters):
        logger.addFilter(ClientFaults())
    return logger
