"""Packet rules: every row of PFAP §5.2 and Appendix C, the DESIGN §4 timeout defaults and
caps, and the field validators (PF002 naming the JSON path).

Expected tables are typed out from the spec text, independently of the code.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from packetflow.protocol import errors, packets

# PFAP §5.2.1-§5.2.6: group, element, priority, timeout in seconds (None = ∞).
SPEC_ELEMENTS = [
    # §5.2.1 Control Flow
    ("cf", "ping", 10, 5),
    ("cf", "health", 10, 10),
    ("cf", "shutdown", 10, 30),
    ("cf", "restart", 9, 30),
    ("cf", "coordinate", 8, 60),
    ("cf", "introspect", 8, 15),
    # §5.2.2 Data Flow
    ("df", "transform", 7, 30),
    ("df", "validate", 8, 15),
    ("df", "aggregate", 6, 60),
    ("df", "filter", 6, 30),
    ("df", "map", 6, 30),
    ("df", "reduce", 5, 120),
    # §5.2.3 Event Driven
    ("ed", "signal", 9, 5),
    ("ed", "subscribe", 7, 30),
    ("ed", "publish", 8, 10),
    ("ed", "trigger", 9, 5),
    ("ed", "listen", 6, None),
    # §5.2.4 Collective
    ("co", "broadcast", 6, 30),
    ("co", "consensus", 8, 60),
    ("co", "sync", 7, 45),
    ("co", "gather", 6, 60),
    ("co", "scatter", 6, 30),
    # §5.2.5 Meta-Computational
    ("mc", "optimize", 5, 300),
    ("mc", "analyze", 4, 180),
    ("mc", "learn", 3, 600),
    ("mc", "adapt", 5, 120),
    ("mc", "predict", 4, 90),
    # §5.2.6 Resource Management
    ("rm", "allocate", 8, 30),
    ("rm", "deallocate", 8, 15),
    ("rm", "monitor", 6, 10),
    ("rm", "scale", 7, 60),
    ("rm", "balance", 6, 45),
]

# Appendix C: group, element, default seconds, max seconds.
SPEC_APPENDIX_C = [
    ("cf", "ping", 5, 30),
    ("cf", "health", 10, 60),
    ("cf", "introspect", 15, 60),
    ("df", "transform", 30, 300),
    ("df", "validate", 15, 120),
    ("ed", "signal", 5, 30),
    ("co", "broadcast", 30, 180),
    ("mc", "optimize", 300, 1800),
    ("rm", "allocate", 30, 120),
]

_APPENDIX_C_KEYS = {(g, e) for g, e, _, _ in SPEC_APPENDIX_C}
# §5.2 rows with a finite timeout and no Appendix C row: max is 10 × default (DESIGN §4).
SPEC_ELEMENTS_WITHOUT_APPENDIX_C = [
    row for row in SPEC_ELEMENTS if (row[0], row[1]) not in _APPENDIX_C_KEYS and row[3] is not None
]


def _ids(rows: Sequence[tuple[Any, ...]]) -> list[str]:
    return [f"{r[0]}:{r[1]}" for r in rows]


def test_spec_tables_are_complete() -> None:
    """§5.2 has 32 rows (6+6+5+5+5+5); Appendix C has 9."""
    assert len(SPEC_ELEMENTS) == 32
    assert len({(g, e) for g, e, _, _ in SPEC_ELEMENTS}) == 32
    assert len(SPEC_APPENDIX_C) == 9
    assert len(SPEC_ELEMENTS_WITHOUT_APPENDIX_C) == 32 - 9 - 1


# ---------------------------------------------------------------- §5.2


@pytest.mark.parametrize(
    ("group", "element", "priority", "timeout_s"), SPEC_ELEMENTS, ids=_ids(SPEC_ELEMENTS)
)
def test_standard_element_row_pfap_5_2(
    group: str, element: str, priority: int, timeout_s: int | None
) -> None:
    """PFAP §5.2: the element's default priority and timeout."""
    row = packets.STANDARD_ELEMENTS[group][element]
    assert row.priority == priority
    assert row.timeout_ms == (None if timeout_s is None else timeout_s * 1000)
    assert packets.default_priority(group, element) == priority


@pytest.mark.parametrize(
    ("group", "element", "priority", "timeout_s"), SPEC_ELEMENTS, ids=_ids(SPEC_ELEMENTS)
)
def test_default_timeout_of_standard_element_pfap_5_2(
    group: str, element: str, priority: int, timeout_s: int | None
) -> None:
    """DESIGN §4: default timeout from Appendix C, else §5.2 (the two agree for all nine
    Appendix C rows); ed:listen has none (∞)."""
    expected = None if timeout_s is None else timeout_s * 1000
    assert packets.default_timeout_ms(group, element) == expected


