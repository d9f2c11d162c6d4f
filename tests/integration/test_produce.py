"""The generator publishes to real topics; a consumer reads back exactly what the side file says."""

from __future__ import annotations

import io
import json
import struct
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import fastavro
import pytest
from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

from headwater.generator import GeneratorConfig, KeyChoice, ProduceOptions, produce_generated
from headwater.generator.jsonl import read_records
from headwater.schemas.admin import list_subjects
from headwater.schemas.catalog import EVENT_TYPE_NAMES, event_type

pytestmark = pytest.mark.integration
N = 3000


@pytest.fixture
def prefix(
    admin: AdminClient, schema_registry_url: str, unique_name: Callable[[str], str]
) -> Iterator[str]:
    name = unique_name("hw").replace(".", "-")
    yield name
    topics = [event_type(n).topic(name) for n in EVENT_TYPE_NAMES]
    for future in admin.delete_topics(topics, operation_timeout=30).values():
        try:
            future.result(timeout=30)
        except Exception:  # noqa: BLE001 - cleanup must not mask the test's result
            pass
    registry = SchemaRegistryClient({"url": schema_registry_url})
    for info in list_subjects(registry, name):
        registry.delete_subject(info.subject)
        registry.delete_subject(info.subject, permanent=True)


def _read_all(kafka_config: dict[str, str], topics: list[str], expected: int) -> list:
    consumer = Consumer({**kafka_config, "group.id": f"{topics[0]}.check", "auto.offset.reset": "earliest"})
    consumer.subscribe(topics)
    out: list = []
    deadline = time.monotonic() + 60
    try:
        while len(out) < expected and time.monotonic() < deadline:
            for msg in consumer.consume(1000, timeout=1.0):
                if msg.error() is None:
                    out.append(msg)
    finally:
        consumer.close()
    return out


def test_produced_records_match_the_side_file(
    kafka_config: dict[str, str], schema_registry_url: str, prefix: str, tmp_path: Path
) -> None:
    side = tmp_path / "events.jsonl"
    config = GeneratorConfig(seed=3, invalid_fraction=0.05, malformed_fraction=0.03, out_of_order_fraction=0.05, late_fraction=0.01)
    registry = SchemaRegistryClient({"url": schema_registry_url})
    report = produce_generated(
        kafka_config, registry, config,
        ProduceOptions(count=N, prefix=prefix, partitions=2, batch_size=700, output=side, progress=False),
    )
    records = list(read_records(side))
    assert report.events == N == len(records)
    assert report.per_type == Counter(r["eventType"] for r in records)
    assert report.malformed == sum(r["malformed"] is not None for r in records) > 0
    assert report.invalid == sum(r["invalid"] is not None for r in records) > 0

    topics = [event_type(n).topic(prefix) for n in EVENT_TYPE_NAMES]
    messages = _read_all(kafka_config, topics, N)
    assert len(messages) == N
    assert Counter(m.topic() for m in messages) == Counter(r["topic"] for r in records)

    expected = {r["event"]["eventId"]: r for r in records if r["malformed"] is None}
    readers: dict[int, object] = {}
    decoded = 0
    for msg in messages:
        value = msg.value()
        if value[:1] != b"\x00" or len(value) < 6:
            continue
        schema_id = struct.unpack(">I", value[1:5])[0]
        if schema_id not in readers:
            try:
                readers[schema_id] = fastavro.parse_schema(json.loads(registry.get_schema(schema_id).schema_str))
            except SchemaRegistryError:
                readers[schema_id] = None
        if readers[schema_id] is None:
            continue
        buf = io.BytesIO(value[5:])
        try:
            event = fastavro.schemaless_reader(buf, readers[schema_id])
        except Exception:  # noqa: BLE001 - truncated records fail somewhere in the datum
            continue
        if buf.tell() != len(value) - 5:
            continue
        record = expected[str(event["eventId"])]
        assert msg.topic() == record["topic"]
        assert msg.key().decode() == record["key"]
        assert int(event["timestamp"].timestamp() * 1000) == record["event"]["timestamp"]
        payload = {  # fastavro hands timestamp-millis back as datetimes
            k: int(v.timestamp() * 1000) if hasattr(v, "timestamp") else v
            for k, v in event["data"]["payload"].items()
        }
        assert payload == record["event"]["data"]["payload"]
        assert event["data"]["metadata"] == record["event"]["data"]["metadata"]
        decoded += 1
    assert decoded == len(expected)


def test_key_choice_and_rate_limit(kafka_config: dict[str, str], schema_registry_url: str, prefix: str) -> None:
    registry = SchemaRegistryClient({"url": schema_registry_url})
    report = produce_generated(
        kafka_config, registry, GeneratorConfig(seed=4, key=KeyChoice.USER_ID),
        ProduceOptions(count=400, rate=1000, prefix=prefix, progress=False),
    )
    assert report.events == 400 and report.seconds >= 0.35
    topic = event_type("order.created").topic(prefix)
    messages = _read_all(kafka_config, [topic], report.per_type["order.created"])
    assert messages and all(m.key().decode().startswith("u-") for m in messages)
