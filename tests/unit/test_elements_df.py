"""The df standard elements of DESIGN §10: results with real values, and PF002 naming the
bad field (DESIGN §3) for every kind of bad input, including path escapes for load/save and
code-execution attempts in filter.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import time
from pathlib import Path
from typing import Any

import pytest

from packetflow.protocol.errors import PacketFlowError, is_client_error
from packetflow.reactor.context import Context
from packetflow.reactor.elements import contract, df
from packetflow.reactor.registry import Registry

D = "payload.packet.data"


def make_ctx(data_dir: Path, inputs: dict[str, Any] | None = None, ttl: float = 30) -> Context:
    return Context(
        packet_id="p",
        group="df",
        element="x",
        priority=5,
        deadline=time.monotonic() + ttl,
        logger=logging.getLogger("t"),
        data_dir=data_dir,
        inputs=inputs or {},
    )


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    return d


@pytest.fixture
def ctx(data_dir: Path) -> Context:
    return make_ctx(data_dir)


def fails(fn: Any, data: dict[str, Any], ctx: Context, code: str, field: str | None = None):
    with pytest.raises(PacketFlowError) as info:
        fn(data, ctx)
    err = info.value
    assert err.code == code, (err.code, err.message)
    if field is not None:
        assert err.field == f"{D}.{field}", err.field
    return err


# ---------------------------------------------------------------------------------------------
# registration


def test_register_adds_all_eight_df_elements_with_contracts() -> None:
    registry = Registry()
    df.register(registry)
    names = {spec.key for spec in registry}
    assert names == {
        f"df:{n}"
        for n in ("transform", "validate", "aggregate", "filter", "map", "reduce", "load", "save")
    }
    for spec in registry:
        assert spec.contract["data"] and spec.contract["result"]
        assert not spec.is_async and not spec.cpu_bound


# ---------------------------------------------------------------------------------------------
# df:transform


def test_transform_wire_example_message_3(ctx: Context) -> None:
    """PFAP "Complete Packet Submission Flow", messages 1 and 3."""
    out = df.transform(
        {
            "input": ["apple", "banana", "cherry"],
            "operation": "uppercase",
            "parameters": {"locale": "en-US"},
        },
        ctx,
    )
    assert out == {
        "result": ["APPLE", "BANANA", "CHERRY"],
        "operation_applied": "uppercase",
        "items_processed": 3,
    }
    json.dumps(out)


@pytest.mark.parametrize(
    ("op", "value", "params", "expected"),
    [
        ("uppercase", "hello world", {}, "HELLO WORLD"),
        ("lowercase", "HeLLo", {}, "hello"),
        ("trim", "  hi \n", {}, "hi"),
        ("trim", "--hi--", {"chars": "-"}, "hi"),
        ("title", "hello big world", {}, "Hello Big World"),
        ("reverse", "abc", {}, "cba"),
        ("length", "héllo", {}, 5),
        ("split", "a, b, c", {"separator": ", "}, ["a", "b", "c"]),
        ("split", " a  b ", {}, ["a", "b"]),
        ("split", "a-b-c", {"separator": "-", "maxsplit": 1}, ["a", "b-c"]),
        ("replace", "a-b-c", {"old": "-", "new": "+"}, "a+b+c"),
        ("replace", "a-b-c", {"old": "-", "count": 1}, "ab-c"),
        ("round", 2.675, {"digits": 2}, 2.68),
        ("round", 2.5, {}, 3),
        ("round", -2.5, {}, -3),
        ("round", 1234.5, {"digits": -2}, 1200),
        ("round", 7, {"digits": 2}, 7),
        ("to_number", " 42 ", {}, 42),
        ("to_number", "3.5e2", {}, 350.0),
        ("to_number", 1.5, {}, 1.5),
        ("json_parse", '{"a": [1, 2]}', {}, {"a": [1, 2]}),
        ("json_stringify", {"b": 1, "a": [1]}, {"sort_keys": True}, '{"a":[1],"b":1}'),
    ],
)
def test_transform_item_operations_on_one_value(
    ctx: Context, op: str, value: Any, params: dict[str, Any], expected: Any
) -> None:
    out = df.transform({"input": value, "operation": op, "parameters": params}, ctx)
    assert out["result"] == expected
    assert type(out["result"]) is type(expected)
    assert out["operation_applied"] == op
    assert out["items_processed"] == 1


def test_transform_reverse_on_a_list_of_strings_reverses_each_string(ctx: Context) -> None:
    out = df.transform({"input": ["abc", "xy"], "operation": "reverse"}, ctx)
    assert out["result"] == ["cba", "yx"]
    assert out["items_processed"] == 2


def test_transform_scope_list_acts_on_the_list_itself(ctx: Context) -> None:
    data: dict[str, Any] = {"input": ["abc", "xy", 3], "parameters": {"scope": "list"}}
    assert df.transform({**data, "operation": "reverse"}, ctx)["result"] == [3, "xy", "abc"]
    assert df.transform({**data, "operation": "length"}, ctx)["result"] == 3
    assert df.transform({**data, "operation": "json_stringify"}, ctx)["result"] == '["abc","xy",3]'


def test_transform_length_and_trim_on_lists(ctx: Context) -> None:
    assert df.transform({"input": ["ab", [1, 2, 3]], "operation": "length"}, ctx)["result"] == [
        2,
        3,
    ]
    assert df.transform({"input": [" a ", "b "], "operation": "trim"}, ctx)["result"] == [
        "a",
        "b",
    ]


def test_transform_list_operations(ctx: Context) -> None:
    assert df.transform({"input": [3, 1.5, 2], "operation": "sort"}, ctx)["result"] == [1.5, 2, 3]
    out = df.transform(
        {"input": ["b", "c", "a"], "operation": "sort", "parameters": {"reverse": True}}, ctx
    )
    assert out["result"] == ["c", "b", "a"]
    assert out["items_processed"] == 3
    recs = [{"n": 2}, {"n": None}, {"n": 1}, {}]
    out = df.transform({"input": recs, "operation": "sort", "parameters": {"by": "n"}}, ctx)
    assert out["result"] == [{"n": 1}, {"n": 2}, {"n": None}, {}]
    out = df.transform({"input": [1, 1.0, True, "1", 1, "a", "a"], "operation": "unique"}, ctx)
    assert out["result"] == [1, True, "1", "a"]
    recs = [{"k": 1, "v": "a"}, {"k": 1, "v": "b"}, {"k": 2, "v": "c"}]
    out = df.transform({"input": recs, "operation": "unique", "parameters": {"by": "k"}}, ctx)
    assert out["result"] == [{"k": 1, "v": "a"}, {"k": 2, "v": "c"}]
    out = df.transform(
        {"input": ["a", 1, 2.5], "operation": "join", "parameters": {"separator": "|"}}, ctx
    )
    assert out["result"] == "a|1|2.5"


def test_transform_records_with_fields_including_dotted_paths(ctx: Context) -> None:
    recs = [
        {"name": " ann ", "addr": {"city": "oslo"}, "n": 1},
        {"name": None, "addr": {"city": "rome"}},
        {"addr": {}},
    ]
    out = df.transform(
        {"input": recs, "operation": "uppercase", "parameters": {"fields": ["name", "addr.city"]}},
        ctx,
    )
    assert out["result"] == [
        {"name": " ANN ", "addr": {"city": "OSLO"}, "n": 1},
        {"name": None, "addr": {"city": "ROME"}},
        {"addr": {}},
    ]
    assert out["items_processed"] == 3
    assert recs[0]["addr"]["city"] == "oslo", "the input must not be mutated"
    single = df.transform(
        {"input": {"a": "x", "b": "y"}, "operation": "uppercase", "parameters": {"fields": "a"}},
        ctx,
    )
    assert single["result"] == {"a": "X", "b": "y"}


def test_transform_input_comes_from_the_single_upstream_result(data_dir: Path) -> None:
    """DESIGN §7/§10 input rule."""
    ctx = make_ctx(data_dir, inputs={"load": {"result": ["a", "b"], "rows_loaded": 2}})
    assert df.transform({"operation": "uppercase"}, ctx)["result"] == ["A", "B"]


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"input": "x"}, "operation"),
        ({"input": "x", "operation": "normalize_addresses"}, "operation"),
        ({"input": "x", "operation": 5}, "operation"),
        ({"operation": "uppercase"}, "input"),
        ({"input": ["a", 5], "operation": "uppercase"}, "input[1]"),
        ({"input": [{"a": "x"}], "operation": "uppercase"}, "parameters.fields"),
        ({"input": {"a": "x"}, "operation": "trim"}, "parameters.fields"),
        ({"input": [{"a": 1}], "operation": "lowercase", "parameters": {"fields": ["a"]}},
         "input[0].a"),
        ({"input": ["a", "b"], "operation": "uppercase", "parameters": {"fields": ["a"]}},
         "input[0]"),
        ({"input": "x", "operation": "uppercase", "parameters": "loud"}, "parameters"),
        ({"input": "x", "operation": "uppercase", "parameters": {"fields": [1]}},
         "parameters.fields[0]"),
        ({"input": "x", "operation": "replace", "parameters": {}}, "parameters.old"),
        ({"input": "x", "operation": "replace", "parameters": {"old": ""}}, "parameters.old"),
        ({"input": "x", "operation": "replace", "parameters": {"old": "x", "new": 1}},
         "parameters.new"),
        ({"input": "x", "operation": "split", "parameters": {"separator": ""}},
         "parameters.separator"),
        ({"input": 1.5, "operation": "round", "parameters": {"digits": True}}, "parameters.digits"),
        ({"input": 1.5, "operation": "round", "parameters": {"digits": 99}}, "parameters.digits"),
        ({"input": "1.5", "operation": "round"}, "input"),
        ({"input": ["1", "abc"], "operation": "to_number"}, "input[1]"),
        ({"input": "nan", "operation": "to_number"}, "input"),
        ({"input": "Infinity", "operation": "to_number"}, "input"),
        ({"input": True, "operation": "to_number"}, "input"),
        ({"input": "{bad", "operation": "json_parse"}, "input"),
        ({"input": "NaN", "operation": "json_parse"}, "input"),
        ({"input": "[" * 100_000, "operation": "json_parse"}, "input"),
        ({"input": 5, "operation": "length"}, "input"),
        ({"input": "abc", "operation": "sort"}, "input"),
        ({"input": [1, "a"], "operation": "sort"}, "input[1]"),
        ({"input": [{"n": 1}], "operation": "sort"}, "parameters.by"),
        ({"input": [{"n": 1}, 5], "operation": "sort", "parameters": {"by": "n"}}, "input[1]"),
        ({"input": ["a", {"b": 1}], "operation": "join"}, "input[1]"),
        ({"input": ["a"], "operation": "uppercase", "parameters": {"scope": "list"}},
         "parameters.scope"),
        ({"input": ["a"], "operation": "reverse", "parameters": {"scope": "all"}},
         "parameters.scope"),
    ],
)  # fmt: skip
def test_transform_bad_input_is_pf002_naming_the_field(
    ctx: Context, data: dict[str, Any], field: str
) -> None:
    err = fails(df.transform, data, ctx, "PF002", field)
    assert err.validation_rule
    assert not err.retryable


# ---------------------------------------------------------------------------------------------
# df:validate

SCHEMA = {
    "type": "object",
    "required": ["id", "email"],
    "properties": {
        "id": {"type": "integer", "minimum": 1},
        "email": {"type": "string", "format": "email"},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
}


def test_validate_reports_each_bad_row_with_its_path(ctx: Context) -> None:
    rows = [
        {"id": 1, "email": "a@example.com"},
        {"id": 0, "email": "a@example.com", "tags": ["x", 3]},
        {"email": "not-an-email"},
        {"id": 2, "email": "b@example.com"},
    ]
    out = df.validate({"input": rows, "schema": SCHEMA}, ctx)
    assert out["valid"] is False
    assert out["valid_rows"] == 2
    assert out["invalid_rows"] == 2
    assert out["result"] == [rows[0], rows[3]]
    got = {(e["row"], e["path"], e["keyword"]) for e in out["errors"]}
    assert got == {
        (1, "$.id", "minimum"),
        (1, "$.tags[1]", "type"),
        (2, "$", "required"),
        (2, "$.email", "format"),
    }
    assert all(e["message"] for e in out["errors"])
    assert out["errors_truncated"] is False
    json.dumps(out)


def test_validate_a_single_record_and_boolean_schema(ctx: Context) -> None:
    out = df.validate({"input": {"id": 5, "email": "x@y.org"}, "schema": SCHEMA}, ctx)
    assert out == {
        "valid": True,
        "valid_rows": 1,
        "invalid_rows": 0,
        "errors": [],
        "errors_truncated": False,
        "result": {"id": 5, "email": "x@y.org"},
    }
    out = df.validate({"input": {"id": 5}, "schema": SCHEMA}, ctx)
    assert out["valid"] is False and out["result"] is None
    assert df.validate({"input": [1, 2], "schema": True}, ctx)["valid_rows"] == 2


def test_validate_caps_the_error_list(ctx: Context) -> None:
    rows = [{"id": "x"}] * (df.MAX_VALIDATION_ERRORS + 5)
    out = df.validate({"input": rows, "schema": {"properties": {"id": {"type": "integer"}}}}, ctx)
    assert len(out["errors"]) == df.MAX_VALIDATION_ERRORS
    assert out["invalid_rows"] == df.MAX_VALIDATION_ERRORS + 5
    assert out["errors_truncated"] is True


def test_validate_uses_the_upstream_load_result(data_dir: Path) -> None:
    ctx = make_ctx(data_dir, inputs={"load": {"result": [{"id": 1, "email": "a@b.co"}]}})
    assert df.validate({"schema": SCHEMA}, ctx)["valid"] is True


@pytest.mark.parametrize(
    ("data", "field", "received"),
    [
        ({"input": {}, "schema": "customer_schema_v2"}, "schema", "string"),
        ({"input": {}, "schema": [1]}, "schema", "array"),
        ({"input": {}}, "schema", "missing"),
        ({"input": {}, "schema": {"type": 5}}, "schema", "object"),
        ({"input": {}, "schema": {"$ref": "https://example.com/s.json"}}, "schema", "object"),
        ({"input": {}, "schema": {"$ref": "#/$defs/missing"}}, "schema", "object"),
        ({"schema": {}}, "input", "missing"),
    ],
)
def test_validate_bad_schema_is_pf002_on_schema(
    ctx: Context, data: dict[str, Any], field: str, received: str
) -> None:
    err = fails(df.validate, data, ctx, "PF002", field)
    assert err.received_type == received


# ---------------------------------------------------------------------------------------------
# df:aggregate

SALES = [
    {"region": "n", "kind": "a", "amount": 10, "qty": 1},
    {"region": "s", "kind": "a", "amount": 5.5, "qty": 2},
    {"region": "n", "kind": "b", "amount": 20, "qty": None},
    {"region": "n", "kind": "a", "amount": 30},
    {"region": "s", "kind": "b", "amount": 4.5, "qty": 3},
]


def test_aggregate_groups_and_computes_every_op(ctx: Context) -> None:
    aggs = {
        "rows": {"op": "count"},
        "with_qty": {"op": "count", "field": "qty"},
        "total": {"op": "sum", "field": "amount"},
        "avg": {"op": "avg", "field": "amount"},
        "lo": {"op": "min", "field": "amount"},
        "hi": {"op": "max", "field": "amount"},
        "med": {"op": "median", "field": "amount"},
        "sd": {"op": "stddev", "field": "amount"},
        "qty": {"op": "sum", "field": "qty"},
    }
    out = df.aggregate({"input": SALES, "group_by": "region", "aggregations": aggs}, ctx)
    assert out["groups"] == 2
    north, south = out["result"]
    assert north == {
        "region": "n",
        "rows": 3,
        "with_qty": 1,
        "total": 60,
        "avg": 20.0,
        "lo": 10,
        "hi": 30,
        "med": 20.0,
        "sd": pytest.approx(statistics.stdev([10, 20, 30])),
        "qty": 1,
    }
    assert south["region"] == "s"
    assert south["total"] == pytest.approx(10.0)
    assert south["med"] == pytest.approx(5.0)
    assert south["qty"] == 5


def test_aggregate_by_several_fields_and_without_group_by(ctx: Context) -> None:
    out = df.aggregate(
        {
            "input": SALES,
            "group_by": ["region", "kind"],
            "aggregations": {"n": {"op": "count"}, "s": {"op": "sum", "field": "amount"}},
        },
        ctx,
    )
    assert out["result"] == [
        {"region": "n", "kind": "a", "n": 2, "s": 40},
        {"region": "s", "kind": "a", "n": 1, "s": 5.5},
        {"region": "n", "kind": "b", "n": 1, "s": 20},
        {"region": "s", "kind": "b", "n": 1, "s": 4.5},
    ]
    whole = df.aggregate(
        {"input": SALES, "aggregations": {"m": {"op": "max", "field": "region"}}}, ctx
    )
    assert whole["result"] == [{"m": "s"}]
    empty = df.aggregate(
        {"input": [], "aggregations": {"n": {"op": "count"}, "a": {"op": "avg", "field": "x"}}},
        ctx,
    )
    assert empty["result"] == [{"n": 0, "a": None}]
    assert df.aggregate({"input": [], "group_by": "g"}, ctx)["result"] == []
    assert df.aggregate({"input": SALES, "group_by": "kind"}, ctx)["result"] == [
        {"kind": "a", "count": 3},
        {"kind": "b", "count": 2},
    ]


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"input": "x"}, "input"),
        ({"input": [{"a": 1}, 2]}, "input[1]"),
        ({"input": [], "group_by": 5}, "group_by"),
        ({"input": [], "group_by": ["a", ""]}, "group_by[1]"),
        ({"input": [], "aggregations": []}, "aggregations"),
        ({"input": [], "aggregations": {"t": 5}}, "aggregations.t"),
        ({"input": [], "aggregations": {"t": {"op": "mode", "field": "a"}}}, "aggregations.t.op"),
        ({"input": [], "aggregations": {"t": {"op": "sum"}}}, "aggregations.t.field"),
        ({"input": [], "aggregations": {"t": {"op": "sum", "field": 3}}}, "aggregations.t.field"),
        ({"input": [], "group_by": "t", "aggregations": {"t": {"op": "count"}}}, "aggregations.t"),
        ({"input": [{"v": 1}, {"v": "2"}], "aggregations": {"s": {"op": "sum", "field": "v"}}},
         "input[1].v"),
        ({"input": [{"v": True}], "aggregations": {"s": {"op": "avg", "field": "v"}}},
         "input[0].v"),
        ({"input": [{"v": 1}, {"v": "a"}], "aggregations": {"m": {"op": "min", "field": "v"}}},
         "input[1].v"),
    ],
)  # fmt: skip
def test_aggregate_bad_input_is_pf002(ctx: Context, data: dict[str, Any], field: str) -> None:
    fails(df.aggregate, data, ctx, "PF002", field)


# ---------------------------------------------------------------------------------------------
# df:filter

PEOPLE = [
    {"name": "ann", "age": 31, "tags": ["admin", "x"], "addr": {"city": "Oslo"}},
    {"name": "bob", "age": 17, "tags": [], "addr": {"city": "Rome"}},
    {"name": "cy", "age": "40", "addr": None},
    {"name": "dee", "age": 65, "tags": ["x"]},
]


def names(out: dict[str, Any]) -> list[str]:
    return [r["name"] for r in out["result"]]


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ([{"field": "age", "op": "ge", "value": 18}], ["ann", "dee"]),
        ([{"field": "age", "op": "lt", "value": 18}], ["bob"]),
        ([{"field": "age", "op": "le", "value": 31}], ["ann", "bob"]),
        ([{"field": "age", "op": "gt", "value": "3"}], ["cy"]),
        ([{"field": "name", "op": "eq", "value": "bob"}], ["bob"]),
        ([{"field": "name", "op": "ne", "value": "bob"}], ["ann", "cy", "dee"]),
        ([{"field": "name", "op": "in", "value": ["ann", "cy", 7]}], ["ann", "cy"]),
        ([{"field": "tags", "op": "contains", "value": "x"}], ["ann", "dee"]),
        ([{"field": "name", "op": "contains", "value": "e"}], ["dee"]),
        ([{"field": "name", "op": "startswith", "value": "b"}], ["bob"]),
        ([{"field": "addr.city", "op": "eq", "value": "Oslo"}], ["ann"]),
        ([{"field": "addr.city", "op": "ne", "value": "Oslo"}], ["bob", "cy", "dee"]),
        ([{"field": "addr", "op": "exists"}], ["ann", "bob"]),
        ([{"field": "tags", "op": "exists", "value": False}], ["cy"]),
        ([{"field": "age", "op": "ge", "value": 18}, {"field": "tags", "op": "contains",
          "value": "admin"}], ["ann"]),
        ([], ["ann", "bob", "cy", "dee"]),
    ],
)  # fmt: skip
def test_filter_ops(ctx: Context, where: list[dict[str, Any]], expected: list[str]) -> None:
    out = df.filter_({"input": PEOPLE, "where": where}, ctx)
    assert names(out) == expected
    assert out["kept"] == len(expected)
    assert out["dropped"] == len(PEOPLE) - len(expected)


def test_filter_match_any_and_scalar_items(ctx: Context) -> None:
    out = df.filter_(
        {
            "input": PEOPLE,
            "match": "any",
            "where": [
                {"field": "name", "op": "eq", "value": "cy"},
                {"field": "age", "op": "gt", "value": 60},
            ],
        },
        ctx,
    )
    assert names(out) == ["cy", "dee"]
    out = df.filter_({"input": [1, True, 1.0, "1", 5], "where": [{"op": "eq", "value": 1}]}, ctx)
    assert out["result"] == [1, 1.0], "booleans are not numbers in JSON"
    out = df.filter_({"input": [3, 8, None, "x"], "where": [{"op": "gt", "value": 4}]}, ctx)
    assert out == {"result": [8], "kept": 1, "dropped": 3}


@pytest.mark.parametrize(
    "where",
    [
        "__import__('os').system('touch PWNED')",
        "age > 18",
        {"field": "age", "op": "gt", "value": 1},
        None,
    ],
)
def test_filter_never_evaluates_an_expression(
    ctx: Context, data_dir: Path, monkeypatch: pytest.MonkeyPatch, where: Any
) -> None:
    """DESIGN §10: a handler never evals user input; `where` must be a list of objects."""
    monkeypatch.chdir(data_dir)
    err = fails(df.filter_, {"input": PEOPLE, "where": where}, ctx, "PF002", "where")
    assert err.expected_type.startswith("array")
    assert not (data_dir / "PWNED").exists()


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"input": PEOPLE}, "where"),
        ({"input": PEOPLE, "where": ["age > 1"]}, "where[0]"),
        ({"input": PEOPLE, "where": [{"field": "a", "op": "eq", "value": 1},
                                     {"field": "a", "op": "__import__('os')", "value": 1}]},
         "where[1].op"),
        ({"input": PEOPLE, "where": [{"field": "a", "op": "regex", "value": ".*"}]}, "where[0].op"),
        ({"input": PEOPLE, "where": [{"field": "a", "value": 1}]}, "where[0].op"),
        ({"input": PEOPLE, "where": [{"field": "a", "op": "eq"}]}, "where[0].value"),
        ({"input": PEOPLE, "where": [{"field": 3, "op": "eq", "value": 1}]}, "where[0].field"),
        ({"input": PEOPLE, "where": [{"field": "a", "op": "in", "value": "abc"}]},
         "where[0].value"),
        ({"input": PEOPLE, "where": [{"field": "a", "op": "lt", "value": [1]}]}, "where[0].value"),
        ({"input": PEOPLE, "where": [{"field": "a", "op": "startswith", "value": 1}]},
         "where[0].value"),
        ({"input": PEOPLE, "where": [{"field": "a", "op": "exists", "value": "yes"}]},
         "where[0].value"),
        ({"input": PEOPLE, "where": [], "match": "some"}, "match"),
        ({"input": {"a": 1}, "where": []}, "input"),
        ({"where": []}, "input"),
    ],
)  # fmt: skip
def test_filter_bad_input_is_pf002(ctx: Context, data: dict[str, Any], field: str) -> None:
    fails(df.filter_, data, ctx, "PF002", field)


# ---------------------------------------------------------------------------------------------
# df:map


def test_map_renames_applies_ops_constants_and_defaults(ctx: Context) -> None:
    rows = [
        {"first": "ann", "price": "12.50", "meta": {"sku": "a-1"}},
        {"first": "bob", "meta": {"sku": "b-2"}},
    ]
    out = df.map_(
        {
            "input": rows,
            "fields": {
                "name": {"op": "title", "field": "first"},
                "raw": "first",
                "price": {"op": "to_number", "field": "price", "default": 0},
                "sku": {"op": "replace", "field": "meta.sku", "old": "-", "new": ""},
                "source": {"value": "import"},
                "missing": "nope",
            },
        },
        ctx,
    )
    assert out["items_processed"] == 2
    assert out["result"] == [
        {"name": "Ann", "raw": "ann", "price": 12.5, "sku": "a1", "source": "import",
         "missing": None},
        {"name": "Bob", "raw": "bob", "price": 0, "sku": "b2", "source": "import",
         "missing": None},
    ]  # fmt: skip


def test_map_keep_and_single_record(ctx: Context) -> None:
    out = df.map_({"input": {"a": "x", "b": 1}, "fields": {"A": {"op": "uppercase", "field": "a"}},
                   "keep": True}, ctx)  # fmt: skip
    assert out["result"] == {"a": "x", "b": 1, "A": "X"}


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"input": [{}]}, "fields"),
        ({"input": [{}], "fields": "a"}, "fields"),
        ({"input": [{}], "fields": {}}, "fields"),
        ({"input": [{}], "fields": {"o": 5}}, "fields.o"),
        ({"input": [{}], "fields": {"o": {"op": "exec", "field": "a"}}}, "fields.o.op"),
        ({"input": [{}], "fields": {"o": {"op": "uppercase"}}}, "fields.o.field"),
        ({"input": [{}], "fields": {"o": {"op": "replace", "field": "a"}}}, "fields.o.old"),
        ({"input": [{}], "fields": {"o": {"op": "round", "field": "a", "digits": "2"}}},
         "fields.o.digits"),
        ({"input": [{"n": "a"}, {"n": 5}], "fields": {"o": {"op": "uppercase", "field": "n"}}},
         "input[1].n"),
        ({"input": [{"n": 1}, "x"], "fields": {"o": "n"}}, "input[1]"),
        ({"input": [{}], "fields": {"o": "n"}, "keep": 1}, "keep"),
    ],
)  # fmt: skip
def test_map_bad_input_is_pf002(ctx: Context, data: dict[str, Any], field: str) -> None:
    fails(df.map_, data, ctx, "PF002", field)


# ---------------------------------------------------------------------------------------------
# df:reduce


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"input": [1, 2, 3.5], "op": "sum"}, 6.5),
        ({"input": [1, 2, 3], "op": "sum"}, 6),
        ({"input": [], "op": "sum"}, 0),
        ({"input": [2, 3, 4], "op": "product"}, 24),
        ({"input": [], "op": "product"}, 1),
        ({"input": [5, -1, 3], "op": "min"}, -1),
        ({"input": ["b", "c", "a"], "op": "max"}, "c"),
        ({"input": [], "op": "max"}, None),
        ({"input": [1, None, "x", {}], "op": "count"}, 3),
        ({"input": ["a", "b"], "op": "concat", "separator": ", "}, "a, b"),
        ({"input": [[1], [2, 3], []], "op": "concat"}, [1, 2, 3]),
        ({"input": [{"a": 1, "b": {"x": 1}}, {"b": {"y": 2}}], "op": "merge"},
         {"a": 1, "b": {"y": 2}}),
        ({"input": [{"a": 1, "b": {"x": 1}}, {"b": {"y": 2}}], "op": "merge", "deep": True},
         {"a": 1, "b": {"x": 1, "y": 2}}),
        ({"input": [{"v": 2}, {"v": None}, {}, {"v": 5}], "op": "sum", "field": "v"}, 7),
        ({"input": [{"o": {"v": 2}}, {"o": {"v": 3}}], "op": "max", "field": "o.v"}, 3),
    ],
)  # fmt: skip
def test_reduce_ops(ctx: Context, data: dict[str, Any], expected: Any) -> None:
    out = df.reduce_(data, ctx)
    assert out["result"] == expected
    assert type(out["result"]) is type(expected)


def test_reduce_float_sum_is_exact_and_overflow_is_pf005(ctx: Context) -> None:
    assert df.reduce_({"input": [0.1] * 10, "op": "sum"}, ctx)["result"] == 1.0
    err = fails(df.reduce_, {"input": [1e200, 1e200], "op": "product"}, ctx, "PF005")
    assert err.details["reason"] == "overflow"


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"input": [1]}, "op"),
        ({"input": [1], "op": "avg"}, "op"),
        ({"input": 5, "op": "sum"}, "input"),
        ({"input": [1, "2"], "op": "sum"}, "input[1]"),
        ({"input": [1, True], "op": "product"}, "input[1]"),
        ({"input": [1, "a"], "op": "min"}, "input[1]"),
        ({"input": [[1], "a"], "op": "concat"}, "input[1]"),
        ({"input": ["a", 1], "op": "concat"}, "input[1]"),
        ({"input": [{}, []], "op": "merge"}, "input[1]"),
        ({"input": [{"v": 1}, {"v": "x"}], "op": "sum", "field": "v"}, "input[1].v"),
        ({"input": [], "op": "sum", "field": 1}, "field"),
        ({"input": [], "op": "concat", "separator": 1}, "separator"),
    ],
)
def test_reduce_bad_input_is_pf002(ctx: Context, data: dict[str, Any], field: str) -> None:
    fails(df.reduce_, data, ctx, "PF002", field)


# ---------------------------------------------------------------------------------------------
# df:load


def test_load_csv_infers_json_numbers_only(ctx: Context, data_dir: Path) -> None:
    (data_dir / "in").mkdir()
    (data_dir / "in" / "people.csv").write_text(
        "name,age,zip,score,note\r\nann,31,007,1.5,\r\nbob,-2,10,1e3\r\n", encoding="utf-8"
    )
    out = df.load({"source": "file://in/people.csv"}, ctx)
    assert out["rows_loaded"] == 2
    assert out["result"][0] == {"name": "ann", "age": 31, "zip": "007", "score": 1.5, "note": None}
    assert out["result"][1]["score"] == 1000.0
    assert out["result"][1]["note"] is None, "a short row gets nulls"
    assert out["file_size_mb"] == round((data_dir / "in" / "people.csv").stat().st_size / 2**20, 6)
    assert out["source"] == "file://in/people.csv"
    raw = df.load({"source": "file://in/people.csv", "infer_types": False}, ctx)
    assert raw["result"][0]["age"] == "31"
    json.dumps(out)


def test_load_json_jsonl_absolute_inline_and_dotdot_inside(ctx: Context, data_dir: Path) -> None:
    (data_dir / "a.json").write_text('[{"x": 1}, {"x": 2}]')
    (data_dir / "one.json").write_text('{"x": 1}')
    (data_dir / "b.jsonl").write_text('{"x": 1}\n\n{"x": 2}\n')
    (data_dir / "semi.csv").write_text("a;b\n1;2\n")
    (data_dir / "sub").mkdir()
    assert df.load({"source": "file://a.json"}, ctx)["result"] == [{"x": 1}, {"x": 2}]
    assert df.load({"source": "file://one.json"}, ctx)["result"] == [{"x": 1}]
    assert df.load({"source": "file://b.jsonl"}, ctx)["rows_loaded"] == 2
    assert df.load({"source": f"file://{data_dir}/a.json"}, ctx)["rows_loaded"] == 2
    assert df.load({"source": "file://sub/../a.json"}, ctx)["rows_loaded"] == 2
    assert df.load({"source": "file://semi.csv", "delimiter": ";"}, ctx)["result"] == [
        {"a": 1, "b": 2}
    ]
    (data_dir / "c.txt").write_text('{"x": 1}\n')
    assert df.load({"source": "file://c.txt", "format": "jsonl"}, ctx)["result"] == [{"x": 1}]
    inline = df.load({"rows": [{"a": 1}]}, ctx)
    assert inline == {"result": [{"a": 1}], "rows_loaded": 1, "file_size_mb": 0.0}


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    secret = tmp_path / "secret.json"
    secret.write_text('[{"password": "hunter2"}]')
    return secret


ESCAPES = ["dotdot", "dotdot_encoded", "absolute", "symlink_file", "symlink_dir", "etc_passwd"]


def escaping_uri(how: str, data_dir: Path, outside: Path, **more: str) -> str:
    """A file:// URI that leads from ``data_dir`` to ``outside`` the way ``how`` names: one of
    ESCAPES (the symlinks are made here) or one of ``more``."""
    if how == "symlink_file":
        (data_dir / "link.json").symlink_to(outside)
        return "file://link.json"
    if how == "symlink_dir":
        (data_dir / "d").symlink_to(outside.parent)
        return f"file://d/{outside.name}"
    return {
        "dotdot": "file://../secret.json",
        "dotdot_encoded": "file://%2e%2e/secret.json",
        "absolute": f"file://{outside}",
        "etc_passwd": "file:///etc/passwd",
        **more,
    }[how]


@pytest.mark.parametrize("how", [*ESCAPES, "data_dir_itself", "root"])
def test_load_outside_the_data_dir_is_pf002_path_escape(
    ctx: Context, data_dir: Path, outside: Path, how: str
) -> None:
    """DESIGN §10: a handler never touches files outside the reactor's data directory."""
    source = escaping_uri(how, data_dir, outside, data_dir_itself="file://.", root="file:///")
    err = fails(df.load, {"source": source}, ctx, "PF002", "source")
    assert err.validation_rule == "path_escape"
    assert "hunter2" not in err.message


