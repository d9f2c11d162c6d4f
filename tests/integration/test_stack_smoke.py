"""The real broker and registry do what every later feature relies on."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import pytest
from confluent_kafka import Consumer, KafkaError, Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

pytestmark = pytest.mark.integration

SCHEMA = """
{"type": "record", "name": "Ping", "namespace": "io.headwater.test",
 "fields": [{"name": "id", "type": "string"}, {"name": "n", "type": "long"}]}
"""


def consume_all(
    config: dict[str, str], topic: str, expected: int, timeout_s: float = 30.0, isolation: str = "read_committed"
) -> list:
    """Read `topic` from the beginning until `expected` records or the timeout."""
    consumer = Consumer(
        {
            **config,
            "group.id": f"reader-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": "false",
            "isolation.level": isolation,
        }
    )
    consumer.subscribe([topic])
    records = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(records) < expected and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                assert msg.error().code() == KafkaError._PARTITION_EOF, msg.error()
                continue
            records.append(msg)
        # linger briefly so records beyond `expected` (which must not exist) would show up
        end = time.monotonic() + 2.0
        while time.monotonic() < end:
            msg = consumer.poll(0.2)
            if msg is not None and not msg.error():
                records.append(msg)
    finally:
        consumer.close()
    return records


def test_topics_are_created_with_the_requested_partitions(
    new_topic: Callable[..., str], admin: AdminClient
) -> None:
    topic = new_topic("smoke", partitions=3)
    metadata = admin.list_topics(topic, timeout=10)
    assert len(metadata.topics[topic].partitions) == 3


def test_avro_through_the_registry_round_trips(
    new_topic: Callable[..., str], kafka_config: dict[str, str], schema_registry_url: str
) -> None:
    topic = new_topic("smoke-avro")
    registry = SchemaRegistryClient({"url": schema_registry_url})
    serialize = AvroSerializer(registry, SCHEMA)
    deserialize = AvroDeserializer(registry)
    producer = Producer(kafka_config)
    sent = [{"id": f"ping-{i}", "n": i * 1_000_000_007} for i in range(25)]
    for record in sent:
        producer.produce(topic, serialize(record, SerializationContext(topic, MessageField.VALUE)))
    assert producer.flush(30) == 0

    received = consume_all(kafka_config, topic, len(sent))
    values = [
        deserialize(m.value(), SerializationContext(topic, MessageField.VALUE)) for m in received
    ]
    assert values == sent
    assert received[0].value()[0] == 0  # Confluent wire format: magic byte, then schema id
    schema_id = int.from_bytes(received[0].value()[1:5], "big")
    assert registry.get_latest_version(f"{topic}-value").schema_id == schema_id


def test_aborted_transactions_are_invisible_to_read_committed_consumers(
    new_topic: Callable[..., str], kafka_config: dict[str, str]
) -> None:
    topic = new_topic("smoke-txn")
    producer = Producer({**kafka_config, "transactional.id": f"smoke-{uuid.uuid4().hex}"})
    producer.init_transactions(30)

    producer.begin_transaction()
    for i in range(5):
        producer.produce(topic, value=f"committed-{i}".encode())
    producer.commit_transaction(30)

    producer.begin_transaction()
    for i in range(7):
        producer.produce(topic, value=f"aborted-{i}".encode())
    producer.flush(30)  # the aborted records really reach the log
    producer.abort_transaction(30)

    committed = consume_all(kafka_config, topic, 5, isolation="read_committed")
    assert [m.value().decode() for m in committed] == [f"committed-{i}" for i in range(5)]

    everything = consume_all(kafka_config, topic, 12, isolation="read_uncommitted")
    assert sorted(m.value().decode() for m in everything) == sorted(
        [f"committed-{i}" for i in range(5)] + [f"aborted-{i}" for i in range(7)]
    )