def test_standard_elements_have_no_extra_rows_pfap_5_2() -> None:
    table = {(g, e) for g, row in packets.STANDARD_ELEMENTS.items() for e in row}
    assert table == {(g, e) for g, e, _, _ in SPEC_ELEMENTS}


# ---------------------------------------------------------------- Appendix C


@pytest.mark.parametrize(
    ("group", "element", "default_s", "max_s"), SPEC_APPENDIX_C, ids=_ids(SPEC_APPENDIX_C)
)
def test_appendix_c_row(group: str, element: str, default_s: int, max_s: int) -> None:
    """Appendix C: default and max timeout."""
    assert packets.APPENDIX_C_TIMEOUTS[(group, element)] == (default_s * 1000, max_s * 1000)
    assert packets.default_timeout_ms(group, element) == default_s * 1000
    assert packets.max_timeout_ms(group, element) == max_s * 1000


def test_appendix_c_has_no_extra_rows() -> None:
    assert set(packets.APPENDIX_C_TIMEOUTS) == _APPENDIX_C_KEYS


# ---------------------------------------------------------------- DESIGN §4 caps


@pytest.mark.parametrize(
    ("group", "element", "priority", "timeout_s"),
    SPEC_ELEMENTS_WITHOUT_APPENDIX_C,
    ids=_ids(SPEC_ELEMENTS_WITHOUT_APPENDIX_C),
)
def test_max_timeout_is_ten_times_default_design_4(
    group: str, element: str, priority: int, timeout_s: int
) -> None:
    """DESIGN §4: elements without an Appendix C max are capped at 10 × default."""
    assert packets.max_timeout_ms(group, element) == timeout_s * 10 * 1000


@pytest.mark.parametrize(
    ("group", "element", "max_ms"),
    [("df", "reduce", 1_200_000), ("mc", "learn", 6_000_000), ("cf", "shutdown", 300_000)],
)
def test_max_timeout_examples_design_4(group: str, element: str, max_ms: int) -> None:
    """Spot values: df:reduce 120 s → 20 min; mc:learn 600 s → 100 min; cf:shutdown 5 min."""
    assert packets.max_timeout_ms(group, element) == max_ms


def test_ed_listen_has_no_default_and_caps_at_one_hour_design_4() -> None:
    """DESIGN §4: `ed:listen` has no default limit (§5.2 ∞) but is capped at 1 h."""
    assert packets.default_timeout_ms("ed", "listen") is None
    assert packets.max_timeout_ms("ed", "listen") == 3_600_000
    assert packets.effective_timeout_ms("ed", "listen", None) == 3_600_000
    assert packets.effective_timeout_ms("ed", "listen", 10_000) == 10_000
    assert packets.effective_timeout_ms("ed", "listen", 7_200_000) == 3_600_000


@pytest.mark.parametrize(
    ("group", "element"), [("df", "tokenize"), ("cf", "custom_step"), ("zz", "anything")]
)
def test_elements_outside_the_tables_design_4(group: str, element: str) -> None:
    """DESIGN §4: priority default 5; timeout 30 s; max 10 × 30 s."""
    assert packets.default_priority(group, element) == 5
    assert packets.default_timeout_ms(group, element) == 30_000
    assert packets.max_timeout_ms(group, element) == 300_000
    assert packets.effective_timeout_ms(group, element, None) == 30_000
    assert packets.effective_timeout_ms(group, element, 10**9) == 300_000


@pytest.mark.parametrize(
    ("group", "element", "requested", "ttl", "expected"),
    [
        # Requested or default, capped by Appendix C.
        ("df", "transform", None, None, 30_000),
        ("df", "transform", 12_000, None, 12_000),
        ("df", "transform", 300_000, None, 300_000),
        ("df", "transform", 300_001, None, 300_000),
        ("mc", "optimize", 3_600_000, None, 1_800_000),
        ("cf", "ping", 60_000, None, 30_000),
        # 10 × default for §5.2 rows without an Appendix C max.
        ("df", "reduce", 5_000_000, None, 1_200_000),
        ("co", "sync", 100_000, None, 100_000),
        # The wire example: timeout 30000 forwarded with 29850 ms of TTL left → 29850.
        ("df", "transform", 30_000, 29_850, 29_850),
        ("df", "transform", None, 29_850, 29_850),
        # A TTL larger than the timeout does not raise it.
        ("df", "transform", 12_000, 29_850, 12_000),
        ("rm", "allocate", 500_000, 200_000, 120_000),
        ("ed", "listen", None, 45_000, 45_000),
        ("ed", "listen", None, 10**9, 3_600_000),
    ],
)
def test_effective_timeout_design_3_4(
    group: str, element: str, requested: int | None, ttl: int | None, expected: int
) -> None:
    """DESIGN §4 defaults/caps and DESIGN §3 "a packet's timeout_ms is capped by the
    remaining TTL"."""
    assert packets.effective_timeout_ms(group, element, requested, ttl) == expected


