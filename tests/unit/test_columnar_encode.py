"""The columnar encoder is byte-identical to fastavro.schemaless_writer, row by row.

Run: cd /work/main && PYTHONPATH=src /tmp/hwvenv/bin/python -m pytest tests/unit/test_columnar_encode.py -q
"""

from __future__ import annotations

import io
import json
import math
import uuid
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import fastavro
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headwater.errors import HeadwaterError
from headwater.schemas.columnar_encode import (
    ColumnarEncoder,
    UnencodableValue,
    UnsupportedSchema,
    encode_frame,
    encode_frame_buffer,
)
from headwater.schemas.layout import NoFrameLayout, frame_schema

UTC = timezone.utc


def fastavro_rows(schema: dict[str, Any], records: list[dict[str, Any]], schema_id: int | None = None) -> list[bytes]:
    parsed = fastavro.parse_schema(schema)
    out = []
    for rec in records:
        buf = io.BytesIO()
        if schema_id is not None:
            buf.write(b"\x00" + schema_id.to_bytes(4, "big"))
        fastavro.schemaless_writer(buf, parsed, rec)
        out.append(buf.getvalue())
    return out


def frame_of(schema: dict[str, Any], records: list[dict[str, Any]]) -> pl.DataFrame:
    return pl.DataFrame(records, schema=frame_schema(schema))


def assert_identical(schema: dict[str, Any], records: list[dict[str, Any]], frame: pl.DataFrame | None = None,
                     schema_id: int | None = None) -> list[bytes]:
    frame = frame_of(schema, records) if frame is None else frame
    got = encode_frame(frame, schema, schema_id)
    want = fastavro_rows(schema, records, schema_id)
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        assert g == w, f"row {i}: {records[i]!r}\n got  {g!r}\n want {w!r}"
    return got


