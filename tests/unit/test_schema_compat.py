"""Schema-level resolution verdict (``resolve.incompatibility``): which writer schemas can be
read as a declared schema at all. Pairs that resolve only for some data count as resolving."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from headwater.schemas.catalog import EVENT_TYPE_NAMES, event_type
from headwater.schemas.layout import expanded
from headwater.schemas.resolve import incompatibility
from tests.unit.serde_support import ORDER_V1, order_v2


def verdict(writer: Any, reader: Any) -> str | None:
    return incompatibility(expanded(writer), expanded(reader))


def record(name: str, *fields: dict, namespace: str = "t", **extra: Any) -> dict:
    return {"type": "record", "name": name, "namespace": namespace, "fields": list(fields), **extra}


@pytest.mark.parametrize("writer", EVENT_TYPE_NAMES)
@pytest.mark.parametrize("reader", EVENT_TYPE_NAMES)
def test_catalog_types_resolve_only_to_themselves(writer: str, reader: str) -> None:
    reason = verdict(event_type(writer).schema, event_type(reader).schema)
    assert (reason is None) == (writer == reader), reason


def test_evolution_in_both_directions_resolves() -> None:
    assert verdict(ORDER_V1, order_v2()) is None  # added defaulted fields, int -> long
    assert verdict(order_v2(promote=False), ORDER_V1) is None  # extra writer fields are dropped


def test_a_promotion_backwards_does_not_resolve() -> None:
    assert verdict(order_v2(), ORDER_V1) == "version: long does not resolve to int"


def test_same_short_name_in_another_namespace_is_another_type_unless_aliased() -> None:
    field = {"name": "a", "type": "int"}
    assert "writer record x.R is not the declared record y.R" == verdict(
        record("R", field, namespace="x"), record("R", field, namespace="y"))
    assert verdict(record("Old", field, namespace="x"),
                   record("R", field, namespace="y", aliases=["x.Old"])) is None


def test_nested_reasons_name_the_path() -> None:
    writer = record("R", {"name": "items", "type": {"type": "array", "items": record(
        "I", {"name": "q", "type": "string"})}})
    reader = copy.deepcopy(writer)
    reader["fields"][0]["type"]["items"]["fields"][0]["type"] = "double"
    assert verdict(writer, reader) == "items[].q: string does not resolve to double"


@pytest.mark.parametrize(
    ("writer_type", "reader_type", "resolves"),
    [
        (["null", "string"], "string", True),              # only nulls fail: per record
        ("string", ["null", "string"], True),
        (["null", "int"], ["null", "string"], True),      # null branch resolves
        (["int", "long"], "string", False),
        ("int", ["null", "string"], False),
        ({"type": "enum", "name": "E", "symbols": ["A", "B"]},
         {"type": "enum", "name": "E", "symbols": ["A"]}, True),  # unknown symbols: per record
        ({"type": "enum", "name": "E", "symbols": ["A"]},
         {"type": "enum", "name": "F", "symbols": ["A"]}, False),
        ({"type": "fixed", "name": "F", "size": 4}, {"type": "fixed", "name": "F", "size": 8}, False),
        ({"type": "map", "values": "int"}, {"type": "map", "values": "double"}, True),
        ({"type": "map", "values": "int"}, {"type": "array", "items": "int"}, False),
        ("bytes", "string", True),
    ],
)
def test_field_type_pairs(writer_type: Any, reader_type: Any, resolves: bool) -> None:
    reason = verdict(record("R", {"name": "f", "type": writer_type}),
                     record("R", {"name": "f", "type": reader_type}))
    assert (reason is None) == resolves, reason


def test_a_missing_field_needs_a_reader_default() -> None:
    writer = record("R", {"name": "a", "type": "int"})
    assert verdict(writer, record("R", {"name": "a", "type": "int"},
                                  {"name": "b", "type": "int", "default": 0})) is None
    assert verdict(writer, record("R", {"name": "a", "type": "int"}, {"name": "b", "type": "int"})) == (
        "b: the writer lacks this field and the reader has no default")
    assert verdict(writer, record("R", {"name": "c", "type": "int", "aliases": ["a"]})) is None


def test_a_non_record_writer_never_resolves() -> None:
    assert verdict('"string"', record("R", {"name": "a", "type": "int"})) == (
        "the writer schema is a string, not a record")
