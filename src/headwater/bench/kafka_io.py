"""Broker-side helpers of the engine suite: input pre-loading, offsets, reading outputs."""

from __future__ import annotations

import io
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import fastavro
import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from confluent_kafka.schema_registry import SchemaRegistryClient

from headwater.bench.workloads import Expected
from headwater.connectors.produce import produce
from headwater.connectors.readiness import wait_for_leaders
from headwater.generator import GeneratorConfig, KeyChoice, generate
from headwater.generator.encode import WireEncoder
from headwater.schemas.admin import register_schema
from headwater.schemas.catalog import event_type

ORDER = "order.created"
DELIVERY_TIMEOUT_S = 120  # librdkafka retries transient errors (NOT_LEADER...) until then
PRODUCER = {"linger.ms": 20, "batch.size": 1_000_000, "compression.type": "lz4",
            "queue.buffering.max.messages": 1_000_000, "queue.buffering.max.kbytes": 1_048_576,
            "message.timeout.ms": DELIVERY_TIMEOUT_S * 1000}


def create_topics(config: dict[str, Any], topics: list[str], partitions: int,
                  topic_config: dict[str, str] | None = None) -> None:
    """Create topics (replication 1; existing ones are left alone) and wait for their leaders."""
    admin = AdminClient(config)
    existing = admin.list_topics(timeout=30).topics
    new = [NewTopic(t, partitions, 1, config=topic_config or {}) for t in topics
           if t not in existing]
    for topic, future in (admin.create_topics(new).items() if new else []):
        try:
            future.result(30)
        except Exception as exc:  # noqa: BLE001 - KafkaException wrapping a KafkaError
            if exc.args and getattr(exc.args[0], "code", lambda: None)() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    consumer = Consumer({**config, "group.id": f"bench-leaders-{uuid.uuid4().hex[:8]}"})
    try:
        wait_for_leaders(admin, consumer, topics)
    finally:
        consumer.close()


def end_offsets(config: dict[str, Any], topic: str) -> dict[int, int]:
    """High watermark per partition."""
    consumer = Consumer({**config, "group.id": f"bench-wm-{uuid.uuid4().hex[:8]}"})
    try:
        parts = consumer.list_topics(topic, timeout=30).topics[topic].partitions
        return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1] for p in parts}
    finally:
        consumer.close()


def committed(admin: AdminClient, group: str, topic: str, partitions: list[int]) -> dict[int, int]:
    """The group's committed offset per partition (-1 when none)."""
    from confluent_kafka import ConsumerGroupTopicPartitions

    request = ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p) for p in partitions])
    result = admin.list_consumer_group_offsets([request])[group].result(30)
    return {tp.partition: tp.offset for tp in result.topic_partitions}


def order_events(seed: int, invalid_fraction: float, users: int) -> Iterator[dict[str, Any]]:
    """Endless generated ``order.created`` events with a userId (the generator's other types are
    skipped), deterministic for ``seed``."""
    config = GeneratorConfig(seed=seed, invalid_fraction=invalid_fraction, users=users,
                             key=KeyChoice.USER_ID)
    for generated in generate(config, None):
        if generated.event_type == ORDER and generated.event.get("userId"):
            yield generated.event


@dataclass
class InputCodec:
    """Encodes order events for an input topic (Avro through the registry, or JSON)."""

    fmt: str
    schema_id: int | None = None

    @classmethod
    def for_topic(cls, fmt: str, topic: str, registry_url: str) -> InputCodec:
        """Register the order.created schema under ``<topic>-value`` when ``fmt`` is avro."""
        if fmt != "avro":
            return cls(fmt)
        schema_str = event_type(ORDER).schema_str
        registered = register_schema(SchemaRegistryClient({"url": registry_url}), f"{topic}-value", schema_str)
        return cls(fmt, registered.schema_id)

    def encoder(self) -> Callable[[list[dict[str, Any]]], list[bytes]]:
        """Events -> values."""
        if self.fmt == "avro":
            assert self.schema_id is not None
            wire = WireEncoder({ORDER: self.schema_id})
            return lambda events: wire.encode(ORDER, events)
        return lambda events: [orjson.dumps(e) for e in events]

    def decoder(self) -> Callable[[bytes], dict[str, Any]]:
        """Value -> event dict (the harness's independent decoder)."""
        if self.fmt == "avro":
            schema = fastavro.parse_schema(event_type(ORDER).schema)
            return lambda value: fastavro.schemaless_reader(io.BytesIO(value[5:]), schema, None)
        return orjson.loads


def preload(config: dict[str, Any], topic: str, codec: InputCodec, count: int, seed: int,
            users: int, invalid_fraction: float, progress: Callable[[int], None]) -> None:
    """Produce ``count`` generated order events keyed by userId (not timed).

    Transient broker errors (a partition's leader moving, NOT_LEADER_FOR_PARTITION) are retried
    by librdkafka within ``message.timeout.ms``; a record that still fails raises here.
    """
    producer = Producer({**config, **PRODUCER})
    failed: list[KafkaError] = []

    def delivered(err: KafkaError | None, _msg: Any) -> None:
        if err is not None:
            failed.append(err)

    encode = codec.encoder()
    events = order_events(seed, invalid_fraction, users)
    done = 0
    while done < count:
        batch = [next(events) for _ in range(min(5000, count - done))]
        for event, value in zip(batch, encode(batch)):
            produce(producer, topic, value=value, key=event["userId"].encode(), on_delivery=delivered)
        producer.poll(0)
        done += len(batch)
        progress(done)
    if producer.flush(DELIVERY_TIMEOUT_S + 30):
        raise RuntimeError(f"preload of {topic} not delivered in time")
    if failed:
        raise RuntimeError(f"preload of {topic}: {len(failed)} records not delivered ({failed[0]})")


def read_topic(config: dict[str, Any], topic: str, read_committed: bool = True) -> list[tuple[bytes | None, bytes | None]]:
    """Every (key, value) currently in ``topic``, in offset order within each partition."""
    return [(key, value) for _, key, value in read_partitions(config, topic, read_committed)]


def read_partitions(config: dict[str, Any], topic: str,
                    read_committed: bool = True) -> list[tuple[int, bytes | None, bytes | None]]:
    """Every (partition, key, value) currently in ``topic``, in offset order within each
    partition."""
    consumer = Consumer({
        **config, "group.id": f"bench-read-{uuid.uuid4().hex[:8]}", "enable.auto.commit": False,
        "enable.partition.eof": True,
        "isolation.level": "read_committed" if read_committed else "read_uncommitted",
    })
    try:
        parts = consumer.list_topics(topic, timeout=30).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in parts])
        pending, out = set(parts), []
        deadline = time.monotonic() + 300
        while pending and time.monotonic() < deadline:
            for msg in consumer.consume(10_000, 0.5):
                err = msg.error()
                if err is None:
                    out.append((msg.partition(), msg.key(), msg.value()))
                elif err.code() == KafkaError._PARTITION_EOF:
                    pending.discard(msg.partition())
        if pending:
            raise TimeoutError(f"{topic}: partitions {sorted(pending)} not read to the end")
        return out
    finally:
        consumer.close()


def expected_from_input(config: dict[str, Any], topic: str, codec: InputCodec) -> Expected:
    """The workloads' results computed from the input topic by the harness (fastavro/orjson)."""
    decode, expected = codec.decoder(), Expected()
    for partition, key, value in read_partitions(config, topic):
        expected.add(key.decode() if key else "", decode(value), partition)
    expected.finish()
    return expected
