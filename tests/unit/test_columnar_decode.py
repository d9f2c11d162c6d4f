"""Batch decode: the columnar path (polars-avro) equals the per-record path (fastavro), splits
mixed schema ids, isolates bad payloads, resolves evolution, asks the registry once per id."""

from __future__ import annotations

import copy
import io
from typing import Any

import fastavro
import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from headwater.schemas import (
    AvroSerde,
    ColumnarDecoder,
    DecodedBatch,
    MalformedFraming,
    SchemaResolutionError,
    SerdeError,
    UndecodableDatum,
    UnknownSchemaId,
    frame_schema,
)
from headwater.schemas.layout import strip_uuid
from tests.unit.serde_support import ORDER_V1, avro_values, encode, fake_cache, order, order_v2

ALWAYS_COLUMNAR = 1
NEVER_COLUMNAR = 2**62


@pytest.fixture
def per_record_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Sizes of the groups decoded per record (empty = everything went columnar)."""
    calls: list[int] = []
    original = ColumnarDecoder._per_record

    def spy(self: ColumnarDecoder, plan: Any, group: list[bytes], idxs: list[int]) -> Any:
        calls.append(len(group))
        return original(self, plan, group, idxs)

    monkeypatch.setattr(ColumnarDecoder, "_per_record", spy)
    return calls


def both(cache: Any, payloads: list[bytes], reader: Any = None) -> tuple[DecodedBatch, DecodedBatch]:
    columnar = AvroSerde(cache, reader, columnar_threshold=ALWAYS_COLUMNAR).decode_batch(payloads)
    per_record = AvroSerde(cache, reader, columnar_threshold=NEVER_COLUMNAR).decode_batch(payloads)
    return columnar, per_record


def columnar_only(cache: Any, schema_id: int, payloads: list[bytes], reader: Any = None) -> pl.DataFrame:
    """The frame of the columnar path alone (fails if polars-avro could not decode it)."""
    decoder = ColumnarDecoder(cache, reader)
    frame = decoder._columnar(decoder._plan(schema_id), payloads)
    assert frame is not None, "columnar decode failed on valid payloads"
    return frame


def fastavro_rows(schema: dict[str, Any], payloads: list[bytes], reader: Any = None) -> list[dict]:
    w = fastavro.parse_schema(strip_uuid(copy.deepcopy(schema)))
    r = None if reader is None else fastavro.parse_schema(strip_uuid(copy.deepcopy(reader)))
    return [fastavro.schemaless_reader(io.BytesIO(p[5:]), w, r) for p in payloads]


def assert_same_batch(a: DecodedBatch, b: DecodedBatch) -> None:
    assert_frame_equal(a.frame, b.frame)
    assert np.array_equal(a.positions, b.positions)
    assert [(r.index, type(r.error)) for r in a.rejected] == [(r.index, type(r.error)) for r in b.rejected]


def test_columnar_equals_per_record_and_fastavro_on_many_records(per_record_calls: list[int]) -> None:
    cache, _ = fake_cache((7, ORDER_V1))
    payloads = [encode(ORDER_V1, 7, order(i)) for i in range(3000)]
    columnar = AvroSerde(cache).decode_batch(payloads)
    assert per_record_calls == []  # the columnar path really ran
    per_record = AvroSerde(cache, columnar_threshold=NEVER_COLUMNAR).decode_batch(payloads)
    assert_same_batch(columnar, per_record)
    assert columnar.frame.schema == frame_schema(ORDER_V1)
    assert columnar.frame.to_dicts() == fastavro_rows(ORDER_V1, payloads)
    assert columnar.positions.tolist() == list(range(3000)) and columnar.rejected == []


def test_frame_layout_dtypes() -> None:
    schema = frame_schema(ORDER_V1)
    assert schema["eventId"] == pl.String
    assert schema["timestamp"] == pl.Datetime("ms", "UTC")
    assert schema["version"] == pl.Int32
    assert schema["environment"] == pl.Enum(["dev", "staging", "prod"])
    data = schema["data"]
    assert data == pl.Struct({
        "payload": pl.Struct({
            "orderId": pl.String,
            "items": pl.List(pl.Struct({"productId": pl.String, "quantity": pl.Int32, "price": pl.Float64})),
            "total": pl.Float64, "couponCode": pl.String, "channel": pl.Enum(["WEB", "APP", "POS"])}),
        "metadata": pl.Map(pl.String, pl.String)})


def test_mixed_schema_ids_are_split_and_rows_keep_input_order(per_record_calls: list[int]) -> None:
    v2 = order_v2()
    cache, client = fake_cache((7, ORDER_V1), (8, v2))
    payloads = []
    for i in range(400):
        rec = order(i)
        if i % 3 == 0:
            rec["region"] = f"r{i}"
            payloads.append(encode(v2, 8, rec))
        else:
            payloads.append(encode(ORDER_V1, 7, rec))
    batch = AvroSerde(cache, reader_schema=v2).decode_batch(payloads)
    assert per_record_calls == []  # each id's group decoded columnar
    assert batch.frame.height == 400 and batch.positions.tolist() == list(range(400))
    assert batch.frame["data"].struct.field("payload").struct.field("orderId").to_list() == [
        f"o-{i}" for i in range(400)]
    assert batch.frame["region"].to_list() == [f"r{i}" if i % 3 == 0 else "eu-west-1" for i in range(400)]
    _, per_record = both(cache, payloads, v2)
    assert_frame_equal(batch.frame, per_record.frame)
    assert sorted(c[1] for c in client.calls) == [7, 8]


def test_mixed_ids_without_reader_schema_give_the_union_of_columns() -> None:
    v2 = order_v2(promote=False)
    cache, _ = fake_cache((7, ORDER_V1), (8, v2))
    payloads = [encode(ORDER_V1, 7, order(i)) if i % 2 else encode(v2, 8, {**order(i), "region": "x"})
                for i in range(100)]
    batch = AvroSerde(cache).decode_batch(payloads)
    assert batch.frame.height == 100 and batch.rejected == []
    assert batch.frame["region"].to_list() == [None if i % 2 else "x" for i in range(100)]


def test_garbage_in_the_middle_rejects_exactly_the_bad_payloads() -> None:
    cache, _ = fake_cache((7, ORDER_V1))
    good = [encode(ORDER_V1, 7, order(i)) for i in range(300)]
    payloads = list(good)
    bad = {
        10: (b"\x01" + good[10][1:], MalformedFraming),
        20: (b"\x00\x00", MalformedFraming),
        30: (encode(ORDER_V1, 4242, order(30)), UnknownSchemaId),
        40: (good[40][:-5], UndecodableDatum),
        50: (good[50] + b"\x02", UndecodableDatum),
        60: (b"\x00\x00\x00\x00\x07" + b"\xff" * 40, UndecodableDatum),
        299: (good[299] + b"\x00\x00", UndecodableDatum),  # trailing bytes on the last payload
    }
    for i, (p, _) in bad.items():
        payloads[i] = p
    columnar, per_record = both(cache, payloads)
    assert_same_batch(columnar, per_record)
    assert [(r.index, type(r.error)) for r in columnar.rejected] == [(i, e) for i, (_, e) in sorted(bad.items())]
    assert all(r.error.raw == payloads[r.index] for r in columnar.rejected)
    keep = [i for i in range(300) if i not in bad]
    assert columnar.positions.tolist() == keep
    assert columnar.frame.to_dicts() == fastavro_rows(ORDER_V1, [good[i] for i in keep])


def test_v1_writer_v2_reader_adds_defaults_and_promotes(per_record_calls: list[int]) -> None:
    v2 = order_v2()
    cache, _ = fake_cache((7, ORDER_V1))
    payloads = [encode(ORDER_V1, 7, order(i)) for i in range(500)]
    columnar = AvroSerde(cache, reader_schema=v2).decode_batch(payloads)
    assert per_record_calls == []
    frame = columnar.frame
    assert frame.schema == frame_schema(v2)
    assert frame["region"].unique().to_list() == ["eu-west-1"]
    assert frame["version"].dtype == pl.Int64
    items = frame["data"].struct.field("payload").struct.field("items").explode().drop_nulls()
    assert items.struct.field("discount").unique().to_list() == [0.0]
    assert frame.to_dicts() == fastavro_rows(ORDER_V1, payloads, v2)
    _, per_record = both(cache, payloads, v2)
    assert_same_batch(columnar, per_record)


def test_v2_writer_v1_reader_drops_the_added_fields() -> None:
    v2 = order_v2(promote=False)
    cache, _ = fake_cache((8, v2))
    records = [{**order(i), "region": "us"} for i in range(200)]
    for r in records:
        r["data"]["payload"]["priority"] = 3
        for it in r["data"]["payload"]["items"]:
            it["discount"] = 0.5
    payloads = [encode(v2, 8, r) for r in records]
    columnar, per_record = both(cache, payloads, ORDER_V1)
    assert_same_batch(columnar, per_record)
    assert columnar.frame.schema == frame_schema(ORDER_V1)
    assert columnar.frame.to_dicts() == fastavro_rows(v2, payloads, ORDER_V1)


def test_enum_widening_and_reader_default_for_unknown_symbols() -> None:
    reader = copy.deepcopy(ORDER_V1)
    reader["fields"][7]["type"]["symbols"] = ["prod", "staging"]  # "dev" unknown -> default "prod"
    cache, _ = fake_cache((7, ORDER_V1))
    payloads = [encode(ORDER_V1, 7, order(i)) for i in range(90)]
    columnar, per_record = both(cache, payloads, reader)
    assert_same_batch(columnar, per_record)
    assert columnar.frame["environment"].dtype == pl.Enum(["prod", "staging"])
    assert columnar.frame["environment"].to_list()[:3] == ["prod", "staging", "prod"]


def test_nullable_writer_read_as_required_rejects_only_the_nulls() -> None:
    reader = copy.deepcopy(ORDER_V1)
    reader["fields"][5] = {"name": "correlationId", "type": "string"}
    cache, _ = fake_cache((7, ORDER_V1))
    payloads = [encode(ORDER_V1, 7, order(i)) for i in range(60)]
    columnar, per_record = both(cache, payloads, reader)
    assert_same_batch(columnar, per_record)
    assert [r.index for r in columnar.rejected] == list(range(0, 60, 3))
    assert all(isinstance(r.error, SchemaResolutionError) for r in columnar.rejected)


def test_registry_is_fetched_once_per_id_over_many_batches() -> None:
    cache, client = fake_cache((7, ORDER_V1), (8, order_v2()))
    serde = AvroSerde(cache, reader_schema=order_v2())
    for n in (5, 50, 500):
        serde.decode_batch([encode(ORDER_V1, 7, order(i)) for i in range(n)]
                           + [encode(order_v2(), 8, {**order(i), "region": "x"}) for i in range(n)]
                           + [b"\x00\x00\x00\x03\x09junk"] * 3)
    assert sorted(client.calls) == [("get_schema", 7), ("get_schema", 8), ("get_schema", 777)]


def test_schema_without_frame_layout_rejects_its_records() -> None:
    schema = {"type": "record", "name": "U", "fields": [{"name": "u", "type": ["int", "string"]}]}
    cache, _ = fake_cache((5, schema))
    batch = AvroSerde(cache).decode_batch([encode(schema, 5, {"u": 1}), encode(schema, 5, {"u": "a"})])
    assert batch.frame.height == 0
    assert [type(r.error) for r in batch.rejected] == [SchemaResolutionError] * 2


def test_empty_batch() -> None:
    cache, _ = fake_cache((7, ORDER_V1))
    batch = AvroSerde(cache, reader_schema=ORDER_V1).decode_batch([])
    assert batch.frame.height == 0 and batch.frame.schema == frame_schema(ORDER_V1)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(avro_values(ORDER_V1), min_size=1, max_size=40))
def test_property_columnar_equals_fastavro_on_arbitrary_valid_records(records: list[dict]) -> None:
    cache, _ = fake_cache((7, ORDER_V1))
    payloads = [encode(ORDER_V1, 7, r) for r in records]
    columnar, per_record = both(cache, payloads)
    assert columnar.rejected == []
    assert_same_batch(columnar, per_record)
    assert columnar.frame.to_dicts() == fastavro_rows(ORDER_V1, payloads)
    assert_frame_equal(columnar_only(cache, 7, payloads), per_record.frame)


def _catalog() -> list[tuple[str, dict[str, Any]]]:
    try:
        from headwater.schemas.catalog import catalog
    except ImportError:
        return []
    return [(name, et.schema) for name, et in sorted(catalog().items())]


@pytest.mark.parametrize(("name", "schema"), _catalog(), ids=[n for n, _ in _catalog()])
def test_property_every_catalog_type_columnar_equals_fastavro(name: str, schema: dict[str, Any]) -> None:
    @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(avro_values(schema), min_size=1, max_size=30))
    def check(records: list[dict]) -> None:
        cache, _ = fake_cache((11, schema))
        payloads = [encode(schema, 11, r) for r in records]
        columnar, per_record = both(cache, payloads)
        assert columnar.rejected == []
        assert_same_batch(columnar, per_record)
        assert columnar.frame.schema == frame_schema(schema)
        assert columnar.frame.to_dicts() == fastavro_rows(schema, payloads)
        assert_frame_equal(columnar_only(cache, 11, payloads), per_record.frame)

    check()


_HEADERS = st.sampled_from([b"", b"\x00\x00\x00\x00\x07", b"\x00\x00\x00\x00\x08", b"\x01\x00\x00\x00\x07"])


@settings(max_examples=300, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(
    st.tuples(_HEADERS, st.binary(max_size=80)).map(lambda t: t[0] + t[1]),
    st.integers(0, 500).map(lambda i: encode(ORDER_V1, 7, order(i))),
), min_size=1, max_size=40), st.sampled_from([ALWAYS_COLUMNAR, NEVER_COLUMNAR]))
def test_property_arbitrary_bytes_are_rejected_with_typed_errors_never_raised(
    payloads: list[bytes], threshold: int
) -> None:
    cache, _ = fake_cache((7, ORDER_V1))
    batch = AvroSerde(cache, columnar_threshold=threshold).decode_batch(payloads)
    accepted = batch.positions.tolist()
    rejected = [r.index for r in batch.rejected]
    assert sorted(accepted + rejected) == list(range(len(payloads)))
    assert batch.frame.height == len(accepted)
    assert all(isinstance(r.error, SerdeError) and r.error.raw == payloads[r.index] for r in batch.rejected)
    for i, row in zip(accepted, batch.frame.to_dicts()):
        assert row == fastavro_rows(ORDER_V1, [payloads[i]])[0]