def rec(name: str, fields: list[tuple[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"type": "record", "name": name, "fields": [{"name": n, "type": t} for n, t in fields], **extra}


# --------------------------------------------------------------------------- hand-written cases

SCALARS = rec("Scalars", [
    ("i", "int"), ("l", "long"), ("f", "float"), ("d", "double"), ("b", "boolean"),
    ("s", "string"), ("by", "bytes"), ("n", "null"),
])


def test_int_long_boundaries_and_negatives() -> None:
    ints = [0, 1, -1, 63, -64, 64, -65, 8191, -8192, 8192, 2**31 - 1, -(2**31)]
    longs = [0, -1, 2**31, -(2**31) - 1, 2**53 + 1, 2**63 - 1, -(2**63), 2**62, -(2**62) - 1]
    records = [{"i": ints[k % len(ints)], "l": longs[k % len(longs)], "f": 0.0, "d": 0.0, "b": k % 2 == 0,
                "s": "", "by": b"", "n": None} for k in range(max(len(ints), len(longs)))]
    assert_identical(SCALARS, records)


def test_floats_special_values_strings_bytes_unicode() -> None:
    specials = [float("nan"), float("inf"), float("-inf"), -0.0, 5e-324, 1.7976931348623157e308, 0.1]
    texts = ["", "a", "é", "日本語テキスト", "🦀 emoji", "x" * 200, "\x00nul"]
    records = [{"i": 0, "l": 0, "f": specials[k] if k != 4 and k != 5 else 1.5, "d": specials[k], "b": False,
                "s": texts[k], "by": texts[k].encode() * 3, "n": None} for k in range(len(specials))]
    assert_identical(SCALARS, records)


ENVELOPE = {
    "type": "record", "name": "Env", "namespace": "t.ev", "fields": [
        {"name": "id", "type": {"type": "string", "logicalType": "uuid"}},
        {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "tus", "type": {"type": "long", "logicalType": "timestamp-micros"}},
        {"name": "day", "type": {"type": "int", "logicalType": "date"}},
        {"name": "kind", "type": {"type": "enum", "name": "Kind", "symbols": ["A", "B", "C"], "default": "A"}},
        {"name": "fx", "type": {"type": "fixed", "name": "F3", "size": 3}},
        {"name": "opt", "type": ["null", "string"], "default": None},
        {"name": "opt2", "type": ["double", "null"]},
        {"name": "tags", "type": {"type": "array", "items": "string"}},
        {"name": "attrs", "type": {"type": "map", "values": "string"}},
        {"name": "data", "type": rec("Data", [
            ("payload", rec("Payload", [
                ("items", {"type": "array", "items": rec("Item", [
                    ("sku", "string"), ("qty", "int"), ("price", "double"),
                    ("opts", ["null", {"type": "map", "values": ["null", "long"]}])])}),
                ("maybe", ["null", "Item"]),
                ("kinds", {"type": "array", "items": "Kind"}),
            ])),
            ("metadata", {"type": "map", "values": {"type": "array", "items": "int"}}),
        ])},
    ],
}


def envelope_record(k: int) -> dict[str, Any]:
    items = [{"sku": f"sku-{k}-{j}", "qty": j - 1, "price": j * 1.25,
              "opts": None if j % 2 else {f"o{m}": (None if m == 1 else -m * 1000) for m in range(j)}}
             for j in range(k % 4)]
    return {
        "id": str(uuid.UUID(int=k * 7919 + 1)),
        "ts": datetime(2025, 1, 1, tzinfo=UTC) + timedelta(milliseconds=k * 1001 - 5000),
        "tus": datetime(1969, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC) + timedelta(microseconds=k),
        "day": date(1970, 1, 1) + timedelta(days=k - 3),
        "kind": "ABC"[k % 3],
        "fx": bytes([k % 256, 0, 255]),
        "opt": None if k % 3 == 0 else "é" * k,
        "opt2": None if k % 2 else k / 3,
        "tags": [f"t{j}" for j in range(k % 3)],
        "attrs": {f"k{j}": "v" * j for j in range(k % 3)},
        "data": {
            "payload": {"items": items, "maybe": items[0] if items and k % 2 else None,
                        "kinds": ["C", "A"][: k % 3]},
            "metadata": {f"m{j}": list(range(-j, j)) for j in range(k % 3)},
        },
    }


def test_nested_envelope_nulls_empty_collections_and_header() -> None:
    records = [envelope_record(k) for k in range(60)]
    got = assert_identical(ENVELOPE, records, schema_id=2**32 - 2)
    assert all(g[:5] == b"\x00\xff\xff\xff\xfe" for g in got)
    parsed = fastavro.parse_schema(ENVELOPE)
    back = fastavro.schemaless_reader(io.BytesIO(got[7][5:]), parsed, None)
    assert back["data"]["payload"]["items"][2]["opts"] == records[7]["data"]["payload"]["items"][2]["opts"]


def test_many_rows_and_buffer_variant() -> None:
    records = [envelope_record(k) for k in range(3000)]
    frame = frame_of(ENVELOPE, records)
    batch = encode_frame_buffer(frame, ENVELOPE)
    want = fastavro_rows(ENVELOPE, records)
    assert len(batch) == 3000 and batch.to_list() == want
    assert batch.buffer.tobytes() == b"".join(want)


def test_sliced_and_multi_chunk_frames() -> None:
    records = [envelope_record(k) for k in range(40)]
    frame = frame_of(ENVELOPE, records)
    assert_identical(ENVELOPE, records[7:29], frame.slice(7, 22))
    chunked = pl.concat([frame.slice(0, 13), frame.slice(13, 27)], rechunk=False)
    assert chunked.n_chunks() > 1
    assert_identical(ENVELOPE, records, chunked)


def test_empty_frame() -> None:
    assert encode_frame(frame_of(ENVELOPE, []), ENVELOPE, 5) == []


def test_schema_as_json_text_and_reused_encoder() -> None:
    records = [envelope_record(k) for k in range(5)]
    frame = frame_of(ENVELOPE, records)
    assert encode_frame(frame, json.dumps(ENVELOPE)) == fastavro_rows(ENVELOPE, records)
    enc = ColumnarEncoder(ENVELOPE)
    assert enc.encode(frame, 1) == enc.encode(frame, 1) == fastavro_rows(ENVELOPE, records, 1)


def test_deep_nesting() -> None:
    leaf: Any = "long"
    for depth in range(6):
        leaf = {"type": "array", "items": rec(f"L{depth}", [("v", leaf), ("o", ["null", "string"])])} \
            if depth % 2 == 0 else {"type": "map", "values": ["null", leaf]}
    schema = rec("Deep", [("x", leaf)])

    def value(depth: int, k: int) -> Any:
        if depth < 0:
            return k - 3
        if depth % 2 == 0:
            return [{"v": value(depth - 1, k + j), "o": None if j else "s"} for j in range(k % 3)]
        return {f"k{j}": (None if (j + k) % 3 == 0 else value(depth - 1, k + j)) for j in range((k + 1) % 3)}

    records = [{"x": value(5, k)} for k in range(30)]
    assert_identical(schema, records)


# --------------------------------------------------------------------------- layout variants

def test_accepted_column_variants() -> None:
    schema = rec("V", [
        ("e", {"type": "enum", "name": "E", "symbols": ["X", "Y"]}),
        ("ec", "E"),
        ("m", {"type": "map", "values": "int"}),
        ("ts", {"type": "long", "logicalType": "timestamp-millis"}),
        ("tsi", {"type": "long", "logicalType": "timestamp-millis"}),
        ("tsn", {"type": "long", "logicalType": "timestamp-micros"}),
        ("u", {"type": "string", "logicalType": "uuid"}),
        ("s", "string"),
        ("d", "double"),
        ("l", "long"),
    ])
    base = datetime(1969, 12, 31, 23, 59, 59, tzinfo=UTC)
    stamps = [base + timedelta(microseconds=x) for x in (0, 1, 999, 1000, 1001, 1_500_999, -1)]
    uuids = [uuid.UUID(int=k * 2**100 + k) for k in range(len(stamps))]
    records = [{"e": "XY"[k % 2], "ec": "YX"[k % 2], "m": {"a": k, "b": -k} if k % 2 else {},
                "ts": stamps[k], "tsi": stamps[k], "tsn": stamps[k], "u": str(uuids[k]), "s": f"s{k}",
                "d": float(k), "l": k} for k in range(len(stamps))]
    frame = pl.DataFrame({
        "e": pl.Series([r["e"] for r in records], dtype=pl.String),
        "ec": pl.Series([r["ec"] for r in records], dtype=pl.Categorical),
        "m": pl.Series([[{"key": k, "value": v} for k, v in r["m"].items()] for r in records],
                       dtype=pl.List(pl.Struct({"key": pl.String, "value": pl.Int32}))),
        "ts": pl.Series(stamps, dtype=pl.Datetime("ns", "UTC")),
        "tsi": pl.Series([int(math.floor((s - datetime(1970, 1, 1, tzinfo=UTC)) / timedelta(milliseconds=1)))
                          for s in stamps], dtype=pl.Int64),
        "tsn": pl.Series([s.replace(tzinfo=None) for s in stamps], dtype=pl.Datetime("us")),  # naive = UTC
        "u": pl.Series([u.bytes for u in uuids], dtype=pl.Binary),
        "s": pl.Series([r["s"] for r in records], dtype=pl.Categorical),
        "d": pl.Series([r["l"] for r in records], dtype=pl.Int16),  # ints are written as doubles
        "l": pl.Series([r["l"] for r in records], dtype=pl.UInt8),
        "extra": pl.Series(range(len(records))),  # columns not in the schema are ignored
    })
    assert_identical(schema, records, frame)


def test_general_union_branch_chosen_by_column_type() -> None:
    schema = rec("U", [("v", ["null", "string", "long", {"type": "array", "items": "int"}])])
    assert_identical(schema, [{"v": 5}, {"v": None}, {"v": -(2**40)}],
                     pl.DataFrame({"v": [5, None, -(2**40)]}, schema={"v": pl.Int64}))
    assert_identical(schema, [{"v": "x"}, {"v": None}], pl.DataFrame({"v": ["x", None]}))
    assert_identical(schema, [{"v": [1, 2]}, {"v": None}], pl.DataFrame({"v": [[1, 2], None]},
                                                                          schema={"v": pl.List(pl.Int32)}))


def test_missing_column_takes_the_field_default() -> None:
    schema = rec("D", [("a", "long")])
    schema["fields"] += [
        {"name": "b", "type": ["null", "string"], "default": None},
        {"name": "c", "type": {"type": "enum", "name": "C", "symbols": ["P", "Q"]}, "default": "Q"},
        {"name": "d", "type": {"type": "map", "values": "long"}, "default": {"x": 3}},
    ]
    frame = pl.DataFrame({"a": [1, -2]})
    got = encode_frame(frame, schema)
    assert got == fastavro_rows(schema, [{"a": 1}, {"a": -2}])
    assert got[0] == b"\x02" + b"\x00" + b"\x02" + b"\x02\x02x\x06\x00"


def test_decimal_bytes_and_fixed() -> None:
    schema = rec("Dec", [("b", {"type": "bytes", "logicalType": "decimal", "precision": 18, "scale": 2}),
                         ("f", {"type": "fixed", "name": "F8", "size": 8, "logicalType": "decimal",
                                "precision": 18, "scale": 2}),
                         ("o", ["null", {"type": "bytes", "logicalType": "decimal", "precision": 9, "scale": 3}])])
    values = ["0", "1.27", "1.28", "-1.28", "-1.29", "327.67", "-327.68", "-0.01", "9999999999999999.99",
              "-9999999999999999.99", "0.01"]
    records = [{"b": Decimal(v), "f": Decimal(v), "o": None if k % 3 == 0 else Decimal(v[:8]).quantize(Decimal("0.001"))
                if abs(Decimal(v)) < 10**5 else Decimal("1.500")} for k, v in enumerate(values)]
    assert_identical(schema, records)


# --------------------------------------------------------------------------- errors

def test_null_in_non_nullable_field_names_field_and_row() -> None:
    schema = rec("N", [("a", "long"), ("xs", {"type": "array", "items": rec("X", [("s", "string")])})])
    frame = pl.DataFrame({"a": [1, 2, 3], "xs": [[{"s": "a"}], [], [{"s": "b"}, {"s": None}]]},
                         schema={"a": pl.Int64, "xs": pl.List(pl.Struct({"s": pl.String}))})
    with pytest.raises(UnencodableValue) as err:
        encode_frame(frame, schema)
    assert err.value.path == "xs[].s" and err.value.row == 2 and isinstance(err.value, HeadwaterError)
    with pytest.raises(UnencodableValue, match="'a' at row 1"):
        encode_frame(pl.DataFrame({"a": [1, None], "xs": [[], []]},
                                  schema={"a": pl.Int64, "xs": pl.List(pl.Struct({"s": pl.String}))}), schema)


def test_null_inside_a_null_parent_is_fine() -> None:
    schema = rec("P", [("p", ["null", rec("In", [("x", "long")])])])
    frame = pl.DataFrame({"p": [{"x": 1}, None]}, schema={"p": pl.Struct({"x": pl.Int64})})
    assert encode_frame(frame, schema) == fastavro_rows(schema, [{"p": {"x": 1}}, {"p": None}])


def test_unknown_enum_symbol_names_field_row_value() -> None:
    schema = rec("E", [("e", {"type": "enum", "name": "E", "symbols": ["A", "B"]})])
    with pytest.raises(UnencodableValue) as err:
        encode_frame(pl.DataFrame({"e": ["A", "B", "Z"]}), schema)
    assert (err.value.path, err.value.row, err.value.value) == ("e", 2, "Z")
    with pytest.raises(UnencodableValue, match="'e' at row 0"):
        encode_frame(pl.DataFrame({"e": ["Q"]}, schema={"e": pl.Categorical}), schema)


def test_value_errors_int_range_fixed_size_decimal_precision() -> None:
    with pytest.raises(UnencodableValue) as err:
        encode_frame(pl.DataFrame({"i": [1, 2**31]}), rec("I", [("i", "int")]))
    assert (err.value.row, err.value.value) == (1, 2**31)
    with pytest.raises(UnencodableValue, match="exactly 3 bytes"):
        encode_frame(pl.DataFrame({"f": [b"abc", b"ab"]}), rec("F", [("f", {"type": "fixed", "name": "F", "size": 3})]))
    dec = rec("D", [("d", {"type": "bytes", "logicalType": "decimal", "precision": 3, "scale": 1})])
    with pytest.raises(UnencodableValue, match="precision"):
        encode_frame(pl.DataFrame({"d": [Decimal("1.0"), Decimal("100.0")]}, schema={"d": pl.Decimal(10, 1)}), dec)


def test_unsupported_schemas_and_columns_name_the_field() -> None:
    ambiguous = rec("A", [("v", ["null", "int", "long"])])
    with pytest.raises(UnsupportedSchema) as err:
        encode_frame(pl.DataFrame({"v": [1]}), ambiguous)
    assert err.value.path == "v" and "several branches" in err.value.reason
    with pytest.raises(UnsupportedSchema, match="'a'.*no column"):
        encode_frame(pl.DataFrame({"b": [1]}), rec("M", [("a", "long")]))
    with pytest.raises(UnsupportedSchema, match="'a'.*List"):
        encode_frame(pl.DataFrame({"a": ["x"]}), rec("T", [("a", {"type": "array", "items": "string"})]))
    with pytest.raises(UnsupportedSchema, match="top-level"):
        ColumnarEncoder({"type": "array", "items": "long"})
    with pytest.raises(NoFrameLayout):
        frame_schema(ambiguous)
    with pytest.raises(UnencodableValue, match="schema id"):
        encode_frame(pl.DataFrame({"a": [1]}), rec("M", [("a", "long")]), schema_id=2**32)


# --------------------------------------------------------------------------- property tests

def _named(schema: Any, names: dict[str, Any], ns: str | None) -> tuple[Any, str | None]:
    if isinstance(schema, str) and schema not in {"null", "boolean", "int", "long", "float", "double",
                                                   "bytes", "string"}:
        full = schema if "." in schema or not ns else f"{ns}.{schema}"
        key = full if full in names else schema
        return names[key], key.rpartition(".")[0] or None
    if isinstance(schema, dict) and "name" in schema and schema.get("type") in ("record", "enum", "fixed"):
        full = schema["name"] if "." in schema["name"] else \
            f"{schema.get('namespace', ns)}.{schema['name']}" if schema.get("namespace", ns) else schema["name"]
        names[full] = schema
        return schema, full.rpartition(".")[0] or None
    if isinstance(schema, dict) and isinstance(schema.get("type"), (dict, list)):
        return _named(schema["type"], names, ns)
    return schema, ns


def values_for(schema: Any, names: dict[str, Any], ns: str | None = None, depth: int = 0) -> st.SearchStrategy[Any]:
    """A strategy of valid Python values (fastavro's input) for an Avro schema."""
    schema, ns = _named(schema, names, ns)
    if isinstance(schema, list):
        non_null = [b for b in schema if b != "null"]
        assert len(non_null) == 1, "property tests cover [null, T] unions"
        inner = values_for(non_null[0], names, ns, depth)
        return st.one_of(st.none(), inner) if "null" in schema else inner
    t = schema if isinstance(schema, str) else schema["type"]
    logical = schema.get("logicalType") if isinstance(schema, dict) else None
    if logical == "timestamp-millis":
        return st.integers(-(2**41), 2**42).map(lambda ms: datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms))
    if logical == "timestamp-micros":
        return st.integers(-(2**50), 2**52).map(lambda us: datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us))
    if logical == "date":
        return st.dates()
    if logical == "uuid":
        return st.uuids().map(str)
    if logical == "decimal":
        scale, prec = schema.get("scale", 0), min(schema["precision"], 18)
        return st.integers(-(10**prec) + 1, 10**prec - 1).map(lambda u: Decimal(u).scaleb(-scale))
    leaf = {
        "null": st.none(), "boolean": st.booleans(), "int": st.integers(-(2**31), 2**31 - 1),
        "long": st.integers(-(2**63), 2**63 - 1), "float": st.floats(width=32),
        "double": st.floats(), "string": st.text(max_size=40), "bytes": st.binary(max_size=40),
    }
    if t in leaf:
        return leaf[t]
    if t == "enum":
        return st.sampled_from(schema["symbols"])
    if t == "fixed":
        return st.binary(min_size=schema["size"], max_size=schema["size"])
    if t == "array":
        return st.lists(values_for(schema["items"], names, ns, depth + 1), max_size=4 if depth < 3 else 1)
    if t == "map":
        return st.dictionaries(st.text(max_size=8), values_for(schema["values"], names, ns, depth + 1),
                               max_size=4 if depth < 3 else 1)
    if t == "record":
        return st.fixed_dictionaries({f["name"]: values_for(f["type"], names, ns, depth + 1)
                                      for f in schema["fields"]})
    raise AssertionError(f"no strategy for {schema!r}")