@pytest.mark.parametrize(
    ("data", "rule"),
    [
        ({"source": "s3://data-bucket/input.csv"}, "scheme"),
        ({"source": "/etc/passwd"}, "scheme"),
        ({"source": "data.csv"}, "scheme"),
        ({"source": 5}, "type"),
        ({"source": "file://"}, "path"),
        ({"source": "file://a\x00.csv"}, "path"),
        ({"source": "file://notes.txt"}, "file_format"),
        ({}, "required_field"),
    ],
)
def test_load_bad_source_is_pf002(ctx: Context, data: dict[str, Any], rule: str) -> None:
    err = fails(df.load, data, ctx, "PF002", "source")
    assert err.validation_rule == rule


def test_load_other_bad_fields(ctx: Context) -> None:
    fails(df.load, {"rows": "a"}, ctx, "PF002", "rows")
    fails(df.load, {"rows": [], "source": "file://a.csv"}, ctx, "PF002", "rows")
    fails(df.load, {"source": "file://a.csv", "delimiter": ";;"}, ctx, "PF002", "delimiter")
    fails(df.load, {"source": "file://a.csv", "format": "xml"}, ctx, "PF002", "format")


def test_load_missing_file_is_the_clients_non_retryable_pf005(ctx: Context) -> None:
    """A missing file fails the same way on every reactor: not retried, not counted
    against the reactor (hardening issue 5)."""
    err = fails(df.load, {"source": "file://nope/missing.csv"}, ctx, "PF005")
    assert not err.retryable
    assert is_client_error(err.code, err.retryable)
    assert err.details == {"reason": "file_not_found", "path": "nope/missing.csv"}


