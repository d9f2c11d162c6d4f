"""The runtime's Avro source decoder: every record of a batch is either a row or rejected.

A source topic has a declared value schema (the source's reader schema, else the latest schema of
``<topic>-value``). Records whose writer schema does not resolve to it (another event type on the
wrong topic) are rejected with ``SchemaMismatch``; compatible writer versions keep decoding,
resolved to the declared layout.
"""

from __future__ import annotations

import copy
import logging
import random

import pytest

from headwater.config import Settings
from headwater.schemas import (
    AvroSerde,
    MalformedFraming,
    SchemaMismatch,
    SchemaRegistryUnavailable,
    UndecodableDatum,
    UnknownSchemaId,
    frame_schema,
)
from headwater.schemas.catalog import event_type
from headwater.streams.decode import EmptyValueError
from headwater.streams.records import RecordBatch
from headwater.streams.runtime.avro import AvroCodec
from headwater.streams.topology import SourceSpec
from tests.unit.serde_support import (
    ORDER_V1,
    catalog_payloads,
    encode,
    fake_cache,
    order,
    order_v2,
)

ORDER, USER = event_type("order.created"), event_type("user.registered")
TOPIC = "shop.order.created"
SUBJECT = f"{TOPIC}-value"


def batch_of(values: list[bytes | None]) -> RecordBatch:
    n = len(values)
    return RecordBatch(TOPIC, [n % 3 for n in range(n)], list(range(100, 100 + n)), [0] * n,
                       [b"k"] * n, values, [None] * n)


def codec(*schemas: tuple[int, dict, str | None], retry_ms: int = 0):
    cache, registry = fake_cache()
    cache.transient_retry_ms = retry_ms
    cache._sleep = lambda _s: None
    for sid, schema, subject in schemas:
        registry.add(sid, schema, subject=subject)
    return AvroCodec(Settings(), cache=cache), registry


def decode(c: AvroCodec, values: list[bytes | None], spec: SourceSpec | None = None):
    frame, rejected = c.decoder(spec or SourceSpec(TOPIC, "avro")).decode(batch_of(values))
    assert frame.height + len(rejected) == len(values)  # nothing vanishes
    return frame, rejected


def test_a_foreign_event_type_on_the_topic_is_rejected_with_schema_mismatch() -> None:
    c, _ = codec((1, ORDER.schema, SUBJECT), (2, USER.schema, "shop.user.registered-value"))
    orders = catalog_payloads("order.created", 1, 40)
    users = catalog_payloads("user.registered", 2, 3)
    values = orders[:20] + users + orders[20:]
    random.Random(5).shuffle(values)

    frame, rejected = decode(c, values)

    assert sorted(values[r.index] for r in rejected) == sorted(users)
    assert frame.height == 40 and frame["_offset"].to_list() == [
        100 + i for i, v in enumerate(values) if v in orders]
    error = rejected[0].error
    assert isinstance(error, SchemaMismatch)
    assert (error.schema_id, error.reader_subject) == (2, SUBJECT)
    assert error.reader_name == ORDER.record_name
    assert "UserRegisteredEvent" in error.reason and "OrderCreatedEvent" in error.reason
    assert (error.topic, error.offset) == (TOPIC, 100 + rejected[0].index)
    assert error.raw == values[rejected[0].index]


def test_a_batch_of_only_foreign_records_is_rejected_whole() -> None:
    c, _ = codec((1, ORDER.schema, SUBJECT), (2, USER.schema, None))
    users = catalog_payloads("user.registered", 2, 40)  # above the columnar threshold
    frame, rejected = decode(c, users)
    assert frame.height == 0
    assert [type(r.error) for r in rejected] == [SchemaMismatch] * 40


def test_older_and_newer_compatible_writers_decode_into_the_declared_layout() -> None:
    v2 = order_v2(promote=False)
    c, registry = codec((1, ORDER_V1, None), (2, v2, SUBJECT), (3, copy.deepcopy(ORDER_V1), None))
    v3 = copy.deepcopy(v2)
    v3["fields"].append({"name": "channelHint", "type": "string", "default": ""})
    registry.add(4, v3)
    values = [encode(ORDER_V1, 1, order(i)) for i in range(10)]
    values += [encode(v3, 4, {**order(i), "region": "us", "channelHint": "x"}) for i in range(10, 50)]

    frame, rejected = decode(c, values)

    assert rejected == []
    assert frame.drop("_key", "_topic", "_partition", "_offset", "_timestamp").schema == frame_schema(v2)
    assert frame["region"].to_list() == ["eu-west-1"] * 10 + ["us"] * 40


