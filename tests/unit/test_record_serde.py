"""Per-record serde (fastavro) and the registry cache, against a counting fake registry."""

from __future__ import annotations

import copy
import pickle

import pytest

from headwater.schemas import (
    AvroSerde,
    MalformedFraming,
    RecordSerde,
    SchemaCache,
    SchemaMismatch,
    SchemaResolutionError,
    UndecodableDatum,
    UnencodableRecord,
    UnknownSchemaId,
)
from tests.unit.serde_support import ORDER_V1, FakeRegistry, encode, fake_cache, order, order_v2


def test_encode_is_fastavro_bytes_and_decode_round_trips() -> None:
    cache, _ = fake_cache((7, ORDER_V1))
    serde = RecordSerde(cache)
    for i in range(20):
        payload = serde.encode(order(i), 7)
        assert payload == encode(ORDER_V1, 7, order(i))
        decoded = serde.decode(payload)
        decoded["eventId"] = str(decoded["eventId"])  # fastavro yields uuid.UUID
        assert decoded == order(i)


def test_registry_is_asked_once_per_schema_id() -> None:
    cache, client = fake_cache((7, ORDER_V1), (8, order_v2()))
    serde = RecordSerde(cache)
    payloads = [encode(ORDER_V1, 7, order(i)) for i in range(50)]
    for p in payloads * 3:
        serde.decode(p)
    assert client.calls == [("get_schema", 7)]


def test_unknown_id_is_typed_and_negatively_cached_for_the_ttl() -> None:
    now = [0.0]
    client = FakeRegistry()
    cache = SchemaCache(client, negative_ttl_s=5.0, clock=lambda: now[0])
    serde = RecordSerde(cache)
    payload = encode(ORDER_V1, 99, order(1))
    for _ in range(10):
        with pytest.raises(UnknownSchemaId) as info:
            serde.decode(payload)
    assert info.value.schema_id == 99 and info.value.raw == payload
    assert client.calls == [("get_schema", 99)]
    client.add(99, ORDER_V1)
    now[0] = 6.0  # TTL over: asked again, and now found
    assert serde.decode(payload)["data"]["payload"]["orderId"] == "o-1"
    assert client.calls == [("get_schema", 99), ("get_schema", 99)]


def test_reader_schema_adds_defaults_and_promotes() -> None:
    cache, _ = fake_cache((7, ORDER_V1))
    record = RecordSerde(cache, reader_schema=order_v2()).decode(encode(ORDER_V1, 7, order(5)))
    assert record["region"] == "eu-west-1"
    assert record["data"]["payload"]["priority"] is None
    assert record["data"]["payload"]["items"][0]["discount"] == 0.0


def test_a_reader_requiring_a_field_the_writer_lacks_is_a_schema_mismatch() -> None:
    cache, _ = fake_cache((7, ORDER_V1))
    reader = dict(ORDER_V1, fields=[*ORDER_V1["fields"], {"name": "mandatory", "type": "string"}])
    with pytest.raises(SchemaMismatch, match="mandatory: the writer lacks this field") as info:
        RecordSerde(cache, reader_schema=reader).decode(encode(ORDER_V1, 7, order(1)))
    assert info.value.schema_id == 7 and info.value.reader_subject is None


def test_a_data_dependent_resolution_failure_is_schema_resolution_error() -> None:
    cache, _ = fake_cache((7, ORDER_V1))
    reader = copy.deepcopy(ORDER_V1)
    reader["fields"][5] = {"name": "correlationId", "type": "string"}  # nullable read as required
    serde = RecordSerde(cache, reader_schema=reader)
    assert serde.decode(encode(ORDER_V1, 7, order(1)))["correlationId"] == "corr-1"
    with pytest.raises(SchemaResolutionError):
        serde.decode(encode(ORDER_V1, 7, order(3)))  # correlationId is null


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        (b"\x00\x00", MalformedFraming),
        (b"\x05\x00\x00\x00\x07abcdef", MalformedFraming),
        (encode(ORDER_V1, 7, order(1))[:-4], UndecodableDatum),
        (encode(ORDER_V1, 7, order(1)) + b"\x00", UndecodableDatum),  # trailing bytes
        (b"\x00\x00\x00\x00\x07" + b"\xff" * 30, UndecodableDatum),
    ],
)
def test_bad_payloads_raise_typed_errors_carrying_the_bytes(payload: bytes, error: type) -> None:
    cache, _ = fake_cache((7, ORDER_V1))
    with pytest.raises(error) as info:
        RecordSerde(cache).decode(payload)
    assert info.value.raw == payload
    assert payload[:8].hex() in str(info.value)


def test_error_context_survives_pickling() -> None:
    err = UndecodableDatum("bad", b"\x00\x01", schema_id=3).at("orders", 2, 41)
    back = pickle.loads(pickle.dumps(err))
    assert (back.reason, back.raw, back.schema_id, back.topic, back.partition, back.offset) == (
        "bad", b"\x00\x01", 3, "orders", 2, 41)
    assert "orders[2]@41" in str(back)


def test_encode_of_a_non_conforming_record_is_unencodable() -> None:
    cache, _ = fake_cache((7, ORDER_V1))
    with pytest.raises(UnencodableRecord):
        RecordSerde(cache).encode({**order(1), "version": "one"}, 7)


def test_register_is_cached_per_subject_and_schema() -> None:
    cache, client = fake_cache()
    serde = AvroSerde(cache)
    first = serde.schema_id("orders-value", ORDER_V1)
    assert serde.schema_id("orders-value", ORDER_V1) == first
    assert client.calls == [("register_schema", "orders-value")]
    assert serde.decode_one(serde.encode_one(order(3), first))["userId"] == "user-3"
    assert client.calls == [("register_schema", "orders-value")]  # registered schema seeded the cache