def test_load_unreadable_files_are_non_retryable_pf005(ctx: Context, data_dir: Path) -> None:
    (data_dir / "bad.jsonl").write_text('{"a": 1}\n{oops\n')
    (data_dir / "bad.json").write_text("[1, NaN]")
    (data_dir / "latin1.csv").write_bytes(b"a\n\xe9\xff\n")
    (data_dir / "dir.json").mkdir()
    (data_dir / "long.csv").write_text("a,b\n1,2\n1,2,3\n")
    for name, reason in [
        ("bad.jsonl", "parse_error"),
        ("bad.json", "parse_error"),
        ("latin1.csv", "encoding_error"),
        ("dir.json", "not_a_file"),
        ("long.csv", "parse_error"),
    ]:
        err = fails(df.load, {"source": f"file://{name}"}, ctx, "PF005")
        assert err.details["reason"] == reason
        assert not err.retryable
    assert fails(df.load, {"source": "file://bad.jsonl"}, ctx, "PF005").details["line"] == 2
    assert fails(df.load, {"source": "file://long.csv"}, ctx, "PF005").details["line"] == 3


def test_load_refuses_files_over_the_limit(
    ctx: Context, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(df, "MAX_LOAD_BYTES", 10)
    (data_dir / "big.json").write_text("[" + "1," * 20 + "1]")
    err = fails(df.load, {"source": "file://big.json"}, ctx, "PF005")
    assert err.details["reason"] == "file_too_large"


# ---------------------------------------------------------------------------------------------
# df:save

ROWS = [
    {"name": "ann", "age": 31, "tags": ["a"], "ok": True},
    {"name": 'bo, "b"', "age": None, "zip": "007"},
]


@pytest.mark.parametrize("ext", ["csv", "json", "jsonl"])
def test_save_then_load_round_trips(ctx: Context, data_dir: Path, ext: str) -> None:
    out = df.save({"destination": f"file://out/rows.{ext}", "input": ROWS}, ctx)
    path = data_dir / "out" / f"rows.{ext}"
    assert out == {
        "rows_saved": 2,
        "bytes": path.stat().st_size,
        "destination": f"file://out/rows.{ext}",
        "format": ext,
    }
    loaded = df.load({"source": f"file://out/rows.{ext}"}, ctx)["result"]
    if ext == "csv":
        assert loaded == [
            {"name": "ann", "age": 31, "tags": '["a"]', "ok": "true", "zip": None},
            {"name": 'bo, "b"', "age": None, "tags": None, "ok": None, "zip": "007"},
        ]
    else:
        assert loaded == ROWS
    assert [p.name for p in path.parent.iterdir()] == [path.name], "no temp file left behind"


def test_save_takes_the_upstream_result_and_overwrites_atomically(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = make_ctx(data_dir, inputs={"t": {"result": [{"a": 1}], "items_processed": 1}})
    dest = data_dir / "x.json"
    dest.write_text("old")
    os.chmod(dest, 0o640)
    assert df.save({"destination": "file://x.json"}, ctx)["rows_saved"] == 1
    assert json.loads(dest.read_text()) == [{"a": 1}]
    assert dest.stat().st_mode & 0o777 == 0o640

    def broken_replace(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(df.os, "replace", broken_replace)
    err = fails(df.save, {"destination": "file://x.json", "input": [1, 2]}, ctx, "PF005")
    assert err.details["reason"] == "write_error"
    assert json.loads(dest.read_text()) == [{"a": 1}], "the old file is intact"
    assert [p.name for p in data_dir.iterdir()] == ["x.json"], "the temp file was removed"


def test_save_csv_columns_and_single_record(ctx: Context, data_dir: Path) -> None:
    df.save({"destination": "file://c.csv", "input": ROWS, "columns": ["age", "name"]}, ctx)
    assert (data_dir / "c.csv").read_text().splitlines() == ["age,name", "31,ann", ',"bo, ""b"""']
    out = df.save({"destination": "file://one.jsonl", "input": {"a": 1}}, ctx)
    assert out["rows_saved"] == 1
    assert (data_dir / "one.jsonl").read_text() == '{"a": 1}\n'


@pytest.mark.parametrize(
    "how", ["dotdot", "absolute", "symlink_file", "symlink_dir", "data_dir_itself"]
)
def test_save_outside_the_data_dir_is_pf002_path_escape(
    ctx: Context, data_dir: Path, outside: Path, how: str
) -> None:
    before = outside.read_text()
    dest = escaping_uri(how, data_dir, outside, data_dir_itself=f"file://{data_dir}")
    err = fails(df.save, {"destination": dest, "input": [1]}, ctx, "PF002", "destination")
    assert err.validation_rule == "path_escape"
    assert outside.read_text() == before
    assert sorted(p.name for p in outside.parent.iterdir()) == sorted(["data", "secret.json"]), (
        "nothing was written outside"
    )


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"input": [1]}, "destination"),
        ({"destination": "s3://bucket/out.csv", "input": [1]}, "destination"),
        ({"destination": "file://out.parquet", "input": [1]}, "destination"),
        ({"destination": "file://out.csv", "input": [{"a": 1}, 2]}, "input[1]"),
        ({"destination": "file://out.csv", "input": "text"}, "input"),
        ({"destination": "file://out.csv", "input": [{"a": 1}], "columns": "a"}, "columns"),
        ({"destination": "file://out.json"}, "input"),
    ],
)
def test_save_bad_input_is_pf002(ctx: Context, data: dict[str, Any], field: str) -> None:
    fails(df.save, data, ctx, "PF002", field)


def test_save_onto_a_directory_is_pf005(ctx: Context, data_dir: Path) -> None:
    (data_dir / "d.json").mkdir()
    err = fails(df.save, {"destination": "file://d.json", "input": []}, ctx, "PF005")
    assert err.details["reason"] == "not_a_file"


# ---------------------------------------------------------------------------------------------
# deadlines


def test_long_loops_stop_at_the_deadline_with_retryable_pf005(data_dir: Path) -> None:
    """DESIGN §10 handler timeouts: PF005 with reason "timeout", retry_possible true."""
    ctx = make_ctx(data_dir, ttl=-1)
    data = {"input": ["a"] * (contract.DEADLINE_CHECK_EVERY + 1), "operation": "uppercase"}
    err = fails(df.transform, data, ctx, "PF005")
    assert err.details == {"reason": "timeout"}
    assert err.retryable