def test_limits_constants_design_4() -> None:
    assert packets.DEFAULT_PRIORITY == 5
    assert packets.DEFAULT_TIMEOUT_MS == 30_000
    assert packets.MAX_TIMEOUT_FACTOR == 10
    assert packets.LISTEN_CAP_MS == 3_600_000
    assert (packets.PRIORITY_MIN, packets.PRIORITY_MAX) == (1, 10)
    assert packets.PACKET_ID_MAX_LEN == 128


# ---------------------------------------------------------------- validators (PF002)


def _assert_pf002(exc: BaseException, field: str, rule: str) -> None:
    assert isinstance(exc, errors.InvalidPacket)
    assert exc.code == "PF002"
    assert exc.category == "validation_error"
    assert exc.retryable is False
    assert exc.field == field
    assert exc.validation_rule == rule
    details = exc.error_details()
    assert details["field"] == field
    assert {"field", "expected_type", "received_type", "validation_rule"} <= set(details)


@pytest.mark.parametrize("priority", [1, 2, 5, 9, 10])
def test_validate_priority_accepts_1_to_10_design_4(priority: int) -> None:
    packets.validate_priority(priority)


@pytest.mark.parametrize("priority", [0, 11, -1, 100])
def test_validate_priority_rejects_out_of_range_design_4(priority: int) -> None:
    """DESIGN §4 / PFAP §4.1: priority 1-10, else PF002 naming payload.packet.priority."""
    with pytest.raises(errors.InvalidPacket) as info:
        packets.validate_priority(priority)
    _assert_pf002(info.value, "payload.packet.priority", "range")
    assert str(priority) in info.value.received_type  # type: ignore[operator]


def test_validate_priority_custom_path() -> None:
    with pytest.raises(errors.InvalidPacket) as info:
        packets.validate_priority(0, "priority")
    _assert_pf002(info.value, "priority", "range")


@pytest.mark.parametrize("packet_id", ["p", "packet_transform_001", "x" * 128])
def test_validate_packet_id_accepts_1_to_128_chars_design_4(packet_id: str) -> None:
    packets.validate_packet_id(packet_id)


@pytest.mark.parametrize("packet_id", ["", "x" * 129, "y" * 1000])
def test_validate_packet_id_rejects_bad_length_design_4(packet_id: str) -> None:
    """DESIGN §4: id 1-128 chars, else PF002 naming payload.packet.id."""
    with pytest.raises(errors.InvalidPacket) as info:
        packets.validate_packet_id(packet_id)
    _assert_pf002(info.value, "payload.packet.id", "length")


@pytest.mark.parametrize(
    "element", ["ping", "transform", "a", "update_affinity", "x1", "a_b_9", "z" * 200]
)
def test_validate_element_accepts_pattern_design_4(element: str) -> None:
    packets.validate_element(element)


@pytest.mark.parametrize(
    "element",
    [
        "",
        "Transform",
        "1abc",
        "_abc",
        "load-data",
        "load data",
        "df:transform",
        "trans.form",
        "transform\n",
        "ping ",
        "é",
        "PING",
    ],
)
def test_validate_element_rejects_bad_names_design_4(element: str) -> None:
    """DESIGN §4: element matches [a-z][a-z0-9_]*, else PF002 naming payload.packet.element."""
    with pytest.raises(errors.InvalidPacket) as info:
        packets.validate_element(element)
    _assert_pf002(info.value, "payload.packet.element", "pattern")


@pytest.mark.parametrize("timeout", [0, -1])
def test_validate_timeout_rejects_non_positive(timeout: int) -> None:
    with pytest.raises(errors.InvalidPacket) as info:
        packets.validate_timeout(timeout)
    _assert_pf002(info.value, "payload.packet.timeout_ms", "range")
    packets.validate_timeout(1)


def test_unknown_group_is_pf002_naming_the_group_field_design_4() -> None:
    """DESIGN §4: group ∈ cf, df, ed, co, mc, rm."""
    err = packets.unknown_group("zz")
    _assert_pf002(err, "payload.packet.group", "enum")
    for group in ("cf", "df", "ed", "co", "mc", "rm"):
        assert group in (err.expected_type or "")