def same(a: Any, b: Any) -> bool:
    """Equality after a fastavro round trip (NaN equal to NaN, UUIDs compared as strings)."""
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or a == b
    if isinstance(b, uuid.UUID):
        return a == str(b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return bool(a == b)


def check_property(schema: dict[str, Any], records: list[dict[str, Any]]) -> None:
    got = assert_identical(schema, records, schema_id=42)
    parsed = fastavro.parse_schema(schema)
    for r, g in zip(records, got):
        assert g[:5] == b"\x00\x00\x00\x00\x2a"
        assert same(r, fastavro.schemaless_reader(io.BytesIO(g[5:]), parsed, None))


PROPERTY_SCHEMAS = {
    "scalars": SCALARS,
    "envelope": ENVELOPE,
    "decimals": rec("Decs", [("b", {"type": "bytes", "logicalType": "decimal", "precision": 18, "scale": 4}),
                             ("f", {"type": "fixed", "name": "F16", "size": 16, "logicalType": "decimal",
                                    "precision": 12, "scale": 0})]),
}
PROP = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                        HealthCheck.data_too_large])


@pytest.mark.parametrize("name", sorted(PROPERTY_SCHEMAS))
@PROP
@given(data=st.data())
def test_property_random_records_byte_identical(name: str, data: st.DataObject) -> None:
    schema = PROPERTY_SCHEMAS[name]
    records = data.draw(st.lists(values_for(schema, {}), min_size=0, max_size=25))
    check_property(schema, records)


def catalog_types() -> list[str]:
    from headwater.schemas.catalog import catalog

    return list(catalog())


@pytest.mark.parametrize("event_type", catalog_types())
@PROP
@given(data=st.data())
def test_property_every_catalog_type(event_type: str, data: st.DataObject) -> None:
    from headwater.schemas.catalog import catalog

    schema = catalog()[event_type].schema  # the registered, self-contained envelope + data schema
    records = data.draw(st.lists(values_for(schema, {}), min_size=0, max_size=20))
    check_property(schema, records)
