"""Our serde against confluent-kafka's AvroSerializer/AvroDeserializer on the real registry."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from polars.testing import assert_frame_equal

from headwater.schemas import AvroSerde, SchemaCache, frame_schema
from tests.unit.serde_support import ORDER_V1, order, order_v2

pytestmark = pytest.mark.integration


class CountingClient:
    """Wraps a real SchemaRegistryClient and counts get_schema calls."""

    def __init__(self, client: SchemaRegistryClient) -> None:
        self.client, self.get_schema_calls = client, []

    def get_schema(self, schema_id: int) -> Schema:
        self.get_schema_calls.append(schema_id)
        return self.client.get_schema(schema_id)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)


@pytest.fixture
def client(schema_registry_url: str) -> SchemaRegistryClient:
    return SchemaRegistryClient({"url": schema_registry_url})


@pytest.fixture
def topic_ctx(unique_name: Callable[[str], str]) -> SerializationContext:
    return SerializationContext(unique_name("serde"), MessageField.VALUE)


def _uuid_text(record: dict[str, Any]) -> dict[str, Any]:
    return {**record, "eventId": str(record["eventId"])}


def _serializer(client: SchemaRegistryClient, schema: dict[str, Any]) -> AvroSerializer:
    return AvroSerializer(client, json.dumps(schema), conf={"auto.register.schemas": True})


def test_confluent_serialized_records_decode_with_both_our_paths(
    client: SchemaRegistryClient, topic_ctx: SerializationContext
) -> None:
    ser = _serializer(client, ORDER_V1)
    records = [order(i) for i in range(1500)]
    payloads = [ser(r, topic_ctx) for r in records]
    counting = CountingClient(client)
    serde = AvroSerde(SchemaCache(counting))
    assert [_uuid_text(serde.decode_one(p)) for p in payloads[:50]] == records[:50]
    columnar = serde.decode_batch(payloads)
    per_record = AvroSerde(serde.cache, columnar_threshold=2**62).decode_batch(payloads)
    assert columnar.rejected == [] and per_record.rejected == []
    assert_frame_equal(columnar.frame, per_record.frame)
    assert columnar.frame.to_dicts() == records
    assert len(counting.get_schema_calls) == 1  # one registry call for 1550 decodes


def test_our_encoding_decodes_with_confluent_deserializer(
    client: SchemaRegistryClient, topic_ctx: SerializationContext
) -> None:
    serde = AvroSerde(SchemaCache(client))
    schema_id = serde.schema_id(f"{topic_ctx.topic}-value", ORDER_V1)
    deser = AvroDeserializer(client)
    for i in range(100):
        assert _uuid_text(deser(serde.encode_one(order(i), schema_id), topic_ctx)) == order(i)
    frame = serde.decode_batch([serde.encode_one(order(i), schema_id) for i in range(100)]).frame
    for i, payload in enumerate(serde.encode_batch(frame, schema_id)):
        assert _uuid_text(deser(payload, topic_ctx)) == order(i)


def test_evolution_both_ways_under_backward(
    client: SchemaRegistryClient, topic_ctx: SerializationContext
) -> None:
    subject = f"{topic_ctx.topic}-value"
    v2 = order_v2(promote=False)
    ser_v1 = _serializer(client, ORDER_V1)
    old = [ser_v1(order(i), topic_ctx) for i in range(300)]
    client.set_compatibility(subject, "BACKWARD")
    v2_id = client.register_schema(subject, Schema(json.dumps(v2), "AVRO"))
    new_records = [{**order(i), "region": "ap-south-1"} for i in range(300)]
    new = [AvroSerde(SchemaCache(client)).encode_one(r, v2_id) for r in new_records]
    assert int.from_bytes(old[0][1:5], "big") != v2_id

    # v1 writer, v2 reader: defaults filled in, columnar and per record alike
    cache = SchemaCache(client)
    v2_reader = AvroSerde(cache, reader_schema=v2).decode_batch(old + new)
    assert v2_reader.rejected == [] and v2_reader.frame.schema == frame_schema(v2)
    assert v2_reader.frame["region"].to_list() == ["eu-west-1"] * 300 + ["ap-south-1"] * 300
    per_record = AvroSerde(cache, reader_schema=v2, columnar_threshold=2**62).decode_batch(old + new)
    assert_frame_equal(v2_reader.frame, per_record.frame)

    # v2 writer, v1 reader: the added fields are dropped
    v1_reader = AvroSerde(cache, reader_schema=ORDER_V1).decode_batch(new)
    assert v1_reader.rejected == [] and v1_reader.frame.schema == frame_schema(ORDER_V1)
    assert v1_reader.frame.to_dicts() == [order(i) for i in range(300)]

    # an incompatible v3 is refused by the registry
    v3 = dict(v2, fields=[*v2["fields"], {"name": "mandatory", "type": "string"}])
    from headwater.schemas import SchemaRegistryRejected
    with pytest.raises(SchemaRegistryRejected):
        cache.register(subject, v3)


def test_through_kafka_a_consumed_batch_decodes_to_a_frame(
    client: SchemaRegistryClient, kafka_config: dict[str, str], new_topic: Callable[..., str]
) -> None:
    topic = new_topic("serde")
    ctx = SerializationContext(topic, MessageField.VALUE)
    ser = _serializer(client, ORDER_V1)
    producer = Producer(dict(kafka_config, **{"linger.ms": "5"}))
    for i in range(2000):
        producer.produce(topic, ser(order(i), ctx))
    producer.produce(topic, b"\x07garbage")  # not wire format
    assert producer.flush(30) == 0
    consumer = Consumer(dict(kafka_config, **{"group.id": topic, "auto.offset.reset": "earliest"}))
    consumer.subscribe([topic])
    values: list[bytes] = []
    deadline = time.monotonic() + 60
    while len(values) < 2001 and time.monotonic() < deadline:
        values += [m.value() for m in consumer.consume(5000, timeout=10) if m.error() is None]
    consumer.close()
    batch = AvroSerde(SchemaCache(client)).decode_batch(values)
    assert batch.frame.height == 2000 and [r.index for r in batch.rejected] == [2000]
    assert batch.frame["data"].struct.field("payload").struct.field("orderId").to_list() == [
        f"o-{i}" for i in range(2000)]
