"""Packet rules: the §5.2 element tables, Appendix C timeouts and caps, and the DESIGN §4
defaults and limits for ids, priorities and timeouts.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from .errors import InvalidPacket, invalid_field


@dataclass(frozen=True, slots=True)
class ElementRow:
    """One row of a §5.2 table: default priority and timeout (None = ∞)."""

    priority: int
    timeout_ms: int | None


_S = 1000

# §5.2.1-§5.2.6, every row.
STANDARD_ELEMENTS: Final[Mapping[str, Mapping[str, ElementRow]]] = {
    "cf": {
        "ping": ElementRow(10, 5 * _S),
        "health": ElementRow(10, 10 * _S),
        "shutdown": ElementRow(10, 30 * _S),
        "restart": ElementRow(9, 30 * _S),
        "coordinate": ElementRow(8, 60 * _S),
        "introspect": ElementRow(8, 15 * _S),
    },
    "df": {
        "transform": ElementRow(7, 30 * _S),
        "validate": ElementRow(8, 15 * _S),
        "aggregate": ElementRow(6, 60 * _S),
        "filter": ElementRow(6, 30 * _S),
        "map": ElementRow(6, 30 * _S),
        "reduce": ElementRow(5, 120 * _S),
    },
    "ed": {
        "signal": ElementRow(9, 5 * _S),
        "subscribe": ElementRow(7, 30 * _S),
        "publish": ElementRow(8, 10 * _S),
        "trigger": ElementRow(9, 5 * _S),
        "listen": ElementRow(6, None),
    },
    "co": {
        "broadcast": ElementRow(6, 30 * _S),
        "consensus": ElementRow(8, 60 * _S),
        "sync": ElementRow(7, 45 * _S),
        "gather": ElementRow(6, 60 * _S),
        "scatter": ElementRow(6, 30 * _S),
    },
    "mc": {
        "optimize": ElementRow(5, 300 * _S),
        "analyze": ElementRow(4, 180 * _S),
        "learn": ElementRow(3, 600 * _S),
        "adapt": ElementRow(5, 120 * _S),
        "predict": ElementRow(4, 90 * _S),
    },
    "rm": {
        "allocate": ElementRow(8, 30 * _S),
        "deallocate": ElementRow(8, 15 * _S),
        "monitor": ElementRow(6, 10 * _S),
        "scale": ElementRow(7, 60 * _S),
        "balance": ElementRow(6, 45 * _S),
    },
}

# Appendix C: (default, max) per group:element.
APPENDIX_C_TIMEOUTS: Final[Mapping[tuple[str, str], tuple[int, int]]] = {
    ("cf", "ping"): (5 * _S, 30 * _S),
    ("cf", "health"): (10 * _S, 60 * _S),
    ("cf", "introspect"): (15 * _S, 60 * _S),
    ("df", "transform"): (30 * _S, 300 * _S),
    ("df", "validate"): (15 * _S, 120 * _S),
    ("ed", "signal"): (5 * _S, 30 * _S),
    ("co", "broadcast"): (30 * _S, 180 * _S),
    ("mc", "optimize"): (300 * _S, 1800 * _S),
    ("rm", "allocate"): (30 * _S, 120 * _S),
}

DEFAULT_PRIORITY: Final = 5  # DESIGN §4: elements outside §5.2
DEFAULT_TIMEOUT_MS: Final = 30 * _S  # DESIGN §4: elements in neither table
MAX_TIMEOUT_FACTOR: Final = 10  # DESIGN §4: elements without an Appendix C max: 10 × default
LISTEN_CAP_MS: Final = 3600 * _S  # DESIGN §4: ed:listen has no default limit, capped at 1 h
PRIORITY_MIN: Final = 1
PRIORITY_MAX: Final = 10
PACKET_ID_MAX_LEN: Final = 128  # DESIGN §4

ELEMENT_NAME: Final = re.compile(r"[a-z][a-z0-9_]*\Z")


def default_priority(group: str, element: str) -> int:
    """The element's §5.2 priority, else 5 (DESIGN §4)."""
    row = STANDARD_ELEMENTS.get(group, {}).get(element)
    return row.priority if row else DEFAULT_PRIORITY


def default_timeout_ms(group: str, element: str) -> int | None:
    """Appendix C's default, else §5.2's, else 30 s; None for ed:listen (∞)."""
    appendix = APPENDIX_C_TIMEOUTS.get((group, element))
    if appendix:
        return appendix[0]
    row = STANDARD_ELEMENTS.get(group, {}).get(element)
    if row:
        return row.timeout_ms
    return DEFAULT_TIMEOUT_MS


def max_timeout_ms(group: str, element: str) -> int:
    """Appendix C's max, else 10 × the default; ed:listen (∞ default) caps at 1 h."""
    appendix = APPENDIX_C_TIMEOUTS.get((group, element))
    if appendix:
        return appendix[1]
    default = default_timeout_ms(group, element)
    if default is None:
        return LISTEN_CAP_MS
    return default * MAX_TIMEOUT_FACTOR


def effective_timeout_ms(
    group: str, element: str, requested: int | None, ttl_remaining_ms: int | None = None
) -> int:
    """The timeout a packet runs under: requested or default, capped by Appendix C and by
    the envelope's remaining TTL (DESIGN §3)."""
    timeout = requested if requested is not None else default_timeout_ms(group, element)
    cap = max_timeout_ms(group, element)
    if timeout is None or timeout > cap:
        timeout = cap
    if ttl_remaining_ms is not None and ttl_remaining_ms < timeout:
        timeout = ttl_remaining_ms
    return timeout


def validate_element(element: str, path: str = "payload.packet.element") -> None:
    if not ELEMENT_NAME.match(element):
        raise invalid_field(path, "string matching [a-z][a-z0-9_]*", repr(element), "pattern")


def validate_priority(priority: int, path: str = "payload.packet.priority") -> None:
    if not PRIORITY_MIN <= priority <= PRIORITY_MAX:
        raise invalid_field(path, f"int {PRIORITY_MIN}-{PRIORITY_MAX}", f"int {priority}", "range")


def validate_packet_id(packet_id: str, path: str = "payload.packet.id") -> None:
    if not 1 <= len(packet_id) <= PACKET_ID_MAX_LEN:
        raise invalid_field(
            path,
            f"string of 1-{PACKET_ID_MAX_LEN} chars",
            f"string of {len(packet_id)} chars",
            "length",
        )


def validate_timeout(timeout_ms: int, path: str = "payload.packet.timeout_ms") -> None:
    if timeout_ms <= 0:
        raise invalid_field(path, "positive int", f"int {timeout_ms}", "range")


def unknown_group(group: str, path: str = "payload.packet.group") -> InvalidPacket:
    return invalid_field(path, "one of cf, df, ed, co, mc, rm", repr(group), "enum")
