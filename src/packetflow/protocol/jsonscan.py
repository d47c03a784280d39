"""Checks on raw JSON that need no recursion: nesting depth before any decoder runs, and
the path of a number no float can hold (``1e400``) once a decoder has refused it.
"""

from __future__ import annotations

import json
import math
from itertools import accumulate
from typing import Any, Final

from msgspec import Raw

_KEEP: Final = b'"[]{}'
_DROP: Final = bytes(sorted(set(range(256)) - set(_KEEP)))
_OPEN_CLOSE: Final = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")


def within_depth(raw: bytes | Raw, limit: int) -> bool:
    """Whether ``raw`` nests arrays and objects at most ``limit`` deep.

    Nesting ``limit + 1`` deep takes that many opening and closing brackets, so shorter
    JSON needs no look (nor a Raw its copy). A frame with at most ``limit`` opening
    brackets cannot be deeper either: two counts, in C, and the answer for any normal
    envelope. Otherwise the exact depth is computed."""
    if len(raw) <= 2 * limit + 1:
        return True
    data = bytes(raw)  # the same object when it is bytes already
    if data.count(b"[") + data.count(b"{") <= limit:
        return True
    return json_depth(data) <= limit


def json_depth(raw: bytes) -> int:
    """The deepest nesting of arrays and objects in ``raw`` (0 for a scalar); for
    malformed JSON a best guess, which is all a guard needs.

    How this works, with no recursion and every step in C: escaped backslashes and
    escaped quotes are dropped (pairs read left to right, as a JSON parser does), then
    every byte but quotes and brackets; splitting at the quotes leaves what is outside
    strings at the even positions; there opening brackets become +1 and closing ones -1,
    and the running sum's maximum is the depth."""
    data = raw.replace(b"\\\\", b"").replace(b'\\"', b"") if b"\\" in raw else raw
    data = data.translate(None, _DROP)
    if b'"' in data:
        data = b"".join(data.split(b'"')[::2])
    steps = data.translate(_OPEN_CLOSE)
    if not steps:
        return 0
    return max(0, max(accumulate(memoryview(steps).cast("b"))))


def non_finite_path(raw: bytes, prefix: str) -> str | None:
    """The JSON path (``prefix.a[2].b``) of the first number that is not a finite float
    (``1e400``), or None. Call only on JSON already within ``MAX_JSON_DEPTH``: the stdlib
    decoder used here recurses per level."""
    try:
        value = json.loads(bytes(raw))
    except (ValueError, RecursionError):
        return None
    # Iterative walk, depth-first in document order.
    stack: list[tuple[Any, str]] = [(value, prefix)]
    while stack:
        node, path = stack.pop()
        if isinstance(node, float):
            if not math.isfinite(node):
                return path or "$"
        elif isinstance(node, dict):
            stack.extend((v, f"{path}.{k}" if path else str(k)) for k, v in
                         reversed(list(node.items())))  # fmt: skip
        elif isinstance(node, list):
            stack.extend((v, f"{path}[{i}]") for i, v in reversed(list(enumerate(node))))
    return None
