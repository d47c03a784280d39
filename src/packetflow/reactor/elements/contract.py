"""How element handlers check their ``data``: paths for PF002, required fields, typed
options, dotted field access, JSON equality, and the in-loop deadline check.

Shared by every group's elements so each answers bad input the same way: PF002 naming
the JSON path of the first bad field (DESIGN §10).
"""

from __future__ import annotations

from typing import Any

from ...protocol.errors import InvalidPacket, ProcessingFailed, invalid_field, json_type
from ..context import Context

# Long loops look at the packet's deadline every this many items: a handler in a thread
# cannot be cancelled (DESIGN §10 "Handler timeouts"), so it stops itself.
DEADLINE_CHECK_EVERY = 4096

DATA = "payload.packet.data"

# ---------------------------------------------------------------------------------------------
# Shared helpers (also used by mc.py)


def data_path(path: str) -> str:
    """``input[3].price`` -> ``payload.packet.data.input[3].price``."""
    return f"{DATA}.{path}" if path else DATA


def bad(
    path: str, expected: str, value: Any, rule: str, message: str | None = None
) -> InvalidPacket:
    """A PF002 naming ``payload.packet.data.<path>`` (DESIGN §3)."""
    return invalid_field(data_path(path), expected, json_type(value), rule, message)


def show(value: Any, limit: int = 60) -> str:
    """``repr`` of user input for an error message, cut to ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def missing(path: str) -> InvalidPacket:
    return invalid_field(
        data_path(path),
        "present",
        "missing",
        "required_field",
        f"Missing required field '{data_path(path)}'",
    )


def is_number(value: Any) -> bool:
    """A JSON number: int or float, never a boolean."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def get_path(obj: Any, dotted: str) -> tuple[bool, Any]:
    """Look up a dotted field path (``a.b``, ``items.0``) in a record: (found, value).

    A key that itself contains dots (``{"a.b": 1}``) is matched literally first.
    """
    if isinstance(obj, dict) and dotted in obj:
        return True, obj[dotted]
    cur = obj
    for part in dotted.split("."):
        if isinstance(cur, dict):
            if part not in cur:
                return False, None
            cur = cur[part]
        elif isinstance(cur, list) and part.isdigit():
            index = int(part)
            if index >= len(cur):
                return False, None
            cur = cur[index]
        else:
            return False, None
    return True, cur


def set_path(obj: Any, dotted: str, value: Any) -> Any:
    """A copy of ``obj`` with the (existing) dotted field set; copies only along the path."""
    if isinstance(obj, dict) and dotted in obj:
        out = dict(obj)
        out[dotted] = value
        return out
    head, _, rest = dotted.partition(".")
    if isinstance(obj, dict):
        out = dict(obj)
        out[head] = set_path(obj[head], rest, value) if rest else value
        return out
    if isinstance(obj, list):
        items = list(obj)
        index = int(head)
        items[index] = set_path(obj[index], rest, value) if rest else value
        return items
    return value


class Deadline:
    """Checks the packet's deadline every DEADLINE_CHECK_EVERY calls to ``tick``.

    Raises PF005 with ``reason`` "timeout" (retryable), as DESIGN §10 "Handler timeouts".
    """

    __slots__ = ("_ctx", "_n")

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self._n = 0

    def tick(self) -> None:
        self._n += 1
        if self._n % DEADLINE_CHECK_EVERY == 0 and self._ctx.remaining_s() <= 0:
            raise ProcessingFailed(
                f"{self._ctx.group}:{self._ctx.element} ran past its deadline",
                details={"reason": "timeout"},
                retryable=True,
            )


def str_list(value: Any, path: str, *, allow_single: bool = True) -> list[str]:
    """A non-empty string or a list of non-empty strings (field names)."""
    if allow_single and isinstance(value, str) and value:
        return [value]
    if not isinstance(value, list):
        raise bad(path, "string or array of strings", value, "type")
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item:
            raise bad(f"{path}[{i}]", "non-empty string", item, "type")
    return list(value)


def opt_bool(obj: dict[str, Any], key: str, default: bool, path: str) -> bool:
    value = obj.get(key, default)
    if not isinstance(value, bool):
        raise bad(path, "boolean", value, "type")
    return value


def opt_int(
    obj: dict[str, Any], key: str, default: int, path: str, lo: int, hi: int | None = None
) -> int:
    value = obj.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool):
        raise bad(path, "integer", value, "type")
    if value < lo or (hi is not None and value > hi):
        rng = f"between {lo} and {hi}" if hi is not None else f">= {lo}"
        raise bad(path, f"integer {rng}", value, "range", f"'{data_path(path)}' must be {rng}")
    return value


def as_records(value: Any, path: str = "input") -> list[dict[str, Any]]:
    """A list of records (objects); PF002 naming the first item that is not one."""
    if not isinstance(value, list):
        raise bad(path, "array of objects", value, "type")
    for i, row in enumerate(value):
        if not isinstance(row, dict):
            raise bad(f"{path}[{i}]", "object", row, "type")
    return value


def canonical(value: Any) -> Any:
    """A hashable canonical form for grouping and de-duplication: 1 and 1.0 are the same
    value, True and 1 are not (JSON tells them apart)."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return (json_type(value), value)
    if isinstance(value, float) and value.is_integer():
        return ("number", int(value))
    if isinstance(value, int | float):
        return ("number", value)
    if isinstance(value, list):
        return ("array", tuple(canonical(v) for v in value))
    if isinstance(value, dict):
        return ("object", tuple(sorted((k, canonical(v)) for k, v in value.items())))
    return ("other", repr(value))


def json_equal(a: Any, b: Any) -> bool:
    """Equality of JSON values: numbers compare by value, booleans are not numbers."""
    return bool(canonical(a) == canonical(b))


def number_kind(value: Any) -> str | None:
    """Ordering class of a value: numbers with numbers, strings with strings."""
    if is_number(value):
        return "number"
    if isinstance(value, str):
        return "string"
    return None
