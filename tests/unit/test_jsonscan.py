"""protocol/jsonscan.py: nesting depth without recursion, paths of non-finite numbers."""

from __future__ import annotations

import json

import pytest
from msgspec import Raw

from packetflow.protocol.jsonscan import json_depth, non_finite_path, within_depth


@pytest.mark.parametrize(
    ("raw", "depth"),
    [
        (b"1", 0),
        (b'"[[[["', 0),
        (b"[]", 1),
        (b'{"a": [1, {"b": []}]}', 4),
        (b'{"a": "]]]]", "b": [[["[{"]]]}', 4),
        (b'["\\"[[[", [[]]]', 3),
        (b"[" * 100_000 + b"]" * 100_000, 100_000),
    ],
)
def test_json_depth_counts_only_structure(raw: bytes, depth: int) -> None:
    assert json_depth(raw) == depth
    assert within_depth(raw, depth)
    assert within_depth(raw, depth + 1)
    if depth:
        assert not within_depth(raw, depth - 1)


def test_brackets_inside_strings_do_not_make_json_too_deep() -> None:
    """The quick upper bound counts brackets in strings; the exact count then saves it."""
    raw = json.dumps({"text": "[" * 500, "list": [[1]]}).encode()
    assert within_depth(raw, 3)
    assert not within_depth(raw, 2)


def test_depth_of_100000_levels_needs_no_recursion() -> None:
    """The scan runs in C with no Python recursion: far deeper than the recursion limit."""
    raw = b'{"a":' * 200_000 + b"1" + b"}" * 200_000
    assert not within_depth(raw, 128)
    assert json_depth(raw) == 200_000


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        (b'{"a": [1, {"b": 1e400}]}', "data.a[1].b"),
        (b'{"a": -1e999, "b": NaN}', "data.a"),
        (b'{"x": [Infinity]}', "data.x[0]"),
        (b'{"x": [-Infinity]}', "data.x[0]"),
        (b"1e400", "data"),
        (b'{"a": 1e308, "b": [1, 2]}', None),
        (b"not json", None),
    ],
)
def test_non_finite_path_names_the_first_one(raw: bytes, path: str | None) -> None:
    assert non_finite_path(raw, "data") == path


@pytest.mark.parametrize("limit", [1, 2, 5, 128])
def test_json_just_long_enough_to_be_too_deep_is_found(limit: int) -> None:
    """Short JSON is passed without a look: nesting limit + 1 deep takes 2 * (limit + 1)
    bytes, and JSON of exactly that length (or a Raw batch element) is still refused."""
    raw = b"[" * (limit + 1) + b"]" * (limit + 1)
    assert not within_depth(raw, limit)
    assert not within_depth(Raw(raw), limit)
    assert within_depth(raw[1:-1], limit)
    assert within_depth(Raw(raw[1:-1]), limit)
