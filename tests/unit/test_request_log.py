"""request_log: a client's malformed HTTP request is one WARNING line a second, never a
traceback; our own handlers' failures keep theirs."""

from __future__ import annotations

import logging

from aiohttp.http_exceptions import BadStatusLine, HttpProcessingError, LineTooLong

from packetflow.request_log import ClientFaults, server_logger


def record(exc: BaseException, level: int = logging.ERROR) -> logging.LogRecord:
    return logging.LogRecord("packetflow.http", level, __file__, 1,
                             "Error handling request from %s", ("10.0.0.7",),
                             (type(exc), exc, None))  # fmt: skip


def test_a_flood_of_malformed_requests_is_one_line_a_second() -> None:
    now = [100.0]
    faults = ClientFaults(interval_s=1.0, clock=lambda: now[0])
    first = record(LineTooLong("Got more than 8190 bytes when reading", "8190"))
    assert faults.filter(first)
    assert first.levelno == logging.WARNING and first.exc_info is None
    assert first.getMessage().startswith("refused a malformed HTTP request from 10.0.0.7 (400)")
    assert "8190" in first.getMessage()
    for _ in range(50):  # within the same second: dropped, counted
        now[0] += 0.01
        assert not faults.filter(record(BadStatusLine("GARBAGE")))
    now[0] += 1.0
    later = record(BadStatusLine("GARBAGE"))
    assert faults.filter(later)
    assert later.getMessage().endswith("(50 more since the last line)")


def test_a_debug_record_stays_debug_and_an_empty_reason_is_fine() -> None:
    faults = ClientFaults(clock=lambda: 0.0)
    quiet = record(HttpProcessingError(code=400, message=""), logging.DEBUG)
    assert faults.filter(quiet)
    assert quiet.levelno == logging.DEBUG and quiet.exc_info is None
    assert quiet.getMessage() == "refused a malformed HTTP request from 10.0.0.7 (400): "


def test_our_own_failures_keep_their_traceback() -> None:
    faults = ClientFaults(clock=lambda: 0.0)
    bug = record(KeyError("reactor-1"))
    assert faults.filter(bug) and faults.filter(record(KeyError("again")))
    assert bug.levelno == logging.ERROR and bug.exc_info is not None


def test_the_filter_is_installed_once() -> None:
    server_logger()
    logger = server_logger()
    assert sum(isinstance(f, ClientFaults) for f in logger.filters) == 1
