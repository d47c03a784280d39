"""The df (data flow) standard elements of DESIGN §10: transform, validate, aggregate, filter,
map, reduce, load and save.

Every handler is a pure, synchronous function ``(data, ctx) -> dict`` that the runtime runs in
its thread pool. Each validates its own ``data`` and raises PF002 (``invalid_field``) naming
the JSON path of the first bad field, e.g. ``payload.packet.data.where[1].op``. Nothing here
evaluates user input as code, and load/save never touch a file outside ``ctx.data_dir``.

The value to work on follows DESIGN §10's input rule (``ctx.input_value``): ``data.input``, or
the ``result`` of the single upstream packet in a molecule. Every element that produces a
collection returns it under ``result`` so that the next element of a molecule can consume it.

Data checks shared with the other groups live in ``contract.py``, statistics in
``summary.py``.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import io
import json
import math
import os
import re
import tempfile
from collections.abc import Callable
from decimal import ROUND_HALF_UP, Decimal, localcontext
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import jsonschema
from jsonschema import Draft202012Validator
from referencing.exceptions import Unresolvable

from ...protocol.errors import InvalidPacket, ProcessingFailed, invalid_field, json_type
from ..context import Context
from ..registry import Registry
from .contract import (
    Deadline,
    as_records,
    bad,
    canonical,
    data_path,
    get_path,
    is_number,
    json_equal,
    missing,
    number_kind,
    opt_bool,
    opt_int,
    set_path,
    show,
    str_list,
)
from .summary import (
    finite,
    mean,
    median,
    stddev,
    total,
)

# ---------------------------------------------------------------------------------------------
# Limits (STYLE 5)

# load reads a whole file into memory and sends it on in one RESULT frame. Frames are 1 MiB by
# default (DESIGN §3, configurable), so 64 MiB is far above anything that can travel on while
# still bounding what one packet can make a reactor allocate.
MAX_LOAD_BYTES = 64 * 1024 * 1024
# df:validate reports at most this many errors (the rest are counted in invalid_rows); one
# bad schema against a large file would otherwise produce a result far above the frame limit.
MAX_VALIDATION_ERRORS = 1000
# df:transform round: digits outside this range are meaningless for IEEE doubles (15-17
# significant digits).
MAX_ROUND_DIGITS = 15
# transform, aggregate, filter, map and reduce are pure and linear in their input: up to
# this much data they run on the event loop (tens of microseconds), above it on a thread.
INLINE_MAX_BYTES = 16 * 1024

# ---------------------------------------------------------------------------------------------
# df:transform

# Operations applied to each value (each item of a list, each named field of each record).
ITEM_OPS = (
    "uppercase",
    "lowercase",
    "trim",
    "title",
    "reverse",
    "length",
    "split",
    "replace",
    "round",
    "to_number",
    "json_parse",
    "json_stringify",
)
# Operations on a whole list.
LIST_OPS = ("sort", "unique", "join")
TRANSFORM_OPS = ITEM_OPS + LIST_OPS
# Operations that accept parameters.scope "list" (apply to the list itself, not its items).
_SCOPE_LIST_OPS = ("reverse", "length", "json_stringify")

ItemFn = Callable[[Any, dict[str, Any], str], Any]


def _need_str(value: Any, path: str, op: str) -> str:
    if not isinstance(value, str):
        raise bad(path, "string", value, "type", f"'{op}' needs a string at '{data_path(path)}'")
    return value


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _parse_json(text: str, path: str) -> Any:
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise bad(path, "JSON text", text, "max_depth", "JSON text nested too deeply") from None
    except ValueError as exc:
        message = f"Invalid JSON at '{data_path(path)}': {exc}"
        raise bad(path, "JSON text", text, "json", message) from None


def _to_number(value: Any, path: str) -> int | float:
    if is_number(value):
        return value  # type: ignore[no-any-return]
    if not isinstance(value, str):
        raise bad(path, "numeric string or number", value, "type")
    text = value.strip()
    try:
        return int(text)
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise bad(
            path,
            "numeric string",
            value,
            "numeric_string",
            f"'{data_path(path)}' is not a finite number: {show(value)}",
        )
    return number


def _round(value: Any, digits: int, path: str) -> int | float:
    """Round half away from zero on the decimal text of the number (2.675 -> 2.68, unlike
    Python's binary round); digits <= 0 gives an integer."""
    if not is_number(value):
        raise bad(path, "number", value, "type", f"'round' needs a number at '{data_path(path)}'")
    if isinstance(value, int) and digits >= 0:
        return value
    if isinstance(value, float) and digits >= 0 and abs(value) >= 2**52:
        return value  # already integral; int() of a huge float would be a huge int
    with localcontext() as dctx:
        dctx.prec = 400
        rounded = Decimal(repr(value)).quantize(Decimal(1).scaleb(-digits), ROUND_HALF_UP)
    return int(rounded) if digits <= 0 else float(rounded)


def _dumps(value: Any, params: dict[str, Any]) -> str:
    return json.dumps(
        value,
        ensure_ascii=False,
        indent=params.get("indent"),
        sort_keys=params.get("sort_keys", False),
        separators=None if params.get("indent") is not None else (",", ":"),
    )


# Cached: the functions depend on ``op`` only, and building them every call cost about half
# of a small inline df:transform.
@functools.cache
def _item_op(op: str) -> ItemFn:
    def upper(v: Any, p: dict[str, Any], path: str) -> Any:
        return _need_str(v, path, op).upper()

    def lower(v: Any, p: dict[str, Any], path: str) -> Any:
        return _need_str(v, path, op).lower()

    def trim(v: Any, p: dict[str, Any], path: str) -> Any:
        return _need_str(v, path, op).strip(p.get("chars"))

    def title(v: Any, p: dict[str, Any], path: str) -> Any:
        return _need_str(v, path, op).title()

    def reverse(v: Any, p: dict[str, Any], path: str) -> Any:
        return _need_str(v, path, op)[::-1]

    def length(v: Any, p: dict[str, Any], path: str) -> Any:
        if not isinstance(v, str | list | dict):
            raise bad(path, "string, array or object", v, "type")
        return len(v)

    def split(v: Any, p: dict[str, Any], path: str) -> Any:
        return _need_str(v, path, op).split(p.get("separator"), p.get("maxsplit", -1))

    def replace(v: Any, p: dict[str, Any], path: str) -> Any:
        return _need_str(v, path, op).replace(p["old"], p.get("new", ""), p.get("count", -1))

    def round_(v: Any, p: dict[str, Any], path: str) -> Any:
        return _round(v, p.get("digits", 0), path)

    def to_number(v: Any, p: dict[str, Any], path: str) -> Any:
        return _to_number(v, path)

    def json_parse(v: Any, p: dict[str, Any], path: str) -> Any:
        return _parse_json(_need_str(v, path, op), path)

    def json_stringify(v: Any, p: dict[str, Any], path: str) -> Any:
        return _dumps(v, p)

    table: dict[str, ItemFn] = {
        "uppercase": upper,
        "lowercase": lower,
        "trim": trim,
        "title": title,
        "reverse": reverse,
        "length": length,
        "split": split,
        "replace": replace,
        "round": round_,
        "to_number": to_number,
        "json_parse": json_parse,
        "json_stringify": json_stringify,
    }
    return table[op]


def _op_params(op: str, params: dict[str, Any], prefix: str) -> dict[str, Any]:
    """Validate the parameters an operation uses; unknown keys (e.g. ``locale`` in the spec's
    wire example) are ignored. ``prefix`` is the data path holding them."""

    def p(key: str) -> str:
        return f"{prefix}.{key}"

    out: dict[str, Any] = {}
    if op == "trim" and params.get("chars") is not None:
        out["chars"] = params["chars"]
        if not isinstance(out["chars"], str):
            raise bad(p("chars"), "string", out["chars"], "type")
    elif op in ("split", "join"):
        sep = params.get("separator")
        if sep is not None and (not isinstance(sep, str) or (op == "split" and not sep)):
            raise bad(p("separator"), "non-empty string", sep, "type")
        out["separator"] = sep if sep is not None else ("" if op == "join" else None)
        if op == "split":
            out["maxsplit"] = opt_int(params, "maxsplit", -1, p("maxsplit"), -1)
    elif op == "replace":
        if "old" not in params:
            raise missing(p("old"))
        old, new = params["old"], params.get("new", "")
        if not isinstance(old, str) or not old:
            raise bad(p("old"), "non-empty string", old, "type")
        if not isinstance(new, str):
            raise bad(p("new"), "string", new, "type")
        out.update(old=old, new=new, count=opt_int(params, "count", -1, p("count"), -1))
    elif op == "round":
        out["digits"] = opt_int(
            params, "digits", 0, p("digits"), -MAX_ROUND_DIGITS, MAX_ROUND_DIGITS
        )
    elif op == "json_stringify":
        indent = params.get("indent")
        if indent is not None:
            out["indent"] = opt_int(params, "indent", 0, p("indent"), 0, 8)
        out["sort_keys"] = opt_bool(params, "sort_keys", False, p("sort_keys"))
    elif op in ("sort", "unique"):
        by = params.get("by")
        if by is not None and (not isinstance(by, str) or not by):
            raise bad(p("by"), "non-empty string (field path)", by, "type")
        out["by"] = by
        if op == "sort":
            out["reverse"] = opt_bool(params, "reverse", False, p("reverse"))
    return out


def _sort(value: list[Any], by: str | None, reverse: bool) -> list[Any]:
    """Sort numbers with numbers or strings with strings; nulls and records missing ``by``
    go last whatever the order."""
    present: list[tuple[Any, Any]] = []
    absent: list[Any] = []
    kind: str | None = None
    for i, item in enumerate(value):
        if by is not None:
            if not isinstance(item, dict):
                raise bad(f"input[{i}]", "object", item, "type")
            found, key = get_path(item, by)
            where = f"input[{i}].{by}"
        elif isinstance(item, dict):
            raise invalid_field(
                data_path("parameters.by"),
                "field path",
                "missing",
                "required_field",
                "sorting records needs parameters.by naming the field to sort on",
            )
        else:
            found, key, where = True, item, f"input[{i}]"
        if not found or key is None:
            absent.append(item)
            continue
        k = number_kind(key)
        if k is None or (kind is not None and k != kind):
            raise bad(
                where,
                kind or "number or string",
                key,
                "comparable_items",
                "sort needs all numbers or all strings",
            )
        kind = k
        present.append((key, item))
    present.sort(key=lambda pair: pair[0], reverse=reverse)
    return [item for _, item in present] + absent


def _unique(value: list[Any], by: str | None) -> list[Any]:
    seen: set[Any] = set()
    out: list[Any] = []
    for item in value:
        key = canonical(get_path(item, by)[1] if by is not None else item)
        if key not in seen:
            seen.add(key)
            out.append(item)
    return out


def _join(value: list[Any], separator: str) -> str:
    parts: list[str] = []
    for i, item in enumerate(value):
        if isinstance(item, str):
            parts.append(item)
        elif is_number(item):
            parts.append(json.dumps(item))
        else:
            raise bad(f"input[{i}]", "string or number", item, "type")
    return separator.join(parts)


def transform(data: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """df:transform (DESIGN §10, wire example message 3).

    ``input`` is a string or other scalar (the operation applies to it), a list (each item;
    sort/unique/join act on the list), a record or a list of records (the fields named by
    ``parameters.fields``). ``reverse`` on a string reverses its characters; on a list of
    strings it reverses each string; ``parameters.scope`` "list" makes reverse, length and
    json_stringify act on the list itself. Raises PF002 for a bad operation, parameter or
    item.
    """
    if "operation" not in data:
        raise missing("operation")
    op = data["operation"]
    if not isinstance(op, str) or op not in TRANSFORM_OPS:
        raise bad(
            "operation",
            "one of " + ", ".join(TRANSFORM_OPS),
            op,
            "enum",
            f"Unknown transform operation {show(op)}; expected one of {', '.join(TRANSFORM_OPS)}",
        )
    raw_params = data.get("parameters", {})
    if raw_params is None:
        raw_params = {}
    if not isinstance(raw_params, dict):
        raise bad("parameters", "object", raw_params, "type")
    params = _op_params(op, raw_params, "parameters")
    scope = raw_params.get("scope", "items")
    if scope not in ("items", "list"):
        raise bad("parameters.scope", '"items" or "list"', scope, "enum")
    if scope == "list" and op not in _SCOPE_LIST_OPS:
        raise bad(
            "parameters.scope",
            '"items"',
            scope,
            "enum",
            f"scope 'list' applies to {', '.join(_SCOPE_LIST_OPS)} only",
        )
    fields = (
        str_list(raw_params["fields"], "parameters.fields")
        if raw_params.get("fields") is not None
        else None
    )
    value = ctx.input_value(data)
    result: Any
    if op in LIST_OPS or scope == "list":
        if not isinstance(value, list):
            raise bad("input", "array", value, "type", f"'{op}' needs an array as input")
        if op == "sort":
            result = _sort(value, params["by"], params["reverse"])
        elif op == "unique":
            result = _unique(value, params["by"])
        elif op == "join":
            result = _join(value, params["separator"])
        elif op == "reverse":
            result = value[::-1]
        elif op == "length":
            result = len(value)
        else:
            result = _dumps(value, params)
        return {"result": result, "operation_applied": op, "items_processed": len(value)}

    fn = _item_op(op)
    deadline = Deadline(ctx)

    def on_record(record: dict[str, Any], where: str) -> dict[str, Any]:
        assert fields is not None
        for name in fields:
            found, current = get_path(record, name)
            if found and current is not None:
                record = set_path(record, name, fn(current, params, f"{where}.{name}"))
        return record

    if isinstance(value, list):
        out: list[Any] = []
        for i, item in enumerate(value):
            deadline.tick()
            if fields is not None:
                if not isinstance(item, dict):
                    raise bad(f"input[{i}]", "object", item, "type")
                out.append(on_record(item, f"input[{i}]"))
            elif isinstance(item, dict) and op != "json_stringify":
                raise _fields_required(op)
            else:
                out.append(fn(item, params, f"input[{i}]"))
        return {"result": out, "operation_applied": op, "items_processed": len(value)}
    if isinstance(value, dict) and fields is not None:
        result = on_record(value, "input")
    elif isinstance(value, dict) and op != "json_stringify":
        raise _fields_required(op)
    else:
        result = fn(value, params, "input")
    return {"result": result, "operation_applied": op, "items_processed": 1}


def _fields_required(op: str) -> InvalidPacket:
    return invalid_field(
        data_path("parameters.fields"),
        "array of field names",
        "missing",
        "required_field",
        f"'{op}' on records needs parameters.fields naming the fields to transform",
    )


# ---------------------------------------------------------------------------------------------
# df:validate


def validate(data: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """df:validate: check a record or each item of a list against a JSON Schema (Draft
    2020-12, formats checked). ``result`` carries the valid rows on (a record input: the
    record, or null when invalid) so the next molecule stage only sees good data.
    Raises PF002 on ``schema`` when it is not a valid JSON Schema object.
    """
    if "schema" not in data:
        raise missing("schema")
    schema = data["schema"]
    if not isinstance(schema, dict | bool):
        raise bad(
            "schema",
            "object (a JSON Schema)",
            schema,
            "type",
            "df:validate needs the JSON Schema itself as an object; named schemas "
            f"such as {show(schema)} are not supported"
            if isinstance(schema, str)
            else None,
        )
    try:
        Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise bad(
            "schema",
            "valid JSON Schema (Draft 2020-12)",
            schema,
            "json_schema",
            f"Invalid JSON Schema: {exc.message}",
        ) from None
    validator = Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
    value = ctx.input_value(data)
    single = not isinstance(value, list)
    rows: list[Any] = [value] if single else value
    deadline = Deadline(ctx)
    errors: list[dict[str, Any]] = []
    good: list[Any] = []
    invalid = reported = 0
    for i, row in enumerate(rows):
        deadline.tick()
        try:
            row_errors = sorted(validator.iter_errors(row), key=lambda e: list(map(str, e.path)))
        except Unresolvable as exc:
            raise bad(
                "schema",
                "resolvable $ref",
                schema,
                "json_schema",
                f"Unresolvable reference in schema: {exc}",
            ) from None
        if not row_errors:
            good.append(row)
            continue
        invalid += 1
        reported += len(row_errors)
        for err in row_errors:
            if len(errors) < MAX_VALIDATION_ERRORS:
                errors.append(
                    {
                        "row": i,
                        "path": err.json_path,
                        "message": err.message,
                        "keyword": err.validator,
                    }
                )
    result: Any = (good[0] if good else None) if single else good
    return {
        "valid": invalid == 0,
        "valid_rows": len(good),
        "invalid_rows": invalid,
        "errors": errors,
        "errors_truncated": reported > len(errors),
        "result": result,
    }


# ---------------------------------------------------------------------------------------------
# df:aggregate

AGG_OPS = ("count", "sum", "avg", "min", "max", "median", "stddev")


def _agg_specs(aggs: Any, group_by: list[str]) -> dict[str, tuple[str, str | None]]:
    if not isinstance(aggs, dict):
        raise bad("aggregations", "object {name: {op, field}}", aggs, "type")
    specs: dict[str, tuple[str, str | None]] = {}
    for name, spec in aggs.items():
        where = f"aggregations.{name}"
        if name in group_by:
            raise bad(
                where,
                "a name not used by group_by",
                spec,
                "unique_output_name",
                f"aggregation {show(name)} would overwrite the group_by field",
            )
        if not isinstance(spec, dict):
            raise bad(where, "object {op, field}", spec, "type")
        op = spec.get("op")
        if op not in AGG_OPS:
            raise bad(f"{where}.op", "one of " + ", ".join(AGG_OPS), op, "enum")
        field = spec.get("field")
        if field is None and op != "count":
            raise missing(f"{where}.field")
        if field is not None and (not isinstance(field, str) or not field):
            raise bad(f"{where}.field", "non-empty string (field path)", field, "type")
        specs[name] = (op, field)
    return specs


def _aggregate_values(op: str, values: list[Any], count_rows: int) -> Any:
    if op == "count":
        return count_rows
    if not values:
        return 0 if op == "sum" else None
    if op == "sum":
        return total(values)
    if op == "avg":
        return mean(values)
    if op == "min":
        return min(values)
    if op == "max":
        return max(values)
    if op == "median":
        return median(values)
    return stddev(values)


def _new_group(keys: list[Any], specs: dict[str, tuple[str, str | None]]) -> dict[str, Any]:
    """One group's accumulators: its keys, the values and the count per aggregation,
    and the value kind each aggregation has seen."""
    return {
        "keys": keys,
        "values": {n: [] for n in specs},
        "counts": dict.fromkeys(specs, 0),
        "kinds": {},
    }


def aggregate(data: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """df:aggregate: group records by ``group_by`` (a field path or a list of them; absent =
    one group) and compute ``aggregations`` {name: {op, field}} per group. Nulls and missing
    fields are skipped; ``count`` without a field counts rows. Groups keep first-seen order.
    Raises PF002 for a bad spec or a non-numeric value under a numeric op.
    """
    rows = as_records(ctx.input_value(data))
    raw_group = data.get("group_by")
    group_by = [] if raw_group is None else str_list(raw_group, "group_by")
    specs = _agg_specs(data.get("aggregations", {"count": {"op": "count"}}), group_by)
    deadline = Deadline(ctx)
    groups: dict[Any, dict[str, Any]] = {}
    for i, row in enumerate(rows):
        deadline.tick()
        keys = [get_path(row, g)[1] for g in group_by]
        slot = groups.get(ck := canonical(keys))
        if slot is None:
            slot = groups[ck] = _new_group(keys, specs)
        for name, (op, field) in specs.items():
            if field is None:
                slot["counts"][name] += 1
                continue
            found, v = get_path(row, field)
            if not found or v is None:
                continue
            slot["counts"][name] += 1
            if op == "count":
                continue
            kind = number_kind(v) if op in ("min", "max") else ("number" if is_number(v) else None)
            seen = slot["kinds"].setdefault(name, kind)
            if kind is None or kind != seen:
                expected = "number" if op not in ("min", "max") else seen or "number or string"
                raise bad(
                    f"input[{i}].{field}",
                    expected,
                    v,
                    "type",
                    f"aggregation {show(name)} ({op}) cannot use {json_type(v)} "
                    f"at '{data_path(f'input[{i}].{field}')}'",
                )
            slot["values"][name].append(v)
    out: list[dict[str, Any]] = []
    if not groups and not group_by:
        groups[None] = _new_group([], specs)
    for slot in groups.values():
        out_row: dict[str, Any] = dict(zip(group_by, slot["keys"], strict=True))
        for name, (op, _field) in specs.items():
            out_row[name] = _aggregate_values(op, slot["values"][name], slot["counts"][name])
        out.append(out_row)
    return {"result": out, "groups": len(out)}


# ---------------------------------------------------------------------------------------------
# df:filter

FILTER_OPS = ("eq", "ne", "lt", "le", "gt", "ge", "in", "contains", "startswith", "exists")

Condition = tuple[str | None, str, Any]


def _conditions(where: Any) -> list[Condition]:
    if not isinstance(where, list):
        raise bad(
            "where",
            "array of condition objects {field, op, value}",
            where,
            "type",
            "where must be an array of condition objects {field, op, value}; "
            "expressions are never evaluated",
        )
    out: list[Condition] = []
    for i, cond in enumerate(where):
        path = f"where[{i}]"
        if not isinstance(cond, dict):
            raise bad(path, "object {field, op, value}", cond, "type")
        field = cond.get("field")
        if field is not None and (not isinstance(field, str) or not field):
            raise bad(f"{path}.field", "non-empty string (field path)", field, "type")
        if "op" not in cond:
            raise missing(f"{path}.op")
        op = cond["op"]
        if not isinstance(op, str) or op not in FILTER_OPS:
            raise bad(
                f"{path}.op",
                "one of " + ", ".join(FILTER_OPS),
                op,
                "enum",
                f"Unknown filter op {show(op)}; expected one of {', '.join(FILTER_OPS)}",
            )
        if op == "exists":
            value = cond.get("value", True)
            if not isinstance(value, bool):
                raise bad(f"{path}.value", "boolean", value, "type")
        else:
            if "value" not in cond:
                raise missing(f"{path}.value")
            value = cond["value"]
            if op in ("lt", "le", "gt", "ge") and number_kind(value) is None:
                raise bad(f"{path}.value", "number or string", value, "type")
            if op == "in" and not isinstance(value, list):
                raise bad(f"{path}.value", "array", value, "type")
            if op == "startswith" and not isinstance(value, str):
                raise bad(f"{path}.value", "string", value, "type")
        out.append((field, op, value))
    return out


def _matches(item: Any, cond: Condition) -> bool:
    """One condition against one item. A missing field fails every op except ``ne`` and
    ``exists: false`` (MongoDB's semantics); ordering between a number and a string is
    false, never an error."""
    field, op, value = cond
    found, v = get_path(item, field) if field is not None else (True, item)
    if op == "exists":
        return bool((found and v is not None) == value)
    if not found:
        return op == "ne"
    if op == "eq":
        return json_equal(v, value)
    if op == "ne":
        return not json_equal(v, value)
    if op == "in":
        return any(json_equal(v, candidate) for candidate in value)
    if op == "contains":
        if isinstance(v, str):
            return isinstance(value, str) and value in v
        if isinstance(v, list):
            return any(json_equal(x, value) for x in v)
        return False
    if op == "startswith":
        return isinstance(v, str) and v.startswith(value)
    if number_kind(v) != number_kind(value):
        return False
    if op == "lt":
        return bool(v < value)
    if op == "le":
        return bool(v <= value)
    if op == "gt":
        return bool(v > value)
    return bool(v >= value)


def filter_(data: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """df:filter: keep the items of ``input`` matching ``where`` (all conditions, or any
    with ``match`` "any"; an empty ``where`` keeps everything). Conditions are data, never
    code: a string ``where`` is PF002. Raises PF002 naming ``where[i].op`` for an unknown op.
    """
    if "where" not in data:
        raise missing("where")
    conds = _conditions(data["where"])
    match = data.get("match", "all")
    if match not in ("all", "any"):
        raise bad("match", '"all" or "any"', match, "enum")
    value = ctx.input_value(data)
    if not isinstance(value, list):
        raise bad("input", "array", value, "type")
    combine = all if match == "all" else any
    deadline = Deadline(ctx)
    kept: list[Any] = []
    for item in value:
        deadline.tick()
        if not conds or combine(_matches(item, c) for c in conds):
            kept.append(item)
    return {"result": kept, "kept": len(kept), "dropped": len(value) - len(kept)}


# ---------------------------------------------------------------------------------------------
# df:map

MAP_OPS = ("copy", *ITEM_OPS)


def _field_specs(fields: Any) -> dict[str, tuple[str | None, str, dict[str, Any], Any]]:
    """{out: (in_field | None, op, params, default)}; a None in_field means a constant."""
    if not isinstance(fields, dict) or not fields:
        raise bad("fields", "non-empty object {out: field | {op, field}}", fields, "type")
    specs: dict[str, tuple[str | None, str, dict[str, Any], Any]] = {}
    for out, spec in fields.items():
        where = f"fields.{out}"
        if isinstance(spec, str) and spec:
            specs[out] = (spec, "copy", {}, None)
            continue
        if not isinstance(spec, dict):
            raise bad(where, "field name or object {op, field}", spec, "type")
        if "value" in spec:
            specs[out] = (None, "copy", {}, spec["value"])
            continue
        op = spec.get("op", "copy")
        if not isinstance(op, str) or op not in MAP_OPS:
            raise bad(f"{where}.op", "one of " + ", ".join(MAP_OPS), op, "enum")
        field = spec.get("field")
        if field is None:
            raise missing(f"{where}.field")
        if not isinstance(field, str) or not field:
            raise bad(f"{where}.field", "non-empty string (field path)", field, "type")
        specs[out] = (field, op, _op_params(op, spec, where), spec.get("default"))
    return specs


def map_(data: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """df:map: build each output record from ``fields`` {out: "in.field" | {op, field,
    ...params, default?} | {value: constant}}. A missing or null source field gives
    ``default`` (null when absent) and skips the op. With ``keep`` true the input record's
    other fields are kept. A single record in gives a single record out.
    """
    if "fields" not in data:
        raise missing("fields")
    specs = _field_specs(data["fields"])
    keep = opt_bool(data, "keep", False, "keep")
    value = ctx.input_value(data)
    single = isinstance(value, dict)
    rows = as_records([value] if single else value)
    fns = {out: _item_op(op) for out, (_, op, _p, _d) in specs.items() if op != "copy"}
    deadline = Deadline(ctx)
    mapped: list[dict[str, Any]] = []
    for i, row in enumerate(rows):
        deadline.tick()
        new: dict[str, Any] = dict(row) if keep else {}
        for out, (field, op, params, default) in specs.items():
            if field is None:
                new[out] = default
                continue
            found, v = get_path(row, field)
            if not found or v is None:
                new[out] = default
            elif op == "copy":
                new[out] = v
            else:
                where = f"input.{field}" if single else f"input[{i}].{field}"
                new[out] = fns[out](v, params, where)
        mapped.append(new)
    return {"result": mapped[0] if single else mapped, "items_processed": len(mapped)}


# ---------------------------------------------------------------------------------------------
# df:reduce

REDUCE_OPS = ("sum", "product", "min", "max", "count", "concat", "merge")


def _deep_merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = (
            _deep_merge(out[k], v) if isinstance(out.get(k), dict) and isinstance(v, dict) else v
        )
    return out


def reduce_(data: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """df:reduce: fold ``input`` (or each record's ``field``) into one value with ``op``:
    sum/product (numbers; empty -> 0/1), min/max (numbers or strings; empty -> null), count
    (non-null values), concat (strings, joined by ``separator``, or arrays), merge (objects,
    later keys win; ``deep`` merges nested objects). Nulls and missing fields are skipped.
    """
    if "op" not in data:
        raise missing("op")
    op = data["op"]
    if not isinstance(op, str) or op not in REDUCE_OPS:
        raise bad("op", "one of " + ", ".join(REDUCE_OPS), op, "enum")
    field = data.get("field")
    if field is not None and (not isinstance(field, str) or not field):
        raise bad("field", "non-empty string (field path)", field, "type")
    separator = data.get("separator", "")
    if not isinstance(separator, str):
        raise bad("separator", "string", separator, "type")
    deep = opt_bool(data, "deep", False, "deep")
    value = ctx.input_value(data)
    if not isinstance(value, list):
        raise bad("input", "array", value, "type")
    items: list[tuple[str, Any]] = []
    for i, item in enumerate(value):
        if field is None:
            found, v, where = True, item, f"input[{i}]"
        else:
            found, v = get_path(item, field)
            where = f"input[{i}].{field}"
        if found and v is not None:
            items.append((where, v))

    def check(expected: str, ok: Callable[[Any], bool]) -> list[Any]:
        for where, v in items:
            if not ok(v):
                raise bad(
                    where,
                    expected,
                    v,
                    "type",
                    f"'{op}' cannot use {json_type(v)} at '{data_path(where)}'",
                )
        return [v for _, v in items]

    result: Any
    if op == "count":
        result = len(items)
    elif op == "sum":
        result = total(check("number", is_number))
    elif op == "product":
        nums = check("number", is_number)
        result = finite(math.prod(nums), "product") if nums else 1
    elif op in ("min", "max"):
        first = number_kind(items[0][1]) if items else None
        vals = check(
            first or "number or string", lambda v: first is not None and number_kind(v) == first
        )
        result = (min(vals) if op == "min" else max(vals)) if vals else None
    elif op == "concat":
        first_is_str = bool(items) and isinstance(items[0][1], str)
        if first_is_str:
            result = separator.join(check("string", lambda v: isinstance(v, str)))
        else:
            lists = check("array", lambda v: isinstance(v, list))
            result = [x for sub in lists for x in sub] if lists else None
    else:
        merged: dict[str, Any] = {}
        for d in check("object", lambda v: isinstance(v, dict)):
            merged = _deep_merge(merged, d) if deep else {**merged, **d}
        result = merged
    return {"result": result, "items_processed": len(items)}


# ---------------------------------------------------------------------------------------------
# df:load and df:save: files under the reactor's data directory only

FILE_FORMATS = {".csv": "csv", ".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl"}
_SCHEME = "file://"
# A CSV cell is read as a number only when it is exactly a JSON number, so "007" and "1e"
# stay strings and nothing is lost on a round trip.
_JSON_INT = re.compile(r"-?(?:0|[1-9][0-9]*)")
_JSON_FLOAT = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")


def resolve_data_path(url: Any, ctx: Context, name: str) -> tuple[Path, str]:
    """Resolve a ``file://`` URL (relative to ``ctx.data_dir``, or absolute inside it) to a
    real path with every symlink followed: (path, path relative to the data dir).

    Raises PF002 on ``payload.packet.data.<name>``: rule "scheme" for anything but file://,
    "path_escape" for a path that leaves the data dir by ``..``, an absolute path or a
    symlink.
    """
    expected = "file:// URL under the reactor's data directory"
    if not isinstance(url, str):
        raise bad(name, expected, url, "type")
    if not url.startswith(_SCHEME):
        raise bad(
            name,
            expected,
            url,
            "scheme",
            f"'{data_path(name)}' must be a file:// URL under the reactor's data "
            f"directory; got {show(url)}",
        )
    raw = unquote(url[len(_SCHEME) :])
    if not raw or "\x00" in raw:
        raise bad(name, expected, url, "path", f"'{data_path(name)}' names no file")
    base = Path(ctx.data_dir).resolve()
    candidate = Path(raw)
    if not candidate.is_absolute():
        candidate = base / candidate
    try:
        real = candidate.resolve()
    except (OSError, RuntimeError):  # symlink loop
        raise bad(name, expected, url, "path", f"'{data_path(name)}' cannot be resolved") from None
    if real == base or not real.is_relative_to(base):
        raise bad(
            name,
            expected,
            url,
            "path_escape",
            f"'{data_path(name)}' resolves outside the reactor's data directory",
        )
    return real, real.relative_to(base).as_posix()


def _file_format(data: dict[str, Any], path: Path, name: str) -> str:
    if "format" in data:
        fmt = data["format"]
        if fmt not in ("csv", "json", "jsonl"):
            raise bad("format", '"csv", "json" or "jsonl"', fmt, "enum")
        return str(fmt)
    fmt_or_none = FILE_FORMATS.get(path.suffix.lower())
    if fmt_or_none is None:
        raise bad(
            name,
            "a .csv, .json or .jsonl file (or data.format)",
            str(path.name),
            "file_format",
            f"Cannot tell the format of {show(path.name)} from its "
            "extension; use .csv, .json or .jsonl or give data.format",
        )
    return fmt_or_none


def _csv_cell(text: str) -> Any:
    if text == "":
        return None
    if _JSON_INT.fullmatch(text):
        return int(text)
    if _JSON_FLOAT.fullmatch(text):
        number = float(text)
        return number if math.isfinite(number) else text
    return text


def _file_error(message: str, reason: str, rel: str, **extra: Any) -> ProcessingFailed:
    """PF005 for a file that is missing, unreadable or malformed: the client's mistake, not
    retryable (a retry took 15-30 s to fail the same way on every reactor and degraded
    them all); ``protocol.errors.is_client_error`` keeps it out of reactor health."""
    return ProcessingFailed(message, details={"reason": reason, "path": rel, **extra},
                            retryable=False)  # fmt: skip


def _parse_file(text: str, fmt: str, rel: str, delimiter: str, infer: bool) -> list[Any]:
    if fmt == "csv":
        # Short rows get null for the missing cells; a row longer than the header is an
        # error rather than data filed under a made-up key.
        reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
        rows_out: list[Any] = []
        try:
            for row in reader:
                if None in row:
                    raise _file_error(
                        f"{rel}:{reader.line_num}: more cells than the header has columns",
                        "parse_error",
                        rel,
                        line=reader.line_num,
                    )
                rows_out.append(
                    {k: _csv_cell(v) if infer and isinstance(v, str) else v for k, v in row.items()}
                )
        except csv.Error as exc:
            raise _file_error(
                f"{rel}:{reader.line_num}: bad CSV: {exc}", "parse_error", rel, line=reader.line_num
            ) from None
        return rows_out
    if fmt == "json":
        try:
            value = json.loads(text, parse_constant=_reject_constant)
        except (ValueError, RecursionError) as exc:
            raise _file_error(f"{rel}: bad JSON: {exc}", "parse_error", rel) from None
        return value if isinstance(value, list) else [value]
    rows: list[Any] = []
    for n, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                rows.append(json.loads(line, parse_constant=_reject_constant))
            except (ValueError, RecursionError) as exc:
                raise _file_error(
                    f"{rel}:{n}: bad JSON line: {exc}", "parse_error", rel, line=n
                ) from None
    return rows


def load(data: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """df:load: read rows from ``source`` (``file://`` CSV, JSON or JSONL under the data dir;
    CSV cells that are exactly JSON numbers become numbers unless ``infer_types`` is false,
    empty cells become null) or take inline ``rows``. A JSON file holding an array gives its
    items as rows, any other value gives one row.

    Raises PF002 on ``source`` (scheme, path_escape, file_format), PF005 (not retryable)
    when the file is missing, unreadable, too large or malformed.
    """
    if "source" in data and "rows" in data:
        raise bad("rows", "absent when source is given", data["rows"], "mutually_exclusive")
    if "source" not in data:
        if "rows" not in data:
            raise missing("source")
        rows = data["rows"]
        if not isinstance(rows, list):
            raise bad("rows", "array", rows, "type")
        return {"result": rows, "rows_loaded": len(rows), "file_size_mb": 0.0}
    path, rel = resolve_data_path(data["source"], ctx, "source")
    fmt = _file_format(data, path, "source")
    delimiter = data.get("delimiter", ",")
    if not isinstance(delimiter, str) or len(delimiter) != 1:
        raise bad("delimiter", "one-character string", delimiter, "type")
    infer = opt_bool(data, "infer_types", True, "infer_types")
    try:
        size = path.stat().st_size
        if not path.is_file():
            raise _file_error(f"{rel} is not a regular file", "not_a_file", rel)
        if size > MAX_LOAD_BYTES:
            raise _file_error(
                f"{rel} is {size} bytes; the limit is {MAX_LOAD_BYTES}",
                "file_too_large",
                rel,
                size_bytes=size,
                limit_bytes=MAX_LOAD_BYTES,
            )
        raw = path.read_bytes()
    except FileNotFoundError:
        raise _file_error(
            f"No file {show(rel)} in the reactor's data directory", "file_not_found", rel
        ) from None
    except OSError as exc:
        raise _file_error(f"Cannot read {rel}: {exc.strerror}", "read_error", rel) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _file_error(f"{rel} is not UTF-8: {exc.reason}", "encoding_error", rel) from None
    rows = _parse_file(text, fmt, rel, delimiter, infer)
    return {
        "result": rows,
        "rows_loaded": len(rows),
        "file_size_mb": round(len(raw) / (1024 * 1024), 6),
        "source": _SCHEME + quote(rel),
        "format": fmt,
    }


def _csv_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def _serialize(value: Any, fmt: str, data: dict[str, Any]) -> tuple[str, int]:
    """(text, rows) for save."""
    if fmt == "json":
        return json.dumps(value, ensure_ascii=False) + "\n", (
            len(value) if isinstance(value, list) else 1
        )
    rows: list[Any] = [value] if isinstance(value, dict) else value
    if not isinstance(rows, list):
        raise bad("input", "array (or object)", value, "type", f"{fmt} needs rows")
    if fmt == "jsonl":
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), len(rows)
    records = as_records(rows)
    if "columns" in data:
        columns = str_list(data["columns"], "columns", allow_single=False)
    else:
        columns = list(dict.fromkeys(k for r in records for k in r))
    buf = io.StringIO(newline="")
    writer = csv.writer(buf)
    writer.writerow(columns)
    for r in records:
        writer.writerow([_csv_value(r.get(c)) for c in columns])
    return buf.getvalue(), len(records)


def _write_atomically(path: Path, payload: bytes) -> None:
    """Temp file in the same directory, fsync, os.replace: readers see the old file or the
    new one, never half of it. An existing file's permission bits are kept."""
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable (best effort)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def save(data: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """df:save: write ``input`` (or the single upstream result) to ``destination``, a
    ``file://`` path under the data dir, as CSV (records; columns in first-seen order or
    ``columns``), JSON or JSONL by extension or ``format``. Missing parent directories are
    created. Written atomically.

    Raises PF002 on ``destination`` (scheme, path_escape, file_format) or ``input``; PF005
    when the write fails.
    """
    if "destination" not in data:
        raise missing("destination")
    path, rel = resolve_data_path(data["destination"], ctx, "destination")
    fmt = _file_format(data, path, "destination")
    text, rows = _serialize(ctx.input_value(data), fmt, data)
    try:
        payload = text.encode("utf-8")
    except UnicodeEncodeError:
        raise bad(
            "input",
            "valid Unicode text",
            None,
            "utf8",
            "input contains text that cannot be encoded as UTF-8",
        ) from None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # mkdir followed no symlink out unless one appeared meanwhile: check again.
        if not path.parent.resolve().is_relative_to(Path(ctx.data_dir).resolve()):
            raise bad("destination", "path under the data directory", rel, "path_escape")
        if path.is_dir():
            raise _file_error(f"{rel} is a directory", "not_a_file", rel)
        _write_atomically(path, payload)
    except OSError as exc:
        raise _file_error(f"Cannot write {rel}: {exc.strerror}", "write_error", rel) from None
    return {
        "rows_saved": rows,
        "bytes": len(payload),
        "destination": _SCHEME + quote(rel),
        "format": fmt,
    }


# ---------------------------------------------------------------------------------------------


def register(registry: Registry) -> None:
    """Register the df elements of DESIGN §10 with their data contracts."""
    el = registry.element
    el(
        "df",
        "transform",
        inline_max_bytes=INLINE_MAX_BYTES,
        data={
            "input": "string | array | record(s) (default: the single upstream result)",
            "operation": " | ".join(TRANSFORM_OPS),
            "parameters": "object? fields, separator, maxsplit, old, new, count, digits, by, "
            "reverse, chars, indent, sort_keys, scope (items|list)",
        },
        result="{result, operation_applied, items_processed}",
    )(transform)
    el(
        "df",
        "validate",
        data={
            "input": "record | array",
            "schema": "JSON Schema object (Draft 2020-12)",
        },
        result="{valid, valid_rows, invalid_rows, errors: [{row, path, message, keyword}], "
        "errors_truncated, result: valid rows}",
    )(validate)
    el(
        "df",
        "aggregate",
        inline_max_bytes=INLINE_MAX_BYTES,
        data={
            "input": "array of records",
            "group_by": "field path | array of field paths (optional)",
            "aggregations": "{name: {op: " + "|".join(AGG_OPS) + ", field}}",
        },
        result="{result: [grouped rows], groups}",
    )(aggregate)
    el(
        "df",
        "filter",
        inline_max_bytes=INLINE_MAX_BYTES,
        data={
            "input": "array",
            "where": "[{field?, op: " + "|".join(FILTER_OPS) + ", value}]",
            "match": "all | any (default all)",
        },
        result="{result: kept items, kept, dropped}",
    )(filter_)
    el(
        "df",
        "map",
        inline_max_bytes=INLINE_MAX_BYTES,
        data={
            "input": "record | array of records",
            "fields": "{out: field path | {op, field, default?, ...parameters} | {value}}",
            "keep": "boolean (default false): keep the other input fields",
        },
        result="{result: mapped record(s), items_processed}",
    )(map_)
    el(
        "df",
        "reduce",
        inline_max_bytes=INLINE_MAX_BYTES,
        data={
            "input": "array",
            "op": " | ".join(REDUCE_OPS),
            "field": "field path (optional)",
            "separator": "string (concat)",
            "deep": "boolean (merge)",
        },
        result="{result: value, items_processed}",
    )(reduce_)
    el(
        "df",
        "load",
        data={
            "source": "file://path under the data dir (.csv/.json/.jsonl)",
            "rows": "inline array (instead of source)",
            "format": "csv | json | jsonl (optional)",
            "delimiter": "CSV delimiter",
            "infer_types": "boolean (default true)",
        },
        result="{result: rows, rows_loaded, file_size_mb, source, format}",
    )(load)
    el(
        "df",
        "save",
        data={
            "destination": "file://path under the data dir (.csv/.json/.jsonl)",
            "input": "rows (default: the single upstream result)",
            "format": "csv | json | jsonl (optional)",
            "columns": "CSV column order",
        },
        result="{rows_saved, bytes, destination, format}",
    )(save)


__all__ = [
    "aggregate",
    "filter_",
    "load",
    "map_",
    "reduce_",
    "register",
    "save",
    "transform",
    "validate",
]