def test_a_same_named_but_incompatible_writer_is_a_mismatch() -> None:
    broken = copy.deepcopy(ORDER_V1)
    broken["fields"][1] = {"name": "eventType", "type": "long"}  # string -> long never resolves
    c, _ = codec((1, ORDER_V1, SUBJECT), (2, broken, None))
    good = encode(ORDER_V1, 1, order(1))
    bad = encode(broken, 2, {**order(2), "eventType": 7})
    _, rejected = decode(c, [good, bad, good])
    assert [(r.index, type(r.error)) for r in rejected] == [(1, SchemaMismatch)]
    assert "eventType: long does not resolve to string" in rejected[0].error.reason


def test_an_explicit_reader_schema_is_the_declared_schema_and_the_subject_is_not_asked() -> None:
    c, registry = codec((1, ORDER.schema, SUBJECT), (2, USER.schema, None))
    spec = SourceSpec(TOPIC, "avro", reader_schema=USER.schema_str)
    _, rejected = decode(c, catalog_payloads("order.created", 1, 2) + catalog_payloads(
        "user.registered", 2, 1), spec)
    assert [type(r.error) for r in rejected] == [SchemaMismatch] * 2
    assert rejected[0].error.reader_subject is None
    assert ("get_latest_version", SUBJECT) not in registry.calls


def test_without_the_subject_records_decode_in_their_writer_schema_and_it_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    c, _ = codec((1, ORDER.schema, None), (2, USER.schema, None))
    with caplog.at_level(logging.WARNING, "headwater.avro"):
        frame, rejected = decode(c, catalog_payloads("order.created", 1, 3)
                                 + catalog_payloads("user.registered", 2, 1))
    assert (frame.height, rejected) == (4, [])
    assert f"subject {SUBJECT} does not exist" in caplog.text


def test_every_kind_of_bad_input_is_rejected_with_its_class_and_the_rest_are_rows() -> None:
    c, _ = codec((1, ORDER.schema, SUBJECT), (2, USER.schema, None))
    orders = catalog_payloads("order.created", 1, 60)
    kinds: dict[str, tuple[bytes | None, type]] = {
        "random": (bytes(random.Random(1).randrange(256) for _ in range(50)), MalformedFraming),
        "wrong magic": (b"\x07" + orders[0][1:], MalformedFraming),
        "empty": (b"", MalformedFraming),
        "tombstone": (None, EmptyValueError),
        "unknown id": (b"\x00\x00\x00\x03\xe7" + orders[0][5:], UnknownSchemaId),
        "truncated": (orders[1][: len(orders[1]) // 2], UndecodableDatum),
        "trailing": (orders[2] + b"\x00", UndecodableDatum),
        "foreign": (catalog_payloads("user.registered", 2, 1)[0], SchemaMismatch),
    }
    values: list[bytes | None] = list(orders)
    for j, (value, _) in enumerate(kinds.values()):
        values.insert(7 * j + 3, value)

    frame, rejected = decode(c, values)

    assert frame.height == len(orders)
    assert [type(r.error) for r in rejected] == [t for _, t in kinds.values()]
    assert [values[r.index] for r in rejected] == [v for v, _ in kinds.values()]
    assert all(r.error.offset == 100 + r.index for r in rejected if hasattr(r.error, "offset"))


def test_decode_one_rejects_a_foreign_record_too() -> None:
    cache, registry = fake_cache((1, ORDER.schema), (2, USER.schema))
    serde = AvroSerde(cache, ORDER.schema, reader_subject=SUBJECT)
    serde.decode_one(catalog_payloads("order.created", 1, 1)[0])
    with pytest.raises(SchemaMismatch, match="declared: io.headwater.events.OrderCreatedEvent"):
        serde.decode_one(catalog_payloads("user.registered", 2, 1)[0])


def test_an_unreachable_registry_fails_the_decoder_instead_of_rejecting_records() -> None:
    c, registry = codec((1, ORDER.schema, SUBJECT), (3, ORDER.schema, None), retry_ms=0)
    registry.fail_next = [ConnectionError("connection refused")]
    with pytest.raises(SchemaRegistryUnavailable, match="get latest of"):
        c.decoder(SourceSpec(TOPIC, "avro"))

    decoder = c.decoder(SourceSpec(TOPIC, "avro"))
    values = catalog_payloads("order.created", 3, 5)  # id 3 is not cached yet
    registry.fail_next = [ConnectionError("connection refused")]
    with pytest.raises(SchemaRegistryUnavailable, match="get schema 3"):
        decoder.decode(batch_of(values))
    frame, rejected = decoder.decode(batch_of(values))  # the registry is back: nothing was cached
    assert (frame.height, rejected) == (5, [])
